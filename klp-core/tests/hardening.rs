//! The consistency guarantee where several parts of the engine meet: two engines in
//! transition at once, a site handed from an engine of one flavor to an engine of the
//! other while threads call it, a thread born while a later object's `pre_patch` runs,
//! a wait that must leave its caller's own park alone, and `klp_leave`'s NULL task.
//!
//! Each test here failed on the engine before the per-thread state machine
//! (`klp_core::thread`): the first two with mixed calls or a freed func record (the
//! handler aborts on one), the third with the new function running for a patch whose
//! enable was cancelled, the fourth with the caller unparked.
//!
//! Sites are process-wide, so the tests of this file run one at a time.

use klp_core::log::{Capture, Log};
use klp_core::{
    Func, KLP_TRANSITION_UNPATCHED, Klp, Object, Patch, load_object, park, patchable,
    unload_object, unpark,
};
use klp_sync::{Flavor, Preempt, Rcu};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());
const LIMIT: Duration = Duration::from_secs(20);

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn engine<F: Flavor + 'static>(f: F) -> Klp<F> {
    let klp = Klp::with_log(f, Log::new(Capture::new()));
    klp.set_retry_period(Duration::from_millis(2));
    klp
}

/// How long the stress tests run (`KLP_STRESS_SECS` lengthens them).
fn stress_time() -> Duration {
    let secs = std::env::var("KLP_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0f64);
    Duration::from_secs_f64(secs)
}

// Engine A patches a_outer and a_inner (a mix: outer and inner of different versions);
// engine B patches b_outer and b_inner.
patchable! {
    fn a_outer() -> u64 { 10 + a_inner() }
}
patchable! {
    fn a_inner() -> u64 { 1 }
}
fn a_outer_2() -> u64 {
    20 + a_inner()
}
fn a_inner_2() -> u64 {
    2
}
patchable! {
    fn b_outer() -> u64 { 10 + b_inner() }
}
patchable! {
    fn b_inner() -> u64 { 1 }
}
fn b_outer_2() -> u64 {
    20 + b_inner()
}
fn b_inner_2() -> u64 {
    2
}

/// 11 and 22 are consistent; 12 and 21 are mixes.
fn mixed(v: u64) -> bool {
    v != 11 && v != 22
}

fn cycle<F: Flavor + 'static>(klp: Klp<F>, name: &str, p: impl Fn() -> Patch, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        klp.enable(p()).unwrap();
        assert!(klp.wait_transition(LIMIT), "{name}: enable");
        klp.set_enabled(name, false).unwrap();
        assert!(klp.wait_transition(LIMIT), "{name}: disable");
    }
}

/// The run claim of a thread was one flag for every engine: one engine's worker ending
/// its claim let the thread run while the other's was switching it.
#[test]
fn two_engines_in_transition_at_once_never_mix() {
    let _s = serial();
    let ka = engine(Preempt::new());
    let kb = engine(Preempt::new());
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let mixes = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, calls, mixes) = (stop.clone(), calls.clone(), mixes.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..64 {
                        // Mostly outside patchable code: claimed while running.
                        if mixed(a_outer()) || mixed(b_outer()) {
                            mixes.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    calls.fetch_add(128, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let pa = || {
        Patch::new("hard_a").object(
            Object::vmlinux()
                .func(Func::new("a_outer", a_outer_2 as fn() -> u64))
                .func(Func::new("a_inner", a_inner_2 as fn() -> u64)),
        )
    };
    let pb = || {
        Patch::new("hard_b").object(
            Object::vmlinux()
                .func(Func::new("b_outer", b_outer_2 as fn() -> u64))
                .func(Func::new("b_inner", b_inner_2 as fn() -> u64)),
        )
    };
    let cycles = {
        let stop2 = stop.clone();
        let b = std::thread::spawn(move || cycle(kb, "hard_b", pb, &stop2));
        let end = Instant::now() + stress_time();
        let mut n = 0u64;
        while Instant::now() < end {
            cycle_once(ka, "hard_a", pa);
            n += 1;
        }
        stop.store(true, Ordering::Relaxed);
        b.join().unwrap();
        n
    };
    for c in callers {
        c.join().unwrap();
    }
    assert!(cycles > 0 && calls.load(Ordering::Relaxed) > 0);
    assert_eq!(mixes.load(Ordering::Relaxed), 0, "mixed calls");
}

fn cycle_once<F: Flavor + 'static>(klp: Klp<F>, name: &str, p: impl Fn() -> Patch) {
    klp.enable(p()).unwrap();
    assert!(klp.wait_transition(LIMIT));
    klp.set_enabled(name, false).unwrap();
    assert!(klp.wait_transition(LIMIT));
}

patchable! {
    fn h_outer() -> u64 { 10 + h_inner() }
}
patchable! {
    fn h_inner() -> u64 { 1 }
}
fn h_outer_2() -> u64 {
    20 + h_inner()
}
fn h_inner_2() -> u64 {
    2
}

fn h_patch(name: &str) -> Patch {
    Patch::new(name).object(
        Object::vmlinux()
            .func(Func::new("h_outer", h_outer_2 as fn() -> u64))
            .func(Func::new("h_inner", h_inner_2 as fn() -> u64)),
    )
}

/// A site given back by one engine and taken by another of another flavor while threads
/// call it: the handler read `owner` outside its read section, so a call could take the
/// func_stack of the new engine under the old engine's read section (which the new
/// engine's grace period does not wait for) and with the old engine's task state.
#[test]
fn a_site_changes_engines_under_its_callers() {
    let _s = serial();
    let kp = engine(Preempt::new());
    let kr = engine(Rcu::new());
    let stop = Arc::new(AtomicBool::new(false));
    let mixes = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..2)
        .map(|i| {
            let (stop, mixes) = (stop.clone(), mixes.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if mixed(h_outer()) {
                        mixes.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                    // One caller blocks now and then: the rcu engine stops watching it.
                    if i == 1 && n.is_multiple_of(1024) {
                        park();
                        std::thread::yield_now();
                        unpark();
                    }
                }
            })
        })
        .collect();
    let end = Instant::now() + stress_time();
    let mut cycles = 0;
    while Instant::now() < end {
        cycle_once(kp, "hand_p", || h_patch("hand_p"));
        cycle_once(kr, "hand_r", || h_patch("hand_r"));
        cycles += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.join().unwrap();
    }
    kr.flavor().barrier();
    assert!(cycles > 0);
    assert_eq!(mixes.load(Ordering::Relaxed), 0, "mixed calls");
    assert_eq!(h_outer(), 11);
}

