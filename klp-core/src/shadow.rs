//! Shadow variables: data attached to existing objects by a patch, after the kernel's
//! `kernel/livepatch/shadow.c`.
//!
//! A patch that needs a new field in a structure it cannot change attaches a *shadow
//! variable* to each instance instead: a block of data identified by the pair
//! `<obj, id>`, where `obj` is the parent object's address (a key only, never
//! dereferenced) and `id` a number the patch chooses. Several ids may be attached to one
//! object and one id to many objects.
//!
//! # The operations (the kernel's semantics)
//!
//! * [`Shadow::get`]: the data of `<obj, id>`, or `None`. Lock-free.
//! * [`Shadow::alloc`]: attach a new variable of `size` bytes, zeroed, then handed to the
//!   constructor if there is one. If the pair exists already, warn
//!   `Duplicate shadow variable <%p, %lx>` and return `None`. If the constructor fails
//!   with `err`, log `Failed to construct shadow variable <%p, %lx> (%d)` and return
//!   `None`, attaching nothing.
//! * [`Shadow::get_or_alloc`]: the same, except that an existing variable is returned as
//!   it is, without a warning and without calling the constructor. At most one variable
//!   ever exists per pair, and the constructor runs only when a new one is attached.
//! * [`Shadow::free`]: detach `<obj, id>`, call the destructor on it, and give its memory
//!   back after a grace period. A missing pair is silently ignored.
//! * [`Shadow::free_all`]: the same for every variable with the given id.
//!
//! Messages go to the store's [`Log`] with the kernel's text and level (the pointer as
//! `{:p}`, raw rather than hashed; the id and the error in the kernel's `%lx` and `%d`).
//!
//! # Design
//!
//! A fixed array of buckets (4096 by default like the kernel's `2^12`, or as many as
//! [`Shadow::with_buckets`] asks for), each the head of a singly linked chain of nodes.
//! A node is one allocation, the header `{next, obj, id, size}` followed by the data,
//! aligned to [`DATA_ALIGN`]. The bucket is chosen by a multiplicative hash of both `obj`
//! and `id`. The table never grows: past about one variable per bucket, lookups walk
//! longer chains, so size it for the expected population.
//!
//! *Readers* ([`Shadow::get`], and the first lookup of an allocation) take no lock: they
//! walk a chain inside a read section of the store's [`Flavor`], as the kernel walks its
//! hash under RCU. *Writers* serialize per bucket on a striped array of mutexes (256 or
//! fewer stripes); `free_all` and dropping the store take every stripe, in order, so that
//! `free_all` is atomic with respect to concurrent allocations, as the kernel's single
//! lock makes it.
//!
//! ## Publication
//!
//! `alloc` allocates and zeroes the node *outside* the lock, then under the bucket's
//! stripe looks the pair up again (it may have been attached meanwhile), sets the key,
//! runs the constructor on the still-private data, and only then links the node at the
//! head of its chain with a **Release** store. Readers load every chain pointer with
//! **Acquire**, so a reader that finds the node also sees its key and everything the
//! constructor wrote. The constructor therefore runs before the variable is visible,
//! and under the lock: no other insertion of the same key (nor of any key of the same
//! stripe) runs concurrently, which is the kernel's "atomic context" guarantee.
//!
//! ## Removal and reclaim
//!
//! `free` unlinks the node under the lock with a Release store of its successor into its
//! predecessor's link (a reader following the new link must see the successor's key, which
//! the lock ordered before), calls the destructor (still under the lock, on intact data),
//! and then, after the lock is released, hands the node to [`Flavor::defer`]. After the
//! grace period the data is overwritten with [`POISON`] and the memory returned to the
//! allocator. Nodes are never modified after publication except for their `next` link, so
//! a reader that raced with the unlink either still sees the old chain (valid until the
//! grace period ends) or the new one.
//!
//! ## Threads the flavor does not watch
//!
//! A read section only protects a thread that the flavor watches
//! ([`Flavor::is_watching`]; with the rcu flavor, a registered and unparked thread). On
//! any other thread `get` makes the flavor watch it for the lookup
//! ([`Flavor::irq_enter`], the kernel's `rcu_irq_enter`), so `get` is lock-free and sound
//! on every thread, also in a constructor or destructor and in a signal handler. What
//! such a thread may do with the result is discussed below.
//!
//! # Using the pointers
//!
//! The returned data pointer stays valid until the variable is freed, plus a grace
//! period. Use it
//!
//! * inside a read section of the store's flavor, entered on a watched thread before the
//!   `get` (or the `alloc`) and still open; or
//! * anywhere, when the program ensures that no concurrent `free`/`free_all` of that
//!   variable can happen (the kernel's rule: "callers must provide any mutual exclusion
//!   that the shadow *data* itself needs", and a variable is usually freed by whoever owns
//!   the parent object).
//!
//! The store synchronizes its own structure only: accesses to the data from several
//! threads need the program's own synchronization (atomics in the data, say).
//!
//! # Constructors and destructors
//!
//! They run on the calling thread, under the bucket's stripe lock (`free_all`: under all
//! of them), like the kernel's under its spinlock. They may call [`Shadow::get`] on the
//! same store (of any variable), but not `alloc`, `get_or_alloc`, `free`, `free_all` or
//! [`Shadow::len`]: those would wait for the lock the thread already holds, and panic
//! instead ([`Shadow::in_callback`] tells a caller that must not panic). They must
//! not wait for a grace period either. A panic in a constructor attaches nothing and
//! propagates; a panic in a destructor propagates after every node already unlinked has
//! been handed to the reclaim (the remaining destructors of a `free_all` do not run).
//!
//! # Waiting and panics
//!
//! `free`, `free_all` and dropping the store call [`Flavor::defer`]. With the rcu flavor
//! that queues the reclaim and returns; with preempt and lock it waits for a grace period
//! in place, and so panics inside a read section of the flavor (it would wait for itself).
//! Call them outside read sections, as the kernel calls `klp_shadow_free` outside
//! `rcu_read_lock`-protected walks of the same data. `get`, `alloc` and `get_or_alloc`
//! never wait for a grace period and may be called inside read sections.
//!
//! ```
//! use klp_core::log::{Capture, Log};
//! use klp_core::shadow::Shadow;
//! use klp_sync::{Flavor, Rcu};
//! use std::ffi::c_void;
//! use std::sync::Arc;
//!
//! let rcu = Arc::new(Rcu::new());
//! let _me = rcu.register_thread();
//! let shadow = Shadow::new(Arc::clone(&rcu), Log::new(Capture::new()));
//! let obj = 0x1000 as *const c_void; // any address; it is only a key
//!
//! let counter = shadow.get_or_alloc_with(obj, 1, || 41u64).expect("allocation");
//! {
//!     let _guard = rcu.read_lock();
//!     let p = shadow.get(obj, 1).expect("attached").cast::<u64>();
//!     assert_eq!(p, counter);
//!     // SAFETY (example): read inside a read section; nothing else writes the data.
//!     assert_eq!(unsafe { *p.as_ptr() }, 41);
//! }
//! assert!(shadow.free(obj, 1, None));
//! assert_eq!(shadow.get(obj, 1), None);
//! rcu.barrier();
//! assert_eq!(shadow.outstanding(), 0);
//! ```

