//! `fork()`: the child is a copy of the calling thread; it inherits that thread's patch
//! states and pending flags (the kernel's `klp_copy_process`), and must be able to patch,
//! unpatch, synchronize and wait like the parent.
//!
//! Handlers installed with `pthread_atfork` when the first engine, log or shadow store
//! is created, after klp-sync's (so that ours run first in the parent, before its locks,
//! and after it in the child):
//!
//! * **prepare**: every lock of this crate, in the order its code nests them: the object
//!   loader, each engine's control lock (slot order), the shadow stores' stripes, each
//!   engine's view, the task list, the site registry, the object table, the logs' sinks.
//!   A control operation in progress on another thread finishes first (the fork waits for
//!   it); one the forking thread itself is in the middle of (a fork from a callback) keeps
//!   its locks, in the parent and in the child alike.
//! * **parent**: release them.
//! * **child**: release them; the other threads' task records go back; each engine
//!   recounts the threads its transition waits for (at most this one), forgets its worker
//!   thread (which does not exist here) and, when a transition is in progress, starts a
//!   new one, which completes it.

use std::any::Any;
use std::sync::{Mutex, Once};

use crate::registry::{self, EngineDyn};

/// Something held across the fork: dropping it releases it.
struct Held(#[allow(dead_code)] Box<dyn Any>);

// SAFETY: taken in `prepare` and dropped in `parent` or `child`, on the thread that forks.
unsafe impl Send for Held {}

static HELD: Mutex<Vec<Held>> = Mutex::new(Vec::new());

/// Keep `value` across the fork.
pub(crate) fn hold<T: 'static>(value: T) {
    HELD.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Held(Box::new(value)));
}

/// Install the handlers once (after klp-sync's).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // klp-sync installs its handlers when its barrier mode is decided.
        klp_sync::barrier_mode();
        // SAFETY: plain functions that never unwind (see `guarded`).
        let r = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        assert_eq!(r, 0, "pthread_atfork: {r}");
    });
}

fn guarded(f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        std::process::abort();
    }
}

fn release_all() {
    let mut held = std::mem::take(&mut *HELD.lock().unwrap_or_else(|e| e.into_inner()));
    while let Some(h) = held.pop() {
        drop(h);
    }
}

extern "C" fn prepare() {
    guarded(|| {
        if let Some(g) = crate::object::fork_lock() {
            hold(g);
        }
        let engines: Vec<&'static dyn EngineDyn> = registry::engines().collect();
        for e in &engines {
            e.fork_prepare_control();
        }
        crate::shadow::fork_prepare();
        for e in &engines {
            e.fork_prepare_view();
        }
        hold(crate::task::lock());
        hold(crate::site::registry());
        hold(crate::object::fork_lock_table());
        crate::log::fork_prepare();
    });
}

extern "C" fn parent() {
    guarded(release_all);
}

extern "C" fn child() {
    guarded(|| {
        release_all();
        {
            let tasks = crate::task::lock();
            tasks.fork_child_release_others();
        }
        for e in registry::engines() {
            e.fork_child();
        }
    });
}

impl<F: klp_sync::Flavor + 'static> crate::core::Core<F> {
    /// `prepare`: the control lock, unless the forking thread holds it.
    pub(crate) fn fork_hold_control(&'static self) {
        if let Some(g) = self.fork_lock() {
            hold(g);
        }
    }

    /// `prepare`: the view.
    pub(crate) fn fork_hold_view(&'static self) {
        hold(self.view.write().unwrap_or_else(|e| e.into_inner()));
    }

    /// `child`: the worker does not exist here; the transition waits for this thread at
    /// most.
    pub(crate) fn fork_reset(&'static self) {
        use std::sync::atomic::Ordering;
        self.worker.fork_child();
        let n = {
            let tasks = crate::task::lock();
            tasks
                .iter()
                .filter(|t| t.pending.load(Ordering::Relaxed) & self.bit != 0)
                .count()
        };
        self.pending.store(n, Ordering::SeqCst);
        if self.target.load(Ordering::SeqCst) != crate::task::KLP_TRANSITION_IDLE {
            self.ensure_worker();
            self.worker.wake();
        }
    }
}
