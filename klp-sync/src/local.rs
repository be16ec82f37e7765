//! The calling thread's slot in the process-wide registry.
//!
//! The fast path is one load of a constant-initialized thread-local pointer. The first read
//! section of a thread claims a slot (with every signal blocked, so a handler cannot run a
//! read section half-way through); a destructor gives it back at thread exit.

use crate::reader::{Registry, Slot};
use crate::sync::{Ordering, fence};
use std::cell::Cell;

/// The registry of every thread of the process that ever entered a read section.
pub(crate) static REGISTRY: Registry = Registry::new();

thread_local! {
    /// Fast-path pointer; no destructor, so access needs no state check.
    static SLOT: Cell<*const Slot> = const { Cell::new(std::ptr::null()) };
    /// Owns the slot; its destructor gives the slot back when the thread exits.
    static OWNER: SlotOwner = const { SlotOwner };
}

struct SlotOwner;

impl Drop for SlotOwner {
    fn drop(&mut self) {
        let _blocked = crate::os::SignalsBlocked::new();
        let p = SLOT.with(|s| s.replace(std::ptr::null()));
        // SAFETY: a non-null SLOT always points to a slot of the static registry.
        if let Some(slot) = unsafe { p.as_ref() } {
            REGISTRY.release(slot);
        }
    }
}

/// The calling thread's slot, claimed on first use.
#[inline(always)]
pub(crate) fn current() -> &'static Slot {
    let p = SLOT.with(Cell::get);
    // SAFETY: a non-null SLOT points into the never-freed static registry.
    match unsafe { p.as_ref() } {
        Some(slot) => slot,
        None => claim(),
    }
}

/// The calling thread's slot if it has one.
#[inline]
pub(crate) fn existing() -> Option<&'static Slot> {
    let p = SLOT.with(Cell::get);
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
    SLOT.with(|s| s.set(slot));
    // Register the destructor. After the thread's destructors have run (a destructor of
    // another thread-local entering a read section) this fails; the slot then stays
    // claimed forever: correct, one slot lost per such thread.
    let _ = OWNER.try_with(|_| ());
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

/// The calling thread's nesting depth in read sections (0 when it has no slot).
#[inline]
pub(crate) fn nesting() -> u32 {
    existing().map_or(0, Slot::nesting)
}

/// Panic if the calling thread is inside a read section: waiting there for a grace period
/// would wait for itself.
pub(crate) fn assert_outside(what: &str) {
    if nesting() != 0 {
        panic!("klp-sync: {what} called inside a read section: it would wait for itself");
    }
}
