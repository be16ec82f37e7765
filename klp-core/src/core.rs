//! The engine and its list of patches: the kernel's `kernel/livepatch/core.c` for the
//! threads of a process, generic over the read-side [`Flavor`].
//!
//! One control lock (`klp_mutex`) serializes enable, disable, reverse, force and object
//! coming and going; the call path never takes it. Every rule, errno and log line follows
//! `reference/kernel-livepatch.md`; section numbers below refer to it. The func stacks are
//! in `patch.rs`, transitions and the worker in `transition.rs`, states in `state.rs`,
//! objects coming and going in `module.rs`, the read-only view in `control.rs`.
//!
//! An engine lives for the rest of the process, as the kernel's livepatch core lives as
//! long as the kernel: sites of the program keep pointers to it.

use std::cell::Cell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use klp_sync::{Event, Flavor};

use crate::control::View;
use crate::error::KlpError;
use crate::func::FuncNode;
use crate::klp_log;
use crate::log::{Level, Log};
use crate::model::{Callbacks, ObjectCtx, Patch, State};
use crate::registry;
use crate::site::{self, Code, Dispatch, Site, Unresolved};
use crate::task::{KLP_TRANSITION_IDLE, Kick, Task};
use crate::transition::Worker;

/// `KSYM_NAME_LEN`: a function name must be shorter.
pub const KSYM_NAME_LEN: usize = 512;
/// `MODULE_NAME_LEN` on 64-bit: an object name must be shorter.
pub const MODULE_NAME_LEN: usize = 56;

thread_local! {
    /// Bit per engine slot: the calling thread holds that engine's control lock (it runs
    /// one of its operations, or a callback or log line of one).
    static HELD: Cell<u64> = const { Cell::new(0) };
}

/// Whether the calling thread holds the control lock of the engine with slot bit `bit`.
pub(crate) fn holds_control(bit: u64) -> bool {
    HELD.with(Cell::get) & bit != 0
}

/// Whether the calling thread holds the control lock of any engine.
pub(crate) fn holds_any_control() -> bool {
    HELD.with(Cell::get) != 0
}

/// The livepatch engine for one read-side flavor. Cheap to copy; lives for the rest of
/// the process.
///
/// An engine is the kernel's livepatch core for the threads of this process: it enables
/// [`Patch`]es on the functions that [`patchable!`](crate::patchable) defined, switches
/// each thread to a patch at a moment when none of the functions the patch replaces is
/// running on it (the per-thread consistency model), and disables, reverses, forces and
/// replaces patches as the kernel's `/sys/kernel/livepatch` writes do. Its log lines are
/// the kernel's; [`Klp::new`] sends them to standard error, [`Klp::with_log`] anywhere.
///
/// At most [`MAX_ENGINES`](crate::MAX_ENGINES) engines exist in a process; a program
/// usually has one, shared by copying it.
///
/// # Example
///
/// ```
/// use std::time::Duration;
///
/// use klp_core::log::{Capture, Log};
/// use klp_core::{Func, Klp, KlpError, Object, Patch, patchable};
/// use klp_sync::Preempt;
///
/// patchable! {
///     /// The function with the bug.
///     fn area(w: u32, h: u32) -> u32 { w + h }
/// }
/// /// The fix: exactly the type of `area`, `fn(u32, u32) -> u32`.
/// fn area_fixed(w: u32, h: u32) -> u32 { w * h }
///
/// let lines = Capture::new(); // keeps the log lines, to show them here
/// let klp = Klp::with_log(Preempt::new(), Log::new(lines.clone()));
/// assert_eq!(area(3, 4), 7);
///
/// // klp_enable_patch(): the transition starts; each thread switches at a safe point.
/// klp.enable(Patch::new("fix_area").object(
///     Object::vmlinux().func(Func::new("area", area_fixed as fn(u32, u32) -> u32)),
/// ))?;
/// klp.wait(Duration::from_secs(10))?; // every thread has switched
/// assert_eq!(area(3, 4), 12);
///
/// // What /sys/kernel/livepatch/fix_area/ shows.
/// let info = klp.patch("fix_area").expect("the patch is in use");
/// assert!(info.enabled && !info.transition);
/// assert_eq!(info.objects, [("vmlinux".to_owned(), true)]);
///
/// // Bad requests change nothing and carry the kernel's errno.
/// let err = klp.set_enabled("no_such_patch", false).unwrap_err();
/// assert_eq!(err.errno(), -klp_core::libc_errno::ENOENT);
///
/// // echo 0 > /sys/kernel/livepatch/fix_area/enabled
/// klp.set_enabled("fix_area", false)?;
/// klp.wait(Duration::from_secs(10))?;
/// assert_eq!(area(3, 4), 7);
/// assert!(klp.patch("fix_area").is_none()); // a disabled patch is released
///
/// assert_eq!(lines.take()[0], "livepatch: enabling patch 'fix_area'");
/// # Ok::<(), KlpError>(())
/// ```
///
/// `examples/patch_self.rs` shows the consistency model at work: a thread in the middle
/// of a replaced function keeps the old code until it returns, while the others already
/// run the new one.
pub struct Klp<F: Flavor + 'static> {
    pub(crate) core: &'static Core<F>,
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

