//! Transitions: the kernel's `kernel/livepatch/transition.c`, and the worker that
//! completes them (`klp_transition_work`).
//!
//! A thread switches at its own switch points (depth 0, or an explicit one whose stack
//! check passes), or a worker switches it while holding it claimed (parked, stack
//! checked; or running at depth 0 after a barrier): see `crate::thread`. A transition
//! completes as soon as its last thread switches: the switch wakes the worker; the retry
//! period only bounds stuck cases, and after [`SIGNALS_TIMEOUT`] counted attempts the
//! threads still pending are kicked.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use klp_sync::{Event, Flavor};

use crate::core::{Control, Core};
use crate::error::KlpError;
use crate::log::Level;
use crate::registry;
use crate::task::{
    self, KLP_TRANSITION_IDLE, KLP_TRANSITION_PATCHED, KLP_TRANSITION_UNPATCHED, Task,
};

/// After this many failed attempts (and every this many after), waiting threads are
/// kicked (`SIGNALS_TIMEOUT`).
pub const SIGNALS_TIMEOUT: u32 = 15;

fn target_name(t: i8) -> &'static str {
    if t == KLP_TRANSITION_PATCHED {
        "patching"
    } else {
        "unpatching"
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

/// The transition worker of an engine: a thread of the library's own (signals blocked),
/// started on first need, woken without a lock (a switching thread may be in a signal
/// handler).
pub(crate) struct Worker {
    /// Try now (the last task switched, or a pending task parked).
    now: AtomicBool,
    /// A retry is due at this many nanoseconds after `epoch`; 0: none.
    retry_at: AtomicU64,
    retry_ns: AtomicU64,
    epoch: OnceLock<Instant>,
    wake: Event,
    /// The worker thread exists (reset in a fork child, where it does not).
    started: AtomicBool,
}

impl Worker {
    pub(crate) fn new() -> Self {
        Worker {
            now: AtomicBool::new(false),
            retry_at: AtomicU64::new(0),
            retry_ns: AtomicU64::new(1_000_000_000),
            epoch: OnceLock::new(),
            wake: Event::new(),
            started: AtomicBool::new(false),
        }
    }

    fn now_ns(&self) -> u64 {
        let epoch = *self.epoch.get_or_init(Instant::now);
        (epoch.elapsed().as_nanos() as u64).max(1)
    }

    pub(crate) fn set_retry(&self, period: Duration) {
        self.retry_ns.store(
            period.as_nanos().clamp(1, u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    /// Ask for an attempt now: lock-free, safe in a signal handler.
    pub(crate) fn wake(&self) {
        self.now.store(true, Ordering::SeqCst);
        self.wake.notify();
    }

    /// `fork` child: the worker thread does not exist here.
    pub(crate) fn fork_child(&self) {
        self.started.store(false, Ordering::SeqCst);
    }
}

impl<F: Flavor + 'static> Core<F> {
    // ----- switching threads ----------------------------------------------------------

    /// `klp_update_patch_state` at depth 0: test-and-clear in a read section, so that a
    /// reversal's grace period waits for us before it flips the target.
    pub(crate) fn self_switch_task(&self, task: &Task) {
        let _g = self.flavor.read_lock();
        // Acquire: the target the transition's start wrote before flagging us.
        if task.pending.fetch_and(!self.bit, Ordering::AcqRel) & self.bit != 0 {
            task.states[self.slot].store(self.target.load(Ordering::Acquire), Ordering::Release);
            if self.pending_done() == 1 {
                self.worker.wake();
            }
        }
    }

    /// An explicit switch point: the §4.5 check of the thread's own stack and the switch,
    /// in one read section (the kernel's `__klp_sched_try_switch`). The flag is read
    /// first: the target and the forbidden set published before it was set come with it.
    pub(crate) fn switch_own(&self, task: &Task) {
        let _g = self.flavor.read_lock();
        if task.pending.load(Ordering::Acquire) & self.bit == 0 {
            return;
        }
        // With signals blocked, as every reader of the view (a handler's query must not
        // find its own thread holding it while a publication waits).
        let (target, clean) = self.with_view(|view| {
            let mut clean = true;
            let reliable = task.thread.own_stack(|a| {
                if view.forbidden.contains(&(a.site, a.imp)) {
                    clean = false;
                }
            });
            (view.target, clean && reliable)
        });
        if clean
            && target != KLP_TRANSITION_IDLE
            && task.pending.fetch_and(!self.bit, Ordering::AcqRel) & self.bit != 0
        {
            task.states[self.slot].store(target, Ordering::Release);
            if self.pending_done() == 1 {
                self.worker.wake();
            }
        }
    }

    /// One pending task fewer; returns the count before. The count only decides when to
    /// wake the worker early, so it saturates rather than wrap when a reversal reset it
    /// under a task that was switching.
    pub(crate) fn pending_done(&self) -> usize {
        self.pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(1))
            })
            .unwrap_or(0)
    }

    /// A worker's switch of `t` (held claimed).
    fn switch(&self, t: &Task, target: i8) {
        // The last switch wakes the worker even here, inside an attempt: the attempt may
        // already have seen another task still running that has switched itself since.
        if t.pending.fetch_and(!self.bit, Ordering::AcqRel) & self.bit != 0
            && self.pending_done() == 1
        {
            self.worker.wake();
        }
        t.states[self.slot].store(target, Ordering::Release);
    }

    /// §4.5 `klp_try_switch_task`. A task that is running elsewhere is `Running`: the
    /// caller may still claim it if it is outside patchable code.
    fn try_switch_task(
        &self,
        t: &Task,
        target: i8,
        forbidden: &std::collections::HashSet<(usize, usize)>,
    ) -> Switch {
        if t.states[self.slot].load(Ordering::Acquire) == target {
            return Switch::Done;
        }
        let Some(claimed) = t.thread.claim() else {
            return Switch::Running;
        };
        let mut clean = true;
        let reliable = claimed.stack(|a| {
            if forbidden.contains(&(a.site, a.imp)) {
                clean = false;
            }
        });
        // Switch while we hold it, so that it sees the switch when it unparks.
        if clean && reliable {
            self.switch(t, target);
            Switch::Done
        } else {
            Switch::Busy
        }
    }

    /// Switch the running tasks that are outside every patchable function, with one heavy
    /// barrier for all of them. Returns whether all were switched.
    fn switch_running(&self, running: &[&'static Task], target: i8) -> bool {
        if running.is_empty() {
            return true;
        }
        for t in running {
            t.thread.run_claim();
        }
        crate::thread::run_barrier();
        let mut all = true;
        for t in running {
            if t.thread.outside() {
                self.switch(t, target);
            } else {
                all = false;
            }
            t.thread.run_release();
        }
        all
    }

    // ----- §4 transitions -------------------------------------------------------------

    pub(crate) fn funcs_of(
        p: &crate::core::PatchRec,
    ) -> impl Iterator<Item = &crate::func::FuncNode> {
        // SAFETY: nodes are owned by the record for as long as it lives.
        p.objects
            .iter()
            .flat_map(|o| o.funcs.iter())
            .map(|f| unsafe { &*f.node })
    }

    /// §4.2.
    pub(crate) fn init_transition(&self, ctl: &mut Control, pi: usize, target: i8) {
        // Calls take the full decision until the transition ends (funcs the patch has
        // yet to push are withdrawn as they are pushed). Before any thread is flagged.
        let Control { patches, sites, .. } = &mut *ctl;
        for site in patches[pi]
            .objects
            .iter()
            .flat_map(|o| o.funcs.iter())
            .filter(|f| f.patched)
            .filter_map(|f| f.site)
        {
            site.withdraw();
            sites.unsettled.push(site);
        }
        ctl.transition = Some(pi);
        self.target.store(target, Ordering::SeqCst);
        self.say(
            ctl,
            Level::Debug,
            format_args!(
                "'{}': initializing {} transition",
                ctl.patches[pi].name,
                target_name(target)
            ),
        );
        let initial = if target == KLP_TRANSITION_PATCHED {
            KLP_TRANSITION_UNPATCHED
        } else {
            KLP_TRANSITION_PATCHED
        };
        {
            let tasks = task::lock();
            // A thread registering from now on starts where the others are.
            registry::set_birth(&tasks, self.slot, initial);
            for t in tasks.iter() {
                t.states[self.slot].store(initial, Ordering::SeqCst);
            }
        }
        // W1: SeqCst stores above, SeqCst stores below.
        for n in Self::funcs_of(&ctl.patches[pi]) {
            n.transition.store(true, Ordering::SeqCst);
        }
    }

    /// §4.3.
    pub(crate) fn start_transition(&self, ctl: &mut Control) {
        let pi = ctl.transition.expect("start without a transition");
        let target = self.target.load(Ordering::SeqCst);
        self.say(
            ctl,
            Level::Notice,
            format_args!(
                "'{}': starting {} transition",
                ctl.patches[pi].name,
                target_name(target)
            ),
        );
        // The target and the forbidden set are visible before any task is flagged (a
        // flagged task may check its own stack at once).
        self.publish(ctl);
        // The count is stored before any task is flagged: a flagged task may switch
        // itself at once, and its decrement must find its own count there. Under the
        // task list's lock, no task registers or exits meanwhile; one registering later
        // has an empty stack and starts at the target.
        {
            let tasks = task::lock();
            registry::set_birth(&tasks, self.slot, target);
            let flag: Vec<&Task> = tasks
                .iter()
                .filter(|t| t.states[self.slot].load(Ordering::SeqCst) != target)
                .collect();
            self.pending.store(flag.len(), Ordering::SeqCst);
            for t in flag {
                t.pending.fetch_or(self.bit, Ordering::SeqCst);
            }
        }
        ctl.signals_cnt = 0;
    }

    /// §4.4: returns whether the transition completed. `counted`: a synchronous attempt
    /// or a timer retry (the kernel's attempts, which count towards signalling); attempts
    /// made early because a task switched or parked do not count.
    pub(crate) fn try_complete_transition(&'static self, ctl: &mut Control, counted: bool) -> bool {
        let Some(pi) = ctl.transition else {
            return true;
        };
        let target = self.target.load(Ordering::SeqCst);
        let forbidden = self.forbidden_set(ctl);
        let mut complete = true;
        {
            let tasks = task::lock();
            let mut running = Vec::new();
            for t in tasks.iter() {
                match self.try_switch_task(t, target, &forbidden) {
                    Switch::Done => {}
                    Switch::Busy => complete = false,
                    Switch::Running => running.push(t),
                }
            }
            if !self.switch_running(&running, target) {
                complete = false;
            }
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
            ctl.releases.push(rec);
        } else if ctl.patches[pi].replace {
            let old: Vec<_> = ctl.patches.drain(..pi).collect();
            ctl.releases.extend(old);
        }
        self.end_transition(ctl);
        true
    }

    /// §4.7: the kicks of the tasks still pending, called once the control lock is
    /// dropped (their threads pinned: they cannot exit meanwhile).
    fn send_signals(&self, ctl: &mut Control) {
        if ctl.signals_cnt == SIGNALS_TIMEOUT {
            self.say(
                ctl,
                Level::Notice,
                format_args!("signaling remaining tasks"),
            );
        }
        let tasks = task::lock();
        for t in tasks.iter() {
            if t.pending.load(Ordering::Acquire) & self.bit != 0
                && let Some(k) = tasks.pin_kick(t)
            {
                ctl.kicks.push((t, k));
            }
        }
    }

    /// §4.9.
    pub(crate) fn complete_transition(&self, ctl: &mut Control) {
        let pi = ctl.transition.expect("complete without a transition");
        let target = self.target.load(Ordering::SeqCst);
        self.say(
            ctl,
            Level::Debug,
            format_args!(
                "'{}': completing {} transition",
                ctl.patches[pi].name,
                target_name(target)
            ),
        );
        if ctl.patches[pi].replace && target == KLP_TRANSITION_PATCHED {
            // klp_unpatch_replaced_patches: the older patches leave every stack, with no
            // callbacks; then klp_discard_nops.
            for old in 0..pi {
                ctl.patches[old].enabled = false;
                self.unpatch_objects(ctl, old, false);
            }
            self.unpatch_objects(ctl, pi, true);
            let mut p = std::mem::replace(&mut ctl.patches[pi], placeholder_patch());
            self.discard_nops(&mut p);
            ctl.patches[pi] = p;
        }
        if target == KLP_TRANSITION_UNPATCHED {
            self.unpatch_objects(ctl, pi, false);
            self.synchronize(ctl);
        }
        for n in Self::funcs_of(&ctl.patches[pi]) {
            n.transition.store(false, Ordering::SeqCst);
        }
        if target == KLP_TRANSITION_PATCHED {
            self.synchronize(ctl);
        }
        let mut stuck = Vec::new();
        {
            let tasks = task::lock();
            registry::set_birth(&tasks, self.slot, KLP_TRANSITION_IDLE);
            for t in tasks.iter() {
                if t.pending.fetch_and(!self.bit, Ordering::AcqRel) & self.bit != 0 {
                    stuck.push(t.describe());
                }
                t.states[self.slot].store(KLP_TRANSITION_IDLE, Ordering::SeqCst);
            }
        }
        for t in stuck {
            self.say(
                ctl,
                Level::Warning,
                format_args!("WARNING: task {t} still pending at completion"),
            );
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
        self.say(
            ctl,
            Level::Notice,
            format_args!(
                "'{}': {} complete",
                ctl.patches[pi].name,
                target_name(target)
            ),
        );
        ctl.transition = None;
    }

    /// The end of a completed transition, once the patches it freed are off the list:
    /// no transition any more, and waiters see the list as it now is.
    pub(crate) fn end_transition(&self, ctl: &mut Control) {
        self.target.store(KLP_TRANSITION_IDLE, Ordering::SeqCst);
        // Settled before waiters wake: a wait that returns finds the resolved targets.
        self.settle_sites(ctl);
        self.publish(ctl);
        self.worker.retry_at.store(0, Ordering::Relaxed);
        self.worker.now.store(false, Ordering::Relaxed);
        self.idle.notify();
    }

    /// §4.10.
    pub(crate) fn cancel_transition(&'static self, ctl: &mut Control) {
        if self.target.load(Ordering::SeqCst) != KLP_TRANSITION_PATCHED {
            return;
        }
        let pi = ctl.transition.expect("cancel without a transition");
        self.say(
            ctl,
            Level::Debug,
            format_args!(
                "'{}': canceling patching transition, going to unpatch",
                ctl.patches[pi].name
            ),
        );
        self.target
            .store(KLP_TRANSITION_UNPATCHED, Ordering::SeqCst);
        // Tasks were never flagged (no start): nothing is pending.
        self.complete_transition(ctl);
    }

    /// §4.11.
    pub(crate) fn reverse_transition(&'static self, ctl: &mut Control) {
        let pi = ctl.transition.expect("reverse without a transition");
        let target = self.target.load(Ordering::SeqCst);
        self.say(
            ctl,
            Level::Debug,
            format_args!(
                "'{}': reversing transition from {}",
                ctl.patches[pi].name,
                if target == KLP_TRANSITION_PATCHED {
                    "patching to unpatching"
                } else {
                    "unpatching to patching"
                }
            ),
        );
        {
            let tasks = task::lock();
            for t in tasks.iter() {
                t.pending.fetch_and(!self.bit, Ordering::SeqCst);
            }
        }
        self.pending.store(0, Ordering::SeqCst);
        // Let in-flight switches (they run in read sections) finish before the flip.
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
    pub(crate) fn force_transition(&'static self, ctl: &mut Control) {
        self.say(
            ctl,
            Level::Warning,
            format_args!("forcing remaining tasks to the patched state"),
        );
        let target = self.target.load(Ordering::SeqCst);
        {
            let tasks = task::lock();
            for t in tasks.iter() {
                if t.pending.fetch_and(!self.bit, Ordering::SeqCst) & self.bit != 0 {
                    t.states[self.slot].store(target, Ordering::SeqCst);
                }
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

    // ----- waiting ----------------------------------------------------------------------

    /// Wait until no transition is in progress (see [`crate::Klp::wait`]).
    pub(crate) fn wait(&'static self, timeout: Duration) -> Result<(), KlpError> {
        let end = Instant::now() + timeout;
        if crate::core::holds_control(self.bit) || on_worker_thread() {
            return if self.target.load(Ordering::Acquire) == KLP_TRANSITION_IDLE {
                Ok(())
            } else {
                Err(KlpError::Deadlock)
            };
        }
        // The worker may not exist (a fork child): make sure it does.
        if self.target.load(Ordering::Acquire) != KLP_TRANSITION_IDLE {
            self.ensure_worker();
            self.worker.wake();
        }
        // Blocked: parked meanwhile (pairs nest, so a caller's own park stays).
        let parked = crate::call::park_if_task();
        let r = loop {
            let token = self.idle.token();
            // The view, not the target: the list as the transition left it is published
            // before the view says it is over, so a query after the wait sees it.
            if self.with_view(|v| v.target) == KLP_TRANSITION_IDLE {
                break Ok(());
            }
            let now = Instant::now();
            if now >= end {
                break Err(KlpError::TimedOut);
            }
            self.idle.wait(token, Some(end - now));
        };
        if parked {
            crate::call::unpark();
        }
        r
    }

    // ----- the transition worker ------------------------------------------------------

    pub(crate) fn schedule_retry(&'static self) {
        let at = self
            .worker
            .now_ns()
            .saturating_add(self.worker.retry_ns.load(Ordering::Relaxed));
        let _ = self
            .worker
            .retry_at
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                Some(if cur == 0 { at } else { cur.min(at) })
            });
        self.ensure_worker();
        self.worker.wake.notify();
    }

    /// Start the worker if it does not run (first transition; or in a fork child).
    pub(crate) fn ensure_worker(&'static self) {
        if !self.worker.started.swap(true, Ordering::AcqRel)
            && klp_sync::spawn_service("klp-transition", move || self.work()).is_err()
        {
            // Out of threads: the next attempt to schedule one tries again.
            self.worker.started.store(false, Ordering::Release);
            self.log.emit(
                Level::Err,
                format_args!("cannot start the transition worker"),
            );
        }
    }

    fn work(&'static self) {
        ON_WORKER.with(|w| w.set(true));
        loop {
            let token = self.worker.wake.token();
            let timer = {
                if self.worker.now.swap(false, Ordering::SeqCst) {
                    Some(false)
                } else {
                    let at = self.worker.retry_at.load(Ordering::Acquire);
                    let now = self.worker.now_ns();
                    if at != 0 && now >= at {
                        self.worker.retry_at.store(0, Ordering::Release);
                        Some(true)
                    } else {
                        let wait = (at != 0).then(|| Duration::from_nanos(at - now));
                        self.worker.wake.wait(token, wait);
                        None
                    }
                }
            };
            self.flush_warnings();
            let Some(timer) = timer else { continue };
            if self.target.load(Ordering::Acquire) == KLP_TRANSITION_IDLE {
                continue;
            }
            if let Ok(mut ctl) = self.lock()
                && ctl.transition.is_some()
            {
                self.try_complete_transition(&mut ctl, timer);
            }
        }
    }
}

thread_local! {
    /// The calling thread is a transition worker.
    static ON_WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calling thread is an engine's transition worker (where kicks, the worker's
/// log lines and its callbacks run): waiting there for a transition would wait for
/// itself.
pub fn on_worker_thread() -> bool {
    ON_WORKER.with(std::cell::Cell::get)
}

/// An empty patch record, to move a record out of the list while the engine uses both.
fn placeholder_patch() -> crate::core::PatchRec {
    crate::core::PatchRec {
        id: 0,
        name: String::new(),
        replace: false,
        states: Vec::new(),
        objects: Vec::new(),
        enabled: false,
        forced: false,
        on_release: None,
    }
}
