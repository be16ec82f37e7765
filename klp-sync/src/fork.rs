//! `fork()`: the child has one thread, a copy of the caller; the library must work there.
//!
//! One `pthread_atfork` triple serves every layer of libklp. Each layer adds its hooks
//! ([`add_hooks`]: this crate at level 0, the engine at 1, the C layer at 2); they run
//! outermost layer first before the fork, and innermost first after it.
//!
//! * **prepare** (in the parent, before the fork): each layer takes its locks, in the order
//!   its code takes them; this crate's are the preempt grace-period locks, the list of rcu
//!   instances, then each instance's callback queue and grace-period state;
//! * **parent**: release them;
//! * **child**: the other threads are gone, and so are their read sections, the rcu
//!   callback workers and any grace period one of them was running. Their reader slots
//!   are given back, a grace period in progress is complete (every section it waited for
//!   belonged to a thread that no longer exists), a batch of callbacks taken by a worker
//!   that no longer exists is counted as run (its callbacks are lost: leaked, never run),
//!   and a worker is started again for the callbacks still queued; then the locks are
//!   released.
//!
//! The library's lazily created state is never half made in a way that blocks: it is a
//! [`RaceCell`] (a value published by one compare-and-swap; a thread that loses the race
//! drops its own), never a `OnceLock`, whose "being filled" state a fork would leave for
//! ever in the child. Every path that takes one of a layer's locks adds the layer's hooks
//! first; a layer's first hooks, added while a fork is being prepared, wait until that
//! fork is over (it may have looked for them already).
//!
//! A program may fork from any thread, also while other threads are inside read sections
//! or grace periods. It must not fork from inside a read section of its own (a signal
//! handler interrupting one): the child would then be the only thread a grace period
//! could wait for, and nothing would end its section.

use std::any::Any;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU8, Ordering};

/// One layer's fork handlers.
#[derive(Debug)]
pub struct Hooks {
    /// Before the fork: take the layer's locks (and keep them, see [`hold`]).
    pub prepare: fn(),
    /// After it, in the parent.
    pub parent: fn(),
    /// After it, in the child.
    pub child: fn(),
}

/// The layers' hooks, by level (0: this crate).
static LAYERS: [AtomicPtr<Hooks>; 4] = [const { AtomicPtr::new(std::ptr::null_mut()) }; 4];

/// Add (or replace) the hooks of layer `level` (1: the engine, 2: the C layer). Lock-free
/// and cheap: call it at the start of every path that creates the layer's state.
pub fn add_hooks(level: usize, hooks: &'static Hooks) {
    ensure_registered();
    let prev = LAYERS[level].swap(std::ptr::from_ref(hooks).cast_mut(), Ordering::SeqCst);
    if prev.is_null() {
        // The layer's first hooks: a fork being prepared may have looked for them already,
        // and not taken the locks the caller is about to take. Let it finish first. (SeqCst
        // with `prepare`: either it sees the hooks, or we see it forking.)
        while FORKING.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
    }
}

/// A fork is being prepared (between its prepare and its parent or child hooks).
static FORKING: AtomicBool = AtomicBool::new(false);

static OWN: Hooks = Hooks {
    prepare: prepare_own,
    parent: release_all,
    child: child_own,
};

/// The registration of the one triple: 0 none, 1 under way, 2 done.
static REGISTERED: AtomicU8 = AtomicU8::new(0);
/// The process that started the registration (a fork in the middle of it leaves the child
/// to start again).
static REGISTERING: AtomicI32 = AtomicI32::new(0);

