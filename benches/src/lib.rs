//! Shared pieces of the libklp benchmarks and of the `klp-compare` report: busy reader
//! threads and concurrent grace-period callers, for any [`Flavor`].

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

/// `k` threads that call `synchronize` at once, `rounds` times: in each round a barrier
/// releases all of them together, and the round ends when the last call has returned.
/// Returns the summed time of the rounds. With perfect sharing of grace periods a round
/// stays near the time of one caller; with serialized grace periods it grows with `k`.
pub fn concurrent_synchronize<F: Flavor + 'static>(f: &Arc<F>, k: usize, rounds: u64) -> Duration {
    let start = Arc::new(Barrier::new(k + 1));
    let end = Arc::new(Barrier::new(k + 1));
    let callers: Vec<_> = (0..k)
        .map(|_| {
            let (f, start, end) = (Arc::clone(f), Arc::clone(&start), Arc::clone(&end));
            std::thread::spawn(move || {
                f.register_current_thread();
                for _ in 0..rounds {
                    start.wait();
                    f.synchronize();
                    end.wait();
                }
                f.unregister_current_thread();
            })
        })
        .collect();
    let mut total = Duration::ZERO;
    for _ in 0..rounds {
        start.wait();
        let t = Instant::now();
        end.wait();
        total += t.elapsed();
    }
    for c in callers {
        c.join().unwrap();
    }
    total
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
