//! `klp-soak`: the churn workload (`klp_benches::churn`) for a given number of transitions
//! or minutes, under each flavor in turn, reporting transitions, calls and violations.
//!
//! ```text
//! cargo run --release -p klp-benches --bin klp-soak -- --transitions 1000000
//! cargo run --release -p klp-benches --bin klp-soak -- --minutes 30 --flavor rcu
//! ```
//!
//! Options: `--transitions N` (per flavor; default 100,000), `--minutes M` (per flavor; the
//! run stops at whichever comes first; default 24 hours), `--flavor preempt|rcu|both`
//! (default both), `--every S` (seconds between progress lines; default 60). Exits with
//! status 1 when a checked call ran a mix of two patches.

use klp_benches::churn::{Budget, Outcome, churn};
use klp_sync::{Flavor, Preempt, Rcu};
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!(
        "usage: klp-soak [--transitions N] [--minutes M] [--flavor preempt|rcu|both] [--every SECONDS]"
    );
    std::process::exit(2);
}

/// Resident memory of the process, in MiB (from /proc/self/statm).
fn rss_mib() -> f64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

fn line(name: &str, o: &Outcome) -> String {
    let secs = o.elapsed.as_secs_f64();
    format!(
        "{name}: {} transitions ({} reversals, {} forces) in {:.1} s ({:.0}/s); {} calls, {} checked, {} violations; rss {:.1} MiB",
        o.transitions,
        o.reversals,
        o.forces,
        secs,
        o.transitions as f64 / secs.max(1e-9),
        o.calls,
        o.checked,
        o.violations,
        rss_mib()
    )
}

fn run<F: Flavor + 'static>(flavor: F, budget: Budget, every: Duration) -> Outcome {
    let name = flavor.name();
    println!(
        "{name}: soak until {} transitions or {:.1} min",
        budget.transitions,
        budget.duration.as_secs_f64() / 60.0
    );
    let o = churn(flavor, budget, every, |o| println!("  {}", line(name, o)));
    println!("{}", line(name, &o));
    o
}

fn main() {
    let mut budget = Budget {
        transitions: 100_000,
        duration: Duration::from_secs(24 * 3600),
    };
    let mut flavors = "both".to_owned();
    let mut every = Duration::from_secs(60);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--transitions" => {
                budget.transitions = value().parse().unwrap_or_else(|_| usage());
            }
            "--minutes" => {
                let m: f64 = value().parse().unwrap_or_else(|_| usage());
                budget.duration = Duration::from_secs_f64(m * 60.0);
            }
            "--flavor" => flavors = value(),
            "--every" => {
                every = Duration::from_secs_f64(value().parse().unwrap_or_else(|_| usage()));
            }
            _ => usage(),
        }
    }
    let t0 = Instant::now();
    let mut outcomes = Vec::new();
    if matches!(flavors.as_str(), "preempt" | "both") {
        outcomes.push(run(Preempt::new(), budget, every));
    }
    if matches!(flavors.as_str(), "rcu" | "both") {
        outcomes.push(run(Rcu::new(), budget, every));
    }
    if outcomes.is_empty() {
        usage();
    }
    let violations: u64 = outcomes.iter().map(|o| o.violations).sum();
    let transitions: u64 = outcomes.iter().map(|o| o.transitions).sum();
    let calls: u64 = outcomes.iter().map(|o| o.calls).sum();
    println!(
        "total: {transitions} transitions, {calls} calls, {violations} violations in {:.1} min",
        t0.elapsed().as_secs_f64() / 60.0
    );
    if violations != 0 {
        std::process::exit(1);
    }
}
