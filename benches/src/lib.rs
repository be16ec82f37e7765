//! Shared pieces of the libklp benchmarks, of the `klp-compare` report and of the
//! `klp-soak` command: busy reader threads and concurrent grace-period callers, for any
//! [`Flavor`]; callers that overlap by construction ([`overlap`]); the seed's case
//! counted ([`unwatched`], [`seed`]); the peers ([`peers`]); the churn workload of the
//! soak ([`churn`]).

pub mod churn;
pub mod overlap;
pub mod peers;
pub mod seed;
pub mod unwatched;

use klp_sync::Flavor;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Threads that run short read sections in a loop until dropped.
pub struct BusyReaders {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl BusyReaders {
    /// Start `n` busy reader threads (registered with `f`) and wait until they all run.
    pub fn start<F: Flavor + 'static>(f: &Arc<F>, n: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let ready = Arc::new(Barrier::new(n + 1));
        let threads = (0..n)
            .map(|_| {
                let (f, stop, reads, ready) = (
                    Arc::clone(f),
                    Arc::clone(&stop),
                    Arc::clone(&reads),
                    Arc::clone(&ready),
                );
                std::thread::spawn(move || {
                    f.register_current_thread();
                    ready.wait();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let _g = f.read_lock();
                        std::hint::black_box(&n);
                        n += 1;
                    }
                    reads.fetch_add(n, Ordering::Relaxed);
                    f.unregister_current_thread();
                })
            })
            .collect();
        ready.wait();
        BusyReaders {
            stop,
            reads,
            threads,
        }
    }

    /// Stop the readers and return how many sections they ran.
    pub fn stop(mut self) -> u64 {
        self.halt();
        self.reads.load(Ordering::Relaxed)
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }
}

impl Drop for BusyReaders {
    fn drop(&mut self) {
        self.halt();
    }
}

/// `k` threads that call `synchronize` at once and keep calling it, `calls` times each;
/// returns the time until the last of them is done. A barrier starts them together; from
/// then on they overlap freely (a barrier per round would measure wake-ups of the harness,
/// which on two processors cost as much as the grace periods). With shared grace periods
/// the total stays near the time of one caller; with serialized ones it grows with `k`.
pub fn concurrent_synchronize<F: Flavor + 'static>(f: &Arc<F>, k: usize, calls: u64) -> Duration {
    concurrent_synchronize_with(f, k, calls, || {})
}

/// [`concurrent_synchronize`], each caller thread running `setup` first (pinning it to
/// processors, say).
pub fn concurrent_synchronize_with<F: Flavor + 'static>(
    f: &Arc<F>,
    k: usize,
    calls: u64,
    setup: impl Fn() + Clone + Send + 'static,
) -> Duration {
    let start = Arc::new(Barrier::new(k));
    let callers: Vec<_> = (0..k)
        .map(|_| {
            let (f, start, setup) = (Arc::clone(f), Arc::clone(&start), setup.clone());
            std::thread::spawn(move || {
                setup();
                f.register_current_thread();
                start.wait();
                // Each caller times itself: the measuring thread may not run for a while.
                let t0 = Instant::now();
                for _ in 0..calls {
                    f.synchronize();
                }
                let t1 = Instant::now();
                f.unregister_current_thread();
                (t0, t1)
            })
        })
        .collect();
    let spans: Vec<(Instant, Instant)> = callers.into_iter().map(|c| c.join().unwrap()).collect();
    let first = spans.iter().map(|s| s.0).min().expect("k > 0");
    let last = spans.iter().map(|s| s.1).max().expect("k > 0");
    last - first
}

/// The median of `samples` (sorted in place).
pub fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    }
}
