//! The "preempt" flavor: the scheme the kernel adopted in 2017 for the livepatch handler.
//!
//! Kernel: `preempt_disable_notrace()` on the read side and `schedule_on_each_cpu()` as
//! the grace period, which protects every task, including those where RCU is not watching,
//! and cannot batch. Here: every thread is protected from its first read section on,
//! parked or not; a grace period is one process-wide barrier followed by a scan of every
//! thread's word; callers are serialized by a mutex and each pays for its own.

use crate::Flavor;
use crate::local;
use crate::os::{self, ProcessBarrier};
use crate::reader::{self, SlotToken};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// The preempt flavor: every thread is watched, from its first read section on, parked or
/// not (see the [crate] documentation).
///
/// A grace period is one process-wide barrier plus a scan of every thread's word;
/// concurrent callers take turns, and [`Flavor::defer`] waits for a grace period in place
/// before it runs the closure.
///
/// # Example
///
/// A grace period waits for a read section that another thread is in:
///
/// ```
/// use std::sync::{Arc, mpsc};
/// use std::time::{Duration, Instant};
///
/// use klp_sync::{Flavor, Preempt};
///
/// let preempt = Arc::new(Preempt::new());
/// let (inside_tx, inside) = mpsc::channel();
/// let reader = {
///     let preempt = Arc::clone(&preempt);
///     std::thread::spawn(move || {
///         assert!(preempt.is_watching()); // no registration needed
///         let _guard = preempt.read_lock(); // the section ends when the guard is dropped
///         inside_tx.send(Instant::now()).unwrap();
///         std::thread::sleep(Duration::from_millis(20));
///     })
/// };
/// let entered = inside.recv().unwrap();
/// preempt.synchronize(); // returns only once the reader's section has ended
/// assert!(entered.elapsed() >= Duration::from_millis(20));
/// reader.join().unwrap();
///
/// // Read sections nest; the section ends with the outermost guard.
/// {
///     let _outer = preempt.read_lock();
///     let _inner = preempt.read_lock();
///     assert!(klp_sync::in_read_section());
/// }
/// assert!(!klp_sync::in_read_section());
///
/// // `defer` runs a closure after a grace period; `barrier` waits for every one deferred.
/// let (done_tx, done) = mpsc::channel();
/// preempt.defer(Box::new(move || done_tx.send("reclaimed").unwrap()));
/// preempt.barrier();
/// assert_eq!(done.try_recv(), Ok("reclaimed"));
/// ```
pub struct Preempt {
    /// Serializes grace periods: the kernel's `schedule_on_each_cpu` callers do not share.
    serial: Arc<Mutex<()>>,
}

/// Every instance's lock, for the fork handlers.
static INSTANCES: Mutex<Vec<Weak<Mutex<()>>>> = Mutex::new(Vec::new());

impl Preempt {
    /// A new instance. The first instance of the process decides the barrier mode.
    pub fn new() -> Self {
        os::init();
        let serial = Arc::new(Mutex::new(()));
        let mut list = INSTANCES.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&serial));
        Preempt { serial }
    }
}

/// An instance's lock held across a fork; the guard goes before the lock.
struct ForkHeld {
    _guard: MutexGuard<'static, ()>,
    _lock: Arc<Mutex<()>>,
}

/// `fork` (see `crate::fork`): no grace period is half done in the child.
pub(crate) fn fork_prepare() {
    let locks: Vec<Arc<Mutex<()>>> = INSTANCES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for lock in locks {
        let g = lock.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the guard borrows from `lock`, which `ForkHeld` keeps alive and drops
        // after it (field order); the lifetime is only widened to be stored.
        let g: MutexGuard<'static, ()> = unsafe { std::mem::transmute(g) };
        crate::fork::hold(ForkHeld {
            _guard: g,
            _lock: lock,
        });
    }
}

impl Default for Preempt {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Preempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preempt").finish_non_exhaustive()
    }
}

impl Preempt {
    fn grace_period(&self, spin_only: bool) {
        local::assert_outside("synchronize");
        let _gp = local::InGracePeriod::enter();
        let _serial = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        local::REGISTRY.grace_period(&ProcessBarrier, |_| true, spin_only);
    }
}

// SAFETY: the read side is `reader::enter/exit` on the thread's own slot (clause 3: the
// word counts depth). Every thread gets a slot at its first section and every in-use slot
// is scanned (clauses 1, 2, 5: always watching); the scan is preceded by the heavy barrier
// and waits with Acquire loads for Release exits (see `docs`). `defer` runs the closure
// after a full grace period before returning, so `barrier` has nothing to wait for
// (clause 4). Exited threads release their slot, and released slots are skipped (6).
unsafe impl Flavor for Preempt {
    type Token = SlotToken;

    fn name(&self) -> &'static str {
        "preempt"
    }

    #[inline(always)]
    unsafe fn raw_read_lock(&self) -> SlotToken {
        let slot = local::current();
        reader::enter(slot);
        SlotToken(slot)
    }

    #[inline(always)]
    unsafe fn raw_read_unlock(&self, token: SlotToken) {
        reader::exit(token.0);
    }

    fn synchronize(&self) {
        self.grace_period(false);
    }

    fn synchronize_expedited(&self) {
        self.grace_period(true);
    }

    #[inline]
    fn is_watching(&self) -> bool {
        true
    }

    fn defer(&self, f: Box<dyn FnOnce() + Send + 'static>) {
        local::assert_outside("defer");
        self.synchronize();
        f();
    }

    fn barrier(&self) {
        local::assert_outside("barrier");
    }
}
