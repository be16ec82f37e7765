//! `klp-compare`: the backend comparison report.
//!
//! For every flavor: the cost of a read section, the latency of one grace period with 0, 1
//! and 2 busy reader threads, and the total time of K = 1, 2, 4, 8 threads calling
//! `synchronize` at once while one reader is busy (with the grace periods actually run,
//! where the flavor counts them). Medians of repeated runs; a quick report, not a
//! substitute for the criterion benches in `benches/`.

use klp_benches::{BusyReaders, concurrent_synchronize, median};
use klp_sync::{Flavor, Lock, Preempt, Rcu};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

/// Repetitions of every measurement; the median is reported.
const REPEATS: usize = 7;

fn read_section_ns<F: Flavor>(f: &F) -> f64 {
    f.register_current_thread();
    let n = 2_000_000u32;
    let mut samples: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                let g = f.read_lock();
                black_box(&g);
            }
            t.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .collect();
    f.unregister_current_thread();
    median(&mut samples)
}

fn tls_floor_ns() -> f64 {
    thread_local! {
        static C: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    let n = 2_000_000u32;
    let mut samples: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                C.with(|c| c.set(black_box(c.get()) + 1));
            }
            t.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .collect();
    median(&mut samples)
}

fn synchronize_us<F: Flavor + 'static>(f: &Arc<F>, readers: usize) -> f64 {
    let busy = BusyReaders::start(f, readers);
    let calls = 200u32;
    let mut samples: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..calls {
                f.synchronize();
            }
            t.elapsed().as_secs_f64() * 1e6 / f64::from(calls)
        })
        .collect();
    drop(busy);
    median(&mut samples)
}

/// Grace periods a flavor has run, where it counts them (rcu shares them between callers).
trait GracePeriods {
    fn grace_periods(&self) -> Option<u64> {
        None
    }
}
impl GracePeriods for Preempt {}
impl GracePeriods for Lock {}
impl GracePeriods for Rcu {
    fn grace_periods(&self) -> Option<u64> {
        Some(self.completed_grace_periods())
    }
}

/// Median time (µs) for `k` threads to make one `synchronize` call each, all at once;
/// and the grace periods run per call (where counted).
fn concurrent_us<F: Flavor + GracePeriods + 'static>(f: &Arc<F>, k: usize) -> (f64, Option<f64>) {
    let busy = BusyReaders::start(f, 1);
    let calls = 100u64;
    let gp0 = f.grace_periods();
    let mut samples: Vec<f64> = (0..REPEATS)
        .map(|_| concurrent_synchronize(f, k, calls).as_secs_f64() * 1e6 / calls as f64)
        .collect();
    let per_call = gp0
        .zip(f.grace_periods())
        .map(|(a, b)| (b - a) as f64 / (REPEATS as u64 * calls * k as u64) as f64);
    drop(busy);
    (median(&mut samples), per_call)
}

struct Row {
    name: &'static str,
    read_ns: f64,
    sync_us: [f64; 3],
    conc_us: [f64; 4],
    /// Grace periods per call with K = 8, where counted.
    gp_per_call: Option<f64>,
}

fn measure<F: Flavor + GracePeriods + 'static>(f: F) -> Row {
    let f = Arc::new(f);
    let read_ns = read_section_ns(&*f);
    let sync_us = [0, 1, 2].map(|r| synchronize_us(&f, r));
    let conc = [1, 2, 4, 8].map(|k| concurrent_us(&f, k));
    Row {
        name: f.name(),
        read_ns,
        sync_us,
        conc_us: conc.map(|c| c.0),
        gp_per_call: conc[3].1,
    }
}

fn main() {
    let start = Instant::now();
    let rows = [
        measure(Preempt::new()),
        measure(Rcu::new()),
        measure(Lock::new()),
    ];
    let floor = tls_floor_ns();
    println!(
        "libklp synchronization flavors — barrier mode: {}",
        klp_sync::barrier_mode()
    );
    println!(
        "{} cores; medians of {REPEATS} runs; thread-local increment (the floor): {floor:.2} ns\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<8} {:>10} | {:>11} {:>11} {:>11} | {:>9} {:>9} {:>9} {:>9} {:>8}",
        "flavor",
        "read (ns)",
        "sync 0r µs",
        "sync 1r µs",
        "sync 2r µs",
        "K=1 µs",
        "K=2 µs",
        "K=4 µs",
        "K=8 µs",
        "K8/K1"
    );
    for r in &rows {
        println!(
            "{:<8} {:>10.2} | {:>11.2} {:>11.2} {:>11.2} | {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>7.1}x",
            r.name,
            r.read_ns,
            r.sync_us[0],
            r.sync_us[1],
            r.sync_us[2],
            r.conc_us[0],
            r.conc_us[1],
            r.conc_us[2],
            r.conc_us[3],
            r.conc_us[3] / r.conc_us[0]
        );
    }
    let (p, r) = (&rows[0], &rows[1]);
    println!(
        "\nK=8 concurrent callers: rcu takes {:.2}x the time of preempt; one read section costs {:.2} ns (preempt) / {:.2} ns (rcu) above the floor.",
        r.conc_us[3] / p.conc_us[3],
        p.read_ns - floor,
        r.read_ns - floor
    );
    if let Some(g) = r.gp_per_call {
        println!(
            "rcu ran {g:.2} grace periods per synchronize call at K=8 (1.00: no sharing; preempt runs one per call by design)."
        );
    }
    println!(
        "K = threads calling synchronize at once with one busy reader: time for each to make one call."
    );
    println!("Took {:.1} s.", start.elapsed().as_secs_f64());
}
