//! Read-side synchronization flavors for libklp.
//!
//! The livepatch handler reads a function's `func_stack` in a short read section; the
//! control side unlinks entries and must wait until no thread can still see them. In 2017
//! the kernel replaced RCU there by "preempt disable + schedule on each CPU", because RCU
//! is not watching in idle threads. This crate makes both designs real for threads of a
//! process, behind one contract, [`Flavor`]:
//!
//! * [`Preempt`]: every thread is protected, registered automatically at its first read,
//!   parked or not; `synchronize` is one process-wide barrier plus a scan, callers are
//!   serialized and nothing is batched; `defer` is synchronize-then-run.
//! * [`Rcu`]: liburcu-memb style. Only registered, unparked threads are watched; concurrent
//!   `synchronize` callers share grace periods; `defer` runs on a worker that batches
//!   callbacks behind one grace period; expedited and polled grace periods exist.
//! * [`Lock`]: a reader-writer lock, slow and obviously right, for differential tests
//!   and as a benchmark baseline.
//!
//! The read side of `preempt` and `rcu` is the same: a per-thread word, written with plain
//! stores and compiler fences when `membarrier(PRIVATE_EXPEDITED)` is available, with a
//! real fence otherwise ([`barrier_mode`]). The algorithms and the argument for every
//! memory ordering are in [`docs`].
//!
//! ```
//! use klp_sync::{Flavor, Rcu};
//! use std::sync::atomic::{AtomicPtr, Ordering};
//!
//! let rcu = Rcu::new();
//! let _me = rcu.register_thread();
//! let cell = AtomicPtr::new(Box::into_raw(Box::new(1u32)));
//! {
//!     let _guard = rcu.read_lock();
//!     // SAFETY (example): the pointer is retired only after a grace period.
//!     assert_eq!(unsafe { *cell.load(Ordering::Acquire) }, 1);
//! }
//! let old = cell.swap(Box::into_raw(Box::new(2)), Ordering::AcqRel);
//! rcu.synchronize();
//! // SAFETY (example): no reader can still see `old` after the grace period.
//! drop(unsafe { Box::from_raw(old) });
//! # drop(unsafe { Box::from_raw(cell.load(Ordering::Relaxed)) });
//! ```

#![warn(missing_docs)]

pub mod docs;
#[cfg(not(klp_loom))]
mod event;
#[cfg(not(klp_loom))]
pub mod fork;
mod gp;
mod os;
mod reader;
mod sync;
mod tls;

#[cfg(not(klp_loom))]
mod local;
#[cfg(not(klp_loom))]
mod lock;
#[cfg(not(klp_loom))]
mod preempt;
#[cfg(not(klp_loom))]
mod rcu;

#[cfg(not(klp_loom))]
pub use event::Event;
#[cfg(not(klp_loom))]
pub use lock::Lock;
pub use os::{
    BarrierMode, FORCE_FENCES_ENV, FenceReason, barrier_mode, heavy_barrier,
    light_barrier_pub as light_barrier,
};
#[cfg(not(klp_loom))]
pub use os::{SignalsBlocked, spawn_service};
#[cfg(not(klp_loom))]
pub use preempt::Preempt;
#[cfg(not(klp_loom))]
pub use rcu::{GpCookie, Rcu, ThreadRegistration};
pub use reader::SlotToken;
pub use tls::ExitHook;

#[cfg(klp_loom)]
#[doc(hidden)]
pub mod model;

use std::marker::PhantomData;

/// A read-side synchronization flavor: what the livepatch handler reads under, and what
/// the control side waits on before it frees what it unlinked.
///
/// # Safety
///
/// An implementation promises, for every instance `f`:
///
/// 1. **Grace period.** For every read section `R` of `f` and every call `S` of
///    `f.synchronize()`: if `R` runs on a thread where `f.is_watching()` is true and `R`
///    began before `S` was called, `S` returns only after `R` has ended, and every load of
///    `R` happens-before `S` returns.
/// 2. **Publication.** A read section of `f` on a watched thread that `S` does not wait
///    for observes every write that happened-before `S` was called.
/// 3. **Nesting.** A read lock taken inside a read section of the same thread nests; the
///    section ends with the outermost unlock.
/// 4. **Deferral.** `f.defer(c)` runs `c` exactly once, after a grace period (clauses 1
///    and 2) that begins after `defer` was called. `f.barrier()` returns only after every
///    closure deferred on `f` before the call has finished running.
/// 5. **Watching.** `f.is_watching()` is true on a thread exactly when clauses 1 and 2
///    cover the read sections it would enter now.
/// 6. **Threads.** A thread that exits, registered or not, never delays a later grace
///    period.
pub unsafe trait Flavor: Send + Sync {
    /// What a read section hands from its lock to its unlock (the thread's slot, say).
    type Token: Copy;

