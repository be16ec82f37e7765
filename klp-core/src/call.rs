//! The call path of every patchable function, and the thread's own switch points.
//!
//! ```text
//! enter(site, frame):  task = this thread's task              (one thread-local load)
//!                      reserve an activation                  (thread::ThreadState)
//!                      at a switch point with a switch pending: switch
//!                      imp = the site's resolved target, or the owner's choice
//!                      publish (site, imp, frame)
//! leave(site, frame):  pop; at a switch point with a switch pending: switch
//! ```
//!
//! The common cases run inline without a call (`try_enter_fast`, `try_leave_fast`);
//! everything else continues out of line. `enter*`, `leave*` and `LeaveGuard` are the
//! support of `patchable!` and of the C layer, public for them and hidden from the docs;
//! programs use `park`, `unpark` and `update_patch_state`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::registry::{self, engines_in};
use crate::site::{Site, choose};
use crate::task::{self, Task};
use crate::thread::{Frames, Reserved};

/// The production hooks: an entry is left when the running call covers its frame.
#[inline(always)]
fn hooks(_task: &Task) -> Frames<fn(usize, usize) -> bool> {
    Frames(task::left)
}

/// Reserve the activation of a call at `frame`: fast, or out of line.
#[inline(always)]
fn reserve(task: &Task, frame: usize) -> Reserved {
    match task.thread.try_enter_fast(frame, &hooks(task)) {
        Some((r, false)) => r,
        Some((r, true)) => {
            task.thread.wait_unclaimed();
            r
        }
        None => reserve_slow(task, frame),
    }
}

#[cold]
#[inline(never)]
fn reserve_slow(task: &Task, frame: usize) -> Reserved {
    task.thread.enter_slow(frame, &hooks(task))
}

/// At a switch point (reserved, outermost), switch when a transition waits for us. The
/// reservation is up, so nobody else switches us meanwhile and our choice comes after.
#[inline(always)]
fn switch_on_entry(task: &Task, r: &Reserved) {
    if r.may_switch() && task.pending.load(Ordering::Relaxed) != 0 {
        registry::self_switch(task);
    }
}

/// Entry of a patchable function: returns the implementation to call. `frame` is the
/// address of the wrapper's frame (of a local in it). Must be paired with [`leave`].
#[inline(always)]
#[doc(hidden)]
pub fn enter(site: &'static Site, frame: usize) -> *const () {
    enter_task(site, frame).0
}

/// [`enter`], also returning the calling thread's task, to be given back to
/// [`leave_task`] (which then needs no thread-local lookup).
#[inline(always)]
#[doc(hidden)]
pub fn enter_task(site: &'static Site, frame: usize) -> (*const (), &'static Task) {
    let Some(task) = task::existing() else {
        return enter_unregistered(site, frame);
    };
    let Some((r, wait)) = task.thread.try_enter_fast(frame, &hooks(task)) else {
        return enter_task_slow(site, task, frame);
    };
    if wait || (r.may_switch() && task.pending.load(Ordering::Relaxed) != 0) {
        return enter_task_reserved(site, task, r, frame);
    }
    let imp = choose(site, task);
    task.thread.publish_fast(
        r,
        std::ptr::from_ref(site) as usize,
        imp as usize,
        frame,
        &hooks(task),
    );
    (imp, task)
}

/// [`enter_task`] on a thread that is not a task yet.
#[cold]
#[inline(never)]
fn enter_unregistered(site: &'static Site, frame: usize) -> (*const (), &'static Task) {
    let task = registry::current();
    let r = reserve(task, frame);
    enter_task_reserved(site, task, r, frame)
}

/// [`enter_task`] when the common entry does not apply: a parked thread, entries left
/// behind, interrupted bookkeeping, a deep stack.
#[cold]
#[inline(never)]
fn enter_task_slow(
    site: &'static Site,
    task: &'static Task,
    frame: usize,
) -> (*const (), &'static Task) {
    let r = task.thread.enter_slow(frame, &hooks(task));
    enter_task_reserved(site, task, r, frame)
}

/// The rest of an entry once reserved: a claim to wait for, a switch to make, then the
/// choice.
#[cold]
#[inline(never)]
fn enter_task_reserved(
    site: &'static Site,
    task: &'static Task,
    r: Reserved,
    frame: usize,
) -> (*const (), &'static Task) {
    task.thread.wait_unclaimed();
    switch_on_entry(task, &r);
    let imp = choose(site, task);
    task.thread.publish(
        r,
        std::ptr::from_ref(site) as usize,
        imp as usize,
        frame,
        &hooks(task),
    );
    (imp, task)
}

/// Return from a patchable function entered with [`enter`] at `frame`.
#[inline(always)]
#[doc(hidden)]
pub fn leave(frame: usize) {
    if let Some(task) = task::existing() {
        leave_task(task, frame);
    }
}

