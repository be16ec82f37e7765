//! The read-side word of every thread and the grace-period scan over them.
//!
//! Each thread owns one [`Slot`]. Its `word` holds, in the low 32 bits, how deeply the
//! thread is nested in read sections and, in the high 32 bits, a generation that grows by
//! one at every outermost entry. Only the owner writes the word; updaters read it.
//!
//! An updater that saw a slot at `(gen, nest > 0)` knows that slot's section has ended once
//! the word shows `nest == 0` or another generation. A generation that wraps all the way
//! round to the same value merely makes the updater wait longer; it never lets it stop
//! early, so wrap-around is a liveness question only.
//!
//! Slots are never freed: a thread that exits gives its slot back (`in_use = false`) and a
//! later thread takes it over, keeping the word (and so its generation) going.

use crate::os::{HeavyBarrier, light_barrier};
use crate::sync::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering, backoff};
use crossbeam_utils::CachePadded;

/// One generation step in [`Slot::word`].
const GEN_ONE: u64 = 1 << 32;
const NEST_MASK: u64 = GEN_ONE - 1;

/// Flag in [`Slot::flags`]: the thread registered with the rcu flavor.
pub(crate) const RCU_REGISTERED: u32 = 1;
/// Flag in [`Slot::flags`]: the thread is parked (rcu: offline, not watched).
pub(crate) const PARKED: u32 = 2;

/// The per-thread record that updaters scan.
pub(crate) struct Slot {
    /// Nesting depth (low half) and outermost-entry generation (high half).
    pub(crate) word: AtomicU64,
    /// `RCU_REGISTERED | PARKED`, written only by the owner.
    pub(crate) flags: AtomicU32,
    /// Whether a live thread owns this slot.
    pub(crate) in_use: AtomicBool,
    /// The next slot of the registry's list; fixed once the slot is published.
    next: AtomicPtr<CachePadded<Slot>>,
}

