//! loom models of the per-thread state machine (`klp_core::thread`), run by `.ci/run`
//! with `--cfg klp_loom`: a transition worker checks and switches a thread (parked:
//! claimed and stack-checked; running: claimed at depth 0 after the barrier) while the
//! thread enters, returns, parks, unparks and reaches switch points, and a "signal
//! handler" lands at every step of those operations ([`Hooks::point`]), running a
//! patchable call of its own.
//!
//! The property: every outermost call (the thread's, and the handler's) makes all its
//! choices (the outer function and the inner one it calls) with one patch state — a
//! thread never runs a mix of old and new functions — and the thread's words are back at
//! rest afterwards.
//!
//! The sites' resolved target (`klp_core::site`) is modelled too: a call runs the
//! resolved target when there is one, the transition withdraws it before it flags the
//! thread, and the worker settles it to the new function once the thread has switched
//! (the transition is complete). A call that loaded the old target before the withdrawal
//! must never be followed, in the same outermost call, by a choice of the new one.
#![cfg(klp_loom)]

use klp_core::thread::{Activation, Hooks, Point, ThreadState, run_barrier};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicI8, AtomicU32, AtomicUsize, Ordering};
use std::cell::Cell;

const UNPATCHED: i8 = 0;
const PATCHED: i8 = 1;
/// Sites and implementations (opaque numbers for the state machine).
const OUTER: usize = 10;
const INNER: usize = 20;
const OLD: usize = 1;
const NEW: usize = 2;

/// One thread, as the engine sees it, and what its calls chose.
struct Model {
    thread: ThreadState,
    pending: AtomicBool,
    state: AtomicI8,
    /// Set when a call saw two states: the property fails.
    mixed: AtomicBool,
    /// Switches made (by the thread or the worker).
    switched: AtomicU32,
    /// The site's resolved target: what every thread runs while no transition is in
    /// progress, 0 while withdrawn.
    resolved: AtomicUsize,
}

impl Model {
    fn new(pending: bool) -> Arc<Self> {
        Arc::new(Model {
            thread: ThreadState::new(),
            pending: AtomicBool::new(pending),
            state: AtomicI8::new(UNPATCHED),
            mixed: AtomicBool::new(false),
            switched: AtomicU32::new(0),
            resolved: AtomicUsize::new(if pending { 0 } else { OLD }),
        })
    }

    fn imp(state: i8) -> usize {
        if state == PATCHED { NEW } else { OLD }
    }

