//! The control surface (`/sys/kernel/livepatch`) as queries read it: a view of the
//! patch list published by every control operation, read without the control lock.
//!
//! The kernel's sysfs attributes read the patch's fields without `klp_mutex`; so do these
//! queries. A control operation publishes the view before each of its log lines and
//! callbacks and when it ends, so that a log handler or a callback that asks sees the
//! state the line describes, and never waits for the lock its own thread holds. The view
//! is replaced and read with signals blocked: a signal handler never finds its own
//! thread holding it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use klp_sync::Flavor;

use crate::core::{Control, Core, Klp};
use crate::model::State;
use crate::registry::EngineDyn;
use crate::task::{self, KLP_TRANSITION_IDLE, Task};

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
    /// The system's thread id.
    pub tid: i32,
    /// `patch_state`: -1, 0 or 1.
    pub patch_state: i8,
    /// `TIF_PATCH_PENDING`.
    pub pending: bool,
    /// Whether the thread is parked.
    pub parked: bool,
    /// Patchable functions the thread is inside (its activation stack's depth).
    pub depth: usize,
}

pub(crate) struct PatchView {
    pub(crate) info: PatchInfo,
    pub(crate) states: Vec<Arc<State>>,
}

/// What queries read.
pub(crate) struct View {
    pub(crate) patches: Vec<PatchView>,
    pub(crate) transition: Option<usize>,
    /// `klp_target_state` when published, and the (site, implementation) pairs a thread
    /// switching to it must not run (for explicit switch points).
    pub(crate) target: i8,
    pub(crate) forbidden: HashSet<(usize, usize)>,
}

impl Default for View {
    fn default() -> Self {
        View {
            patches: Vec::new(),
            transition: None,
            target: KLP_TRANSITION_IDLE,
            forbidden: HashSet::new(),
        }
    }
}

impl<F: Flavor + 'static> Core<F> {
    /// Publish the view of `ctl`.
    pub(crate) fn publish(&self, ctl: &Control) {
        let patches = ctl
            .patches
            .iter()
            .enumerate()
            .map(|(i, p)| PatchView {
                info: PatchInfo {
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
                },
                states: p.states.clone(),
            })
            .collect();
        let view = View {
            patches,
            transition: ctl.transition,
            target: self.target.load(Ordering::SeqCst),
            forbidden: self.forbidden_set(ctl),
        };
        let old = {
            let _blocked = klp_sync::SignalsBlocked::new();
            let mut g = self.view.write().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *g, view)
        };
        drop(old);
    }

    /// Read the view (with signals blocked: see the module documentation).
    pub(crate) fn with_view<R>(&self, f: impl FnOnce(&View) -> R) -> R {
        let _blocked = klp_sync::SignalsBlocked::new();
        let g = self.view.read().unwrap_or_else(|e| e.into_inner());
        f(&g)
    }
}

impl<F: Flavor + 'static> Klp<F> {
    /// Every patch in use, oldest first.
    pub fn patches(&self) -> Vec<PatchInfo> {
        self.core
            .with_view(|v| v.patches.iter().map(|p| p.info.clone()).collect())
    }

    /// One patch, if it is in use.
    pub fn patch(&self, name: &str) -> Option<PatchInfo> {
        self.core.with_view(|v| {
            v.patches
                .iter()
                .find(|p| p.info.name == name)
                .map(|p| p.info.clone())
        })
    }

    /// Read one patch's information without copying it (`f` runs with signals blocked and
    /// must not block): for callers that must not allocate.
    pub fn with_patch<R>(&self, name: &str, f: impl FnOnce(Option<&PatchInfo>) -> R) -> R {
        self.core.with_view(|v| {
            f(v.patches
                .iter()
                .find(|p| p.info.name == name)
                .map(|p| &p.info))
        })
    }

    /// Visit the patches in use, oldest first, without copying them (as
    /// [`Klp::with_patch`]).
    pub fn for_each_patch(&self, mut f: impl FnMut(&PatchInfo)) {
        self.core.with_view(|v| {
            for p in &v.patches {
                f(&p.info);
            }
        });
    }

    /// The names of the patches in use, oldest first, each followed by a NUL, then one more
    /// NUL: written to `buf` only when they fit; returns the length they take. One read of
    /// the view, no allocation (for callers that must not allocate).
    pub fn patch_names_into(&self, buf: &mut [u8]) -> usize {
        self.core.with_view(|v| {
            let need = v
                .patches
                .iter()
                .map(|p| p.info.name.len() + 1)
                .sum::<usize>()
                + 1;
            if need <= buf.len() {
                let mut at = 0;
                for p in &v.patches {
                    let n = p.info.name.as_bytes();
                    buf[at..at + n.len()].copy_from_slice(n);
                    buf[at + n.len()] = 0;
                    at += n.len() + 1;
                }
                buf[at] = 0;
            }
            need
        })
    }

    /// Every task's state in this engine (`/proc/<pid>/task/*/patch_state`).
    pub fn tasks(&self) -> Vec<TaskInfo> {
        let tasks = task::lock();
        tasks
            .iter()
            .map(|t| TaskInfo {
                task: t.describe(),
                tid: t.tid(),
                patch_state: t.state(self.core.slot),
                pending: t.pending.load(Ordering::Acquire) & self.core.bit != 0,
                parked: t.thread.is_parked(),
                depth: t.thread.depth(),
            })
            .collect()
    }
}

impl<F: Flavor + 'static> Core<F> {
    /// The engine with its true lifetime.
    fn me(&self) -> &'static Self {
        // SAFETY: engines are leaked at creation (`Klp::with_log`) and live for the rest of
        // the process; every `Core` is one.
        unsafe { &*std::ptr::from_ref(self) }
    }
}

impl<F: Flavor + 'static> EngineDyn for Core<F> {
    fn self_switch(&self, task: &Task) {
        self.self_switch_task(task);
    }
    fn switch_own(&self, task: &Task) {
        Core::switch_own(self, task);
    }
    fn task_gone(&self, _task: &Task) {
        if self.pending_done() == 1 {
            self.worker.wake();
        }
    }
    fn flavor_park(&self) {
        self.flavor.park();
    }
    fn flavor_unpark(&self) {
        self.flavor.unpark();
    }
    fn wake_worker(&self) {
        self.worker.wake();
    }
    fn module_coming(&self, name: &str) -> Result<(), i32> {
        self.me().module_coming(name)
    }
    fn module_going(&self, name: &str) {
        self.me().module_going(name)
    }
    fn log(&self) -> &crate::log::Log {
        &self.log
    }
    fn fork_prepare_control(&self) {
        self.me().fork_hold_control();
    }
    fn fork_prepare_view(&self) {
        self.me().fork_hold_view();
    }
    fn fork_child(&self) {
        self.me().fork_reset();
    }
}
