//! Consistency under churn: `f` calls `g`; every patch replaces both with a pair from one
//! "universe". Reader threads call `f` in a loop and check that the `f` and the `g` of one
//! outermost call come from the same universe, while a control thread enables, disables,
//! reverses, replaces and forces patches.
//!
//! A forced transition breaks the consistency model on purpose (the kernel says so), so a
//! call during which a force happened is not counted. Freed func records are poisoned; the
//! handler aborts on one.
//!
//! At least 1,000 transitions per flavor; `KLP_CHURN_TRANSITIONS` asks for more.

use klp_core::log::{Capture, Log};
use klp_core::{Func, Klp, Object, Patch, patchable};
use klp_sync::{Flavor, Lock, Preempt, Rcu};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

patchable! {
    fn churn_f(x: u32) -> (u32, u32) { (0, churn_g(x)) }
}
patchable! {
    fn churn_g(x: u32) -> u32 { x }
}

macro_rules! universes {
    ($($k:literal => $f:ident, $g:ident;)*) => {
        $(
            fn $f(x: u32) -> (u32, u32) {
                (x + $k, churn_g(x))
            }
            fn $g(x: u32) -> u32 {
                x + $k
            }
        )*
        const UNIVERSES: &[(fn(u32) -> (u32, u32), fn(u32) -> u32)] = &[$(($f, $g)),*];
    };
}

universes! {
    1 => f1, g1;
    2 => f2, g2;
    3 => f3, g3;
    4 => f4, g4;
    5 => f5, g5;
    6 => f6, g6;
    7 => f7, g7;
    8 => f8, g8;
}

/// Odd while a force is in progress; bumped twice per force.
static FORCE_EPOCH: AtomicU64 = AtomicU64::new(0);

/// A tiny deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Outcome {
    transitions: u64,
    calls: u64,
    checked: u64,
    violations: u64,
    forces: u64,
    reversals: u64,
}