mod node;

pub use node::{DATA_ALIGN, POISON};

use crate::klp_log;
use crate::log::{Level, Log};
use klp_sync::Flavor;
use node::{Counter, Fresh, Header, Retired};
use std::cell::Cell;
use std::ffi::c_void;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The number of buckets of [`Shadow::new`], the kernel's `1 << 12`.
pub const DEFAULT_BUCKETS: usize = 1 << 12;

/// The most writer stripes a store has.
const MAX_STRIPES: usize = 256;

/// A constructor: `ctor(obj, data)` initializes the new variable's zeroed `data`. An
/// `Err` (a negative errno, as the kernel's `int` return) makes the allocation fail.
///
/// The kernel's `ctor_data` argument is whatever the closure captures.
pub type Ctor<'a> = &'a mut dyn FnMut(*const c_void, NonNull<u8>) -> Result<(), i32>;

/// A destructor: `dtor(obj, data)` runs when the variable is freed, before its memory is
/// given back.
pub type Dtor<'a> = &'a mut dyn FnMut(*const c_void, NonNull<u8>);

/// A store of shadow variables whose readers are protected by the flavor `F` (see the
/// module documentation).
///
/// # Example
///
/// A patch adds a field to a structure it cannot change: a shadow variable per instance,
/// made by a constructor, read back by address, freed with a destructor.
///
/// ```
/// use std::ffi::c_void;
/// use std::ptr::NonNull;
/// use std::sync::Arc;
///
/// use klp_core::log::{Capture, Log};
/// use klp_core::shadow::Shadow;
/// use klp_sync::{Flavor, Preempt};
///
/// /// The structure of the unpatched program.
/// struct Conn {
///     fd: i32,
/// }
/// /// The shadow variable's id: the patch's new field, `Conn::retries`.
/// const RETRIES: u64 = 1;
///
/// let lines = Capture::new();
/// let shadow = Shadow::new(Arc::new(Preempt::new()), Log::new(lines.clone()));
/// let conn = Conn { fd: 3 };
/// let obj = &conn as *const Conn as *const c_void; // a key only, never dereferenced
///
/// // klp_shadow_alloc(obj, id, size, ctor): the constructor fills the zeroed data
/// // before anyone can see it; an `Err` (a negative errno) attaches nothing.
/// let mut ctor = |_obj: *const c_void, data: NonNull<u8>| -> Result<(), i32> {
///     // SAFETY (example): `data` is the new variable's 4 private bytes, aligned to
///     // `DATA_ALIGN`.
///     unsafe { data.cast::<u32>().write(5) };
///     Ok(())
/// };
/// let data = shadow.alloc(obj, RETRIES, size_of::<u32>(), Some(&mut ctor));
/// assert!(data.is_some());
///
/// // klp_shadow_get(obj, id), lock-free. The data stays valid until it is freed; here
/// // nothing frees it concurrently (the owner of `conn` does, below).
/// let retries = shadow.get(obj, RETRIES).expect("attached").cast::<u32>();
/// assert_eq!(retries, data.unwrap().cast());
/// // SAFETY (example): attached above, freed only below, by this thread.
/// unsafe { *retries.as_ptr() -= 1 };
///
/// // A second variable for the same pair is refused, with the kernel's warning.
/// assert_eq!(shadow.alloc(obj, RETRIES, size_of::<u32>(), None), None);
/// assert_eq!(lines.take(), [format!("livepatch: Duplicate shadow variable <{obj:p}, 1>")]);
///
/// // klp_shadow_free(obj, id, dtor): detached at once, memory back after a grace period.
/// let mut last = 0;
/// let mut dtor = |_obj: *const c_void, data: NonNull<u8>| {
///     // SAFETY (example): the variable's data, still intact in its destructor.
///     last = unsafe { data.cast::<u32>().read() };
/// };
/// assert!(shadow.free(obj, RETRIES, Some(&mut dtor)));
/// assert_eq!(last, 4);
/// assert_eq!(shadow.get(obj, RETRIES), None);
/// shadow.flavor().barrier();
/// assert_eq!(shadow.outstanding(), 0);
/// # let _ = conn.fd;
/// ```
pub struct Shadow<F: Flavor> {
    buckets: Box<[AtomicPtr<Header>]>,
    /// Writer locks: bucket `b` belongs to stripe `b & (stripes.len() - 1)`. Each counts
    /// the variables linked in its buckets.
    stripes: Arc<[Stripe]>,
    flavor: Arc<F>,
    log: Log,
    counter: Arc<Counter>,
}

