//! Patchable functions (sites), the site registry (the kernel's kallsyms), objects (the
//! kernel's modules), and the dispatch that every patchable call goes through.
//!
//! A site is a `static` made by [`crate::patchable!`] (or by the C layer). It registers
//! itself when its code is loaded (the program starts, or its shared object is opened)
//! under its object's name (`None`: the main program, `vmlinux` in messages). An object
//! other than the main program is *live* only between [`load_object`] and
//! [`unload_object`], which run the kernel's module-coming and module-going steps in every
//! engine.
//!
//! # The call path
//!
//! ```text
//! enter(site, frame):  task = this thread's task            (one thread-local load)
//!                      drop stale activations; at depth 0 with a pending switch: switch
//!                      owner = site.owner                   (Acquire)
//!                      imp = owner ? owner.choose(...)      (read section, §3 decision)
//!                                  : site.original          (no lock at all)
//!                      push (site, imp, frame)
//! leave(site, frame):  pop; at depth 0 with a pending switch: switch
//! ```

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::task::{self, Activation, Task};

/// A code address (a function pointer), shareable between threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Code(pub *const ());

// SAFETY: a code address is immutable and meaningful in every thread.
unsafe impl Send for Code {}
// SAFETY: as above.
unsafe impl Sync for Code {}

/// How a site reaches the engine that patches it: the engine's monomorphized choice
/// function and the engine itself. Engines live for the rest of the process.
pub(crate) struct Dispatch {
    /// The kernel's `klp_ftrace_handler`: which implementation this call runs. It never
    /// unwinds (a panic in it aborts, as a corrupt func record does): the call paths call
    /// it without a landing pad.
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
    pub(crate) top: AtomicPtr<crate::core::FuncNode>,
    /// The engine whose funcs are on the stack, or null.
    pub(crate) owner: AtomicPtr<Dispatch>,
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

    /// Make the site known to the registry (idempotent). `patchable!` does this when the
    /// program or shared object is loaded.
    pub fn register(&'static self) {
        if self.registered.swap(true, Ordering::AcqRel) {
            return;
        }
        registry().push(self);
    }

    /// Forget the site (its code is about to be unmapped). Its object must not be live.
    pub fn unregister(&'static self) {
        if !self.registered.swap(false, Ordering::AcqRel) {
            return;
        }
        registry().retain(|s| !std::ptr::eq(*s, self));
    }

    /// Which implementation a call made now by this thread would run (for tests and
    /// tools; a call does this itself).
    pub fn current_impl(&'static self) -> *const () {
        let task = task::current();
        choose(self, task)
    }
}

static SITES: Mutex<Vec<&'static Site>> = Mutex::new(Vec::new());

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

/// The kernel's module states, as a callback sees its object's module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModuleState {
    /// `MODULE_STATE_LIVE`: loaded and running.
    Live,
    /// `MODULE_STATE_COMING`: being loaded; its init has not run yet.
    Coming,
    /// `MODULE_STATE_GOING`: being unloaded; its exit has run.
    Going,
}

impl ModuleState {
    /// The text the kernel's callback selftest modules print for the state.
    pub fn describe(self) -> &'static str {
        match self {
            ModuleState::Live => "[MODULE_STATE_LIVE] Normal state",
            ModuleState::Coming => "[MODULE_STATE_COMING] Full formed, running module_init",
            ModuleState::Going => "[MODULE_STATE_GOING] Going away",
        }
    }

    /// The C value (`KLP_MODULE_STATE_*`, the kernel's numbering).
    pub fn as_raw(self) -> i32 {
        match self {
            ModuleState::Live => 0,
            ModuleState::Coming => 1,
            ModuleState::Going => 2,
        }
    }
}

static OBJECTS: Mutex<Option<HashMap<String, ModuleState>>> = Mutex::new(None);

/// The state of a named object's module, `None` when it is not loaded.
pub fn object_state(name: &str) -> Option<ModuleState> {
    OBJECTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|m| m.get(name).copied())
}

fn set_object_state(name: &str, st: Option<ModuleState>) {
    let mut g = OBJECTS.lock().unwrap_or_else(|e| e.into_inner());
    let m = g.get_or_insert_with(HashMap::new);
    match st {
        Some(s) => {
            m.insert(name.to_owned(), s);
        }
        None => {
            m.remove(name);
        }
    }
}

/// Why an object could not be loaded or unloaded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ObjectError {
    /// The name `vmlinux` is the main program's (`-EINVAL`).
    #[error("vmlinux.ko: invalid module name")]
    InvalidName,
    /// The object is already loaded (`-EEXIST`).
    #[error("module {0} is already loaded")]
    AlreadyLoaded(String),
    /// The object is not loaded (`-ENOENT`).
    #[error("module {0} is not loaded")]
    NotLoaded(String),
    /// An enabled patch failed to patch it; the load is refused with that errno.
    #[error("a livepatch refused module {name} ({errno})")]
    Refused {
        /// The object.
        name: String,
        /// The negative errno from the failing step.
        errno: i32,
    },
}