patchable! {
    fn born_target() -> u64 { 1 }
}
fn born_target_2() -> u64 {
    2
}
patchable! {
    object = "hardening_mod";
    fn born_mod_fn() -> u64 { 1 }
}
fn born_mod_fn_2() -> u64 {
    2
}

/// A thread that registers while a later object's `pre_patch` runs (the first object is
/// patched already, its funcs in transition) starts where the other threads are
/// (UNPATCHED: the kernel's child copies its parent's state), so that when the enable is
/// cancelled it never ran the patch's code. It used to start at the target, PATCHED.
#[test]
fn a_thread_born_during_a_cancelled_enable_runs_the_original() {
    let _s = serial();
    let klp = engine(Preempt::new());
    load_object("hardening_mod", || {}).unwrap();
    let seen: Arc<Mutex<Option<(u64, i8)>>> = Arc::new(Mutex::new(None));
    let s2 = seen.clone();
    let err = klp
        .enable(
            Patch::new("born_cancelled")
                .object(
                    Object::vmlinux().func(Func::new("born_target", born_target_2 as fn() -> u64)),
                )
                .object(
                    Object::named("hardening_mod")
                        .func(Func::new("born_mod_fn", born_mod_fn_2 as fn() -> u64))
                        .pre_patch(move |_| {
                            let s3 = s2.clone();
                            std::thread::spawn(move || {
                                let v = born_target();
                                *s3.lock().unwrap() = Some((v, klp.thread_patch_state()));
                            })
                            .join()
                            .unwrap();
                            Err(-22)
                        }),
                ),
        )
        .unwrap_err();
    assert_eq!(err.errno(), -22);
    let (v, state) = seen.lock().unwrap().take().expect("the thread ran");
    assert_eq!(v, 1, "a thread born during the enable ran the patch's code");
    assert_eq!(state, KLP_TRANSITION_UNPATCHED);
    assert!(!klp.in_transition());
    assert_eq!(born_target(), 1);
    assert_eq!(born_mod_fn(), 1);
    unload_object("hardening_mod", || {}).unwrap();
}

/// A wait parks its caller for its duration and gives back the state it found: a caller
/// that had parked itself stays parked (it used to be unparked).
#[test]
fn waiting_keeps_the_callers_own_park() {
    let _s = serial();
    let klp = engine(Preempt::new());
    let parked = std::thread::Builder::new()
        .name("keeps-parked".into())
        .spawn(move || {
            born_target(); // a task
            park();
            assert!(klp.wait_transition(LIMIT));
            let me = klp
                .tasks()
                .into_iter()
                .find(|t| t.task.starts_with("keeps-parked:"))
                .expect("this task");
            unpark();
            me.parked
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(parked, "the wait unparked a thread its caller had parked");
}