#[repr(align(64))]
struct Stripe(Mutex<usize>);

/// A handle on a store's count of outstanding allocations, which outlives the store:
/// variables attached, plus variables freed whose memory awaits its grace period.
#[derive(Clone, Debug)]
pub struct Allocations(Arc<Counter>);

impl Allocations {
    /// Allocations not yet given back to the allocator. After every variable was freed (or
    /// the store dropped) and [`Flavor::barrier`] returned, this is 0.
    pub fn outstanding(&self) -> usize {
        self.0.get()
    }
}

/// The store whose callback the calling thread runs (it holds some of its locks).
#[derive(Clone, Copy)]
struct CallbackContext {
    /// The address of the store.
    store: usize,
}

thread_local! {
    /// Set while a constructor or destructor runs on this thread.
    static CALLBACK: Cell<Option<CallbackContext>> = const { Cell::new(None) };
}

/// Restores the previous callback context, also on unwind.
struct ContextRestore(Option<CallbackContext>);

impl Drop for ContextRestore {
    fn drop(&mut self) {
        CALLBACK.with(|c| c.set(self.0));
    }
}

/// Hands unlinked nodes to the flavor's reclaim when dropped: after the writer's locks are
/// released (declare it before the lock guards), also when a destructor panics.
struct Reclaim<'a, F: Flavor> {
    flavor: &'a F,
    batch: Option<Retired>,
}

