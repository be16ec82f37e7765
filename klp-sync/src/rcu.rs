//! The "rcu" flavor, after liburcu-memb.
//!
//! Only registered threads that are not parked are watched: a thread that has not called
//! [`Rcu::register_thread`], or that sits between [`Flavor::park`] and [`Flavor::unpark`],
//! can still enter read sections, but `synchronize` does not wait for them and
//! [`Flavor::is_watching`] says false there. That is the kernel's hazard of RCU in idle (the
//! reason for the 2017 change), reproduced on purpose so that it can be seen and measured.
//!
//! Concurrent `synchronize` callers share grace periods ([`crate::gp`]); `defer` hands
//! closures to a worker thread that runs one grace period per batch; `start_poll` /
//! `poll` give polled grace periods.

use crate::Flavor;
use crate::IrqState;
use crate::gp::Batcher;
use crate::local;
use crate::os::{self, ProcessBarrier};
use crate::reader::{self, PARKED, RCU_REGISTERED, SlotToken, rcu_watched};
use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::{JoinHandle, ThreadId};

type Callback = Box<dyn FnOnce() + Send + 'static>;

/// The rcu flavor, after liburcu-memb: only registered threads that are not parked are
/// watched (see the [crate] documentation).
///
/// Concurrent [`Flavor::synchronize`] callers share grace periods, [`Flavor::defer`]
/// queues the closure for a worker thread that runs one grace period per batch, and
/// [`Rcu::start_poll`] / [`Rcu::poll`] give polled grace periods.
///
/// # Example
///
/// ```
/// use std::sync::{Arc, mpsc};
/// use std::time::{Duration, Instant};
///
/// use klp_sync::{Flavor, Rcu};
///
/// let rcu = Arc::new(Rcu::new());
/// let (inside_tx, inside) = mpsc::channel();
/// let reader = {
///     let rcu = Arc::clone(&rcu);
///     std::thread::spawn(move || {
///         // An unregistered thread's read sections are not waited for: the hazard
///         // that made the kernel change its livepatch handler in 2017.
///         assert!(!rcu.is_watching());
///         let _me = rcu.register_thread(); // unregistered again when dropped
///         assert!(rcu.is_watching());
///         let _guard = rcu.read_lock();
///         inside_tx.send(Instant::now()).unwrap();
///         std::thread::sleep(Duration::from_millis(20));
///     })
/// };
/// let entered = inside.recv().unwrap();
/// rcu.synchronize(); // waits for the registered reader's section
/// assert!(entered.elapsed() >= Duration::from_millis(20));
/// reader.join().unwrap();
///
/// // `defer` queues the closure for the worker and returns at once; `barrier` waits.
/// let (done_tx, done) = mpsc::channel();
/// rcu.defer(Box::new(move || done_tx.send("reclaimed").unwrap()));
/// rcu.barrier();
/// assert_eq!(done.try_recv(), Ok("reclaimed"));
///
/// // A polled grace period: start one, do other work, check.
/// let cookie = rcu.start_poll();
/// while !rcu.poll(cookie) {
///     std::thread::sleep(Duration::from_millis(1));
/// }
/// ```
pub struct Rcu {
    inner: Arc<Inner>,
}

struct Inner {
    batcher: Batcher,
    queue: Mutex<Queue>,
    /// Signalled when work arrives for the worker, and when a batch has run.
    wake: Condvar,
    ran: Condvar,
}

#[derive(Default)]
struct Queue {
    callbacks: Vec<Callback>,
    /// The highest grace-period target that a poller asked for.
    want_gp: u64,
    /// Batches handed to the worker / finished by it.
    taken: u64,
    finished: u64,
    shutdown: bool,
    worker: Option<(JoinHandle<()>, ThreadId)>,
}

/// A polled grace period: returned by [`Rcu::start_poll`], checked by [`Rcu::poll`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpCookie(u64);

thread_local! {
    static REGISTRATIONS: Cell<u32> = const { Cell::new(0) };
}

/// The calling thread's registration with the rcu flavor; dropping it unregisters.
#[must_use = "the thread is unregistered when this is dropped"]
pub struct ThreadRegistration {
    _not_send: PhantomData<*const ()>,
}

impl Drop for ThreadRegistration {
    fn drop(&mut self) {
        unregister();
    }
}

fn register() {
    let n = REGISTRATIONS.with(|r| {
        let n = r.get() + 1;
        r.set(n);
        n
    });
    if n == 1 {
        local::set_flags(|f| f | RCU_REGISTERED);
    }
}

fn unregister() {
    local::assert_outside("unregister_thread");
    let n = REGISTRATIONS.with(|r| {
        let n = r.get().saturating_sub(1);
        r.set(n);
        n
    });
    if n == 0 {
        local::set_flags(|f| f & !RCU_REGISTERED);
    }
}

fn rcu_grace_period(spin_only: bool) {
    local::REGISTRY.grace_period(&ProcessBarrier, rcu_watched, spin_only);
}

impl Inner {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn synchronize(&self) {
        self.batcher.synchronize(|| rcu_grace_period(false));
    }

