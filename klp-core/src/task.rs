//! Tasks: the threads of the process, as the kernel's livepatch sees its tasks.
//!
//! A thread becomes a task at its first patchable call and stops being one when it exits.
//! Every task has, per engine, a `patch_state` (IDLE / UNPATCHED / PATCHED) and a pending
//! flag (the kernel's `TIF_PATCH_PENDING`), and one **activation stack**: the patchable
//! functions it is inside, each with the implementation it chose and the address of the
//! wrapper's frame. The activation stack is what the kernel's reliable stack trace is to
//! a task: the transition checks it for functions that must not be running.
//!
//! # Who reads the activation stack
//!
//! Only the owner writes it. Another thread (the transition worker, or a control
//! operation) may read it only while it holds the owner **parked and claimed**:
//!
//! ```text
//!   owner:  RUNNING --park (Release)--> PARKED --unpark (CAS, Acquire)--> RUNNING
//!   worker:           PARKED --claim (CAS, Acquire)--> CLAIMED --release (Release)--> PARKED
//! ```
//!
//! The owner parks only between patchable calls' bookkeeping (never in the middle of a
//! push or pop), so a claimed task's stack is stable and fully written. An unpark that
//! finds CLAIMED waits until the worker stores PARKED again. A signal handler that runs on
//! a parked thread and calls a patchable function takes the task back to RUNNING for its
//! duration (like `rcu_irq_enter`) and parks it again on the way out.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicI8, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::park::{ParkWord, RunClaim};
use crate::site::Site;

/// The kernel's per-task states.
pub const KLP_TRANSITION_IDLE: i8 = -1;
/// The task runs the code from before the transition's patch (or after its removal).
pub const KLP_TRANSITION_UNPATCHED: i8 = 0;
/// The task runs the transition patch's code.
pub const KLP_TRANSITION_PATCHED: i8 = 1;

/// How many engines one process may create (each has a slot in every task).
pub const MAX_ENGINES: usize = 64;

/// Entries an activation stack records; deeper nesting makes the stack "unreliable"
/// until it unwinds back below this depth (such a task switches only at depth 0).
pub const STACK_DEPTH: usize = 64;

/// One patchable function a task is inside.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Activation {
    pub(crate) site: *const Site,
    pub(crate) imp: *const (),
    pub(crate) frame: usize,
}

/// The owner-written part of a task.
pub(crate) struct ActStack {
    entries: [Activation; STACK_DEPTH],
    /// Patchable frames the thread is inside, recorded or not.
    depth: usize,
    /// While a signal handler runs patchable code on a parked thread: the depth at which it
    /// entered, so that the task parks again when the handler's call returns.
    irq_depth: Option<usize>,
}

impl ActStack {
    const EMPTY: Activation = Activation {
        site: std::ptr::null(),
        imp: std::ptr::null(),
        frame: 0,
    };

    /// The recorded entries (all of them when the stack is reliable).
    pub(crate) fn entries(&self) -> &[Activation] {
        &self.entries[..self.depth.min(STACK_DEPTH)]
    }

    /// Whether every frame is recorded.
    #[inline]
    pub(crate) fn reliable(&self) -> bool {
        self.depth <= STACK_DEPTH
    }

    #[inline]
    pub(crate) fn depth(&self) -> usize {
        self.depth
    }

    /// The wrapper frame of the top entry, if it is recorded.
    #[inline(always)]
    fn top_frame(&self) -> Option<usize> {
        (self.depth > 0 && self.depth <= STACK_DEPTH).then(|| self.entries[self.depth - 1].frame)
    }

    /// Forget entries at or below `frame` (deeper frames; the stack grows down): they were
    /// left without returning (longjmp, an exception, a cancelled thread's unwinding).
    #[inline(always)]
    fn drop_stale(&mut self, frame: usize) {
        if self.top_frame().is_some_and(|f| f <= frame) {
            self.drop_stale_slow(frame);
        }
    }

    /// Addresses compare only within one stack: on an alternate signal stack, only the
    /// entries recorded on that stack can be proven left; the thread's own stack may lie
    /// anywhere relative to it.
    #[cold]
    #[inline(never)]
    fn drop_stale_slow(&mut self, frame: usize) {
        let within = alternate_stack_in_use();
        while let Some(f) = self.top_frame() {
            if f > frame || within.is_some_and(|(lo, hi)| f < lo || f >= hi) {
                break;
            }
            self.depth -= 1;
        }
    }
}

