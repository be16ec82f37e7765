//! The engine: the kernel's `kernel/livepatch/{core,patch,transition,state}.c` for the
//! threads of a process, generic over the read-side [`Flavor`].
//!
//! One control mutex (`klp_mutex`) serializes enable, disable, reverse, force and object
//! coming and going; the call path never takes it. Every rule, errno and log line follows
//! `reference/kernel-livepatch.md`; section numbers below refer to it.
//!
//! An engine lives for the rest of the process, as the kernel's livepatch core lives as
//! long as the kernel: sites of the program keep pointers to it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI8, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use klp_sync::Flavor;

use crate::error::KlpError;
use crate::klp_log;
use crate::log::{Level, Log};
use crate::patch::{Callbacks, ObjectCtx, Patch, State};
use crate::site::{self, Code, Dispatch, Site, Unresolved, libc_errno::*};
use crate::task::{
    self, KLP_TRANSITION_IDLE, KLP_TRANSITION_PATCHED, KLP_TRANSITION_UNPATCHED, MAX_ENGINES, Task,
};

/// `KSYM_NAME_LEN`: a function name must be shorter.
pub const KSYM_NAME_LEN: usize = 512;
/// `MODULE_NAME_LEN` on 64-bit: an object name must be shorter.
pub const MODULE_NAME_LEN: usize = 56;
/// After this many failed attempts (and every this many after), waiting threads are
/// kicked (`SIGNALS_TIMEOUT`).
pub const SIGNALS_TIMEOUT: u32 = 15;

/// `FuncNode::magic` of a live node.
const NODE_LIVE: u64 = 0x6b6c_705f_6c69_7665;
/// `FuncNode::magic` of a node about to be freed.
const NODE_DEAD: u64 = 0xdead_dead_dead_dead;

/// A func as the call path sees it: one entry of a site's func_stack.
pub struct FuncNode {
    /// `NODE_LIVE` until the node is freed: the handler checks it, so that a use after
    /// free (a grace period that did not wait) is caught rather than jumped through.
    magic: AtomicU64,
    /// The replacement (for a nop: the original).
    new_func: AtomicPtr<()>,
    nop: bool,
    /// The func is being applied or reverted.
    transition: AtomicBool,
    /// The entry below (older), or null.
    next: AtomicPtr<FuncNode>,
}

// ---------------------------------------------------------------------------------------
// Engines of the process, by slot (every task has a patch state per slot).

/// What the task and site layers need from an engine of any flavor.
pub(crate) trait EngineDyn: Send + Sync {
    fn slot(&self) -> usize;
    fn target(&self) -> i8;
    fn self_switch(&self, task: &Task);
    fn task_gone(&self, task: &Task);
    fn flavor_park(&self);
    fn flavor_unpark(&self);
    fn wake_worker(&self);
    fn module_coming(&self, name: &str) -> Result<(), i32>;
    fn module_going(&self, name: &str);
    fn log(&self) -> &Log;
    fn check_own_stack(&self, task: &Task) -> bool;
}

static ENGINES: [OnceLock<&'static dyn EngineDyn>; MAX_ENGINES] =
    [const { OnceLock::new() }; MAX_ENGINES];
static ENGINE_COUNT: AtomicUsize = AtomicUsize::new(0);

fn engines() -> impl Iterator<Item = &'static dyn EngineDyn> {
    let n = ENGINE_COUNT.load(Ordering::Acquire).min(MAX_ENGINES);
    ENGINES[..n].iter().filter_map(|e| e.get().copied())
}

fn engine(slot: usize) -> Option<&'static dyn EngineDyn> {
    ENGINES.get(slot).and_then(|e| e.get().copied())
}

/// The engines whose slot bits are set in `mask`.
fn engines_in(mask: u64) -> impl Iterator<Item = &'static dyn EngineDyn> {
    bits(mask).filter_map(engine)
}

fn bits(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let b = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        Some(b)
    })
}

/// A task registered: during a transition it starts at the target (its stack is empty).
pub(crate) fn task_born(task: &Task) {
    for e in engines() {
        let t = e.target();
        if t != KLP_TRANSITION_IDLE {
            task.states[e.slot()].store(t, Ordering::Release);
        }
    }
}

/// A task's thread exited: it no longer holds any transition up.
pub(crate) fn task_exited(task: &Task) {
    for e in engines_in(task.pending.swap(0, Ordering::AcqRel)) {
        e.task_gone(task);
    }
}

/// The calling thread reached a switch point at depth 0 with switches pending.
#[cold]
pub(crate) fn self_switch(task: &Task) {
    for e in engines_in(task.pending.load(Ordering::Acquire)) {
        e.self_switch(task);
    }
}

pub(crate) fn module_coming_all(name: &str) -> Result<(), i32> {
    let done: Vec<_> = engines().collect();
    for (i, e) in done.iter().enumerate() {
        if let Err(err) = e.module_coming(name) {
            // Undo the engines that already applied their patches.
            for e in &done[..i] {
                e.module_going(name);
            }
            return Err(err);
        }
    }
    Ok(())
}

pub(crate) fn module_going_all(name: &str) {
    for e in engines() {
        e.module_going(name);
    }
}

pub(crate) fn log_everywhere(level: Level, msg: &str) {
    let mut seen = false;
    for e in engines() {
        e.log().emit(level, format_args!("{msg}"));
        seen = true;
    }
    if !seen {
        Log::default().emit(level, format_args!("{msg}"));
    }
}

/// Park the calling thread: it is about to block (sleep, wait, read) outside patchable
/// code bookkeeping. While parked, transitions check and switch it from outside, and the
/// rcu flavor stops watching it. Pair with [`unpark`].
pub fn park() {
    park_task_of(task::current());
}

/// Forget the calling thread's activations of patchable functions whose wrapper frames
/// lie at or below `frame`: the caller knows them left without returning (longjmp, an
/// exception) because its own live frames are all above `frame`. The C exports that
/// are switch points call it with their caller's stack pointer.
pub fn forget_frames_below(frame: usize) {
    let task = task::current();
    // A parked thread's stack may be in a checker's hands; it forgets at unpark's next
    // switch point instead.
    if !task.is_parked() {
        task::drop_stale_below(task, frame);
    }
}

fn park_task_of(task: &task::Task) {
    if task.is_parked() {
        // Parked already (calls do not nest): parking again must not overwrite the state
        // of a checker that holds the thread.
        return;
    }
    for e in engines_in(task.flavor_registered.load(Ordering::Relaxed)) {
        e.flavor_park();
    }
    task::park_task(task);
    for e in engines_in(task.pending.load(Ordering::Acquire)) {
        e.wake_worker();
    }
}

/// The calling thread runs again after [`park`].
pub fn unpark() {
    let task = task::current();
    if !task.is_parked() {
        return;
    }
    task::unpark_task(task);
    for e in engines_in(task.flavor_registered.load(Ordering::Relaxed)) {
        e.flavor_unpark();
    }
}

/// An explicit switch point (`klp_update_patch_state()`): the calling thread switches to
/// the target of every transition that waits for it, provided none of the functions that
/// transition replaces is on its activation stack.
pub fn update_patch_state() {
    let marker = 0u8;
    update_patch_state_at(std::ptr::from_ref(&marker) as usize);
}

fn update_patch_state_at(frame: usize) {
    let task = task::current();
    task::drop_stale_below(task, frame);
    for e in engines_in(task.pending.load(Ordering::Acquire)) {
        if e.check_own_stack(task) {
            e.self_switch(task);
        }
    }
}

/// Register `kick` to wake the calling thread when a transition has waited for it for
/// `SIGNALS_TIMEOUT` attempts (the kernel's fake signal). `None` removes it.
pub fn set_thread_kick(kick: Option<Arc<dyn Fn() + Send + Sync>>) {
    let task = task::current();
    *task.kick.lock().unwrap_or_else(|e| e.into_inner()) = kick;
}

// ---------------------------------------------------------------------------------------
// The engine.

/// The livepatch engine for one read-side flavor. Cheap to copy; lives for the rest of
/// the process.
pub struct Klp<F: Flavor + 'static> {
    core: &'static Core<F>,
}

impl<F: Flavor + 'static> Clone for Klp<F> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<F: Flavor + 'static> Copy for Klp<F> {}

