//! The rcu flavor's own API: polled and expedited grace periods, registration nesting.
#![cfg(not(klp_loom))]

mod common;

use common::{Gate, HOLD, LIMIT, within};
use klp_sync::{Flavor, Rcu};
use std::sync::Arc;
use std::time::Instant;

#[test]
fn a_polled_grace_period_completes_only_after_earlier_readers() {
    let rcu = Arc::new(Rcu::new());
    let (inside, leave) = (Gate::default(), Gate::default());
    let reader = {
        let (rcu, inside, leave) = (Arc::clone(&rcu), inside.clone(), leave.clone());
        std::thread::spawn(move || {
            let _me = rcu.register_thread();
            let g = rcu.read_lock();
            inside.open();
            leave.wait();
            drop(g);
        })
    };
    inside.wait();
    let cookie = rcu.start_poll();
    std::thread::sleep(HOLD);
    assert!(
        !rcu.poll(cookie),
        "a polled grace period completed while an earlier reader was inside"
    );
    leave.open();
    let r = Arc::clone(&rcu);
    within(LIMIT, "the polled grace period", move || {
        while !r.poll(cookie) {
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
    });
    reader.join().unwrap();
    // A cookie taken now is not yet complete unless a new grace period runs.
    let later = rcu.get_poll_cookie();
    rcu.synchronize();
    assert!(rcu.poll(later));
}

#[test]
fn expedited_grace_periods_wait_for_readers_too() {
    let rcu = Arc::new(Rcu::new());
    let (inside, leave) = (Gate::default(), Gate::default());
    let reader = {
        let (rcu, inside, leave) = (Arc::clone(&rcu), inside.clone(), leave.clone());
        std::thread::spawn(move || {
            let _me = rcu.register_thread();
            let g = rcu.read_lock();
            inside.open();
            leave.wait();
            drop(g);
        })
    };
    inside.wait();
    let done = Gate::default();
    let sync = {
        let (rcu, done) = (Arc::clone(&rcu), done.clone());
        std::thread::spawn(move || {
            rcu.synchronize_expedited();
            done.open();
        })
    };
    std::thread::sleep(HOLD);
    assert!(!done.is_open());
    leave.open();
    within(LIMIT, "expedited grace period", move || {
        sync.join().unwrap()
    });
    reader.join().unwrap();
}

#[test]
fn registration_nests() {
    let rcu = Rcu::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            let a = rcu.register_thread();
            let b = rcu.register_thread();
            drop(b);
            assert!(rcu.is_watching(), "one registration is still held");
            drop(a);
            assert!(!rcu.is_watching());
        });
    });
}

#[test]
fn completed_grace_periods_count() {
    let rcu = Rcu::new();
    let before = rcu.completed_grace_periods();
    let t = Instant::now();
    for _ in 0..10 {
        rcu.synchronize();
    }
    assert!(t.elapsed() < LIMIT);
    assert_eq!(
        rcu.completed_grace_periods() - before,
        10,
        "one caller at a time: one grace period per call"
    );
}