/// Register the triple once per process, without a lock: a fork can then never find the
/// registration half done in a way the child cannot get out of.
pub(crate) fn ensure_registered() {
    loop {
        match REGISTERED.load(Ordering::Acquire) {
            2 => return,
            0 => {
                if REGISTERED
                    .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    // SAFETY: no arguments.
                    REGISTERING.store(unsafe { libc::getpid() }, Ordering::Release);
                    LAYERS[0].store(std::ptr::from_ref(&OWN).cast_mut(), Ordering::Release);
                    // SAFETY: the handlers are plain functions that never unwind (they abort
                    // on a panic, see `guarded`).
                    let r =
                        unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
                    assert_eq!(r, 0, "pthread_atfork: {r}");
                    REGISTERED.store(2, Ordering::Release);
                    return;
                }
            }
            _ => {
                // SAFETY: no arguments.
                if REGISTERING.load(Ordering::Acquire) != unsafe { libc::getpid() } {
                    // A child of a fork made while another thread registered: that thread
                    // is not here; start again.
                    let _ = REGISTERED.compare_exchange(1, 0, Ordering::AcqRel, Ordering::Acquire);
                } else {
                    std::hint::spin_loop();
                    std::thread::yield_now();
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Holding locks across the fork.

/// Something held across the fork: dropping it releases it.
struct Held(#[allow(dead_code)] Box<dyn Any>);

// SAFETY: the guards are taken in `prepare` and dropped in `parent` or `child`, which run on
// the thread that called fork (in the child: its copy); they never cross to another thread.
unsafe impl Send for Held {}

/// What the prepare hooks took, in order; released in reverse order.
static HELD: Mutex<Vec<Held>> = Mutex::new(Vec::new());

/// Keep `value` (a lock guard) until the fork is over (released in reverse order of
/// holding, in the parent and in the child).
pub fn hold<T: 'static>(value: T) {
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

/// Run `f`, aborting on a panic (it must not unwind into the C library's fork).
fn guarded(f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        std::process::abort();
    }
}

fn layers() -> impl DoubleEndedIterator<Item = &'static Hooks> {
    LAYERS.iter().filter_map(|l| {
        // SAFETY: only `&'static Hooks` are stored.
        unsafe { l.load(Ordering::Acquire).as_ref() }
    })
}

extern "C" fn prepare() {
    guarded(|| {
        FORKING.store(true, Ordering::SeqCst);
        // Outermost layer first: it takes the locks its code takes before the inner ones.
        for l in layers().rev() {
            (l.prepare)();
        }
    });
}

extern "C" fn parent() {
    guarded(|| {
        // Every layer's held locks go in one list, released innermost first.
        release_all();
        for l in layers() {
            if !std::ptr::eq(l, &OWN) {
                (l.parent)();
            }
        }
        FORKING.store(false, Ordering::SeqCst);
    });
}

extern "C" fn child() {
    guarded(|| {
        FORKING.store(false, Ordering::SeqCst);
        for l in layers() {
            (l.child)();
        }
    });
}

fn prepare_own() {
    crate::preempt::fork_prepare();
    crate::rcu::fork_prepare();
}

fn child_own() {
    crate::local::fork_child();
    crate::rcu::fork_child();
    // Every layer's locks, all held in one list, go now (innermost first); the outer
    // layers' child hooks run after, without them.
    release_all();
    crate::rcu::fork_child_restart();
}

// ---------------------------------------------------------------------------------------
// Lazily created state.

/// A value created on first use, published by one compare-and-swap: threads that race
/// each create one, the first published wins, the others drop theirs. Nothing ever
/// waits, so a fork cannot leave a child waiting for a creation another thread had
/// begun (as a `OnceLock` being filled would). For values whose creation may be repeated
/// (a duplicate is dropped, or merely unused).
#[derive(Debug)]
pub struct RaceCell<T> {
    value: AtomicPtr<T>,
}

impl<T> Default for RaceCell<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> RaceCell<T> {
    /// An empty cell.
    pub const fn new() -> Self {
        RaceCell {
            value: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// The value, if it was created.
    #[inline]
    pub fn get(&self) -> Option<&T> {
        // SAFETY: a non-null pointer was published by `get_or_create` from a leaked Box,
        // never freed while the cell lives; Acquire pairs with its Release.
        unsafe { self.value.load(Ordering::Acquire).as_ref() }
    }

    /// The value, created by `create` if there is none yet (maybe by several threads at
    /// once: one wins, the others' values are dropped).
    pub fn get_or_create(&self, create: impl FnOnce() -> T) -> &T {
        if let Some(v) = self.get() {
            return v;
        }
        let mine = Box::into_raw(Box::new(create()));
        match self.value.compare_exchange(
            std::ptr::null_mut(),
            mine,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            // SAFETY: just published; never freed while the cell lives.
            Ok(_) => unsafe { &*mine },
            Err(theirs) => {
                // SAFETY: ours, never published.
                drop(unsafe { Box::from_raw(mine) });
                // SAFETY: published by the winner (see `get`).
                unsafe { &*theirs }
            }
        }
    }
}

impl<T> Drop for RaceCell<T> {
    fn drop(&mut self) {
        let p = *self.value.get_mut();
        if !p.is_null() {
            // SAFETY: published from a Box and owned by the cell.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

// SAFETY: the cell hands out `&T` to any thread and drops the value on the thread that
// drops it: as `OnceLock<T>`, it is Sync when T is Send and Sync.
unsafe impl<T: Send + Sync> Sync for RaceCell<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for RaceCell<T> {}