pub(crate) struct Core<F: Flavor + 'static> {
    pub(crate) slot: usize,
    pub(crate) bit: u64,
    pub(crate) flavor: F,
    pub(crate) log: Log,
    /// How sites reach this engine's handler, and the handler of a site being given back.
    pub(crate) dispatch: Dispatch,
    pub(crate) releasing: Dispatch,
    ctl: Mutex<Control>,
    /// `klp_target_state`.
    pub(crate) target: AtomicI8,
    /// Tasks whose pending bit for this engine is set.
    pub(crate) pending: AtomicUsize,
    pub(crate) worker: Worker,
    /// Calls whose read section the flavor would not have protected (the seed's case),
    /// made safe by `irq_enter`.
    pub(crate) not_watching: AtomicU64,
    pub(crate) warned_not_watching: AtomicBool,
    pub(crate) warned_idle: AtomicBool,
    /// The first task a handler ran on where the flavor was not watching.
    pub(crate) unwatched_task: AtomicU64,
    /// The task a handler found in transition with no state (reported by the worker).
    pub(crate) idle_task: AtomicU64,
    /// Moves when a transition completes (for `wait_transition`).
    pub(crate) idle: Event,
    /// What queries read, without the control lock (`/sys/kernel/livepatch`).
    pub(crate) view: RwLock<View>,
}

/// The list of patches and the transition (`klp_patches`, `klp_transition_patch`).
#[derive(Default)]
pub(crate) struct Control {
    pub(crate) patches: Vec<PatchRec>,
    /// Index into `patches` of the patch in transition.
    pub(crate) transition: Option<usize>,
    pub(crate) signals_cnt: u32,
    pub(crate) next_id: u64,
    /// Patches taken off the list, released once the lock is dropped (the kernel's
    /// asynchronous free: a release hook may use the engine).
    pub(crate) releases: Vec<PatchRec>,
    /// Kicks to call once the lock is dropped (their tasks pinned meanwhile).
    pub(crate) kicks: Vec<(&'static Task, Kick)>,
    /// Sites given back after a grace period, and sites to settle.
    pub(crate) sites: crate::patch::SiteLists,
}

pub(crate) struct PatchRec {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) replace: bool,
    pub(crate) states: Vec<Arc<State>>,
    pub(crate) objects: Vec<ObjRec>,
    pub(crate) enabled: bool,
    pub(crate) forced: bool,
    pub(crate) on_release: Option<Arc<dyn Fn() + Send + Sync>>,
}

pub(crate) struct ObjRec {
    pub(crate) name: Option<String>,
    pub(crate) callbacks: Callbacks,
    pub(crate) funcs: Vec<FuncRec>,
    pub(crate) patched: bool,
    /// The object's module is bound (`obj->mod`); always true for vmlinux.
    pub(crate) loaded: bool,
    pub(crate) dynamic: bool,
    pub(crate) post_unpatch_enabled: bool,
}