impl<F: Flavor> Reclaim<'_, F> {
    /// Add a node that the caller just unlinked.
    ///
    /// # Safety
    ///
    /// 1. As [`Retired::push`] clause 1: `node` was just unlinked under the lock and is in
    ///    no other batch.
    unsafe fn push(&mut self, node: NonNull<Header>) {
        let batch = self
            .batch
            .as_mut()
            .expect("the batch is taken only in drop");
        // SAFETY: clause 1 is Retired::push's clause 1.
        unsafe { batch.push(node) };
    }
}

impl<F: Flavor> Drop for Reclaim<'_, F> {
    fn drop(&mut self) {
        let Some(batch) = self.batch.take() else {
            return;
        };
        if batch.is_empty() {
            return;
        }
        self.flavor.defer(Box::new(move || {
            // SAFETY: `defer` runs this after a grace period that began after the call,
            // and every node was pushed (unlinked) before the call (clause 1).
            unsafe { batch.reclaim() }
        }));
    }
}

impl<F: Flavor> Shadow<F> {
    /// An empty store with [`DEFAULT_BUCKETS`] buckets.
    pub fn new(flavor: Arc<F>, log: Log) -> Self {
        Self::with_buckets(flavor, log, DEFAULT_BUCKETS)
    }

    /// An empty store with `buckets` buckets (at least 1). Lookups stay short while the
    /// store holds up to about one variable per bucket; each bucket costs 8 bytes.
    pub fn with_buckets(flavor: Arc<F>, log: Log, buckets: usize) -> Self {
        let buckets = buckets.max(1);
        let stripes: Arc<[Stripe]> = (0..buckets.next_power_of_two().min(MAX_STRIPES))
            .map(|_| Stripe(Mutex::new(0)))
            .collect();
        register_stripes(&stripes);
        Shadow {
            buckets: (0..buckets)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            stripes,
            flavor,
            log,
            counter: Arc::new(Counter::default()),
        }
    }

    /// The flavor that protects the readers.
    pub fn flavor(&self) -> &Arc<F> {
        &self.flavor
    }

    /// The number of buckets.
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// The data of the variable `<obj, id>`, or `None` (`klp_shadow_get`).
    ///
    /// Lock-free on every thread, also in a constructor or destructor of this store: a
    /// thread the flavor would not watch (rcu: unregistered, or parked) is made to watch
    /// for the lookup ([`Flavor::irq_enter`]). See the module documentation for how long
    /// the pointer may be used.
    #[inline]
    pub fn get(&self, obj: *const c_void, id: u64) -> Option<NonNull<u8>> {
        let b = self.bucket_of(obj, id);
        let irq = self.flavor.irq_enter();
        let found = {
            let _guard = self.flavor.read_lock();
            // SAFETY: inside a read section entered while the thread was watched (made so
            // by `irq_enter` if need be), which lasts until after `data` (`find` 1a).
            let node = unsafe { self.find(b, obj.addr(), id) };
            // SAFETY: the node is not reclaimed before the section ends (`data` clause 1).
            node.map(|n| unsafe { node::data(n) })
        };
        self.flavor.irq_exit(irq);
        found
    }

