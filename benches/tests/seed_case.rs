//! What `klp-compare`'s safety side reports, as assertions: sections that a flavor
//! watches never read a reclaimed cell; through the engine, rcu is made to watch every
//! handler call on a parked thread during a transition (counted, warned once), preempt
//! never needs to, and outside transitions no call counts at all.

use klp_benches::seed::engine_signals;
use klp_benches::unwatched::{ReaderKind, reclaim_race};
use klp_sync::{Preempt, Rcu};
use std::sync::{Arc, Mutex};
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

const HOLD: Duration = Duration::from_micros(30);
const FOR: Duration = Duration::from_millis(100);

#[test]
fn watched_sections_never_read_a_reclaimed_cell() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let preempt = Arc::new(Preempt::new());
    for kind in ReaderKind::ALL {
        let o = reclaim_race(&preempt, kind, HOLD, FOR);
        assert_eq!(
            o.unwatched, 0,
            "preempt watches every thread: {kind:?} {o:?}"
        );
        assert_eq!(o.reclaimed, 0, "preempt, {kind:?}: {o:?}");
    }
    let rcu = Arc::new(Rcu::new());
    let o = reclaim_race(&rcu, ReaderKind::ParkedMadeToWatch, HOLD, FOR);
    assert_eq!(o.unwatched, 0, "{o:?}");
    assert_eq!(o.reclaimed, 0, "rcu made to watch: {o:?}");
    // Not watched: every section says so (whether one happened to read a reclaimed cell
    // depends on timing, and is not asserted).
    for kind in [ReaderKind::Unregistered, ReaderKind::Parked] {
        let o = reclaim_race(&rcu, kind, HOLD, FOR);
        assert_eq!(o.unwatched, o.sections, "rcu, {kind:?}: {o:?}");
    }
}

#[test]
fn the_engine_makes_rcu_watch_handlers_on_parked_threads_only_during_transitions() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = 50;
    let p = engine_signals(Preempt::new(), n, false);
    assert_eq!(
        (p.calls_in_transition, p.unwatched_in_transition),
        (n, 0),
        "{p:?}"
    );
    assert_eq!((p.calls_outside, p.unwatched_outside), (n, 0), "{p:?}");
    assert_eq!((p.wrong, p.warnings), (0, 0), "{p:?}");

    let r = engine_signals(Rcu::new(), n, false);
    assert_eq!(
        (r.calls_in_transition, r.unwatched_in_transition),
        (n, n),
        "{r:?}"
    );
    assert_eq!((r.calls_outside, r.unwatched_outside), (n, 0), "{r:?}");
    assert_eq!((r.wrong, r.warnings), (0, 1), "{r:?}");

    // A thread whose first patched call is in a handler is registered by the engine
    // there: rcu watches it from then on.
    let r = engine_signals(Rcu::new(), n, true);
    assert_eq!((r.calls_in_transition, r.calls_outside), (n, n), "{r:?}");
    assert_eq!(r.unwatched_outside, 0, "{r:?}");
    assert_eq!(r.wrong, 0, "{r:?}");
}
