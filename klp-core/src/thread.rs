//! The per-thread state of the consistency model, as one type with one state machine.
//!
//! Everything the engine knows about a thread's progress through patchable functions
//! lives in [`ThreadState`]: which patchable functions it is inside (its **activation
//! stack**, the kernel's reliable stack trace), whether it is blocked (**parked**), and
//! whether the transition worker is looking at it (**claimed**). Nothing else writes
//! these fields, and every write is one of the transitions below.
//!
//! # The words
//!
//! ```text
//!   word  = depth << 3 | PARKB << 2 | IRQ << 1 | BUSY     owner-written
//!   park  = RUNNING | PARKED | CLAIMED         owner: RUNNING <-> PARKED; worker: PARKED <-> CLAIMED
//!   park_depth                                 owner-only: unmatched park() calls
//!   claims                                     workers: how many hold a "running" claim
//!   entries[0 .. depth]                        owner-written: site, implementation, frame, irq
//! ```
//!
//! * `depth` counts **reserved** activations: an entry is reserved (the depth raised)
//!   *before* its implementation is chosen, and published (written) after. `BUSY` is set
//!   from the reservation to the publication, and during every other multi-step change
//!   the owner makes (a switch, dropping entries, a return through the slow path).
//! * `IRQ`: an entry on the stack was entered by a signal handler on a parked thread,
//!   which took the thread out of PARKED for the handler's duration; returns take the
//!   slow path until it is popped and the thread parked again.
//! * `PARKB`: set whenever `park` is not RUNNING (set before the owner parks, cleared
//!   after it unparks), so that the common entry and return read one word. Between the
//!   two stores of `park()` and `unpark()` it is set with `park` RUNNING: a handler
//!   landing there takes the slow path, keeps the bit and does not switch.
//!
//! # Who moves what
//!
//! | transition | by | when |
//! |---|---|---|
//! | reserve, publish, pop (`word`, `entries`) | the owner | entering and returning from patchable functions |
//! | RUNNING → PARKED → RUNNING | the owner | `park()` / `unpark()` around blocking calls, and a handler's `irq` enter/exit on a parked thread |
//! | PARKED → CLAIMED → PARKED | a worker | checking (and switching) a parked thread |
//! | `claims` +1 / −1 | a worker | switching a running thread at depth 0 |
//! | the thread's patch state | the owner at a switch point; a worker holding a claim | never while `BUSY` or with a forbidden function live |
//!
//! A **signal handler** is the owner too: it runs on the thread, between any two of the
//! owner's instructions, and finishes before the interrupted code goes on. It never
//! breaks the invariants because every operation either is a single store, or marks
//! itself `BUSY` first, and a handler
//!
//! * leaves every word exactly as it found it (its entries above the interrupted depth
//!   are popped, `BUSY` and `IRQ` restored, the park word restored);
//! * when it finds `BUSY`, does not drop, check or switch anything: the interrupted code
//!   is between two steps and the top entry may be unwritten. It only reserves entries
//!   above, and runs with the thread's current state: the kernel's rule that an
//!   interrupt runs with the task's state and never switches it.
//!
//! # Invariants
//!
//! 1. A thread's patch state changes only when the thread is at a switch point of its own
//!    (depth 0 and not `BUSY`, or an explicit switch point whose stack check passes), or
//!    while a worker holds it claimed: parked (`CLAIMED`, its stack checked), or running
//!    at depth 0 (`claims` raised, `word == 0` seen after the heavy barrier).
//! 2. While `CLAIMED`, the owner writes neither `word` nor `entries` (its unpark and a
//!    handler's irq enter wait for the claim to end), so the checker reads a stable stack.
//! 3. An entry is chosen after it is reserved: a switch that happens before its
//!    reservation is seen by its choice; one after it is excluded (`word != 0` for a
//!    running claim, `BUSY` or a live entry for a stack check).
//! 4. While `claims > 0`, no reservation from depth 0 proceeds to its choice: the store
//!    of the reservation and the load of `claims` are ordered by the light barrier against
//!    the worker's heavy barrier, so either the worker sees `word != 0` or the thread
//!    sees the claim and waits until it ends.
//! 5. Entries are dropped only by the owner, never while `BUSY` was set by code it
//!    interrupted, and only when provably left ([`Hooks::left`]).
//!
//! `tests/loom_thread.rs` checks these with loom: a worker checking and switching the
//! thread, against the thread entering, returning, parking and reaching switch points,
//! with a "handler" run inline at every step ([`Hooks::point`]).

