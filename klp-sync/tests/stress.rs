//! Stress with poisoning: readers follow an atomically published pointer while an updater
//! replaces it and retires the old value through `synchronize` or `defer`, overwriting it
//! with a poison pattern before freeing it. Readers check every value they read.
//!
//! About a second per flavor and mode; `KLP_STRESS_SECS` makes it longer. A deliberately
//! broken flavor shows that the test catches a grace period that does not wait.
#![cfg(not(klp_loom))]

mod common;

use common::stress_secs;
use klp_sync::{Flavor, Lock, Preempt, Rcu, SlotToken};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

const POISON: u64 = 0xdead_beef_dead_beef;

/// A published value: `b` is always `!a` while it is live.
struct Val {
    a: AtomicU64,
    b: AtomicU64,
}

impl Val {
    fn new(n: u64) -> *mut Val {
        Box::into_raw(Box::new(Val {
            a: AtomicU64::new(n),
            b: AtomicU64::new(!n),
        }))
    }
}

/// Poison `p` and free it, or (for the broken flavor) keep it poisoned until the end, so
/// that its readers read poison instead of freed memory.
#[derive(Clone, Copy, PartialEq)]
enum Retire {
    Free,
    Quarantine,
}

#[derive(Clone, Copy)]
enum Mode {
    Synchronize,
    Defer,
}

struct Shared {
    cur: AtomicPtr<Val>,
    stop: AtomicBool,
    quarantine: Mutex<Vec<usize>>,
}

fn retire(shared: &Shared, p: *mut Val, how: Retire) {
    // SAFETY: `p` was unpublished and a grace period has passed (or, quarantined, it is
    // never freed before the end of the test); Val is all atomics, so concurrent readers
    // of a broken flavor see poison, not a data race.
    let v = unsafe { &*p };
    v.a.store(POISON, Ordering::Relaxed);
    v.b.store(POISON, Ordering::Relaxed);
    match how {
        // SAFETY: unpublished, past a grace period, and allocated by `Val::new`.
        Retire::Free => drop(unsafe { Box::from_raw(p) }),
        Retire::Quarantine => shared.quarantine.lock().unwrap().push(p as usize),
    }
}

