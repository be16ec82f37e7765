//! The kernel's livepatch selftests (`tools/testing/selftests/livepatch/`:
//! `test-livepatch.sh`, `test-callbacks.sh`, `test-state.sh`, `test-sysfs.sh`) on klp-core,
//! shared by the per-flavor test binaries (`selftest_preempt.rs`, `selftest_rcu.rs`,
//! `selftest_lock.rs`).
//!
//! The mapping (reference §10.0, §10.1):
//!
//! * The kernel log is a [`Capture`]. Every action first writes its echo line
//!   (`% insmod test_modules/<m>.ko`, `% rmmod <m>`,
//!   `% echo 0 > /sys/kernel/livepatch/<m>/enabled`), as `functions.sh` does, and
//!   [`Env::check_result`] compares the lines that contain `livepatch:` or `test_klp` with
//!   the expected log, line by line.
//! * A livepatch module is a function that builds its [`Patch`]; loading it is
//!   [`Klp::enable`], its module reference is the patch's `on_release`.
//! * A target module is a named object: [`load_object`] / [`unload_object`] with the
//!   module's init and exit.
//! * `/proc/cmdline`, `/proc/meminfo`, getpid and the modules' functions are patchable
//!   functions of this file.
//! * Waiting threads (the harness polling sysfs, a module init waiting for its work, the busy
//!   module's work item sleeping) park around the blocking call, as a sleeping kernel task
//!   is not running and can have its stack checked.
//!
//! Sites and objects are process-wide: the tests of one binary run one at a time
//! ([`Env::new`] takes a global lock), each with its own engine and capture.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use klp_core::log::{Capture, Level, Log};
use klp_core::{
    Callbacks, Func, Klp, ModuleState, Object, ObjectCtx, Patch, PatchInfo, libc_errno,
    load_object, object_state, park, patchable, unload_object, unpark,
};
use klp_sync::Flavor;

pub mod callbacks;
pub mod livepatch;
pub mod state;
pub mod sysfs;

/// How long any wait may take (the scripts wait up to 60 s; the engine retries every
/// [`RETRY`]).
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The engine's retry period for stuck transitions (the kernel's is about a second).
pub const RETRY: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------------------
// Module names.

/// `test_klp_livepatch`.
pub const LIVEPATCH: &str = "test_klp_livepatch";
/// `test_klp_atomic_replace`.
pub const ATOMIC_REPLACE: &str = "test_klp_atomic_replace";
/// `test_klp_syscall`.
pub const SYSCALL: &str = "test_klp_syscall";
/// `test_klp_callbacks_demo`.
pub const CALLBACKS_DEMO: &str = "test_klp_callbacks_demo";
/// `test_klp_callbacks_demo2`.
pub const CALLBACKS_DEMO2: &str = "test_klp_callbacks_demo2";
/// `test_klp_callbacks_mod`.
pub const CALLBACKS_MOD: &str = "test_klp_callbacks_mod";
/// `test_klp_callbacks_busy`.
pub const CALLBACKS_BUSY: &str = "test_klp_callbacks_busy";
/// `test_klp_mod_target`.
pub const MOD_TARGET: &str = "test_klp_mod_target";
/// `test_klp_mod_patch`.
pub const MOD_PATCH: &str = "test_klp_mod_patch";
/// `test_klp_state`.
pub const STATE: &str = "test_klp_state";
/// `test_klp_state2`.
pub const STATE2: &str = "test_klp_state2";
/// `test_klp_state3`.
pub const STATE3: &str = "test_klp_state3";

// ---------------------------------------------------------------------------------------
// printk: where module code (not callbacks, which log through their context) writes.

static PRINTK: Mutex<Option<Arc<Capture>>> = Mutex::new(None);

/// `pr_info` of module code: a line into the current test's log.
pub fn printk(line: impl Into<String>) {
    let cap = PRINTK
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    if let Some(c) = cap {
        c.push(line);
    }
}

// ---------------------------------------------------------------------------------------
// "vmlinux": the functions the livepatch modules patch.

/// What `/proc/cmdline` shows unpatched.
pub const CMDLINE: &str = "BOOT_IMAGE=/boot/vmlinuz root=/dev/vda1 ro console=ttyS0";
/// What `/proc/meminfo` shows unpatched.
pub const MEMINFO: &str = "MemTotal:        4026532 kB\nMemFree:         3145728 kB";