use crate::sync::{
    AtomicU32, AtomicU64, AtomicUsize, Ordering, light_barrier, signal_fence, spin_wait,
};

/// Entries an activation stack records; deeper nesting makes the stack "unreliable"
/// until it unwinds back below this depth (such a thread switches only at depth 0).
#[cfg(not(klp_loom))]
pub const STACK_DEPTH: usize = 64;
/// A small stack for the loom models.
#[cfg(klp_loom)]
pub const STACK_DEPTH: usize = 4;

const BUSY: u32 = 1;
const IRQ: u32 = 2;
const PARKB: u32 = 4;
const SHIFT: u32 = 3;

const RUNNING: u32 = 0;
const PARKED: u32 = 1;
const CLAIMED: u32 = 2;

/// `Entry::irq` of an entry that took a parked thread out of PARKED.
const IRQ_SAVED: u64 = 1 << 63;

#[inline(always)]
fn depth_of(w: u32) -> usize {
    (w >> SHIFT) as usize
}

/// The `IRQ` bit an irq entry found below it.
#[inline(always)]
fn saved_irq_bit(saved: u64) -> u32 {
    ((saved & 1) as u32) << 1
}

/// What the prologue of a slow path found.
struct Begin {
    /// The word after unparking, before `BUSY` was set.
    word: u32,
    /// The thread was parked: what [`ThreadState::irq_exit`] restores.
    saved: u64,
}

/// The depth of a word without flags; any flag makes the result larger than every depth
/// (the flags rotate into the top bits), so that one comparison tests both.
#[inline(always)]
fn plain_depth(w: u32) -> usize {
    w.rotate_right(SHIFT) as usize
}

#[inline(always)]
fn word_of(depth: usize, flags: u32) -> u32 {
    ((depth as u32) << SHIFT) | flags
}

/// A step of the state machine, where a signal handler may land (for the loom model).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// After an entry's reservation.
    Reserved,
    /// After the reservation's claim check (before the choice).
    Checked,
    /// After the choice, before the entry is published.
    Chosen,
    /// After dropping entries or unparking, before reserving.
    Prepared,
    /// In a return, after the pop and before the final store.
    Popped,
    /// In `park`, after the counter and `PARKB`, before the park word.
    Parking,
    /// In `park`, after the park word.
    Parked,
    /// In `unpark`, before the park word.
    Unparking,
    /// In `unpark`, after the park word, before `PARKB` is cleared.
    Unparked,
    /// In a switch point, after marking busy.
    SwitchPoint,
}

/// What the owner's operations ask of their caller.
pub trait Hooks {
    /// A step where a signal handler may land. Production code does nothing; the loom
    /// model runs a nested operation here.
    #[inline(always)]
    fn point(&self, at: Point) {
        let _ = at;
    }

    /// Whether an activation whose wrapper frame is `entry_frame` was provably left by a
    /// thread now running at `frame` (longjmp, an exception, cancellation). Production
    /// code: the entry lies in the memory the running call occupies (which no live frame
    /// of any stack can share), never merely "below" on some stack.
    fn left(&self, entry_frame: usize, frame: usize) -> bool;
}

/// A live activation, as a stack check sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Activation {
    /// The site (an opaque address for this module).
    pub site: usize,
    /// The implementation it runs.
    pub imp: usize,
    /// The wrapper's frame.
    pub frame: usize,
}

/// One reserved activation.
#[derive(Debug)]
struct Entry {
    /// The site; 0 for a tombstone (returned, not yet popped: see `leave`).
    site: AtomicUsize,
    imp: AtomicUsize,
    /// The wrapper's frame; 0 for a tombstone.
    frame: AtomicUsize,
    /// `IRQ_SAVED | saved park_depth << 1 | saved IRQ bit`, or 0. Always 0 at and above
    /// the depth (popping clears it), so that the common entry need not write it.
    irq: AtomicU64,
}