/// [`leave`] for the `task` that [`enter_task`] returned on this thread.
#[inline(always)]
#[doc(hidden)]
pub fn leave_task(task: &Task, frame: usize) {
    match task.thread.try_leave_fast(frame) {
        Some(0) if task.pending.load(Ordering::Relaxed) != 0 => switch_after_return(task, frame),
        Some(_) => {}
        None => leave_slow(task, frame),
    }
}

#[cold]
#[inline(never)]
fn leave_slow(task: &Task, frame: usize) {
    let (_, may_switch) = task.thread.leave_slow(frame, &hooks(task));
    if may_switch && task.pending.load(Ordering::Relaxed) != 0 {
        switch_after_return(task, frame);
    }
}

/// Back at depth 0 with a switch pending: switch, as bookkeeping (a handler that lands
/// meanwhile runs with the state it finds and switches nothing).
#[cold]
#[inline(never)]
fn switch_after_return(task: &Task, frame: usize) {
    task.thread.switch_point(frame, &hooks(task), |t| {
        if t.depth() == 0 {
            registry::self_switch(task);
        }
    });
}

/// [`enter`], returning the implementation and a guard that does [`leave`] when dropped
/// (so that a panic unwinding out of the patched function still pops its activation).
#[inline(always)]
#[doc(hidden)]
pub fn enter_guarded(site: &'static Site, frame: usize) -> (*const (), LeaveGuard) {
    let (imp, task) = enter_task(site, frame);
    (imp, LeaveGuard { task, frame })
}

/// Leaves the patchable function when dropped; see [`enter_guarded`].
#[doc(hidden)]
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

// ---------------------------------------------------------------------------------------
// The C call path: no landing pad, no register save in the common case.

/// [`enter_task`] for a call path that cannot afford a register save: the common case on
/// a site with a resolved target (no transition changing it) runs inline without a call;
/// a withdrawn site, and everything else, continue out of line (a sibling call). `*task_out` (when not NULL)
/// receives the task for [`leave_split`], or NULL when the thread could not become a
/// task. Never unwinds: the out-of-line parts catch a panic and run the original.
///
/// # Safety
///
/// 1. `task_out` is NULL or valid for a write.
#[inline(always)]
#[doc(hidden)]
pub unsafe fn enter_split(
    site: &'static Site,
    frame: usize,
    task_out: *mut *const Task,
) -> *const () {
    if let Some(task) = task::existing()
        && let Some((r, wait)) = task.thread.try_enter_fast(frame, &hooks(task))
    {
        if wait || (r.may_switch() && task.pending.load(Ordering::Relaxed) != 0) {
            return enter_reserved(site, task, r, frame, task_out);
        }
        // Acquire pairs with `Site::settle`'s Release.
        let imp = site.resolved.load(Ordering::Acquire).cast_const();
        if !imp.is_null() {
            task.thread.publish_fast(
                r,
                std::ptr::from_ref(site) as usize,
                imp as usize,
                frame,
                &hooks(task),
            );
            // SAFETY: clause 1.
            unsafe { hand_out(task_out, task) };
            return imp;
        }
        return enter_withdrawn(site, task, r, frame, task_out);
    }
    enter_slow(site, frame, task_out)
}

/// `*task_out = task` for [`leave_split`], unless `task_out` is NULL.
///
/// # Safety
///
/// `task_out` is NULL or valid for a write.
#[inline(always)]
unsafe fn hand_out(task_out: *mut *const Task, task: *const Task) {
    if !task_out.is_null() {
        // SAFETY: the caller's clause.
        unsafe { *task_out = task };
    }
}

/// The rest of [`enter_split`] for a site whose resolved target is withdrawn (a patch
/// changes it), on a reserved entry. The owner's handler cannot unwind (it is an
/// `extern "C"` function that aborts on a freed func record), so no landing pad here.
#[inline(never)]
extern "C" fn enter_withdrawn(
    site: &'static Site,
    task: &'static Task,
    r: Reserved,
    frame: usize,
    task_out: *mut *const Task,
) -> *const () {
    let imp = crate::site::choose_slow(site, task);
    task.thread.publish_fast(
        r,
        std::ptr::from_ref(site) as usize,
        imp as usize,
        frame,
        &hooks(task),
    );
    // SAFETY: `enter_split`'s clause 1.
    unsafe { hand_out(task_out, task) };
    imp
}

/// The rest of [`enter_split`] on a reserved entry that may switch first.
#[cold]
#[inline(never)]
extern "C" fn enter_reserved(
    site: &'static Site,
    task: &'static Task,
    r: Reserved,
    frame: usize,
    task_out: *mut *const Task,
) -> *const () {
    // A claim seen by the reservation's check (a load when there is none).
    task.thread.wait_unclaimed();
    // AssertUnwindSafe: on a panic the reserved entry is still published, with the
    // original.
    let imp = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        switch_on_entry(task, &r);
        choose(site, task)
    }))
    .unwrap_or(site.original.0);
    task.thread.publish(
        r,
        std::ptr::from_ref(site) as usize,
        imp as usize,
        frame,
        &hooks(task),
    );
    // SAFETY: `enter_split`'s clause 1.
    unsafe { hand_out(task_out, task) };
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
    // Registration may fail (a panic, out of memory): then the call runs the original
    // unrecorded, and `klp_leave` gets NULL.
    let task = std::panic::catch_unwind(registry::current).ok();
    let Some(task) = task else {
        // SAFETY: `enter_split`'s clause 1.
        unsafe { hand_out(task_out, std::ptr::null()) };
        return site.original.0;
    };
    let r = reserve(task, frame);
    enter_reserved(site, task, r, frame, task_out)
}