patchable! {
    /// `cmdline_proc_show`: the text of `/proc/cmdline`.
    pub fn cmdline_proc_show() -> String { CMDLINE.to_owned() }
}

patchable! {
    /// `meminfo_proc_show`: the text of `/proc/meminfo`.
    pub fn meminfo_proc_show() -> String { MEMINFO.to_owned() }
}

patchable! {
    /// The getpid syscall entry (`sys_getpid`, as on powerpc).
    pub fn sys_getpid() -> u32 { std::process::id() }
}

/// `grep 'live patched' /proc/cmdline > /dev/kmsg; grep 'live patched' /proc/meminfo > /dev/kmsg`.
pub fn grep_live_patched() {
    for text in [cmdline_proc_show(), meminfo_proc_show()] {
        for line in text.lines().filter(|l| l.contains("live patched")) {
            printk(line);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Target modules.

patchable! {
    object = "test_klp_mod_target";
    /// `test_klp_mod_target_show`: the text of `/proc/test_klp_mod_target`.
    pub fn test_klp_mod_target_show() -> String { "test_klp_mod_target: original output".to_owned() }
}

/// `block_transition` of test_klp_callbacks_busy.
static BLOCK_TRANSITION: AtomicBool = AtomicBool::new(false);
/// The busy module's work item.
static BUSY_WORK: Mutex<Option<JoinHandle<()>>> = Mutex::new(None);
/// `busymod_work_started`.
static BUSY_STARTED: Mutex<Option<mpsc::Sender<()>>> = Mutex::new(None);

patchable! {
    object = "test_klp_callbacks_busy";
    /// `busymod_work_func`: sleeps (parked, 20 ms at a time) while `block_transition`.
    pub fn busymod_work_func() {
        printk("test_klp_callbacks_busy: busymod_work_func enter");
        if let Some(tx) = BUSY_STARTED.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = tx.send(());
        }
        while BLOCK_TRANSITION.load(Ordering::SeqCst) {
            park();
            std::thread::sleep(Duration::from_millis(20));
            unpark();
        }
        printk("test_klp_callbacks_busy: busymod_work_func exit");
    }
}

/// Block the calling thread in `f`, parked (a sleeping task).
pub fn parked<R>(f: impl FnOnce() -> R) -> R {
    park();
    let r = f();
    unpark();
    r
}

fn busy_init(block: bool) {
    BLOCK_TRANSITION.store(block, Ordering::SeqCst);
    printk("test_klp_callbacks_busy: test_klp_callbacks_busy_init");
    let (tx, rx) = mpsc::channel();
    *BUSY_STARTED.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
    let work = std::thread::Builder::new()
        .name("busymod_work".into())
        .spawn(busymod_work_func)
        .expect("cannot spawn the busy module's work");
    parked(|| rx.recv()).expect("busymod_work_func never started");
    if block {
        *BUSY_WORK.lock().unwrap_or_else(PoisonError::into_inner) = Some(work);
    } else {
        parked(|| work.join()).expect("busymod_work_func panicked");
    }
}

fn busy_exit() {
    BLOCK_TRANSITION.store(false, Ordering::SeqCst);
    let work = BUSY_WORK
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some(w) = work {
        parked(|| w.join()).expect("busymod_work_func panicked");
    }
    printk("test_klp_callbacks_busy: test_klp_callbacks_busy_exit");
}

/// The init of a target module, given its insmod parameters.
fn module_init(name: &str, params: &str) -> Box<dyn FnOnce()> {
    match name {
        CALLBACKS_MOD => Box::new(|| printk("test_klp_callbacks_mod: test_klp_callbacks_mod_init")),
        CALLBACKS_BUSY => {
            let block = match params {
                "block_transition=Y" => true,
                "block_transition=N" | "" => false,
                p => panic!("unknown parameters for {name}: {p}"),
            };
            Box::new(move || busy_init(block))
        }
        MOD_TARGET => Box::new(|| printk("test_klp_mod_target: test_klp_mod_target_init")),
        _ => panic!("no target module {name}"),
    }
}

/// The exit of a target module.
fn module_exit(name: &str) -> Box<dyn FnOnce()> {
    match name {
        CALLBACKS_MOD => Box::new(|| printk("test_klp_callbacks_mod: test_klp_callbacks_mod_exit")),
        CALLBACKS_BUSY => Box::new(busy_exit),
        MOD_TARGET => Box::new(|| printk("test_klp_mod_target: test_klp_mod_target_exit")),
        _ => panic!("no target module {name}"),
    }
}

// ---------------------------------------------------------------------------------------
// Livepatch modules.

fn livepatch_cmdline_proc_show() -> String {
    "test_klp_livepatch: this has been live patched".to_owned()
}

/// test_klp_livepatch: `cmdline_proc_show` prints `test_klp_livepatch: this has been live
/// patched`.
pub fn test_klp_livepatch() -> Patch {
    Patch::new(LIVEPATCH).object(Object::vmlinux().func(Func::new(
        "cmdline_proc_show",
        livepatch_cmdline_proc_show as fn() -> String,
    )))
}

fn livepatch_meminfo_proc_show() -> String {
    "test_klp_atomic_replace: this has been live patched".to_owned()
}

/// test_klp_atomic_replace with its `replace` parameter: `meminfo_proc_show`.
pub fn test_klp_atomic_replace(replace: bool) -> Patch {
    Patch::new(ATOMIC_REPLACE)
        .replace(replace)
        .object(Object::vmlinux().func(Func::new(
            "meminfo_proc_show",
            livepatch_meminfo_proc_show as fn() -> String,
        )))
}

fn lp_sys_getpid() -> u32 {
    std::process::id()
}

/// test_klp_syscall: patches the getpid syscall entry; prints nothing.
pub fn test_klp_syscall() -> Patch {
    Patch::new(SYSCALL)
        .object(Object::vmlinux().func(Func::new("sys_getpid", lp_sys_getpid as fn() -> u32)))
}

fn patched_work_func() {
    printk("test_klp_callbacks_demo: patched_work_func");
}

/// The four callbacks of test_klp_callbacks_demo(2): each prints `<cb>: <object>`;
/// pre_patch returns `pre_patch_ret`.
fn demo_callbacks(module: &'static str, pre_patch_ret: &Arc<AtomicI32>) -> Callbacks {
    fn info(ctx: &ObjectCtx<'_>, module: &str, callback: &str) {
        ctx.log(&format!("{module}: {callback}: {}", ctx.describe()));
    }
    let ret = Arc::clone(pre_patch_ret);
    Callbacks::new()
        .pre_patch(move |ctx| {
            info(ctx, module, "pre_patch_callback");
            match ret.load(Ordering::SeqCst) {
                0 => Ok(()),
                e => Err(e),
            }
        })
        .post_patch(move |ctx| info(ctx, module, "post_patch_callback"))
        .pre_unpatch(move |ctx| info(ctx, module, "pre_unpatch_callback"))
        .post_unpatch(move |ctx| info(ctx, module, "post_unpatch_callback"))
}

/// test_klp_callbacks_demo with its `pre_patch_ret` parameter: vmlinux, test_klp_callbacks_mod
/// and test_klp_callbacks_busy (whose `busymod_work_func` it replaces), all with callbacks.
pub fn test_klp_callbacks_demo(pre_patch_ret: &Arc<AtomicI32>) -> Patch {
    Patch::new(CALLBACKS_DEMO)
        .object(Object::vmlinux().callbacks(demo_callbacks(CALLBACKS_DEMO, pre_patch_ret)))
        .object(
            Object::named(CALLBACKS_MOD).callbacks(demo_callbacks(CALLBACKS_DEMO, pre_patch_ret)),
        )
        .object(
            Object::named(CALLBACKS_BUSY)
                .func(Func::new("busymod_work_func", patched_work_func as fn()))
                .callbacks(demo_callbacks(CALLBACKS_DEMO, pre_patch_ret)),
        )
}

/// test_klp_callbacks_demo2 with its `replace` parameter: vmlinux with callbacks.
pub fn test_klp_callbacks_demo2(replace: bool) -> Patch {
    let zero = Arc::new(AtomicI32::new(0));
    Patch::new(CALLBACKS_DEMO2)
        .replace(replace)
        .object(Object::vmlinux().callbacks(demo_callbacks(CALLBACKS_DEMO2, &zero)))
}

fn livepatch_test_klp_mod_target_show() -> String {
    "test_klp_mod_patch: this has been live patched".to_owned()
}

/// test_klp_mod_patch: replaces `test_klp_mod_target_show` of test_klp_mod_target.
pub fn test_klp_mod_patch() -> Patch {
    Patch::new(MOD_PATCH).object(Object::named(MOD_TARGET).func(Func::new(
        "test_klp_mod_target_show",
        livepatch_test_klp_mod_target_show as fn() -> String,
    )))
}

/// `console_loglevel`.
pub static CONSOLE_LOGLEVEL: AtomicI32 = AtomicI32::new(CONSOLE_LOGLEVEL_DEFAULT);
/// Its value outside the state tests.
pub const CONSOLE_LOGLEVEL_DEFAULT: i32 = 7;
/// `CONSOLE_LOGLEVEL_MOTORMOUTH`.
pub const CONSOLE_LOGLEVEL_MOTORMOUTH: i32 = 15;
/// `CONSOLE_LOGLEVEL_STATE`.
pub const CONSOLE_LOGLEVEL_STATE: u64 = 1;

/// test_klp_state (`version` 1, `migrate` false) or test_klp_state2/3 (`version` 2,
/// `migrate` true: each step first looks at the previous patch's state).
pub fn test_klp_state(module: &'static str, version: u32, migrate: bool) -> Patch {
    fn info(ctx: &ObjectCtx<'_>, module: &str, callback: &str) {
        ctx.log(&format!("{module}: {callback}: {}", ctx.describe()));
    }
    let cb = Callbacks::new()
        .pre_patch(move |ctx| {
            info(ctx, module, "pre_patch_callback");
            // allocate_loglevel_state
            if migrate && ctx.get_prev_state(CONSOLE_LOGLEVEL_STATE).is_some() {
                ctx.log(&format!(
                    "{module}: allocate_loglevel_state: space to store console_loglevel already allocated"
                ));
                return Ok(());
            }
            let Some(state) = ctx.get_state(CONSOLE_LOGLEVEL_STATE) else {
                return Err(-libc_errno::EINVAL);
            };
            state.set_data(Box::into_raw(Box::new(0i32)).cast::<c_void>());
            ctx.log(&format!(
                "{module}: allocate_loglevel_state: allocating space to store console_loglevel"
            ));
            Ok(())
        })
        .post_patch(move |ctx| {
            info(ctx, module, "post_patch_callback");
            // fix_console_loglevel
            let Some(state) = ctx.get_state(CONSOLE_LOGLEVEL_STATE) else {
                return;
            };
            if migrate && let Some(prev) = ctx.get_prev_state(CONSOLE_LOGLEVEL_STATE) {
                ctx.log(&format!(
                    "{module}: fix_console_loglevel: taking over the console_loglevel change"
                ));
                state.set_data(prev.data());
                return;
            }
            ctx.log(&format!("{module}: fix_console_loglevel: fixing console_loglevel"));
            let data = state.data().cast::<i32>();
            assert!(!data.is_null(), "{module}: no loglevel state data");
            // SAFETY: `data` is the Box<i32> that allocate_loglevel_state leaked (or a
            // previous patch's, handed over); only free_loglevel_state frees it, and the
            // engine runs the callbacks one at a time.
            unsafe { *data = CONSOLE_LOGLEVEL.load(Ordering::SeqCst) };
            CONSOLE_LOGLEVEL.store(CONSOLE_LOGLEVEL_MOTORMOUTH, Ordering::SeqCst);
        })
        .pre_unpatch(move |ctx| {
            info(ctx, module, "pre_unpatch_callback");
            // restore_console_loglevel
            if migrate && ctx.get_prev_state(CONSOLE_LOGLEVEL_STATE).is_some() {
                ctx.log(&format!(
                    "{module}: restore_console_loglevel: passing the console_loglevel change back to the old livepatch"
                ));
                return;
            }
            let Some(state) = ctx.get_state(CONSOLE_LOGLEVEL_STATE) else {
                return;
            };
            ctx.log(&format!(
                "{module}: restore_console_loglevel: restoring console_loglevel"
            ));
            let data = state.data().cast::<i32>();
            assert!(!data.is_null(), "{module}: no loglevel state data");
            // SAFETY: as in post_patch.
            CONSOLE_LOGLEVEL.store(unsafe { *data }, Ordering::SeqCst);
        })
        .post_unpatch(move |ctx| {
            info(ctx, module, "post_unpatch_callback");
            // free_loglevel_state
            if migrate && ctx.get_prev_state(CONSOLE_LOGLEVEL_STATE).is_some() {
                ctx.log(&format!(
                    "{module}: free_loglevel_state: keeping space to store console_loglevel"
                ));
                return;
            }
            let Some(state) = ctx.get_state(CONSOLE_LOGLEVEL_STATE) else {
                return;
            };
            ctx.log(&format!(
                "{module}: free_loglevel_state: freeing space for the stored console_loglevel"
            ));
            let data = state.data().cast::<i32>();
            state.set_data(std::ptr::null_mut());
            if !data.is_null() {
                // SAFETY: the Box<i32> leaked by allocate_loglevel_state; the pointer was
                // cleared above, so it is freed once.
                drop(unsafe { Box::from_raw(data) });
            }
        });
    Patch::new(module)
        .replace(true)
        .state(CONSOLE_LOGLEVEL_STATE, version)
        .object(Object::vmlinux().callbacks(cb))
}

// ---------------------------------------------------------------------------------------
// The harness (`functions.sh`).

static SERIAL: Mutex<()> = Mutex::new(());

/// Poll `cond` (parked between polls, like the script's `sleep 0.1`) until it holds.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        parked(|| std::thread::sleep(Duration::from_millis(1)));
    }
}