    /// `klp_update_patch_state` at depth 0.
    fn self_switch(&self) {
        if self.pending.swap(false, Ordering::AcqRel) {
            self.state.store(PATCHED, Ordering::Release);
            self.switched.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A worker's switch of a thread it holds claimed.
    fn worker_switch(&self) {
        if self.pending.swap(false, Ordering::AcqRel) {
            self.switched.fetch_add(1, Ordering::Relaxed);
        }
        self.state.store(PATCHED, Ordering::Release);
    }

    /// Enter `site` at `frame`: the call path of `klp_core::call`.
    fn enter(&self, site: usize, frame: usize, hooks: &impl Hooks) -> usize {
        // As in `klp_core::call`: the fast reservation publishes with `publish_fast`.
        let (r, fast) = match self.thread.try_enter_fast(frame, hooks) {
            Some((r, wait)) => {
                if wait {
                    self.thread.wait_unclaimed();
                }
                (r, true)
            }
            None => (self.thread.enter_slow(frame, hooks), false),
        };
        if r.may_switch() && self.pending.load(Ordering::Relaxed) {
            self.self_switch();
        }
        // As `klp_core::site::choose`: the resolved target, else the decision.
        let resolved = self.resolved.load(Ordering::Acquire);
        let imp = if resolved != 0 {
            resolved
        } else {
            Self::imp(self.state.load(Ordering::Acquire))
        };
        if fast {
            self.thread.publish_fast(r, site, imp, frame, hooks);
        } else {
            self.thread.publish(r, site, imp, frame, hooks);
        }
        imp
    }

    fn leave(&self, frame: usize, hooks: &impl Hooks) {
        let may_switch = match self.thread.try_leave_fast(frame) {
            Some(d) => d == 0,
            None => self.thread.leave_slow(frame, hooks).1,
        };
        if may_switch && self.pending.load(Ordering::Relaxed) {
            self.thread.switch_point(frame, hooks, |t| {
                if t.depth() == 0 {
                    self.self_switch();
                }
            });
        }
    }

    /// outer() calling inner(): both choices must agree.
    fn nested_call(&self, base: usize, hooks: &impl Hooks) {
        let a = self.enter(OUTER, base, hooks);
        let b = self.enter(INNER, base - 10, hooks);
        if a != b {
            self.mixed.store(true, Ordering::SeqCst);
        }
        self.leave(base - 10, hooks);
        self.leave(base, hooks);
    }

    /// An explicit switch point inside outer(): switch only if OLD is not live.
    fn switch_own(&self) {
        let mut clean = true;
        let reliable = self.thread.own_stack(|a: Activation| {
            if a.imp == OLD {
                clean = false;
            }
        });
        if clean && reliable {
            self.self_switch();
        }
    }

    /// The transition starts (the thread is flagged), then the worker's attempt: claim
    /// parked, else claim running at depth 0.
    fn worker(&self) {
        // `init_transition` withdraws the target before `start_transition` flags.
        self.resolved.store(0, Ordering::SeqCst);
        self.pending.store(true, Ordering::SeqCst);
        if let Some(c) = self.thread.claim() {
            let mut clean = true;
            let reliable = c.stack(|a| {
                if a.imp == OLD {
                    clean = false;
                }
            });
            if clean && reliable {
                self.worker_switch();
            }
            drop(c);
        } else {
            self.thread.run_claim();
            run_barrier();
            if self.thread.outside() {
                self.worker_switch();
            }
            self.thread.run_release();
        }
        self.settle_if_complete();
    }

    /// The transition completes once the (only) thread has switched, whoever switched
    /// it; the control lock is then dropped and the site settled to the new target.
    fn settle_if_complete(&self) {
        if self.state.load(Ordering::Acquire) == PATCHED {
            self.resolved.store(NEW, Ordering::Release);
        }
    }
}

/// Hooks that run a handler at the `at`-th point reached (once), or never.
struct Handler<'a> {
    model: &'a Model,
    at: usize,
    seen: Cell<usize>,
    what: HandlerOp,
}

#[derive(Clone, Copy)]
enum HandlerOp {
    /// A nested patchable call.
    Call,
    /// `klp_park(); klp_unpark();` then a call.
    ParkCall,
    /// An explicit switch point.
    Switch,
}

/// Hooks for code run by the handler itself (no nested handler).
struct Quiet;

impl Hooks for Quiet {
    fn left(&self, entry: usize, frame: usize) -> bool {
        entry <= frame
    }
}

impl Hooks for Handler<'_> {
    fn point(&self, _at: Point) {
        // Between any two steps of the owner: parked implies PARKB (the common entry and
        // return read only the word).
        assert!(self.model.thread.parkb_holds(), "parked without PARKB");
        let n = self.seen.get();
        self.seen.set(n + 1);
        if n != self.at {
            return;
        }
        // The handler's frames lie below everything the thread has live.
        match self.what {
            HandlerOp::Call => self.model.nested_call(500, &Quiet),
            HandlerOp::ParkCall => {
                self.model.thread.park(&Quiet);
                self.model.thread.unpark(&Quiet);
                self.model.nested_call(500, &Quiet);
            }
            HandlerOp::Switch => {
                self.model
                    .thread
                    .switch_point(400, &Quiet, |_| self.model.switch_own());
            }
        }
    }

    fn left(&self, entry: usize, frame: usize) -> bool {
        entry <= frame
    }
}

