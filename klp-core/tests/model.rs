//! Model-based test of the engine (proptest): random sequences of enable, disable,
//! reverse, force, atomic replace, an object coming and going, and threads waiting inside
//! or outside patchable functions, checked after every step against a small reference
//! model of the kernel's livepatch (`reference/kernel-livepatch.md` §1.4, §3.2, §4, §5,
//! §6).
//!
//! The model keeps the list of patches in order (name, enabled, replace, which
//! replacement each patches every site with, its nops and dynamic objects while a replace
//! is in transition), the patch in transition and its target, whether the object is
//! loaded, and the test's waiting threads: blocked inside one or two nested sites, or idle
//! outside patchable code, parked or running, with the implementations they entered and
//! their patch state. From that follow each site's func_stack, what a thread in a given
//! state runs (§3.2), what the transition's stack check forbids (§4.5), hence whether a
//! transition completes (§4.4: a thread running inside patchable code holds it, a parked
//! one only inside a forbidden implementation), and the result of every write (§2.7,
//! §5.1, §5.4, §1.4).
//!
//! After every step the engine must agree with the model on `patches()` (name, enabled,
//! transition, replace, stack_order, forced, every object and its `patched`), on every
//! waiting thread's patch state, pending flag and parking, and on what each site runs in
//! a fresh thread (one born during a transition starts at the target). A released thread
//! must have run what it entered. A patch's release hook runs once it is off the list,
//! never while on it, never when forced (§4.12, §5.5). The engine's log never carries a
//! `WARNING`.
//!
//! Sites are process-wide: the tests of this file run one at a time, each with one engine
//! (engines are leaked) that every case leaves clean. `PROPTEST_CASES` sets the number of
//! cases per flavor (default 100); a failure prints the shrunk sequence of steps.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use klp_core::log::{Capture, Log};
use klp_core::{
    Func, KLP_TRANSITION_IDLE, KLP_TRANSITION_PATCHED, KLP_TRANSITION_UNPATCHED, Klp, KlpError,
    Object, ObjectError, Patch, PatchInfo, load_object, object_state, park, patchable,
    unload_object, unpark,
};
use klp_sync::{Flavor, Lock, Preempt, Rcu};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

const EINVAL: i32 = -22;
const EBUSY: i32 = -16;
const EEXIST: i32 = -17;
const ENOENT: i32 = -2;

/// The named object two of the sites belong to.
const OBJ: &str = "model_mod";
const NSITES: usize = 4;
const SITE_NAMES: [&str; NSITES] = ["model_v1", "model_v2", "model_o1", "model_o2"];
/// Replacements per site (ids 1..=NIMPS; 0 is the original).
const NIMPS: u8 = 3;
/// Waiting threads (blocked inside sites or idle) at a time.
const MAX_WAITERS: usize = 3;
/// How long something the model says must happen may take.
const LIMIT: Duration = Duration::from_secs(3);
/// How long to let the worker retry (every 2 ms) a transition the model says is stuck,
/// before checking that it is.
const PAUSE: Duration = Duration::from_millis(4);

fn in_object(site: usize) -> bool {
    site >= 2
}

/// What implementation `imp` of `site` returns.
fn value(site: usize, imp: u8) -> u32 {
    10 * (site as u32 + 1) + u32::from(imp)
}

// ---------------------------------------------------------------------------------------
// Sites and replacements. Every implementation calls `hold(x)`: with `x == 1` the calling
// thread (a blocker) stays inside until released, parked or running; with `x == 2 + s` it
// first calls site `s` with `x == 1` (a blocker nested two deep).

struct Gate {
    parked: bool,
    ready: mpsc::Sender<()>,
    release: mpsc::Receiver<()>,
}