impl ObjectError {
    /// The negative Linux errno of the error.
    pub fn errno(&self) -> i32 {
        match self {
            ObjectError::InvalidName => -libc_errno::EINVAL,
            ObjectError::AlreadyLoaded(_) => -libc_errno::EEXIST,
            ObjectError::NotLoaded(_) => -libc_errno::ENOENT,
            ObjectError::Refused { errno, .. } => *errno,
        }
    }
}

/// Linux errno values (the kernel's, on every architecture we run on).
pub mod libc_errno {
    /// No such file or directory.
    pub const ENOENT: i32 = 2;
    /// Out of memory.
    pub const ENOMEM: i32 = 12;
    /// Device or resource busy.
    pub const EBUSY: i32 = 16;
    /// File exists.
    pub const EEXIST: i32 = 17;
    /// No such device.
    pub const ENODEV: i32 = 19;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// Connection timed out.
    pub const ETIMEDOUT: i32 = 110;
}

/// Load the named object (the kernel's module load): every engine applies its enabled
/// patches to it (module coming, with callbacks and the kernel's lines), then `init`
/// runs (the module's init). If a patch refuses the object, nothing of it stays applied,
/// `init` does not run and the error carries the errno.
pub fn load_object(name: &str, init: impl FnOnce()) -> Result<(), ObjectError> {
    let _serial = object_lock();
    if name == "vmlinux" {
        crate::core::log_everywhere(crate::log::Level::Err, "vmlinux.ko: invalid module name");
        return Err(ObjectError::InvalidName);
    }
    if object_state(name).is_some() {
        return Err(ObjectError::AlreadyLoaded(name.to_owned()));
    }
    set_object_state(name, Some(ModuleState::Coming));
    if let Err(errno) = crate::core::module_coming_all(name) {
        set_object_state(name, None);
        return Err(ObjectError::Refused {
            name: name.to_owned(),
            errno,
        });
    }
    init();
    set_object_state(name, Some(ModuleState::Live));
    Ok(())
}

/// Unload the named object: `exit` runs (the module's exit), then every engine reverts
/// its patches from it (module going, with callbacks and the kernel's lines).
pub fn unload_object(name: &str, exit: impl FnOnce()) -> Result<(), ObjectError> {
    let _serial = object_lock();
    if object_state(name) != Some(ModuleState::Live) {
        return Err(ObjectError::NotLoaded(name.to_owned()));
    }
    exit();
    set_object_state(name, Some(ModuleState::Going));
    crate::core::module_going_all(name);
    set_object_state(name, None);
    Ok(())
}

/// Object loads and unloads happen one at a time (the module loader's lock).
fn object_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The §3 decision for `site` on `task`.
#[inline(always)]
fn choose(site: &'static Site, task: &Task) -> *const () {
    // Acquire pairs with the Release that installed the owner after its func was pushed.
    let owner = site.owner.load(Ordering::Acquire);
    // SAFETY: a non-null owner is a Dispatch that lives for the rest of the process.
    match unsafe { owner.as_ref() } {
        None => site.original.0,
        // SAFETY: `choose` and `engine` come from the same engine (see `Dispatch`).
        Some(d) => unsafe { (d.choose)(d.engine, site, task) },
    }
}

/// Entry of a patchable function: returns the implementation to call. `frame` is the
/// address of the wrapper's frame (of a local in it). Must be paired with [`leave`].
#[inline(always)]
pub fn enter(site: &'static Site, frame: usize) -> *const () {
    enter_task(site, frame).0
}

/// [`enter`], also returning the calling thread's task, to be given back to
/// [`leave_task`] (which then needs no thread-local lookup).
#[inline(always)]
pub fn enter_task(site: &'static Site, frame: usize) -> (*const (), &'static Task) {
    let task = task::current();
    let stack = task::enter_bookkeeping(task, frame);
    if stack.depth() == 0 && task.pending.load(Ordering::Relaxed) != 0 {
        crate::core::self_switch(task);
    }
    let imp = choose(site, task);
    // SAFETY: owner, RUNNING (enter_bookkeeping ensured it).
    task::push(unsafe { task.own_stack() }, Activation { site, imp, frame });
    (imp, task)
}

