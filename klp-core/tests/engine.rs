//! Engine rules: bad input changes nothing, stacking, replace, states, force, kicks, the
//! consistency model at explicit switch points, and the seed's "not watching" case.
//!
//! Sites are process-wide, so the tests of this file run one at a time.

use klp_core::log::{Capture, Level, Log};
use klp_core::{
    Func, KLP_TRANSITION_PATCHED, Klp, KlpError, Object, Patch, park, patchable, unpark,
    update_patch_state,
};
use klp_sync::{Flavor, Preempt, Rcu};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());
const LIMIT: Duration = Duration::from_secs(20);

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn engine<F: Flavor + 'static>(f: F) -> (Klp<F>, Arc<Capture>) {
    let cap = Capture::new();
    let klp = Klp::with_log(f, Log::new(cap.clone()));
    klp.set_retry_period(Duration::from_millis(5));
    (klp, cap)
}

patchable! {
    fn e_add(x: u32) -> u32 { x + 1 }
}
patchable! {
    fn e_mul(x: u32) -> u32 { x * 10 }
}
fn e_add_2(x: u32) -> u32 {
    x + 2
}
fn e_add_3(x: u32) -> u32 {
    x + 3
}
fn e_mul_2(x: u32) -> u32 {
    x * 20
}

mod first {
    klp_core::patchable! {
        pub fn e_dup() -> u32 { 1 }
    }
}
mod second {
    klp_core::patchable! {
        pub fn e_dup() -> u32 { 2 }
    }
}
fn e_dup_fixed() -> u32 {
    99
}

/// A gate a blocked thread waits on.
struct Gate {
    tx: Mutex<Option<mpsc::Sender<()>>>,
    rx: Mutex<Option<mpsc::Receiver<()>>>,
}

static BLOCK: Mutex<Option<Arc<Gate>>> = Mutex::new(None);
static INSIDE: AtomicBool = AtomicBool::new(false);

patchable! {
    /// Parks inside itself until the test's gate opens (a blocking call).
    fn e_block() -> u32 {
        let gate = BLOCK.lock().unwrap().clone();
        INSIDE.store(true, Ordering::SeqCst);
        if let Some(g) = gate {
            let rx = g.rx.lock().unwrap().take().unwrap();
            park();
            let _ = rx.recv();
            unpark();
        }
        INSIDE.store(false, Ordering::SeqCst);
        1
    }
}
fn e_block_fixed() -> u32 {
    2
}

/// A thread blocked inside `e_block` until the returned closure is called.
fn blocked_thread() -> (std::thread::JoinHandle<u32>, impl FnOnce()) {
    let (tx, rx) = mpsc::channel();
    let gate = Arc::new(Gate {
        tx: Mutex::new(Some(tx)),
        rx: Mutex::new(Some(rx)),
    });
    *BLOCK.lock().unwrap() = Some(Arc::clone(&gate));
    let h = std::thread::spawn(e_block);
    while !INSIDE.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    let release = move || {
        gate.tx.lock().unwrap().take();
        *BLOCK.lock().unwrap() = None;
    };
    (h, release)
}

fn add_patch(name: &str, f: fn(u32) -> u32) -> Patch {
    Patch::new(name).object(Object::vmlinux().func(Func::new("e_add", f)))
}

fn en(name: &str) -> Vec<String> {
    vec![
        format!("livepatch: enabling patch '{name}'"),
        format!("livepatch: '{name}': initializing patching transition"),
        format!("livepatch: '{name}': starting patching transition"),
        format!("livepatch: '{name}': completing patching transition"),
        format!("livepatch: '{name}': patching complete"),
    ]
}

fn dis(name: &str) -> Vec<String> {
    vec![
        format!("livepatch: '{name}': initializing unpatching transition"),
        format!("livepatch: '{name}': starting unpatching transition"),
        format!("livepatch: '{name}': completing unpatching transition"),
        format!("livepatch: '{name}': unpatching complete"),
    ]
}

fn disable_wait<F: Flavor + 'static>(klp: &Klp<F>, name: &str) {
    klp.set_enabled(name, false).unwrap();
    assert!(klp.wait_transition(LIMIT));
    assert!(klp.patch(name).is_none());
}

