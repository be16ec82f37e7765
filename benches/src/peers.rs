//! The peers a user would pick instead of klp-sync, measured beside it in the same run:
//!
//! * **liburcu-memb** (Debian's `liburcu-dev`), through the small C shim of
//!   `c/urcu_shim.c`, built when the library is found at build time ([`urcu_version`]
//!   says which). `UrcuMemb` puts it behind the [`Flavor`](klp_sync::Flavor) trait so
//!   that the harness of the flavors (busy readers, concurrent callers, long readers,
//!   deferred frees) runs it unchanged; its read sections in [`urcu_read_section_ns`] are
//!   liburcu's inline ones, as a program using it would write them.
//! * **crossbeam-epoch** `pin()` and **arc-swap** `load()`: read sections only (neither
//!   has a grace period to wait for).

use crate::median;
use std::hint::black_box;
use std::time::Instant;

/// The version of liburcu-memb the benchmarks were built with, or `None` when it was not
/// installed (the reports say "not installed").
pub fn urcu_version() -> Option<&'static str> {
    let v = env!("KLP_URCU_VERSION");
    (cfg!(klp_urcu) && !v.is_empty()).then_some(v)
}

/// The time of `n` liburcu-memb read sections (lock + unlock, inlined in C) on the
/// calling thread, registered for the run.
#[cfg(klp_urcu)]
pub fn urcu_read_sections(n: u64) -> std::time::Duration {
    use klp_sync::Flavor;
    let u = UrcuMemb;
    u.register_current_thread();
    let t = Instant::now();
    // SAFETY: the calling thread is registered (clause 1 of `klp_urcu_read_loop`).
    black_box(unsafe { urcu::klp_urcu_read_loop(n) });
    let d = t.elapsed();
    u.unregister_current_thread();
    d
}

/// Median cost (ns) of one liburcu-memb read section (lock + unlock, inlined in C), over
/// `repeats` runs of `n`; `None` when liburcu-memb is not installed.
pub fn urcu_read_section_ns(n: u64, repeats: usize) -> Option<f64> {
    #[cfg(klp_urcu)]
    {
        let mut samples: Vec<f64> = (0..repeats)
            .map(|_| urcu_read_sections(n).as_nanos() as f64 / n as f64)
            .collect();
        Some(median(&mut samples))
    }
    #[cfg(not(klp_urcu))]
    {
        let _ = (n, repeats);
        None
    }
}

/// Median cost (ns) of `crossbeam_epoch::pin()` and drop.
pub fn crossbeam_pin_ns(n: u64, repeats: usize) -> f64 {
    let mut samples: Vec<f64> = (0..repeats)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                let g = crossbeam_epoch::pin();
                black_box(&g);
            }
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    median(&mut samples)
}

/// Median cost (ns) of `ArcSwap::load()` and drop of its guard (no writer).
pub fn arc_swap_load_ns(n: u64, repeats: usize) -> f64 {
    let a = arc_swap::ArcSwap::from_pointee(7u64);
    let mut samples: Vec<f64> = (0..repeats)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                let g = a.load();
                black_box(&**g);
            }
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    median(&mut samples)
}

#[cfg(klp_urcu)]
pub use urcu::UrcuMemb;

#[cfg(klp_urcu)]
mod urcu {
    use klp_sync::Flavor;
    use std::cell::Cell;
    use std::ffi::c_void;

    // `c/urcu_shim.c`, linked by build.rs with liburcu-memb.
    unsafe extern "C" {
        pub(super) fn klp_urcu_register();
        pub(super) fn klp_urcu_unregister();
        pub(super) fn klp_urcu_read_lock();
        pub(super) fn klp_urcu_read_unlock();
        pub(super) fn klp_urcu_synchronize();
        /// `n` inlined read sections.
        ///
        /// # Safety
        ///
        /// 1. The calling thread is registered.
        pub(super) fn klp_urcu_read_loop(n: u64) -> u64;
        pub(super) fn klp_urcu_call(f: unsafe extern "C" fn(*mut c_void), arg: *mut c_void) -> i32;
        pub(super) fn klp_urcu_barrier();
    }

    thread_local! {
        /// Registrations of the calling thread (liburcu's must not nest).
        static REGISTERED: Cell<u32> = const { Cell::new(0) };
    }

    /// liburcu-memb as a [`Flavor`], for the benchmark harness. Every instance is the
    /// same process-wide liburcu-memb: one registry of threads, one call_rcu worker.
    /// Registration nests here (liburcu's does not: only the outermost is passed on).
    #[derive(Debug, Default, Clone, Copy)]
    pub struct UrcuMemb;

    /// The closure of a deferred call, on liburcu's call_rcu worker.
    unsafe extern "C" fn run_deferred(arg: *mut c_void) {
        // SAFETY: `arg` is the box that `defer` leaked for this one call.
        let f = unsafe { Box::from_raw(arg.cast::<Box<dyn FnOnce() + Send + 'static>>()) };
        // No unwinding into C.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
            std::process::abort();
        }
    }

    // SAFETY: liburcu-memb's contract, for registered threads (`is_watching` is exactly
    // "registered", clause 5): `synchronize_rcu` waits for every read section of a
    // registered thread that began before it and orders it with membarrier (clauses 1, 2);
    // its read sections nest (3); `call_rcu` runs the callback once after a grace period
    // and `rcu_barrier` waits for every callback queued before (4); a registered thread
    // unregisters before it exits (the harness does), and an unregistered one is never
    // waited for (6). Unregistered threads are not watched, like klp-sync's rcu flavor.
    unsafe impl Flavor for UrcuMemb {
        type Token = ();

        fn name(&self) -> &'static str {
            "urcu-memb"
        }

        unsafe fn raw_read_lock(&self) {
            // SAFETY: a plain call of the C function; sections pair on the thread
            // (the caller's clauses).
            unsafe { klp_urcu_read_lock() }
        }

        unsafe fn raw_read_unlock(&self, _token: ()) {
            // SAFETY: as for `raw_read_lock`.
            unsafe { klp_urcu_read_unlock() }
        }

        fn synchronize(&self) {
            // SAFETY: no precondition beyond not being inside a read section, which
            // the harness never is when it calls this.
            unsafe { klp_urcu_synchronize() }
        }

        fn is_watching(&self) -> bool {
            REGISTERED.with(Cell::get) > 0
        }

        fn defer(&self, f: Box<dyn FnOnce() + Send + 'static>) {
            let arg = Box::into_raw(Box::new(f)).cast::<c_void>();
            // SAFETY: `run_deferred` takes the box back exactly once; call_rcu needs a
            // registered caller, which the harness's deferring threads are.
            let r = unsafe { klp_urcu_call(run_deferred, arg) };
            assert_eq!(r, 0, "liburcu shim: out of memory");
        }

        fn barrier(&self) {
            // SAFETY: not called from a read section nor from a callback.
            unsafe { klp_urcu_barrier() }
        }

        fn register_current_thread(&self) {
            let n = REGISTERED.with(|r| {
                r.set(r.get() + 1);
                r.get()
            });
            if n == 1 {
                // SAFETY: the thread was not registered (count 0 → 1).
                unsafe { klp_urcu_register() }
            }
        }

        fn unregister_current_thread(&self) {
            let was = REGISTERED.with(|r| {
                let was = r.get();
                r.set(was.saturating_sub(1));
                was
            });
            if was == 1 {
                // SAFETY: the thread was registered (count 1 → 0), outside read sections.
                unsafe { klp_urcu_unregister() }
            }
        }
    }
}
