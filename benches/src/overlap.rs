//! Where grace periods can be shared on two processors: callers that overlap by
//! construction.
//!
//! With short read sections a grace period on our two processors is mostly one
//! `membarrier` system call, during which the other callers cannot run: they arrive one
//! by one and nothing is shared (`klp-compare`'s first table). Two cases where they do
//! overlap:
//!
//! * **long read sections** ([`LongReaders`]): a grace period must wait for a reader's
//!   section to end, and the caller sleeps meanwhile, so the other callers run and pile
//!   up behind it; a flavor that shares grace periods serves them all with the next one;
//! * **deferred reclamation** ([`deferred_frees`]): `defer` (the kernel's `call_rcu`)
//!   need not wait at all; a flavor that batches runs one grace period for every closure
//!   queued meanwhile, while one without batching waits for a grace period per closure.

use klp_sync::Flavor;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The processors the process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity writes at most its
    // size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above; pid 0 is the calling thread.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `i` is below CPU_SETSIZE.
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .collect()
}

/// Run the calling thread on `cpus` only (nothing happens when the list is empty or the
/// system refuses).
fn pin_current_thread(cpus: &[usize]) {
    if cpus.is_empty() {
        return;
    }
    // SAFETY: as in `allowed_cpus`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: `c` came from `allowed_cpus`, below CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: a valid set of the size given; pid 0 is the calling thread.
    let _ = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}

/// Which processors the long readers and the callers run on: readers on the last ones,
/// callers on the others, so that a caller woken by a reader's exit (liburcu's readers
/// wake a sleeping updater) never takes the reader's processor and keeps it out of its
/// next section. Empty lists (no pinning) when there are not more processors than
/// readers.
pub fn split_cpus(readers: usize) -> (Vec<usize>, Vec<usize>) {
    let cpus = allowed_cpus();
    if cpus.len() <= readers {
        return (Vec::new(), Vec::new());
    }
    let (callers, readers) = cpus.split_at(cpus.len() - readers);
    (readers.to_vec(), callers.to_vec())
}

/// Threads that hold read sections of a given length, back to back, until dropped.
pub struct LongReaders {
    stop: Arc<AtomicBool>,
    sections: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
    caller_cpus: Vec<usize>,
}

impl LongReaders {
    /// Start `n` reader threads (registered with `f`), each running read sections that
    /// last `hold` (spinning inside) on a processor of its own where there are more
    /// processors than readers ([`split_cpus`]; [`concurrent_synchronize_beside`] runs
    /// the callers on the others), and wait until they all run.
    pub fn start<F: Flavor + 'static>(f: &Arc<F>, n: usize, hold: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sections = Arc::new(AtomicU64::new(0));
        let ready = Arc::new(Barrier::new(n + 1));
        let (reader_cpus, caller_cpus) = split_cpus(n);
        let threads = (0..n)
            .map(|i| {
                let (f, stop, sections, ready) = (
                    Arc::clone(f),
                    Arc::clone(&stop),
                    Arc::clone(&sections),
                    Arc::clone(&ready),
                );
                let cpu: Vec<usize> = reader_cpus.get(i).copied().into_iter().collect();
                std::thread::spawn(move || {
                    pin_current_thread(&cpu);
                    f.register_current_thread();
                    ready.wait();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let g = f.read_lock();
                        let t = Instant::now();
                        while t.elapsed() < hold {
                            std::hint::spin_loop();
                        }
                        drop(g);
                        n += 1;
                    }
                    sections.fetch_add(n, Ordering::Relaxed);
                    f.unregister_current_thread();
                })
            })
            .collect();
        ready.wait();
        LongReaders {
            stop,
            sections,
            threads,
            caller_cpus,
        }
    }

    /// The processors left to the callers (empty: no pinning).
    pub fn caller_cpus(&self) -> Vec<usize> {
        self.caller_cpus.clone()
    }

    /// Stop the readers; the number of sections they ran.
    pub fn stop(mut self) -> u64 {
        self.halt();
        self.sections.load(Ordering::Relaxed)
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }
}

impl Drop for LongReaders {
    fn drop(&mut self) {
        self.halt();
    }
}

/// `threads` threads each `defer` `per_thread` closures that free a small allocation,
/// then one `barrier`: the time from the start until the barrier returns (every closure
/// has run). Panics if a closure did not run.
pub fn deferred_frees<F: Flavor + 'static>(
    f: &Arc<F>,
    threads: usize,
    per_thread: u64,
) -> Duration {
    deferred_frees_with(f, threads, per_thread, || {})
}

/// [`deferred_frees`] with the deferring threads kept off the readers' processors, so
/// that a grace period meets a reader that is running (on two processors the scheduler
/// otherwise often puts the reader beside a deferring thread, where it is not running
/// when the barrier is sent, and the barrier is nearly free).
pub fn deferred_frees_beside<F: Flavor + 'static>(
    f: &Arc<F>,
    readers: &LongReaders,
    threads: usize,
    per_thread: u64,
) -> Duration {
    let cpus = readers.caller_cpus();
    deferred_frees_with(f, threads, per_thread, move || pin_current_thread(&cpus))
}

fn deferred_frees_with<F: Flavor + 'static>(
    f: &Arc<F>,
    threads: usize,
    per_thread: u64,
    setup: impl Fn() + Clone + Send + 'static,
) -> Duration {
    let freed = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(threads));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (f, freed, start, setup) = (
                Arc::clone(f),
                Arc::clone(&freed),
                Arc::clone(&start),
                setup.clone(),
            );
            std::thread::spawn(move || {
                setup();
                f.register_current_thread();
                start.wait();
                for i in 0..per_thread {
                    // What an updater unpublished: freed after a grace period.
                    let old = Box::new([i; 4]);
                    let freed = Arc::clone(&freed);
                    f.defer(Box::new(move || {
                        std::hint::black_box(&old);
                        drop(old);
                        freed.fetch_add(1, Ordering::Relaxed);
                    }));
                }
                f.unregister_current_thread();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // liburcu's rcu_barrier wants a registered caller; the others do not mind.
    f.register_current_thread();
    f.barrier();
    let d = t0.elapsed();
    f.unregister_current_thread();
    assert_eq!(
        freed.load(Ordering::Relaxed),
        threads as u64 * per_thread,
        "{}: a deferred closure did not run before barrier returned",
        f.name()
    );
    d
}

/// [`crate::concurrent_synchronize`] with the callers kept off the readers' processors.
pub fn concurrent_synchronize_beside<F: Flavor + 'static>(
    f: &Arc<F>,
    readers: &LongReaders,
    k: usize,
    calls: u64,
) -> Duration {
    let cpus = readers.caller_cpus();
    crate::concurrent_synchronize_with(f, k, calls, move || pin_current_thread(&cpus))
}
