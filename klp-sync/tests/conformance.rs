//! One conformance suite for the `Flavor` contract, stamped out for every flavor.
//!
//! The same suite runs again in the fence fallback: `fence_fallback_passes_the_suite`
//! re-executes this test binary with `KLP_SYNC_FORCE_FENCES=1`.
#![cfg(not(klp_loom))]

mod common;

use common::{Gate, HOLD, LIMIT, within};
use klp_sync::{Flavor, Lock, Preempt, Rcu};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

/// A thread that enters a read section, says so, and leaves when `leave` opens.
fn hold_reader<F: Flavor + 'static>(
    f: &Arc<F>,
    inside: Gate,
    leave: Gate,
    depth: usize,
) -> std::thread::JoinHandle<()> {
    let f = Arc::clone(f);
    std::thread::spawn(move || {
        f.register_current_thread();
        let guards: Vec<_> = (0..depth).map(|_| f.read_lock()).collect();
        inside.open();
        leave.wait();
        drop(guards);
        f.unregister_current_thread();
    })
}

/// Start `synchronize` on another thread; the gate opens when it returns.
fn start_sync<F: Flavor + 'static>(f: &Arc<F>) -> (Gate, std::thread::JoinHandle<()>) {
    let done = Gate::default();
    let (f, d) = (Arc::clone(f), done.clone());
    let h = std::thread::spawn(move || {
        f.synchronize();
        d.open();
    });
    (done, h)
}

fn waits_for_reader<F: Flavor + 'static>(f: Arc<F>) {
    let (inside, leave) = (Gate::default(), Gate::default());
    let reader = hold_reader(&f, inside.clone(), leave.clone(), 1);
    inside.wait();
    let (done, sync) = start_sync(&f);
    std::thread::sleep(HOLD);
    assert!(
        !done.is_open(),
        "synchronize returned while a reader was inside"
    );
    leave.open();
    within(LIMIT, "synchronize after the reader left", move || {
        sync.join().unwrap();
        reader.join().unwrap();
    });
    assert!(done.is_open());
}

fn does_not_wait_for_later_readers<F: Flavor + 'static>(f: Arc<F>) {
    let (inside_a, leave_a) = (Gate::default(), Gate::default());
    let a = hold_reader(&f, inside_a.clone(), leave_a.clone(), 1);
    inside_a.wait();
    let (done, sync) = start_sync(&f);
    std::thread::sleep(HOLD);
    // B begins after synchronize started and never leaves until synchronize returned.
    let (inside_b, leave_b) = (Gate::default(), Gate::default());
    let b = hold_reader(&f, inside_b.clone(), leave_b.clone(), 1);
    std::thread::sleep(HOLD);
    leave_a.open();
    within(
        LIMIT,
        "synchronize with a later reader still inside",
        move || sync.join().unwrap(),
    );
    assert!(done.is_open());
    leave_b.open();
    a.join().unwrap();
    b.join().unwrap();
}

fn nesting<F: Flavor + 'static>(f: Arc<F>) {
    let (inside, drop_inner, inner_dropped, leave) = (
        Gate::default(),
        Gate::default(),
        Gate::default(),
        Gate::default(),
    );
    let reader = {
        let (f, inside, drop_inner, inner_dropped, leave) = (
            Arc::clone(&f),
            inside.clone(),
            drop_inner.clone(),
            inner_dropped.clone(),
            leave.clone(),
        );
        std::thread::spawn(move || {
            f.register_current_thread();
            let outer = f.read_lock();
            let inner = f.read_lock();
            inside.open();
            drop_inner.wait();
            drop(inner);
            inner_dropped.open();
            leave.wait();
            drop(outer);
        })
    };
    inside.wait();
    let (done, sync) = start_sync(&f);
    std::thread::sleep(HOLD);
    assert!(
        !done.is_open(),
        "synchronize returned inside a nested section"
    );
    drop_inner.open();
    inner_dropped.wait();
    std::thread::sleep(HOLD);
    assert!(
        !done.is_open(),
        "synchronize returned when only the inner section ended"
    );
    leave.open();
    within(LIMIT, "synchronize after the outer section", move || {
        sync.join().unwrap();
        reader.join().unwrap();
    });
}

fn defer_and_barrier<F: Flavor + 'static>(f: Arc<F>) {
    let (inside, leave) = (Gate::default(), Gate::default());
    let reader = hold_reader(&f, inside.clone(), leave.clone(), 1);
    inside.wait();
    let ran = Arc::new(AtomicBool::new(false));
    let deferrer = {
        let (f, ran) = (Arc::clone(&f), Arc::clone(&ran));
        // preempt and lock run the closure in `defer` itself, after a grace period.
        std::thread::spawn(move || f.defer(Box::new(move || ran.store(true, Ordering::SeqCst))))
    };
    std::thread::sleep(HOLD);
    assert!(
        !ran.load(Ordering::SeqCst),
        "deferred closure ran while a reader was inside"
    );
    leave.open();
    let f2 = Arc::clone(&f);
    within(LIMIT, "defer + barrier", move || {
        deferrer.join().unwrap();
        f2.barrier();
    });
    assert!(
        ran.load(Ordering::SeqCst),
        "barrier returned before the deferred closure ran"
    );
    reader.join().unwrap();
}