/// What insmod prints for a module init's error.
pub fn insmod_strerror(errno: i32) -> String {
    match -errno {
        libc_errno::EINVAL => "Invalid parameters".to_owned(),
        libc_errno::ENODEV => "No such device".to_owned(),
        libc_errno::EBUSY => "Device or resource busy".to_owned(),
        libc_errno::EEXIST => "File exists".to_owned(),
        libc_errno::ENOENT => "Unknown symbol in module".to_owned(),
        libc_errno::ENOMEM => "Cannot allocate memory".to_owned(),
        e => format!("Unknown error {e}"),
    }
}

/// One selftest: its engine, its log, and the global lock.
pub struct Env<F: Flavor + 'static> {
    /// The engine.
    pub klp: Klp<F>,
    cap: Arc<Capture>,
    /// Livepatch module references: set once the patch was released.
    released: Mutex<HashMap<String, Arc<AtomicBool>>>,
    _serial: MutexGuard<'static, ()>,
}

impl<F: Flavor + 'static> Env<F> {
    /// `setup_config` and `start_test`.
    pub fn new(flavor: F) -> Self {
        let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let cap = Capture::new();
        *PRINTK.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&cap));
        BLOCK_TRANSITION.store(false, Ordering::SeqCst);
        CONSOLE_LOGLEVEL.store(CONSOLE_LOGLEVEL_DEFAULT, Ordering::SeqCst);
        let klp = Klp::with_log(flavor, Log::new(Arc::clone(&cap) as _));
        klp.set_retry_period(RETRY);
        Env {
            klp,
            cap,
            released: Mutex::new(HashMap::new()),
            _serial: serial,
        }
    }

    /// Write a line to the log (`log` in functions.sh).
    pub fn log(&self, line: impl Into<String>) {
        self.cap.push(line);
    }

    fn insmod_echo(&self, module: &str, params: &str) {
        let msg = format!("% insmod test_modules/{module}.ko {params}");
        self.log(msg.trim_end());
    }

    /// A patch's sysfs view.
    pub fn info(&self, patch: &str) -> PatchInfo {
        self.klp
            .patch(patch)
            .unwrap_or_else(|| panic!("/sys/kernel/livepatch/{patch} does not exist"))
    }

    /// `/sys/kernel/livepatch/<patch>/<object>/patched`.
    pub fn patched(&self, patch: &str, object: &str) -> bool {
        self.info(patch)
            .objects
            .iter()
            .find(|(o, _)| o == object)
            .unwrap_or_else(|| panic!("/sys/kernel/livepatch/{patch}/{object} does not exist"))
            .1
    }

    /// The patches in `/sys/kernel/livepatch/`.
    pub fn patch_names(&self) -> Vec<String> {
        self.klp.patches().into_iter().map(|p| p.name).collect()
    }

    /// `load_lp_nowait`: insmod a livepatch module and wait for its sysfs directory.
    pub fn load_lp_nowait(&self, patch: Patch, params: &str) {
        let name = patch.name().to_owned();
        self.insmod_echo(&name, params);
        let flag = Arc::new(AtomicBool::new(false));
        let f = Arc::clone(&flag);
        let patch = patch.on_release(move || f.store(true, Ordering::SeqCst));
        self.released
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.clone(), flag);
        if let Err(e) = self.klp.enable(patch) {
            panic!(
                "insmod {name}: {} ({e}, errno {})",
                insmod_strerror(e.errno()),
                e.errno()
            );
        }
        wait_until(&format!("/sys/kernel/livepatch/{name} exists"), || {
            self.klp.patch(&name).is_some()
        });
    }

    /// `load_lp`: `load_lp_nowait`, then wait until `transition` reads 0.
    pub fn load_lp(&self, patch: Patch, params: &str) {
        let name = patch.name().to_owned();
        self.load_lp_nowait(patch, params);
        wait_until(&format!("{name}/transition reads 0"), || {
            self.klp.patch(&name).is_none_or(|p| !p.transition)
        });
        // klp.wait_transition is the engine's own way to say the same.
        assert!(self.klp.wait_transition(TIMEOUT));
    }

    /// `load_failing_mod` for a livepatch module: enabling must fail; the loader's error
    /// goes to the log. Returns the errno.
    pub fn load_failing_lp(&self, patch: Patch, params: &str) -> i32 {
        let name = patch.name().to_owned();
        self.insmod_echo(&name, params);
        match self.klp.enable(patch) {
            Ok(()) => panic!("{name} unexpectedly loaded"),
            Err(e) => {
                self.log(format!(
                    "insmod: ERROR: could not insert module test_modules/{name}.ko: {}",
                    insmod_strerror(e.errno())
                ));
                assert!(
                    self.klp.patch(&name).is_none(),
                    "{name} failed to load but /sys/kernel/livepatch/{name} exists"
                );
                e.errno()
            }
        }
    }

    /// `disable_lp`: write 0 to `enabled`, wait until the patch directory disappears.
    pub fn disable_lp(&self, name: &str) {
        self.write_enabled_0(name);
        self.wait_gone(name);
    }

    /// `echo 0 > /sys/kernel/livepatch/<name>/enabled`, with its echo line.
    pub fn write_enabled_0(&self, name: &str) {
        self.log(format!("% echo 0 > /sys/kernel/livepatch/{name}/enabled"));
        if let Err(e) = self.klp.set_enabled(name, false) {
            panic!("echo 0 > /sys/kernel/livepatch/{name}/enabled: {e}");
        }
    }

    /// Wait until `/sys/kernel/livepatch/<name>` disappears.
    pub fn wait_gone(&self, name: &str) {
        wait_until(&format!("/sys/kernel/livepatch/{name} disappears"), || {
            self.klp.patch(name).is_none()
        });
    }

    /// `unload_lp`: wait until the module's reference count is 0 (its patch was released),
    /// then rmmod (nothing happens in the core).
    pub fn unload_lp(&self, name: &str) {
        let flag = self
            .released
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name)
            .unwrap_or_else(|| panic!("{name} was never loaded"));
        wait_until(&format!("/sys/module/{name}/refcnt reads 0"), || {
            flag.load(Ordering::SeqCst)
        });
        self.log(format!("% rmmod {name}"));
    }

    /// `set_pre_patch_ret`.
    pub fn set_pre_patch_ret(&self, module: &str, param: &AtomicI32, value: i32) {
        self.log(format!(
            "% echo {value} > /sys/module/{module}/parameters/pre_patch_ret"
        ));
        param.store(value, Ordering::SeqCst);
    }

    /// `load_mod`: insmod a target module.
    pub fn load_mod(&self, name: &str, params: &str) {
        self.insmod_echo(name, params);
        if let Err(e) = load_object(name, module_init(name, params)) {
            panic!("insmod {name}: {e} (errno {})", e.errno());
        }
        assert_eq!(object_state(name), Some(ModuleState::Live));
    }

    /// `load_failing_mod` for a target module; returns the errno.
    pub fn load_failing_mod(&self, name: &str, params: &str) -> i32 {
        self.insmod_echo(name, params);
        match load_object(name, module_init(name, params)) {
            Ok(()) => panic!("{name} unexpectedly loaded"),
            Err(e) => {
                self.log(format!(
                    "insmod: ERROR: could not insert module test_modules/{name}.ko: {}",
                    insmod_strerror(e.errno())
                ));
                assert_eq!(object_state(name), None);
                e.errno()
            }
        }
    }

    /// `unload_mod`: rmmod a target module.
    pub fn unload_mod(&self, name: &str) {
        self.log(format!("% rmmod {name}"));
        if let Err(e) = unload_object(name, module_exit(name)) {
            panic!("rmmod {name}: {e}");
        }
        assert_eq!(object_state(name), None);
    }

    /// `check_result`: the log lines that contain `livepatch:` or `test_klp` (without the
    /// taint lines) must be `expected`, exactly. The core's lines must also carry the
    /// levels of §9.1.
    pub fn check_result(&self, expected: &[&str]) {
        let lines: Vec<(Level, String)> = self
            .cap
            .take_with_levels()
            .into_iter()
            .filter(|(_, l)| {
                (l.contains("livepatch:") || l.contains("test_klp"))
                    && !l.contains("tainting kernel")
                    && !l.contains("taints kernel")
            })
            .collect();
        let actual: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
        assert_log(&actual, expected);
        let wrong: Vec<String> = lines
            .iter()
            .filter_map(|(lvl, l)| {
                let want = core_level(l)?;
                (want != *lvl)
                    .then(|| format!("  {l:?}: {} instead of {}", lvl.as_str(), want.as_str()))
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "lines at the wrong level:\n{}",
            wrong.join("\n")
        );
    }
}

