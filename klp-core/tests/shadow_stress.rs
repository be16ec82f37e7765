//! Shadow variables under concurrency, for every flavor: readers never see freed
//! (poisoned) memory, racing get_or_alloc calls construct each variable once, reclaim
//! waits for readers, and nothing leaks.
//!
//! Each stress test runs for about a second per flavor; set `KLP_STRESS_SECS` for longer.

use klp_core::log::{Level, Log};
use klp_core::shadow::{POISON, Shadow};
use klp_sync::Flavor;
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

fn budget() -> Duration {
    let secs = std::env::var("KLP_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(1.0);
    Duration::from_secs_f64(secs)
}

fn obj(n: u64) -> *const c_void {
    (n as usize * 64) as *const c_void
}

/// The value every variable `<obj(n), id>` holds: derived from its key, never poison.
fn value(n: u64, id: u64) -> u64 {
    let mut z = (n << 16 | id).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) | 1
}

const POISON_WORD: u64 = u64::from_ne_bytes([POISON; 8]);

/// Check the two words of a variable `[v, !v]` against its key.
fn check(p: NonNull<u8>, n: u64, id: u64) {
    let words = p.cast::<u64>().as_ptr();
    // SAFETY: called inside a read section (or under the lock, from a destructor) on a
    // variable of 16 bytes; volatile so that every check really reads memory.
    let (a, b) = unsafe { (words.read_volatile(), words.add(1).read_volatile()) };
    assert_ne!(
        a, POISON_WORD,
        "read poisoned (freed) memory for <{n}, {id}>"
    );
    assert_eq!(
        (a, b),
        (value(n, id), !value(n, id)),
        "wrong data for <{n}, {id}>"
    );
}

fn init(p: NonNull<u8>, n: u64, id: u64) {
    let words = p.cast::<u64>().as_ptr();
    // SAFETY: a constructor's private 16 bytes.
    unsafe {
        words.write(value(n, id));
    }
    // SAFETY: as above.
    unsafe { words.add(1).write(!value(n, id)) };
}

struct Registered<'a, F: Flavor>(&'a F);

impl<'a, F: Flavor> Registered<'a, F> {
    fn new(f: &'a F) -> Self {
        f.register_current_thread();
        Registered(f)
    }
}

impl<F: Flavor> Drop for Registered<'_, F> {
    fn drop(&mut self) {
        self.0.unregister_current_thread();
    }
}

/// A tiny xorshift generator per thread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A log that counts duplicate warnings and fails on anything else.
fn counting_log(warnings: Arc<AtomicUsize>) -> Log {
    Log::new(Arc::new(move |level: Level, line: &str| {
        assert_eq!(level, Level::Warning, "unexpected line {line}");
        assert!(
            line.starts_with("livepatch: Duplicate shadow variable <0x"),
            "unexpected line {line}"
        );
        warnings.fetch_add(1, Ordering::Relaxed);
    }))
}

const OBJS: u64 = 64;
const IDS: u64 = 4;