pub(crate) struct FuncRec {
    pub(crate) old_name: String,
    pub(crate) old_sympos: u64,
    pub(crate) new_func: Option<Code>,
    pub(crate) sig: Option<std::any::TypeId>,
    pub(crate) nop: bool,
    pub(crate) site: Option<&'static Site>,
    pub(crate) patched: bool,
    pub(crate) node: *mut FuncNode,
}

// SAFETY: `node` is owned by the record (freed after a grace period when the record is
// released) and only read through atomics by other threads.
unsafe impl Send for FuncRec {}

impl ObjRec {
    pub(crate) fn display(&self) -> &str {
        self.name.as_deref().unwrap_or("vmlinux")
    }
    pub(crate) fn is_loaded(&self) -> bool {
        self.name.is_none() || self.loaded
    }
}

/// The control lock, held by the calling thread; dropping it publishes the view, then
/// releases the patches freed and calls the kicks collected meanwhile.
pub(crate) struct CtlGuard<'a, F: Flavor + 'static> {
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
        let Some(mut g) = self.guard.take() else {
            return;
        };
        self.core.settle_sites(&mut g);
        self.core.publish(&g);
        let releases = std::mem::take(&mut g.releases);
        let kicks = std::mem::take(&mut g.kicks);
        drop(g);
        HELD.with(|h| h.set(h.get() & !self.core.bit));
        for rec in releases {
            self.core.release_patch(rec);
        }
        for (task, kick) in kicks {
            kick();
            crate::task::unpin_kick(task);
        }
        self.core.flush_warnings();
    }
}

impl<F: Flavor + 'static> Klp<F> {
    /// A new engine with the default log (standard error).
    pub fn new(flavor: F) -> Self {
        Self::with_log(flavor, Log::default())
    }

    /// A new engine writing to `log`. Panics past [`crate::MAX_ENGINES`] engines in a
    /// process.
    pub fn with_log(flavor: F, log: Log) -> Self {
        crate::fork::install();
        let slot = registry::reserve_slot().unwrap_or_else(|| {
            panic!(
                "klp-core: at most {} engines per process",
                crate::task::MAX_ENGINES
            )
        });
        let core: &'static mut Core<F> = Box::leak(Box::new(Core {
            slot,
            bit: 1u64 << slot,
            flavor,
            log,
            dispatch: Dispatch {
                choose: crate::patch::choose_for::<F>,
                engine: std::ptr::null(),
            },
            releasing: Dispatch {
                choose: crate::patch::choose_releasing,
                engine: std::ptr::null(),
            },
            ctl: Mutex::new(Control {
                next_id: 1,
                ..Control::default()
            }),
            target: AtomicI8::new(KLP_TRANSITION_IDLE),
            pending: AtomicUsize::new(0),
            worker: Worker::new(),
            not_watching: AtomicU64::new(0),
            warned_not_watching: AtomicBool::new(false),
            warned_idle: AtomicBool::new(false),
            unwatched_task: AtomicU64::new(0),
            idle_task: AtomicU64::new(0),
            idle: Event::new(),
            view: RwLock::new(View::default()),
        }));
        let me = std::ptr::from_ref::<Core<F>>(core).cast();
        core.dispatch.engine = me;
        core.releasing.engine = me;
        let core: &'static Core<F> = core;
        registry::install(slot, core);
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
        self.core.worker.set_retry(period);
        self.core.worker.wake();
    }

    /// How many patched calls ran where the flavor would not have watched the thread (rcu:
    /// a signal handler on a parked thread, an unregistered thread): the seed's case. The
    /// engine made each such read section watched for its duration (the kernel's
    /// `rcu_irq_enter`), so their choice was protected. Always 0 under preempt.
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

    /// Whether a transition is in progress.
    pub fn in_transition(&self) -> bool {
        self.core.target.load(Ordering::Acquire) != KLP_TRANSITION_IDLE
    }

    /// Wait until no transition is in progress; `false` on timeout, or at once when the
    /// calling thread holds this engine's control lock (a callback or log line of one of
    /// its operations: the transition cannot complete before it returns). The calling
    /// thread is parked meanwhile (it is blocked), so it never holds the transition up.
    pub fn wait_transition(&self, timeout: Duration) -> bool {
        self.wait(timeout).is_ok()
    }

    /// [`Klp::wait_transition`] with the reason of a failure: [`KlpError::TimedOut`], or
    /// [`KlpError::Deadlock`] when called with this engine's control lock held.
    pub fn wait(&self, timeout: Duration) -> Result<(), KlpError> {
        self.core.wait(timeout)
    }

    /// The calling thread's patch state in this engine (-1, 0, 1). A thread that is not a
    /// task yet has the state it would start with.
    pub fn thread_patch_state(&self) -> i8 {
        crate::task::existing().map_or_else(
            || registry::birth(self.core.slot),
            |t| t.state(self.core.slot),
        )
    }
}