thread_local! {
    static GATE: RefCell<Option<Gate>> = const { RefCell::new(None) };
    /// What the nested call of a nested blocker returned.
    static INNER: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

fn hold(x: u32) {
    match x {
        0 => {}
        1 => wait_at_gate(),
        _ => INNER.with(|i| i.set(call(x as usize - 2, 1))),
    }
}

/// Signal the test, then wait until it releases this thread (parked if the gate says so).
fn wait_at_gate() {
    let Some(g) = GATE.with(|g| g.borrow_mut().take()) else {
        return;
    };
    if g.parked {
        park();
    }
    let _ = g.ready.send(());
    let _ = g.release.recv();
    if g.parked {
        unpark();
    }
}

patchable! {
    fn model_v1(x: u32) -> u32 { hold(x); 10 }
}
patchable! {
    fn model_v2(x: u32) -> u32 { hold(x); 20 }
}
patchable! {
    object = "model_mod";
    fn model_o1(x: u32) -> u32 { hold(x); 30 }
}
patchable! {
    object = "model_mod";
    fn model_o2(x: u32) -> u32 { hold(x); 40 }
}

fn call(site: usize, x: u32) -> u32 {
    match site {
        0 => model_v1(x),
        1 => model_v2(x),
        2 => model_o1(x),
        _ => model_o2(x),
    }
}

macro_rules! replacements {
    ($([$($name:ident = $v:literal),*]),* $(,)?) => {
        $($(fn $name(x: u32) -> u32 { hold(x); $v })*)*
        const REPL: [[fn(u32) -> u32; NIMPS as usize]; NSITES] = [$([$($name),*]),*];
    };
}

replacements! {
    [r_v1_1 = 11, r_v1_2 = 12, r_v1_3 = 13],
    [r_v2_1 = 21, r_v2_2 = 22, r_v2_3 = 23],
    [r_o1_1 = 31, r_o1_2 = 32, r_o1_3 = 33],
    [r_o2_1 = 41, r_o2_2 = 42, r_o2_3 = 43],
}

// ---------------------------------------------------------------------------------------
// Operations.

/// One step. Indices pick among the live patches (or threads) modulo their number.
#[derive(Clone, Debug)]
enum Op {
    /// `klp_enable_patch()` of a new patch: the replacement id per site (`None`: the
    /// site is not patched).
    Enable {
        funcs: [Option<u8>; NSITES],
        replace: bool,
    },
    /// Enable a patch under the name of a live one (`-EEXIST`; with none live, a
    /// plain enable).
    EnableDup(usize),
    /// `enabled = 0` on a live patch.
    Disable(usize),
    /// `enabled = 1` on a live patch (`-EINVAL`, or the reversal of an unpatching one).
    ReEnable(usize),
    /// The opposite write on the patch in transition (§4.11); nothing outside one.
    Reverse,
    /// `force = 1` on the patch in transition, or on another patch (`-EINVAL`).
    Force,
    /// Module coming.
    Load,
    /// Module going.
    Unload,
    /// A new thread calls `site` (which calls `nested`, if any) and stays inside,
    /// parked or running.
    Block {
        site: usize,
        nested: Option<usize>,
        parked: bool,
    },
    /// A new thread calls a site once, then waits outside patchable code, parked or
    /// running.
    Idle { parked: bool },
    /// Release one of those threads.
    Unblock(usize),
    /// Release every such thread and let the transition finish.
    Settle,
}

fn funcs_strategy() -> impl Strategy<Value = [Option<u8>; NSITES]> {
    prop::array::uniform4(prop::option::weighted(0.5, 1..=NIMPS))
        .prop_filter("a patch patches something", |f| {
            f.iter().any(Option::is_some)
        })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (funcs_strategy(), prop::bool::weighted(0.3))
            .prop_map(|(funcs, replace)| Op::Enable { funcs, replace }),
        1 => (0..4usize).prop_map(Op::EnableDup),
        3 => (0..4usize).prop_map(Op::Disable),
        1 => (0..4usize).prop_map(Op::ReEnable),
        3 => Just(Op::Reverse),
        2 => Just(Op::Force),
        2 => Just(Op::Load),
        2 => Just(Op::Unload),
        4 => (0..NSITES, prop::option::weighted(0.3, 0..NSITES), any::<bool>())
            .prop_map(|(site, nested, parked)| Op::Block { site, nested, parked }),
        1 => any::<bool>().prop_map(|parked| Op::Idle { parked }),
        2 => (0..3usize).prop_map(Op::Unblock),
        1 => Just(Op::Settle),
    ]
}

fn ops_strategy() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op_strategy(), 1..=30)
}

// ---------------------------------------------------------------------------------------
// The reference model.

#[derive(Clone, Debug)]
struct MPatch {
    /// Identifies the patch's release hook.
    id: u64,
    name: String,
    enabled: bool,
    replace: bool,
    forced: bool,
    funcs: [Option<u8>; NSITES],
    /// Nop funcs (§6), while this replace patch is in transition.
    nops: [bool; NSITES],
    /// The objects in order (`None`: vmlinux), with whether each is dynamic (§6).
    objects: Vec<(Option<&'static str>, bool)>,
}

/// What a patch's release hook must have done once it is off the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Release {
    /// Disabled or replaced: released once (§5.5).
    Once,
    /// Involved in a forced transition: never released (§4.12).
    Never,
    /// Refused by `enable`: the kernel's module fails to load, so nothing says whether
    /// the reference it took counts as a release; at most once.
    AtMostOnce,
}

impl Release {
    fn of(p: &MPatch) -> Self {
        if p.forced {
            Release::Never
        } else {
            Release::Once
        }
    }
}