impl Slot {
    #[cfg(klp_loom)]
    fn new() -> Self {
        Slot {
            word: AtomicU64::new(0),
            flags: AtomicU32::new(0),
            in_use: AtomicBool::new(false),
            next: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// How deeply the owner is nested in read sections (meaningful on the owner's thread).
    #[inline]
    #[cfg_attr(klp_loom, allow(dead_code))]
    pub(crate) fn nesting(&self) -> u32 {
        (self.word.load(Ordering::Relaxed) & NEST_MASK) as u32
    }
}

/// The token of a `preempt` or `rcu` read section: the thread's slot, so the unlock needs
/// no thread-local lookup.
#[derive(Clone, Copy)]
#[cfg_attr(klp_loom, allow(dead_code))]
pub struct SlotToken(pub(crate) &'static Slot);

impl std::fmt::Debug for SlotToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlotToken")
    }
}

/// Enter a read section on `slot`, which must be the calling thread's own slot.
#[inline(always)]
pub(crate) fn enter(slot: &Slot) {
    // Relaxed: only this thread writes the word, so this load sees its own last store.
    let w = slot.word.load(Ordering::Relaxed);
    let step = if w & NEST_MASK == 0 { GEN_ONE | 1 } else { 1 };
    // The store, then the light barrier: either the updater's heavy barrier falls after
    // this store (and its scan sees us inside), or it falls before our data loads (and
    // they see everything the updater wrote before it). See `docs`, "read side".
    // Release (a plain `mov` on x86): an updater that sees the generation move learns
    // that our previous section ended only if this store carries that section's exit
    // with it; a later plain store does not continue the exit's release sequence.
    slot.word.store(w.wrapping_add(step), Ordering::Release);
    light_barrier();
}

/// Leave a read section entered with [`enter`] on the same slot.
#[inline(always)]
pub(crate) fn exit(slot: &Slot) {
    let w = slot.word.load(Ordering::Relaxed);
    debug_assert!(w & NEST_MASK != 0, "read_unlock without read_lock");
    // Release: every load of the section happens-before an updater's Acquire load that
    // sees this value, so what the updater frees afterwards is no longer being read.
    slot.word.store(w.wrapping_sub(1), Ordering::Release);
}

/// A push-only list of slots.
pub(crate) struct Registry {
    head: AtomicPtr<CachePadded<Slot>>,
}

/// How many slots one allocation brings (one 4 KiB page of 64-byte slots).
#[cfg(not(klp_loom))]
const CHUNK: usize = 4096 / std::mem::size_of::<CachePadded<Slot>>();

impl Registry {
    #[cfg(not(klp_loom))]
    pub(crate) const fn new() -> Self {
        Registry {
            head: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    #[cfg(klp_loom)]
    pub(crate) fn new() -> Self {
        Registry {
            head: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// Every slot ever published, in use or not.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Slot> {
        // Acquire pairs with the Release CAS in `publish`, so a slot's fields (and its
        // `next`) are initialized before we follow the pointer.
        let mut p = self.head.load(Ordering::Acquire);
        std::iter::from_fn(move || {
            // SAFETY: published slots are never freed while the registry lives (the
            // process-wide registry is static; a loom registry outlives its model).
            let slot = unsafe { p.as_ref() }?;
            p = slot.next.load(Ordering::Acquire);
            Some(&**slot)
        })
    }

    /// Claim a free slot for the calling thread, allocating one if all are taken.
    pub(crate) fn claim(&self) -> &Slot {
        for slot in self.iter() {
            // SeqCst: the claim is a store that the updater's scan must either see or be
            // ordered after (it is followed by the reader's own barrier anyway).
            if !slot.in_use.load(Ordering::Relaxed)
                && slot
                    .in_use
                    .compare_exchange(false, true, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
            {
                return slot;
            }
        }
        self.grow()
    }

    #[cfg(not(klp_loom))]
    fn grow(&self) -> &Slot {
        let bytes = CHUNK * std::mem::size_of::<CachePadded<Slot>>();
        let first = crate::os::alloc_zeroed_forever(bytes).cast::<CachePadded<Slot>>();
        // SAFETY: the mapping is page aligned (so aligned for CachePadded), zero filled,
        // and all-zero bytes are a valid Slot (atomics at 0/false, null next). It is never
        // unmapped, so the references live as long as the registry.
        let slots: &[CachePadded<Slot>] = unsafe { std::slice::from_raw_parts(first, CHUNK) };
        slots[0].in_use.store(true, Ordering::Relaxed);
        for pair in slots.windows(2) {
            pair[0]
                .next
                .store(std::ptr::from_ref(&pair[1]).cast_mut(), Ordering::Relaxed);
        }
        self.publish(first, &slots[CHUNK - 1]);
        &slots[0]
    }

    #[cfg(klp_loom)]
    fn grow(&self) -> &Slot {
        let slot: &CachePadded<Slot> = Box::leak(Box::new(CachePadded::new(Slot::new())));
        slot.in_use.store(true, Ordering::Relaxed);
        let p = std::ptr::from_ref(slot).cast_mut();
        self.publish(p, slot);
        slot
    }

    /// Link the chain `first ..= last` in front of the list.
    fn publish(&self, first: *mut CachePadded<Slot>, last: &CachePadded<Slot>) {
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            last.next.store(head, Ordering::Relaxed);
            // Release publishes the chain's fields; SeqCst also orders it with the scans.
            match self
                .head
                .compare_exchange_weak(head, first, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }

    /// Give `slot` back; the caller must own it and be outside every read section.
    pub(crate) fn release(&self, slot: &Slot) {
        debug_assert_eq!(slot.word.load(Ordering::Relaxed) & NEST_MASK, 0);
        slot.flags.store(0, Ordering::Release);
        slot.in_use.store(false, Ordering::Release);
    }

    /// `fork` child: give back every slot but `keep` (the calling thread's), as their
    /// threads exited, ending whatever read sections they were in.
    #[cfg(not(klp_loom))]
    pub(crate) fn fork_release_others(&self, keep: Option<&Slot>) {
        for slot in self.iter() {
            if keep.is_some_and(|k| std::ptr::eq(k, slot)) || !slot.in_use.load(Ordering::Relaxed) {
                continue;
            }
            // Keep the generation (an updater compares it), drop the depth.
            let w = slot.word.load(Ordering::Relaxed);
            slot.word.store(w & !NEST_MASK, Ordering::Release);
            self.release(slot);
        }
    }

    /// One grace period over the slots that `watched` selects: returns once every read
    /// section of those slots that had begun before the call has ended.
    pub(crate) fn grace_period(
        &self,
        barrier: &impl HeavyBarrier,
        watched: impl Fn(&Slot) -> bool,
        spin_only: bool,
    ) {
        // The heavy barrier orders the caller's earlier stores (the unpublished pointer)
        // against every reader's entry store: see `enter`.
        barrier.heavy_barrier();
        let mut waiting: Vec<(&Slot, u64)> = Vec::new();
        for slot in self.iter() {
            if !slot.in_use.load(Ordering::Acquire) || !watched(slot) {
                continue;
            }
            let w = slot.word.load(Ordering::Acquire);
            if w & NEST_MASK != 0 {
                waiting.push((slot, w));
            }
        }
        for (slot, seen) in waiting {
            let mut round = 0u32;
            loop {
                // Acquire pairs with the Release in `exit`.
                let w = slot.word.load(Ordering::Acquire);
                if w & NEST_MASK == 0 || (w ^ seen) & !NEST_MASK != 0 {
                    break;
                }
                if spin_only {
                    crate::sync::spin_hint();
                } else {
                    backoff(round);
                }
                round = round.saturating_add(1);
            }
        }
    }
}

/// Whether an rcu grace period must wait for `slot`: registered and not parked.
#[inline]
pub(crate) fn rcu_watched(slot: &Slot) -> bool {
    slot.flags.load(Ordering::Acquire) & (RCU_REGISTERED | PARKED) == RCU_REGISTERED
}