impl<F: Flavor + 'static> std::fmt::Debug for Klp<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Klp")
            .field("flavor", &self.core.flavor.name())
            .field("slot", &self.core.slot)
            .finish()
    }
}

struct Core<F: Flavor + 'static> {
    slot: usize,
    bit: u64,
    flavor: F,
    log: Log,
    dispatch: Dispatch,
    ctl: Mutex<Control>,
    /// `klp_target_state`.
    target: AtomicI8,
    /// Tasks whose pending bit for this engine is set.
    pending: AtomicUsize,
    /// What the §4.5 check forbids on a stack, for explicit switch points.
    forbidden: Mutex<Arc<HashSet<(usize, usize)>>>,
    worker: Mutex<WorkerState>,
    worker_wake: Condvar,
    retry: Mutex<Duration>,
    not_watching: AtomicU64,
    warned_not_watching: AtomicBool,
    warned_idle: AtomicBool,
    /// Thread currently holding `ctl` while it runs callbacks, and a view of it.
    held_by: Mutex<Option<std::thread::ThreadId>>,
    held_view: AtomicPtr<Control>,
    /// Patches taken off the list, released once the control mutex is dropped (the
    /// kernel's asynchronous free: a release hook may use the engine).
    releases: Mutex<Vec<PatchRec>>,
    /// Signalled when a transition completes (for `wait_transition`).
    idle: Mutex<()>,
    idle_cv: Condvar,
}

/// The control mutex, held; dropping it releases the patches freed meanwhile.
struct CtlGuard<'a, F: Flavor + 'static> {
    core: &'a Core<F>,
    guard: Option<MutexGuard<'a, Control>>,
}

impl<F: Flavor + 'static> std::ops::Deref for CtlGuard<'_, F> {
    type Target = Control;
    fn deref(&self) -> &Control {
        self.guard
            .as_ref()
            .expect("control guard used after release")
    }
}

impl<F: Flavor + 'static> std::ops::DerefMut for CtlGuard<'_, F> {
    fn deref_mut(&mut self) -> &mut Control {
        self.guard
            .as_mut()
            .expect("control guard used after release")
    }
}

impl<F: Flavor + 'static> Drop for CtlGuard<'_, F> {
    fn drop(&mut self) {
        self.guard.take();
        self.core.drain_releases();
    }
}

#[derive(Default)]
struct WorkerState {
    started: bool,
    /// A retry attempt is due at this time.
    retry_at: Option<Instant>,
    /// Try now (the last task switched, or a pending task parked).
    now: bool,
}

/// The list of patches and the transition (`klp_patches`, `klp_transition_patch`).
#[derive(Default)]
struct Control {
    patches: Vec<PatchRec>,
    /// Index into `patches` of the patch in transition.
    transition: Option<usize>,
    signals_cnt: u32,
    next_id: u64,
}

struct PatchRec {
    id: u64,
    name: String,
    replace: bool,
    states: Vec<Arc<State>>,
    objects: Vec<ObjRec>,
    enabled: bool,
    forced: bool,
    on_release: Option<Arc<dyn Fn() + Send + Sync>>,
}

struct ObjRec {
    name: Option<String>,
    callbacks: Callbacks,
    funcs: Vec<FuncRec>,
    patched: bool,
    /// The object's module is bound (`obj->mod`); always true for vmlinux.
    loaded: bool,
    dynamic: bool,
    post_unpatch_enabled: bool,
}

struct FuncRec {
    old_name: String,
    old_sympos: u64,
    new_func: Option<Code>,
    sig: Option<std::any::TypeId>,
    nop: bool,
    site: Option<&'static Site>,
    patched: bool,
    node: *mut FuncNode,
}

// SAFETY: `node` is owned by the record (freed after a grace period when the record is
// dropped) and only read through atomics by other threads.
unsafe impl Send for FuncRec {}

impl ObjRec {
    fn display(&self) -> &str {
        self.name.as_deref().unwrap_or("vmlinux")
    }
    fn is_loaded(&self) -> bool {
        self.name.is_none() || self.loaded
    }
}

/// What `try_switch_task` found.
enum Switch {
    /// At the target (now or already).
    Done,
    /// Checked: a function being replaced is on its stack (or the stack is unreliable).
    Busy,
    /// Running elsewhere: not checkable through its stack.
    Running,
}

fn target_name(t: i8) -> &'static str {
    if t == KLP_TRANSITION_PATCHED {
        "patching"
    } else {
        "unpatching"
    }
}

/// Information about one patch (what `/sys/kernel/livepatch/<patch>/` shows).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchInfo {
    /// The patch's name.
    pub name: String,
    /// `enabled`.
    pub enabled: bool,
    /// `transition`: this patch is in transition.
    pub transition: bool,
    /// `replace`.
    pub replace: bool,
    /// `stack_order`: 1-based position among the patches in use (1 = oldest).
    pub stack_order: usize,
    /// Whether the patch was involved in a forced transition.
    pub forced: bool,
    /// `<object>/patched` for every object, in order (`vmlinux` for the main program).
    pub objects: Vec<(String, bool)>,
}

/// One task's state for an engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskInfo {
    /// The kernel's `comm:pid`.
    pub task: String,
    /// `patch_state`: -1, 0 or 1.
    pub patch_state: i8,
    /// `TIF_PATCH_PENDING`.
    pub pending: bool,
    /// Whether the thread is parked.
    pub parked: bool,
}