/// A thread of the test that waits: blocked inside sites (a blocker) or outside
/// patchable code (idle).
struct Waiter {
    thread: String,
    /// The sites it is inside, outermost first, with the implementation it entered.
    acts: Vec<(usize, u8)>,
    parked: bool,
    /// Its patch state.
    state: i8,
    release: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<Vec<u32>>>,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let acts: Vec<String> = self
            .acts
            .iter()
            .map(|&(s, i)| format!("{}={i}", SITE_NAMES[s]))
            .collect();
        write!(
            f,
            "{}({} {}, state {})",
            self.thread,
            if self.parked { "parked" } else { "running" },
            if acts.is_empty() {
                "outside".to_owned()
            } else {
                format!("in {}", acts.join(">"))
            },
            self.state
        )
    }
}

#[derive(Debug, Default)]
struct Model {
    patches: Vec<MPatch>,
    /// The patch in transition (index) and the target.
    transition: Option<(usize, i8)>,
    loaded: bool,
    waiters: Vec<Waiter>,
    /// Patches off the list, by id, with how often each must have been released.
    gone: Vec<(u64, Release)>,
}

impl Model {
    fn target(&self) -> i8 {
        self.transition.map_or(KLP_TRANSITION_IDLE, |t| t.1)
    }

    fn pending(&self, b: &Waiter) -> bool {
        self.transition.is_some() && b.state != self.target()
    }

