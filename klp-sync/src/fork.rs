//! `fork()`: the child has one thread, a copy of the caller; the flavors must work there.
//!
//! Handlers installed with `pthread_atfork` when the first flavor instance is created:
//!
//! * **prepare** (in the parent, before the fork): take every lock of this crate, in the
//!   order its code takes them (the preempt grace-period lock, the list of rcu
//!   instances, then each instance's callback queue and grace-period state), so that no
//!   other thread is half way through changing what they protect;
//! * **parent**: release them;
//! * **child**: the other threads are gone, and so are their read sections, the rcu
//!   callback workers and any grace period one of them was running. Their reader slots
//!   are given back, a grace period in progress is complete (every section it waited for
//!   belonged to a thread that no longer exists), a batch of callbacks taken by a worker
//!   that no longer exists is counted as run (its callbacks are lost: leaked, never run),
//!   and a worker is started again for the callbacks still queued; then the locks are
//!   released.
//!
//! A program may fork from any thread, also while other threads are inside read sections
//! or grace periods. It must not fork from inside a read section of its own (a signal
//! handler interrupting one): the child would then be the only thread a grace period
//! could wait for, and nothing would end its section.

use std::any::Any;
use std::sync::{Mutex, Once};

/// Something held across the fork: dropping it releases it.
struct Held(#[allow(dead_code)] Box<dyn Any>);

// SAFETY: the guards are taken in `prepare` and dropped in `parent` or `child`, which run on
// the thread that called fork (in the child: its copy); they never cross to another thread.
unsafe impl Send for Held {}

/// What `prepare` took, in order; released in reverse order.
static HELD: Mutex<Vec<Held>> = Mutex::new(Vec::new());

/// Install the handlers once per process.
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: the three handlers are plain functions that never unwind (they abort on
        // a panic, see `guarded`).
        let r = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        assert_eq!(r, 0, "pthread_atfork: {r}");
    });
}

/// Run `f`, aborting on a panic (it must not unwind into the C library's fork).
fn guarded(f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        std::process::abort();
    }
}

/// Keep `value` until `parent` or `child` releases everything.
pub(crate) fn hold<T: 'static>(value: T) {
    HELD.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Held(Box::new(value)));
}

fn release_all() {
    let mut held = std::mem::take(&mut *HELD.lock().unwrap_or_else(|e| e.into_inner()));
    while let Some(h) = held.pop() {
        drop(h);
    }
}

extern "C" fn prepare() {
    guarded(|| {
        crate::preempt::fork_prepare();
        crate::rcu::fork_prepare();
    });
}

extern "C" fn parent() {
    guarded(release_all);
}

extern "C" fn child() {
    guarded(|| {
        crate::local::fork_child();
        crate::rcu::fork_child();
        release_all();
        crate::rcu::fork_child_restart();
    });
}