/// Readers look variables up and check their data inside read sections while writers
/// allocate and free overlapping keys; freed memory is poisoned before it is given back.
fn readers_never_see_freed_memory<F: Flavor>(flavor: Arc<F>) {
    let warnings = Arc::new(AtomicUsize::new(0));
    // Few buckets: long chains, so unlinking in the middle of a chain is exercised.
    let shadow = Shadow::with_buckets(Arc::clone(&flavor), counting_log(Arc::clone(&warnings)), 16);
    let deadline = Instant::now() + budget();
    let ctors = AtomicUsize::new(0);
    let dtors = AtomicUsize::new(0);
    let alloc_none = AtomicUsize::new(0);
    let hits = AtomicU64::new(0);
    let misses = AtomicU64::new(0);

    std::thread::scope(|s| {
        for r in 0..2u64 {
            let (shadow, flavor, hits, misses) = (&shadow, &flavor, &hits, &misses);
            s.spawn(move || {
                let _reg = Registered::new(&**flavor);
                let mut rng = Rng(0x1234_5678 + r);
                let (mut h, mut m) = (0, 0);
                while Instant::now() < deadline {
                    for _ in 0..64 {
                        let x = rng.next();
                        let (n, id) = (x % OBJS, (x >> 32) % IDS);
                        let _guard = flavor.read_lock();
                        match shadow.get(obj(n), id) {
                            Some(p) => {
                                check(p, n, id);
                                // Stay a while: a free racing with us must not reclaim.
                                for _ in 0..(x >> 58) {
                                    std::hint::spin_loop();
                                }
                                check(p, n, id);
                                h += 1;
                            }
                            None => m += 1,
                        }
                    }
                }
                hits.fetch_add(h, Ordering::Relaxed);
                misses.fetch_add(m, Ordering::Relaxed);
            });
        }
        for w in 0..2u64 {
            let (shadow, flavor, ctors, dtors, alloc_none) =
                (&shadow, &flavor, &ctors, &dtors, &alloc_none);
            s.spawn(move || {
                let _reg = Registered::new(&**flavor);
                let mut rng = Rng(0xdead_beef + w);
                let ctor_for = |n: u64, id: u64| {
                    move |o: *const c_void, d: NonNull<u8>| {
                        assert_eq!(o, obj(n));
                        init(d, n, id);
                        ctors.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                };
                let mut dtor = |o: *const c_void, d: NonNull<u8>| {
                    let n = o as u64 / 64;
                    // The id is not passed to a destructor: find it from the data.
                    // SAFETY: the variable is unlinked but not reclaimed (under the lock).
                    let v = unsafe { d.cast::<u64>().as_ptr().read() };
                    let id = (0..IDS).find(|&id| value(n, id) == v).expect("valid data");
                    check(d, n, id);
                    dtors.fetch_add(1, Ordering::Relaxed);
                };
                while Instant::now() < deadline {
                    let x = rng.next();
                    let (n, id) = (x % OBJS, (x >> 32) % IDS);
                    match (x >> 48) % 100 {
                        0..40 => {
                            let _guard = flavor.read_lock();
                            let mut ctor = ctor_for(n, id);
                            let p = shadow
                                .get_or_alloc(obj(n), id, 16, Some(&mut ctor))
                                .expect("get_or_alloc");
                            check(p, n, id);
                        }
                        40..60 => {
                            let _guard = flavor.read_lock();
                            let mut ctor = ctor_for(n, id);
                            match shadow.alloc(obj(n), id, 16, Some(&mut ctor)) {
                                Some(p) => check(p, n, id),
                                None => {
                                    alloc_none.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        60..99 => {
                            shadow.free(obj(n), id, Some(&mut dtor));
                        }
                        _ => {
                            shadow.free_all(id, Some(&mut dtor));
                        }
                    }
                }
            });
        }
    });

    let (h, m) = (hits.load(Ordering::Relaxed), misses.load(Ordering::Relaxed));
    assert!(h > 0 && m > 0, "the readers saw {h} hits and {m} misses");
    assert_eq!(
        warnings.load(Ordering::Relaxed),
        alloc_none.load(Ordering::Relaxed),
        "every failed alloc warned once, and nothing else did"
    );
    let live = ctors.load(Ordering::Relaxed) - dtors.load(Ordering::Relaxed);
    assert_eq!(shadow.len(), live);
    let _reg = Registered::new(&*flavor);
    let mut dtor = |_: *const c_void, _: NonNull<u8>| {
        dtors.fetch_add(1, Ordering::Relaxed);
    };
    let freed: usize = (0..IDS)
        .map(|id| shadow.free_all(id, Some(&mut dtor)))
        .sum();
    assert_eq!(freed, live);
    assert_eq!(ctors.load(Ordering::Relaxed), dtors.load(Ordering::Relaxed));
    flavor.barrier();
    assert_eq!(shadow.outstanding(), 0, "memory not given back");
}

/// Threads racing get_or_alloc (and one racing alloc) on fresh keys: one constructor call
/// per key, and every caller gets the same variable.
fn racing_allocations_construct_once<F: Flavor>(flavor: Arc<F>) {
    const THREADS: usize = 3;
    const KEYS: usize = 16;
    let warnings = Arc::new(AtomicUsize::new(0));
    let shadow = Shadow::new(Arc::clone(&flavor), counting_log(Arc::clone(&warnings)));
    let _reg = Registered::new(&*flavor);
    let deadline = Instant::now() + budget();
    let mut rounds = 0u64;
    while rounds < 5 || Instant::now() < deadline {
        let id = rounds;
        let counts: Vec<AtomicUsize> = (0..KEYS).map(|_| AtomicUsize::new(0)).collect();
        let start = Barrier::new(THREADS);
        let results: Vec<Vec<Option<usize>>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (shadow, flavor, counts, start) = (&shadow, &flavor, &counts, &start);
                    s.spawn(move || {
                        let _reg = Registered::new(&**flavor);
                        start.wait();
                        let mut got = vec![None; KEYS];
                        for j in 0..KEYS {
                            // Different orders per thread.
                            let k = if t % 2 == 0 { j } else { KEYS - 1 - j };
                            let n = (id << 8) | k as u64;
                            let mut ctor = |_: *const c_void, d: NonNull<u8>| {
                                counts[k].fetch_add(1, Ordering::SeqCst);
                                init(d, n, id);
                                Ok(())
                            };
                            let _guard = flavor.read_lock();
                            let p = if t == 0 {
                                shadow.alloc(obj(n), id, 16, Some(&mut ctor))
                            } else {
                                shadow.get_or_alloc(obj(n), id, 16, Some(&mut ctor))
                            };
                            if let Some(p) = p {
                                check(p, n, id);
                            }
                            got[k] = p.map(|p| p.as_ptr() as usize);
                        }
                        got
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("racer"))
                .collect()
        });
        let mut alloc_failures = 0;
        for k in 0..KEYS {
            assert_eq!(
                counts[k].load(Ordering::SeqCst),
                1,
                "key {k} constructed twice"
            );
            let winner = results[1][k].expect("get_or_alloc never fails here");
            for r in &results[1..] {
                assert_eq!(r[k], Some(winner), "two variables for key {k}");
            }
            match results[0][k] {
                Some(p) => assert_eq!(p, winner),
                None => alloc_failures += 1,
            }
        }
        assert_eq!(shadow.free_all(id, None), KEYS);
        assert!(shadow.is_empty());
        assert_eq!(warnings.swap(0, Ordering::Relaxed), alloc_failures);
        rounds += 1;
    }
    flavor.barrier();
    assert_eq!(shadow.outstanding(), 0);
}

/// A variable freed while a reader holds it stays intact, and its memory allocated, until
/// the reader's section ends.
fn reclaim_waits_for_readers<F: Flavor>(flavor: Arc<F>) {
    let shadow = Shadow::new(
        Arc::clone(&flavor),
        Log::new(Arc::new(|_: Level, l: &str| panic!("unexpected line {l}"))),
    );
    {
        let _reg = Registered::new(&*flavor);
        shadow
            .alloc(
                obj(1),
                1,
                16,
                Some(&mut |_, d| {
                    init(d, 1, 1);
                    Ok(())
                }),
            )
            .expect("alloc");
    }
    let inside = AtomicBool::new(false);
    let recheck = AtomicBool::new(false);
    let freed = AtomicBool::new(false);
    let mut unlinked = false;
    let mut outstanding_while_inside = usize::MAX;
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let _reg = Registered::new(&*flavor);
            let guard = flavor.read_lock();
            let p = shadow.get(obj(1), 1).expect("attached");
            check(p, 1, 1);
            inside.store(true, Ordering::SeqCst);
            while !recheck.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            // Freed by now, but our section began before: still intact.
            check(p, 1, 1);
            drop(guard);
        });
        while !inside.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let freer = s.spawn(|| {
            let _reg = Registered::new(&*flavor);
            assert!(shadow.free(obj(1), 1, None));
            freed.store(true, Ordering::SeqCst);
        });
        // The unlink happens at once (len counts under the writer lock, not the flavor).
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if shadow.is_empty() {
                unlinked = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(30));
        outstanding_while_inside = shadow.outstanding();
        // Let the reader finish whatever we saw, so that a failure cannot hang the test.
        recheck.store(true, Ordering::SeqCst);
        let reader = reader.join();
        let freer = freer.join();
        assert!(reader.is_ok(), "the reader saw freed memory");
        assert!(freer.is_ok(), "the free failed");
    });
    assert!(unlinked, "free never unlinked the variable");
    assert_eq!(
        outstanding_while_inside, 1,
        "memory reclaimed while a reader was inside"
    );
    assert!(freed.load(Ordering::SeqCst));
    flavor.barrier();
    assert_eq!(shadow.outstanding(), 0);
}

/// Stamp tests out for every flavor.
macro_rules! for_every_flavor {
    ($($test:ident),* $(,)?) => {
        $(
            mod $test {
                use std::sync::Arc;

                #[test]
                fn preempt() {
                    super::$test(Arc::new(klp_sync::Preempt::new()));
                }

                #[test]
                fn rcu() {
                    super::$test(Arc::new(klp_sync::Rcu::new()));
                }

                #[test]
                fn lock() {
                    super::$test(Arc::new(klp_sync::Lock::new()));
                }
            }
        )*
    };
}

for_every_flavor!(
    readers_never_see_freed_memory,
    racing_allocations_construct_once,
    reclaim_waits_for_readers,
);