/// [`leave_task`] for the call path of [`enter_split`]: `task` is what it wrote to
/// `*task_out` on this thread, or NULL (looked up: a thread that could not become a
/// task recorded nothing, and nothing is popped). The common case runs inline without a
/// call; the rest continues out of line. Never unwinds.
///
/// # Safety
///
/// 1. `task` is NULL or the calling thread's task (from [`enter_split`] on this thread).
#[inline(always)]
#[doc(hidden)]
pub unsafe fn leave_split(task: *const Task, frame: usize) {
    // SAFETY: clause 1: the calling thread's task lives while the thread runs.
    let Some(t) = (unsafe { task.as_ref() }).or_else(task::existing) else {
        return;
    };
    match t.thread.try_leave_fast(frame) {
        Some(0) if t.pending.load(Ordering::Relaxed) != 0 => leave_switch_c(t, frame),
        Some(_) => {}
        None => leave_slow_c(t, frame),
    }
}

#[cold]
#[inline(never)]
extern "C" fn leave_switch_c(task: &Task, frame: usize) {
    // AssertUnwindSafe: a switch that panicked left nothing half done that is used after.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        switch_after_return(task, frame)
    }));
}

#[cold]
#[inline(never)]
extern "C" fn leave_slow_c(task: &Task, frame: usize) {
    // AssertUnwindSafe: as above.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| leave_slow(task, frame)));
}

// ---------------------------------------------------------------------------------------
// The thread's own operations.

/// Park the calling thread: it is about to block (sleep, wait, read). While parked,
/// transitions check and switch it from outside, and the rcu flavor stops watching it.
/// Pair with [`unpark`]; pairs nest (only the outermost parks).
pub fn park() {
    let task = registry::current();
    if task.thread.park(&hooks(task)) {
        // Not inside a read section (a handler that interrupted one): the flavor stays
        // online, which only delays its grace periods.
        if !klp_sync::in_read_section() {
            for e in engines_in(task.flavor_registered.load(Ordering::Relaxed)) {
                e.flavor_park();
            }
        }
        for e in engines_in(task.pending.load(Ordering::Acquire)) {
            e.wake_worker();
        }
    }
}

/// [`park`] if the calling thread is a task already (a thread that never made a patchable
/// call has nothing to check); returns whether it parked (pair with [`unpark`]).
pub(crate) fn park_if_task() -> bool {
    if task::existing().is_some() {
        park();
        true
    } else {
        false
    }
}

/// The calling thread runs again after [`park`].
pub fn unpark() {
    let Some(task) = task::existing() else {
        return;
    };
    if task.thread.unpark(&hooks(task)) {
        for e in engines_in(task.flavor_registered.load(Ordering::Relaxed)) {
            e.flavor_unpark();
        }
    }
}

/// An explicit switch point (`klp_update_patch_state()`): the calling thread switches to
/// the target of every transition that waits for it, provided none of the functions that
/// transition replaces is live on its activation stack.
pub fn update_patch_state() {
    let marker = 0u8;
    update_patch_state_at(std::ptr::from_ref(&marker) as usize);
    std::hint::black_box(&marker);
}

/// [`update_patch_state`] for a caller whose live frames all lie above `frame`: entries
/// at or below it are forgotten first (left by longjmp or an exception).
pub fn update_patch_state_at(frame: usize) {
    let task = registry::current();
    task.thread.switch_point(frame, &hooks(task), |_| {
        for e in engines_in(task.pending.load(Ordering::Acquire)) {
            e.switch_own(task);
        }
    });
}

/// Forget the calling thread's activations of patchable functions whose wrapper frames
/// lie at or below `frame`, on the same stack: the caller knows them left without
/// returning (longjmp, an exception) because its own live frames are all above `frame`.
/// The C exports that are switch points call it with their caller's stack pointer.
pub fn forget_frames_below(frame: usize) {
    if let Some(task) = task::existing() {
        task.thread.switch_point(frame, &hooks(task), |_| ());
    }
}

/// Register `kick` to wake the calling thread when a transition has waited for it for
/// `SIGNALS_TIMEOUT` attempts (the kernel's fake signal). `None` removes it. The kick is
/// called from the transition's worker, never after the thread has exited.
pub fn set_thread_kick(kick: Option<Arc<dyn Fn() + Send + Sync>>) {
    registry::current().set_kick(kick);
}
