//! The park/claim handshake that lets another thread read a parked thread's activation
//! stack (the kernel's "task is not running, pin it and check its stack").
//!
//! ```text
//!   owner:  RUNNING --park (Release)--> PARKED --unpark (CAS, Acquire)--> RUNNING
//!   worker:           PARKED --claim (CAS, Acquire)--> CLAIMED --release (Release)--> PARKED
//! ```
//!
//! * The owner writes its stack only while RUNNING. Its Release park publishes the stack;
//!   a claimer's Acquire CAS sees every write before it.
//! * While CLAIMED the owner cannot unpark: its CAS expects PARKED and spins until the
//!   claimer's Release store gives the word back, so the owner's next writes happen after
//!   the claimer's reads (and after the switch the claimer made).
//!
//! Under `--cfg klp_loom` the atomics are loom's; `tests/loom_switch.rs` models the
//! handshake against a worker that checks and switches the thread.

#[cfg(not(klp_loom))]
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

#[cfg(klp_loom)]
use loom::sync::atomic::{AtomicBool, AtomicU32, Ordering};

const RUNNING: u32 = 0;
const PARKED: u32 = 1;
const CLAIMED: u32 = 2;

/// One thread's park word.
#[derive(Debug)]
pub struct ParkWord(AtomicU32);

impl Default for ParkWord {
    fn default() -> Self {
        Self::new()
    }
}

impl ParkWord {
    /// A running thread's word.
    #[inline]
    pub fn new() -> Self {
        ParkWord(AtomicU32::new(RUNNING))
    }

    /// Owner: about to block. Everything written before is visible to a claimer.
    #[inline]
    pub fn park(&self) {
        self.0.store(PARKED, Ordering::Release);
    }

    /// Owner: running again; waits while a claimer holds the thread.
    pub fn unpark(&self) {
        let mut spins = 0u32;
        loop {
            match self.0.compare_exchange_weak(
                PARKED,
                RUNNING,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) | Err(RUNNING) => return,
                Err(_) => {
                    spins = spins.saturating_add(1);
                    spin_wait(spins);
                }
            }
        }
    }

    /// Whether the owner is running.
    #[inline]
    pub fn is_running(&self) -> bool {
        self.0.load(Ordering::Relaxed) == RUNNING
    }

    /// Claimer: hold a parked thread; `false` if it is running (or held by another).
    #[inline]
    pub fn claim(&self) -> bool {
        self.0
            .compare_exchange(PARKED, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Claimer: give the thread back.
    #[inline]
    pub fn release(&self) {
        self.0.store(PARKED, Ordering::Release);
    }
}

#[cfg(not(klp_loom))]
fn spin_wait(spins: u32) {
    // A claimer holds the word for a stack check: microseconds.
    if spins < 100 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

#[cfg(klp_loom)]
fn spin_wait(_spins: u32) {
    loom::thread::yield_now();
}

/// Claiming a *running* thread that is outside every patchable function (depth 0), so
/// that a transition does not wait for threads that have left patchable code for good.
///
/// ```text
///   thread, outermost entry:  in_code = true; light barrier; if claim: wait until clear
///   thread, outermost return: in_code = false (Release)
///   worker:  claim = true; heavy barrier; if !in_code (Acquire): switch it; claim = false
/// ```
///
/// Store buffering between the two pairs: either the worker sees `in_code` (and leaves
/// the thread alone) or the entering thread sees `claim` (and waits until the worker's
/// switch is published by its Release clear). The entry pays a store, a compiler fence
/// and a load; the worker pays one heavy barrier for all the threads it claims at once.
#[derive(Debug, Default)]
pub struct RunClaim {
    in_code: AtomicBool,
    claim: AtomicBool,
}

impl RunClaim {
    /// A thread outside patchable code, unclaimed.
    #[inline]
    pub fn new() -> Self {
        RunClaim {
            in_code: AtomicBool::new(false),
            claim: AtomicBool::new(false),
        }
    }

    /// Thread: entering its outermost patchable function.
    #[inline(always)]
    pub fn enter_outermost(&self) {
        self.in_code.store(true, Ordering::Relaxed);
        light_barrier();
        if self.claim.load(Ordering::Acquire) {
            self.wait_unclaimed();
        }
    }

    /// Thread: [`enter_outermost`](Self::enter_outermost) without the wait: `false` when
    /// a claim is up (the caller then takes its slow path, which enters again and waits).
    #[inline(always)]
    pub fn try_enter_outermost(&self) -> bool {
        self.in_code.store(true, Ordering::Relaxed);
        light_barrier();
        !self.claim.load(Ordering::Acquire)
    }

    #[cold]
    fn wait_unclaimed(&self) {
        let mut spins = 0u32;
        // Acquire pairs with the worker's Release clear: its switch is visible after.
        while self.claim.load(Ordering::Acquire) {
            spins = spins.saturating_add(1);
            spin_wait(spins);
        }
    }

    /// Thread: back at depth 0.
    #[inline(always)]
    pub fn leave_outermost(&self) {
        self.in_code.store(false, Ordering::Release);
    }

    /// Worker: announce a claim (follow with one [`heavy_barrier`] for all claims).
    pub fn claim(&self) {
        self.claim.store(true, Ordering::SeqCst);
    }

    /// Worker, after the heavy barrier: whether the thread is outside patchable code (and
    /// may be switched until [`RunClaim::release`]).
    #[inline]
    pub fn outside(&self) -> bool {
        !self.in_code.load(Ordering::Acquire)
    }

    /// Worker: end the claim; what it wrote before is visible to the thread's next entry.
    #[inline]
    pub fn release(&self) {
        self.claim.store(false, Ordering::Release);
    }
}

#[cfg(not(klp_loom))]
#[inline(always)]
fn light_barrier() {
    klp_sync::light_barrier();
}

/// The worker's half: one for all the threads it claimed.
#[cfg(not(klp_loom))]
pub fn heavy_barrier() {
    klp_sync::heavy_barrier();
}

#[cfg(klp_loom)]
#[inline(always)]
fn light_barrier() {
    loom::sync::atomic::fence(Ordering::SeqCst);
}

/// The worker's half (a fence under loom, as for the flavors' models).
#[cfg(klp_loom)]
pub fn heavy_barrier() {
    loom::sync::atomic::fence(Ordering::SeqCst);
}
