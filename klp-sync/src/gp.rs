//! Shared grace periods: the rcu flavor's answer to many concurrent `synchronize` callers.
//!
//! A sequence number counts grace periods twice: it is odd while one is running and even
//! between them (the kernel's `rcu_seq`). A caller computes the value at which a grace
//! period that started *after* its call will have ended:
//!
//! * idle (`seq` even): the next one, ending at `seq + 2`;
//! * running (`seq` odd): the running one began before the call and does not count, so the
//!   one after it, ending at `seq + 3` rounded down to even.
//!
//! If no grace period is running, the caller runs one itself (it is the leader) for
//! everybody waiting; otherwise it sleeps until the sequence reaches its target. Every
//! caller that arrives while a grace period runs is served by the next single one, so K
//! simultaneous callers cost about two grace periods, not K.

use crate::sync::{Condvar, Mutex, MutexGuard};

/// Grace-period bookkeeping shared by every caller of one rcu instance.
pub(crate) struct Batcher {
    seq: Mutex<u64>,
    done: Condvar,
}

/// The smallest sequence value at which a grace period that begins after now has ended.
pub(crate) fn seq_snap(seq: u64) -> u64 {
    (seq + 3) & !1
}

impl Batcher {
    pub(crate) fn new() -> Self {
        Batcher {
            seq: Mutex::new(0),
            done: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, u64> {
        // The lock guards a counter only; a panic elsewhere cannot leave it inconsistent.
        self.seq.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The target a caller arriving now must wait for.
    pub(crate) fn snap(&self) -> u64 {
        seq_snap(*self.lock())
    }

    /// Whether the grace period with target `cookie` has completed.
    #[cfg_attr(klp_loom, allow(dead_code))]
    pub(crate) fn done(&self, cookie: u64) -> bool {
        *self.lock() >= cookie
    }

    /// Completed grace periods so far.
    pub(crate) fn completed(&self) -> u64 {
        *self.lock() / 2
    }

    /// Wait until a grace period that began after this call has ended, running grace
    /// periods with `run` whenever none is running.
    pub(crate) fn synchronize(&self, run: impl Fn()) {
        let target = self.snap();
        self.wait_until(target, run);
    }

    /// Wait until the sequence reaches `target`, leading grace periods when none runs.
    pub(crate) fn wait_until(&self, target: u64, run: impl Fn()) {
        let mut seq = self.lock();
        while *seq < target {
            if *seq & 1 == 0 {
                // Lead: mark a grace period running, run it unlocked, then mark it done
                // (also on unwind, so followers are never stranded).
                *seq += 1;
                drop(seq);
                let finish = Finish(self);
                run();
                drop(finish);
                seq = self.lock();
            } else {
                seq = self.done.wait(seq).unwrap_or_else(|e| e.into_inner());
            }
        }
    }
}

/// Ends the running grace period and wakes the callers waiting for it.
struct Finish<'a>(&'a Batcher);

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        *self.0.lock() += 1;
        self.0.done.notify_all();
    }
}
