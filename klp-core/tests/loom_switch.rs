//! loom models of the switch protocol (`--cfg klp_loom`, run by `.ci/run`): the transition
//! worker checking and switching a parked thread, against that thread unparking and
//! entering a patchable function, with the engine's own park word.
#![cfg(klp_loom)]

use klp_core::park::ParkWord;
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicI8, Ordering};

const UNPATCHED: i8 = 0;
const PATCHED: i8 = 1;
/// The implementation being replaced, and its replacement.
const OLD: u8 = 1;
const NEW: u8 = 2;

/// A thread as the engine sees it: park word, pending flag, state, activation stack.
struct Thread {
    park: ParkWord,
    pending: AtomicBool,
    state: AtomicI8,
    /// Implementations on the activation stack (0 = empty slot), owner-written.
    stack: UnsafeCell<[u8; 2]>,
}

impl Thread {
    fn new(first: u8) -> Arc<Self> {
        Arc::new(Thread {
            park: ParkWord::new(),
            pending: AtomicBool::new(true),
            state: AtomicI8::new(UNPATCHED),
            stack: UnsafeCell::new([first, 0]),
        })
    }

    /// The owner's switch at depth 0 (`klp_update_patch_state`).
    fn self_switch(&self) {
        if self.pending.swap(false, Ordering::AcqRel) {
            self.state.store(PATCHED, Ordering::Release);
        }
    }

    /// The owner enters the patched function: which implementation runs.
    fn enter(&self) -> u8 {
        // SAFETY: the owner writes its stack only while running.
        let depth0 = self.stack.with(|s| unsafe { (*s)[0] == 0 });
        if depth0 {
            self.self_switch();
        }
        let imp = if self.state.load(Ordering::Acquire) == PATCHED {
            NEW
        } else {
            OLD
        };
        // SAFETY: as above.
        self.stack.with_mut(|s| unsafe { (*s)[0] = imp });
        imp
    }

    /// The worker: claim, check that OLD is not on the stack, switch.
    fn worker_try_switch(&self) -> bool {
        if !self.park.claim() {
            return false;
        }
        // SAFETY: claimed: the owner is parked and cannot write until we release.
        let clean = self.stack.with(|s| unsafe { !(*s).contains(&OLD) });
        if clean && self.pending.swap(false, Ordering::AcqRel) {
            self.state.store(PATCHED, Ordering::Release);
        }
        self.park.release();
        clean
    }
}

#[test]
fn worker_switch_races_unpark_and_entry() {
    loom::model(|| {
        // Parked between calls (empty stack), pending a switch to PATCHED.
        let t = Thread::new(0);
        t.park.park();
        let t2 = Arc::clone(&t);
        let owner = loom::thread::spawn(move || {
            t2.park.unpark();
            t2.enter()
        });
        t.worker_try_switch();
        let imp = owner.join().unwrap();
        // Whoever switched it, the thread's call runs the new code and its state agrees.
        assert_eq!(imp, NEW);
        assert_eq!(t.state.load(Ordering::Acquire), PATCHED);
        assert!(!t.pending.load(Ordering::Acquire));
    });
}

#[test]
fn worker_never_switches_a_thread_inside_the_replaced_function() {
    loom::model(|| {
        // Parked *inside* OLD: the worker must leave it alone; the thread switches itself
        // when it has returned to depth 0.
        let t = Thread::new(OLD);
        t.park.park();
        let t2 = Arc::clone(&t);
        let owner = loom::thread::spawn(move || {
            t2.park.unpark();
            // Return from OLD: the stack empties, then the next call.
            // SAFETY: running owner.
            t2.stack.with_mut(|s| unsafe { (*s)[0] = 0 });
            t2.enter()
        });
        let switched_inside = {
            let claimed = t.park.claim();
            let mut bad = false;
            if claimed {
                // SAFETY: claimed.
                let inside = t.stack.with(|s| unsafe { (*s).contains(&OLD) });
                if !inside && t.pending.swap(false, Ordering::AcqRel) {
                    t.state.store(PATCHED, Ordering::Release);
                }
                bad = inside && t.state.load(Ordering::Acquire) == PATCHED;
                t.park.release();
            }
            bad
        };
        assert!(!switched_inside);
        assert_eq!(owner.join().unwrap(), NEW);
    });
}

#[test]
fn worker_and_owner_switch_once() {
    loom::model(|| {
        // The owner reaches a switch point while the worker tries to switch it.
        let t = Thread::new(0);
        t.park.park();
        let t2 = Arc::clone(&t);
        let owner = loom::thread::spawn(move || {
            t2.park.unpark();
            t2.self_switch();
            t2.park.park();
        });
        let w = t.worker_try_switch();
        owner.join().unwrap();
        let _ = w;
        assert_eq!(t.state.load(Ordering::Acquire), PATCHED);
        assert!(!t.pending.load(Ordering::Acquire));
    });
}

/// The claim of a *running* thread at depth 0 (`park::RunClaim`) against that thread
/// entering its outermost patchable function: the worker may switch it only while it is
/// outside, so the two choices made inside one outermost call (f, then the g it calls)
/// always agree.
#[test]
fn running_claim_never_switches_a_thread_inside() {
    use klp_core::park::{RunClaim, heavy_barrier};
    loom::model(|| {
        let run = Arc::new(RunClaim::new());
        let pending = Arc::new(AtomicBool::new(false));
        let state = Arc::new(AtomicI8::new(UNPATCHED));
        let (r2, p2, s2) = (Arc::clone(&run), Arc::clone(&pending), Arc::clone(&state));
        let thread = loom::thread::spawn(move || {
            r2.enter_outermost();
            if p2.swap(false, Ordering::AcqRel) {
                s2.store(PATCHED, Ordering::Release);
            }
            let f = s2.load(Ordering::Acquire); // the choice for f
            let g = s2.load(Ordering::Acquire); // the choice for the g that f calls
            r2.leave_outermost();
            (f, g)
        });
        // The transition starts, then the worker claims the running thread.
        pending.store(true, Ordering::SeqCst);
        run.claim();
        heavy_barrier();
        if run.outside() && pending.swap(false, Ordering::AcqRel) {
            state.store(PATCHED, Ordering::Release);
        }
        run.release();
        let (f, g) = thread.join().unwrap();
        assert_eq!(
            f, g,
            "the thread was switched between two calls of one outermost call"
        );
    });
}
