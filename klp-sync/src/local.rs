//! The calling thread's slot in the process-wide registry.
//!
//! The fast path is one load of a constant-initialized thread-local pointer. The first read
//! section of a thread claims a slot (with every signal blocked, so a handler cannot run a
//! read section half-way through); a destructor gives it back at thread exit.

use crate::reader::{Registry, Slot};
use crate::sync::{Ordering, fence};

/// The registry of every thread of the process that ever entered a read section.
pub(crate) static REGISTRY: Registry = Registry::new();

// Fast-path pointer: initial-exec TLS, no destructor, so access needs no state check.
crate::fast_thread_ptr!(ThreadSlot: Slot, "klp_sync_tls_slot");

/// Gives the slot back when the thread exits.
static OWNER: crate::ExitHook = crate::ExitHook::new(release_slot);

fn release_slot() {
    let _blocked = crate::os::SignalsBlocked::new();
    let p = ThreadSlot::get();
    ThreadSlot::set(std::ptr::null());
    // SAFETY: a non-null thread slot always points to a slot of the static registry.
    if let Some(slot) = unsafe { p.as_ref() } {
        REGISTRY.release(slot);
    }
}

/// The calling thread's slot, claimed on first use.
#[inline(always)]
pub(crate) fn current() -> &'static Slot {
    let p = ThreadSlot::get();
    // SAFETY: a non-null thread slot points into the never-freed static registry.
    match unsafe { p.as_ref() } {
        Some(slot) => slot,
        None => claim(),
    }
}

/// The calling thread's slot if it has one.
#[inline]
pub(crate) fn existing() -> Option<&'static Slot> {
    let p = ThreadSlot::get();
    // SAFETY: as in `current`.
    unsafe { p.as_ref() }
}

#[cold]
#[inline(never)]
fn claim() -> &'static Slot {
    let _blocked = crate::os::SignalsBlocked::new();
    // A signal handler may have claimed a slot for us between the caller's check and here.
    if let Some(slot) = existing() {
        return slot;
    }
    let slot = REGISTRY.claim();
    ThreadSlot::set(slot);
    // Give it back at thread exit (armed during the thread's exit, the hook runs again
    // after the current round of destructors).
    OWNER.arm();
    slot
}

/// Change the calling thread's flags. Becoming watched is followed by a full fence, like a
/// reader's entry, so an updater that misses the flag is ordered before our next reads.
pub(crate) fn set_flags(f: impl FnOnce(u32) -> u32) {
    let slot = current();
    let old = slot.flags.load(Ordering::Relaxed);
    let new = f(old);
    if new == old {
        return;
    }
    slot.flags.store(new, Ordering::SeqCst);
    fence(Ordering::SeqCst);
}

/// The calling thread's flags (0 when it has no slot).
#[inline]
pub(crate) fn flags() -> u32 {
    existing().map_or(0, |s| s.flags.load(Ordering::Relaxed))
}

/// `fork` child: the other threads are gone; their slots go back (see `crate::fork`).
#[cfg(not(klp_loom))]
pub(crate) fn fork_child() {
    REGISTRY.fork_release_others(existing());
}

/// The calling thread's nesting depth in read sections (0 when it has no slot).
#[inline]
pub(crate) fn nesting() -> u32 {
    existing().map_or(0, Slot::nesting)
}

thread_local! {
    /// How deeply the calling thread is inside grace periods (and the locks they take).
    static IN_GP: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Marks the calling thread inside a grace period for its life.
pub(crate) struct InGracePeriod(());

impl InGracePeriod {
    pub(crate) fn enter() -> Self {
        IN_GP.with(|g| g.set(g.get() + 1));
        InGracePeriod(())
    }
}

impl Drop for InGracePeriod {
    fn drop(&mut self) {
        IN_GP.with(|g| g.set(g.get() - 1));
    }
}

/// Whether the calling thread is inside a grace period of a flavor, or a deferral or
/// barrier (holding their locks): a signal handler that interrupted one must not start
/// another.
pub(crate) fn in_grace_period() -> bool {
    IN_GP.with(std::cell::Cell::get) != 0
}

/// Panic if the calling thread is inside a read section: waiting there for a grace period
/// would wait for itself.
pub(crate) fn assert_outside(what: &str) {
    if nesting() != 0 {
        panic!("klp-sync: {what} called inside a read section: it would wait for itself");
    }
}
