//! Shadow variables: the semantics of each operation, its messages, the callbacks' timing,
//! memory layout and reclaim, for every flavor.

use klp_core::log::{Capture, Level, Log};
use klp_core::shadow::{DATA_ALIGN, POISON, Shadow};
use klp_sync::Flavor;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// A parent object: any address will do, the store never dereferences it.
fn obj(n: usize) -> *const c_void {
    (n * 0x1000) as *const c_void
}

/// Registers the thread with the flavor (rcu) for the scope.
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

fn store<F: Flavor>(flavor: &Arc<F>) -> (Shadow<F>, Arc<Capture>) {
    let capture = Capture::new();
    let shadow = Shadow::new(Arc::clone(flavor), Log::new(capture.clone()));
    (shadow, capture)
}

fn read_u64(p: NonNull<u8>) -> u64 {
    // SAFETY: the tests read variables they made with 8 or more bytes, not freed yet.
    unsafe { p.cast::<u64>().as_ptr().read() }
}

fn write_u64(p: NonNull<u8>, v: u64) {
    // SAFETY: a constructor's private data of 8 or more bytes.
    unsafe { p.cast::<u64>().as_ptr().write(v) }
}

/// A constructor that stores `v`.
fn writing(v: u64) -> impl FnMut(*const c_void, NonNull<u8>) -> Result<(), i32> {
    move |_, d| {
        write_u64(d, v);
        Ok(())
    }
}

/// alloc of an existing pair: the kernel's WARN text, `None`, the variable untouched and
/// the constructor not called.
fn duplicate_alloc_warns<F: Flavor>(flavor: Arc<F>) {
    let _r = Registered::new(&*flavor);
    let (shadow, capture) = store(&flavor);
    let p = shadow
        .alloc(obj(1), 0x1234, 8, Some(&mut writing(42)))
        .expect("first alloc");
    assert!(
        capture.take().is_empty(),
        "a successful alloc prints nothing"
    );

    let calls = AtomicUsize::new(0);
    let mut ctor = |_: *const c_void, d: NonNull<u8>| {
        calls.fetch_add(1, Ordering::Relaxed);
        write_u64(d, 7);
        Ok(())
    };
    assert_eq!(shadow.alloc(obj(1), 0x1234, 8, Some(&mut ctor)), None);
    assert_eq!(
        capture.take_with_levels(),
        vec![(
            Level::Warning,
            "livepatch: Duplicate shadow variable <0x1000, 1234>".to_string()
        )]
    );
    assert_eq!(
        calls.load(Ordering::Relaxed),
        0,
        "the constructor must not run"
    );
    assert_eq!(shadow.get(obj(1), 0x1234), Some(p));
    assert_eq!(read_u64(p), 42, "the existing variable is unchanged");
    assert_eq!(shadow.len(), 1);

    // Lowercase hex without 0x for the id, as %lx.
    shadow
        .alloc(obj(0xabc), 0xdead_beef, 0, None)
        .expect("alloc");
    assert_eq!(shadow.alloc(obj(0xabc), 0xdead_beef, 0, None), None);
    assert_eq!(
        capture.take(),
        vec!["livepatch: Duplicate shadow variable <0xabc000, deadbeef>".to_string()]
    );
    // The typed variant warns the same way.
    assert_eq!(shadow.alloc_with(obj(1), 0x1234, || 1u64), None);
    assert_eq!(capture.take().len(), 1);
}

/// A failing constructor: the kernel's error text, `None`, nothing attached.
fn constructor_failure<F: Flavor>(flavor: Arc<F>) {
    let _r = Registered::new(&*flavor);
    let (shadow, capture) = store(&flavor);
    let saw_zeroed = AtomicBool::new(false);
    let mut failing = |o: *const c_void, d: NonNull<u8>| {
        assert_eq!(o, obj(2));
        saw_zeroed.store(read_u64(d) == 0, Ordering::Relaxed);
        write_u64(d, 99);
        Err(-22)
    };
    assert_eq!(shadow.alloc(obj(2), 5, 8, Some(&mut failing)), None);
    assert!(saw_zeroed.load(Ordering::Relaxed), "ctor gets zeroed data");
    assert_eq!(
        capture.take_with_levels(),
        vec![(
            Level::Err,
            "livepatch: Failed to construct shadow variable <0x2000, 5> (-22)".to_string()
        )]
    );
    assert_eq!(shadow.get(obj(2), 5), None);
    assert!(shadow.is_empty());
    assert_eq!(
        shadow.outstanding(),
        0,
        "a never published block is freed at once"
    );

    // get_or_alloc fails the same way.
    assert_eq!(
        shadow.get_or_alloc(obj(2), 0x10, 8, Some(&mut |_, _| Err(-12))),
        None
    );
    assert_eq!(
        capture.take(),
        vec!["livepatch: Failed to construct shadow variable <0x2000, 10> (-12)".to_string()]
    );
    assert_eq!(shadow.get(obj(2), 0x10), None);

    // The pair can be attached afterwards.
    let p = shadow
        .alloc(obj(2), 5, 8, None)
        .expect("alloc after failure");
    assert_eq!(read_u64(p), 0);
    assert!(capture.take().is_empty());
}