    /// The func_stack of `site`, oldest first: (patch index, implementation; a nop is 0).
    /// Funcs of an object that is not loaded are on no stack.
    fn stack(&self, site: usize) -> Vec<(usize, u8)> {
        if in_object(site) && !self.loaded {
            return Vec::new();
        }
        self.patches
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p.funcs[site] {
                Some(k) => Some((i, k)),
                None => p.nops[site].then_some((i, 0)),
            })
            .collect()
    }

    /// §3.2: what a thread in `state` runs at `site`.
    fn runs(&self, site: usize, state: i8) -> u8 {
        let st = self.stack(site);
        let Some(&(top, imp)) = st.last() else {
            return 0;
        };
        match self.transition {
            Some((tp, _)) if tp == top && state == KLP_TRANSITION_UNPATCHED => {
                st.len().checked_sub(2).map_or(0, |i| st[i].1)
            }
            _ => imp,
        }
    }

    /// §4.5: the implementation of `site` a thread must not be inside to switch.
    fn forbidden(&self, site: usize) -> Option<u8> {
        let (tp, target) = self.transition?;
        let st = self.stack(site);
        let j = st.iter().position(|e| e.0 == tp)?;
        Some(if target == KLP_TRANSITION_UNPATCHED {
            st[j].1
        } else {
            j.checked_sub(1).map_or(0, |i| st[i].1)
        })
    }

    /// §4.2, §4.3.
    fn begin(&mut self, pi: usize, target: i8) {
        self.transition = Some((pi, target));
        for b in &mut self.waiters {
            b.state = 1 - target;
        }
    }

    /// §4.4: a completion attempt (the worker retries until nothing changes). A thread
    /// outside patchable code switches; a parked thread switches unless it is inside a
    /// forbidden implementation; a thread running inside patchable code cannot be
    /// switched from outside.
    fn attempt(&mut self) {
        let Some((_, target)) = self.transition else {
            return;
        };
        let forbidden: Vec<_> = (0..NSITES).map(|s| self.forbidden(s)).collect();
        for b in &mut self.waiters {
            let stuck = b.acts.iter().any(|&(s, i)| forbidden[s] == Some(i));
            if b.state != target && (b.acts.is_empty() || (b.parked && !stuck)) {
                b.state = target;
            }
        }
        if self.waiters.iter().all(|b| b.state == target) {
            self.complete();
        }
    }

    /// §4.9 and what follows it in §4.4.
    fn complete(&mut self) {
        let (pi, target) = self.transition.take().expect("complete without transition");
        for b in &mut self.waiters {
            b.state = KLP_TRANSITION_IDLE;
        }
        if target == KLP_TRANSITION_UNPATCHED {
            let p = self.patches.remove(pi);
            self.gone.push((p.id, Release::of(&p)));
        } else {
            let p = &mut self.patches[pi];
            p.nops = [false; NSITES];
            p.objects.retain(|o| !o.1);
            if p.replace {
                let old: Vec<_> = self.patches.drain(..pi).collect();
                self.gone.extend(old.iter().map(|p| (p.id, Release::of(p))));
            }
        }
    }

    /// §2.1-2.7.
    fn enable(
        &mut self,
        id: u64,
        name: &str,
        funcs: [Option<u8>; NSITES],
        replace: bool,
    ) -> Result<(), i32> {
        if self.patches.iter().any(|p| p.name == name) {
            return Err(EEXIST);
        }
        if self.transition.is_some() {
            return Err(EBUSY);
        }
        let mut objects = Vec::new();
        if funcs[..2].iter().any(Option::is_some) {
            objects.push((None, false));
        }
        if funcs[2..].iter().any(Option::is_some) {
            objects.push((Some(OBJ), false));
        }
        let mut nops = [false; NSITES];
        if replace {
            for old in &self.patches {
                for &(name, _) in &old.objects {
                    if !objects.iter().any(|o| o.0 == name) {
                        objects.push((name, true));
                    }
                }
                for s in 0..NSITES {
                    nops[s] |= old.funcs[s].is_some() && funcs[s].is_none();
                }
            }
        }
        self.patches.push(MPatch {
            id,
            name: name.to_owned(),
            enabled: true,
            replace,
            forced: false,
            funcs,
            nops,
            objects,
        });
        self.begin(self.patches.len() - 1, KLP_TRANSITION_PATCHED);
        self.attempt();
        Ok(())
    }

    /// §5.1, §5.2, §4.11.
    fn set_enabled(&mut self, name: &str, enabled: bool) -> Result<(), i32> {
        let pi = self
            .patches
            .iter()
            .position(|p| p.name == name)
            .ok_or(ENOENT)?;
        if self.patches[pi].enabled == enabled {
            return Err(EINVAL);
        }
        if let Some((tp, target)) = self.transition
            && tp == pi
        {
            self.patches[pi].enabled = enabled;
            self.transition = Some((pi, 1 - target));
            self.attempt();
            return Ok(());
        }
        if enabled {
            return Err(EINVAL);
        }
        if self.transition.is_some() {
            return Err(EBUSY);
        }
        self.begin(pi, KLP_TRANSITION_UNPATCHED);
        self.patches[pi].enabled = false;
        self.attempt();
        Ok(())
    }

    /// §5.4, §4.12.
    fn force(&mut self, name: &str) -> Result<(), i32> {
        let pi = self
            .patches
            .iter()
            .position(|p| p.name == name)
            .ok_or(ENOENT)?;
        let Some((tp, target)) = self.transition.filter(|t| t.0 == pi) else {
            return Err(EINVAL);
        };
        for b in &mut self.waiters {
            b.state = target;
        }
        if target == KLP_TRANSITION_UNPATCHED {
            self.patches[tp].forced = true;
        } else if self.patches[tp].replace {
            for (i, p) in self.patches.iter_mut().enumerate() {
                if i != tp {
                    p.forced = true;
                }
            }
        }
        self.attempt();
        Ok(())
    }

    /// §1.4 module coming.
    fn load(&mut self) -> Result<(), i32> {
        if self.loaded {
            return Err(EEXIST);
        }
        self.loaded = true;
        self.attempt();
        Ok(())
    }

    /// §1.4 module going.
    fn unload(&mut self) -> Result<(), i32> {
        if !self.loaded {
            return Err(ENOENT);
        }
        self.loaded = false;
        self.attempt();
        Ok(())
    }

    /// What `patches()` must show (§1.5, §5.4).
    fn infos(&self) -> Vec<PatchInfo> {
        self.patches
            .iter()
            .enumerate()
            .map(|(i, p)| PatchInfo {
                name: p.name.clone(),
                enabled: p.enabled,
                transition: self.transition.is_some_and(|t| t.0 == i),
                replace: p.replace,
                stack_order: i + 1,
                forced: p.forced,
                objects: p
                    .objects
                    .iter()
                    .map(|&(n, _)| {
                        (
                            n.unwrap_or("vmlinux").to_owned(),
                            n.is_none() || self.loaded,
                        )
                    })
                    .collect(),
            })
            .collect()
    }

    fn summary(&self) -> String {
        let patches: Vec<String> = self
            .patches
            .iter()
            .map(|p| {
                format!(
                    "{}{}{} {:?}{}",
                    p.name,
                    if p.enabled { "" } else { "(disabled)" },
                    if p.replace { "(replace)" } else { "" },
                    p.funcs,
                    if p.nops.iter().any(|&n| n) {
                        format!(" nops {:?}", p.nops)
                    } else {
                        String::new()
                    }
                )
            })
            .collect();
        format!(
            "patches {patches:?}, transition {:?}, loaded {}, threads {:?}",
            self.transition, self.loaded, self.waiters
        )
    }
}

// ---------------------------------------------------------------------------------------
// The engine side.

#[derive(Debug, Default)]
struct Stats {
    cases: u64,
    steps: u64,
    /// Steps after which a transition stayed pending.
    held: u64,
    reversals: u64,
    /// Reversals after which the transition stayed pending.
    held_reversals: u64,
    /// Steps that left a transition with some threads switched and some not.
    partial: u64,
    forces: u64,
    busy: u64,
    einval: u64,
    replaced: u64,
    object_moves_in_transition: u64,
}

static THREAD_SEQ: AtomicU64 = AtomicU64::new(0);

struct Harness<F: Flavor + 'static> {
    klp: Klp<F>,
    cap: Arc<Capture>,
    m: Model,
    next_patch: u64,
    /// How often each patch's release hook ran, by id.
    releases: Arc<Mutex<HashMap<u64, u32>>>,
    stats: Stats,
    clean: bool,
}