impl Entry {
    fn new() -> Self {
        Entry {
            site: AtomicUsize::new(0),
            imp: AtomicUsize::new(0),
            frame: AtomicUsize::new(0),
            irq: AtomicU64::new(0),
        }
    }
}

/// An entry reserved by [`ThreadState::try_enter_fast`] or [`ThreadState::enter_slow`],
/// to be published by [`ThreadState::publish`]. Two words (passed in registers).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Reserved {
    /// The depth below the entry, and the flags kept at publication (`BUSY` of
    /// interrupted code, `IRQ`), as in the thread's word.
    word: u32,
    irq: u64,
}

impl Reserved {
    /// The depth below the entry (0: the outermost call).
    #[inline(always)]
    pub fn depth(&self) -> usize {
        depth_of(self.word)
    }

    /// Flags kept at publication.
    #[inline(always)]
    fn keep(&self) -> u32 {
        self.word & (BUSY | IRQ | PARKB)
    }

    /// Whether the thread is at a switch point: the outermost call, not interrupting the
    /// thread's own bookkeeping. Its choice comes after any switch made now.
    #[inline(always)]
    pub fn may_switch(&self) -> bool {
        self.word & !IRQ == 0
    }
}

/// The per-thread state (see the module documentation).
#[derive(Debug)]
pub struct ThreadState {
    word: AtomicU32,
    park: AtomicU32,
    park_depth: AtomicU32,
    claims: AtomicU32,
    entries: [Entry; STACK_DEPTH],
}

impl Default for ThreadState {
    fn default() -> Self {
        Self::new()
    }
}

impl ThreadState {
    /// A running thread outside every patchable function.
    pub fn new() -> Self {
        ThreadState {
            word: AtomicU32::new(0),
            park: AtomicU32::new(RUNNING),
            park_depth: AtomicU32::new(0),
            claims: AtomicU32::new(0),
            entries: std::array::from_fn(|_| Entry::new()),
        }
    }

    /// Reset for a new owner (a task record reused by another thread). No other thread
    /// may be looking at it.
    pub fn reset(&self) {
        for e in &self.entries {
            e.irq.store(0, Ordering::Relaxed);
        }
        self.word.store(0, Ordering::Relaxed);
        self.park.store(RUNNING, Ordering::Relaxed);
        self.park_depth.store(0, Ordering::Relaxed);
        self.claims.store(0, Ordering::Relaxed);
    }

    // ----- owner: entering ------------------------------------------------------------

    /// The common entry, inline: running, not interrupting bookkeeping, no `IRQ` entry,
    /// recorded, and nothing that looks left on the stack. Reserves the entry and, at
    /// depth 0, makes the claim check; `None` (nothing done) sends the caller to
    /// [`ThreadState::enter_slow`]. `Some((r, wait))`: `wait` when a worker's claim is up
    /// (call [`ThreadState::wait_unclaimed`] before choosing).
    #[inline(always)]
    pub fn try_enter_fast<H: Hooks>(&self, frame: usize, hooks: &H) -> Option<(Reserved, bool)> {
        // No flag, and room for one more entry.
        let d = plain_depth(self.word.load(Ordering::Relaxed));
        if d >= STACK_DEPTH || (d > 0 && self.entries[d - 1].frame.load(Ordering::Relaxed) <= frame)
        {
            return None;
        }
        self.word.store(word_of(d + 1, BUSY), Ordering::Relaxed);
        hooks.point(Point::Reserved);
        let mut wait = false;
        if d == 0 {
            // Invariant 4: the reservation store, then the claim load.
            light_barrier();
            wait = self.claims.load(Ordering::Acquire) != 0;
        }
        Some((
            Reserved {
                word: word_of(d, 0),
                irq: 0,
            },
            wait,
        ))
    }

    /// Wait until no worker holds a running claim (after a reservation).
    #[cold]
    #[inline(never)]
    pub fn wait_unclaimed(&self) {
        let mut spins = 0u32;
        // Acquire pairs with the worker's Release: its switch is visible after.
        while self.claims.load(Ordering::Acquire) != 0 {
            spins = spins.saturating_add(1);
            spin_wait(spins);
        }
    }