    /// The flavor's name as shown in benchmarks and messages.
    fn name(&self) -> &'static str;

    /// Begin a read section on the calling thread.
    ///
    /// # Safety
    ///
    /// 1. The caller ends the section with exactly one [`Flavor::raw_read_unlock`] with the
    ///    returned token, on the same thread.
    /// 2. Sections on one thread end in the reverse order of their beginning.
    unsafe fn raw_read_lock(&self) -> Self::Token;

    /// End a read section begun with [`Flavor::raw_read_lock`].
    ///
    /// # Safety
    ///
    /// 1. `token` comes from the matching `raw_read_lock` on this thread, whose section is
    ///    the innermost one still open.
    unsafe fn raw_read_unlock(&self, token: Self::Token);

    /// Begin a read section that ends when the guard is dropped.
    #[inline(always)]
    fn read_lock(&self) -> ReadGuard<'_, Self> {
        // SAFETY: the guard is !Send and calls `raw_read_unlock` with this token exactly
        // once, in its Drop, on this thread (clause 1). Guards dropped out of order still
        // balance: each unlock undoes one lock of the same thread (clause 2 is about the
        // count, which stays right).
        let token = unsafe { self.raw_read_lock() };
        ReadGuard {
            flavor: self,
            token,
            _not_send: PhantomData,
        }
    }

    /// Wait for a grace period (see clause 1). Panics when called inside a read section of
    /// the calling thread, where it would wait for itself.
    fn synchronize(&self);

    /// A grace period that spins instead of sleeping; the same guarantee as
    /// [`Flavor::synchronize`].
    fn synchronize_expedited(&self) {
        self.synchronize();
    }

    /// Whether the calling thread's read sections are seen by `synchronize`.
    fn is_watching(&self) -> bool;

    /// Run `f` after a grace period (the kernel's `call_rcu`).
    fn defer(&self, f: Box<dyn FnOnce() + Send + 'static>);

    /// Wait until every closure deferred before this call has run (`rcu_barrier`).
    fn barrier(&self);

    /// Register the calling thread where the flavor has explicit registration (rcu);
    /// elsewhere every thread is already watched and this does nothing.
    fn register_current_thread(&self) {}

    /// Undo [`Flavor::register_current_thread`]. Must not be called in a read section.
    fn unregister_current_thread(&self) {}

    /// The thread is about to block (rcu: it goes offline and stops being watched). Must not
    /// be called in a read section.
    fn park(&self) {}

    /// The thread is running again after [`Flavor::park`].
    fn unpark(&self) {}

    /// Make the calling thread watched until the matching [`Flavor::irq_exit`], whatever
    /// it was (unregistered, parked): the kernel's `rcu_irq_enter()`, for a read section
    /// that must be protected where the flavor would not watch the thread (a signal
    /// handler on a parked thread). Cheap when the thread is watched already; flavors that
    /// watch every thread do nothing. A signal handler that runs in between leaves the
    /// state as it found it, so the pair may be interrupted anywhere.
    fn irq_enter(&self) -> IrqState {
        IrqState::WATCHED
    }

    /// Undo [`Flavor::irq_enter`]: the thread is watched again exactly as before. Called
    /// outside read sections.
    fn irq_exit(&self, state: IrqState) {
        let _ = state;
    }
}

/// What [`Flavor::irq_exit`] restores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqState(pub(crate) u32);

impl IrqState {
    /// The thread was watched already: nothing to restore.
    pub const WATCHED: IrqState = IrqState(u32::MAX);

    /// Whether [`Flavor::irq_enter`] had to make the thread watched (the seed's case: a
    /// read section the flavor would not have protected).
    pub fn was_unwatched(self) -> bool {
        self != Self::WATCHED
    }
}

/// An open read section; dropping it ends the section.
#[must_use = "the read section ends when the guard is dropped"]
pub struct ReadGuard<'a, F: Flavor + ?Sized> {
    flavor: &'a F,
    token: F::Token,
    // Read sections belong to a thread.
    _not_send: PhantomData<*const ()>,
}

impl<F: Flavor + ?Sized> Drop for ReadGuard<'_, F> {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: the token comes from `read_lock` on this thread (the guard is !Send).
        unsafe { self.flavor.raw_read_unlock(self.token) };
    }
}

/// Whether the calling thread is inside a read section of the `preempt` or `rcu` flavor
/// (of any instance: they share the per-thread word).
#[cfg(not(klp_loom))]
pub fn in_read_section() -> bool {
    local::nesting() != 0
}

/// Whether the calling thread is inside a grace period, a deferral or a barrier of the
/// `preempt` or `rcu` flavor: a signal handler that interrupted one must not wait for a
/// grace period (it would wait for a lock its own thread holds).
#[cfg(not(klp_loom))]
pub fn in_grace_period() -> bool {
    local::in_grace_period()
}