fn churn<F: Flavor + 'static>(flavor: F, want_transitions: u64) -> Outcome {
    let cap = Capture::new();
    let klp = Klp::with_log(flavor, Log::new(cap.clone()));
    klp.set_retry_period(Duration::from_millis(2));
    let stop = Arc::new(AtomicBool::new(false));
    let violations = Arc::new(AtomicU64::new(0));
    let checked = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let started = Arc::new(std::sync::Barrier::new(3));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, violations, checked, calls, started) = (
                Arc::clone(&stop),
                Arc::clone(&violations),
                Arc::clone(&checked),
                Arc::clone(&calls),
                Arc::clone(&started),
            );
            std::thread::spawn(move || {
                let mut n = 0u64;
                churn_f(0);
                started.wait();
                while !stop.load(Ordering::Relaxed) {
                    let e0 = FORCE_EPOCH.load(Ordering::SeqCst);
                    let (fu, gu) = churn_f(0);
                    let e1 = FORCE_EPOCH.load(Ordering::SeqCst);
                    n += 1;
                    if n.is_multiple_of(64) {
                        calls.fetch_add(64, Ordering::Relaxed);
                    }
                    if e0 == e1 && e0.is_multiple_of(2) {
                        checked.fetch_add(1, Ordering::Relaxed);
                        if fu != gu {
                            violations.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                calls.fetch_add(n % 64, Ordering::Relaxed);
            })
        })
        .collect();

    started.wait();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut live: Vec<String> = Vec::new();
    let mut next = 0u64;
    let (mut transitions, mut forces, mut reversals) = (0u64, 0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(120);
    while transitions < want_transitions && Instant::now() < deadline {
        let op = rng.below(10);
        if live.len() < 4 && (op < 5 || live.is_empty()) {
            let (f, g) = UNIVERSES[(next % UNIVERSES.len() as u64) as usize];
            let name = format!("churn_{next}");
            next += 1;
            let replace = rng.below(4) == 0;
            let p = Patch::new(&name).replace(replace).object(
                Object::vmlinux()
                    .func(Func::new("churn_f", f))
                    .func(Func::new("churn_g", g)),
            );
            klp.enable(p).expect("enable");
            if replace {
                live.clear();
            }
            live.push(name.clone());
            transitions += 1;
            settle(
                &klp,
                &name,
                &mut rng,
                &mut transitions,
                &mut forces,
                &mut reversals,
                true,
            );
        } else if !live.is_empty() {
            let name = live.remove(rng.below(live.len() as u64) as usize);
            klp.set_enabled(&name, false).expect("disable");
            transitions += 1;
            if settle(
                &klp,
                &name,
                &mut rng,
                &mut transitions,
                &mut forces,
                &mut reversals,
                false,
            ) {
                // Reversed back to enabled.
                live.push(name);
            }
        }
        live.retain(|n| klp.patch(n).is_some_and(|p| p.enabled));
        // Let the readers run through the new state before the next change.
        let seen = calls.load(Ordering::Relaxed);
        let t = Instant::now();
        while calls.load(Ordering::Relaxed) < seen + 128 && t.elapsed() < Duration::from_millis(50)
        {
            std::hint::spin_loop();
        }
    }
    for name in klp.patches().into_iter().map(|p| p.name) {
        if klp.patch(&name).is_some_and(|p| p.enabled) {
            klp.set_enabled(&name, false).unwrap();
        }
        assert!(
            klp.wait_transition(Duration::from_secs(60)),
            "final disable of {name} never completed"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    klp.flavor().barrier();
    assert!(klp.patches().is_empty());
    assert_eq!(churn_f(1), (0, 1), "the original code runs again");
    Outcome {
        transitions,
        calls: calls.load(Ordering::Relaxed),
        checked: checked.load(Ordering::Relaxed),
        violations: violations.load(Ordering::Relaxed),
        forces,
        reversals,
    }
}

/// Let the transition of `name` finish, sometimes reversing or forcing it first.
/// Returns whether the patch ended up enabled after starting as a disable.
fn settle<F: Flavor + 'static>(
    klp: &Klp<F>,
    name: &str,
    rng: &mut Rng,
    transitions: &mut u64,
    forces: &mut u64,
    reversals: &mut u64,
    enabling: bool,
) -> bool {
    let mut enabled = enabling;
    match rng.below(8) {
        0 if klp.patch(name).is_some_and(|p| p.transition) => {
            enabled = !enabled;
            if klp.set_enabled(name, enabled).is_ok() {
                *reversals += 1;
                *transitions += 1;
            } else {
                enabled = !enabled;
            }
        }
        1 if klp.patch(name).is_some_and(|p| p.transition) => {
            FORCE_EPOCH.fetch_add(1, Ordering::SeqCst);
            if klp.force(name, true).is_ok() {
                *forces += 1;
            }
            assert!(klp.wait_transition(Duration::from_secs(60)));
            FORCE_EPOCH.fetch_add(1, Ordering::SeqCst);
        }
        _ => {}
    }
    assert!(
        klp.wait_transition(Duration::from_secs(60)),
        "transition of {name} never completed"
    );
    !enabling && enabled
}

fn run<F: Flavor + 'static>(flavor: F) {
    let want = std::env::var("KLP_CHURN_TRANSITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let name = flavor.name();
    let t0 = Instant::now();
    let o = churn(flavor, want);
    eprintln!(
        "{name}: {} transitions ({} reversals, {} forces) in {:.2?}; {} calls, {} checked, {} violations",
        o.transitions,
        o.reversals,
        o.forces,
        t0.elapsed(),
        o.calls,
        o.checked,
        o.violations
    );
    assert!(
        o.transitions >= want,
        "{name}: only {} transitions",
        o.transitions
    );
    assert!(
        o.checked > 1000,
        "{name}: too few checked calls ({})",
        o.checked
    );
    assert_eq!(
        o.violations, 0,
        "{name}: f and g came from different patches"
    );
}

/// One test runs the flavors in turn: the sites are shared.
#[test]
fn consistency_under_churn_every_flavor() {
    run(Preempt::new());
    run(Rcu::new());
    run(Lock::new());
}