    /// Every other entry: a handler on a parked thread (taken out of PARKED until its
    /// call returns), entries left behind (dropped when provably left), a stack deeper
    /// than recorded, or interrupted bookkeeping (nothing dropped, no switch). Reserves
    /// the entry and waits out any claim.
    pub fn enter_slow<H: Hooks>(&self, frame: usize, hooks: &H) -> Reserved {
        let b = self.begin();
        let below = b.word & (BUSY | PARKB);
        let mut irq_bit = b.word & IRQ;
        let mut d = depth_of(b.word);
        if below == 0 {
            (d, irq_bit) = self.drop_left(d, irq_bit, frame, hooks);
        }
        if b.saved != 0 {
            // This entry carries the thread's parked state until it returns.
            irq_bit = IRQ;
        }
        hooks.point(Point::Prepared);
        self.word
            .store(word_of(d + 1, BUSY | below | irq_bit), Ordering::Relaxed);
        hooks.point(Point::Reserved);
        light_barrier();
        self.wait_unclaimed();
        hooks.point(Point::Checked);
        Reserved {
            word: word_of(d, below | irq_bit),
            irq: b.saved,
        }
    }

    /// The prologue of the owner's slow paths: running (out of PARKED, after a checker
    /// that holds the thread lets go: invariant 2), then `BUSY`, so that a handler from
    /// here on leaves our steps alone.
    fn begin(&self) -> Begin {
        let saved = if self.park.load(Ordering::Relaxed) != RUNNING {
            self.irq_enter(self.word.load(Ordering::Relaxed) & IRQ)
        } else {
            0
        };
        let word = self.word.load(Ordering::Relaxed);
        self.word.store(word | BUSY, Ordering::Relaxed);
        signal_fence();
        Begin { word, saved }
    }

    /// [`ThreadState::publish`] for a reservation of [`ThreadState::try_enter_fast`] (no
    /// flag to keep, no irq state, recorded depth): four stores.
    #[inline(always)]
    pub fn publish_fast<H: Hooks>(
        &self,
        r: Reserved,
        site: usize,
        imp: usize,
        frame: usize,
        hooks: &H,
    ) {
        debug_assert!(r.keep() == 0 && r.irq == 0 && r.depth() < STACK_DEPTH);
        hooks.point(Point::Chosen);
        let d = r.depth();
        if let Some(e) = self.entries.get(d) {
            e.site.store(site, Ordering::Relaxed);
            e.imp.store(imp, Ordering::Relaxed);
            e.frame.store(frame, Ordering::Relaxed);
        }
        signal_fence();
        self.word.store(word_of(d + 1, 0), Ordering::Relaxed);
    }

    /// Publish the reserved entry: the call runs `imp` of `site`, in the wrapper whose
    /// frame is `frame`.
    #[inline(always)]
    pub fn publish<H: Hooks>(&self, r: Reserved, site: usize, imp: usize, frame: usize, hooks: &H) {
        hooks.point(Point::Chosen);
        let d = r.depth();
        if d < STACK_DEPTH {
            let e = &self.entries[d];
            e.site.store(site, Ordering::Relaxed);
            e.imp.store(imp, Ordering::Relaxed);
            e.frame.store(frame, Ordering::Relaxed);
            if r.irq != 0 {
                e.irq.store(r.irq, Ordering::Relaxed);
            }
        }
        // The entry, then the word that says it is written.
        signal_fence();
        self.word.store(word_of(d + 1, r.keep()), Ordering::Relaxed);
    }

    /// A handler's call on a parked thread: out of PARKED for its duration (waiting for a
    /// checker that holds the thread), with a fresh park count. Returns what the entry
    /// records for [`ThreadState::irq_exit`].
    fn irq_enter(&self, irq_bit: u32) -> u64 {
        let saved = IRQ_SAVED
            | (u64::from(self.park_depth.load(Ordering::Relaxed)) << 1)
            | u64::from(irq_bit >> 1);
        self.park_depth.store(0, Ordering::Relaxed);
        self.unpark_word();
        self.set_parkb(false);
        saved
    }

    /// `PARKB` on or off (the owner; see the module documentation for its order with the
    /// park word).
    #[inline]
    fn set_parkb(&self, on: bool) {
        let w = self.word.load(Ordering::Relaxed);
        self.word
            .store(if on { w | PARKB } else { w & !PARKB }, Ordering::Relaxed);
    }