/// free of a missing pair: silently ignored.
fn free_missing_is_silent<F: Flavor>(flavor: Arc<F>) {
    let _r = Registered::new(&*flavor);
    let (shadow, capture) = store(&flavor);
    let p = shadow.alloc(obj(3), 1, 8, None).expect("alloc");
    let calls = AtomicUsize::new(0);
    let mut dtor = |_: *const c_void, _: NonNull<u8>| {
        calls.fetch_add(1, Ordering::Relaxed);
    };
    assert!(!shadow.free(obj(3), 2, Some(&mut dtor)));
    assert!(!shadow.free(obj(4), 1, Some(&mut dtor)));
    assert!(!shadow.free(obj(4), 1, None));
    assert_eq!(shadow.free_all(77, Some(&mut dtor)), 0);
    assert_eq!(calls.load(Ordering::Relaxed), 0);
    assert!(capture.take().is_empty());
    assert_eq!(shadow.get(obj(3), 1), Some(p));
    assert_eq!(shadow.len(), 1);
    assert_eq!(shadow.outstanding(), 1);
}

/// get_or_alloc of an existing pair: same pointer, no constructor, no message.
fn get_or_alloc_existing<F: Flavor>(flavor: Arc<F>) {
    let _r = Registered::new(&*flavor);
    let (shadow, capture) = store(&flavor);
    let p = shadow
        .get_or_alloc(obj(5), 9, 8, Some(&mut writing(5)))
        .expect("get_or_alloc");
    let calls = AtomicUsize::new(0);
    let mut ctor = |_: *const c_void, _: NonNull<u8>| {
        calls.fetch_add(1, Ordering::Relaxed);
        Ok(())
    };
    for size in [8, 0, 64] {
        assert_eq!(
            shadow.get_or_alloc(obj(5), 9, size, Some(&mut ctor)),
            Some(p)
        );
    }
    assert_eq!(calls.load(Ordering::Relaxed), 0);
    assert_eq!(read_u64(p), 5);
    assert!(capture.take().is_empty());
    assert_eq!(shadow.len(), 1);
}

/// Data of the requested size, zeroed without a constructor, aligned to 16; size 0 works.
fn zeroed_and_aligned<F: Flavor>(flavor: Arc<F>) {
    let _r = Registered::new(&*flavor);
    let (shadow, _capture) = store(&flavor);
    const { assert!(DATA_ALIGN >= 16) };
    let sizes = [0usize, 1, 7, 8, 15, 16, 17, 100, 4096, 1 << 20];
    let mut seen = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let p = shadow.alloc(obj(6), i as u64, size, None).expect("alloc");
        assert_eq!(
            p.as_ptr() as usize % DATA_ALIGN,
            0,
            "size {size} misaligned"
        );
        // SAFETY: the variable has `size` bytes and is not freed during this test.
        let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), size) };
        assert!(bytes.iter().all(|&b| b == 0), "size {size} not zeroed");
        // Writable over its whole size.
        // SAFETY: as above; nothing else uses it.
        unsafe { p.as_ptr().write_bytes(0xa5, size) };
        assert!(!seen.contains(&p));
        seen.push(p);
        assert_eq!(shadow.get(obj(6), i as u64), Some(p));
    }
    // Absurd sizes fail without a message (the kernel's failed kzalloc).
    assert_eq!(shadow.alloc(obj(6), 99, usize::MAX - 8, None), None);
    assert_eq!(shadow.len(), sizes.len());
}