fn expect(what: &str, got: Result<(), KlpError>, want: Result<(), i32>) -> Result<(), String> {
    let ok = match (&got, want) {
        (Ok(()), Ok(())) => true,
        (Err(KlpError::Busy), Err(EBUSY)) => true,
        (Err(KlpError::Busy | KlpError::SiteBusy(_)), _) => false,
        (Err(e), Err(n)) => e.errno() == n,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what}: engine returned {got:?}, the model wants {want:?}"
        ))
    }
}

fn expect_obj(
    what: &str,
    got: Result<(), ObjectError>,
    want: Result<(), i32>,
) -> Result<(), String> {
    if got.clone().map_err(|e| e.errno()) == want {
        Ok(())
    } else {
        Err(format!(
            "{what}: engine returned {got:?}, the model wants {want:?}"
        ))
    }
}

fn build_patch(name: &str, funcs: &[Option<u8>; NSITES], replace: bool) -> Patch {
    let object = |sites: std::ops::Range<usize>, mut o: Object| {
        let mut any = false;
        for s in sites {
            if let Some(k) = funcs[s] {
                o = o.func(Func::new(SITE_NAMES[s], REPL[s][usize::from(k) - 1]));
                any = true;
            }
        }
        any.then_some(o)
    };
    let mut p = Patch::new(name).replace(replace);
    for o in [
        object(0..2, Object::vmlinux()),
        object(2..4, Object::named(OBJ)),
    ]
    .into_iter()
    .flatten()
    {
        p = p.object(o);
    }
    p
}

/// What every site runs in a fresh thread, and that thread's patch state.
fn fresh_calls<F: Flavor + 'static>(klp: Klp<F>) -> ([u32; NSITES], i8) {
    std::thread::Builder::new()
        .name("model-check".into())
        .spawn(move || {
            let r = std::array::from_fn(|s| call(s, 0));
            (r, klp.thread_patch_state())
        })
        .expect("spawn")
        .join()
        .expect("a site call panicked")
}

