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
use std::sync::atomic::{AtomicU32, Ordering};

#[cfg(klp_loom)]
use loom::sync::atomic::{AtomicU32, Ordering};

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
    pub fn new() -> Self {
        ParkWord(AtomicU32::new(RUNNING))
    }

    /// Owner: about to block. Everything written before is visible to a claimer.
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
    pub fn is_running(&self) -> bool {
        self.0.load(Ordering::Relaxed) == RUNNING
    }

    /// Claimer: hold a parked thread; `false` if it is running (or held by another).
    pub fn claim(&self) -> bool {
        self.0
            .compare_exchange(PARKED, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Claimer: give the thread back.
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