/// The §9.1 level of a core line, when it is one the selftests print.
fn core_level(line: &str) -> Option<Level> {
    let msg = line.strip_prefix("livepatch: ")?;
    let debug = [
        "initializing patching transition",
        "initializing unpatching transition",
        "completing patching transition",
        "completing unpatching transition",
        "canceling patching transition, going to unpatch",
        "reversing transition from",
    ];
    let notice = [
        "starting patching transition",
        "starting unpatching transition",
        "patching complete",
        "unpatching complete",
    ];
    if msg.starts_with("enabling patch ")
        || msg.starts_with("applying patch ")
        || msg.starts_with("reverting patch ")
        || msg == "signaling remaining tasks"
        || notice.iter().any(|n| msg.ends_with(n))
    {
        Some(Level::Notice)
    } else if debug.iter().any(|d| msg.contains(d)) {
        Some(Level::Debug)
    } else if msg.starts_with("pre-patch callback failed")
        || msg.starts_with("failed to enable patch")
        || msg.starts_with("forcing remaining tasks")
        || (msg.starts_with("patch '") && msg.contains("refusing to load module"))
    {
        Some(Level::Warning)
    } else if msg.starts_with("Livepatch patch (") {
        Some(Level::Err)
    } else {
        None
    }
}

/// Compare logs line by line; on a mismatch show both in full with the first difference.
pub fn assert_log(actual: &[&str], expected: &[&str]) {
    if actual == expected {
        return;
    }
    let first = actual
        .iter()
        .zip(expected)
        .position(|(a, e)| a != e)
        .unwrap_or(actual.len().min(expected.len()));
    let mut msg = format!("log mismatch at line {}:\n--- expected\n", first + 1);
    for (i, l) in expected.iter().enumerate() {
        msg.push_str(&format!(
            "{}{i:3} {l}\n",
            if i == first { ">" } else { " " }
        ));
    }
    msg.push_str("--- actual\n");
    for (i, l) in actual.iter().enumerate() {
        msg.push_str(&format!(
            "{}{i:3} {l}\n",
            if i == first { ">" } else { " " }
        ));
    }
    panic!("{msg}");
}