#[test]
fn enable_and_disable_log_the_kernel_lines() {
    let _s = serial();
    let (klp, cap) = engine(Preempt::new());
    assert_eq!(e_add(1), 2);
    klp.enable(add_patch("p_basic", e_add_2)).unwrap();
    assert!(klp.wait_transition(LIMIT));
    assert_eq!(e_add(1), 3);
    disable_wait(&klp, "p_basic");
    assert_eq!(e_add(1), 2);
    let mut want = en("p_basic");
    want.extend(dis("p_basic"));
    assert_eq!(cap.take(), want);
}

#[test]
fn levels_are_the_kernels() {
    let _s = serial();
    let (klp, cap) = engine(Preempt::new());
    klp.enable(add_patch("p_levels", e_add_2)).unwrap();
    assert!(klp.wait_transition(LIMIT));
    disable_wait(&klp, "p_levels");
    let levels: Vec<Level> = cap.take_with_levels().into_iter().map(|(l, _)| l).collect();
    use Level::*;
    assert_eq!(
        levels,
        [
            Notice, Debug, Notice, Debug, Notice, Debug, Notice, Debug, Notice
        ]
    );
}

#[test]
fn a_missing_symbol_is_refused_and_changes_nothing() {
    let _s = serial();
    let (klp, cap) = engine(Preempt::new());
    let p = Patch::new("p_missing").object(
        Object::vmlinux()
            .func(Func::new("e_add", e_add_2 as fn(u32) -> u32))
            .func(Func::new("no_such_function", e_add_3 as fn(u32) -> u32)),
    );
    let e = klp.enable(p).unwrap_err();
    assert_eq!(e.errno(), -22);
    assert_eq!(
        cap.take(),
        ["livepatch: symbol 'no_such_function' not found in symbol table"]
    );
    assert!(klp.patches().is_empty());
    assert_eq!(e_add(1), 2);
}

#[test]
fn ambiguous_symbols_and_sympos() {
    let _s = serial();
    let (klp, cap) = engine(Preempt::new());
    let mk = |pos| {
        Patch::new("p_dup").object(
            Object::vmlinux().func(Func::new("e_dup", e_dup_fixed as fn() -> u32).sympos(pos)),
        )
    };
    assert_eq!(klp.enable(mk(0)).unwrap_err().errno(), -22);
    assert_eq!(
        cap.take(),
        ["livepatch: unresolvable ambiguity for symbol 'e_dup' in object '(null)'"]
    );
    assert_eq!(klp.enable(mk(3)).unwrap_err().errno(), -22);
    assert_eq!(
        cap.take(),
        ["livepatch: symbol position 3 for symbol 'e_dup' in object 'vmlinux' not found"]
    );
    // Positions 1 and 2 select one function each, in registration order.
    let (a, b) = (first::e_dup(), second::e_dup());
    klp.enable(mk(2)).unwrap();
    assert!(klp.wait_transition(LIMIT));
    let patched = [first::e_dup(), second::e_dup()];
    assert_eq!(
        patched.iter().filter(|&&v| v == 99).count(),
        1,
        "exactly one e_dup is patched: {patched:?} (was {a}, {b})"
    );
    disable_wait(&klp, "p_dup");
    assert_eq!([first::e_dup(), second::e_dup()], [a, b]);
}

#[test]
fn duplicates_are_refused() {
    let _s = serial();
    let (klp, cap) = engine(Preempt::new());
    let f = || Func::new("e_add", e_add_2 as fn(u32) -> u32);
    // The same function twice (sympos 0 and 1 name the same sysfs entry).
    let p = Patch::new("p_twice").object(Object::vmlinux().func(f()).func(f().sympos(1)));
    assert_eq!(klp.enable(p).unwrap_err().errno(), -17);
    // The same object twice.
    let p = Patch::new("p_twice")
        .object(Object::vmlinux().func(f()))
        .object(Object::vmlinux());
    assert_eq!(klp.enable(p).unwrap_err().errno(), -17);
    assert!(klp.patches().is_empty());
    // The same patch name twice.
    klp.enable(add_patch("p_twice", e_add_2)).unwrap();
    assert!(klp.wait_transition(LIMIT));
    assert_eq!(
        klp.enable(add_patch("p_twice", e_add_3))
            .unwrap_err()
            .errno(),
        -17
    );
    assert_eq!(e_add(1), 3);
    disable_wait(&klp, "p_twice");
    let mut want = en("p_twice");
    want.extend(dis("p_twice"));
    assert_eq!(cap.take(), want);
}

