//! The engines of the process, by slot, and what threads and sites need from them: a
//! task's birth and exit, its switch at a switch point, its parking.
//!
//! Engines depend on this module, and so do the call path and objects; it depends on
//! neither (an engine is reached through [`EngineDyn`]).

use std::sync::atomic::{AtomicI8, AtomicUsize, Ordering};

use crate::log::{Level, Log};
use crate::task::{self, CurrentTask, KLP_TRANSITION_IDLE, MAX_ENGINES, Task};

/// What tasks, sites and objects need from an engine of any flavor.
pub(crate) trait EngineDyn: Send + Sync {
    /// The thread switches itself at a switch point (depth 0, or an explicit one whose
    /// stack check passed): the kernel's `klp_update_patch_state`.
    fn self_switch(&self, task: &Task);
    /// An explicit switch point: switch the calling thread if no function that the
    /// transition replaces is live on its own stack (`klp_try_switch_task(current)`).
    fn switch_own(&self, task: &Task);
    /// A task that was pending has gone (exited).
    fn task_gone(&self, task: &Task);
    /// The thread parks / unparks (the flavor's offline / online).
    fn flavor_park(&self);
    fn flavor_unpark(&self);
    /// Ask the worker for an attempt (a pending thread parked or switched).
    fn wake_worker(&self);
    /// Module coming / going (see `crate::object`).
    fn module_coming(&self, name: &str) -> Result<(), i32>;
    fn module_going(&self, name: &str);
    fn log(&self) -> &Log;
    /// `fork` (see `crate::fork`): hold the control lock; hold the view; reset in the
    /// child.
    fn fork_prepare_control(&self);
    fn fork_prepare_view(&self);
    fn fork_child(&self);
}

struct Slot {
    /// Published by one compare-and-swap (a fork never finds it half made).
    engine: klp_sync::fork::RaceCell<&'static dyn EngineDyn>,
    /// The state a thread that registers now starts with: IDLE, or, during a transition,
    /// the state that the other threads' are at or moving to (see `set_birth`).
    birth: AtomicI8,
}

static SLOTS: [Slot; MAX_ENGINES] = [const {
    Slot {
        engine: klp_sync::fork::RaceCell::new(),
        birth: AtomicI8::new(KLP_TRANSITION_IDLE),
    }
}; MAX_ENGINES];
static COUNT: AtomicUsize = AtomicUsize::new(0);

/// Reserve the next slot; `None` past [`MAX_ENGINES`].
pub(crate) fn reserve_slot() -> Option<usize> {
    let slot = COUNT.fetch_add(1, Ordering::AcqRel);
    (slot < MAX_ENGINES).then_some(slot)
}

/// Make the engine of `slot` known (once).
pub(crate) fn install(slot: usize, engine: &'static dyn EngineDyn) {
    SLOTS[slot].engine.get_or_create(|| engine);
}

/// Every engine.
pub(crate) fn engines() -> impl Iterator<Item = &'static dyn EngineDyn> {
    let n = COUNT.load(Ordering::Acquire).min(MAX_ENGINES);
    SLOTS[..n].iter().filter_map(|s| s.engine.get().copied())
}

/// The engines whose slot bits are set in `mask`.
pub(crate) fn engines_in(mask: u64) -> impl Iterator<Item = &'static dyn EngineDyn> {
    bits(mask).filter_map(|b| SLOTS.get(b).and_then(|s| s.engine.get().copied()))
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

/// Set the state that threads registering from now on start with in engine `slot`
/// (under the task-list lock, so that no registration races the transition's walk).
/// The kernel copies the parent's state at fork; a thread that registers here has no
/// parent to copy, but the same effect: before a transition starts it is at the initial
/// state with the others, after the start at the target (its stack is empty, so it
/// switched at once), and IDLE outside transitions.
pub(crate) fn set_birth(_tasks: &task::TasksGuard, slot: usize, state: i8) {
    SLOTS[slot].birth.store(state, Ordering::Relaxed);
}

/// The state a thread that registered now would start with in engine `slot`.
pub(crate) fn birth(slot: usize) -> i8 {
    SLOTS[slot].birth.load(Ordering::Relaxed)
}

/// The calling thread's task, registering it on first use.
#[inline(always)]
pub(crate) fn current() -> &'static Task {
    match task::existing() {
        Some(t) => t,
        None => register(),
    }
}

/// Removes the task when its thread exits (a POSIX key's destructor: no loader lock, so a
/// thread's first patchable call never waits for another thread inside `dlopen`).
static OWNER: klp_sync::ExitHook = klp_sync::ExitHook::new(task_exit);

#[cold]
#[inline(never)]
fn register() -> &'static Task {
    // Decide the process's barrier mode now, so that outermost entries use the light
    // barrier from the start.
    klp_sync::barrier_mode();
    // The task list is locked across a fork from now on (see `crate::fork`).
    crate::fork::install();
    let t = {
        let tasks = task::lock();
        // A signal handler may have registered the thread before the lock blocked them.
        if let Some(t) = task::existing() {
            return t;
        }
        let n = COUNT.load(Ordering::Acquire).min(MAX_ENGINES);
        let t = tasks.claim(|t| {
            for (slot, s) in SLOTS[..n].iter().enumerate() {
                t.states[slot].store(s.birth.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        });
        CurrentTask::set(t);
        t
    };
    OWNER.arm();
    t
}

fn task_exit() {
    let Some(t) = task::existing() else {
        return;
    };
    let _blocked = klp_sync::SignalsBlocked::new();
    task::exit_wait_kicks(t);
    let kick = {
        let tasks = task::lock();
        let mask = t.pending.swap(0, Ordering::AcqRel);
        for e in engines_in(mask) {
            e.task_gone(t);
        }
        CurrentTask::set(std::ptr::null());
        tasks.release(t)
    };
    drop(kick);
}

/// The calling thread reached a switch point with switches pending.
#[cold]
pub(crate) fn self_switch(task: &Task) {
    for e in engines_in(task.pending.load(Ordering::Acquire)) {
        e.self_switch(task);
    }
}

/// Module coming in every engine; on a refusal, the engines that applied their patches
/// revert them, and the errno is returned.
pub(crate) fn module_coming_all(name: &str) -> Result<(), i32> {
    let all: Vec<_> = engines().collect();
    for (i, e) in all.iter().enumerate() {
        if let Err(err) = e.module_coming(name) {
            for e in &all[..i] {
                e.module_going(name);
            }
            return Err(err);
        }
    }
    Ok(())
}

/// Module going in every engine.
pub(crate) fn module_going_all(name: &str) {
    for e in engines() {
        e.module_going(name);
    }
}

/// A line in every engine's log (the default log when there is none).
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
