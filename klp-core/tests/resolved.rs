//! The sites' resolved target (`klp_core::Site::resolved`): what every call runs without
//! a decision while no transition changes the site. It follows the func_stack through
//! enable, disable, stacking, atomic replace, force and a hand-over between engines, and
//! it is withdrawn for the whole of a transition (the calls then take the full decision,
//! with the per-thread consistency model).
//!
//! Sites are process-wide, so the tests of this file run one at a time.

use klp_core::log::{Capture, Log};
use klp_core::{Func, Klp, Object, Patch, Site, lookup, park, patchable, unpark};
use klp_sync::{Flavor, Preempt, Rcu};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, mpsc};
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());
const LIMIT: Duration = Duration::from_secs(20);

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn engine<F: Flavor + 'static>(f: F) -> Klp<F> {
    let klp = Klp::with_log(f, Log::new(Capture::new()));
    klp.set_retry_period(Duration::from_millis(5));
    klp
}

patchable! {
    fn r_add(x: u32) -> u32 { x + 1 }
}
fn r_add_2(x: u32) -> u32 {
    x + 2
}
fn r_add_3(x: u32) -> u32 {
    x + 3
}

static GATE: Mutex<Option<mpsc::Receiver<()>>> = Mutex::new(None);
static INSIDE: AtomicBool = AtomicBool::new(false);

patchable! {
    /// Blocks (parked) inside itself until the test's gate opens.
    fn r_block() -> u32 {
        let rx = GATE.lock().unwrap().take();
        INSIDE.store(true, Ordering::SeqCst);
        if let Some(rx) = rx {
            park();
            let _ = rx.recv();
            unpark();
        }
        INSIDE.store(false, Ordering::SeqCst);
        1
    }
}
fn r_block_fixed() -> u32 {
    2
}

fn site(name: &str) -> &'static Site {
    lookup(None, name, 0).unwrap_or_else(|| panic!("site {name} not registered"))
}

fn code(f: fn(u32) -> u32) -> Option<*const ()> {
    Some(f as *const ())
}

fn add_patch(name: &str, f: fn(u32) -> u32) -> Patch {
    Patch::new(name).object(Object::vmlinux().func(Func::new("r_add", f)))
}

/// A patch of both functions: its transition cannot complete while a thread is blocked
/// inside `r_block`.
fn both_patch(name: &str) -> Patch {
    Patch::new(name).object(
        Object::vmlinux()
            .func(Func::new("r_add", r_add_2 as fn(u32) -> u32))
            .func(Func::new("r_block", r_block_fixed as fn() -> u32)),
    )
}

/// A thread blocked inside `r_block` until the returned sender is dropped.
fn blocked_thread() -> (std::thread::JoinHandle<u32>, mpsc::Sender<()>) {
    let (tx, rx) = mpsc::channel();
    *GATE.lock().unwrap() = Some(rx);
    INSIDE.store(false, Ordering::SeqCst);
    let h = std::thread::spawn(r_block);
    while !INSIDE.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    (h, tx)
}

fn original(name: &str) -> Option<*const ()> {
    Some(site(name).original())
}

fn follows_the_stack<F: Flavor + 'static>(f: F) {
    let _s = serial();
    let klp = engine(f);
    r_add(0); // registered
    assert_eq!(site("r_add").resolved(), original("r_add"), "unpatched");

    klp.enable(add_patch("r1", r_add_2)).unwrap();
    klp.wait(LIMIT).unwrap();
    assert_eq!(site("r_add").resolved(), code(r_add_2));
    assert_eq!(r_add(1), 3);

    klp.enable(add_patch("r2", r_add_3)).unwrap();
    klp.wait(LIMIT).unwrap();
    assert_eq!(site("r_add").resolved(), code(r_add_3), "stacked");
    assert_eq!(r_add(1), 4);

    klp.set_enabled("r2", false).unwrap();
    klp.wait(LIMIT).unwrap();
    assert_eq!(site("r_add").resolved(), code(r_add_2), "the patch below");
    assert_eq!(r_add(1), 3);

    // Atomic replace with no func of its own for r_add: a nop, then nothing.
    klp.enable(
        Patch::new("r3")
            .replace(true)
            .object(Object::vmlinux().func(Func::new("r_block", r_block_fixed as fn() -> u32))),
    )
    .unwrap();
    klp.wait(LIMIT).unwrap();
    assert_eq!(
        site("r_add").resolved(),
        original("r_add"),
        "replaced by a nop"
    );
    assert_eq!(site("r_block").resolved(), code_0(r_block_fixed));
    assert_eq!(r_add(1), 2);
    klp.set_enabled("r3", false).unwrap();
    klp.wait(LIMIT).unwrap();
    assert_eq!(site("r_block").resolved(), original("r_block"));
    assert_eq!(r_block(), 1);
}

