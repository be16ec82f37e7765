//! The churn workload of the soak (`klp-soak`): consistency under a long run of
//! transitions.
//!
//! `f` calls `g`; every patch replaces both with a pair from one "universe". Two reader
//! threads call `f` in a loop and check that the `f` and the `g` of one outermost call
//! come from the same universe, while the control thread enables, disables, reverses,
//! replaces and forces patches (the workload of `klp-core`'s churn test, for as long as
//! asked). A forced transition breaks the consistency model on purpose, as the kernel
//! says, so a call during which a force happened is not checked. Freed func records are
//! poisoned and the handler aborts on one, so a use after free ends the run.

use klp_core::log::{Capture, Log};
use klp_core::{Func, Klp, Object, Patch, patchable};
use klp_sync::Flavor;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

patchable! {
    fn soak_f(x: u32) -> (u32, u32) { (0, soak_g(x)) }
}
patchable! {
    fn soak_g(x: u32) -> u32 { x }
}

macro_rules! universes {
    ($($k:literal => $f:ident, $g:ident;)*) => {
        $(
            fn $f(x: u32) -> (u32, u32) {
                (x + $k, soak_g(x))
            }
            fn $g(x: u32) -> u32 {
                x + $k
            }
        )*
        const UNIVERSES: &[(fn(u32) -> (u32, u32), fn(u32) -> u32)] = &[$(($f, $g)),*];
    };
}

universes! {
    1 => f1, g1;
    2 => f2, g2;
    3 => f3, g3;
    4 => f4, g4;
    5 => f5, g5;
    6 => f6, g6;
    7 => f7, g7;
    8 => f8, g8;
}

/// Odd while a force is in progress; bumped twice per force.
static FORCE_EPOCH: AtomicU64 = AtomicU64::new(0);

/// How many times the process was continued after a stop (`SIGCONT`).
static CONTINUED: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_continue(_sig: libc::c_int) {
    CONTINUED.fetch_add(1, Ordering::Relaxed);
}

/// Count `SIGCONT`s: a run stopped from outside (job control, a debugger, a machine
/// that pauses its background work) must not be taken for a transition that hangs.
fn count_continues() {
    // SAFETY: the handler only increments an atomic; SA_RESTART keeps the interrupted
    // calls going.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_continue as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGCONT, &sa, std::ptr::null_mut());
    }
}

/// Wait for the transition in progress; panics when it has not completed after 60 s of
/// waiting during which the process was not stopped.
fn wait_done<F: Flavor + 'static>(klp: &Klp<F>, what: &str) {
    loop {
        let continued = CONTINUED.load(Ordering::Relaxed);
        if klp.wait_transition(Duration::from_secs(60)) {
            return;
        }
        assert_ne!(
            CONTINUED.load(Ordering::Relaxed),
            continued,
            "transition of {what} never completed"
        );
    }
}

/// A tiny deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// How long a churn runs: until `transitions` transitions or `duration`, whichever
/// comes first.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Transitions to run (enable, disable, reversal each count one).
    pub transitions: u64,
    /// The longest the run may take.
    pub duration: Duration,
}

/// What a churn counted.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    /// Transitions started (enables, disables, reversals).
    pub transitions: u64,
    /// Of them, reversals.
    pub reversals: u64,
    /// Forced transitions.
    pub forces: u64,
    /// Calls of `f` by the readers.
    pub calls: u64,
    /// Calls checked (no force during them).
    pub checked: u64,
    /// Checked calls whose `f` and `g` came from different universes.
    pub violations: u64,
    /// Time taken.
    pub elapsed: Duration,
}

