//! Func stacks and the handler: the kernel's `kernel/livepatch/patch.c`.
//!
//! A patched site has a func_stack (newest func on top) and an owner (the engine). The
//! handler ([`choose_for`]) is §3 of the reference: under the flavor's read lock, the top
//! func, or the one below it when the func is in transition and the thread is still
//! UNPATCHED; a nop means the original.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use klp_sync::Flavor;

use crate::core::{Control, Core, FuncRec, ObjRec, PatchRec};
use crate::error::KlpError;
use crate::error::libc_errno::EBUSY;
use crate::func::FuncNode;
use crate::log::Level;
use crate::model::Callbacks;
use crate::site::{Dispatch, Site};
use crate::task::{KLP_TRANSITION_IDLE, KLP_TRANSITION_UNPATCHED, Task};

/// The §3 decision, monomorphized per flavor; null when the site's owner is no longer
/// this engine (the caller starts over).
///
/// # Safety
///
/// 1. `engine` is the `Core<F>` whose `dispatch` this function was reached through.
pub(crate) unsafe extern "C" fn choose_for<F: Flavor + 'static>(
    engine: *const (),
    site: &'static Site,
    task: &Task,
) -> *const () {
    // SAFETY: clause 1; engines are leaked, so the reference is 'static.
    let core = unsafe { &*engine.cast::<Core<F>>() };
    if task.flavor_registered.load(Ordering::Relaxed) & core.bit == 0 {
        core.register_flavor(task);
    }
    // The seed's case: where the flavor would not watch this thread (rcu: a handler on a
    // parked thread), it is made to watch for this choice, like `rcu_irq_enter()`.
    let irq = core.flavor.irq_enter();
    if irq.was_unwatched() && core.not_watching.fetch_add(1, Ordering::Relaxed) == 0 {
        core.unwatched_task.store(task.id(), Ordering::Relaxed);
    }
    let imp = {
        let _guard = core.flavor.read_lock();
        // The owner again, inside the section (see `crate::site`).
        if !std::ptr::eq(site.owner.load(Ordering::Acquire), &core.dispatch) {
            std::ptr::null()
        } else {
            decide(core, site, task)
        }
    };
    core.flavor.irq_exit(irq);
    imp
}