    /// Whether the calling thread runs a constructor or destructor of this store, where
    /// only [`Shadow::get`] may be called (everything else would wait for the lock the
    /// thread holds, and panics).
    pub fn in_callback(&self) -> bool {
        CALLBACK
            .with(Cell::get)
            .is_some_and(|c| c.store == self.addr())
    }

    /// Attach a new variable of `size` zeroed bytes to `<obj, id>`, constructed by `ctor`
    /// if given (`klp_shadow_alloc`).
    ///
    /// Returns `None` if the pair exists already (with the warning
    /// `Duplicate shadow variable <%p, %lx>`; the existing variable is left alone and the
    /// constructor does not run), if the constructor fails (with the error
    /// `Failed to construct shadow variable <%p, %lx> (%d)`) or if memory runs out.
    ///
    /// # Panics
    ///
    /// When called from a constructor or destructor of this store; when `ctor` panics.
    pub fn alloc(
        &self,
        obj: *const c_void,
        id: u64,
        size: usize,
        ctor: Option<Ctor<'_>>,
    ) -> Option<NonNull<u8>> {
        self.get_or_alloc_inner(obj, id, size, ctor, true)
    }

    /// The data of `<obj, id>`, attaching a new variable as [`Shadow::alloc`] does if there
    /// is none (`klp_shadow_get_or_alloc`). An existing variable is returned as it is,
    /// whatever its size, without a message, and `ctor` does not run. Concurrent callers
    /// for one pair all get the same variable, constructed once.
    ///
    /// # Panics
    ///
    /// As [`Shadow::alloc`].
    pub fn get_or_alloc(
        &self,
        obj: *const c_void,
        id: u64,
        size: usize,
        ctor: Option<Ctor<'_>>,
    ) -> Option<NonNull<u8>> {
        self.get_or_alloc_inner(obj, id, size, ctor, false)
    }

    /// [`Shadow::alloc`] for a Rust value: a variable of `size_of::<T>()` bytes,
    /// initialized with `init()` (under the lock, like a constructor).
    ///
    /// Nothing drops the value when the variable is freed: give [`Shadow::free`] a
    /// destructor that does, or use a `T` without drop glue.
    pub fn alloc_with<T>(
        &self,
        obj: *const c_void,
        id: u64,
        init: impl FnOnce() -> T,
    ) -> Option<NonNull<T>> {
        self.typed(obj, id, init, true)
    }

    /// [`Shadow::get_or_alloc`] for a Rust value; see [`Shadow::alloc_with`]. An existing
    /// variable is returned as a `T` whatever it holds: reading it is only sound when it
    /// was made as a `T`.
    pub fn get_or_alloc_with<T>(
        &self,
        obj: *const c_void,
        id: u64,
        init: impl FnOnce() -> T,
    ) -> Option<NonNull<T>> {
        self.typed(obj, id, init, false)
    }

    fn typed<T>(
        &self,
        obj: *const c_void,
        id: u64,
        init: impl FnOnce() -> T,
        warn_on_exist: bool,
    ) -> Option<NonNull<T>> {
        const { assert!(align_of::<T>() <= DATA_ALIGN, "over-aligned shadow type") };
        let mut init = Some(init);
        let mut ctor = |_: *const c_void, data: NonNull<u8>| {
            let init = init.take().expect("a constructor runs at most once");
            let value = init();
            // SAFETY: `data` is the new variable's private data, size_of::<T>() bytes,
            // aligned to DATA_ALIGN >= align_of::<T>() (checked above).
            unsafe { data.cast::<T>().write(value) };
            Ok(())
        };
        let data =
            self.get_or_alloc_inner(obj, id, size_of::<T>(), Some(&mut ctor), warn_on_exist)?;
        Some(data.cast())
    }

