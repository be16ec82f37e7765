//! The one place where the atomics and barriers of the per-thread protocol come from.
//!
//! Under `--cfg klp_loom` they are loom's, so that `tests/loom_thread.rs` explores the real
//! state machine of [`crate::thread`]. loom has no `membarrier` and no compiler-only
//! fence: both barriers become `fence(SeqCst)` there (the symmetric model of the same
//! store-buffering argument, see `klp_sync::docs`), and a signal fence (what orders a
//! thread's own stores for a handler that interrupts it) becomes nothing, because the
//! model runs a "handler" inline, in program order.

#[cfg(klp_loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize};
#[cfg(not(klp_loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize};

pub(crate) use std::sync::atomic::Ordering;

/// Orders the calling thread's stores for a signal handler that may interrupt it (the
/// handler runs on the same thread: only the compiler could reorder them).
#[inline(always)]
pub(crate) fn signal_fence() {
    #[cfg(not(klp_loom))]
    std::sync::atomic::compiler_fence(Ordering::SeqCst);
}

/// The light half of the asymmetric barrier (a thread's outermost entry).
#[inline(always)]
pub(crate) fn light_barrier() {
    #[cfg(not(klp_loom))]
    klp_sync::light_barrier();
    #[cfg(klp_loom)]
    loom::sync::atomic::fence(Ordering::SeqCst);
}

/// The heavy half (a worker claiming running threads): one for all of them.
pub(crate) fn heavy_barrier() {
    #[cfg(not(klp_loom))]
    klp_sync::heavy_barrier();
    #[cfg(klp_loom)]
    loom::sync::atomic::fence(Ordering::SeqCst);
}

/// One step of a wait for another thread (a checker holding this one).
#[inline]
pub(crate) fn spin_wait(spins: u32) {
    #[cfg(not(klp_loom))]
    {
        // A checker holds a thread for a stack check, or for a barrier and a few stores:
        // microseconds.
        if spins < 100 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    #[cfg(klp_loom)]
    {
        let _ = spins;
        loom::thread::yield_now();
    }
}