fn barrier_waits_for_many<F: Flavor + 'static>(f: Arc<F>) {
    let count = Arc::new(AtomicUsize::new(0));
    for _ in 0..100 {
        let c = Arc::clone(&count);
        f.defer(Box::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        }));
    }
    f.barrier();
    assert_eq!(count.load(Ordering::SeqCst), 100);
}

fn threads_exit_while_registered<F: Flavor + 'static>(f: Arc<F>) {
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let f = Arc::clone(&f);
            std::thread::spawn(move || {
                f.register_current_thread();
                for _ in 0..100 {
                    let _g = f.read_lock();
                }
                // exits registered
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    within(
        LIMIT,
        "synchronize after registered threads exited",
        move || {
            for _ in 0..10 {
                f.synchronize();
            }
        },
    );
}

fn many_threads<F: Flavor + 'static>(f: Arc<F>) {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(33));
    let readers: Vec<_> = (0..32)
        .map(|_| {
            let (f, stop, start) = (Arc::clone(&f), Arc::clone(&stop), Arc::clone(&start));
            std::thread::spawn(move || {
                f.register_current_thread();
                start.wait();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let _g = f.read_lock();
                    let _h = f.read_lock();
                    n += 1;
                }
                f.unregister_current_thread();
                n
            })
        })
        .collect();
    start.wait();
    let f2 = Arc::clone(&f);
    within(LIMIT, "synchronize with 32 busy readers", move || {
        for _ in 0..50 {
            f2.synchronize();
        }
    });
    stop.store(true, Ordering::Relaxed);
    let total: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(total > 0);
}

fn watching_when_registered<F: Flavor + 'static>(f: Arc<F>) {
    let f2 = Arc::clone(&f);
    std::thread::spawn(move || {
        f2.register_current_thread();
        assert!(
            f2.is_watching(),
            "{}: a registered, running thread must be watched",
            f2.name()
        );
        f2.unregister_current_thread();
    })
    .join()
    .unwrap();
}

fn synchronize_in_section_panics<F: Flavor + 'static>(f: Arc<F>) {
    let f2 = Arc::clone(&f);
    let r = std::thread::spawn(move || {
        let _g = f2.read_lock();
        f2.synchronize();
    })
    .join();
    let msg = r.expect_err("synchronize inside a read section must panic");
    let text = msg
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| msg.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(
        text.contains("inside a read section"),
        "unexpected panic: {text}"
    );
    // The flavor is still usable.
    within(LIMIT, "synchronize after the panic", move || {
        f.synchronize()
    });
}

macro_rules! conformance {
    ($name:ident, $new:expr) => {
        mod $name {
            use super::*;
            fn flavor() -> Arc<impl Flavor + 'static> {
                Arc::new($new)
            }
            #[test]
            fn synchronize_waits_for_a_reader() {
                waits_for_reader(flavor());
            }
            #[test]
            fn synchronize_does_not_wait_for_later_readers() {
                does_not_wait_for_later_readers(flavor());
            }
            #[test]
            fn read_sections_nest() {
                nesting(flavor());
            }
            #[test]
            fn defer_runs_after_a_grace_period_and_barrier_waits() {
                defer_and_barrier(flavor());
            }
            #[test]
            fn barrier_waits_for_every_deferred_closure() {
                barrier_waits_for_many(flavor());
            }
            #[test]
            fn threads_that_exit_registered_do_not_block() {
                threads_exit_while_registered(flavor());
            }
            #[test]
            fn many_threads_many_grace_periods() {
                many_threads(flavor());
            }
            #[test]
            fn registered_running_threads_are_watched() {
                watching_when_registered(flavor());
            }
            #[test]
            fn synchronize_inside_a_read_section_panics() {
                synchronize_in_section_panics(flavor());
            }
        }
    };
}

conformance!(flavor_preempt, Preempt::new());
conformance!(flavor_rcu, Rcu::new());
conformance!(flavor_lock, Lock::new());

#[test]
fn fence_fallback_passes_the_suite() {
    if std::env::var_os(klp_sync::FORCE_FENCES_ENV).is_some() {
        // We are the re-executed child: the mode must really be the fallback.
        assert_eq!(
            klp_sync::barrier_mode(),
            klp_sync::BarrierMode::Fences(klp_sync::FenceReason::Forced)
        );
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(klp_sync::FORCE_FENCES_ENV, "1")
        .args(["flavor_", "fence_fallback", "--test-threads=2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the suite failed in the fence fallback:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every stamped test plus this one ran in the child.
    assert!(
        stdout.contains("test result: ok. 28 passed"),
        "unexpected child run:\n{stdout}"
    );
}

#[test]
fn barrier_mode_is_reported() {
    let _ = Preempt::new();
    let mode = klp_sync::barrier_mode();
    assert!(!mode.to_string().is_empty());
    // Decided once: asking again gives the same answer.
    assert_eq!(mode, klp_sync::barrier_mode());
}