#[test]
fn a_replacement_of_another_type_is_refused() {
    let _s = serial();
    let (klp, cap) = engine(Preempt::new());
    fn wrong(x: u64) -> u64 {
        x
    }
    let p = Patch::new("p_type")
        .object(Object::vmlinux().func(Func::new("e_add", wrong as fn(u64) -> u64)));
    assert!(matches!(klp.enable(p), Err(KlpError::Invalid(_))));
    assert_eq!(
        cap.take(),
        ["livepatch: replacement for 'e_add' does not have the original's type"]
    );
    assert!(klp.patches().is_empty());
}

#[test]
fn enabled_writes_follow_the_kernel_rules() {
    let _s = serial();
    let (klp, _cap) = engine(Preempt::new());
    assert_eq!(klp.set_enabled("nobody", false).unwrap_err().errno(), -2);
    klp.enable(add_patch("p_rules", e_add_2)).unwrap();
    assert!(klp.wait_transition(LIMIT));
    assert_eq!(klp.set_enabled("p_rules", true).unwrap_err().errno(), -22);
    assert_eq!(klp.force("p_rules", true).unwrap_err().errno(), -22);
    klp.force("p_rules", false).unwrap();
    disable_wait(&klp, "p_rules");
}

#[test]
fn stacking_and_disabling_in_any_order() {
    let _s = serial();
    let (klp, _cap) = engine(Preempt::new());
    klp.enable(add_patch("p_low", e_add_2)).unwrap();
    assert!(klp.wait_transition(LIMIT));
    klp.enable(add_patch("p_high", e_add_3)).unwrap();
    assert!(klp.wait_transition(LIMIT));
    assert_eq!(e_add(1), 4);
    assert_eq!(klp.patch("p_high").unwrap().stack_order, 2);
    // The older patch leaves the middle of the stack; the newer one keeps winning.
    disable_wait(&klp, "p_low");
    assert_eq!(e_add(1), 4);
    assert_eq!(klp.patch("p_high").unwrap().stack_order, 1);
    disable_wait(&klp, "p_high");
    assert_eq!(e_add(1), 2);
}

#[test]
fn atomic_replace_reverts_what_the_new_patch_does_not_carry() {
    let _s = serial();
    let (klp, cap) = engine(Preempt::new());
    klp.enable(
        Patch::new("p_old").object(
            Object::vmlinux()
                .func(Func::new("e_add", e_add_2 as fn(u32) -> u32))
                .func(Func::new("e_mul", e_mul_2 as fn(u32) -> u32)),
        ),
    )
    .unwrap();
    assert!(klp.wait_transition(LIMIT));
    assert_eq!((e_add(1), e_mul(1)), (3, 20));
    klp.enable(add_patch("p_new", e_add_3).replace(true))
        .unwrap();
    assert!(klp.wait_transition(LIMIT));
    // e_mul got a nop, which was discarded: the original runs again.
    assert_eq!((e_add(1), e_mul(1)), (4, 10));
    let names: Vec<String> = klp.patches().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["p_new"]);
    assert_eq!(klp.patch("p_new").unwrap().stack_order, 1);
    disable_wait(&klp, "p_new");
    assert_eq!((e_add(1), e_mul(1)), (2, 10));
    let mut want = en("p_old");
    want.extend(en("p_new"));
    want.extend(dis("p_new"));
    assert_eq!(cap.take(), want);
}

