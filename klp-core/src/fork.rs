//! `fork()`: the child is a copy of the calling thread; it inherits that thread's patch
//! states and pending flags (the kernel's `klp_copy_process`), and must be able to patch,
//! unpatch, synchronize and wait like the parent.
//!
//! The engine's hooks in klp-sync's one `pthread_atfork` triple (`klp_sync::fork`, level
//! 1: after the C layer's, before klp-sync's own):
//!
//! * **prepare**: every lock of this crate, in the order its code nests them: the object
//!   loader, each engine's control lock (slot order), the shadow stores' stripes, each
//!   engine's view, the task list, the site registry, the object table, the logs' sinks.
//!   A control operation in progress on another thread finishes first (the fork waits for
//!   it); one the forking thread itself is in the middle of (a fork from a callback) keeps
//!   its locks, in the parent and in the child alike. (klp-sync has waited before for every
//!   lazy initialization in progress.)
//! * **parent**: nothing (klp-sync releases every layer's locks).
//! * **child** (the locks released): the other threads' task records go back; each engine
//!   recounts the threads its transition waits for (at most this one), forgets its worker
//!   thread (which does not exist here) and, when a transition is in progress, starts a
//!   new one, which completes it.

use crate::registry::{self, EngineDyn};

static HOOKS: klp_sync::fork::Hooks = klp_sync::fork::Hooks {
    prepare,
    parent: || {},
    child,
};

/// Add the engine's hooks (cheap; every path that creates the crate's state calls it).
pub fn install() {
    klp_sync::fork::add_hooks(1, &HOOKS);
}

/// Keep `value` (a lock guard) across the fork.
pub(crate) fn hold<T: 'static>(value: T) {
    klp_sync::fork::hold(value);
}

fn prepare() {
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
}

fn child() {
    {
        let tasks = crate::task::lock();
        tasks.fork_child_release_others();
    }
    for e in registry::engines() {
        e.fork_child();
    }
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