impl<F: Flavor + 'static> Klp<F> {
    /// A new engine with the default log (standard error).
    pub fn new(flavor: F) -> Self {
        Self::with_log(flavor, Log::default())
    }

    /// A new engine writing to `log`. Panics past [`MAX_ENGINES`] engines in a process.
    pub fn with_log(flavor: F, log: Log) -> Self {
        let slot = ENGINE_COUNT.fetch_add(1, Ordering::AcqRel);
        assert!(
            slot < MAX_ENGINES,
            "klp-core: at most {MAX_ENGINES} engines per process"
        );
        let core: &'static mut Core<F> = Box::leak(Box::new(Core {
            slot,
            bit: 1u64 << slot,
            flavor,
            log,
            dispatch: Dispatch {
                choose: choose_for::<F>,
                engine: std::ptr::null(),
            },
            ctl: Mutex::new(Control {
                next_id: 1,
                ..Control::default()
            }),
            target: AtomicI8::new(KLP_TRANSITION_IDLE),
            pending: AtomicUsize::new(0),
            forbidden: Mutex::new(Arc::new(HashSet::new())),
            worker: Mutex::new(WorkerState::default()),
            worker_wake: Condvar::new(),
            retry: Mutex::new(Duration::from_secs(1)),
            not_watching: AtomicU64::new(0),
            warned_not_watching: AtomicBool::new(false),
            warned_idle: AtomicBool::new(false),
            held_by: Mutex::new(None),
            held_view: AtomicPtr::new(std::ptr::null_mut()),
            releases: Mutex::new(Vec::new()),
            idle: Mutex::new(()),
            idle_cv: Condvar::new(),
        }));
        core.dispatch.engine = std::ptr::from_ref::<Core<F>>(core).cast();
        let core: &'static Core<F> = core;
        let _ = ENGINES[slot].set(core);
        Klp { core }
    }

    /// The flavor.
    pub fn flavor(&self) -> &'static F {
        &self.core.flavor
    }

    /// The log.
    pub fn log(&self) -> &'static Log {
        &self.core.log
    }

    /// How long the worker waits between completion attempts of a transition that is
    /// stuck (the kernel retries about every second). A transition still completes as soon
    /// as its last thread switches.
    pub fn set_retry_period(&self, period: Duration) {
        *self.core.retry.lock().unwrap_or_else(|e| e.into_inner()) = period;
        self.core.wake_worker();
    }

    /// How often the handler ran on a thread the flavor was not watching (rcu: a parked
    /// or unregistered thread). Always 0 under preempt.
    pub fn not_watching_count(&self) -> u64 {
        self.core.not_watching.load(Ordering::Relaxed)
    }

    /// `klp_enable_patch()`.
    pub fn enable(&self, patch: Patch) -> Result<(), KlpError> {
        self.core.enable(patch)
    }

    /// Write `enabled` (§5.1): `false` disables (or reverses a patching transition),
    /// `true` reverses an unpatching transition.
    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<(), KlpError> {
        self.core.set_enabled(name, enabled)
    }

    /// Write `force` (§5.4): `true` forces the transition of `name`.
    pub fn force(&self, name: &str, force: bool) -> Result<(), KlpError> {
        self.core.force(name, force)
    }

    /// Every patch in use, oldest first.
    pub fn patches(&self) -> Vec<PatchInfo> {
        let ctl = self.core.lock();
        (0..ctl.patches.len()).map(|i| info(&ctl, i)).collect()
    }

    /// One patch, if it is in use.
    pub fn patch(&self, name: &str) -> Option<PatchInfo> {
        let ctl = self.core.lock();
        ctl.patches
            .iter()
            .position(|p| p.name == name)
            .map(|i| info(&ctl, i))
    }

    /// Whether a transition is in progress.
    pub fn in_transition(&self) -> bool {
        self.core.target.load(Ordering::Acquire) != KLP_TRANSITION_IDLE
    }

    /// Wait until no transition is in progress; `false` on timeout. The calling thread
    /// is parked meanwhile (it is blocked), so it never holds the transition up itself.
    pub fn wait_transition(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        let parked = task::existing().is_some();
        if parked {
            park();
        }
        let mut g = self.core.idle.lock().unwrap_or_else(|e| e.into_inner());
        let ok = loop {
            if !self.in_transition() {
                break true;
            }
            let now = Instant::now();
            if now >= end {
                break false;
            }
            g = self
                .core
                .idle_cv
                .wait_timeout(g, end - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        drop(g);
        if parked {
            unpark();
        }
        ok
    }

    /// `klp_get_state(patch, id)`.
    pub fn get_state(&self, patch: &str, id: u64) -> Option<Arc<State>> {
        self.core.with_ctl(|ctl| {
            ctl.patches
                .iter()
                .find(|p| p.name == patch)
                .and_then(|p| p.states.iter().find(|s| s.id == id).cloned())
        })
    }

    /// `klp_get_prev_state(id)`; `None` (with a warning) outside a transition.
    pub fn get_prev_state(&self, id: u64) -> Option<Arc<State>> {
        self.core.with_ctl(|ctl| self.core.prev_state(ctl, id))
    }

    /// The calling thread's patch state in this engine (-1, 0, 1).
    pub fn thread_patch_state(&self) -> i8 {
        task::existing().map_or(KLP_TRANSITION_IDLE, |t| t.state(self.core.slot))
    }

    /// Every task's state in this engine.
    pub fn tasks(&self) -> Vec<TaskInfo> {
        task::tasks()
            .iter()
            .map(|t| TaskInfo {
                task: t.describe(),
                patch_state: t.state(self.core.slot),
                pending: t.pending.load(Ordering::Acquire) & self.core.bit != 0,
                parked: t.is_parked(),
            })
            .collect()
    }
}

fn info(ctl: &Control, i: usize) -> PatchInfo {
    let p = &ctl.patches[i];
    PatchInfo {
        name: p.name.clone(),
        enabled: p.enabled,
        transition: ctl.transition == Some(i),
        replace: p.replace,
        stack_order: i + 1,
        forced: p.forced,
        objects: p
            .objects
            .iter()
            .map(|o| (o.display().to_owned(), o.patched))
            .collect(),
    }
}

/// The §3 decision, monomorphized per flavor.
///
/// # Safety
///
/// 1. `engine` is the `Core<F>` whose `dispatch` this function was reached through.
unsafe extern "C" fn choose_for<F: Flavor + 'static>(
    engine: *const (),
    site: &'static Site,
    task: &Task,
) -> *const () {
    // SAFETY: clause 1; engines are leaked, so the reference is 'static.
    let core = unsafe { &*engine.cast::<Core<F>>() };
    if task.flavor_registered.load(Ordering::Relaxed) & core.bit == 0 {
        core.register_flavor(task);
    }
    let _guard = core.flavor.read_lock();
    if !core.flavor.is_watching() {
        core.report_not_watching(task);
    }
    // Acquire (R1): a func seen on the stack comes with its `transition` flag.
    let top = site.top.load(Ordering::Acquire);
    // SAFETY: entries on a func_stack are freed only after a grace period that begins
    // after they are unlinked, and we are inside a read section.
    let Some(func) = (unsafe { top.as_ref() }) else {
        return site.original.0;
    };
    check_node(func);
    let mut chosen = func;
    // Acquire (R2): the task state read below is ordered after the flag.
    if func.transition.load(Ordering::Acquire) {
        let state = task.states[core.slot].load(Ordering::Acquire);
        if state == KLP_TRANSITION_IDLE {
            core.warn_idle(task);
        } else if state == KLP_TRANSITION_UNPATCHED {
            // SAFETY: as for `top`.
            match unsafe { func.next.load(Ordering::Acquire).as_ref() } {
                None => return site.original.0,
                Some(below) => {
                    check_node(below);
                    chosen = below;
                }
            }
        }
    }
    if chosen.nop {
        site.original.0
    } else {
        chosen.new_func.load(Ordering::Relaxed).cast_const()
    }
}

/// Abort on a func record that was freed: the grace period did not protect this reader.
#[inline(always)]
fn check_node(n: &FuncNode) {
    if n.magic.load(Ordering::Relaxed) != NODE_LIVE {
        node_poisoned();
    }
}

#[cold]
#[inline(never)]
fn node_poisoned() -> ! {
    eprintln!("klp-core: the handler read a freed func record (a grace period did not wait)");
    std::process::abort();
}