/// [`enter_task`] for a call path that cannot afford a register save: the common case
/// (see `try_enter_fast`) on a site no patch owns runs inline without a call; a site
/// that a patch owns, and everything else, continue out of line (a sibling call). The
/// task is written to `*task_out` when it is not NULL. Never unwinds: the out-of-line
/// parts catch a panic and return the original.
///
/// # Safety
///
/// 1. `task_out` is NULL or valid for a write.
#[inline(always)]
pub unsafe fn enter_split(
    site: &'static Site,
    frame: usize,
    task_out: *mut *const Task,
) -> *const () {
    if let Some((task, stack)) = task::try_enter_fast(frame) {
        if site.owner.load(Ordering::Acquire).is_null() {
            let imp = site.original.0;
            task::push(stack, Activation { site, imp, frame });
            if !task_out.is_null() {
                // SAFETY: clause 1.
                unsafe { *task_out = task };
            }
            return imp;
        }
        return enter_owned(site, task, frame, task_out);
    }
    enter_slow(site, frame, task_out)
}

/// The rest of [`enter_split`] for a site that a patch owns, on the fast path's task:
/// out of line, so that the common case needs no register saved.
#[inline(never)]
extern "C" fn enter_owned(
    site: &'static Site,
    task: &'static Task,
    frame: usize,
    task_out: *mut *const Task,
) -> *const () {
    let imp = choose(site, task);
    // SAFETY: owner, RUNNING: the fast path found it so, and the handler parks nothing.
    task::push(unsafe { task.own_stack() }, Activation { site, imp, frame });
    if !task_out.is_null() {
        // SAFETY: `enter_split`'s clause 1.
        unsafe { *task_out = task };
    }
    imp
}

/// [`enter_split`]'s full path.
#[cold]
#[inline(never)]
extern "C" fn enter_slow(
    site: &'static Site,
    frame: usize,
    task_out: *mut *const Task,
) -> *const () {
    // AssertUnwindSafe: as in `enter_owned`.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| enter_task(site, frame))) {
        Ok((imp, task)) => {
            if !task_out.is_null() {
                // SAFETY: `enter_split`'s clause 1.
                unsafe { *task_out = task };
            }
            imp
        }
        Err(_) => site.original.0,
    }
}

/// [`leave_task`] for the call path of [`enter_split`]: `task` is what it wrote to
/// `*task_out` on this thread, or NULL (looked up). The common case runs inline without
/// a call; the rest continues out of line. Never unwinds.
///
/// # Safety
///
/// 1. `task` is NULL or the calling thread's task (from [`enter_split`] on this thread).
#[inline(always)]
pub unsafe fn leave_split(task: *const Task, frame: usize) {
    // SAFETY: clause 1: the calling thread's task lives while the thread runs.
    if let Some(t) = unsafe { task.as_ref() } {
        match task::try_leave_fast(t, frame) {
            Some(0) if t.pending.load(Ordering::Relaxed) != 0 => leave_switch(t),
            Some(_) => {}
            None => leave_slow(task, frame),
        }
    } else {
        leave_slow(task, frame);
    }
}

/// Back at depth 0 with switches pending: the self-switch of [`leave_task`].
#[cold]
#[inline(never)]
extern "C" fn leave_switch(task: &Task) {
    // AssertUnwindSafe: nothing half-changed is used after a panic.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::core::self_switch(task)
    }));
}

/// [`leave_split`]'s full path.
#[cold]
#[inline(never)]
extern "C" fn leave_slow(task: *const Task, frame: usize) {
    // AssertUnwindSafe: as in `leave_switch`.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: `leave_split`'s clause 1.
        match unsafe { task.as_ref() } {
            Some(t) => leave_task(t, frame),
            None => leave(frame),
        }
    }));
}

/// Return from a patchable function entered with [`enter`] at `frame`.
#[inline(always)]
pub fn leave(frame: usize) {
    leave_task(task::current(), frame);
}

/// [`leave`] for the `task` that [`enter_task`] returned on this thread.
#[inline(always)]
pub fn leave_task(task: &Task, frame: usize) {
    let depth = task::pop(task, frame);
    if depth == 0 && task.pending.load(Ordering::Relaxed) != 0 {
        crate::core::self_switch(task);
    }
    task::irq_exit_if_needed(task);
}

/// [`enter`], returning the implementation and a guard that does [`leave`] when dropped
/// (so that a panic unwinding out of the patched function still pops its activation).
#[inline(always)]
pub fn enter_guarded(site: &'static Site, frame: usize) -> (*const (), LeaveGuard) {
    let (imp, task) = enter_task(site, frame);
    (imp, LeaveGuard { task, frame })
}

/// Leaves the patchable function when dropped; see [`enter_guarded`].
pub struct LeaveGuard {
    task: &'static Task,
    frame: usize,
}

impl Drop for LeaveGuard {
    #[inline(always)]
    fn drop(&mut self) {
        leave_task(self.task, self.frame);
    }
}