    /// Undo [`ThreadState::irq_enter`] once its entry is off the stack (the word already
    /// stored): parked again, as found. Returns the `IRQ` bit to keep.
    fn irq_exit(&self, saved: u64) {
        self.park_depth
            .store(((saved & !IRQ_SAVED) >> 1) as u32, Ordering::Relaxed);
        self.set_parkb(true);
        // Release: the stack as it now is goes to a checker with the park.
        self.park.store(PARKED, Ordering::Release);
    }

    // ----- owner: returning -----------------------------------------------------------

    /// The common return, inline: its own entry on top, recorded, no flag. Pops it;
    /// returns the depth left, or `None` (nothing done) for [`ThreadState::leave_slow`].
    #[inline(always)]
    pub fn try_leave_fast(&self, frame: usize) -> Option<usize> {
        // No flag, 1 ..= STACK_DEPTH entries, ours on top. An entry below that was left
        // behind (a longjmp out of it) stays until the next entry or slow return drops
        // it: meanwhile the thread only looks busier than it is.
        let d = plain_depth(self.word.load(Ordering::Relaxed));
        if d.wrapping_sub(1) >= STACK_DEPTH
            || self.entries[d - 1].frame.load(Ordering::Relaxed) != frame
        {
            return None;
        }
        // Release: a worker that sees depth 0 (Acquire) after its barrier sees the
        // thread's earlier writes.
        self.word.store(word_of(d - 1, 0), Ordering::Release);
        Some(d - 1)
    }

    /// Every other return. Pops the caller's entry (or, when it is not on top, marks it
    /// returned: calls of another stack are live above it, coroutines), then tombstones
    /// and, unless interrupting bookkeeping, entries provably left. Returns the depth
    /// left and whether the thread is at a switch point.
    pub fn leave_slow<H: Hooks>(&self, frame: usize, hooks: &H) -> (usize, bool) {
        let b = self.begin();
        let below = b.word & (BUSY | PARKB);
        let mut irq_bit = b.word & IRQ;
        let mut d = depth_of(b.word);
        let mut own = 0u64;
        if d > STACK_DEPTH {
            // The top is not recorded, and it is ours.
            d -= 1;
        } else if d > 0 && self.live_frame(d - 1) == Some(frame) {
            own = self.entries[d - 1].irq.swap(0, Ordering::Relaxed);
            if own != 0 {
                irq_bit = saved_irq_bit(own);
            }
            d -= 1;
        } else if let Some(i) = (0..d).rev().find(|&i| self.live_frame(i) == Some(frame)) {
            let e = &self.entries[i];
            e.site.store(0, Ordering::Relaxed);
            e.frame.store(0, Ordering::Relaxed);
        }
        hooks.point(Point::Popped);
        (d, irq_bit) = self.pop_dead(d, irq_bit, below == 0, frame, hooks);
        // The stack first, then the park word that hands it to a checker.
        self.word
            .store(word_of(d, below | irq_bit), Ordering::Release);
        if own != 0 {
            self.irq_exit(own);
        } else if b.saved != 0 {
            self.irq_exit(b.saved);
        }
        (
            d,
            d == 0 && below == 0 && self.park.load(Ordering::Relaxed) == RUNNING,
        )
    }

    /// The frame of entry `i` unless it is a tombstone.
    #[inline]
    fn live_frame(&self, i: usize) -> Option<usize> {
        let e = &self.entries[i];
        (e.site.load(Ordering::Relaxed) != 0).then(|| e.frame.load(Ordering::Relaxed))
    }

    /// Drop tombstones and provably left entries from the top of a stack of depth `d`
    /// (the owner, `BUSY` set by itself). Returns the new depth and `IRQ` bit.
    fn drop_left<H: Hooks>(&self, d: usize, irq_bit: u32, frame: usize, hooks: &H) -> (usize, u32) {
        self.pop_dead(d, irq_bit, true, frame, hooks)
    }