/// The bounds of the alternate signal stack when the calling thread runs on it.
fn alternate_stack_in_use() -> Option<(usize, usize)> {
    // SAFETY: a zeroed stack_t is a valid out-parameter; a NULL new stack only queries.
    let mut ss: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe { libc::sigaltstack(std::ptr::null(), &mut ss) };
    (r == 0 && ss.ss_flags & libc::SS_ONSTACK != 0)
        .then(|| (ss.ss_sp as usize, ss.ss_sp as usize + ss.ss_size))
}

/// A thread, as livepatch sees it.
pub struct Task {
    /// A small process-unique number (the kernel's pid in messages).
    pub(crate) id: u64,
    /// The thread's name when it registered (the kernel's comm).
    pub(crate) name: String,
    park: ParkWord,
    /// Lets the worker switch the thread while it runs outside patchable code.
    pub(crate) run: RunClaim,
    /// Per engine slot: the task's patch state.
    pub(crate) states: [AtomicI8; MAX_ENGINES],
    /// Bit per engine slot: the task must still switch to that engine's target.
    pub(crate) pending: AtomicU64,
    /// Bit per engine slot: the thread registered with that engine's flavor.
    pub(crate) flavor_registered: AtomicU64,
    /// Owner-written; read by others only while claimed (see the module docs).
    stack: UnsafeCell<ActStack>,
    /// What wakes this thread when a transition waits for it (the kernel's signals).
    pub(crate) kick: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
    /// Set once the thread has exited.
    pub(crate) exited: AtomicU8,
}

// SAFETY: every field is an atomic, a Mutex, immutable after creation, or the activation
// stack, whose accesses follow the park/claim protocol of the module documentation: the
// owner only while RUNNING (or parked but not claimed, for reads), another thread only
// while it holds the task CLAIMED.
unsafe impl Sync for Task {}
// SAFETY: as above; the raw pointers in the stack are addresses of 'static sites and code.
unsafe impl Send for Task {}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Every registered task.
static TASKS: Mutex<Vec<Arc<Task>>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) fn tasks() -> MutexGuard<'static, Vec<Arc<Task>>> {
    TASKS.lock().unwrap_or_else(|e| e.into_inner())
}

// The calling thread's task: initial-exec TLS (two instructions, also in libklp.so).
klp_sync::fast_thread_ptr!(CurrentTask: Task, "klp_core_tls_task");

/// Removes the task when its thread exits.
static OWNER: klp_sync::ExitHook = klp_sync::ExitHook::new(task_exit);

fn task_exit() {
    let p = CurrentTask::get();
    if p.is_null() {
        return;
    }
    CurrentTask::set(std::ptr::null());
    let mut all = tasks();
    if let Some(i) = all.iter().position(|t| std::ptr::eq(Arc::as_ptr(t), p)) {
        let t = all.swap_remove(i);
        t.exited.store(1, Ordering::Release);
        drop(all);
        crate::core::task_exited(&t);
    }
}

/// The calling thread's task, registering it on first use.
#[inline(always)]
pub(crate) fn current() -> &'static Task {
    let p = CurrentTask::get();
    // SAFETY: a non-null current task points to a task kept alive by TASKS until this thread's
    // destructor removes it, which also clears the pointer first.
    match unsafe { p.as_ref() } {
        Some(t) => t,
        None => register(),
    }
}

/// The calling thread's task if it has one.
#[inline]
pub(crate) fn existing() -> Option<&'static Task> {
    let p = CurrentTask::get();
    // SAFETY: as in `current`.
    unsafe { p.as_ref() }
}