impl<F: Flavor + 'static> Core<F> {
    /// The control lock; [`KlpError::Deadlock`] when the calling thread holds it already.
    pub(crate) fn lock(&self) -> Result<CtlGuard<'_, F>, KlpError> {
        if HELD.with(Cell::get) & self.bit != 0 {
            return Err(KlpError::Deadlock);
        }
        let guard = self.ctl.lock().unwrap_or_else(|e| e.into_inner());
        HELD.with(|h| h.set(h.get() | self.bit));
        Ok(CtlGuard {
            core: self,
            guard: Some(guard),
        })
    }

    /// The control lock for `fork` (not marked held: the handlers give it back).
    pub(crate) fn fork_lock(&self) -> Option<MutexGuard<'_, Control>> {
        if HELD.with(Cell::get) & self.bit != 0 {
            return None;
        }
        Some(self.ctl.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A core log line under the control lock: the view is published first, so that a
    /// log handler querying the engine sees the state the line describes.
    pub(crate) fn say(&self, ctl: &Control, level: Level, args: std::fmt::Arguments<'_>) {
        self.publish(ctl);
        self.log.emit(level, args);
    }

    /// Call a callback of patch `pi`, object `oi`, with the view published.
    fn run_callback<R>(
        &self,
        ctl: &Control,
        pi: usize,
        oi: usize,
        call: impl FnOnce(&ObjectCtx<'_>) -> R,
    ) -> R {
        self.publish(ctl);
        let p = &ctl.patches[pi];
        let prev = |id: u64| self.prev_state_of(ctl, id);
        let ctx = ObjectCtx {
            patch: &p.name,
            object: p.objects[oi].name.as_deref(),
            states: &p.states,
            prev_state: &prev,
            log: &self.log,
        };
        call(&ctx)
    }

    pub(crate) fn pre_patch(&self, ctl: &mut Control, pi: usize, oi: usize) -> Result<(), i32> {
        let cb = ctl.patches[pi].objects[oi].callbacks.pre_patch.clone();
        let r = match cb {
            Some(f) => self.run_callback(ctl, pi, oi, |c| f(c)),
            None => Ok(()),
        };
        ctl.patches[pi].objects[oi].post_unpatch_enabled = r.is_ok();
        r
    }

    pub(crate) fn post_patch(&self, ctl: &mut Control, pi: usize, oi: usize) {
        if let Some(f) = ctl.patches[pi].objects[oi].callbacks.post_patch.clone() {
            self.run_callback(ctl, pi, oi, |c| f(c));
        }
    }

    pub(crate) fn pre_unpatch(&self, ctl: &mut Control, pi: usize, oi: usize) {
        if let Some(f) = ctl.patches[pi].objects[oi].callbacks.pre_unpatch.clone() {
            self.run_callback(ctl, pi, oi, |c| f(c));
        }
    }

    pub(crate) fn post_unpatch(&self, ctl: &mut Control, pi: usize, oi: usize) {
        if let Some(f) = ctl.patches[pi].objects[oi].callbacks.post_unpatch.clone()
            && ctl.patches[pi].objects[oi].post_unpatch_enabled
        {
            self.run_callback(ctl, pi, oi, |c| f(c));
        }
        ctl.patches[pi].objects[oi].post_unpatch_enabled = false;
    }

    // ----- §2 enable -----------------------------------------------------------------

    fn enable(&'static self, patch: Patch) -> Result<(), KlpError> {
        let mut ctl = self.lock()?;
        if !Self::is_compatible(&ctl, &patch) {
            self.say(
                &ctl,
                Level::Err,
                format_args!(
                    "Livepatch patch ({}) is not compatible with the already installed livepatches.",
                    patch.name
                ),
            );
            return Err(KlpError::Incompatible(patch.name));
        }
        let pi = self.init_patch(&mut ctl, patch)?;
        if let Err(e) = self.enable_inner(&mut ctl, pi) {
            // §2.8: unwind; the patch was never usable.
            let rec = ctl.patches.remove(pi);
            ctl.releases.push(rec);
            if ctl.transition.is_none() && self.target.load(Ordering::SeqCst) != KLP_TRANSITION_IDLE
            {
                // Its transition was cancelled (completed, not yet ended).
                self.end_transition(&mut ctl);
            }
            return Err(e);
        }
        Ok(())
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
        let objects = patch
            .objects
            .into_iter()
            .map(|o| ObjRec {
                name: o.name,
                callbacks: o.callbacks,
                funcs: o
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
                    .collect(),
                patched: false,
                loaded: false,
                dynamic: false,
                post_unpatch_enabled: false,
            })
            .collect();
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
            crate::patch::add_nops(ctl, &mut rec);
        }
        validate(&rec)?;
        // §2.6: resolve what is loaded.
        for o in &mut rec.objects {
            o.loaded = match &o.name {
                None => true,
                Some(n) => crate::object::object_state(n).is_some(),
            };
            if o.loaded {
                self.resolve(ctl, o)?;
            }
        }
        for f in rec.objects.iter_mut().flat_map(|o| o.funcs.iter_mut()) {
            let new_func = f.new_func.map_or(std::ptr::null(), |c| c.0);
            f.node = Box::into_raw(Box::new(FuncNode::new(new_func, f.nop)));
            if f.nop
                && let Some(s) = f.site
            {
                f.new_func = Some(s.original);
            }
        }
        ctl.next_id += 1;
        ctl.patches.push(rec);
        Ok(ctl.patches.len() - 1)
    }

    /// §1.3 for every func of `o`: find its site and check the replacement's type. On
    /// failure, the kernel's line goes to the log (with `ctl`'s view) and nothing of `o`
    /// was changed but the funcs resolved so far (unused until the object is patched).
    pub(crate) fn resolve(&self, ctl: &Control, o: &mut ObjRec) -> Result<(), KlpError> {
        resolve_object(o).map_err(|(e, line)| {
            self.say(ctl, Level::Err, format_args!("{line}"));
            e
        })
    }

    /// §2.7.
    fn enable_inner(&'static self, ctl: &mut Control, pi: usize) -> Result<(), KlpError> {
        if ctl.transition.is_some() {
            return Err(KlpError::Busy);
        }
        self.say(
            ctl,
            Level::Notice,
            format_args!("enabling patch '{}'", ctl.patches[pi].name),
        );
        self.init_transition(ctl, pi, crate::task::KLP_TRANSITION_PATCHED);
        for oi in 0..ctl.patches[pi].objects.len() {
            if !ctl.patches[pi].objects[oi].is_loaded() {
                continue;
            }
            if let Err(e) = self.pre_patch(ctl, pi, oi) {
                let msg = format!(
                    "pre-patch callback failed for object '{}'",
                    ctl.patches[pi].objects[oi].display()
                );
                self.say(ctl, Level::Warning, format_args!("{msg}"));
                self.enable_failed(ctl, pi);
                return Err(KlpError::Callback(e));
            }
            if let Err(e) = self.patch_object(ctl, pi, oi) {
                let msg = format!(
                    "failed to patch object '{}'",
                    ctl.patches[pi].objects[oi].display()
                );
                self.say(ctl, Level::Warning, format_args!("{msg}"));
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
        let msg = format!("failed to enable patch '{}'", ctl.patches[pi].name);
        self.say(ctl, Level::Warning, format_args!("{msg}"));
        self.cancel_transition(ctl);
    }

    // ----- §5 control surface -----------------------------------------------------------

    fn set_enabled(&'static self, name: &str, enabled: bool) -> Result<(), KlpError> {
        let mut ctl = self.lock()?;
        let pi = position(&ctl, name)?;
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
        self.init_transition(ctl, pi, crate::task::KLP_TRANSITION_UNPATCHED);
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
        let mut ctl = self.lock()?;
        let pi = position(&ctl, name)?;
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

    /// Report what handlers found but could not log where they ran (in a read section,
    /// maybe in a signal handler): the kernel's warnings, once each.
    pub(crate) fn flush_warnings(&self) {
        if self.not_watching.load(Ordering::Relaxed) != 0
            && !self.warned_not_watching.swap(true, Ordering::Relaxed)
        {
            klp_log!(
                self.log,
                Level::Warning,
                "handler ran on task {} where {} is not watching: made it watch for the call",
                self.unwatched_task.load(Ordering::Relaxed),
                self.flavor.name()
            );
        }
        let idle = self.idle_task.load(Ordering::Relaxed);
        if idle != 0 && !self.warned_idle.swap(true, Ordering::Relaxed) {
            self.log.emit(
                Level::Warning,
                format_args!("WARNING: task {idle} in transition with no patch state"),
            );
        }
    }
}

/// The index of the patch named `name`.
fn position(ctl: &Control, name: &str) -> Result<usize, KlpError> {
    ctl.patches
        .iter()
        .position(|p| p.name == name)
        .ok_or_else(|| KlpError::NoEnt(name.to_owned()))
}

/// §2.4, §2.5: names and duplicates.
fn validate(rec: &PatchRec) -> Result<(), KlpError> {
    let mut seen_objs = HashSet::new();
    for o in &rec.objects {
        if let Some(n) = &o.name
            && (n.len() >= MODULE_NAME_LEN || n.is_empty())
        {
            return Err(KlpError::Invalid(format!(
                "object name '{n}' is empty or too long"
            )));
        }
        // The kernel's sysfs directory names: an object named "vmlinux" collides with the
        // main program's.
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
                let head: String = f.old_name.chars().take(32).collect();
                return Err(KlpError::Invalid(format!(
                    "func name '{head}...' is too long"
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
    Ok(())
}

/// §1.3 for every func of `o`; on failure, the error and the kernel's log line.
pub(crate) fn resolve_object(o: &mut ObjRec) -> Result<(), (KlpError, String)> {
    let objname = o.name.clone();
    for f in &mut o.funcs {
        let site = match site::resolve(objname.as_deref(), &f.old_name, f.old_sympos) {
            Ok(s) => s,
            Err(Unresolved::NotFound) => {
                return Err((
                    KlpError::Invalid(format!("symbol '{}' not found", f.old_name)),
                    format!("symbol '{}' not found in symbol table", f.old_name),
                ));
            }
            Err(Unresolved::Ambiguous) => {
                return Err((
                    KlpError::Invalid(format!("symbol '{}' is ambiguous", f.old_name)),
                    format!(
                        "unresolvable ambiguity for symbol '{}' in object '{}'",
                        f.old_name,
                        objname.as_deref().unwrap_or("(null)")
                    ),
                ));
            }
            Err(Unresolved::NoSuchPosition) => {
                return Err((
                    KlpError::Invalid(format!(
                        "symbol '{}' position {} not found",
                        f.old_name, f.old_sympos
                    )),
                    format!(
                        "symbol position {} for symbol '{}' in object '{}' not found",
                        f.old_sympos,
                        f.old_name,
                        objname.as_deref().unwrap_or("vmlinux")
                    ),
                ));
            }
        };
        if let (Some(want), Some(have)) = (site.sig, f.sig)
            && want() != have
        {
            return Err((
                KlpError::Invalid(format!("replacement for '{}' has another type", f.old_name)),
                format!(
                    "replacement for '{}' does not have the original's type",
                    f.old_name
                ),
            ));
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