    /// Pop tombstones and, when `left` is allowed, provably left entries. An entry popped
    /// so that had taken the thread out of PARKED (a handler on a parked thread, left by
    /// a longjmp, or returned on another stack) gives its `IRQ` bit back but does not
    /// park the thread again: it runs, wherever the jump took it.
    fn pop_dead<H: Hooks>(
        &self,
        mut d: usize,
        mut irq_bit: u32,
        left: bool,
        frame: usize,
        hooks: &H,
    ) -> (usize, u32) {
        while d > 0 && d <= STACK_DEPTH {
            let e = &self.entries[d - 1];
            let tomb = e.site.load(Ordering::Relaxed) == 0;
            if !(tomb || (left && hooks.left(e.frame.load(Ordering::Relaxed), frame))) {
                break;
            }
            let irq = e.irq.swap(0, Ordering::Relaxed);
            if irq != 0 {
                irq_bit = saved_irq_bit(irq);
            }
            d -= 1;
        }
        (d, irq_bit)
    }

    // ----- owner: switch points and parking ---------------------------------------------

    /// An explicit switch point (`klp_update_patch_state`, and the switch points of the
    /// C exports): drops entries provably left below `frame`, then runs `f` with the
    /// thread marked busy and running (taken out of PARKED meanwhile, if it was), so that
    /// `f` may check the thread's own stack ([`ThreadState::own_stack`]) and switch it.
    /// Does nothing and returns `None` when interrupting the thread's own bookkeeping.
    pub fn switch_point<H: Hooks, R>(
        &self,
        frame: usize,
        hooks: &H,
        f: impl FnOnce(&Self) -> R,
    ) -> Option<R> {
        let b = self.begin();
        hooks.point(Point::SwitchPoint);
        let r = if b.word & BUSY != 0 {
            None
        } else {
            let (d, irq_bit) = self.drop_left(depth_of(b.word), b.word & IRQ, frame, hooks);
            let keep = irq_bit | (b.word & PARKB);
            self.word.store(word_of(d, BUSY | keep), Ordering::Relaxed);
            let r = f(self);
            self.word.store(word_of(d, keep), Ordering::Release);
            Some(r)
        };
        if r.is_none() {
            // Interrupting bookkeeping: the word is as found (with its BUSY).
            self.word.store(b.word, Ordering::Relaxed);
        }
        if b.saved != 0 {
            self.irq_exit(b.saved);
        }
        r
    }

    /// The calling thread's own stack, for a check by the owner inside
    /// [`ThreadState::switch_point`]: `visit` sees every live entry; returns `false` when
    /// the stack is not fully recorded.
    pub fn own_stack(&self, mut visit: impl FnMut(Activation)) -> bool {
        let d = depth_of(self.word.load(Ordering::Relaxed));
        if d > STACK_DEPTH {
            return false;
        }
        self.visit(d, &mut visit);
        true
    }

    fn visit(&self, d: usize, visit: &mut impl FnMut(Activation)) {
        for e in &self.entries[..d] {
            let site = e.site.load(Ordering::Relaxed);
            if site != 0 {
                visit(Activation {
                    site,
                    imp: e.imp.load(Ordering::Relaxed),
                    frame: e.frame.load(Ordering::Relaxed),
                });
            }
        }
    }

    /// The thread is about to block: a worker may check and switch it until
    /// [`ThreadState::unpark`]. Calls nest (a library that parks around its own blocking
    /// call inside a parked region): only the outermost parks. Returns whether this call
    /// parked the thread.
    pub fn park<H: Hooks>(&self, hooks: &H) -> bool {
        let pd = self.park_depth.load(Ordering::Relaxed);
        self.park_depth.store(pd + 1, Ordering::Relaxed);
        if pd > 0 || self.park.load(Ordering::Relaxed) != RUNNING {
            return false;
        }
        self.set_parkb(true);
        hooks.point(Point::Parking);
        // Release: the stack as it is goes to a checker's Acquire claim.
        self.park.store(PARKED, Ordering::Release);
        hooks.point(Point::Parked);
        true
    }

    /// The thread runs again after [`ThreadState::park`] (waiting for a checker that
    /// holds it). Returns whether this call unparked it; an unmatched call does nothing.
    pub fn unpark<H: Hooks>(&self, hooks: &H) -> bool {
        let pd = self.park_depth.load(Ordering::Relaxed);
        if pd == 0 {
            return false;
        }
        self.park_depth.store(pd - 1, Ordering::Relaxed);
        if pd > 1 {
            return false;
        }
        hooks.point(Point::Unparking);
        self.unpark_word();
        hooks.point(Point::Unparked);
        self.set_parkb(false);
        true
    }