impl<F: Flavor + 'static> Harness<F> {
    fn new(klp: Klp<F>, cap: Arc<Capture>) -> Self {
        Harness {
            klp,
            cap,
            m: Model::default(),
            next_patch: 0,
            releases: Arc::default(),
            stats: Stats::default(),
            clean: false,
        }
    }

    fn live(&self, i: usize) -> Option<String> {
        let n = self.m.patches.len();
        (n > 0).then(|| self.m.patches[i % n].name.clone())
    }

    fn apply(&mut self, op: &Op) -> Result<(), String> {
        let was_transition = self.m.transition.is_some();
        match op {
            Op::Enable { funcs, replace } => {
                let name = format!("p{}", self.next_patch);
                let before = self.m.patches.len();
                let ok = self.enable(&name, funcs, *replace)?;
                if *replace && ok && self.m.patches.len() == 1 && before > 0 {
                    self.stats.replaced += 1;
                }
            }
            Op::EnableDup(i) => {
                let name = self.live(*i).unwrap_or_else(|| "p_dup".into());
                self.enable(&name, &[Some(1), None, None, None], false)?;
            }
            Op::Disable(i) | Op::ReEnable(i) => {
                let value = matches!(op, Op::ReEnable(_));
                let name = self.live(*i).unwrap_or_else(|| "nobody".into());
                let want = self.m.set_enabled(&name, value);
                let got = self.klp.set_enabled(&name, value);
                self.count(&want);
                if was_transition && want.is_ok() {
                    self.stats.reversals += 1;
                    self.stats.held_reversals += u64::from(self.m.transition.is_some());
                }
                expect(&format!("set_enabled({name}, {value})"), got, want)?;
            }
            Op::Reverse => {
                if let Some((tp, _)) = self.m.transition {
                    let name = self.m.patches[tp].name.clone();
                    let value = !self.m.patches[tp].enabled;
                    let want = self.m.set_enabled(&name, value);
                    let got = self.klp.set_enabled(&name, value);
                    self.stats.reversals += 1;
                    self.stats.held_reversals += u64::from(self.m.transition.is_some());
                    expect(&format!("reverse: set_enabled({name}, {value})"), got, want)?;
                }
            }
            Op::Force => match self.m.transition {
                Some((tp, _)) => {
                    let name = self.m.patches[tp].name.clone();
                    // Writing 0 does nothing.
                    expect("force(false)", self.klp.force(&name, false), Ok(()))?;
                    let want = self.m.force(&name);
                    let got = self.klp.force(&name, true);
                    self.stats.forces += 1;
                    expect(&format!("force({name})"), got, want)?;
                }
                None => {
                    let name = self.live(0).unwrap_or_else(|| "nobody".into());
                    let want = self.m.force(&name);
                    let got = self.klp.force(&name, true);
                    self.count(&want);
                    expect(&format!("force({name}) outside a transition"), got, want)?;
                }
            },
            Op::Load => {
                let want = self.m.load();
                let got = load_object(OBJ, || {});
                if was_transition && want.is_ok() {
                    self.stats.object_moves_in_transition += 1;
                }
                expect_obj("load_object", got, want)?;
            }
            Op::Unload => {
                let want = self.m.unload();
                let got = unload_object(OBJ, || {});
                if was_transition && want.is_ok() {
                    self.stats.object_moves_in_transition += 1;
                }
                expect_obj("unload_object", got, want)?;
            }
            Op::Block {
                site,
                nested,
                parked,
            } => {
                if self.m.waiters.len() < MAX_WAITERS {
                    self.spawn(Some((*site, *nested)), *parked)?;
                }
            }
            Op::Idle { parked } => {
                if self.m.waiters.len() < MAX_WAITERS {
                    self.spawn(None, *parked)?;
                }
            }
            Op::Unblock(i) => {
                if !self.m.waiters.is_empty() {
                    let i = i % self.m.waiters.len();
                    let b = self.m.waiters.remove(i);
                    self.release(b)?;
                    self.m.attempt();
                }
            }
            Op::Settle => {
                // Idle threads first: they call sites when released, which must not race
                // with a completion that releasing a blocker allows.
                let (idle, blocked): (Vec<_>, Vec<_>) = std::mem::take(&mut self.m.waiters)
                    .into_iter()
                    .partition(|b| b.acts.is_empty());
                for b in idle.into_iter().chain(blocked) {
                    self.release(b)?;
                }
                self.m.attempt();
                assert!(
                    self.m.transition.is_none(),
                    "model: no blocker, no transition"
                );
            }
        }
        self.stats.steps += 1;
        self.sync()?;
        self.check()
    }

    /// Enable a new patch named `name`; returns whether the model accepted it.
    fn enable(
        &mut self,
        name: &str,
        funcs: &[Option<u8>; NSITES],
        replace: bool,
    ) -> Result<bool, String> {
        let id = self.next_patch;
        self.next_patch += 1;
        let counts = Arc::clone(&self.releases);
        let patch = build_patch(name, funcs, replace).on_release(move || {
            *counts.lock().unwrap().entry(id).or_default() += 1;
        });
        let want = self.m.enable(id, name, *funcs, replace);
        if want.is_err() {
            self.m.gone.push((id, Release::AtMostOnce));
        }
        let got = self.klp.enable(patch);
        self.count(&want);
        expect(&format!("enable({name})"), got, want)?;
        Ok(want.is_ok())
    }

    /// No patch is released while on the list, or twice, or when forced; with `all`
    /// (after a grace period), every other patch off the list is released.
    fn check_releases(&self, all: bool) -> Result<(), String> {
        let counts = self.releases.lock().unwrap();
        let n = |id: u64| counts.get(&id).copied().unwrap_or(0);
        if let Some(p) = self.m.patches.iter().find(|p| n(p.id) != 0) {
            return Err(format!("{} was released while on the list", p.name));
        }
        for &(id, want) in &self.m.gone {
            let ok = match (want, n(id)) {
                (Release::Never, 0) | (Release::Once | Release::AtMostOnce, 0..=1) => {
                    !all || want != Release::Once || n(id) == 1
                }
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "patch #{id} was released {} times, the model wants {want:?}",
                    n(id)
                ));
            }
        }
        Ok(())
    }

    fn count(&mut self, want: &Result<(), i32>) {
        match want {
            Err(EBUSY) => self.stats.busy += 1,
            Err(EINVAL) => self.stats.einval += 1,
            _ => {}
        }
    }

    /// A new thread that enters `site` (and `nested` from it) and stays there, or
    /// (`None`) that calls a site once and waits outside patchable code. It registers
    /// now: during a transition it starts at the target.
    fn spawn(&mut self, site: Option<(usize, Option<usize>)>, parked: bool) -> Result<(), String> {
        let thread = format!("model-thr-{}", THREAD_SEQ.fetch_add(1, Ordering::Relaxed));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let gate = Gate {
            parked,
            ready: ready_tx,
            release: release_rx,
        };
        let handle = std::thread::Builder::new()
            .name(thread.clone())
            .spawn(move || {
                GATE.with(|g| *g.borrow_mut() = Some(gate));
                match site {
                    Some((outer, None)) => vec![call(outer, 1)],
                    Some((outer, Some(inner))) => {
                        let v = call(outer, 2 + inner as u32);
                        vec![v, INNER.with(std::cell::Cell::get)]
                    }
                    None => {
                        call(0, 0);
                        wait_at_gate();
                        (0..NSITES).map(|s| call(s, 0)).collect()
                    }
                }
            })
            .map_err(|e| format!("spawn: {e}"))?;
        if ready_rx.recv_timeout(LIMIT).is_err() {
            return Err(format!("{thread} never got to its gate"));
        }
        let state = self.m.target();
        let acts = match site {
            None => Vec::new(),
            Some((outer, nested)) => std::iter::once(outer)
                .chain(nested)
                .map(|s| (s, self.m.runs(s, state)))
                .collect(),
        };
        self.m.waiters.push(Waiter {
            thread,
            acts,
            parked,
            state,
            release: Some(release_tx),
            handle: Some(handle),
        });
        Ok(())
    }

    /// Release a waiting thread and check what it ran: a blocker, the implementations it
    /// entered; an idle thread, what it calls next (it is at the target).
    fn release(&self, mut b: Waiter) -> Result<(), String> {
        b.release.take();
        let got = b
            .handle
            .take()
            .expect("a waiting thread")
            .join()
            .map_err(|_| format!("{} panicked", b.thread))?;
        let want: Vec<u32> = if b.acts.is_empty() {
            (0..NSITES)
                .map(|s| value(s, self.m.runs(s, self.m.target())))
                .collect()
        } else {
            b.acts.iter().map(|&(s, i)| value(s, i)).collect()
        };
        if got == want {
            Ok(())
        } else {
            Err(format!("{b:?} returned {got:?}, the model wants {want:?}"))
        }
    }

    /// Wait until the engine has done what the model did: a transition the model
    /// completed is complete, every blocked thread is in the model's state.
    fn sync(&mut self) -> Result<(), String> {
        if self.m.transition.is_none() {
            if !self.klp.wait_transition(LIMIT) {
                return Err("the transition never completed (the model's did)".into());
            }
        } else {
            self.stats.held += 1;
            let target = self.m.target();
            if self.m.waiters.iter().any(|b| b.state == target)
                && self.m.waiters.iter().any(|b| b.state != target)
            {
                self.stats.partial += 1;
            }
            std::thread::sleep(PAUSE);
        }
        let deadline = Instant::now() + LIMIT;
        loop {
            let tasks = self.klp.tasks();
            let mismatch = self.m.waiters.iter().find_map(|b| {
                let prefix = format!("{}:", b.thread);
                let want = (b.state, self.m.pending(b), b.parked);
                match tasks.iter().find(|t| t.task.starts_with(&prefix)) {
                    None => Some(format!("{} is not a task", b.thread)),
                    Some(t) if (t.patch_state, t.pending, t.parked) != want => Some(format!(
                        "{}: engine (state, pending, parked) = {:?}, the model wants {want:?}",
                        b.thread,
                        (t.patch_state, t.pending, t.parked)
                    )),
                    Some(_) => None,
                }
            });
            match mismatch {
                None => return Ok(()),
                Some(m) if Instant::now() >= deadline => return Err(m),
                Some(_) => std::thread::sleep(Duration::from_micros(200)),
            }
        }
    }

    fn check(&self) -> Result<(), String> {
        self.check_releases(false)?;
        let want = self.m.infos();
        let got = self.klp.patches();
        if got != want {
            return Err(format!("patches():\n  engine {got:?}\n  model  {want:?}"));
        }
        if self.klp.in_transition() != self.m.transition.is_some() {
            return Err(format!(
                "in_transition() = {}, the model says {}",
                self.klp.in_transition(),
                self.m.transition.is_some()
            ));
        }
        let target = self.m.target();
        let want: [u32; NSITES] = std::array::from_fn(|s| value(s, self.m.runs(s, target)));
        let (got, state) = fresh_calls(self.klp);
        if got != want || state != target {
            return Err(format!(
                "a fresh thread runs {got:?} in state {state}, the model wants {want:?} in state {target}"
            ));
        }
        Ok(())
    }

    /// Release the waiting threads, finish any transition, disable every patch and unload the
    /// object, whatever the model says; then check that the engine is clean.
    fn cleanup(&mut self) -> Result<(), String> {
        self.clean = true;
        let mut errs = Vec::new();
        for mut b in std::mem::take(&mut self.m.waiters) {
            b.release.take();
            if let Some(h) = b.handle.take()
                && h.join().is_err()
            {
                errs.push(format!("{} panicked", b.thread));
            }
        }
        let finish = |klp: &Klp<F>, errs: &mut Vec<String>| {
            if klp.wait_transition(LIMIT) {
                return;
            }
            errs.push("cleanup: a transition with no blocker never completed".into());
            if let Some(p) = klp.patches().into_iter().find(|p| p.transition) {
                let _ = klp.force(&p.name, true);
            }
            if !klp.wait_transition(LIMIT) {
                errs.push("cleanup: a forced transition never completed".into());
            }
        };
        finish(&self.klp, &mut errs);
        for p in self.klp.patches() {
            if let Err(e) = self.klp.set_enabled(&p.name, false) {
                errs.push(format!("cleanup: disable {}: {e:?}", p.name));
            }
            finish(&self.klp, &mut errs);
        }
        if object_state(OBJ).is_some()
            && let Err(e) = unload_object(OBJ, || {})
        {
            errs.push(format!("cleanup: unload: {e:?}"));
        }
        let mut gone = std::mem::take(&mut self.m.gone);
        gone.extend(self.m.patches.iter().map(|p| (p.id, Release::of(p))));
        self.m = Model {
            gone,
            ..Model::default()
        };
        let left = self.klp.patches();
        if !left.is_empty() {
            errs.push(format!("cleanup: patches left {left:?}"));
        }
        let (runs, _) = fresh_calls(self.klp);
        let originals: [u32; NSITES] = std::array::from_fn(|s| value(s, 0));
        if runs != originals {
            errs.push(format!(
                "cleanup: the sites run {runs:?}, not the originals"
            ));
        }
        let warnings: Vec<String> = self
            .cap
            .take()
            .into_iter()
            .filter(|l| l.contains("WARNING"))
            .collect();
        if !warnings.is_empty() {
            errs.push(format!("the engine warned: {warnings:?}"));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("\n"))
        }
    }
}