/// The constructor runs before publication: a lookup from it does not find the variable.
/// The destructor runs after unlinking and before reclaim: a lookup from it finds nothing,
/// and the data is still intact.
fn callback_timing<F: Flavor>(flavor: Arc<F>) {
    let _r = Registered::new(&*flavor);
    let (shadow, _capture) = store(&flavor);
    let mut in_ctor = |o: *const c_void, d: NonNull<u8>| {
        assert_eq!(
            shadow.get(o, 1),
            None,
            "published before the constructor ran"
        );
        write_u64(d, 0x5eed);
        Ok(())
    };
    let p = shadow
        .alloc(obj(7), 1, 8, Some(&mut in_ctor))
        .expect("alloc");
    assert_eq!(shadow.get(obj(7), 1), Some(p));

    let ran = AtomicBool::new(false);
    let mut in_dtor = |o: *const c_void, d: NonNull<u8>| {
        assert_eq!(o, obj(7));
        assert_eq!(d, p);
        assert_eq!(shadow.get(o, 1), None, "still linked in the destructor");
        assert_eq!(read_u64(d), 0x5eed, "reclaimed before the destructor");
        assert_eq!(shadow.outstanding(), 1);
        ran.store(true, Ordering::Relaxed);
    };
    assert!(shadow.free(obj(7), 1, Some(&mut in_dtor)));
    assert!(ran.load(Ordering::Relaxed));
    flavor.barrier();
    assert_eq!(shadow.outstanding(), 0);
}

/// free_all frees exactly the variables with its id, each with the destructor.
fn free_all_by_id<F: Flavor>(flavor: Arc<F>) {
    let _r = Registered::new(&*flavor);
    let (shadow, capture) = store(&flavor);
    for n in 0..50 {
        for id in [1u64, 2, 3] {
            let v = (n as u64) << 8 | id;
            shadow
                .alloc(obj(n), id, 8, Some(&mut writing(v)))
                .expect("alloc");
        }
    }
    let mut seen = Vec::new();
    let mut dtor = |o: *const c_void, d: NonNull<u8>| {
        let n = o as usize / 0x1000;
        assert_eq!(read_u64(d), (n as u64) << 8 | 2);
        seen.push(n);
    };
    assert_eq!(shadow.free_all(2, Some(&mut dtor)), 50);
    seen.sort_unstable();
    assert_eq!(seen, (0..50).collect::<Vec<_>>());
    for n in 0..50 {
        assert_eq!(shadow.get(obj(n), 2), None);
        for id in [1u64, 3] {
            let p = shadow.get(obj(n), id).expect("other ids stay");
            assert_eq!(read_u64(p), (n as u64) << 8 | id);
        }
    }
    assert_eq!(shadow.len(), 100);
    assert_eq!(shadow.free_all(2, None), 0);
    assert!(capture.take().is_empty());
}

/// Every key in one chain: unlinking the head, the middle and the tail keeps the rest.
fn one_bucket_chain<F: Flavor>(flavor: Arc<F>) {
    let _r = Registered::new(&*flavor);
    let shadow = Shadow::with_buckets(Arc::clone(&flavor), Log::new(Capture::new()), 1);
    assert_eq!(shadow.buckets(), 1);
    let keys: Vec<(usize, u64)> = (0..8).flat_map(|n| (0..4).map(move |id| (n, id))).collect();
    for &(n, id) in &keys {
        let v = (n as u64) * 100 + id;
        shadow
            .alloc(obj(n), id, 8, Some(&mut writing(v)))
            .expect("alloc");
    }
    // Inserted at the head: (7,3) is first, (0,0) last, (4,2) in the middle.
    for &(n, id) in &[(7, 3), (0, 0), (4, 2)] {
        assert!(shadow.free(obj(n), id, None));
    }
    assert_eq!(shadow.free_all(1, None), 8);
    for &(n, id) in &keys {
        let gone = id == 1 || [(7, 3), (0, 0), (4, 2)].contains(&(n, id));
        match shadow.get(obj(n), id) {
            Some(p) => {
                assert!(!gone, "({n}, {id}) should be gone");
                assert_eq!(read_u64(p), (n as u64) * 100 + id);
            }
            None => assert!(gone, "({n}, {id}) lost"),
        }
    }
    assert_eq!(shadow.len(), keys.len() - 11);
}

/// The typed convenience.
fn typed_values<F: Flavor>(flavor: Arc<F>) {
    #[derive(Debug, PartialEq)]
    #[repr(align(16))]
    struct Wide([u64; 3]);

    let _r = Registered::new(&*flavor);
    let (shadow, capture) = store(&flavor);
    let p = shadow
        .get_or_alloc_with(obj(8), 1, || Wide([1, 2, 3]))
        .expect("alloc");
    assert_eq!(p.as_ptr() as usize % 16, 0);
    let q = shadow
        .get_or_alloc_with(obj(8), 1, || -> Wide { panic!("must not run") })
        .expect("existing");
    assert_eq!(p, q);
    // SAFETY: made as a Wide above and not freed.
    assert_eq!(unsafe { p.as_ref() }, &Wide([1, 2, 3]));
    assert_eq!(shadow.get(obj(8), 1).map(NonNull::cast), Some(p));
    let u = shadow.alloc_with(obj(8), 2, || 7u8).expect("alloc");
    // SAFETY: made as a u8.
    assert_eq!(unsafe { *u.as_ptr() }, 7);
    assert!(capture.take().is_empty());
}