    fn get_or_alloc_inner(
        &self,
        obj: *const c_void,
        id: u64,
        size: usize,
        ctor: Option<Ctor<'_>>,
        warn_on_exist: bool,
    ) -> Option<NonNull<u8>> {
        // 1. The lock-free lookup.
        if let Some(data) = self.get(obj, id) {
            return self.exists(obj, id, data, warn_on_exist);
        }
        // 2. A zeroed block, outside the lock.
        let fresh = Fresh::new(obj, id, size, &self.counter)?;
        // 3. Look again under the lock: another thread may have attached it meanwhile.
        let b = self.bucket_of(obj, id);
        let s = self.stripe_of(b);
        let mut stripe = self.lock_stripe(s, "alloc");
        // SAFETY: we hold the stripe of `b` (`find` clause 1b).
        if let Some(node) = unsafe { self.find(b, obj.addr(), id) } {
            // SAFETY: linked, so live while we hold the stripe (`data` clause 1).
            let data = unsafe { node::data(node) };
            drop(stripe);
            drop(fresh);
            return self.exists(obj, id, data, warn_on_exist);
        }
        // 4. Construct, still private and under the lock.
        if let Some(ctor) = ctor
            && let Err(err) = self.callback(|| ctor(obj, fresh.data()))
        {
            drop(stripe);
            drop(fresh);
            klp_log!(
                self.log,
                Level::Err,
                "Failed to construct shadow variable <{obj:p}, {id:x}> ({err})"
            );
            return None;
        }
        // 5. Publish.
        let head = &self.buckets[b];
        // Relaxed: writers of this bucket are ordered by the stripe lock; the node is
        // still private, so its `next` needs no ordering of its own.
        fresh
            .header()
            .next
            .store(head.load(Ordering::Relaxed), Ordering::Relaxed);
        let data = fresh.data();
        let node = fresh.into_linked();
        // Release: a reader that Acquire-loads the head and finds the node sees its
        // header, the zeroing and everything the constructor wrote.
        head.store(node.as_ptr(), Ordering::Release);
        *stripe += 1;
        Some(data)
    }

    /// The existing-variable outcome of an allocation.
    fn exists(
        &self,
        obj: *const c_void,
        id: u64,
        data: NonNull<u8>,
        warn_on_exist: bool,
    ) -> Option<NonNull<u8>> {
        if warn_on_exist {
            klp_log!(
                self.log,
                Level::Warning,
                "Duplicate shadow variable <{obj:p}, {id:x}>"
            );
            return None;
        }
        Some(data)
    }

    /// Detach the variable `<obj, id>`, call `dtor` on it under the lock, and give its
    /// memory back after a grace period (`klp_shadow_free`). A missing pair is ignored.
    /// Returns whether a variable was freed.
    ///
    /// # Panics
    ///
    /// When called from a constructor or destructor of this store; when `dtor` panics;
    /// inside a read section of a flavor whose `defer` waits (preempt, lock).
    pub fn free(&self, obj: *const c_void, id: u64, dtor: Option<Dtor<'_>>) -> bool {
        let b = self.bucket_of(obj, id);
        let s = self.stripe_of(b);
        // Declared before the lock guard, so it is dropped (and waits, with some flavors)
        // after the lock is released.
        let mut reclaim = self.reclaim();
        let mut stripe = self.lock_stripe(s, "free");
        let mut link = &self.buckets[b];
        loop {
            // Relaxed: the stripe lock orders us after every writer of this bucket.
            let Some(node) = NonNull::new(link.load(Ordering::Relaxed)) else {
                return false;
            };
            // SAFETY: a linked node, live while we hold the stripe.
            let header = unsafe { node.as_ref() };
            if header.obj == obj && header.id == id {
                // Release: a reader that loads the successor through this link must see
                // the successor's header; the lock ordered its publication before us.
                link.store(header.next.load(Ordering::Relaxed), Ordering::Release);
                *stripe -= 1;
                // SAFETY: just unlinked under the lock, in no batch yet (`push` clause 1).
                unsafe { reclaim.push(node) };
                if let Some(dtor) = dtor {
                    // SAFETY: the node is ours until the reclaim runs (`data` clause 1).
                    let data = unsafe { node::data(node) };
                    self.callback(|| dtor(obj, data));
                }
                return true;
            }
            link = &header.next;
        }
    }