impl<F: Flavor + 'static> Drop for Harness<F> {
    fn drop(&mut self) {
        if !self.clean {
            let _ = self.cleanup();
        }
    }
}

// ---------------------------------------------------------------------------------------
// The tests: one engine per flavor, reused by every case.

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

fn run_case<F: Flavor + 'static>(
    klp: Klp<F>,
    cap: &Arc<Capture>,
    ops: &[Op],
    stats: &RefCell<Stats>,
) -> Result<(), TestCaseError> {
    let mut h = Harness::new(klp, Arc::clone(cap));
    let mut res = Ok(());
    for (i, op) in ops.iter().enumerate() {
        let before = h.m.summary();
        if let Err(e) = h.apply(op) {
            res = Err(format!(
                "step {i}: {op:?}\n  model before: {before}\n  model after:  {}\n  {e}",
                h.m.summary()
            ));
            break;
        }
    }
    let mut clean = h.cleanup();
    if res.is_ok() && clean.is_ok() {
        // A patch leaves the list under the control mutex; its release is handed to the
        // flavor when the mutex is dropped (maybe by the worker, a moment later), and runs
        // after a grace period. Wait for it rather than race it.
        let t0 = std::time::Instant::now();
        loop {
            h.klp.flavor().barrier();
            clean = h.check_releases(true);
            if clean.is_ok() || t0.elapsed() > std::time::Duration::from_secs(10) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    let st = &mut *stats.borrow_mut();
    st.cases += 1;
    for (total, add) in [
        (&mut st.steps, h.stats.steps),
        (&mut st.held, h.stats.held),
        (&mut st.reversals, h.stats.reversals),
        (&mut st.held_reversals, h.stats.held_reversals),
        (&mut st.partial, h.stats.partial),
        (&mut st.forces, h.stats.forces),
        (&mut st.busy, h.stats.busy),
        (&mut st.einval, h.stats.einval),
        (&mut st.replaced, h.stats.replaced),
        (
            &mut st.object_moves_in_transition,
            h.stats.object_moves_in_transition,
        ),
    ] {
        *total += add;
    }
    match (res, clean) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(TestCaseError::fail(e)),
        (Err(e), Err(c)) => Err(TestCaseError::fail(format!("{e}\n{c}"))),
    }
}

fn run<F: Flavor + 'static>(flavor: F) {
    let _s = serial();
    let name = flavor.name();
    let cap = Capture::new();
    let klp = Klp::with_log(flavor, Log::new(cap.clone()));
    klp.set_retry_period(Duration::from_millis(2));
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        max_shrink_time: 60_000,
        ..Config::default()
    };
    let stats = RefCell::new(Stats::default());
    let t0 = Instant::now();
    let mut runner = TestRunner::new(config);
    let res = runner.run(&ops_strategy(), |ops| run_case(klp, &cap, &ops, &stats));
    eprintln!("{name}: {:?} in {:.2?}", stats.borrow(), t0.elapsed());
    match res {
        Ok(()) => {}
        Err(TestError::Fail(why, ops)) => {
            let ops: Vec<String> = ops.iter().map(|o| format!("    {o:?},")).collect();
            panic!(
                "{name}: minimal failing sequence:\n[\n{}\n]\n{why}",
                ops.join("\n")
            )
        }
        Err(e) => panic!("{name}: {e}"),
    }
}

#[test]
fn model_preempt() {
    run(Preempt::new());
}

#[test]
fn model_rcu() {
    run(Rcu::new());
}

#[test]
fn model_lock() {
    run(Lock::new());
}
