//! The seed's case, deterministic: a parked thread enters a read section.
//!
//! Under rcu the thread is offline: `is_watching()` is false and `synchronize` returns
//! while the reader is still inside (the kernel's "RCU is not watching" hazard, kept on
//! purpose). Under preempt the same steps make `synchronize` wait for it (the 2017 fix).
#![cfg(not(klp_loom))]

mod common;

use common::{Gate, HOLD, LIMIT, within};
use klp_sync::{Flavor, Preempt, Rcu};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Park, enter a read section, report `is_watching`, hold until `leave`.
fn parked_reader<F: Flavor + 'static>(
    f: &Arc<F>,
    inside: Gate,
    leave: Gate,
    watching: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let f = Arc::clone(f);
    std::thread::spawn(move || {
        f.register_current_thread();
        f.park();
        let g = f.read_lock();
        watching.store(f.is_watching(), Ordering::SeqCst);
        inside.open();
        leave.wait();
        drop(g);
        f.unpark();
        f.unregister_current_thread();
    })
}

#[test]
fn rcu_does_not_protect_a_parked_reader() {
    let rcu = Arc::new(Rcu::new());
    let (inside, leave, watching) = (
        Gate::default(),
        Gate::default(),
        Arc::new(AtomicBool::new(true)),
    );
    let reader = parked_reader(&rcu, inside.clone(), leave.clone(), Arc::clone(&watching));
    inside.wait();
    assert!(
        !watching.load(Ordering::SeqCst),
        "rcu must not be watching a parked thread"
    );
    let r = Arc::clone(&rcu);
    // Returns although the reader is still inside: nothing waits for offline threads.
    within(
        LIMIT,
        "rcu synchronize with a parked reader inside",
        move || r.synchronize(),
    );
    assert!(!leave.is_open());
    leave.open();
    reader.join().unwrap();
}

#[test]
fn rcu_does_not_protect_an_unregistered_reader() {
    let rcu = Arc::new(Rcu::new());
    let (inside, leave) = (Gate::default(), Gate::default());
    let reader = {
        let (rcu, inside, leave) = (Arc::clone(&rcu), inside.clone(), leave.clone());
        std::thread::spawn(move || {
            let g = rcu.read_lock();
            assert!(!rcu.is_watching());
            inside.open();
            leave.wait();
            drop(g);
        })
    };
    inside.wait();
    let r = Arc::clone(&rcu);
    within(
        LIMIT,
        "rcu synchronize with an unregistered reader inside",
        move || r.synchronize(),
    );
    leave.open();
    reader.join().unwrap();
}

#[test]
fn preempt_protects_a_parked_reader() {
    let preempt = Arc::new(Preempt::new());
    let (inside, leave, watching) = (
        Gate::default(),
        Gate::default(),
        Arc::new(AtomicBool::new(false)),
    );
    let reader = parked_reader(
        &preempt,
        inside.clone(),
        leave.clone(),
        Arc::clone(&watching),
    );
    inside.wait();
    assert!(
        watching.load(Ordering::SeqCst),
        "preempt watches every thread"
    );
    let done = Gate::default();
    let sync = {
        let (p, d) = (Arc::clone(&preempt), done.clone());
        std::thread::spawn(move || {
            p.synchronize();
            d.open();
        })
    };
    std::thread::sleep(HOLD);
    assert!(
        !done.is_open(),
        "preempt synchronize returned while a parked reader was inside"
    );
    leave.open();
    within(
        LIMIT,
        "preempt synchronize after the reader left",
        move || sync.join().unwrap(),
    );
    reader.join().unwrap();
}

#[test]
fn rcu_watches_again_after_unpark() {
    let rcu = Arc::new(Rcu::new());
    let r = Arc::clone(&rcu);
    std::thread::spawn(move || {
        let _me = r.register_thread();
        assert!(r.is_watching());
        r.park();
        assert!(!r.is_watching());
        r.unpark();
        assert!(r.is_watching());
    })
    .join()
    .unwrap();
}