fn code_0(f: fn() -> u32) -> Option<*const ()> {
    Some(f as *const ())
}

#[test]
fn follows_the_stack_preempt() {
    follows_the_stack(Preempt::new());
}

#[test]
fn follows_the_stack_rcu() {
    follows_the_stack(Rcu::new());
}

/// Withdrawn for the whole of a transition (enable, then its reversal), settled when it
/// completes; meanwhile each thread runs what its own state says.
fn withdrawn_during_transitions<F: Flavor + 'static>(f: F) {
    let _s = serial();
    let klp = engine(f);
    r_add(0);
    let (h, tx) = blocked_thread();
    klp.enable(both_patch("rt")).unwrap();
    assert!(klp.in_transition());
    assert_eq!(site("r_add").resolved(), None, "withdrawn while patching");
    assert_eq!(site("r_block").resolved(), None);
    // This thread has switched (it runs nothing patched): the new function.
    assert_eq!(r_add(1), 3);
    // The blocked thread has not: a new call of its own runs the old one.
    let (qtx, qrx) = mpsc::channel();
    let t = std::thread::spawn(move || qtx.send(r_add(1)).unwrap());
    assert_eq!(qrx.recv().unwrap(), 3, "a new thread starts at the target");
    t.join().unwrap();

    // Reverse: the threads that switched switch back (the blocked one never switched,
    // so the reversal may complete at once). Never the new function meanwhile.
    klp.set_enabled("rt", false).unwrap();
    let r = site("r_add").resolved();
    assert!(
        r.is_none() || r == original("r_add"),
        "withdrawn while reverting, or reverted"
    );
    drop(tx);
    assert_eq!(
        h.join().unwrap(),
        1,
        "the blocked call finished in the old code"
    );
    klp.wait(LIMIT).unwrap();
    assert_eq!(site("r_add").resolved(), original("r_add"));
    assert_eq!(site("r_block").resolved(), original("r_block"));
    assert_eq!(r_add(1), 2);

    // Enable again, blocked, then force: settled at once.
    let (h, tx) = blocked_thread();
    klp.enable(both_patch("rf")).unwrap();
    assert_eq!(site("r_add").resolved(), None);
    klp.force("rf", true).unwrap();
    klp.wait(LIMIT).unwrap();
    assert_eq!(site("r_add").resolved(), code(r_add_2), "forced");
    drop(tx);
    assert_eq!(h.join().unwrap(), 1);
    klp.set_enabled("rf", false).unwrap();
    klp.wait(LIMIT).unwrap();
    assert_eq!(site("r_add").resolved(), original("r_add"));
}

#[test]
fn withdrawn_during_transitions_preempt() {
    withdrawn_during_transitions(Preempt::new());
}

#[test]
fn withdrawn_during_transitions_rcu() {
    withdrawn_during_transitions(Rcu::new());
}

/// A site given back by one engine and taken by another (of another flavor): the second
/// engine's target, never the first's.
#[test]
fn handed_over_between_engines() {
    let _s = serial();
    let a = engine(Preempt::new());
    let b = engine(Rcu::new());
    r_add(0);
    for round in 0..20 {
        a.enable(add_patch("ra", r_add_2)).unwrap();
        a.wait(LIMIT).unwrap();
        assert_eq!(site("r_add").resolved(), code(r_add_2), "round {round}");
        a.set_enabled("ra", false).unwrap();
        a.wait(LIMIT).unwrap();
        assert_eq!(site("r_add").resolved(), original("r_add"), "round {round}");
        b.enable(add_patch("rb", r_add_3)).unwrap();
        b.wait(LIMIT).unwrap();
        assert_eq!(site("r_add").resolved(), code(r_add_3), "round {round}");
        assert_eq!(r_add(1), 4);
        b.set_enabled("rb", false).unwrap();
        b.wait(LIMIT).unwrap();
        assert_eq!(site("r_add").resolved(), original("r_add"), "round {round}");
    }
}

/// A busy site (another engine owns it) refuses the patch and leaves the target alone.
#[test]
fn a_refused_patch_changes_nothing() {
    let _s = serial();
    let a = engine(Preempt::new());
    let b = engine(Preempt::new());
    r_add(0);
    a.enable(add_patch("rx", r_add_2)).unwrap();
    a.wait(LIMIT).unwrap();
    assert!(b.enable(add_patch("ry", r_add_3)).is_err());
    assert_eq!(site("r_add").resolved(), code(r_add_2));
    assert_eq!(r_add(1), 3);
    a.set_enabled("rx", false).unwrap();
    a.wait(LIMIT).unwrap();
    assert_eq!(site("r_add").resolved(), original("r_add"));
}
