//! Patchable functions (sites) and the site registry (the kernel's kallsyms).
//!
//! A site is a `static` made by [`crate::patchable!`] (or by the C layer). It registers
//! itself when its code is loaded (the program starts, or its shared object is opened)
//! under its object's name (`None`: the main program, `vmlinux` in messages).
//!
//! # Which engine patches a site
//!
//! `owner` names the engine whose funcs are on the site's func_stack, through its
//! [`Dispatch`]; an engine takes an unowned site when it pushes the first func, and gives
//! it back when the stack is empty again, in two steps: `owner` becomes the engine's
//! *releasing* dispatch (whose choice is the original), then, after a grace period of the
//! engine's flavor, null. The handler re-reads `owner` inside its read section and starts
//! over when it changed: with the grace period between the two steps, a section that
//! still finds its engine in `owner` is one that the grace period waits for, so it
//! cannot see the func_stack of the next engine (whose flavor would not protect it).
//!
//! # The resolved target
//!
//! While no transition touches a site, every thread makes the same choice: the newest
//! func on the stack (the original for a nop or an empty stack). `resolved` holds that
//! choice, and a call that finds it non-null runs it with no handler, read section or
//! func-record check. It is null ("withdrawn") from before the owner changes the stack
//! or starts a transition until the owner's control lock is dropped with no transition
//! in progress (`settle`). No grace period is needed between the two: a call reserves
//! its activation before it loads `resolved` (`crate::thread`, invariant 3), so a thread
//! that loaded the previous target cannot be switched before its entry is published and
//! checked like any other, and a thread switched after the withdrawal sees it (the
//! switch is ordered after the withdrawal by the pending flag, the claim, or the
//! worker's heavy barrier). Withdrawing, taking a site and settling take one lock, so
//! that an engine settling a site never overwrites the withdrawal of the engine that
//! took it meanwhile.

use std::any::TypeId;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::func::FuncNode;
use crate::task::Task;

/// A code address (a function pointer), shareable between threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Code(pub *const ());

// SAFETY: a code address is immutable and meaningful in every thread.
unsafe impl Send for Code {}
// SAFETY: as above.
unsafe impl Sync for Code {}

/// How a site reaches the engine that patches it. Engines live for the rest of the
/// process.
pub(crate) struct Dispatch {
    /// The kernel's `klp_ftrace_handler`: which implementation this call runs, or null
    /// when the site's owner is no longer this dispatch (the caller starts over). It
    /// never unwinds (a panic in it aborts): the call paths call it without a landing pad.
    pub(crate) choose: unsafe extern "C" fn(*const (), &'static Site, &Task) -> *const (),
    pub(crate) engine: *const (),
}

// SAFETY: `engine` points to an engine that lives for the rest of the process and is
// itself Sync; `choose` is a plain function.
unsafe impl Send for Dispatch {}
// SAFETY: as above.
unsafe impl Sync for Dispatch {}

/// A patchable function: the kernel's ftrace location plus its `klp_ops`.
pub struct Site {
    pub(crate) object: Option<&'static str>,
    pub(crate) name: &'static str,
    pub(crate) original: Code,
    /// The `TypeId` of the function's Rust signature, when it has one.
    pub(crate) sig: Option<fn() -> TypeId>,
    /// The top of the func_stack (the newest func), or null.
    pub(crate) top: AtomicPtr<FuncNode>,
    /// The engine whose funcs are on the stack (see the module documentation), or null.
    pub(crate) owner: AtomicPtr<Dispatch>,
    /// What every thread would choose now, or null during changes and transitions (see
    /// the module documentation).
    pub(crate) resolved: AtomicPtr<()>,
    registered: AtomicBool,
}

// SAFETY: the raw pointers are code addresses and engine records that live for the rest of
// the process; the mutable state is atomic.
unsafe impl Sync for Site {}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("object", &self.object.unwrap_or("vmlinux"))
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Site {
    /// A site for `original`, named `name` in `object` (`None`: the main program).
    /// `sig` returns the `TypeId` of the function's signature, checked against a
    /// replacement's at enable time; `None` skips the check (C functions).
    pub const fn new(
        object: Option<&'static str>,
        name: &'static str,
        original: *const (),
        sig: Option<fn() -> TypeId>,
    ) -> Self {
        Site {
            object,
            name,
            original: Code(original),
            sig,
            top: AtomicPtr::new(std::ptr::null_mut()),
            owner: AtomicPtr::new(std::ptr::null_mut()),
            resolved: AtomicPtr::new(original.cast_mut()),
            registered: AtomicBool::new(false),
        }
    }

    /// The function's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The object's name (`None`: the main program).
    pub fn object(&self) -> Option<&'static str> {
        self.object
    }

    /// The original implementation.
    pub fn original(&self) -> *const () {
        self.original.0
    }

    /// Withdraw the resolved target: calls take the owner's full decision until the
    /// site is settled again.
    pub(crate) fn withdraw(&self) {
        let _g = resolve_lock();
        self.resolved.store(std::ptr::null_mut(), Ordering::SeqCst);
    }