/// Run `owner` against a worker, with the handler landing at each point in turn until
/// the owner's run reaches fewer points than that.
fn with_handler_everywhere(
    what: HandlerOp,
    owner: impl Fn(&Model, &Handler<'_>) + Sync + Send + Copy + 'static,
) {
    for at in 0..12 {
        let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r = std::sync::Arc::clone(&reached);
        loom::model(move || {
            let m = Model::new(false);
            let w = Arc::clone(&m);
            let worker = loom::thread::spawn(move || w.worker());
            let hooks = Handler {
                model: &m,
                at,
                seen: Cell::new(0),
                what,
            };
            owner(&m, &hooks);
            worker.join().unwrap();
            r.fetch_max(hooks.seen.get(), std::sync::atomic::Ordering::Relaxed);
            assert!(
                !m.mixed.load(Ordering::SeqCst),
                "a call ran a mix of old and new"
            );
            assert_eq!(m.thread.depth(), 0, "activations left over");
            assert!(m.thread.parkb_holds(), "parked without PARKB");
            assert!(!m.thread.is_parked() || owner_parks_at_end(), "left parked");
            assert!(m.switched.load(Ordering::Relaxed) <= 1);
        });
        if reached.load(std::sync::atomic::Ordering::Relaxed) <= at {
            break;
        }
    }
}

fn owner_parks_at_end() -> bool {
    false
}

#[test]
fn a_nested_call_against_the_running_claim() {
    with_handler_everywhere(HandlerOp::Call, |m, h| {
        m.nested_call(1000, h);
    });
}

#[test]
fn unparking_into_a_call_against_the_parked_claim() {
    with_handler_everywhere(HandlerOp::Call, |m, h| {
        m.thread.park(h);
        m.thread.unpark(h);
        m.nested_call(1000, h);
    });
}

#[test]
fn a_handler_that_parks_inside_the_owners_call() {
    with_handler_everywhere(HandlerOp::ParkCall, |m, h| {
        m.nested_call(1000, h);
    });
}

#[test]
fn a_handler_switch_point_anywhere_in_a_call() {
    with_handler_everywhere(HandlerOp::Switch, |m, h| {
        m.nested_call(1000, h);
    });
}

#[test]
fn a_switch_point_inside_the_replaced_function_never_switches() {
    with_handler_everywhere(HandlerOp::Call, |m, h| {
        let a = m.enter(OUTER, 1000, h);
        m.thread.switch_point(900, h, |_| m.switch_own());
        let b = m.enter(INNER, 890, h);
        if a != b {
            m.mixed.store(true, Ordering::SeqCst);
        }
        m.leave(890, h);
        m.leave(1000, h);
    });
}

#[test]
fn a_handler_on_a_parked_thread_calls_in() {
    // Parked between calls; the handler lands while it is parked (and at every step of
    // parking and unparking).
    with_handler_everywhere(HandlerOp::Call, |m, h| {
        m.thread.park(h);
        h.point(Point::Parked);
        m.thread.unpark(h);
    });
}

#[test]
fn a_switch_point_while_parked_against_the_parked_claim() {
    // `klp_update_patch_state` on a parked thread used to rewrite its stack while the
    // worker held it claimed: the switch point takes the thread out of PARKED first.
    with_handler_everywhere(HandlerOp::Call, |m, h| {
        let a = m.enter(OUTER, 1000, h);
        m.thread.park(h);
        m.thread.switch_point(900, h, |_| m.switch_own());
        m.thread.unpark(h);
        let b = m.enter(INNER, 890, h);
        if a != b {
            m.mixed.store(true, Ordering::SeqCst);
        }
        m.leave(890, h);
        m.leave(1000, h);
    });
}

/// Parking and unparking inside a call, with a handler that reaches a switch point, or
/// makes a call, at every step (between `PARKB` and the park word included).
fn park_inside_a_call(what: HandlerOp) {
    with_handler_everywhere(what, |m, h| {
        let a = m.enter(OUTER, 1000, h);
        m.thread.park(h);
        h.point(Point::Parked);
        m.thread.unpark(h);
        let b = m.enter(INNER, 890, h);
        if a != b {
            m.mixed.store(true, Ordering::SeqCst);
        }
        m.leave(890, h);
        m.leave(1000, h);
    });
}

#[test]
fn a_handler_switch_point_while_parking_and_unparking() {
    park_inside_a_call(HandlerOp::Switch);
}

#[test]
fn a_handler_call_while_parking_and_unparking() {
    park_inside_a_call(HandlerOp::Call);
}