#[test]
fn incompatible_states_are_refused() {
    let _s = serial();
    let (klp, cap) = engine(Preempt::new());
    klp.enable(add_patch("p_state2", e_add_2).state(1, 2).replace(true))
        .unwrap();
    assert!(klp.wait_transition(LIMIT));
    let e = klp
        .enable(add_patch("p_state1", e_add_3).state(1, 1).replace(true))
        .unwrap_err();
    assert_eq!(e.errno(), -22);
    // A replace patch that drops an installed state is refused too.
    assert_eq!(
        klp.enable(add_patch("p_nostate", e_add_3).replace(true))
            .unwrap_err()
            .errno(),
        -22
    );
    // A non-cumulative patch may ignore it.
    klp.enable(
        Patch::new("p_other")
            .object(Object::vmlinux().func(Func::new("e_mul", e_mul_2 as fn(u32) -> u32))),
    )
    .unwrap();
    assert!(klp.wait_transition(LIMIT));
    disable_wait(&klp, "p_other");
    disable_wait(&klp, "p_state2");
    let lines = cap.take();
    assert_eq!(
        lines[5],
        "livepatch: Livepatch patch (p_state1) is not compatible with the already installed livepatches."
    );
    assert_eq!(
        lines[6],
        "livepatch: Livepatch patch (p_nostate) is not compatible with the already installed livepatches."
    );
    assert_eq!(lines[7], "livepatch: enabling patch 'p_other'");
}

fn counter() -> (Arc<AtomicUsize>, impl Fn() + Send + Sync + 'static) {
    let n = Arc::new(AtomicUsize::new(0));
    let m = Arc::clone(&n);
    (n, move || {
        m.fetch_add(1, Ordering::SeqCst);
    })
}

patchable! {
    fn e_block2() -> u32 { 1 }
}

/// A replacement that blocks (parked) inside itself like `e_block`.
fn e_block2_fixed_blocking() -> u32 {
    let gate = BLOCK.lock().unwrap().clone();
    INSIDE.store(true, Ordering::SeqCst);
    if let Some(g) = gate {
        let rx = g.rx.lock().unwrap().take().unwrap();
        park();
        let _ = rx.recv();
        unpark();
    }
    INSIDE.store(false, Ordering::SeqCst);
    2
}

#[test]
fn a_parked_thread_inside_the_function_holds_the_transition_until_force() {
    let _s = serial();
    let (klp, cap) = engine(Preempt::new());
    let (released, hook) = counter();
    let (h, release) = blocked_thread();
    let p = Patch::new("p_stuck")
        .object(Object::vmlinux().func(Func::new("e_block", e_block_fixed as fn() -> u32)))
        .on_release(hook);
    klp.enable(p).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let info = klp.patch("p_stuck").unwrap();
    assert!(
        info.transition && info.enabled,
        "the transition must wait for the parked thread: {info:?}"
    );
    // Another enable or disable meanwhile: -EBUSY, nothing changes.
    assert_eq!(
        klp.enable(add_patch("p_while", e_add_2)).unwrap_err(),
        KlpError::Busy
    );
    assert!(klp.patch("p_while").is_none());
    // A thread that is not stuck runs the patch (its first call registers it at the
    // target, as any thread born during a transition).
    assert_eq!(e_block(), 2);
    assert_eq!(klp.thread_patch_state(), KLP_TRANSITION_PATCHED);
    klp.force("p_stuck", true).unwrap();
    assert!(klp.wait_transition(LIMIT));
    // Forcing a patching transition of a patch that replaces nothing marks nothing.
    assert!(!klp.patch("p_stuck").unwrap().forced);
    release();
    assert_eq!(
        h.join().unwrap(),
        1,
        "the blocked call finishes in the original"
    );
    disable_wait(&klp, "p_stuck");
    klp.flavor().barrier();
    assert_eq!(released.load(Ordering::SeqCst), 1);
    let lines = cap.take();
    assert!(
        lines.contains(&"livepatch: forcing remaining tasks to the patched state".to_owned()),
        "{lines:#?}"
    );
}