/// Runs the stress for `dur` (or until a violation, when `stop_at_first`); returns
/// (violations, reads, updates).
fn run<F: Flavor + 'static>(
    f: Arc<F>,
    mode: Mode,
    how: Retire,
    dur: Duration,
    stop_at_first: bool,
) -> (u64, u64, u64) {
    let shared = Arc::new(Shared {
        cur: AtomicPtr::new(Val::new(0)),
        stop: AtomicBool::new(false),
        quarantine: Mutex::new(Vec::new()),
    });
    let violations = Arc::new(AtomicU64::new(0));
    let readers = 2;
    let start = Arc::new(Barrier::new(readers + 1));
    let handles: Vec<_> = (0..readers)
        .map(|_| {
            let (f, shared, violations, start) = (
                Arc::clone(&f),
                Arc::clone(&shared),
                Arc::clone(&violations),
                Arc::clone(&start),
            );
            std::thread::spawn(move || {
                f.register_current_thread();
                start.wait();
                let mut reads = 0u64;
                while !shared.stop.load(Ordering::Relaxed) {
                    let _g = f.read_lock();
                    let p = shared.cur.load(Ordering::Acquire);
                    // SAFETY: read inside a read section after an Acquire load of the
                    // published pointer; the updater retires it only after a grace period.
                    let v = unsafe { &*p };
                    let a = v.a.load(Ordering::Relaxed);
                    // Widen the window between the two reads a little.
                    for _ in 0..(reads % 64) {
                        std::hint::spin_loop();
                    }
                    let b = v.b.load(Ordering::Relaxed);
                    if a == POISON || b != !a {
                        violations.fetch_add(1, Ordering::Relaxed);
                    }
                    reads += 1;
                }
                f.unregister_current_thread();
                reads
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < dur && !(stop_at_first && violations.load(Ordering::Relaxed) > 0) {
        n += 1;
        let old = shared.cur.swap(Val::new(n), Ordering::AcqRel);
        match mode {
            Mode::Synchronize => {
                f.synchronize();
                retire(&shared, old, how);
            }
            Mode::Defer => {
                let (s, p) = (Arc::clone(&shared), old as usize);
                f.defer(Box::new(move || retire(&s, p as *mut Val, how)));
            }
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    let reads: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    f.barrier();
    for p in shared.quarantine.lock().unwrap().drain(..) {
        // SAFETY: every reader has exited; quarantined values came from `Val::new`.
        drop(unsafe { Box::from_raw(p as *mut Val) });
    }
    // SAFETY: the readers have exited; the last value came from `Val::new`.
    drop(unsafe { Box::from_raw(shared.cur.load(Ordering::Relaxed)) });
    (violations.load(Ordering::Relaxed), reads, n)
}

fn check<F: Flavor + 'static>(f: F, mode: Mode) {
    let name = f.name();
    let (violations, reads, updates) =
        run(Arc::new(f), mode, Retire::Free, stress_secs(1.0), false);
    assert_eq!(
        violations, 0,
        "{name}: {violations} reads of retired values"
    );
    assert!(
        reads > 1000 && updates > 10,
        "{name}: too little work ({reads} reads, {updates} updates)"
    );
}

#[test]
fn preempt_synchronize() {
    check(Preempt::new(), Mode::Synchronize);
}
#[test]
fn preempt_defer() {
    check(Preempt::new(), Mode::Defer);
}
#[test]
fn rcu_synchronize() {
    check(Rcu::new(), Mode::Synchronize);
}
#[test]
fn rcu_defer() {
    check(Rcu::new(), Mode::Defer);
}
#[test]
fn lock_synchronize() {
    check(Lock::new(), Mode::Synchronize);
}
#[test]
fn lock_defer() {
    check(Lock::new(), Mode::Defer);
}

/// The read side of preempt with a grace period that waits for nothing.
struct Broken(Preempt);

// SAFETY: none — this flavor deliberately breaks clause 1 (its grace period does not wait)
// to show that the stress test detects it. It is used only below, with quarantined values.
unsafe impl Flavor for Broken {
    type Token = SlotToken;
    fn name(&self) -> &'static str {
        "broken"
    }
    unsafe fn raw_read_lock(&self) -> SlotToken {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.0.raw_read_lock() }
    }
    unsafe fn raw_read_unlock(&self, t: SlotToken) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.0.raw_read_unlock(t) }
    }
    fn synchronize(&self) {}
    fn is_watching(&self) -> bool {
        true
    }
    fn defer(&self, f: Box<dyn FnOnce() + Send + 'static>) {
        f();
    }
    fn barrier(&self) {}
}

#[test]
fn a_grace_period_that_does_not_wait_is_caught() {
    let (violations, reads, _) = run(
        Arc::new(Broken(Preempt::new())),
        Mode::Synchronize,
        Retire::Quarantine,
        Duration::from_secs(20),
        true,
    );
    assert!(
        violations > 0,
        "the stress test did not notice a broken grace period ({reads} reads)"
    );
}

#[test]
fn fence_fallback_passes_the_stress() {
    if std::env::var_os(klp_sync::FORCE_FENCES_ENV).is_some() {
        assert!(matches!(
            klp_sync::barrier_mode(),
            klp_sync::BarrierMode::Fences(_)
        ));
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(klp_sync::FORCE_FENCES_ENV, "1")
        .env(
            "KLP_STRESS_SECS",
            std::env::var("KLP_STRESS_SECS").unwrap_or_else(|_| "0.5".into()),
        )
        .args(["preempt_", "rcu_", "fence_fallback", "--test-threads=1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stress failed in the fence fallback:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("test result: ok. 5 passed"),
        "unexpected child run:\n{stdout}"
    );
}
