//! loom models of the read/grace-period protocol (`--cfg klp_loom`, see `.ci/run`).
//!
//! Both barriers become `fence(SeqCst)` under loom (see `klp_sync::docs`). A retired
//! object is a `loom::cell::UnsafeCell`: the reader reads it inside its section, the
//! updater overwrites it (the "free") after the grace period; loom reports any execution
//! in which the two accesses are not ordered by happens-before.
#![cfg(klp_loom)]

use klp_sync::model::Model;
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use std::sync::atomic::AtomicBool as StdBool;

const OLD: usize = 1;
const NEW: usize = 2;
const FREED: u64 = 0xdead;

struct World {
    model: Model,
    published: AtomicUsize,
    old: UnsafeCell<u64>,
}

impl World {
    fn new() -> Arc<Self> {
        Arc::new(World {
            model: Model::new(),
            published: AtomicUsize::new(OLD),
            old: UnsafeCell::new(7),
        })
    }

    /// One read section: follow the published pointer and read what it points to.
    fn read(&self, r: klp_sync::model::Reader<'_>) {
        self.model.enter(r);
        if self.published.load(Ordering::Acquire) == OLD {
            // SAFETY: a read of the old object inside a read section; the updater writes
            // it only after a grace period (loom checks that ordering).
            let v = self.old.with(|p| unsafe { *p });
            assert_ne!(v, FREED, "read a freed object");
        }
        self.model.exit(r);
    }

    /// Unpublish the old object and free it after `gp`.
    fn update(&self, gp: impl FnOnce()) {
        self.published.store(NEW, Ordering::Release);
        gp();
        // SAFETY: the grace period has passed; loom checks no read races with this.
        self.old.with_mut(|p| unsafe { *p = FREED });
    }
}

#[test]
fn preempt_grace_period_waits_for_readers() {
    loom::model(|| {
        let w = World::new();
        let w2 = Arc::clone(&w);
        let reader = loom::thread::spawn(move || {
            let r = w2.model.claim();
            w2.read(r);
            w2.read(r);
            w2.model.release(r);
        });
        w.update(|| w.model.preempt_synchronize());
        reader.join().unwrap();
    });
}

#[test]
fn preempt_nested_sections() {
    loom::model(|| {
        let w = World::new();
        let w2 = Arc::clone(&w);
        let reader = loom::thread::spawn(move || {
            let r = w2.model.claim();
            w2.model.enter(r);
            w2.read(r); // nested inside the outer section
            if w2.published.load(Ordering::Acquire) == OLD {
                // SAFETY: still inside the outer section.
                let v = w2.old.with(|p| unsafe { *p });
                assert_ne!(v, FREED);
            }
            w2.model.exit(r);
        });
        w.update(|| w.model.preempt_synchronize());
        reader.join().unwrap();
    });
}

#[test]
fn rcu_registering_reader_races_a_grace_period() {
    loom::model(|| {
        let w = World::new();
        let w2 = Arc::clone(&w);
        let reader = loom::thread::spawn(move || {
            let r = w2.model.claim();
            w2.model.set_rcu_watched(r, true);
            w2.read(r);
        });
        w.update(|| w.model.rcu_synchronize(|| {}));
        reader.join().unwrap();
    });
}

#[test]
fn rcu_unparking_reader_races_a_grace_period() {
    loom::model(|| {
        let w = World::new();
        let w2 = Arc::clone(&w);
        let reader = loom::thread::spawn(move || {
            let r = w2.model.claim();
            w2.model.set_rcu_watched(r, false); // registered but parked
            w2.model.set_rcu_watched(r, true); // unpark
            w2.read(r);
        });
        w.update(|| w.model.rcu_synchronize(|| {}));
        reader.join().unwrap();
    });
}

static SHARED_SEEN: StdBool = StdBool::new(false);

#[test]
fn rcu_callers_share_a_grace_period() {
    // Three callers (so that two of them can ride one grace period started after a
    // first one) and a reader of each caller's object.
    loom::model(|| {
        let model = Arc::new(Model::new());
        let gps = Arc::new(AtomicUsize::new(0));
        let cells: Arc<[UnsafeCell<u64>; 2]> = Arc::new([UnsafeCell::new(1), UnsafeCell::new(2)]);
        let published = Arc::new([AtomicUsize::new(OLD), AtomicUsize::new(OLD)]);
        let reader = {
            let (model, cells, published) = (
                Arc::clone(&model),
                Arc::clone(&cells),
                Arc::clone(&published),
            );
            loom::thread::spawn(move || {
                let r = model.claim();
                model.set_rcu_watched(r, true);
                model.enter(r);
                for i in 0..2 {
                    if published[i].load(Ordering::Acquire) == OLD {
                        // SAFETY: inside the section; freed only after a grace period.
                        let v = cells[i].with(|p| unsafe { *p });
                        assert_ne!(v, FREED);
                    }
                }
                model.exit(r);
            })
        };
        let callers: Vec<_> = (0..2)
            .map(|i| {
                let (model, gps, cells, published) = (
                    Arc::clone(&model),
                    Arc::clone(&gps),
                    Arc::clone(&cells),
                    Arc::clone(&published),
                );
                loom::thread::spawn(move || {
                    published[i].store(NEW, Ordering::Release);
                    model.rcu_synchronize(|| {
                        gps.fetch_add(1, Ordering::Relaxed);
                    });
                    // SAFETY: after this caller's grace period.
                    cells[i].with_mut(|p| unsafe { *p = FREED });
                })
            })
            .collect();
        // The third caller: it only drives a grace period that may be running when the
        // other two arrive.
        model.rcu_synchronize(|| {
            gps.fetch_add(1, Ordering::Relaxed);
        });
        for c in callers {
            c.join().unwrap();
        }
        reader.join().unwrap();
        let n = gps.load(Ordering::Relaxed);
        assert!(n <= 3 && n as u64 == model.rcu_completed());
        if n < 3 {
            SHARED_SEEN.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    assert!(
        SHARED_SEEN.load(std::sync::atomic::Ordering::Relaxed),
        "no execution in which two callers shared a grace period"
    );
}