#[test]
fn a_forced_unpatching_transition_never_releases_the_patch() {
    let _s = serial();
    let (klp, cap) = engine(Preempt::new());
    let (released, hook) = counter();
    klp.enable(
        Patch::new("p_forced")
            .object(Object::vmlinux().func(Func::new(
                "e_block2",
                e_block2_fixed_blocking as fn() -> u32,
            )))
            .on_release(hook),
    )
    .unwrap();
    assert!(klp.wait_transition(LIMIT));
    // A thread blocks inside the patch's own code; disabling must wait for it.
    let (tx, rx) = mpsc::channel();
    *BLOCK.lock().unwrap() = Some(Arc::new(Gate {
        tx: Mutex::new(Some(tx)),
        rx: Mutex::new(Some(rx)),
    }));
    let h = std::thread::spawn(e_block2);
    while !INSIDE.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    klp.set_enabled("p_forced", false).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        klp.patch("p_forced").unwrap().transition,
        "unpatching must wait for the thread inside the patch"
    );
    klp.force("p_forced", true).unwrap();
    assert!(klp.wait_transition(LIMIT));
    assert!(klp.patch("p_forced").is_none());
    BLOCK
        .lock()
        .unwrap()
        .take()
        .unwrap()
        .tx
        .lock()
        .unwrap()
        .take();
    assert_eq!(h.join().unwrap(), 2);
    std::thread::sleep(Duration::from_millis(50));
    klp.flavor().barrier();
    assert_eq!(
        released.load(Ordering::SeqCst),
        0,
        "a forced patch is never released"
    );
    assert_eq!(e_block2(), 1);
    let lines = cap.take();
    assert!(
        lines.contains(&"livepatch: forcing remaining tasks to the patched state".to_owned()),
        "{lines:#?}"
    );
}

#[test]
fn a_released_patch_runs_its_release_hook_after_disable() {
    let _s = serial();
    let (klp, _cap) = engine(Preempt::new());
    let (released, hook) = counter();
    klp.enable(add_patch("p_rel", e_add_2).on_release(hook))
        .unwrap();
    assert!(klp.wait_transition(LIMIT));
    assert_eq!(released.load(Ordering::SeqCst), 0);
    disable_wait(&klp, "p_rel");
    klp.flavor().barrier();
    assert_eq!(released.load(Ordering::SeqCst), 1);
}

static KICK_RX: Mutex<Option<mpsc::Receiver<()>>> = Mutex::new(None);

patchable! {
    /// Waits inside itself without parking (it runs: a busy loop in real life), until
    /// something wakes it.
    fn e_busy() -> u32 {
        let rx = KICK_RX.lock().unwrap().take().unwrap();
        let _ = rx.recv();
        1
    }
}
fn e_busy_fixed() -> u32 {
    2
}

#[test]
fn stuck_threads_are_kicked_after_fifteen_attempts() {
    let _s = serial();
    let (klp, cap) = engine(Preempt::new());
    let kicked = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel::<()>();
    *KICK_RX.lock().unwrap() = Some(rx);
    let tx = Mutex::new(Some(tx));
    let k = Arc::clone(&kicked);
    let started = Arc::new(AtomicBool::new(false));
    let st = Arc::clone(&started);
    // A thread running inside the function to be patched, never parking: only its kick
    // (the kernel's fake signal) gets it out.
    let h = std::thread::spawn(move || {
        klp_core::set_thread_kick(Some(Arc::new(move || {
            k.fetch_add(1, Ordering::SeqCst);
            tx.lock().unwrap().take();
        })));
        st.store(true, Ordering::SeqCst);
        let inside = e_busy();
        (inside, e_busy_after())
    });
    fn e_busy_after() -> u32 {
        // The next call after the switch point runs the patch.
        *KICK_RX.lock().unwrap() = Some(mpsc::channel().1);
        e_busy()
    }
    while !started.load(Ordering::SeqCst) || KICK_RX.lock().unwrap().is_some() {
        std::thread::yield_now();
    }
    klp.enable(
        Patch::new("p_kick")
            .object(Object::vmlinux().func(Func::new("e_busy", e_busy_fixed as fn() -> u32))),
    )
    .unwrap();
    assert!(
        klp.wait_transition(LIMIT),
        "the kicked thread never switched"
    );
    assert!(
        kicked.load(Ordering::SeqCst) > 0,
        "the stuck thread was never kicked"
    );
    assert_eq!(
        h.join().unwrap(),
        (1, 2),
        "the stuck call finishes in the original, the next runs the patch"
    );
    disable_wait(&klp, "p_kick");
    let lines = cap.take();
    assert_eq!(
        lines
            .iter()
            .filter(|l| *l == "livepatch: signaling remaining tasks")
            .count(),
        1,
        "{lines:#?}"
    );
}

