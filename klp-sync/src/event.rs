//! An event count on a futex: waiters sleep until the count moves, notifiers move it.
//!
//! Every operation is a handful of atomics and at most one `futex` system call, with no
//! lock and no allocation, so an [`Event`] may be notified from a signal handler and
//! waited on by a thread whose signal handlers notify it. The library's worker threads
//! sleep on one; threads waiting for a transition to complete sleep on another.
//!
//! ```
//! use klp_sync::Event;
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use std::time::Duration;
//!
//! static READY: AtomicBool = AtomicBool::new(false);
//! static EV: Event = Event::new();
//!
//! let t = std::thread::spawn(|| {
//!     READY.store(true, Ordering::SeqCst);
//!     EV.notify();
//! });
//! loop {
//!     let token = EV.token();
//!     if READY.load(Ordering::SeqCst) {
//!         break;
//!     }
//!     EV.wait(token, Some(Duration::from_secs(10)));
//! }
//! t.join().unwrap();
//! ```

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// An event count (see the module documentation).
#[derive(Debug, Default)]
pub struct Event {
    /// Moves at every notification.
    seq: AtomicU32,
    /// Threads inside `wait`: a notifier makes the system call only when there are any.
    waiters: AtomicU32,
}

impl Event {
    /// A new event.
    pub const fn new() -> Self {
        Event {
            seq: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
        }
    }

    /// The count now. Take it *before* testing the condition waited for, then
    /// [`Event::wait`] with it: a notification after the token is never missed.
    #[inline]
    pub fn token(&self) -> u32 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Wake every thread waiting with an older token.
    pub fn notify(&self) {
        // SeqCst on both sides (store buffering): either the waiter sees the count move
        // before it sleeps, or we see it waiting and wake it. The kernel re-checks the
        // count atomically with going to sleep.
        self.seq.fetch_add(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) != 0 {
            futex_wake_all(&self.seq);
        }
    }

    /// Sleep until the count differs from `token` (a notification), `timeout` passes, or
    /// a spurious wake-up (a signal, say): callers re-test their condition in a loop.
    pub fn wait(&self, token: u32, timeout: Option<Duration>) {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        if self.seq.load(Ordering::SeqCst) == token {
            futex_wait(&self.seq, token, timeout);
        }
        self.waiters.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(target_os = "linux")]
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let tsp = ts.as_ref().map_or(std::ptr::null(), std::ptr::from_ref);
    // SAFETY: FUTEX_WAIT reads the aligned 32-bit word and sleeps; `tsp` is NULL or a
    // valid relative timeout. Errors (EAGAIN: the word moved; EINTR; ETIMEDOUT) all mean
    // "re-test".
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            tsp,
        );
    }
}

#[cfg(target_os = "linux")]
fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the word's address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    // No futex: poll (correct, slower).
    let end = timeout.map(|t| std::time::Instant::now() + t);
    while word.load(Ordering::SeqCst) == expected {
        if end.is_some_and(|e| std::time::Instant::now() >= e) {
            return;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

#[cfg(not(target_os = "linux"))]
fn futex_wake_all(_word: &AtomicU32) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::Instant;

    #[test]
    fn a_notification_wakes_a_waiter() {
        let ev = Arc::new(Event::new());
        let flag = Arc::new(AtomicBool::new(false));
        let (e, f) = (Arc::clone(&ev), Arc::clone(&flag));
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            f.store(true, Ordering::SeqCst);
            e.notify();
        });
        let start = Instant::now();
        loop {
            let token = ev.token();
            if flag.load(Ordering::SeqCst) {
                break;
            }
            ev.wait(token, Some(Duration::from_secs(20)));
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        t.join().unwrap();
    }

    #[test]
    fn a_wait_times_out() {
        let ev = Event::new();
        let start = Instant::now();
        ev.wait(ev.token(), Some(Duration::from_millis(30)));
        assert!(start.elapsed() >= Duration::from_millis(25));
    }

    #[test]
    fn a_stale_token_returns_at_once() {
        let ev = Event::new();
        let token = ev.token();
        ev.notify();
        let start = Instant::now();
        ev.wait(token, Some(Duration::from_secs(20)));
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}