/// Run the churn on a new engine of `flavor`; `progress` is called about every
/// `every` with the counts so far. Panics when a transition never completes (60 s of
/// waiting while the process was not stopped from outside) or the original code does not
/// run again at the end.
pub fn churn<F: Flavor + 'static>(
    flavor: F,
    budget: Budget,
    every: Duration,
    mut progress: impl FnMut(&Outcome),
) -> Outcome {
    count_continues();
    let cap = Capture::new();
    let klp = Klp::with_log(flavor, Log::new(cap.clone()));
    klp.set_retry_period(Duration::from_millis(2));
    let stop = Arc::new(AtomicBool::new(false));
    let violations = Arc::new(AtomicU64::new(0));
    let checked = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let started = Arc::new(std::sync::Barrier::new(3));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, violations, checked, calls, started) = (
                Arc::clone(&stop),
                Arc::clone(&violations),
                Arc::clone(&checked),
                Arc::clone(&calls),
                Arc::clone(&started),
            );
            std::thread::spawn(move || {
                let mut n = 0u64;
                soak_f(0);
                started.wait();
                while !stop.load(Ordering::Relaxed) {
                    let e0 = FORCE_EPOCH.load(Ordering::SeqCst);
                    let (fu, gu) = soak_f(0);
                    let e1 = FORCE_EPOCH.load(Ordering::SeqCst);
                    n += 1;
                    if n.is_multiple_of(64) {
                        calls.fetch_add(64, Ordering::Relaxed);
                    }
                    if e0 == e1 && e0.is_multiple_of(2) {
                        checked.fetch_add(1, Ordering::Relaxed);
                        if fu != gu {
                            violations.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                calls.fetch_add(n % 64, Ordering::Relaxed);
            })
        })
        .collect();

    started.wait();
    let t0 = Instant::now();
    let mut last_report = t0;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut live: Vec<String> = Vec::new();
    let mut next = 0u64;
    let mut o = Outcome::default();
    let snapshot = |o: &Outcome| Outcome {
        calls: calls.load(Ordering::Relaxed),
        checked: checked.load(Ordering::Relaxed),
        violations: violations.load(Ordering::Relaxed),
        elapsed: t0.elapsed(),
        ..*o
    };
    while o.transitions < budget.transitions && t0.elapsed() < budget.duration {
        let op = rng.below(10);
        if live.len() < 4 && (op < 5 || live.is_empty()) {
            let (f, g) = UNIVERSES[(next % UNIVERSES.len() as u64) as usize];
            let name = format!("soak_{next}");
            next += 1;
            let replace = rng.below(4) == 0;
            let p = Patch::new(&name).replace(replace).object(
                Object::vmlinux()
                    .func(Func::new("soak_f", f))
                    .func(Func::new("soak_g", g)),
            );
            klp.enable(p).expect("enable");
            if replace {
                live.clear();
            }
            live.push(name.clone());
            o.transitions += 1;
            settle(&klp, &name, &mut rng, &mut o, true);
        } else if !live.is_empty() {
            let name = live.remove(rng.below(live.len() as u64) as usize);
            klp.set_enabled(&name, false).expect("disable");
            o.transitions += 1;
            if settle(&klp, &name, &mut rng, &mut o, false) {
                // Reversed back to enabled.
                live.push(name);
            }
        }
        live.retain(|n| klp.patch(n).is_some_and(|p| p.enabled));
        // Let the readers run through the new state before the next change.
        let seen = calls.load(Ordering::Relaxed);
        let t = Instant::now();
        while calls.load(Ordering::Relaxed) < seen + 128 && t.elapsed() < Duration::from_millis(50)
        {
            std::hint::spin_loop();
        }
        // The log is not read: keep it from growing.
        drop(cap.take());
        if last_report.elapsed() >= every {
            last_report = Instant::now();
            progress(&snapshot(&o));
        }
    }
    for name in klp.patches().into_iter().map(|p| p.name) {
        if klp.patch(&name).is_some_and(|p| p.enabled) {
            klp.set_enabled(&name, false).unwrap();
        }
        wait_done(&klp, &name);
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    klp.flavor().barrier();
    assert!(klp.patches().is_empty());
    assert_eq!(soak_f(1), (0, 1), "the original code runs again");
    snapshot(&o)
}

/// Let the transition of `name` finish, sometimes reversing or forcing it first.
/// Returns whether the patch ended up enabled after starting as a disable.
fn settle<F: Flavor + 'static>(
    klp: &Klp<F>,
    name: &str,
    rng: &mut Rng,
    o: &mut Outcome,
    enabling: bool,
) -> bool {
    let mut enabled = enabling;
    match rng.below(8) {
        0 if klp.patch(name).is_some_and(|p| p.transition) => {
            enabled = !enabled;
            if klp.set_enabled(name, enabled).is_ok() {
                o.reversals += 1;
                o.transitions += 1;
            } else {
                enabled = !enabled;
            }
        }
        1 if klp.patch(name).is_some_and(|p| p.transition) => {
            FORCE_EPOCH.fetch_add(1, Ordering::SeqCst);
            if klp.force(name, true).is_ok() {
                o.forces += 1;
            }
            wait_done(klp, name);
            FORCE_EPOCH.fetch_add(1, Ordering::SeqCst);
        }
        _ => {}
    }
    wait_done(klp, name);
    !enabling && enabled
}