/// A thread that used patchable code once and now runs elsewhere (here: blocked in a
/// channel, not parked) does not hold a transition: the worker claims it at depth 0.
#[test]
fn a_thread_running_outside_patchable_code_is_switched_by_the_worker() {
    let _s = serial();
    let (klp, _cap) = engine(Preempt::new());
    let (tx, rx) = mpsc::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let h = std::thread::spawn(move || {
        e_add(0);
        ready_tx.send(()).unwrap();
        let _ = rx.recv();
        e_add(0)
    });
    ready_rx.recv().unwrap();
    klp.enable(add_patch("p_outside", e_add_2)).unwrap();
    assert!(
        klp.wait_transition(LIMIT),
        "a thread outside patchable code held the transition"
    );
    drop(tx);
    assert_eq!(h.join().unwrap(), 2);
    disable_wait(&klp, "p_outside");
}

static OUTER_READY: Mutex<Option<mpsc::Sender<()>>> = Mutex::new(None);
static OUTER_GO: Mutex<Option<mpsc::Receiver<()>>> = Mutex::new(None);
static OUTER_KLP: Mutex<Option<Klp<Preempt>>> = Mutex::new(None);

patchable! {
    /// Waits (running, not parked) inside itself, then tries an explicit switch point.
    fn e_outer(step: u32) -> u32 {
        if step == 1 {
            OUTER_READY.lock().unwrap().take().unwrap().send(()).unwrap();
            let go = OUTER_GO.lock().unwrap().take().unwrap();
            go.recv().unwrap();
            update_patch_state();
            let k = OUTER_KLP.lock().unwrap().unwrap();
            return k.thread_patch_state() as u32;
        }
        step
    }
}
fn e_outer_fixed(step: u32) -> u32 {
    step + 100
}

#[test]
fn an_explicit_switch_point_inside_the_replaced_function_does_not_switch() {
    let _s = serial();
    let (klp, _cap) = engine(Preempt::new());
    *OUTER_KLP.lock().unwrap() = Some(klp);
    let (ready_tx, ready_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel();
    *OUTER_READY.lock().unwrap() = Some(ready_tx);
    *OUTER_GO.lock().unwrap() = Some(go_rx);
    let h = std::thread::spawn(|| {
        let state_inside = e_outer(1);
        let k = OUTER_KLP.lock().unwrap().unwrap();
        // Back at depth 0 the thread switched itself.
        let state_after = k.thread_patch_state();
        (state_inside, state_after, e_outer(2))
    });
    ready_rx.recv().unwrap();
    klp.enable(
        Patch::new("p_explicit")
            .object(Object::vmlinux().func(Func::new("e_outer", e_outer_fixed as fn(u32) -> u32))),
    )
    .unwrap();
    assert!(
        klp.patch("p_explicit").unwrap().transition,
        "the thread inside e_outer holds the transition"
    );
    go_tx.send(()).unwrap();
    let (inside, after, next) = h.join().unwrap();
    assert_eq!(
        inside, 0,
        "update_patch_state inside the function being replaced must not switch"
    );
    assert_eq!(after, KLP_TRANSITION_PATCHED);
    assert_eq!(next, 102);
    assert!(klp.wait_transition(LIMIT));
    disable_wait(&klp, "p_explicit");
    *OUTER_KLP.lock().unwrap() = None;
}

#[test]
fn a_panic_through_a_patched_function_leaves_the_thread_switchable() {
    let _s = serial();
    let (klp, _cap) = engine(Preempt::new());
    patchable! {
        fn e_panics(x: u32) -> u32 { if x == 0 { panic!("boom") } x }
    }
    fn e_panics_fixed(x: u32) -> u32 {
        x + 1000
    }
    let (tx, rx) = mpsc::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let h = std::thread::spawn(move || {
        let r = std::panic::catch_unwind(|| e_panics(0));
        assert!(r.is_err());
        park();
        ready_tx.send(()).unwrap();
        let _ = rx.recv();
        unpark();
        e_panics(1)
    });
    ready_rx.recv().unwrap();
    klp.enable(
        Patch::new("p_panic").object(
            Object::vmlinux().func(Func::new("e_panics", e_panics_fixed as fn(u32) -> u32)),
        ),
    )
    .unwrap();
    // The parked thread has nothing on its stack: the worker switches it.
    assert!(
        klp.wait_transition(LIMIT),
        "the thread that panicked through the function blocks the transition"
    );
    drop(tx);
    assert_eq!(h.join().unwrap(), 1001);
    disable_wait(&klp, "p_panic");
}

#[test]
fn a_thread_born_during_a_transition_starts_at_the_target() {
    let _s = serial();
    let (klp, _cap) = engine(Preempt::new());
    let (h, release) = blocked_thread();
    klp.enable(
        Patch::new("p_born")
            .object(Object::vmlinux().func(Func::new("e_block", e_block_fixed as fn() -> u32))),
    )
    .unwrap();
    assert!(klp.patch("p_born").unwrap().transition);
    let state = std::thread::spawn(move || {
        e_add(0);
        klp.thread_patch_state()
    })
    .join()
    .unwrap();
    assert_eq!(state, KLP_TRANSITION_PATCHED);
    release();
    assert_eq!(h.join().unwrap(), 1);
    assert!(klp.wait_transition(LIMIT));
    disable_wait(&klp, "p_born");
}

/// The seed's case made visible: a patched function called on a parked thread (what a
/// signal handler on a blocked thread does) during a transition, when the call takes the
/// full decision (outside transitions it runs the site's resolved target and reads no
/// func_stack). rcu would not watch the thread there: the engine makes it watch for the
/// call (the kernel's `rcu_irq_enter`), counts it and warns once; preempt watches every
/// thread and never needs to.
fn call_while_parked<F: Flavor + 'static>(klp: Klp<F>) -> u64 {
    patchable! {
        fn e_seed(x: u32) -> u32 { x }
    }
    fn e_seed_fixed(x: u32) -> u32 {
        x + 1
    }
    // A thread blocked inside a function of the patch holds its transition.
    let (h, release) = blocked_thread();
    klp.enable(
        Patch::new("p_seed").object(
            Object::vmlinux()
                .func(Func::new("e_seed", e_seed_fixed as fn(u32) -> u32))
                .func(Func::new("e_block", e_block_fixed as fn() -> u32)),
        ),
    )
    .unwrap();
    assert!(klp.patch("p_seed").unwrap().transition);
    let v = std::thread::spawn(|| {
        e_seed(0); // registers the thread (and, for rcu, with the flavor)
        park();
        // What a signal handler running on this blocked thread would do.
        let v = e_seed(1);
        unpark();
        v
    })
    .join()
    .unwrap();
    assert_eq!(
        v, 2,
        "a thread born during the transition starts at the target"
    );
    release();
    assert_eq!(h.join().unwrap(), 1);
    assert!(klp.wait_transition(LIMIT));
    disable_wait(&klp, "p_seed");
    klp.not_watching_count()
}