    /// The worker: one grace period per batch of callbacks (or per poll request).
    fn work(self: &Arc<Self>) {
        register();
        let mut q = self.queue();
        loop {
            while q.callbacks.is_empty() && !q.shutdown && self.batcher.done(q.want_gp) {
                q = self.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            if q.callbacks.is_empty() && q.shutdown {
                break;
            }
            let batch = std::mem::take(&mut q.callbacks);
            let want = q.want_gp;
            q.taken += 1;
            drop(q);
            // A grace period that begins after every callback of the batch was queued
            // (the snap is taken now), and after every poll target asked so far.
            let target = self.batcher.snap().max(want);
            self.batcher.wait_until(target, || rcu_grace_period(false));
            for cb in batch {
                // A panicking callback must not stop the others or strand `barrier`;
                // the panic hook has already reported it.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(cb));
            }
            q = self.queue();
            q.finished += 1;
            self.ran.notify_all();
        }
        drop(q);
        unregister();
    }

    /// Make sure the worker runs, and wake it.
    fn kick(self: &Arc<Self>, q: &mut Queue) {
        if q.worker.is_none() {
            let me = Arc::clone(self);
            // Signals blocked: a program's handler never runs on the library's threads.
            let handle = os::spawn_service("klp-rcu", move || me.work())
                .expect("klp-sync: cannot start the rcu callback worker");
            let id = handle.thread().id();
            q.worker = Some((handle, id));
        }
        self.wake.notify_all();
    }
}

/// [`Flavor::irq_enter`] of an unwatched thread.
#[cold]
#[inline(never)]
fn irq_watch(old: u32) -> IrqState {
    local::set_flags(|f| (f | RCU_REGISTERED) & !PARKED);
    IrqState(old)
}

/// [`Flavor::irq_exit`] after [`irq_watch`]: back to unwatched (the section that needed
/// watching has ended, Release).
#[cold]
#[inline(never)]
fn irq_unwatch(state: IrqState) {
    local::set_flags(|_| state.0);
}

/// Every live instance, for the fork handlers.
static INSTANCES: Mutex<Vec<Weak<Inner>>> = Mutex::new(Vec::new());

/// What the fork handlers hold of one instance. Fields drop in order: the guards, then
/// the instance they borrow from.
struct ForkHeld {
    queue: MutexGuard<'static, Queue>,
    gp: crate::gp::ForkHold<'static>,
    /// Keeps the instance alive while the guards borrow from it.
    _inner: Arc<Inner>,
}

/// The held instances, between `fork_prepare` and the parent's or child's release.
static FORK_HELD: Mutex<Vec<ForkHeld>> = Mutex::new(Vec::new());

// SAFETY: see `crate::fork::Held`: taken and dropped on the thread that forks.
unsafe impl Send for ForkHeld {}

/// `fork` prepare: every instance's queue, then its grace-period state (the order of
/// `Inner::work`), under the list of instances.
pub(crate) fn fork_prepare() {
    let list = INSTANCES.lock().unwrap_or_else(|e| e.into_inner());
    let mut held = Vec::new();
    for inner in list.iter().filter_map(Weak::upgrade) {
        let q = inner.queue();
        // SAFETY: the guard borrows from `inner`, which `ForkHeld` keeps alive and drops
        // after the guards (field order); the lifetime is only widened to be stored.
        let q: MutexGuard<'static, Queue> = unsafe { std::mem::transmute(q) };
        let gp = inner.batcher.fork_hold();
        // SAFETY: as above.
        let gp: crate::gp::ForkHold<'static> = unsafe { std::mem::transmute(gp) };
        held.push(ForkHeld {
            queue: q,
            gp,
            _inner: inner,
        });
    }
    *FORK_HELD.lock().unwrap_or_else(|e| e.into_inner()) = held;
    crate::fork::hold(list);
    crate::fork::hold(ForkRelease);
}

/// Releases the instances' locks (before the list's, which was held first).
struct ForkRelease;

impl Drop for ForkRelease {
    fn drop(&mut self) {
        let held = std::mem::take(&mut *FORK_HELD.lock().unwrap_or_else(|e| e.into_inner()));
        drop(held);
    }
}

/// `fork` child, with the locks still held: the workers and their grace periods are gone.
pub(crate) fn fork_child() {
    let mut held = FORK_HELD.lock().unwrap_or_else(|e| e.into_inner());
    for h in held.iter_mut() {
        if let Some((handle, _)) = h.queue.worker.take() {
            // The thread does not exist here: neither join nor detach its handle.
            std::mem::forget(handle);
        }
        // A batch the worker had taken is lost with it (its callbacks never run here).
        h.queue.finished = h.queue.taken;
        h.gp.reset_in_child();
    }
}

/// `fork` child, once the locks are released: a worker for the callbacks still queued.
pub(crate) fn fork_child_restart() {
    let list: Vec<Arc<Inner>> = INSTANCES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for inner in list {
        let mut q = inner.queue();
        if !q.callbacks.is_empty() || !inner.batcher.done(q.want_gp) {
            inner.kick(&mut q);
        }
    }
}

impl Rcu {
    /// A new instance. The first instance of the process decides the barrier mode.
    pub fn new() -> Self {
        os::init();
        let inner = Arc::new(Inner {
            batcher: Batcher::new(),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            ran: Condvar::new(),
        });
        let mut list = INSTANCES.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&inner));
        drop(list);
        Rcu { inner }
    }

    /// Register the calling thread (liburcu's `rcu_register_thread`) until the returned
    /// value is dropped. Registration is per thread, for every rcu instance, and nests.
    pub fn register_thread(&self) -> ThreadRegistration {
        register();
        ThreadRegistration {
            _not_send: PhantomData,
        }
    }

    /// Start a grace period if none is pending and return a cookie for [`Rcu::poll`].
    pub fn start_poll(&self) -> GpCookie {
        let cookie = self.inner.batcher.snap();
        let mut q = self.inner.queue();
        q.want_gp = q.want_gp.max(cookie);
        self.inner.kick(&mut q);
        GpCookie(cookie)
    }

    /// A cookie for a grace period that begins after now, without asking for one.
    pub fn get_poll_cookie(&self) -> GpCookie {
        GpCookie(self.inner.batcher.snap())
    }

    /// Whether the grace period of `cookie` has completed.
    pub fn poll(&self, cookie: GpCookie) -> bool {
        self.inner.batcher.done(cookie.0)
    }

    /// Grace periods completed by this instance (shared ones count once).
    pub fn completed_grace_periods(&self) -> u64 {
        self.inner.batcher.completed()
    }
}