    /// Detach every variable with `id`, calling `dtor` on each under the lock, and give
    /// their memory back after one grace period (`klp_shadow_free_all`). Atomic with
    /// respect to concurrent allocations. Returns the number of variables freed.
    ///
    /// # Panics
    ///
    /// As [`Shadow::free`].
    pub fn free_all(&self, id: u64, mut dtor: Option<Dtor<'_>>) -> usize {
        let mut reclaim = self.reclaim();
        let mut stripes = self.lock_all("free_all");
        let mask = self.stripes.len() - 1;
        let mut freed = 0;
        for (b, head) in self.buckets.iter().enumerate() {
            let mut link = head;
            // Relaxed: we hold every stripe (see `free`).
            while let Some(node) = NonNull::new(link.load(Ordering::Relaxed)) {
                // SAFETY: a linked node, live while we hold its stripe.
                let header = unsafe { node.as_ref() };
                if header.id != id {
                    link = &header.next;
                    continue;
                }
                // Release: as in `free`.
                link.store(header.next.load(Ordering::Relaxed), Ordering::Release);
                *stripes[b & mask] -= 1;
                freed += 1;
                // SAFETY: just unlinked under the lock, in no batch yet (`push` clause 1).
                unsafe { reclaim.push(node) };
                if let Some(dtor) = dtor.as_mut() {
                    // SAFETY: the node is ours until the reclaim runs (`data` clause 1).
                    let data = unsafe { node::data(node) };
                    self.callback(|| dtor(header.obj, data));
                }
            }
        }
        freed
    }

    /// The number of variables attached now (a snapshot, stripe by stripe).
    ///
    /// # Panics
    ///
    /// When called from a constructor or destructor of this store.
    pub fn len(&self) -> usize {
        (0..self.stripes.len())
            .map(|s| *self.lock_stripe(s, "len"))
            .sum()
    }

    /// Whether no variable is attached (see [`Shadow::len`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Allocations not yet given back: attached variables plus freed ones awaiting their
    /// grace period.
    pub fn outstanding(&self) -> usize {
        self.counter.get()
    }

    /// A handle on [`Shadow::outstanding`] that outlives the store, to check that dropping
    /// it gives everything back.
    pub fn allocations(&self) -> Allocations {
        Allocations(Arc::clone(&self.counter))
    }

    /// The first node of bucket `b` keyed `<obj, id>` (`obj` as an address: it is only
    /// compared).
    ///
    /// # Safety
    ///
    /// 1. The calling thread either (a) is inside a read section of `self.flavor` that it
    ///    entered while `self.flavor.is_watching()` was true, or (b) holds the lock of
    ///    the stripe of `b`; and keeps doing so while it uses the returned node.
    #[inline]
    unsafe fn find(&self, b: usize, obj: usize, id: u64) -> Option<NonNull<Header>> {
        // Acquire (here and for `next`): pairs with the Release stores that publish and
        // unlink nodes, so the header of every node we reach is visible.
        let mut p = self.buckets[b].load(Ordering::Acquire);
        while let Some(node) = NonNull::new(p) {
            // SAFETY: a node reachable from a bucket is linked or was unlinked after our
            // section began; either way it is not reclaimed before the section ends (a),
            // or it cannot be unlinked while we hold the stripe (b) (clause 1).
            let header = unsafe { node.as_ref() };
            if header.obj.addr() == obj && header.id == id {
                return Some(node);
            }
            p = header.next.load(Ordering::Acquire);
        }
        None
    }

    #[inline]
    fn bucket_of(&self, obj: *const c_void, id: u64) -> usize {
        // Multiplicative hashing of both halves of the key; the high bits of the product
        // are the well mixed ones, and the multiply-shift range reduction uses them.
        let h = ((obj.addr() as u64) ^ id.wrapping_mul(0xff51_afd7_ed55_8ccd))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        ((u128::from(h) * self.buckets.len() as u128) >> 64) as usize
    }

    fn stripe_of(&self, b: usize) -> usize {
        b & (self.stripes.len() - 1)
    }