/// Callbacks calling back into the store panic instead of deadlocking, and the store is
/// intact afterwards.
fn reentrant_callbacks_panic<F: Flavor>(flavor: Arc<F>) {
    let _r = Registered::new(&*flavor);
    let (shadow, _capture) = store(&flavor);
    let result = catch_unwind(AssertUnwindSafe(|| {
        shadow.alloc(
            obj(9),
            1,
            8,
            Some(&mut |_, _| {
                shadow.alloc(obj(9), 2, 8, None);
                Ok(())
            }),
        )
    }));
    let message = result.expect_err("must panic");
    let message = message
        .downcast_ref::<String>()
        .expect("a formatted message");
    assert!(message.contains("alloc called from a constructor or destructor"));
    assert_eq!(shadow.get(obj(9), 1), None);
    assert_eq!(shadow.get(obj(9), 2), None);
    assert_eq!(shadow.outstanding(), 0);

    // A destructor calling free: the variable is unlinked and reclaimed anyway.
    shadow.alloc(obj(9), 3, 8, None).expect("alloc");
    let result = catch_unwind(AssertUnwindSafe(|| {
        shadow.free(
            obj(9),
            3,
            Some(&mut |o, _| {
                shadow.free(o, 3, None);
            }),
        )
    }));
    assert!(result.is_err());
    assert_eq!(shadow.get(obj(9), 3), None);
    // The lock is usable again.
    shadow
        .alloc(obj(9), 4, 8, None)
        .expect("alloc after the panic");
    assert_eq!(shadow.len(), 1);
    flavor.barrier();
    assert_eq!(shadow.outstanding(), 1);
}

/// A panicking constructor attaches nothing and leaks nothing.
fn constructor_panic<F: Flavor>(flavor: Arc<F>) {
    let _r = Registered::new(&*flavor);
    let (shadow, capture) = store(&flavor);
    let result = catch_unwind(AssertUnwindSafe(|| {
        shadow.get_or_alloc_with(obj(10), 1, || -> u64 { panic!("init failed") })
    }));
    assert!(result.is_err());
    assert_eq!(shadow.get(obj(10), 1), None);
    assert_eq!(shadow.outstanding(), 0);
    assert!(capture.take().is_empty());
    assert!(shadow.get_or_alloc_with(obj(10), 1, || 1u64).is_some());
}

/// After free_all and a barrier, every allocation has been given back, poisoned first.
fn free_all_then_barrier_leaves_nothing<F: Flavor>(flavor: Arc<F>) {
    let _r = Registered::new(&*flavor);
    let (shadow, _capture) = store(&flavor);
    for n in 0..1000 {
        shadow.alloc(obj(n), 0x42, 24, None).expect("alloc");
    }
    assert_eq!(shadow.outstanding(), 1000);
    assert!(shadow.free(obj(0), 0x42, None));
    assert_eq!(shadow.free_all(0x42, None), 999);
    assert!(shadow.is_empty());
    flavor.barrier();
    assert_eq!(shadow.outstanding(), 0);
    assert_eq!(POISON, 0x6b);
}

/// Dropping a store with live variables gives them back after a grace period.
fn drop_frees_everything<F: Flavor>(flavor: Arc<F>) {
    let _r = Registered::new(&*flavor);
    let (shadow, _capture) = store(&flavor);
    for n in 0..100 {
        for id in 0..3 {
            shadow
                .alloc(obj(n), id, 8 * id as usize, None)
                .expect("alloc");
        }
    }
    let allocations = shadow.allocations();
    assert_eq!(allocations.outstanding(), 300);
    drop(shadow);
    flavor.barrier();
    assert_eq!(allocations.outstanding(), 0);
}