    /// Take the site for `mine` from `from` (null, or a releasing dispatch) and withdraw
    /// its resolved target, as one step for `settle`.
    pub(crate) fn take(&self, from: *mut Dispatch, mine: *mut Dispatch) -> bool {
        let _g = resolve_lock();
        let ok = self
            .owner
            .compare_exchange(from, mine, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if ok {
            self.resolved.store(std::ptr::null_mut(), Ordering::SeqCst);
        }
        ok
    }

    /// Publish the resolved target of a site that `mine` (or `releasing`, or nobody)
    /// owns. The caller holds the owning engine's control lock with no transition in
    /// progress, so that every thread is at rest and would choose this; a site that
    /// another engine owns now is that engine's to settle.
    pub(crate) fn settle(&self, mine: *const Dispatch, releasing: *const Dispatch) {
        let _g = resolve_lock();
        let owner = self.owner.load(Ordering::Acquire).cast_const();
        let target = if owner.is_null() || std::ptr::eq(owner, releasing) {
            self.original.0
        } else if std::ptr::eq(owner, mine) {
            // SAFETY: our own stack, changed only under the control lock we hold; its
            // nodes live while they are on it.
            match unsafe { self.top.load(Ordering::Acquire).as_ref() } {
                None => self.original.0,
                Some(f) if f.nop => self.original.0,
                Some(f) => {
                    debug_assert!(!f.transition.load(Ordering::Relaxed));
                    f.new_func.load(Ordering::Relaxed).cast_const()
                }
            }
        } else {
            return;
        };
        // Release: a call that runs the target sees what was written before (the
        // patch's code is mapped, its state set up).
        self.resolved.store(target.cast_mut(), Ordering::Release);
    }

    /// Whether an engine has funcs on this site (a patch uses it): its code must stay
    /// mapped.
    pub fn in_use(&self) -> bool {
        !self.owner.load(Ordering::Acquire).is_null()
    }

    /// Make the site known to the registry (idempotent). `patchable!` does this when the
    /// program or shared object is loaded.
    pub fn register(&'static self) {
        if self.registered.swap(true, Ordering::AcqRel) {
            return;
        }
        // The registry is locked across a fork from now on (see `crate::fork`).
        crate::fork::install();
        registry().push(self);
    }

    /// Forget the site: later patches no longer find it (the kernel's kallsyms lose an
    /// unloaded module's symbols). A patch that uses it keeps its own reference: the
    /// site's memory must stay mapped meanwhile (libklp's C layer pins the shared
    /// objects of the sites a patch uses).
    pub fn unregister(&'static self) {
        if !self.registered.swap(false, Ordering::AcqRel) {
            return;
        }
        registry().retain(|s| !std::ptr::eq(*s, self));
    }

    /// The implementation every call runs now without a decision (the site's resolved
    /// target), or `None` while a patch changes the site: during a transition, and
    /// while the owning engine's control operation is under way.
    pub fn resolved(&self) -> Option<*const ()> {
        let r = self.resolved.load(Ordering::Acquire);
        (!r.is_null()).then_some(r.cast_const())
    }

    /// Which implementation a call made now by this thread would run (for tests and
    /// tools; a call does this itself).
    pub fn current_impl(&'static self) -> *const () {
        choose(self, crate::registry::current())
    }
}

static SITES: Mutex<Vec<&'static Site>> = Mutex::new(Vec::new());

/// Serializes withdrawing, taking and settling (see the module documentation). Taken
/// only under an engine's control lock, so a fork never finds it held.
static RESOLVE: Mutex<()> = Mutex::new(());

fn resolve_lock() -> MutexGuard<'static, ()> {
    RESOLVE.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn registry() -> MutexGuard<'static, Vec<&'static Site>> {
    SITES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a symbol could not be resolved (§1.3); the engine prints the kernel's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unresolved {
    NotFound,
    Ambiguous,
    NoSuchPosition,
}

/// Find `name` in `object` with the kernel's `old_sympos` rules: 0 means the name must be
/// unique; N selects the Nth site of that name in registration order.
pub(crate) fn resolve(
    object: Option<&str>,
    name: &str,
    sympos: u64,
) -> Result<&'static Site, Unresolved> {
    let sites = registry();
    let mut count = 0u64;
    let mut found = None;
    for s in sites
        .iter()
        .filter(|s| s.object == object && s.name == name)
    {
        count += 1;
        found = Some(*s);
        if (sympos > 0 && count == sympos) || (sympos == 0 && count > 1) {
            break;
        }
    }
    match found {
        None => Err(Unresolved::NotFound),
        Some(_) if count > 1 && sympos == 0 => Err(Unresolved::Ambiguous),
        Some(_) if sympos > 0 && sympos != count => Err(Unresolved::NoSuchPosition),
        Some(s) => Ok(s),
    }
}

/// The site a func of `object` naming `name` at `sympos` would patch now, if it is
/// registered and unambiguous (what `klp_enable_patch` will resolve; the C layer pins
/// the shared object that holds it before enabling).
pub fn lookup(object: Option<&str>, name: &str, sympos: u64) -> Option<&'static Site> {
    resolve(object, name, sympos).ok()
}

/// The §3 decision for `site` on `task`: the resolved target when the site has one,
/// otherwise the owner's handler. The caller has reserved its activation.
#[inline(always)]
pub(crate) fn choose(site: &'static Site, task: &Task) -> *const () {
    // Acquire pairs with `settle`'s Release.
    let resolved = site.resolved.load(Ordering::Acquire);
    if !resolved.is_null() {
        return resolved;
    }
    choose_slow(site, task)
}

/// [`choose`] while the site is withdrawn: the owner's handler, starting over when the
/// owner changed under it. Inline, as before the resolved target existed: a call during a
/// transition pays one load more, not a call more.
#[inline(always)]
pub(crate) fn choose_slow(site: &'static Site, task: &Task) -> *const () {
    loop {
        // Acquire pairs with the Release that installed the owner after its func was pushed.
        let owner = site.owner.load(Ordering::Acquire);
        // SAFETY: a non-null owner is a Dispatch that lives for the rest of the process.
        let Some(d) = (unsafe { owner.as_ref() }) else {
            return site.original.0;
        };
        // SAFETY: `choose` and `engine` come from the same engine (see `Dispatch`).
        let imp = unsafe { (d.choose)(d.engine, site, task) };
        if !imp.is_null() {
            return imp;
        }
    }
}