    fn addr(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    fn lock_stripe(&self, s: usize, what: &str) -> MutexGuard<'_, usize> {
        self.assert_not_in_callback(what);
        // A panicking callback poisons the mutex; the count it guards is kept consistent
        // (updated before callbacks run), so carry on.
        self.stripes[s].0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_all(&self, what: &str) -> Vec<MutexGuard<'_, usize>> {
        self.assert_not_in_callback(what);
        // In index order, so that two callers cannot deadlock; a single-stripe writer
        // holds one lock only and waits for none.
        self.stripes
            .iter()
            .map(|s| s.0.lock().unwrap_or_else(|e| e.into_inner()))
            .collect()
    }

    fn assert_not_in_callback(&self, what: &str) {
        if self.in_callback() {
            panic!(
                "klp-core: shadow: {what} called from a constructor or destructor of the same \
                 store, which runs under its lock"
            );
        }
    }

    /// Run a constructor or destructor, noting that the thread holds the store's locks.
    fn callback<R>(&self, f: impl FnOnce() -> R) -> R {
        let context = CallbackContext { store: self.addr() };
        let _restore = ContextRestore(CALLBACK.with(|c| c.replace(Some(context))));
        f()
    }

    fn reclaim(&self) -> Reclaim<'_, F> {
        Reclaim {
            flavor: &self.flavor,
            batch: Some(Retired::new(Arc::clone(&self.counter))),
        }
    }
}

/// Every store's writer locks, for `fork` (see `crate::fork`).
static STORES: Mutex<Vec<std::sync::Weak<[Stripe]>>> = Mutex::new(Vec::new());

fn register_stripes(stripes: &Arc<[Stripe]>) {
    crate::fork::install();
    let mut list = STORES.lock().unwrap_or_else(|e| e.into_inner());
    list.retain(|w| w.strong_count() > 0);
    list.push(Arc::downgrade(stripes));
}

/// The stripes of one store held across a fork; the guards go before the stripes.
struct ForkHeld {
    _guards: Vec<MutexGuard<'static, usize>>,
    _stripes: Arc<[Stripe]>,
}

/// `fork` prepare: every store's stripes, in index order (no constructor runs half way
/// in the child).
pub(crate) fn fork_prepare() {
    let stores: Vec<Arc<[Stripe]>> = STORES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(std::sync::Weak::upgrade)
        .collect();
    for stripes in stores {
        // A constructor of this store on the forking thread holds one: skip the store (its
        // locks stay as they are, held by this thread in both processes).
        if CALLBACK.with(Cell::get).is_some() {
            continue;
        }
        let guards: Vec<MutexGuard<'_, usize>> = stripes
            .iter()
            .map(|s| s.0.lock().unwrap_or_else(|e| e.into_inner()))
            .collect();
        // SAFETY: the guards borrow from `stripes`, which `ForkHeld` keeps alive and drops
        // after them (field order); the lifetime is only widened to be stored.
        let guards: Vec<MutexGuard<'static, usize>> = unsafe { std::mem::transmute(guards) };
        crate::fork::hold(ForkHeld {
            _guards: guards,
            _stripes: stripes,
        });
    }
}

impl<F: Flavor> Drop for Shadow<F> {
    /// Detaches every variable (no destructors run) and gives the memory back after a
    /// grace period: readers may still hold pointers obtained from `get`.
    fn drop(&mut self) {
        let mut reclaim = Reclaim {
            flavor: &*self.flavor,
            batch: Some(Retired::new(Arc::clone(&self.counter))),
        };
        for head in self.buckets.iter_mut() {
            let mut p = std::mem::replace(head.get_mut(), std::ptr::null_mut());
            while let Some(mut node) = NonNull::new(p) {
                // SAFETY: a node that was linked; `&mut self` excludes every other writer
                // and reader of the table (not of the data, hence the grace period).
                p = *unsafe { node.as_mut() }.next.get_mut();
                // SAFETY: unlinked now (its bucket was emptied), in no batch yet (`push`
                // clause 1).
                unsafe { reclaim.push(node) };
            }
        }
    }
}

impl<F: Flavor> fmt::Debug for Shadow<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shadow")
            .field("flavor", &self.flavor.name())
            .field("buckets", &self.buckets.len())
            .field("outstanding", &self.outstanding())
            .finish_non_exhaustive()
    }
}