/// A thread the flavor does not watch (never registered with rcu) still gets correct
/// answers, also from inside a constructor and for variables of any bucket (the store
/// makes the flavor watch it for the lookup). With 4096 buckets, a constructor's lookups
/// of 300 other variables used to fail for all but those of its own lock stripe.
fn unwatched_thread<F: Flavor>(flavor: Arc<F>) {
    let shadow = Shadow::with_buckets(Arc::clone(&flavor), Log::new(Capture::new()), 1);
    let p = {
        let _r = Registered::new(&*flavor);
        shadow.alloc_with(obj(11), 1, || 11u64).expect("alloc")
    };
    // Raw pointers are not Send; pass the address.
    let p_addr = p.as_ptr() as usize;
    std::thread::scope(|s| {
        s.spawn(|| {
            let p = NonNull::new(p_addr as *mut u64).expect("non-null");
            assert_eq!(shadow.get(obj(11), 1), Some(p.cast()));
            assert_eq!(shadow.get(obj(11), 2), None);
            let mut ctor = |_: *const c_void, d: NonNull<u8>| {
                // One bucket, so the same stripe as the variable being made.
                assert_eq!(shadow.get(obj(11), 1), Some(p.cast()));
                assert_eq!(shadow.get(obj(11), 2), None);
                write_u64(d, 12);
                Ok(())
            };
            let q = shadow.alloc(obj(11), 2, 8, Some(&mut ctor)).expect("alloc");
            assert_eq!(read_u64(q), 12);
            assert!(shadow.free(obj(11), 2, None));
            assert_eq!(shadow.get(obj(11), 2), None);
        });
    });
    flavor.barrier();
    assert_eq!(shadow.outstanding(), 1);

    let wide = Shadow::new(Arc::clone(&flavor), Log::new(Capture::new()));
    {
        let _r = Registered::new(&*flavor);
        for n in 0..300 {
            wide.alloc_with(obj(1000 + n), 7, || n as u64)
                .expect("alloc");
        }
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut found = 0u64;
            let mut ctor = |_: *const c_void, _: NonNull<u8>| {
                for n in 0..300 {
                    if let Some(p) = wide.get(obj(1000 + n), 7) {
                        // SAFETY: made as a u64 above, not freed.
                        assert_eq!(unsafe { *p.cast::<u64>().as_ptr() }, n as u64);
                        found += 1;
                    }
                }
                Ok(())
            };
            wide.alloc(obj(2000), 7, 8, Some(&mut ctor)).expect("alloc");
            assert_eq!(found, 300, "lookups from a constructor");
        });
    });
}

/// The constructor is atomic with respect to other insertions of the same key: while it
/// runs, lookups miss and a concurrent get_or_alloc waits, then returns the same variable
/// without running its own constructor.
fn constructor_is_atomic_per_key<F: Flavor>(flavor: Arc<F>) {
    let (shadow, capture) = store(&flavor);
    let started = AtomicBool::new(false);
    let release = AtomicBool::new(false);
    let second_done = AtomicBool::new(false);
    let second_ctor = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let first = s.spawn(|| {
            let _r = Registered::new(&*flavor);
            let mut slow = |_: *const c_void, d: NonNull<u8>| {
                started.store(true, Ordering::SeqCst);
                while !release.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                write_u64(d, 1);
                Ok(())
            };
            shadow
                .get_or_alloc(obj(12), 1, 8, Some(&mut slow))
                .map(|p| p.as_ptr() as usize)
        });
        while !started.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        {
            let _r = Registered::new(&*flavor);
            assert_eq!(shadow.get(obj(12), 1), None, "visible before construction");
        }
        let second = s.spawn(|| {
            let _r = Registered::new(&*flavor);
            let mut counting = |_: *const c_void, d: NonNull<u8>| {
                second_ctor.fetch_add(1, Ordering::SeqCst);
                write_u64(d, 2);
                Ok(())
            };
            let p = shadow.get_or_alloc(obj(12), 1, 8, Some(&mut counting));
            second_done.store(true, Ordering::SeqCst);
            p.map(|p| p.as_ptr() as usize)
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !second_done.load(Ordering::SeqCst),
            "get_or_alloc did not wait for the running constructor"
        );
        release.store(true, Ordering::SeqCst);
        let p = first.join().expect("first").expect("allocated");
        let q = second.join().expect("second").expect("allocated");
        assert_eq!(p, q);
        assert_eq!(read_u64(NonNull::new(p as *mut u8).expect("non-null")), 1);
    });
    assert_eq!(second_ctor.load(Ordering::SeqCst), 0);
    assert_eq!(shadow.len(), 1);
    assert!(capture.take().is_empty());
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
    duplicate_alloc_warns,
    constructor_failure,
    free_missing_is_silent,
    get_or_alloc_existing,
    zeroed_and_aligned,
    callback_timing,
    free_all_by_id,
    one_bucket_chain,
    typed_values,
    reentrant_callbacks_panic,
    constructor_panic,
    free_all_then_barrier_leaves_nothing,
    drop_frees_everything,
    unwatched_thread,
    constructor_is_atomic_per_key,
);
