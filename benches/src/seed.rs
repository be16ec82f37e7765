//! The seed's case through the engine: signal handlers that call a patched function on a
//! parked thread.
//!
//! The handler (and with it the flavor's read section) runs only while a transition is in
//! progress: outside transitions a call of a patched site runs the site's resolved target
//! and depends on no flavor. So the measurement holds a transition open — a thread is
//! parked inside a function of the patch, which it cannot switch away from — and sends
//! signals to another parked thread whose handler calls a patched function: under rcu
//! that thread is not watched, and the engine makes rcu watch it for the call (the
//! kernel's `rcu_irq_enter`), counting it in [`Klp::not_watching_count`]; preempt watches
//! every thread. Then the transition is let go, and the same calls are made outside it.

use klp_core::log::{Capture, Log};
use klp_core::{Func, Klp, Object, Patch, park, patchable, unpark};
use klp_sync::Flavor;
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

patchable! {
    /// What the signal handlers call.
    fn seed_probe(x: u32) -> u32 { x }
}
fn seed_probe_fixed(x: u32) -> u32 {
    x + 1
}

/// The holder's way out of `seed_hold`.
static HOLD: Mutex<Option<mpsc::Receiver<()>>> = Mutex::new(None);
static HOLDING: AtomicBool = AtomicBool::new(false);

patchable! {
    /// Blocks, parked, until released: a thread inside a function of the patch holds its
    /// transition.
    fn seed_hold() -> u32 {
        let rx = HOLD.lock().unwrap().take();
        HOLDING.store(true, Ordering::SeqCst);
        if let Some(rx) = rx {
            park();
            let _ = rx.recv();
            unpark();
        }
        HOLDING.store(false, Ordering::SeqCst);
        1
    }
}
fn seed_hold_fixed() -> u32 {
    2
}

/// What the handler expects `seed_probe(1)` to return on its thread.
static EXPECT: AtomicU32 = AtomicU32::new(0);
static HANDLED: AtomicU64 = AtomicU64::new(0);
static WRONG: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_signal(_sig: c_int) {
    // Async-signal-safe: a patchable call (the kernel's interrupt rule) and atomics.
    let v = seed_probe(1);
    if v != EXPECT.load(Ordering::Relaxed) {
        WRONG.fetch_add(1, Ordering::Relaxed);
    }
    HANDLED.fetch_add(1, Ordering::Release);
}

/// What [`engine_signals`] counted, for one flavor.
#[derive(Clone, Copy, Debug, Default)]
pub struct SeedOutcome {
    /// Handler calls made while the transition was held.
    pub calls_in_transition: u64,
    /// Of them, calls where the flavor was not watching the thread (made to watch).
    pub unwatched_in_transition: u64,
    /// Handler calls made after the transition completed.
    pub calls_outside: u64,
    /// Of them, calls counted as not watched (0: no read section is entered).
    pub unwatched_outside: u64,
    /// Calls that returned another value than their thread's patch state gives.
    pub wrong: u64,
    /// The engine's "not watching" warning lines.
    pub warnings: usize,
}

/// Send `n` signals to the thread `tid`, each handled before the next.
fn signal_n(tid: libc::pthread_t, n: u64) -> u64 {
    let mut sent = 0;
    for _ in 0..n {
        let before = HANDLED.load(Ordering::Acquire);
        // SAFETY: `tid` is a live thread of this process (it waits for STOP), and the
        // handler of SIGUSR1 is installed.
        let r = unsafe { libc::pthread_kill(tid, libc::SIGUSR1) };
        assert_eq!(r, 0, "pthread_kill");
        sent += 1;
        let t = Instant::now();
        while HANDLED.load(Ordering::Acquire) == before {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "a signal was never handled"
            );
            std::thread::yield_now();
        }
    }
    sent
}

/// The measurement for one flavor: `n` handler calls during a held transition, `n` after
/// it. `first_call_in_handler`: the parked thread never made a patched call before, so
/// its first one (where the engine registers it with the flavor) is in a handler.
pub fn engine_signals<F: Flavor + 'static>(
    flavor: F,
    n: u64,
    first_call_in_handler: bool,
) -> SeedOutcome {
    let cap = Capture::new();
    let klp = Klp::with_log(flavor, Log::new(cap.clone()));
    klp.set_retry_period(Duration::from_millis(2));

    // SAFETY: a handler that only makes a patchable call and touches atomics; SA_RESTART
    // so that the parked thread's sleep goes on.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }

    // The holder: parked inside seed_hold, which the patch replaces.
    let (release, rx) = mpsc::channel();
    *HOLD.lock().unwrap() = Some(rx);
    let holder = std::thread::spawn(seed_hold);
    while !HOLDING.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    klp.enable(
        Patch::new("seed_case").object(
            Object::vmlinux()
                .func(Func::new("seed_probe", seed_probe_fixed as fn(u32) -> u32))
                .func(Func::new("seed_hold", seed_hold_fixed as fn() -> u32)),
        ),
    )
    .expect("enable the seed's patch");
    assert!(klp.in_transition(), "the holder holds the transition");

    // The target: born during the transition, so it starts at the target (patched).
    EXPECT.store(seed_probe_fixed(1), Ordering::Relaxed);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let (tid_tx, tid_rx) = mpsc::channel();
    let target = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            if !first_call_in_handler {
                // A patched call: the thread becomes a task, registered with the flavor.
                assert_eq!(seed_probe(1), seed_probe_fixed(1));
            }
            park();
            // SAFETY: pthread_self has no precondition.
            tid_tx.send(unsafe { libc::pthread_self() }).unwrap();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
            }
            unpark();
        })
    };
    let tid = tid_rx.recv().unwrap();
    WRONG.store(0, Ordering::Relaxed);

    let nw0 = klp.not_watching_count();
    let calls_in_transition = signal_n(tid, n);
    let unwatched_in_transition = klp.not_watching_count() - nw0;
    assert!(
        klp.in_transition(),
        "the transition was held during the calls"
    );

    release.send(()).unwrap();
    assert_eq!(
        holder.join().unwrap(),
        1,
        "the holder ran the old seed_hold"
    );
    assert!(
        klp.wait_transition(Duration::from_secs(30)),
        "the transition did not complete"
    );

    let nw1 = klp.not_watching_count();
    let calls_outside = signal_n(tid, n);
    let unwatched_outside = klp.not_watching_count() - nw1;
    let wrong = WRONG.load(Ordering::Relaxed);

    stop.store(true, Ordering::Relaxed);
    target.join().unwrap();
    klp.set_enabled("seed_case", false).expect("disable");
    assert!(klp.wait_transition(Duration::from_secs(30)));
    klp.flavor().barrier();
    let warnings = cap
        .take()
        .iter()
        .filter(|l| l.contains("not watching"))
        .count();
    SeedOutcome {
        calls_in_transition,
        unwatched_in_transition,
        calls_outside,
        unwatched_outside,
        wrong,
        warnings,
    }
}
