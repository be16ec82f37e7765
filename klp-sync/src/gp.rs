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
//!
//! Wake-ups are what such waits cost on a small machine, so each caller is woken once:
//! callers sleep on one of two condition variables, chosen by the parity of their target's
//! grace-period number, and the end of a grace period wakes only the callers it serves.
//! A leader whose own grace period is done runs the next one too when callers are waiting
//! for it (at most once, so that no caller leads forever); otherwise it wakes one of them
//! to lead.

use crate::sync::{Condvar, Mutex, MutexGuard};

/// Grace-period bookkeeping shared by every caller of one rcu instance.
pub(crate) struct Batcher {
    state: Mutex<State>,
    /// Callers whose target grace period has an even / odd number (`target / 2`).
    served: [Condvar; 2],
}

struct State {
    /// Twice the completed grace periods, plus one while a grace period runs.
    seq: u64,
    /// The highest target of a caller that went to sleep. Callers below `seq` are served,
    /// so `want > seq` means somebody still needs a grace period that has not begun.
    /// (Counting sleepers instead would also count callers that were woken but have not
    /// yet run, and make a leader run grace periods for nobody.)
    want: u64,
}

/// The smallest sequence value at which a grace period that begins after now has ended.
pub(crate) fn seq_snap(seq: u64) -> u64 {
    (seq + 3) & !1
}

/// Which of the two condition variables serves callers with `target`.
fn lane(target: u64) -> usize {
    ((target / 2) & 1) as usize
}

impl Batcher {
    pub(crate) fn new() -> Self {
        Batcher {
            state: Mutex::new(State { seq: 0, want: 0 }),
            served: [Condvar::new(), Condvar::new()],
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The lock guards plain counters; a panic elsewhere cannot leave them torn.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The target a caller arriving now must wait for.
    pub(crate) fn snap(&self) -> u64 {
        seq_snap(self.lock().seq)
    }

    /// Whether the grace period with target `cookie` has completed.
    #[cfg_attr(klp_loom, allow(dead_code))]
    pub(crate) fn done(&self, cookie: u64) -> bool {
        self.lock().seq >= cookie
    }

    /// Completed grace periods so far.
    pub(crate) fn completed(&self) -> u64 {
        self.lock().seq / 2
    }

    /// Wait until a grace period that began after this call has ended, running grace
    /// periods with `run` whenever none is running.
    pub(crate) fn synchronize(&self, run: impl Fn()) {
        let target = self.snap();
        self.wait_until(target, run);
    }

    /// Wait until the sequence reaches `target`, leading grace periods when none runs.
    pub(crate) fn wait_until(&self, target: u64, run: impl Fn()) {
        let mut st = self.lock();
        while st.seq < target {
            if st.seq & 1 == 1 {
                st.want = st.want.max(target);
                st = self.served[lane(target)]
                    .wait(st)
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Nobody runs one: lead.
            // Run it, and the next one too if callers already wait for it.
            let mut chained = false;
            loop {
                st.seq += 1;
                drop(st);
                // Marks the grace period done and wakes its callers, also on unwind.
                let finish = Finish(self);
                run();
                drop(finish);
                st = self.lock();
                if st.seq & 1 == 1 || st.want <= st.seq {
                    break;
                }
                if st.seq >= target && chained {
                    // Hand over: one of them leads the next grace period.
                    self.served[lane(st.seq + 2)].notify_one();
                    break;
                }
                chained = st.seq >= target;
            }
        }
    }
}

/// The grace-period state held across `fork` (see `crate::fork`).
#[cfg(not(klp_loom))]
pub(crate) struct ForkHold<'a>(MutexGuard<'a, State>);

#[cfg(not(klp_loom))]
impl Batcher {
    /// Hold the state across a fork.
    pub(crate) fn fork_hold(&self) -> ForkHold<'_> {
        ForkHold(self.lock())
    }
}

#[cfg(not(klp_loom))]
impl ForkHold<'_> {
    /// In the child: a grace period that a thread of the parent was running is complete
    /// (every section it could wait for belonged to a thread that is gone), and nobody
    /// waits for one.
    pub(crate) fn reset_in_child(&mut self) {
        if self.0.seq & 1 == 1 {
            self.0.seq += 1;
        }
        self.0.want = self.0.seq;
    }
}

/// Ends the running grace period and wakes the callers it serves.
struct Finish<'a>(&'a Batcher);

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.seq += 1;
        self.0.served[lane(st.seq)].notify_all();
        if std::thread::panicking() {
            // The leader will not go on leading: let a waiter take over.
            self.0.served[lane(st.seq + 2)].notify_all();
        }
    }
}

#[cfg(all(test, not(klp_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Eight callers, each making 200 calls, over a grace period long enough that they
    /// overlap: sharing must serve them with far fewer grace periods than calls.
    #[test]
    fn concurrent_callers_share_grace_periods() {
        let b = Arc::new(Batcher::new());
        let runs = Arc::new(AtomicU64::new(0));
        let (threads, calls) = (8u64, 200u64);
        let ts: Vec<_> = (0..threads)
            .map(|_| {
                let (b, runs) = (Arc::clone(&b), Arc::clone(&runs));
                std::thread::spawn(move || {
                    for _ in 0..calls {
                        b.synchronize(|| {
                            runs.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(std::time::Duration::from_micros(20));
                        });
                    }
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap();
        }
        let runs = runs.load(Ordering::Relaxed);
        assert_eq!(runs, b.completed());
        assert!(
            runs <= threads * calls / 2,
            "{runs} grace periods for {} calls",
            threads * calls
        );
    }
}
