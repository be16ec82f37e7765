//! The one place where the concurrency primitives of this crate come from.
//!
//! Under `--cfg klp_loom` every atomic, fence, lock and spin hint is loom's, so the models in
//! `tests/loom.rs` explore the real algorithm. loom has no compiler fence and no
//! `membarrier`; both become `fence(SeqCst)` there, which checks the algorithm under the
//! symmetric model (see [`crate::docs`] for why the asymmetric pairing is equivalent).

#[cfg(not(klp_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, fence};
#[cfg(not(klp_loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

#[cfg(klp_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, fence};
#[cfg(klp_loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};

pub(crate) use std::sync::atomic::Ordering;

/// A compiler-only barrier: the light half of an asymmetric fence pair.
#[inline(always)]
#[cfg_attr(klp_loom, allow(dead_code))]
pub(crate) fn compiler_fence() {
    #[cfg(not(klp_loom))]
    std::sync::atomic::compiler_fence(Ordering::SeqCst);
    #[cfg(klp_loom)]
    fence(Ordering::SeqCst);
}

/// One step of a busy-wait loop. loom needs a yield here to make progress.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(not(klp_loom))]
    std::hint::spin_loop();
    #[cfg(klp_loom)]
    loom::thread::yield_now();
}

/// Give up the processor for a while: a yield, then short sleeps that grow to a bound.
/// Only updaters call it; readers never wait.
#[cfg(not(klp_loom))]
pub(crate) fn backoff(round: u32) {
    if round < 64 {
        std::hint::spin_loop();
    } else if round < 128 {
        std::thread::yield_now();
    } else {
        let exp = (round - 128).min(10);
        std::thread::sleep(std::time::Duration::from_micros(1u64 << exp));
    }
}

#[cfg(klp_loom)]
pub(crate) fn backoff(_round: u32) {
    loom::thread::yield_now();
}