/// The calling thread's name as the system knows it (what `ps` shows: a Rust thread's
/// name cut to 15 bytes), read without `std::thread::current()`, whose first call on a
/// thread that Rust did not start registers a destructor under the loader's lock.
fn thread_name() -> String {
    let mut buf = [0u8; 64];
    // SAFETY: the buffer is valid for its length; the call writes a NUL-terminated name.
    let r = unsafe {
        libc::pthread_getname_np(libc::pthread_self(), buf.as_mut_ptr().cast(), buf.len())
    };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(0);
    if r != 0 || len == 0 {
        return "<unnamed>".to_owned();
    }
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

#[cold]
#[inline(never)]
fn register() -> &'static Task {
    // Decide the process's barrier mode now, so that outermost entries use the light
    // barrier from the start (before any engine exists they would otherwise fence).
    klp_sync::barrier_mode();
    let name = thread_name();
    let task = Arc::new(Task {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        name,
        park: ParkWord::new(),
        run: RunClaim::new(),
        states: [const { AtomicI8::new(KLP_TRANSITION_IDLE) }; MAX_ENGINES],
        pending: AtomicU64::new(0),
        flavor_registered: AtomicU64::new(0),
        stack: UnsafeCell::new(ActStack {
            entries: [ActStack::EMPTY; STACK_DEPTH],
            depth: 0,
            irq_depth: None,
        }),
        kick: Mutex::new(None),
        exited: AtomicU8::new(0),
    });
    let p = Arc::as_ptr(&task);
    {
        let mut all = tasks();
        // A thread that registers during a transition has nothing on its stack: it starts
        // at the target (under the task lock, so no transition init or start races it).
        crate::core::task_born(&task);
        all.push(task);
    }
    CurrentTask::set(p);
    // Removed at thread exit: a POSIX key's destructor, which takes no loader lock (a
    // Rust thread-local destructor's registration does: a thread's first patchable call
    // would wait for another thread inside dlopen).
    OWNER.arm();
    // SAFETY: the Arc just pushed into TASKS keeps the task alive until this thread's
    // destructor removes it.
    unsafe { &*p }
}

impl Task {
    /// The stack, for the owner.
    ///
    /// # Safety
    ///
    /// 1. The caller is the owning thread, the task is RUNNING (or the caller only reads),
    ///    and the returned reference does not outlive a park.
    #[allow(clippy::mut_from_ref)]
    #[inline]
    pub(crate) unsafe fn own_stack(&self) -> &mut ActStack {
        // SAFETY: clause 1: the owner is the only writer, and nobody reads while RUNNING
        // except the owner.
        unsafe { &mut *self.stack.get() }
    }

    /// Claim a parked task so that its stack can be read; `None` if it is running.
    pub(crate) fn claim(&self) -> Option<Claimed<'_>> {
        // The claim's Acquire makes the owner's stack writes before its park visible.
        // `then`, not `then_some`: a Claimed built for a failed claim would release it.
        self.park.claim().then(|| Claimed { task: self })
    }

    /// Whether this is the calling thread's task.
    pub(crate) fn is_current(&self) -> bool {
        existing().is_some_and(|t| std::ptr::eq(t, self))
    }

    pub(crate) fn is_parked(&self) -> bool {
        !self.park.is_running()
    }

    /// The task's state in engine `slot`.
    #[inline]
    pub(crate) fn state(&self, slot: usize) -> i8 {
        self.states[slot].load(Ordering::Acquire)
    }

    /// The task's name and id as the kernel prints a task (`comm:pid`).
    pub fn describe(&self) -> String {
        format!("{}:{}", self.name, self.id)
    }
}

/// A parked task held by a checker; its stack is readable until this is dropped.
pub(crate) struct Claimed<'a> {
    task: &'a Task,
}

impl Claimed<'_> {
    pub(crate) fn stack(&self) -> &ActStack {
        // SAFETY: the task is CLAIMED: its owner is parked and cannot write until we store
        // PARKED again; our Acquire claim saw all its writes.
        unsafe { &*self.task.stack.get() }
    }
}

impl Drop for Claimed<'_> {
    fn drop(&mut self) {
        // Release: our reads happen before the owner's unpark sees PARKED.
        self.task.park.release();
    }
}

/// Park the calling thread's task: it is about to block, and the transition worker may
/// check and switch it meanwhile.
pub(crate) fn park_task(task: &Task) {
    task.park.park();
}

/// Unpark the calling thread's task, waiting for a checker that holds it.
pub(crate) fn unpark_task(task: &Task) {
    task.park.unpark();
}

/// Bookkeeping at the entry of a patchable function; returns the stack for the push.
///
/// A parked task (a signal handler interrupting a blocked thread) is taken back to
/// RUNNING for the duration of the call.
///
/// Entries deeper than `frame` are dropped as stale, except in a signal handler on a
/// parked thread: its frame may be on an alternate signal stack, unrelated to the
/// thread's own frames.
// The stack lives in the task's UnsafeCell and is handed to its owner only.
#[allow(clippy::mut_from_ref)]
#[inline(always)]
pub(crate) fn enter_bookkeeping(task: &Task, frame: usize) -> &mut ActStack {
    if !task.park.is_running() {
        return irq_enter(task);
    }
    // SAFETY: we are the owner and the task is RUNNING.
    let stack = unsafe { task.own_stack() };
    stack.drop_stale(frame);
    if stack.depth == 0 {
        task.run.enter_outermost();
    }
    stack
}