impl<F: Flavor + 'static> Core<F> {
    fn lock(&self) -> CtlGuard<'_, F> {
        CtlGuard {
            core: self,
            guard: Some(self.ctl.lock().unwrap_or_else(|e| e.into_inner())),
        }
    }

    #[cold]
    #[inline(never)]
    fn register_flavor(&self, task: &Task) {
        if task.is_current() {
            self.flavor.register_current_thread();
            task.flavor_registered.fetch_or(self.bit, Ordering::Relaxed);
        }
    }

    /// The kernel's WARN_ON_ONCE of a task in transition without a patch state.
    #[cold]
    #[inline(never)]
    fn warn_idle(&self, task: &Task) {
        if !self.warned_idle.swap(true, Ordering::Relaxed) {
            self.log.emit(
                Level::Warning,
                format_args!(
                    "WARNING: task {} in transition with no patch state",
                    task.describe()
                ),
            );
        }
    }

    #[cold]
    #[inline(never)]
    fn report_not_watching(&self, task: &Task) {
        self.not_watching.fetch_add(1, Ordering::Relaxed);
        if !self.warned_not_watching.swap(true, Ordering::Relaxed) {
            klp_log!(
                self.log,
                Level::Warning,
                "handler ran on {} where {} is not watching: its choice is not protected",
                task.describe(),
                self.flavor.name()
            );
        }
    }

    /// Run `f` on the control state, even from a callback of this engine that runs while
    /// the calling thread holds the control mutex.
    fn with_ctl<R>(&self, f: impl FnOnce(&Control) -> R) -> R {
        let me = std::thread::current().id();
        if *self.held_by.lock().unwrap_or_else(|e| e.into_inner()) == Some(me) {
            let p = self.held_view.load(Ordering::Acquire);
            // SAFETY: set by `run_callback` on this very thread for the duration of a
            // callback, while it holds the control mutex and does not touch the state.
            return f(unsafe { &*p });
        }
        f(&self.lock())
    }

    fn prev_state(&self, ctl: &Control, id: u64) -> Option<Arc<State>> {
        let Some(t) = ctl.transition else {
            self.log.emit(
                Level::Warning,
                format_args!("WARNING: klp_get_prev_state called outside a transition"),
            );
            return None;
        };
        let mut found = None;
        for p in &ctl.patches[..t] {
            if let Some(s) = p.states.iter().find(|s| s.id == id) {
                found = Some(Arc::clone(s));
            }
        }
        found
    }

    /// Call a callback of patch `pi`, object `oi` with the control state visible to it.
    fn run_callback<R>(
        &self,
        ctl: &mut Control,
        pi: usize,
        oi: usize,
        call: impl FnOnce(&ObjectCtx<'_>) -> R,
    ) -> R {
        let me = std::thread::current().id();
        let ctl_ptr: *mut Control = ctl;
        *self.held_by.lock().unwrap_or_else(|e| e.into_inner()) = Some(me);
        self.held_view.store(ctl_ptr, Ordering::Release);
        struct Unhold<'a>(&'a Mutex<Option<std::thread::ThreadId>>);
        impl Drop for Unhold<'_> {
            fn drop(&mut self) {
                *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
        }
        let _unhold = Unhold(&self.held_by);
        let ctl: &Control = ctl;
        let p = &ctl.patches[pi];
        let prev = |id: u64| self.prev_state(ctl, id);
        let ctx = ObjectCtx {
            patch: &p.name,
            object: p.objects[oi].name.as_deref(),
            states: &p.states,
            prev_state: &prev,
            log: &self.log,
        };
        call(&ctx)
    }

    fn pre_patch(&self, ctl: &mut Control, pi: usize, oi: usize) -> Result<(), i32> {
        let cb = ctl.patches[pi].objects[oi].callbacks.pre_patch.clone();
        let r = match cb {
            Some(f) => self.run_callback(ctl, pi, oi, |c| f(c)),
            None => Ok(()),
        };
        ctl.patches[pi].objects[oi].post_unpatch_enabled = r.is_ok();
        r
    }

    fn post_patch(&self, ctl: &mut Control, pi: usize, oi: usize) {
        if let Some(f) = ctl.patches[pi].objects[oi].callbacks.post_patch.clone() {
            self.run_callback(ctl, pi, oi, |c| f(c));
        }
    }

    fn pre_unpatch(&self, ctl: &mut Control, pi: usize, oi: usize) {
        if let Some(f) = ctl.patches[pi].objects[oi].callbacks.pre_unpatch.clone() {
            self.run_callback(ctl, pi, oi, |c| f(c));
        }
    }

    fn post_unpatch(&self, ctl: &mut Control, pi: usize, oi: usize) {
        if let Some(f) = ctl.patches[pi].objects[oi].callbacks.post_unpatch.clone()
            && ctl.patches[pi].objects[oi].post_unpatch_enabled
        {
            self.run_callback(ctl, pi, oi, |c| f(c));
        }
        ctl.patches[pi].objects[oi].post_unpatch_enabled = false;
    }

    // ----- §2 enable -----------------------------------------------------------------

    fn enable(&'static self, patch: Patch) -> Result<(), KlpError> {
        let mut ctl = self.lock();
        if !self.is_compatible(&ctl, &patch) {
            klp_log!(
                self.log,
                Level::Err,
                "Livepatch patch ({}) is not compatible with the already installed livepatches.",
                patch.name
            );
            return Err(KlpError::Incompatible(patch.name));
        }
        let pi = self.init_patch(&mut ctl, patch)?;
        if let Err(e) = self.enable_inner(&mut ctl, pi) {
            // §2.8: unwind; the patch was never usable.
            let rec = ctl.patches.remove(pi);
            self.free_patch(rec);
            return Err(e);
        }
        Ok(())
    }

    /// §8.2.
    fn is_compatible(&self, ctl: &Control, new: &Patch) -> bool {
        ctl.patches.iter().flat_map(|p| p.states.iter()).all(|old| {
            match new.states.iter().find(|s| s.id == old.id) {
                Some(s) => s.version >= old.version,
                None => !new.replace,
            }
        })
    }

    /// §2.3-2.6: build the patch record, add nops, validate, resolve; on success the patch
    /// is appended to the list and its index returned. Nothing changes on error.
    fn init_patch(&self, ctl: &mut Control, patch: Patch) -> Result<usize, KlpError> {
        if ctl.patches.iter().any(|p| p.name == patch.name) {
            return Err(KlpError::Exists(format!("patch '{}'", patch.name)));
        }
        if patch.name.is_empty() || patch.name.len() >= MODULE_NAME_LEN {
            return Err(KlpError::Invalid(format!(
                "patch name '{}' is empty or too long",
                patch.name
            )));
        }
        let mut objects: Vec<ObjRec> = Vec::new();
        for o in patch.objects {
            let funcs = o
                .funcs
                .into_iter()
                .map(|f| FuncRec {
                    old_name: f.old_name,
                    old_sympos: f.old_sympos,
                    new_func: f.new_func,
                    sig: f.sig,
                    nop: false,
                    site: None,
                    patched: false,
                    node: std::ptr::null_mut(),
                })
                .collect();
            objects.push(ObjRec {
                name: o.name,
                callbacks: o.callbacks,
                funcs,
                patched: false,
                loaded: false,
                dynamic: false,
                post_unpatch_enabled: false,
            });
        }
        let mut rec = PatchRec {
            id: ctl.next_id,
            name: patch.name,
            replace: patch.replace,
            states: patch.states,
            objects,
            enabled: false,
            forced: false,
            on_release: patch.on_release,
        };
        if rec.replace {
            add_nops(ctl, &mut rec);
        }
        // §2.4, §2.5: names and duplicates.
        let mut seen_objs = HashSet::new();
        for o in &rec.objects {
            if let Some(n) = &o.name
                && (n.len() >= MODULE_NAME_LEN || n.is_empty())
            {
                return Err(KlpError::Invalid(format!(
                    "object name '{n}' is empty or too long"
                )));
            }
            // The kernel's sysfs directory names: an object named "vmlinux" collides
            // with the main program's.
            if !seen_objs.insert(o.display()) {
                return Err(KlpError::Exists(format!(
                    "object '{}' twice in patch '{}'",
                    o.display(),
                    rec.name
                )));
            }
            let mut seen_funcs = HashSet::new();
            for f in &o.funcs {
                if f.old_name.is_empty() {
                    return Err(KlpError::Invalid("a func with no old_name".into()));
                }
                if !f.nop && f.new_func.is_none() {
                    return Err(KlpError::Invalid(format!(
                        "func '{}' has no new_func",
                        f.old_name
                    )));
                }
                if f.old_name.len() >= KSYM_NAME_LEN {
                    return Err(KlpError::Invalid(format!(
                        "func name '{}...' is too long",
                        &f.old_name[..32]
                    )));
                }
                if !seen_funcs.insert((f.old_name.clone(), f.old_sympos.max(1))) {
                    return Err(KlpError::Exists(format!(
                        "func '{},{}' twice in object '{}'",
                        f.old_name,
                        f.old_sympos.max(1),
                        o.display()
                    )));
                }
            }
        }
        // §2.6: resolve what is loaded.
        for oi in 0..rec.objects.len() {
            let loaded = match &rec.objects[oi].name {
                None => true,
                Some(n) => site::object_state(n).is_some(),
            };
            rec.objects[oi].loaded = loaded;
            if loaded {
                self.resolve_object(&mut rec.objects[oi])?;
            }
        }
        for o in &mut rec.objects {
            for f in &mut o.funcs {
                f.node = Box::into_raw(Box::new(FuncNode {
                    magic: AtomicU64::new(NODE_LIVE),
                    new_func: AtomicPtr::new(
                        f.new_func.map_or(std::ptr::null_mut(), |c| c.0.cast_mut()),
                    ),
                    nop: f.nop,
                    transition: AtomicBool::new(false),
                    next: AtomicPtr::new(std::ptr::null_mut()),
                }));
                if f.nop
                    && let Some(s) = f.site
                {
                    f.new_func = Some(s.original);
                }
            }
        }
        ctl.next_id += 1;
        ctl.patches.push(rec);
        Ok(ctl.patches.len() - 1)
    }

    /// §1.3 for every func of `o`: find its site and check the replacement's type.
    fn resolve_object(&self, o: &mut ObjRec) -> Result<(), KlpError> {
        let objname = o.name.clone();
        for f in &mut o.funcs {
            let site = match site::resolve(objname.as_deref(), &f.old_name, f.old_sympos) {
                Ok(s) => s,
                Err(Unresolved::NotFound) => {
                    klp_log!(
                        self.log,
                        Level::Err,
                        "symbol '{}' not found in symbol table",
                        f.old_name
                    );
                    return Err(KlpError::Invalid(format!(
                        "symbol '{}' not found",
                        f.old_name
                    )));
                }
                Err(Unresolved::Ambiguous) => {
                    klp_log!(
                        self.log,
                        Level::Err,
                        "unresolvable ambiguity for symbol '{}' in object '{}'",
                        f.old_name,
                        objname.as_deref().unwrap_or("(null)")
                    );
                    return Err(KlpError::Invalid(format!(
                        "symbol '{}' is ambiguous",
                        f.old_name
                    )));
                }
                Err(Unresolved::NoSuchPosition) => {
                    klp_log!(
                        self.log,
                        Level::Err,
                        "symbol position {} for symbol '{}' in object '{}' not found",
                        f.old_sympos,
                        f.old_name,
                        objname.as_deref().unwrap_or("vmlinux")
                    );
                    return Err(KlpError::Invalid(format!(
                        "symbol '{}' position {} not found",
                        f.old_name, f.old_sympos
                    )));
                }
            };
            if let (Some(want), Some(have)) = (site.sig, f.sig)
                && want() != have
            {
                klp_log!(
                    self.log,
                    Level::Err,
                    "replacement for '{}' does not have the original's type",
                    f.old_name
                );
                return Err(KlpError::Invalid(format!(
                    "replacement for '{}' has another type",
                    f.old_name
                )));
            }
            f.site = Some(site);
            if f.nop {
                f.new_func = Some(site.original);
                // SAFETY: the node, when it exists, is owned by this record and not on a
                // stack (the func is not patched while it is resolved).
                if let Some(n) = unsafe { f.node.as_ref() } {
                    n.new_func
                        .store(site.original.0.cast_mut(), Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    /// §2.7.
    fn enable_inner(&'static self, ctl: &mut Control, pi: usize) -> Result<(), KlpError> {
        if ctl.transition.is_some() {
            return Err(KlpError::Busy);
        }
        klp_log!(
            self.log,
            Level::Notice,
            "enabling patch '{}'",
            ctl.patches[pi].name
        );
        self.init_transition(ctl, pi, KLP_TRANSITION_PATCHED);
        for oi in 0..ctl.patches[pi].objects.len() {
            if !ctl.patches[pi].objects[oi].is_loaded() {
                continue;
            }
            if let Err(e) = self.pre_patch(ctl, pi, oi) {
                klp_log!(
                    self.log,
                    Level::Warning,
                    "pre-patch callback failed for object '{}'",
                    ctl.patches[pi].objects[oi].display()
                );
                self.enable_failed(ctl, pi);
                return Err(KlpError::Callback(e));
            }
            if let Err(e) = self.patch_object(&mut ctl.patches[pi].objects[oi]) {
                klp_log!(
                    self.log,
                    Level::Warning,
                    "failed to patch object '{}'",
                    ctl.patches[pi].objects[oi].display()
                );
                self.enable_failed(ctl, pi);
                return Err(e);
            }
        }
        self.start_transition(ctl);
        ctl.patches[pi].enabled = true;
        self.try_complete_transition(ctl, true);
        Ok(())
    }

    fn enable_failed(&'static self, ctl: &mut Control, pi: usize) {
        klp_log!(
            self.log,
            Level::Warning,
            "failed to enable patch '{}'",
            ctl.patches[pi].name
        );
        self.cancel_transition(ctl);
    }

    // ----- §3.1 func_stack -------------------------------------------------------------

    fn patch_func(&self, f: &mut FuncRec) -> Result<(), KlpError> {
        let site = f.site.expect("patch_func on an unresolved func");
        let mine = std::ptr::from_ref(&self.dispatch).cast_mut();
        // One engine per site (the kernel's IPMODIFY exclusivity).
        match site.owner.compare_exchange(
            std::ptr::null_mut(),
            mine,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {}
            Err(o) if o == mine => {}
            Err(_) => {
                klp_log!(
                    self.log,
                    Level::Err,
                    "failed to register ftrace handler for function '{}' ({})",
                    f.old_name,
                    -EBUSY
                );
                return Err(KlpError::SiteBusy(f.old_name.clone()));
            }
        }
        // SAFETY: the node is owned by the record and lives until after a grace period
        // that follows its removal from every stack.
        let node = unsafe { &*f.node };
        node.next
            .store(site.top.load(Ordering::Relaxed), Ordering::Relaxed);
        // Release (W2): the node's fields, its `transition` flag included, are visible to a
        // handler that sees it on top.
        site.top.store(f.node, Ordering::Release);
        f.patched = true;
        Ok(())
    }

    fn unpatch_func(&self, f: &mut FuncRec) {
        if !f.patched {
            return;
        }
        let site = f.site.expect("patched func without a site");
        let top = site.top.load(Ordering::Relaxed);
        // SAFETY: the node is ours (see patch_func).
        let next = unsafe { &*f.node }.next.load(Ordering::Relaxed);
        if top == f.node {
            site.top.store(next, Ordering::Release);
        } else {
            let mut p = top;
            // SAFETY: stack entries are live nodes of patches still on the list (they are
            // freed only after being unlinked); the control mutex serializes all writers.
            while let Some(n) = unsafe { p.as_ref() } {
                let nx = n.next.load(Ordering::Relaxed);
                if nx == f.node {
                    n.next.store(next, Ordering::Release);
                    break;
                }
                p = nx;
            }
        }
        if site.top.load(Ordering::Relaxed).is_null() {
            // The last func of the site: the redirect goes away. A handler that still holds
            // the dispatch finds an empty stack and calls the original.
            site.owner.store(std::ptr::null_mut(), Ordering::Release);
        }
        f.patched = false;
    }

    fn patch_object(&self, o: &mut ObjRec) -> Result<(), KlpError> {
        for i in 0..o.funcs.len() {
            if let Err(e) = self.patch_func(&mut o.funcs[i]) {
                self.unpatch_object(o, false);
                return Err(e);
            }
        }
        o.patched = true;
        Ok(())
    }

    fn unpatch_object(&self, o: &mut ObjRec, nops_only: bool) {
        for f in &mut o.funcs {
            if !nops_only || f.nop {
                self.unpatch_func(f);
            }
        }
        if !nops_only || o.dynamic {
            o.patched = false;
        }
    }

    fn unpatch_objects(&self, p: &mut PatchRec, nops_only: bool) {
        for o in &mut p.objects {
            if o.patched {
                self.unpatch_object(o, nops_only);
            }
        }
    }

    // ----- §4 transitions -------------------------------------------------------------

    fn funcs_of(p: &PatchRec) -> impl Iterator<Item = &FuncNode> {
        // SAFETY: nodes are owned by the record for as long as it lives.
        p.objects
            .iter()
            .flat_map(|o| o.funcs.iter())
            .map(|f| unsafe { &*f.node })
    }

    /// §4.2.
    fn init_transition(&self, ctl: &mut Control, pi: usize, target: i8) {
        ctl.transition = Some(pi);
        self.target.store(target, Ordering::SeqCst);
        klp_log!(
            self.log,
            Level::Debug,
            "'{}': initializing {} transition",
            ctl.patches[pi].name,
            target_name(target)
        );
        let initial = if target == KLP_TRANSITION_PATCHED {
            KLP_TRANSITION_UNPATCHED
        } else {
            KLP_TRANSITION_PATCHED
        };
        for t in task::tasks().iter() {
            t.states[self.slot].store(initial, Ordering::SeqCst);
        }
        // W1: SeqCst stores above, SeqCst stores below.
        for n in Self::funcs_of(&ctl.patches[pi]) {
            n.transition.store(true, Ordering::SeqCst);
        }
    }

    /// §4.3.
    fn start_transition(&self, ctl: &mut Control) {
        let pi = ctl.transition.expect("start without a transition");
        let target = self.target.load(Ordering::SeqCst);
        klp_log!(
            self.log,
            Level::Notice,
            "'{}': starting {} transition",
            ctl.patches[pi].name,
            target_name(target)
        );
        self.update_forbidden(ctl);
        // The count is stored before any task is flagged: a flagged task may switch
        // itself at once, and its decrement must find its own count there (else the
        // last switch would not see zero and the transition would wait for the timer).
        // Under the task list's lock, no task is born or exits meanwhile.
        let all = task::tasks();
        let flag: Vec<&Arc<Task>> = all
            .iter()
            .filter(|t| t.states[self.slot].load(Ordering::SeqCst) != target)
            .collect();
        self.pending.store(flag.len(), Ordering::SeqCst);
        for t in flag {
            t.pending.fetch_or(self.bit, Ordering::SeqCst);
        }
        drop(all);
        ctl.signals_cnt = 0;
    }

    /// The (site, implementation) pairs that a task switching to the target must not be
    /// running (§4.5 `klp_check_stack_func`), for the transition patch's patched objects.
    fn forbidden_set(&self, ctl: &Control) -> HashSet<(usize, usize)> {
        let mut set = HashSet::new();
        let Some(pi) = ctl.transition else { return set };
        let target = self.target.load(Ordering::SeqCst);
        for o in ctl.patches[pi].objects.iter().filter(|o| o.patched) {
            for f in o.funcs.iter().filter(|f| f.patched) {
                let Some(site) = f.site else { continue };
                let addr = if target == KLP_TRANSITION_UNPATCHED {
                    f.new_func.map_or(site.original.0, |c| c.0)
                } else {
                    // SAFETY: our node, on the stack (patched).
                    let below = unsafe { &*f.node }.next.load(Ordering::Relaxed);
                    // SAFETY: a live node of an older patch.
                    match unsafe { below.as_ref() } {
                        None => site.original.0,
                        Some(b) if b.nop => site.original.0,
                        Some(b) => b.new_func.load(Ordering::Relaxed),
                    }
                };
                set.insert((std::ptr::from_ref(site) as usize, addr as usize));
            }
        }
        set
    }

    fn update_forbidden(&self, ctl: &Control) {
        let set = Arc::new(self.forbidden_set(ctl));
        *self.forbidden.lock().unwrap_or_else(|e| e.into_inner()) = set;
    }

    fn stack_ok(
        &self,
        stack: &task::ActStack,
        forbidden: &HashSet<(usize, usize)>,
    ) -> Result<(), Option<&'static str>> {
        if !stack.reliable() {
            return Err(None);
        }
        for a in stack.entries() {
            if forbidden.contains(&(a.site as usize, a.imp as usize)) {
                // SAFETY: activation sites are 'static sites.
                return Err(Some(unsafe { &*a.site }.name));
            }
        }
        Ok(())
    }

    /// One pending task fewer; returns the count before. The count only decides when to
    /// wake the worker early, so it saturates rather than wrap when a reversal reset it
    /// under a task that was switching.
    fn pending_done(&self) -> usize {
        self.pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(1))
            })
            .unwrap_or(0)
    }

    fn switch(&self, t: &Task, target: i8) {
        // The last switch wakes the worker even here, inside an attempt: the attempt may
        // already have seen another task still running that has switched itself since
        // (its own decrement did not find the count at one), and would otherwise wait
        // for the timer.
        if t.pending.fetch_and(!self.bit, Ordering::AcqRel) & self.bit != 0
            && self.pending_done() == 1
        {
            self.wake_worker();
        }
        t.states[self.slot].store(target, Ordering::Release);
    }

    /// §4.5 `klp_try_switch_task`. A task that is running elsewhere is `Running`: the
    /// caller may still claim it if it is outside patchable code.
    fn try_switch_task(&self, t: &Task, target: i8, forbidden: &HashSet<(usize, usize)>) -> Switch {
        if t.states[self.slot].load(Ordering::Acquire) == target {
            return Switch::Done;
        }
        let ok = if t.is_current() {
            // SAFETY: our own stack, read by its owner.
            self.stack_ok(unsafe { t.own_stack() }, forbidden).is_ok()
        } else if let Some(claimed) = t.claim() {
            // Switch while we hold it, so that it sees the switch when it unparks.
            let ok = self.stack_ok(claimed.stack(), forbidden).is_ok();
            if ok {
                self.switch(t, target);
            }
            return if ok { Switch::Done } else { Switch::Busy };
        } else {
            return Switch::Running;
        };
        if ok {
            self.switch(t, target);
            Switch::Done
        } else {
            Switch::Busy
        }
    }

    /// Switch the running tasks that are outside every patchable function, with one heavy
    /// barrier for all of them (`park::RunClaim`). Returns whether all were switched.
    fn switch_running(&self, running: &[Arc<Task>], target: i8) -> bool {
        if running.is_empty() {
            return true;
        }
        for t in running {
            t.run.claim();
        }
        crate::park::heavy_barrier();
        let mut all = true;
        for t in running {
            if t.run.outside() {
                self.switch(t, target);
            } else {
                all = false;
            }
            t.run.release();
        }
        all
    }

    /// §4.4: returns whether the transition completed.
    /// `counted`: a synchronous attempt or a timer retry (the kernel's attempts, which
    /// count towards signalling); attempts made early because a task switched or parked
    /// do not count.
    fn try_complete_transition(&'static self, ctl: &mut Control, counted: bool) -> bool {
        let Some(pi) = ctl.transition else {
            return true;
        };
        let target = self.target.load(Ordering::SeqCst);
        let forbidden = Arc::clone(&self.forbidden.lock().unwrap_or_else(|e| e.into_inner()));
        let mut complete = true;
        let mut running = Vec::new();
        for t in task::tasks().iter() {
            match self.try_switch_task(t, target, &forbidden) {
                Switch::Done => {}
                Switch::Busy => complete = false,
                Switch::Running => running.push(Arc::clone(t)),
            }
        }
        if !self.switch_running(&running, target) {
            complete = false;
        }
        if !complete {
            if counted {
                if ctl.signals_cnt != 0 && ctl.signals_cnt.is_multiple_of(SIGNALS_TIMEOUT) {
                    self.send_signals(ctl);
                }
                ctl.signals_cnt += 1;
            }
            self.schedule_retry();
            return false;
        }
        let patch_id = ctl.patches[pi].id;
        self.complete_transition(ctl);
        let pi = ctl
            .patches
            .iter()
            .position(|p| p.id == patch_id)
            .expect("transition patch vanished");
        if !ctl.patches[pi].enabled {
            let rec = ctl.patches.remove(pi);
            self.free_patch(rec);
        } else if ctl.patches[pi].replace {
            let old: Vec<PatchRec> = ctl.patches.drain(..pi).collect();
            for rec in old {
                self.free_patch(rec);
            }
        }
        true
    }

    /// §4.7.
    fn send_signals(&self, ctl: &Control) {
        if ctl.signals_cnt == SIGNALS_TIMEOUT {
            klp_log!(self.log, Level::Notice, "signaling remaining tasks");
        }
        let kicks: Vec<_> = task::tasks()
            .iter()
            .filter(|t| t.pending.load(Ordering::Acquire) & self.bit != 0)
            .filter_map(|t| t.kick.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect();
        for k in kicks {
            k();
        }
    }

    /// §4.9.
    fn complete_transition(&self, ctl: &mut Control) {
        let pi = ctl.transition.expect("complete without a transition");
        let target = self.target.load(Ordering::SeqCst);
        klp_log!(
            self.log,
            Level::Debug,
            "'{}': completing {} transition",
            ctl.patches[pi].name,
            target_name(target)
        );
        if ctl.patches[pi].replace && target == KLP_TRANSITION_PATCHED {
            // klp_unpatch_replaced_patches: the older patches leave every stack, with no
            // callbacks; then klp_discard_nops.
            for old in 0..pi {
                ctl.patches[old].enabled = false;
                self.unpatch_objects(&mut ctl.patches[old], false);
            }
            self.unpatch_objects(&mut ctl.patches[pi], true);
            self.discard_nops(&mut ctl.patches[pi]);
        }
        if target == KLP_TRANSITION_UNPATCHED {
            self.unpatch_objects(&mut ctl.patches[pi], false);
            self.flavor.synchronize();
        }
        for n in Self::funcs_of(&ctl.patches[pi]) {
            n.transition.store(false, Ordering::SeqCst);
        }
        if target == KLP_TRANSITION_PATCHED {
            self.flavor.synchronize();
        }
        for t in task::tasks().iter() {
            if t.pending.fetch_and(!self.bit, Ordering::AcqRel) & self.bit != 0 {
                self.log.emit(
                    Level::Warning,
                    format_args!("WARNING: task {} still pending at completion", t.describe()),
                );
            }
            t.states[self.slot].store(KLP_TRANSITION_IDLE, Ordering::SeqCst);
        }
        self.pending.store(0, Ordering::SeqCst);
        for oi in 0..ctl.patches[pi].objects.len() {
            if !ctl.patches[pi].objects[oi].is_loaded() {
                continue;
            }
            if target == KLP_TRANSITION_PATCHED {
                self.post_patch(ctl, pi, oi);
            } else {
                self.post_unpatch(ctl, pi, oi);
            }
        }
        klp_log!(
            self.log,
            Level::Notice,
            "'{}': {} complete",
            ctl.patches[pi].name,
            target_name(target)
        );
        self.target.store(KLP_TRANSITION_IDLE, Ordering::SeqCst);
        ctl.transition = None;
        {
            // Under `idle`, so a waiter that saw the transition cannot miss this.
            let _g = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            self.idle_cv.notify_all();
        }
        self.update_forbidden(ctl);
        let mut w = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        w.retry_at = None;
        w.now = false;
    }

    fn discard_nops(&self, p: &mut PatchRec) {
        let mut dropped: Vec<*mut FuncNode> = Vec::new();
        for o in &mut p.objects {
            o.funcs.retain(|f| {
                if f.nop {
                    dropped.push(f.node);
                    false
                } else {
                    true
                }
            });
        }
        p.objects.retain(|o| !o.dynamic);
        self.free_nodes(dropped);
    }

    /// Free func nodes after a grace period (a handler may still be looking at them).
    fn free_nodes(&self, nodes: Vec<*mut FuncNode>) {
        if nodes.is_empty() {
            return;
        }
        let addrs: Vec<usize> = nodes.into_iter().map(|p| p as usize).collect();
        self.flavor.defer(Box::new(move || {
            for a in addrs {
                // SAFETY: allocated by Box in init_patch, unlinked from every stack before
                // this grace period began, freed exactly once.
                let node = unsafe { Box::from_raw(a as *mut FuncNode) };
                node.magic.store(NODE_DEAD, Ordering::Relaxed);
                node.new_func.store(std::ptr::null_mut(), Ordering::Relaxed);
                drop(node);
            }
        }));
    }

    /// §5.5: a patch is off the list (or never got on it); it is released when the
    /// control mutex is dropped.
    fn free_patch(&self, rec: PatchRec) {
        self.releases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(rec);
    }

    /// Release the patches freed under the control mutex, which is no longer held.
    fn drain_releases(&self) {
        let recs = std::mem::take(&mut *self.releases.lock().unwrap_or_else(|e| e.into_inner()));
        for rec in recs {
            self.release_patch(rec);
        }
    }

    /// `klp_free_patch_finish`: the func records after a grace period, then the release
    /// hook (the module reference) unless the patch was forced.
    fn release_patch(&self, rec: PatchRec) {
        let nodes: Vec<*mut FuncNode> = rec
            .objects
            .iter()
            .flat_map(|o| o.funcs.iter())
            .map(|f| f.node)
            .filter(|n| !n.is_null())
            .collect();
        let forced = rec.forced;
        let release = rec.on_release.clone();
        self.free_nodes(nodes);
        if let Some(r) = release
            && !forced
        {
            // After a grace period, so no handler still returns the patch's code.
            self.flavor.defer(Box::new(move || r()));
        }
    }

    /// §4.10.
    fn cancel_transition(&'static self, ctl: &mut Control) {
        if self.target.load(Ordering::SeqCst) != KLP_TRANSITION_PATCHED {
            return;
        }
        let pi = ctl.transition.expect("cancel without a transition");
        klp_log!(
            self.log,
            Level::Debug,
            "'{}': canceling patching transition, going to unpatch",
            ctl.patches[pi].name
        );
        self.target
            .store(KLP_TRANSITION_UNPATCHED, Ordering::SeqCst);
        // Tasks were never flagged (no start): nothing is pending.
        self.complete_transition(ctl);
    }

    /// §4.11.
    fn reverse_transition(&'static self, ctl: &mut Control) {
        let pi = ctl.transition.expect("reverse without a transition");
        let target = self.target.load(Ordering::SeqCst);
        klp_log!(
            self.log,
            Level::Debug,
            "'{}': reversing transition from {}",
            ctl.patches[pi].name,
            if target == KLP_TRANSITION_PATCHED {
                "patching to unpatching"
            } else {
                "unpatching to patching"
            }
        );
        for t in task::tasks().iter() {
            t.pending.fetch_and(!self.bit, Ordering::SeqCst);
        }
        self.pending.store(0, Ordering::SeqCst);
        // Let in-flight self-switches (they run in read sections) finish before the flip.
        self.flavor.synchronize();
        ctl.patches[pi].enabled = !ctl.patches[pi].enabled;
        let new = if target == KLP_TRANSITION_PATCHED {
            KLP_TRANSITION_UNPATCHED
        } else {
            KLP_TRANSITION_PATCHED
        };
        self.target.store(new, Ordering::SeqCst);
        self.start_transition(ctl);
        // No completion attempt here: the scheduled retry completes it.
        self.schedule_retry();
    }

    /// §4.12.
    fn force_transition(&'static self, ctl: &mut Control) {
        klp_log!(
            self.log,
            Level::Warning,
            "forcing remaining tasks to the patched state"
        );
        let target = self.target.load(Ordering::SeqCst);
        for t in task::tasks().iter() {
            if t.pending.fetch_and(!self.bit, Ordering::SeqCst) & self.bit != 0 {
                t.states[self.slot].store(target, Ordering::SeqCst);
            }
        }
        self.pending.store(0, Ordering::SeqCst);
        let pi = ctl.transition.expect("force without a transition");
        if target == KLP_TRANSITION_UNPATCHED {
            ctl.patches[pi].forced = true;
        } else if ctl.patches[pi].replace {
            for (i, p) in ctl.patches.iter_mut().enumerate() {
                if i != pi {
                    p.forced = true;
                }
            }
        }
        self.schedule_retry();
    }

    // ----- §5 control surface -----------------------------------------------------------

    fn set_enabled(&'static self, name: &str, enabled: bool) -> Result<(), KlpError> {
        let mut ctl = self.lock();
        let pi = ctl
            .patches
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| KlpError::NoEnt(name.to_owned()))?;
        if ctl.patches[pi].enabled == enabled {
            return Err(KlpError::Invalid(format!(
                "patch '{name}' is already {}",
                if enabled { "enabled" } else { "disabled" }
            )));
        }
        if ctl.transition == Some(pi) {
            self.reverse_transition(&mut ctl);
            return Ok(());
        }
        if enabled {
            return Err(KlpError::Invalid(format!(
                "patch '{name}' cannot be enabled again"
            )));
        }
        self.disable(&mut ctl, pi)
    }

    /// §5.2.
    fn disable(&'static self, ctl: &mut Control, pi: usize) -> Result<(), KlpError> {
        if ctl.transition.is_some() {
            return Err(KlpError::Busy);
        }
        self.init_transition(ctl, pi, KLP_TRANSITION_UNPATCHED);
        for oi in 0..ctl.patches[pi].objects.len() {
            if ctl.patches[pi].objects[oi].patched {
                self.pre_unpatch(ctl, pi, oi);
            }
        }
        self.start_transition(ctl);
        ctl.patches[pi].enabled = false;
        self.try_complete_transition(ctl, true);
        Ok(())
    }

    fn force(&'static self, name: &str, force: bool) -> Result<(), KlpError> {
        let mut ctl = self.lock();
        let pi = ctl
            .patches
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| KlpError::NoEnt(name.to_owned()))?;
        if !force {
            return Ok(());
        }
        if ctl.transition != Some(pi) {
            return Err(KlpError::Invalid(format!(
                "patch '{name}' is not in transition"
            )));
        }
        self.force_transition(&mut ctl);
        Ok(())
    }

    // ----- the transition worker ------------------------------------------------------

    fn schedule_retry(&'static self) {
        let period = *self.retry.lock().unwrap_or_else(|e| e.into_inner());
        let mut w = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        let at = Instant::now() + period;
        w.retry_at = Some(w.retry_at.map_or(at, |t| t.min(at)));
        if !w.started {
            w.started = true;
            std::thread::Builder::new()
                .name("klp-transition".into())
                .spawn(move || self.work())
                .expect("klp-core: cannot start the transition worker");
        }
        self.worker_wake.notify_all();
    }

    fn wake_worker(&self) {
        // Always: a thread may switch (or park) during the synchronous attempt of an
        // enable, before the retry is scheduled; the attempt it asks for must not be
        // lost until the next timer retry. An attempt without a transition does nothing,
        // and completing a transition clears the request.
        let mut w = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        w.now = true;
        self.worker_wake.notify_all();
    }

    fn work(&'static self) {
        loop {
            let timer;
            {
                let mut w = self.worker.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if w.now {
                        w.now = false;
                        timer = false;
                        break;
                    }
                    match w.retry_at {
                        None => w = self.worker_wake.wait(w).unwrap_or_else(|e| e.into_inner()),
                        Some(at) => {
                            let now = Instant::now();
                            if now >= at {
                                w.retry_at = None;
                                timer = true;
                                break;
                            }
                            w = self
                                .worker_wake
                                .wait_timeout(w, at - now)
                                .unwrap_or_else(|e| e.into_inner())
                                .0;
                        }
                    }
                }
            }
            let mut ctl = self.lock();
            if ctl.transition.is_some() {
                self.try_complete_transition(&mut ctl, timer);
            }
        }
    }

    // ----- §1.4 module coming and going -------------------------------------------------

    fn module_coming(&'static self, name: &str) -> Result<(), i32> {
        let mut ctl = self.lock();
        let mut done: Vec<u64> = Vec::new();
        for pi in 0..ctl.patches.len() {
            let Some(oi) = ctl.patches[pi]
                .objects
                .iter()
                .position(|o| o.name.as_deref() == Some(name))
            else {
                continue;
            };
            let pname = ctl.patches[pi].name.clone();
            ctl.patches[pi].objects[oi].loaded = true;
            let res: Result<(), i32> = (|| {
                if let Err(e) = self.resolve_object(&mut ctl.patches[pi].objects[oi]) {
                    klp_log!(
                        self.log,
                        Level::Warning,
                        "failed to initialize patch '{}' for module '{}' ({})",
                        pname,
                        name,
                        e.errno()
                    );
                    return Err(e.errno());
                }
                klp_log!(
                    self.log,
                    Level::Notice,
                    "applying patch '{}' to loading module '{}'",
                    pname,
                    name
                );
                if let Err(e) = self.pre_patch(&mut ctl, pi, oi) {
                    klp_log!(
                        self.log,
                        Level::Warning,
                        "pre-patch callback failed for object '{}'",
                        name
                    );
                    return Err(e);
                }
                if let Err(e) = self.patch_object(&mut ctl.patches[pi].objects[oi]) {
                    klp_log!(
                        self.log,
                        Level::Warning,
                        "failed to apply patch '{}' to module '{}' ({})",
                        pname,
                        name,
                        e.errno()
                    );
                    self.post_unpatch(&mut ctl, pi, oi);
                    return Err(e.errno());
                }
                if ctl.transition != Some(pi) {
                    self.post_patch(&mut ctl, pi, oi);
                }
                Ok(())
            })();
            if let Err(e) = res {
                klp_log!(
                    self.log,
                    Level::Warning,
                    "patch '{}' failed for module '{}', refusing to load module '{}'",
                    pname,
                    name,
                    name
                );
                let o = &mut ctl.patches[pi].objects[oi];
                o.loaded = false;
                for f in &mut o.funcs {
                    f.site = None;
                }
                // Undo the earlier patches for this module.
                for id in done {
                    if let Some(pj) = ctl.patches.iter().position(|p| p.id == id) {
                        self.object_going(&mut ctl, pj, name);
                    }
                }
                return Err(e);
            }
            done.push(ctl.patches[pi].id);
        }
        if !done.is_empty() {
            self.update_forbidden(&ctl);
        }
        Ok(())
    }

    fn module_going(&'static self, name: &str) {
        let mut ctl = self.lock();
        for pi in 0..ctl.patches.len() {
            self.object_going(&mut ctl, pi, name);
        }
        self.update_forbidden(&ctl);
    }

    fn object_going(&self, ctl: &mut Control, pi: usize, name: &str) {
        let Some(oi) = ctl.patches[pi]
            .objects
            .iter()
            .position(|o| o.name.as_deref() == Some(name))
        else {
            return;
        };
        if !ctl.patches[pi].objects[oi].loaded {
            return;
        }
        if ctl.transition != Some(pi) {
            self.pre_unpatch(ctl, pi, oi);
        }
        klp_log!(
            self.log,
            Level::Notice,
            "reverting patch '{}' on unloading module '{}'",
            ctl.patches[pi].name,
            name
        );
        self.unpatch_object(&mut ctl.patches[pi].objects[oi], false);
        // The module's code is going away: no handler may still return into it.
        self.flavor.synchronize();
        self.post_unpatch(ctl, pi, oi);
        let o = &mut ctl.patches[pi].objects[oi];
        o.loaded = false;
        for f in &mut o.funcs {
            f.site = None;
            if f.nop {
                f.new_func = None;
            }
        }
    }
}

