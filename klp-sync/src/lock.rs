//! The "lock" reference flavor: a reader-writer lock, slow and obviously right.
//!
//! A read section holds the lock shared; `synchronize` takes it exclusively for an instant,
//! which it can only do once every earlier reader has left. New outermost readers queue
//! behind a waiting writer (so writers are not starved); nested readers on a thread that
//! already holds the lock pass, so a nested read never deadlocks against a waiting writer.
//! Every thread is watched. Used for differential tests and as the benchmark baseline.

use crate::Flavor;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// (instance id, depth) for every lock instance this thread holds.
    static HELD: RefCell<Vec<(u64, u32)>> = const { RefCell::new(Vec::new()) };
}

/// The lock flavor: a reader-writer lock, every thread watched (see the [crate]
/// documentation). Slow and obviously right: the reference the other flavors are compared
/// with.
///
/// # Example
///
/// ```
/// use std::sync::{Arc, mpsc};
/// use std::time::{Duration, Instant};
///
/// use klp_sync::{Flavor, Lock};
///
/// let lock = Arc::new(Lock::new());
/// let (inside_tx, inside) = mpsc::channel();
/// let reader = {
///     let lock = Arc::clone(&lock);
///     std::thread::spawn(move || {
///         let _outer = lock.read_lock();
///         let _inner = lock.read_lock(); // nested: passes even if a writer waits
///         inside_tx.send(Instant::now()).unwrap();
///         std::thread::sleep(Duration::from_millis(20));
///     })
/// };
/// let entered = inside.recv().unwrap();
/// lock.synchronize(); // takes the lock exclusively once the reader has left
/// assert!(entered.elapsed() >= Duration::from_millis(20));
/// reader.join().unwrap();
///
/// assert!(lock.is_watching());
/// let (done_tx, done) = mpsc::channel();
/// lock.defer(Box::new(move || done_tx.send(1).unwrap())); // after a grace period, in place
/// lock.barrier();
/// assert_eq!(done.try_recv(), Ok(1));
/// ```
pub struct Lock {
    id: u64,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    readers: usize,
    writer: bool,
}

impl Lock {
    /// A new instance.
    pub fn new() -> Self {
        Lock {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, g: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(g).unwrap_or_else(|e| e.into_inner())
    }

    /// This thread's depth in this instance, after adding `delta`.
    fn depth(&self, delta: i32) -> u32 {
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            let pos = match h.iter().position(|&(id, _)| id == self.id) {
                Some(p) => p,
                None => {
                    h.push((self.id, 0));
                    h.len() - 1
                }
            };
            let d = h[pos]
                .1
                .checked_add_signed(delta)
                .expect("read_unlock without read_lock");
            if d == 0 {
                h.swap_remove(pos);
            } else {
                h[pos].1 = d;
            }
            d
        })
    }

    fn held(&self) -> bool {
        HELD.with(|h| h.borrow().iter().any(|&(id, _)| id == self.id))
    }
}

impl Default for Lock {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

// SAFETY: a section holds `readers > 0` under the mutex from its outermost lock to its
// outermost unlock (clause 3); `synchronize` waits, under the same mutex, until `readers`
// is 0 and so every earlier section has ended, and the mutex orders their loads before its
// return (clauses 1, 2); all threads are watched (5); `defer` synchronizes then runs, so
// `barrier` has nothing left to wait for (4); thread exit holds no section (6).
unsafe impl Flavor for Lock {
    type Token = ();

    fn name(&self) -> &'static str {
        "lock"
    }

    unsafe fn raw_read_lock(&self) {
        if self.depth(1) > 1 {
            return;
        }
        let mut s = self.state();
        while s.writer {
            s = self.wait(s);
        }
        s.readers += 1;
    }

    unsafe fn raw_read_unlock(&self, _: ()) {
        if self.depth(-1) > 0 {
            return;
        }
        let mut s = self.state();
        s.readers -= 1;
        if s.readers == 0 {
            self.changed.notify_all();
        }
    }

    fn synchronize(&self) {
        assert!(
            !self.held(),
            "klp-sync: synchronize called inside a read section: it would wait for itself"
        );
        let mut s = self.state();
        while s.writer {
            s = self.wait(s);
        }
        s.writer = true;
        while s.readers > 0 {
            s = self.wait(s);
        }
        s.writer = false;
        self.changed.notify_all();
    }

    #[inline]
    fn is_watching(&self) -> bool {
        true
    }

    fn defer(&self, f: Box<dyn FnOnce() + Send + 'static>) {
        self.synchronize();
        f();
    }

    fn barrier(&self) {}
}