/// The §3 decision itself, in a read section of the site's owner.
#[inline(always)]
fn decide<F: Flavor + 'static>(core: &Core<F>, site: &'static Site, task: &Task) -> *const () {
    // Acquire (R1): a func seen on the stack comes with its `transition` flag.
    let top = site.top.load(Ordering::Acquire);
    // SAFETY: entries on a func_stack are freed only after a grace period that begins
    // after they are unlinked, and we are inside a read section that it waits for.
    let Some(func) = (unsafe { top.as_ref() }) else {
        return site.original.0;
    };
    func.check();
    let mut chosen = func;
    // Acquire (R2): the task state read below is ordered after the flag.
    if func.transition.load(Ordering::Acquire) {
        // `slot < MAX_ENGINES` (a power of two): the mask is a no-op that spares the
        // bounds check a branch.
        const _: () = assert!(crate::task::MAX_ENGINES.is_power_of_two());
        let state = task.states[core.slot & (crate::task::MAX_ENGINES - 1)].load(Ordering::Acquire);
        if state == KLP_TRANSITION_IDLE {
            // Reported later, outside the read section (the kernel's WARN_ON_ONCE).
            core.idle_task.store(task.id(), Ordering::Relaxed);
        } else if state == KLP_TRANSITION_UNPATCHED {
            // SAFETY: as for `top`.
            match unsafe { func.next.load(Ordering::Acquire).as_ref() } {
                None => return site.original.0,
                Some(below) => {
                    below.check();
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

/// The handler of a site whose last func left (its owner is being given back): the
/// original.
pub(crate) unsafe extern "C" fn choose_releasing(
    _engine: *const (),
    site: &'static Site,
    _task: &Task,
) -> *const () {
    site.original.0
}

/// The sites an engine changed, by what they wait for.
#[derive(Default)]
pub(crate) struct SiteLists {
    /// Sites whose func_stack became empty: given back after a grace period.
    pub(crate) releasing: Vec<&'static Site>,
    /// Sites whose resolved target was withdrawn: settled when the control lock is
    /// dropped with no transition in progress.
    pub(crate) unsettled: Vec<&'static Site>,
}

impl<F: Flavor + 'static> Core<F> {
    /// Settle the sites withdrawn meanwhile, unless a transition is in progress (see
    /// `crate::site`). Called with the control lock held, before it is dropped.
    pub(crate) fn settle_sites(&self, ctl: &mut Control) {
        if ctl.transition.is_some() {
            return;
        }
        for site in ctl.sites.unsettled.drain(..) {
            site.settle(&self.dispatch, &self.releasing);
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

    // ----- §3.1 func_stack -------------------------------------------------------------

    /// Push `f` on its site's stack; `false` when another engine owns the site.
    fn patch_func(&self, unsettled: &mut Vec<&'static Site>, f: &mut FuncRec) -> bool {
        let site = f.site.expect("patch_func on an unresolved func");
        let mine: *const Dispatch = &self.dispatch;
        let releasing: *const Dispatch = &self.releasing;
        // One engine per site (the kernel's IPMODIFY exclusivity); a site we are giving
        // back is ours again.
        // Calls take the full decision from here until the site is settled (see
        // `crate::site`).
        let owner = site.owner.load(Ordering::Acquire);
        let ok = if std::ptr::eq(owner, mine) {
            site.withdraw();
            true
        } else {
            (owner.is_null() || std::ptr::eq(owner, releasing)) && site.take(owner, mine.cast_mut())
        };
        if !ok {
            return false;
        }
        unsettled.push(site);
        // SAFETY: the node is owned by the record and lives until after a grace period
        // that follows its removal from every stack.
        let node = unsafe { &*f.node };
        node.next
            .store(site.top.load(Ordering::Relaxed), Ordering::Relaxed);
        // Release (W2): the node's fields, its `transition` flag included, are visible to a
        // handler that sees it on top.
        site.top.store(f.node, Ordering::Release);
        f.patched = true;
        true
    }

    fn unpatch_func(&self, sites: &mut SiteLists, f: &mut FuncRec) {
        if !f.patched {
            return;
        }
        let site = f.site.expect("patched func without a site");
        site.withdraw();
        sites.unsettled.push(site);
        let top = site.top.load(Ordering::Relaxed);
        // SAFETY: the node is ours (see patch_func).
        let next = unsafe { &*f.node }.next.load(Ordering::Relaxed);
        if top == f.node {
            site.top.store(next, Ordering::Release);
        } else {
            let mut p = top;
            // SAFETY: stack entries are live nodes of patches still on the list (they are
            // freed only after being unlinked); the control lock serializes all writers.
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
            // The last func of the site: give it back after a grace period (see
            // `crate::site`). Meanwhile its handler is the original.
            site.owner.store(
                std::ptr::from_ref(&self.releasing).cast_mut(),
                Ordering::Release,
            );
            sites.releasing.push(site);
        }
        f.patched = false;
    }

    /// After a grace period that followed `unpatch_func`: the sites whose stacks are still
    /// empty have no owner any more.
    pub(crate) fn release_sites(&self, ctl: &mut Control) {
        let releasing: *mut Dispatch = std::ptr::from_ref(&self.releasing).cast_mut();
        for site in ctl.sites.releasing.drain(..) {
            if site.top.load(Ordering::Relaxed).is_null() {
                let _ = site.owner.compare_exchange(
                    releasing,
                    std::ptr::null_mut(),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
            }
        }
    }

    /// A grace period of the flavor, then the sites given back.
    pub(crate) fn synchronize(&self, ctl: &mut Control) {
        self.flavor.synchronize();
        self.release_sites(ctl);
    }

    pub(crate) fn patch_object(
        &self,
        ctl: &mut Control,
        pi: usize,
        oi: usize,
    ) -> Result<(), KlpError> {
        let ctl_ref = &mut *ctl;
        let o = &mut ctl_ref.patches[pi].objects[oi];
        let sites = &mut ctl_ref.sites;
        let busy = o
            .funcs
            .iter_mut()
            .find_map(|f| (!self.patch_func(&mut sites.unsettled, f)).then(|| f.old_name.clone()));
        if let Some(name) = busy {
            self.unpatch_object(sites, o, false);
            self.say(
                ctl,
                Level::Err,
                format_args!(
                    "failed to register ftrace handler for function '{name}' ({})",
                    -EBUSY
                ),
            );
            return Err(KlpError::SiteBusy(name));
        }
        o.patched = true;
        Ok(())
    }

    pub(crate) fn unpatch_object(&self, sites: &mut SiteLists, o: &mut ObjRec, nops_only: bool) {
        for f in &mut o.funcs {
            if !nops_only || f.nop {
                self.unpatch_func(sites, f);
            }
        }
        if !nops_only || o.dynamic {
            o.patched = false;
        }
    }

    pub(crate) fn unpatch_objects(&self, ctl: &mut Control, pi: usize, nops_only: bool) {
        let Control { patches, sites, .. } = ctl;
        for o in &mut patches[pi].objects {
            if o.patched {
                self.unpatch_object(sites, o, nops_only);
            }
        }
    }

    /// §4.5 `klp_check_stack_func`: the (site, implementation) pairs that a thread
    /// switching to the target must not be running, for the transition patch's patched
    /// objects.
    pub(crate) fn forbidden_set(&self, ctl: &Control) -> HashSet<(usize, usize)> {
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

    // ----- freeing ----------------------------------------------------------------------

    pub(crate) fn discard_nops(&self, p: &mut PatchRec) {
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
                node.kill();
                drop(node);
            }
        }));
    }

    /// `klp_free_patch_finish`: the func records after a grace period, then the release
    /// hook (the module reference) unless the patch was forced. Runs without the control
    /// lock.
    pub(crate) fn release_patch(&self, rec: PatchRec) {
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
}

impl FuncRec {
    /// An empty record, to move a record out of the list while the engine uses both.
    fn placeholder() -> Self {
        FuncRec {
            old_name: String::new(),
            old_sympos: 0,
            new_func: None,
            sig: None,
            nop: false,
            site: None,
            patched: false,
            node: std::ptr::null_mut(),
        }
    }
}

/// §6 `klp_add_nops`.
pub(crate) fn add_nops(ctl: &Control, new: &mut PatchRec) {
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
                    // Positions 0 and 1 name the same function (the kernel's
                    // klp_find_func).
                    .any(|f| {
                        f.old_name == of.old_name && f.old_sympos.max(1) == of.old_sympos.max(1)
                    })
                {
                    continue;
                }
                no.funcs.push(FuncRec {
                    nop: true,
                    old_name: of.old_name.clone(),
                    old_sympos: of.old_sympos,
                    ..FuncRec::placeholder()
                });
            }
        }
    }
}