/// §6 `klp_add_nops`.
fn add_nops(ctl: &Control, new: &mut PatchRec) {
    for old in &ctl.patches {
        for oo in &old.objects {
            let oi = match new.objects.iter().position(|o| o.name == oo.name) {
                Some(i) => i,
                None => {
                    new.objects.push(ObjRec {
                        name: oo.name.clone(),
                        callbacks: Callbacks::default(),
                        funcs: Vec::new(),
                        patched: false,
                        loaded: false,
                        dynamic: true,
                        post_unpatch_enabled: false,
                    });
                    new.objects.len() - 1
                }
            };
            for of in &oo.funcs {
                let no = &mut new.objects[oi];
                if no
                    .funcs
                    .iter()
                    .any(|f| f.old_name == of.old_name && f.old_sympos == of.old_sympos)
                {
                    continue;
                }
                no.funcs.push(FuncRec {
                    old_name: of.old_name.clone(),
                    old_sympos: of.old_sympos,
                    new_func: None,
                    sig: None,
                    nop: true,
                    site: None,
                    patched: false,
                    node: std::ptr::null_mut(),
                });
            }
        }
    }
}

impl<F: Flavor + 'static> EngineDyn for Core<F> {
    fn slot(&self) -> usize {
        self.slot
    }
    fn target(&self) -> i8 {
        self.target.load(Ordering::SeqCst)
    }
    fn self_switch(&self, task: &Task) {
        // klp_update_patch_state: test-and-clear in a read section, so that a reversal's
        // synchronize waits for us before it flips the target.
        let _g = self.flavor.read_lock();
        if task.pending.fetch_and(!self.bit, Ordering::AcqRel) & self.bit != 0 {
            task.states[self.slot].store(self.target.load(Ordering::Acquire), Ordering::Release);
            if self.pending_done() == 1 {
                self.wake_worker();
            }
        }
    }
    fn task_gone(&self, _task: &Task) {
        if self.pending_done() == 1 {
            self.wake_worker();
        }
    }
    fn flavor_park(&self) {
        self.flavor.park();
    }
    fn flavor_unpark(&self) {
        self.flavor.unpark();
    }
    fn wake_worker(&self) {
        Core::wake_worker(self);
    }
    fn module_coming(&self, name: &str) -> Result<(), i32> {
        // SAFETY: engines are leaked at creation (`Klp::with_log`), so `self` is 'static.
        let me: &'static Self = unsafe { &*std::ptr::from_ref(self) };
        Core::module_coming(me, name)
    }
    fn module_going(&self, name: &str) {
        // SAFETY: as in module_coming.
        let me: &'static Self = unsafe { &*std::ptr::from_ref(self) };
        Core::module_going(me, name)
    }
    fn log(&self) -> &Log {
        &self.log
    }
    fn check_own_stack(&self, task: &Task) -> bool {
        let forbidden = Arc::clone(&self.forbidden.lock().unwrap_or_else(|e| e.into_inner()));
        // SAFETY: called on the task's own thread.
        self.stack_ok(unsafe { task.own_stack() }, &forbidden)
            .is_ok()
    }
}