#[cold]
#[allow(clippy::mut_from_ref)]
fn irq_enter(task: &Task) -> &mut ActStack {
    unpark_task(task);
    // SAFETY: owner, now RUNNING.
    let stack = unsafe { task.own_stack() };
    if stack.irq_depth.is_none() {
        stack.irq_depth = Some(stack.depth);
    }
    if stack.depth == 0 {
        task.run.enter_outermost();
    }
    stack
}

/// The common entry of a patchable function, without a call: the calling thread has a
/// task, runs (is not parked), no transition waits for it, and its stack is recorded and
/// holds nothing left without returning. Returns its task and stack after the entry
/// bookkeeping (`enter_outermost` at depth 0), or `None` for the full path
/// ([`enter_bookkeeping`] and the rest), which may then redo the idempotent part.
#[allow(clippy::mut_from_ref)]
#[inline(always)]
pub(crate) fn try_enter_fast(frame: usize) -> Option<(&'static Task, &'static mut ActStack)> {
    // SAFETY: as in `current`.
    let task: &'static Task = unsafe { CurrentTask::get().as_ref() }?;
    if !task.park.is_running() {
        return None;
    }
    // SAFETY: we are the owner and the task is RUNNING.
    let stack = unsafe { task.own_stack() };
    let depth = stack.depth;
    if depth == 0 {
        if !task.run.try_enter_outermost() || task.pending.load(Ordering::Relaxed) != 0 {
            return None;
        }
    } else if depth > STACK_DEPTH || stack.entries[depth - 1].frame <= frame {
        return None;
    }
    Some((task, stack))
}

/// The common return of a patchable function, without a call: its own entry is on top,
/// recorded, and no signal handler state is pending. Pops it (and leaves the patchable
/// code at depth 0); returns the depth left, or `None` (nothing done) for the full path.
#[inline(always)]
pub(crate) fn try_leave_fast(task: &Task, frame: usize) -> Option<usize> {
    // SAFETY: owner; the task is RUNNING while its own patchable code runs.
    let stack = unsafe { task.own_stack() };
    let depth = stack.depth;
    if depth == 0
        || depth > STACK_DEPTH
        || stack.entries[depth - 1].frame != frame
        || stack.irq_depth.is_some()
        || (depth > 1 && stack.entries[depth - 2].frame <= frame)
    {
        return None;
    }
    stack.depth = depth - 1;
    if depth == 1 {
        task.run.leave_outermost();
    }
    Some(depth - 1)
}

/// Record `act` on top of the stack.
#[inline(always)]
pub(crate) fn push(stack: &mut ActStack, act: Activation) {
    if stack.depth < STACK_DEPTH {
        stack.entries[stack.depth] = act;
    }
    // A signal handler interrupting here sees a consistent stack: the entry is written
    // before the depth that publishes it (only this thread reads it while running).
    std::sync::atomic::compiler_fence(Ordering::SeqCst);
    stack.depth += 1;
}

/// Bookkeeping at the return of a patchable function whose wrapper frame is `frame`.
/// Returns the depth left.
#[inline(always)]
pub(crate) fn pop(task: &Task, frame: usize) -> usize {
    // SAFETY: owner; the task is RUNNING while its own patchable code runs.
    let stack = unsafe { task.own_stack() };
    if stack.depth > STACK_DEPTH {
        stack.depth -= 1;
    } else {
        // Our own entry, then anything deeper that was left without returning.
        if stack.top_frame() == Some(frame) {
            stack.depth -= 1;
        }
        stack.drop_stale(frame);
    }
    if stack.depth == 0 {
        task.run.leave_outermost();
    }
    stack.depth
}

/// Leave the "signal handler on a parked thread" state if this call entered it.
#[inline(always)]
pub(crate) fn irq_exit_if_needed(task: &Task) {
    // SAFETY: owner.
    let stack = unsafe { task.own_stack() };
    if stack.irq_depth.is_some_and(|d| d >= stack.depth) {
        stack.irq_depth = None;
        park_task(task);
    }
}

/// Drop stale entries deeper than the caller's frame (for explicit switch points).
pub(crate) fn drop_stale_below(task: &Task, frame: usize) {
    // SAFETY: owner, RUNNING (the caller is running Rust code, not parked).
    let stack = unsafe { task.own_stack() };
    stack.drop_stale(frame);
    if stack.depth == 0 {
        task.run.leave_outermost();
    }
}