impl Default for Rcu {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Rcu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rcu")
            .field("completed_grace_periods", &self.completed_grace_periods())
            .finish_non_exhaustive()
    }
}

impl Drop for Rcu {
    fn drop(&mut self) {
        let worker = {
            let mut q = self.inner.queue();
            q.shutdown = true;
            self.inner.wake.notify_all();
            q.worker.take()
        };
        // The worker drains what is queued (after a grace period) and exits. If the last
        // handle is dropped by a callback on the worker itself, it cannot join itself.
        if let Some((handle, id)) = worker
            && id != std::thread::current().id()
        {
            let _ = handle.join();
        }
    }
}

// SAFETY: the read side is `reader::enter/exit` on the thread's own slot (clause 3). A
// grace period scans every in-use slot that is registered and not parked, after the heavy
// barrier, waiting with Acquire loads for Release exits (clauses 1, 2; `docs`); the
// `is_watching` test is the same predicate on the caller's slot (clause 5), and becoming
// watched is followed by a full fence (`local::set_flags`). The batcher only lets a caller
// return after a grace period that began after its call (`gp`). `defer` queues the closure
// before the worker takes its snap, and `barrier` waits for the worker to finish every
// batch taken so far plus the one holding the closures queued now (clause 4). Exiting
// threads release their slot, which clears the flags (clause 6).
unsafe impl Flavor for Rcu {
    type Token = SlotToken;

    fn name(&self) -> &'static str {
        "rcu"
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
        local::assert_outside("synchronize");
        let _gp = local::InGracePeriod::enter();
        self.inner.synchronize();
    }

    fn synchronize_expedited(&self) {
        local::assert_outside("synchronize_expedited");
        let _gp = local::InGracePeriod::enter();
        rcu_grace_period(true);
    }

    #[inline]
    fn is_watching(&self) -> bool {
        local::existing().is_some_and(rcu_watched)
    }

    fn defer(&self, f: Callback) {
        let _gp = local::InGracePeriod::enter();
        let mut q = self.inner.queue();
        q.callbacks.push(f);
        self.inner.kick(&mut q);
    }

    fn barrier(&self) {
        local::assert_outside("barrier");
        let _gp = local::InGracePeriod::enter();
        let mut q = self.inner.queue();
        let Some((_, worker)) = &q.worker else {
            return;
        };
        assert!(
            *worker != std::thread::current().id(),
            "klp-sync: barrier called from a deferred closure: it would wait for itself"
        );
        // Everything queued now is taken in the next batch at the latest.
        let need = q.taken + u64::from(!q.callbacks.is_empty());
        while q.finished < need {
            q = self.inner.ran.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn register_current_thread(&self) {
        register();
    }

    fn unregister_current_thread(&self) {
        unregister();
    }

    fn park(&self) {
        local::assert_outside("park");
        local::set_flags(|f| f | PARKED);
    }

    fn unpark(&self) {
        local::set_flags(|f| f & !PARKED);
    }

    #[inline]
    fn irq_enter(&self) -> IrqState {
        let old = local::flags();
        // The common case: watched already (one load of the thread's flags).
        if old & (RCU_REGISTERED | PARKED) == RCU_REGISTERED {
            return IrqState::WATCHED;
        }
        irq_watch(old)
    }

    #[inline]
    fn irq_exit(&self, state: IrqState) {
        if state != IrqState::WATCHED {
            irq_unwatch(state);
        }
    }
}