#[test]
fn rcu_counts_and_warns_when_not_watching_and_preempt_never_does() {
    let _s = serial();
    let (klp, cap) = engine(Rcu::new());
    assert!(call_while_parked(klp) >= 1);
    let lines = cap.take();
    let warnings: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("is not watching"))
        .collect();
    assert_eq!(warnings.len(), 1, "{lines:#?}");
    assert!(
        warnings[0].starts_with("livepatch: handler ran on task ")
            && warnings[0].ends_with("where rcu is not watching: made it watch for the call"),
        "{warnings:?}"
    );

    let (klp, cap) = engine(Preempt::new());
    assert_eq!(call_while_parked(klp), 0);
    assert!(!cap.take().iter().any(|l| l.contains("not watching")));
}

/// Atomic replace: a function at position 1 in the patch in use and at position 0 in the
/// replacement is one function (the kernel's `klp_find_func`), not a nop beside a func.
#[test]
fn replace_treats_positions_0_and_1_as_one_function() {
    let _s = serial();
    let (klp, _cap) = engine(Preempt::new());
    klp.enable(
        Patch::new("p_pos1").object(
            Object::vmlinux().func(Func::new("e_add", e_add_2 as fn(u32) -> u32).sympos(1)),
        ),
    )
    .unwrap();
    assert!(klp.wait_transition(LIMIT));
    klp.enable(
        Patch::new("p_pos0")
            .replace(true)
            .object(Object::vmlinux().func(Func::new("e_add", e_add_3 as fn(u32) -> u32))),
    )
    .expect("the replacement names the same function");
    assert!(klp.wait_transition(LIMIT));
    assert_eq!(e_add(1), 4);
    assert!(klp.patch("p_pos1").is_none(), "replaced");
    disable_wait(&klp, "p_pos0");
    assert_eq!(e_add(1), 2);
}