impl<F: Flavor + 'static> Drop for Env<F> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Leave nothing behind for the next test of the binary: force every transition
            // through, disable every patch, unload every target module.
            BLOCK_TRANSITION.store(false, Ordering::SeqCst);
            for _ in 0..20 {
                let patches = self.klp.patches();
                if patches.is_empty() {
                    break;
                }
                for p in patches.iter().rev() {
                    if p.transition {
                        let _ = self.klp.force(&p.name, true);
                    } else if p.enabled {
                        let _ = self.klp.set_enabled(&p.name, false);
                    }
                }
                let _ = self.klp.wait_transition(Duration::from_secs(1));
            }
            for m in [CALLBACKS_MOD, CALLBACKS_BUSY, MOD_TARGET] {
                if object_state(m) == Some(ModuleState::Live) {
                    let _ = unload_object(m, module_exit(m));
                }
            }
        }
        *PRINTK.lock().unwrap_or_else(PoisonError::into_inner) = None;
        CONSOLE_LOGLEVEL.store(CONSOLE_LOGLEVEL_DEFAULT, Ordering::SeqCst);
    }
}

/// The tests of every selftest, for one flavor: `selftest_cases!(klp_sync::Preempt::new())`.
macro_rules! selftest_cases {
    ($flavor:expr) => {
        fn flavor() -> impl klp_sync::Flavor + 'static {
            $flavor
        }

        // test-livepatch.sh
        #[test]
        fn livepatch_1_basic_function_patching() {
            selftests::livepatch::basic_function_patching(flavor());
        }
        #[test]
        fn livepatch_2_multiple_livepatches() {
            selftests::livepatch::multiple_livepatches(flavor());
        }
        #[test]
        fn livepatch_3_atomic_replace_livepatch() {
            selftests::livepatch::atomic_replace_livepatch(flavor());
        }
        #[test]
        fn livepatch_4_module_function_patching() {
            selftests::livepatch::module_function_patching(flavor());
        }
        #[test]
        fn livepatch_5_module_function_patching_livepatch_first() {
            selftests::livepatch::module_function_patching_livepatch_first(flavor());
        }

        // test-callbacks.sh
        #[test]
        fn callbacks_01_target_module_before_livepatch() {
            selftests::callbacks::target_module_before_livepatch(flavor());
        }
        #[test]
        fn callbacks_02_module_coming_notifier() {
            selftests::callbacks::module_coming_notifier(flavor());
        }
        #[test]
        fn callbacks_03_module_going_notifier() {
            selftests::callbacks::module_going_notifier(flavor());
        }
        #[test]
        fn callbacks_04_module_coming_and_going_notifiers() {
            selftests::callbacks::module_coming_and_going_notifiers(flavor());
        }
        #[test]
        fn callbacks_05_target_module_not_present() {
            selftests::callbacks::target_module_not_present(flavor());
        }
        #[test]
        fn callbacks_06_pre_patch_callback_enodev() {
            selftests::callbacks::pre_patch_callback_enodev(flavor());
        }
        #[test]
        fn callbacks_07_module_coming_pre_patch_callback_enodev() {
            selftests::callbacks::module_coming_pre_patch_callback_enodev(flavor());
        }
        #[test]
        fn callbacks_08_multiple_target_modules() {
            selftests::callbacks::multiple_target_modules(flavor());
        }
        #[test]
        fn callbacks_09_busy_target_module() {
            selftests::callbacks::busy_target_module(flavor());
        }
        #[test]
        fn callbacks_09b_busy_target_module_short_stall() {
            selftests::callbacks::busy_target_module_short_stall(flavor());
        }
        #[test]
        fn callbacks_10_multiple_livepatches() {
            selftests::callbacks::multiple_livepatches(flavor());
        }
        #[test]
        fn callbacks_11_atomic_replace() {
            selftests::callbacks::atomic_replace(flavor());
        }

        // test-state.sh
        #[test]
        fn state_1_system_state_modification() {
            selftests::state::system_state_modification(flavor());
        }
        #[test]
        fn state_2_taking_over_system_state_modification() {
            selftests::state::taking_over_system_state_modification(flavor());
        }
        #[test]
        fn state_3_compatible_cumulative_livepatches() {
            selftests::state::compatible_cumulative_livepatches(flavor());
        }
        #[test]
        fn state_4_incompatible_cumulative_livepatches() {
            selftests::state::incompatible_cumulative_livepatches(flavor());
        }

        // test-sysfs.sh
        #[test]
        fn sysfs_1_sysfs_test() {
            selftests::sysfs::sysfs_test(flavor());
        }
        #[test]
        fn sysfs_2_object_patched() {
            selftests::sysfs::object_patched(flavor());
        }
        #[test]
        fn sysfs_3_replace_enabled() {
            selftests::sysfs::replace_enabled(flavor());
        }
        #[test]
        fn sysfs_4_replace_disabled() {
            selftests::sysfs::replace_disabled(flavor());
        }
        #[test]
        fn sysfs_5_stack_order_value() {
            selftests::sysfs::stack_order_value(flavor());
        }
    };
}
pub(crate) use selftest_cases;