    fn unpark_word(&self) {
        let mut spins = 0u32;
        loop {
            // Acquire: a checker's switch is visible once we run again.
            match self.park.compare_exchange_weak(
                PARKED,
                RUNNING,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) | Err(RUNNING) => return,
                Err(_) => {
                    spins = spins.saturating_add(1);
                    spin_wait(spins);
                }
            }
        }
    }

    /// The owner's view of the `PARKB` invariant: parked (or held) implies `PARKB`. For
    /// models and tests; always true between the owner's steps.
    pub fn parkb_holds(&self) -> bool {
        self.park.load(Ordering::Relaxed) == RUNNING
            || self.word.load(Ordering::Relaxed) & PARKB != 0
    }

    /// Whether the thread is parked (or held by a checker).
    #[inline]
    pub fn is_parked(&self) -> bool {
        self.park.load(Ordering::Relaxed) != RUNNING
    }

    /// The number of activations (the owner's view; for others, a snapshot).
    #[inline]
    pub fn depth(&self) -> usize {
        depth_of(self.word.load(Ordering::Relaxed))
    }

    // ----- workers ----------------------------------------------------------------------

    /// Hold a parked thread so that its stack can be checked; `None` if it is running (or
    /// held by another checker).
    pub fn claim(&self) -> Option<Claimed<'_>> {
        // Acquire: the owner's stack writes before its park are visible. `then`, not
        // `then_some`: a `Claimed` made for a failed claim would "release" it when dropped.
        self.park
            .compare_exchange(PARKED, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            .then(|| Claimed { thread: self })
    }

    /// Announce a running claim (follow with one heavy barrier for all claims, then
    /// [`ThreadState::outside`], then [`ThreadState::run_release`]).
    pub fn run_claim(&self) {
        self.claims.fetch_add(1, Ordering::SeqCst);
    }

    /// After the heavy barrier: whether the thread is outside every patchable function
    /// and its bookkeeping (it may be switched until [`ThreadState::run_release`]).
    pub fn outside(&self) -> bool {
        self.word.load(Ordering::Acquire) == 0
    }

    /// End a running claim; what the worker wrote before is visible to the thread's next
    /// entry.
    pub fn run_release(&self) {
        self.claims.fetch_sub(1, Ordering::Release);
    }
}

/// The worker's half of the running claim: one heavy barrier for every thread it
/// announced a claim on ([`ThreadState::run_claim`]), before it looks at any of them
/// ([`ThreadState::outside`]).
pub fn run_barrier() {
    crate::sync::heavy_barrier();
}

/// A parked thread held by a checker; its stack is stable until this is dropped.
#[derive(Debug)]
pub struct Claimed<'a> {
    thread: &'a ThreadState,
}

impl Claimed<'_> {
    /// Visit every live entry; `false` (nothing visited) when the stack is not fully
    /// recorded or the thread parked in the middle of its bookkeeping (a handler parked
    /// it): such a stack cannot be checked.
    pub fn stack(&self, mut visit: impl FnMut(Activation)) -> bool {
        let w = self.thread.word.load(Ordering::Relaxed);
        let d = depth_of(w);
        if w & BUSY != 0 || d > STACK_DEPTH {
            return false;
        }
        self.thread.visit(d, &mut visit);
        true
    }
}

impl Drop for Claimed<'_> {
    fn drop(&mut self) {
        // Release: our reads (and the switch we made) happen before the owner's unpark.
        self.thread.park.store(PARKED, Ordering::Release);
    }
}

/// [`Hooks`] for production: no interruption points, frames compared by `left`.
#[derive(Clone, Copy)]
pub struct Frames<L: Fn(usize, usize) -> bool>(pub L);

impl<L: Fn(usize, usize) -> bool> Hooks for Frames<L> {
    #[inline(always)]
    fn left(&self, entry_frame: usize, frame: usize) -> bool {
        (self.0)(entry_frame, frame)
    }
}
