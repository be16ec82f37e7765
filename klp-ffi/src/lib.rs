//! The C ABI of libklp (`libklp.so`, `libklp.a`, `include/klp.h`).
//!
//! This crate converts, checks pointers, catches panics and maps errors; it holds no
//! livepatch logic. The header `include/klp.h` is generated from it by cbindgen
//! (`klp-ffi/cbindgen.toml`) and checked for drift by `tests/header.rs`.
//!
//! # Conventions of every export
//!
//! * It runs inside one guard built on `catch_unwind`: a panic inside the library never crosses into C; a
//!   function returning `int` returns [`KLP_ERROR_PANIC`] instead, one returning a
//!   pointer returns NULL, one returning `void` returns.
//! * Pointers are checked for NULL before anything is read through them.
//! * Errors are negative Linux errnos exactly where the kernel returns one (the control
//!   files of `/sys/kernel/livepatch`, `klp_enable_patch`); codes of the library alone
//!   are below -4095, out of the errno range ([`klp_strerror`] names them all).
//! * Patch names and object names are C strings; a name that is not UTF-8 names nothing
//!   (`-ENOENT`).
//!
//! # The process engine
//!
//! One engine serves the process. It is created at the first call that needs it (any
//! control or thread-state call), with the flavor chosen by [`klp_set_sync`] before, or
//! else by the environment variable `KLP_SYNC` (`preempt` or `rcu`), or else preempt.
//! The log ([`klp_set_log_handler`]) and the shadow variables exist apart from it and do
//! not fix the flavor.
//!
//! # Patchable functions and patches
//!
//! A C function becomes patchable with the macros of `include/klp_macros.h` (included
//! by `klp.h`; GNU C): `KLP_PATCHABLE`, `KLP_PATCHABLE_VOID`, `KLP_PATCHABLE_STATIC`,
//! `KLP_PATCHABLE_STATIC_VOID`, and `KLP_OBJECT("name")` for the code of a shared
//! object. They expand to a `struct klp_site` and calls of [`klp_site_register`],
//! [`klp_enter`] and [`klp_leave`]. A patch is the kernel's `struct klp_patch` with its
//! zero-terminated arrays of `struct klp_object`, `struct klp_func` and
//! `struct klp_state`, given to [`klp_enable_patch`]; the structs must stay valid while
//! the patch exists, like a kernel livepatch module's static structs.
//!
//! # Patches as shared objects
//!
//! A patch may live in a shared object that enables it from its constructor (a
//! livepatch module's init). [`klp_enable_patch`] takes a reference (`dlopen` with
//! `RTLD_NOLOAD`) on every shared object that holds the patch's structs, replacement
//! functions or callbacks, and drops it (on a thread of its own) once the patch is
//! disabled or replaced and released: a `dlclose` by the program meanwhile does not
//! unmap code that a thread may still run. A patch marked forced (the kernel's
//! `patch->forced`) is never released, so its objects are never unmapped.
//!
//! # Objects
//!
//! A shared object whose code says `KLP_OBJECT("name")` is an object of its own (the
//! kernel's module): its constructor calls [`klp_object_coming`] after its sites are
//! registered (enabled patches are applied to it), its destructor
//! [`klp_object_going`] before they are unregistered ([`klp_site_unregister`]; the
//! patches are reverted). A patch that refuses the object cannot make `dlopen` fail:
//! the object stays unloaded, its functions run their originals and
//! [`klp_object_refused`] gives the errno. Other objects are loaded and unloaded by
//! hand: [`klp_object_load`], [`klp_object_unload`]. With `libklp.a`, a shared object
//! may leave its klp symbols undefined when the program exports them (`-rdynamic`).
//!
//! # Kernel livepatch modules
//!
//! The compatibility headers (`include/klp/compat/linux/*.h`) build a kernel livepatch
//! module's source, unchanged, as a shared object: `<linux/module.h>` gives it a
//! [`klp_module`] (the kernel's `struct module`, `THIS_MODULE`) that a constructor
//! registers ([`klp_module_register`]). [`klp_module_load`] and [`klp_module_unload`]
//! are insmod and rmmod, [`klp_module_param_set`] and [`klp_module_refcnt`] the files of
//! `/sys/module/<m>/`; a plain `dlopen` of a module loads it with no parameters.
//! `klp_patch.mod` names the patch after its module and holds a reference on it while
//! the patch is in use; `klp_object.mod` is the object's module in its callbacks. The
//! headers' printk ends in [`klp_log_write`] (one order with libklp's lines) and
//! [`klp_format_pointer`] (the `%p` forms); `jiffies`, [`klp_sleep_us`] and
//! [`klp_current`] are the kernel's `jiffies`, `msleep` and `current`. See the module
//! `module` of this crate for the loader's steps.
//!
//! # Threads
//!
//! A thread becomes a task (the kernel's task) at its first patchable call or thread
//! call, and stops being one when it exits, cancelled or not: a thread-specific key's
//! destructor removes it, so neither its first call nor its exit takes the loader's
//! lock (a thread may make its first call while another waits for it inside `dlopen`).
//! A thread that blocks calls [`klp_park`] before and [`klp_unpark`] after: transitions
//! switch it from outside meanwhile. [`klp_update_patch_state`] is an explicit switch
//! point.
//!
//! A patchable function left without returning (`longjmp`, a C++ exception, a
//! cancelled thread's unwinding) is forgotten once the thread proves it left: when its
//! wrapper's frame lies in the memory that a later call of the thread occupies (a
//! patchable call or return made from the function that caught it, or
//! [`klp_update_patch_state`], [`klp_park`], [`klp_wait_transition`],
//! [`klp_enable_patch`] and [`klp_patch_set_enabled`] called from there: those know
//! their caller's stack pointer, and their own frames cover the memory just below it).
//! Two live frames never share memory, so this never forgets a function that is live on
//! another stack: a coroutine's (`swapcontext`), or the code a signal handler on an
//! alternate stack interrupted. Functions left deeper than the thread's later calls
//! reach stay recorded, and the thread switches later (or when forced), never wrongly.
//!
//! # Link line
//!
//! ```text
//! cc -std=c11 prog.c -I include target/release/libklp.a -lpthread -ldl -lm
//! cc -std=c11 prog.c -I include -L target/release -lklp -Wl,-rpath,<dir>
//! ```

mod module;
mod patch;
mod site;

pub use module::{
    KLP_HZ, KLP_MODULE_ABI, KLP_MODULE_NAME_LEN, KLP_PARAM_BOOL, KLP_PARAM_BYTE, KLP_PARAM_CHARP,
    KLP_PARAM_HEXINT, KLP_PARAM_INT, KLP_PARAM_INVBOOL, KLP_PARAM_LONG, KLP_PARAM_SHORT,
    KLP_PARAM_UINT, KLP_PARAM_ULLONG, KLP_PARAM_ULONG, KLP_PARAM_USHORT, jiffies, klp_current,
    klp_format_pointer, klp_log_write, klp_modinfo, klp_module, klp_module_exit_t,
    klp_module_init_t, klp_module_load, klp_module_param, klp_module_param_set, klp_module_refcnt,
    klp_module_register, klp_module_unload, klp_module_unregister, klp_sleep_us, klp_task,
};
pub use patch::{
    KLP_MODULE_STATE_COMING, KLP_MODULE_STATE_GOING, KLP_MODULE_STATE_LIVE,
    KLP_MODULE_STATE_UNFORMED, klp_callbacks, klp_enable_patch, klp_func, klp_get_prev_state,
    klp_get_state, klp_object, klp_object_callback_t, klp_object_state, klp_patch, klp_pre_patch_t,
    klp_state, registered_patch,
};
pub use site::{
    KLP_SITE_BYTES, klp_enter, klp_leave, klp_object_coming, klp_object_going, klp_object_load,
    klp_object_refused, klp_object_unload, klp_site, klp_site_register, klp_site_unregister,
};

use klp_core::log::{Level, Log, Sink, Stderr};
use klp_core::shadow::Shadow;
use klp_core::{Klp, KlpError, PatchInfo};
use klp_sync::{Flavor, Preempt, Rcu};
use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_ulong, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::{self, NonNull};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// Error codes.

/// `-EINVAL`: an invalid argument.
const EINVAL: c_int = libc::EINVAL;
/// `-EBUSY`.
const EBUSY: c_int = libc::EBUSY;
/// `-ENODEV`.
const ENODEV: c_int = libc::ENODEV;
/// `-ENOENT`.
const ENOENT: c_int = libc::ENOENT;
/// `-EEXIST`.
const EEXIST: c_int = libc::EEXIST;
/// `-ENOMEM`.
const ENOMEM: c_int = libc::ENOMEM;
/// `-ETIMEDOUT`.
const ETIMEDOUT: c_int = libc::ETIMEDOUT;
/// `-EDEADLK`.
pub(crate) const EDEADLK: c_int = libc::EDEADLK;

/// A library error (not an errno): a panic inside libklp was caught at the boundary. The
/// operation may have been carried out in part; the process should stop using libklp.
pub const KLP_ERROR_PANIC: c_int = -4096;

// ---------------------------------------------------------------------------------------
// The guard.

/// Run `f`, returning `on_panic` if it panics: the one guard of every export.
///
/// The panic's message has already gone to standard error (the panic hook).
#[inline(always)]
fn guard<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    // AssertUnwindSafe: after a panic the export returns an error and touches none of
    // the state `f` may have left half-changed; the engine's own locks recover from
    // poisoning.
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(on_panic)
}

/// The string behind a non-NULL `s`, if it is UTF-8.
///
/// # Safety
///
/// 1. `s` is NULL or points to a NUL-terminated string that stays unchanged and
///    allocated for the call.
unsafe fn str_arg<'a>(s: *const c_char) -> Result<&'a str, c_int> {
    if s.is_null() {
        return Err(-EINVAL);
    }
    // SAFETY: not NULL; NUL-terminated and live for the call (clause 1).
    let s = unsafe { CStr::from_ptr(s) };
    // Not UTF-8: no patch or object has such a name.
    s.to_str().map_err(|_| -ENOENT)
}

/// Whether a control operation from the calling thread would wait for what the thread
/// itself holds: it runs a control operation's callback or log line, or a shadow
/// constructor or destructor (whose lock a callback of the operation may be waiting
/// for), or it is a signal handler that interrupted a grace period (whose lock the
/// operation's own grace periods need).
pub(crate) fn control_would_deadlock() -> bool {
    klp_core::in_control_operation() || in_shadow_callback() || klp_sync::in_grace_period()
}

/// Whether the calling thread runs a constructor or destructor of the C store (without
/// creating the store).
fn in_shadow_callback() -> bool {
    SHADOW.get().is_some_and(|s| s.in_callback())
}

fn status(r: Result<(), KlpError>) -> c_int {
    match r {
        Ok(()) => 0,
        Err(e) => e.errno(),
    }
}

// ---------------------------------------------------------------------------------------
// Version and errors.

/// The version of libklp, as a static NUL-terminated string (`"0.1.0"`).
#[unsafe(no_mangle)]
pub extern "C" fn klp_version() -> *const c_char {
    const VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => panic!("the version has no NUL"),
        };
    VERSION.as_ptr()
}

/// A static description of `err`, a return value of libklp: 0, a negative errno that
/// libklp returns, or a library code (`KLP_ERROR_*`). Anything else: `"unknown error"`.
/// Never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn klp_strerror(err: c_int) -> *const c_char {
    let s: &'static CStr = match err {
        0 => c"success",
        e if e == -EINVAL => c"invalid argument (EINVAL)",
        e if e == -EBUSY => c"device or resource busy (EBUSY)",
        e if e == -ENODEV => c"no such device (ENODEV)",
        e if e == -ENOENT => c"no such file or directory (ENOENT)",
        e if e == -EEXIST => c"file exists (EEXIST)",
        e if e == -ENOMEM => c"out of memory (ENOMEM)",
        e if e == -ETIMEDOUT => c"timed out (ETIMEDOUT)",
        e if e == -EDEADLK => c"called from a context where it would deadlock (EDEADLK)",
        e if e == -libc::ENOEXEC => c"not a module (ENOEXEC)",
        e if e == -libc::EACCES => c"permission denied (EACCES)",
        KLP_ERROR_PANIC => c"internal error: a panic was caught in libklp",
        _ => c"unknown error",
    };
    s.as_ptr()
}

// ---------------------------------------------------------------------------------------
// The log.

/// `pr_err`.
pub const KLP_LOG_ERR: c_int = 3;
/// `pr_warn` and `WARN`.
pub const KLP_LOG_WARNING: c_int = 4;
/// `pr_notice`.
pub const KLP_LOG_NOTICE: c_int = 5;
/// `pr_info`.
pub const KLP_LOG_INFO: c_int = 6;
/// `pr_debug`.
pub const KLP_LOG_DEBUG: c_int = 7;

/// A log handler: `level` is one of `KLP_LOG_*`, `line` one whole NUL-terminated line
/// without its newline, valid during the call only; `data` is the pointer given to
/// `klp_set_log_handler`. It may be called from any thread, concurrently; what it may
/// call is in the table of contexts at the top of this header (queries work; a control
/// operation from the line of a control operation returns `-EDEADLK`).
#[allow(non_camel_case_types)]
pub type klp_log_handler_t =
    Option<unsafe extern "C" fn(level: c_int, line: *const c_char, data: *mut c_void)>;

/// The process's log, shared by the engine and the shadow variables.
fn log() -> &'static Log {
    // Created at most twice (two first calls at once; one is dropped), never half made.
    static LOG: klp_sync::fork::RaceCell<Log> = klp_sync::fork::RaceCell::new();
    if let Some(l) = LOG.get() {
        return l;
    }
    install_fork();
    LOG.get_or_create(Log::default)
}

// ---------------------------------------------------------------------------------------
// fork: the child can patch, unpatch, synchronize and wait. The C layer's hooks in
// klp-sync's one `pthread_atfork` triple (level 2: they run first before the fork, as
// `klp_enable_patch` takes the C layer's locks before the engine's).

static FORK_HOOKS: klp_sync::fork::Hooks = klp_sync::fork::Hooks {
    prepare: || {
        fork_hold(ENGINE_INIT.lock().unwrap_or_else(|e| e.into_inner()));
        patch::fork_prepare();
        site::fork_prepare();
        module::fork_prepare();
        fork_hold(SYNC.lock().unwrap_or_else(|e| e.into_inner()));
    },
    parent: || {},
    child: || {
        patch::fork_child();
        module::fork_child();
    },
};

/// Keep `value` (a lock guard) across a fork.
fn fork_hold<T: 'static>(value: T) {
    klp_sync::fork::hold(value);
}

/// Add the C layer's hooks (cheap; every lazy creation of the C layer's state calls it).
fn install_fork() {
    klp_core::install_fork_handlers();
    klp_sync::fork::add_hooks(2, &FORK_HOOKS);
}

/// A C pointer handed back to C, on any thread: the C side promised that is fine.
#[derive(Clone, Copy)]
struct UserData(*mut c_void);
// SAFETY: the pointer is never dereferenced by libklp, only passed back to the C
// function registered with it, whose documentation makes thread safety the caller's.
unsafe impl Send for UserData {}
// SAFETY: as for Send.
unsafe impl Sync for UserData {}

struct CHandler {
    f: unsafe extern "C" fn(level: c_int, line: *const c_char, data: *mut c_void),
    data: UserData,
}

impl Sink for CHandler {
    fn line(&self, level: Level, line: &str) {
        let line = CString::new(line)
            .unwrap_or_else(|_| CString::new(line.replace('\0', "\\0")).expect("no NUL left"));
        // SAFETY: `klp_set_log_handler`'s clause 1: `f` may be called with a valid line
        // and the registered `data`, from any thread.
        unsafe { (self.f)(level as c_int, line.as_ptr(), self.data.0) };
    }
}

/// Send every later log line of libklp to `handler(level, line, data)`; a NULL
/// `handler` restores the default (notice and above to standard error, debug lines too
/// when the environment variable `KLP_DEBUG` is `1`). Returns 0.
///
/// # Safety
///
/// 1. `handler`, if not NULL, may be called with `data` from any thread, concurrently,
///    until it is replaced, and does not unwind.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_set_log_handler(
    handler: klp_log_handler_t,
    data: *mut c_void,
) -> c_int {
    guard(KLP_ERROR_PANIC, || {
        let sink: Arc<dyn Sink> = match handler {
            Some(f) => Arc::new(CHandler {
                f,
                data: UserData(data),
            }),
            None => Arc::new(Stderr),
        };
        log().set_sink(sink);
        0
    })
}

// ---------------------------------------------------------------------------------------
// The engine.

/// The preempt flavor (the default).
pub const KLP_SYNC_PREEMPT: c_int = 0;
/// The rcu flavor.
pub const KLP_SYNC_RCU: c_int = 1;

/// The process engine, of the flavor chosen at its creation.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub enum Engine {
    /// `KLP_SYNC_PREEMPT`.
    Preempt(Klp<Preempt>),
    /// `KLP_SYNC_RCU`.
    Rcu(Klp<Rcu>),
}

/// Call `$method` on whichever engine `$e` is.
macro_rules! dispatch {
    ($e:expr, $k:ident => $call:expr) => {
        match $e {
            Engine::Preempt($k) => $call,
            Engine::Rcu($k) => $call,
        }
    };
}

impl Engine {
    /// `klp_enable_patch()` of an engine patch (for tests; C uses [`klp_enable_patch`]).
    pub fn enable(&self, patch: klp_core::Patch) -> Result<(), KlpError> {
        dispatch!(self, k => k.enable(patch))
    }

    /// `"preempt"` or `"rcu"`.
    pub fn flavor_name(&self) -> &'static str {
        match self {
            Engine::Preempt(_) => "preempt",
            Engine::Rcu(_) => "rcu",
        }
    }

    /// See [`Klp::set_retry_period`].
    pub fn set_retry_period(&self, period: Duration) {
        dispatch!(self, k => k.set_retry_period(period))
    }

    /// See [`Klp::get_state`].
    pub fn get_state(&self, patch: &str, id: u64) -> Option<Arc<klp_core::State>> {
        dispatch!(self, k => k.get_state(patch, id))
    }

    /// See [`Klp::get_prev_state`].
    pub fn get_prev_state(&self, id: u64) -> Option<Arc<klp_core::State>> {
        dispatch!(self, k => k.get_prev_state(id))
    }
}

/// The flavor choice, and whether the engine was created (after which it is fixed).
struct SyncChoice {
    flavor: Option<c_int>,
    used: bool,
}

static SYNC: Mutex<SyncChoice> = Mutex::new(SyncChoice {
    flavor: None,
    used: false,
});

/// The process engine, created on first use.
#[doc(hidden)]
pub fn engine() -> &'static Engine {
    if let Some(e) = ENGINE.get() {
        return e;
    }
    install_fork();
    let mut warning = None;
    let e = {
        // One creator (a fork's prepare takes this lock too, so the child never finds the
        // engine half made).
        let _one = ENGINE_INIT.lock().unwrap_or_else(|e| e.into_inner());
        match ENGINE.get() {
            Some(e) => e,
            None => {
                let flavor = {
                    let mut s = SYNC.lock().unwrap_or_else(|e| e.into_inner());
                    s.used = true;
                    s.flavor
                };
                let flavor = flavor.unwrap_or_else(|| match std::env::var("KLP_SYNC").as_deref() {
                    Ok("rcu") => KLP_SYNC_RCU,
                    Ok("preempt") | Err(std::env::VarError::NotPresent) => KLP_SYNC_PREEMPT,
                    Ok(other) => {
                        warning =
                            Some(format!("libklp: unknown KLP_SYNC '{other}', using preempt"));
                        KLP_SYNC_PREEMPT
                    }
                    Err(std::env::VarError::NotUnicode(_)) => {
                        warning =
                            Some("libklp: unknown KLP_SYNC (not UTF-8), using preempt".to_owned());
                        KLP_SYNC_PREEMPT
                    }
                });
                let created = if flavor == KLP_SYNC_RCU {
                    Engine::Rcu(Klp::with_log(Rcu::new(), log().clone()))
                } else {
                    Engine::Preempt(Klp::with_log(Preempt::new(), log().clone()))
                };
                ENGINE.get_or_create(|| created)
            }
        }
    };
    // Outside the lock: the log handler may call back.
    if let Some(w) = warning {
        log().raw(Level::Warning, &w);
    }
    e
}

/// The process engine, once created.
static ENGINE: klp_sync::fork::RaceCell<Engine> = klp_sync::fork::RaceCell::new();
/// Serializes its creation.
static ENGINE_INIT: Mutex<()> = Mutex::new(());

/// Choose the read-side flavor of the process engine: `KLP_SYNC_PREEMPT` (the default)
/// or `KLP_SYNC_RCU`. Overrides the environment variable `KLP_SYNC`.
///
/// Returns 0, `-EINVAL` for another value, or `-EBUSY` once the engine exists (after
/// the first control or thread-state call).
#[unsafe(no_mangle)]
pub extern "C" fn klp_set_sync(flavor: c_int) -> c_int {
    guard(KLP_ERROR_PANIC, || {
        if flavor != KLP_SYNC_PREEMPT && flavor != KLP_SYNC_RCU {
            return -EINVAL;
        }
        install_fork();
        let mut s = SYNC.lock().unwrap_or_else(|e| e.into_inner());
        if s.used {
            return -EBUSY;
        }
        s.flavor = Some(flavor);
        0
    })
}

// ---------------------------------------------------------------------------------------
// Control: the files of /sys/kernel/livepatch/<patch>/.

/// Look `patch` up and read one of its attributes.
///
/// # Safety
///
/// 1. As [`str_arg`] clause 1 for `patch`.
unsafe fn with_patch(patch: *const c_char, f: impl FnOnce(&PatchInfo) -> c_int) -> c_int {
    // SAFETY: clause 1.
    let name = match unsafe { str_arg(patch) } {
        Ok(n) => n,
        Err(e) => return e,
    };
    dispatch!(engine(), k => k.with_patch(name, |i| i.map_or(-ENOENT, f)))
}

/// The names of the patches in use (the directories of `/sys/kernel/livepatch`), in
/// stack order (as `stack_order` numbers them), each NUL-terminated, then an empty name
/// (one more NUL). Returns the number of bytes that takes, and writes it to `buf` only
/// when `len` is at least that (call with `NULL, 0` to learn the size; the list may
/// change between two calls); `-EINVAL` for a NULL `buf` with a non-zero `len`.
///
/// # Safety
///
/// 1. `buf` is NULL or valid for writes of `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_patch_list(buf: *mut c_char, len: usize) -> c_int {
    guard(KLP_ERROR_PANIC, || {
        if buf.is_null() && len != 0 {
            return -EINVAL;
        }
        let out: &mut [u8] = if buf.is_null() {
            &mut []
        } else {
            // SAFETY: clause 1: `buf` is valid for writes of `len` bytes.
            unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) }
        };
        let need = dispatch!(engine(), k => k.patch_names_into(out));
        c_int::try_from(need).unwrap_or(c_int::MAX)
    })
}

/// `enabled`: 1 or 0, `-ENOENT` for no such patch, `-EINVAL` for a NULL name.
///
/// # Safety
///
/// 1. `patch` is NULL or a NUL-terminated string valid for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_patch_enabled(patch: *const c_char) -> c_int {
    guard(KLP_ERROR_PANIC, || {
        // SAFETY: clause 1 is with_patch's.
        unsafe { with_patch(patch, |i| c_int::from(i.enabled)) }
    })
}

/// Write `enabled`: 0 disables the patch (or reverses its patching transition), any
/// other value reverses its unpatching transition. Returns 0 or the kernel's errno:
/// `-EINVAL` when the patch already is in that state (or for a NULL name), `-EBUSY`
/// during another patch's transition, `-ENOENT` for no such patch.
///
/// # Safety
///
/// 1. `patch` is NULL or a NUL-terminated string valid for the call.
#[cfg(target_arch = "x86_64")]
#[unsafe(no_mangle)]
#[unsafe(naked)]
pub unsafe extern "C" fn klp_patch_set_enabled(patch: *const c_char, enabled: c_int) -> c_int {
    // The caller's stack pointer, for the thread's own switch (see `forget_left_frames`).
    std::arch::naked_asm!("lea rdx, [rsp + 8]", "jmp {f}", f = sym set_enabled_sp)
}

/// See the x86-64 version.
///
/// cbindgen:ignore
///
/// # Safety
///
/// As the x86-64 version.
#[cfg(not(target_arch = "x86_64"))]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_patch_set_enabled(patch: *const c_char, enabled: c_int) -> c_int {
    let marker = 0u8;
    // SAFETY: the caller's contract.
    unsafe { set_enabled_sp(patch, enabled, std::ptr::from_ref(&marker) as usize) }
}

/// [`klp_patch_set_enabled`] with its caller's stack pointer.
///
/// # Safety
///
/// 1. As [`klp_patch_set_enabled`] clause 1.
unsafe extern "C" fn set_enabled_sp(patch: *const c_char, enabled: c_int, sp: usize) -> c_int {
    guard(KLP_ERROR_PANIC, || {
        if control_would_deadlock() {
            return -EDEADLK;
        }
        forget_left_frames(sp);
        // SAFETY: clause 1.
        let name = match unsafe { str_arg(patch) } {
            Ok(n) => n,
            Err(e) => return e,
        };
        status(dispatch!(engine(), k => k.set_enabled(name, enabled != 0)))
    })
}

/// `transition`: 1 while the patch is in transition, else 0; `-ENOENT`, `-EINVAL` as
/// [`klp_patch_enabled`].
///
/// # Safety
///
/// 1. `patch` is NULL or a NUL-terminated string valid for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_patch_transition(patch: *const c_char) -> c_int {
    guard(KLP_ERROR_PANIC, || {
        // SAFETY: clause 1 is with_patch's.
        unsafe { with_patch(patch, |i| c_int::from(i.transition)) }
    })
}

/// Write 1 to `force`: complete the patch's transition now, marking every thread
/// switched. Returns 0, `-EINVAL` when the patch is not in transition (or for a NULL
/// name), `-ENOENT` for no such patch.
///
/// # Safety
///
/// 1. `patch` is NULL or a NUL-terminated string valid for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_patch_force(patch: *const c_char) -> c_int {
    guard(KLP_ERROR_PANIC, || {
        if control_would_deadlock() {
            return -EDEADLK;
        }
        // SAFETY: clause 1.
        let name = match unsafe { str_arg(patch) } {
            Ok(n) => n,
            Err(e) => return e,
        };
        status(dispatch!(engine(), k => k.force(name, true)))
    })
}

/// `replace`: 1 for an atomic-replace patch, else 0; `-ENOENT`, `-EINVAL` as
/// [`klp_patch_enabled`].
///
/// # Safety
///
/// 1. `patch` is NULL or a NUL-terminated string valid for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_patch_replace(patch: *const c_char) -> c_int {
    guard(KLP_ERROR_PANIC, || {
        // SAFETY: clause 1 is with_patch's.
        unsafe { with_patch(patch, |i| c_int::from(i.replace)) }
    })
}

/// `stack_order`: the patch's 1-based position among the patches in use (1 = oldest);
/// `-ENOENT`, `-EINVAL` as [`klp_patch_enabled`].
///
/// # Safety
///
/// 1. `patch` is NULL or a NUL-terminated string valid for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_patch_stack_order(patch: *const c_char) -> c_int {
    guard(KLP_ERROR_PANIC, || {
        // SAFETY: clause 1 is with_patch's.
        unsafe {
            with_patch(patch, |i| {
                c_int::try_from(i.stack_order).unwrap_or(c_int::MAX)
            })
        }
    })
}

/// `<object>/patched`: 1 when the patch's object is patched, else 0. A NULL `object` is
/// the main program (`"vmlinux"`). `-ENOENT` for no such patch or no such object of
/// it, `-EINVAL` for a NULL patch name.
///
/// # Safety
///
/// 1. `patch` is NULL or a NUL-terminated string valid for the call.
/// 2. `object` is NULL or a NUL-terminated string valid for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_object_patched(patch: *const c_char, object: *const c_char) -> c_int {
    guard(KLP_ERROR_PANIC, || {
        // SAFETY: clause 1.
        let name = match unsafe { str_arg(patch) } {
            Ok(n) => n,
            Err(e) => return e,
        };
        let object = if object.is_null() {
            "vmlinux"
        } else {
            // SAFETY: clause 2.
            match unsafe { str_arg(object) } {
                Ok(o) => o,
                Err(e) => return e,
            }
        };
        dispatch!(engine(), k => k.with_patch(name, |i| {
            i.map_or(-ENOENT, |i| {
                i.objects
                    .iter()
                    .find(|(o, _)| o == object)
                    .map_or(-ENOENT, |(_, patched)| c_int::from(*patched))
            })
        }))
    })
}

/// Wait until no transition is in progress, at most `timeout_ms` milliseconds: 0 when
/// none is (at once when none was), `-ETIMEDOUT` when one still is, `-EDEADLK` at once
/// when one is and cannot complete before the caller returns (a callback or log line of
/// a control operation, a kick, a shadow constructor or destructor). The calling
/// thread counts as parked (blocked) meanwhile; patchable functions that it left by
/// longjmp or an exception no longer count.
#[cfg(target_arch = "x86_64")]
#[unsafe(no_mangle)]
#[unsafe(naked)]
pub extern "C" fn klp_wait_transition(timeout_ms: c_uint) -> c_int {
    std::arch::naked_asm!("lea rsi, [rsp + 8]", "jmp {f}", f = sym wait_transition_sp)
}

/// See the x86-64 version.
///
/// cbindgen:ignore
#[cfg(not(target_arch = "x86_64"))]
#[unsafe(no_mangle)]
pub extern "C" fn klp_wait_transition(timeout_ms: c_uint) -> c_int {
    let marker = 0u8;
    wait_transition_sp(timeout_ms, std::ptr::from_ref(&marker) as usize)
}

extern "C" fn wait_transition_sp(timeout_ms: c_uint, sp: usize) -> c_int {
    guard(KLP_ERROR_PANIC, || {
        let busy = dispatch!(engine(), k => k.in_transition());
        if busy && (in_shadow_callback() || klp_sync::in_grace_period()) {
            return -EDEADLK;
        }
        forget_left_frames(sp);
        let timeout = Duration::from_millis(u64::from(timeout_ms));
        status(dispatch!(engine(), k => k.wait(timeout)))
    })
}

/// The period after which a stalled transition tries again to switch the threads it
/// waits for (the kernel's `klp_transition_work`, about a second): `period_ms`
/// milliseconds, from 1 to 60000. Returns 0 or `-EINVAL`. The default is 1000.
#[unsafe(no_mangle)]
pub extern "C" fn klp_set_retry_period(period_ms: c_uint) -> c_int {
    guard(KLP_ERROR_PANIC, || {
        if !(1..=60_000).contains(&period_ms) {
            return -EINVAL;
        }
        engine().set_retry_period(Duration::from_millis(u64::from(period_ms)));
        0
    })
}

/// Wait for a grace period of the process engine's flavor (the kernel's
/// `synchronize_rcu()`): every read section of the handler that was running when it was
/// called has ended (under rcu: every such section of a thread it watches). Returns 0,
/// or `-EDEADLK` at once from a signal handler that interrupted a read section or a grace
/// period of its own thread (it would wait for itself).
#[unsafe(no_mangle)]
pub extern "C" fn klp_synchronize() -> c_int {
    guard(KLP_ERROR_PANIC, || {
        if klp_sync::in_read_section() || klp_sync::in_grace_period() {
            return -EDEADLK;
        }
        dispatch!(engine(), k => k.flavor().synchronize());
        0
    })
}

// ---------------------------------------------------------------------------------------
// Threads.

// The caller's frame.
//
// A patchable function left without returning (longjmp, a C++ exception, unwinding)
// leaves its entry on the thread's activation stack until something proves it gone: an
// entry whose wrapper frame lies below the live part of the stack. The exports that are
// switch points, that park, or that switch the calling thread directly find that bound
// exactly: on x86-64 they are naked trampolines that pass the caller's stack pointer
// before the call (`rsp + 8` at entry, above the return address) to the real function,
// and jump to it. Every live frame of the caller's lies above it; a wrapper that was
// left from the caller (or from a function it called) lay below it. Elsewhere the bound
// is a local of the export's own frame, which misses the wrappers left just below the
// caller's (they are forgotten at the thread's next patchable call).

/// Forget the activation entries of patchable functions left below `sp`, the caller's
/// stack pointer at the call of an export.
pub(crate) fn forget_left_frames(sp: usize) {
    klp_core::forget_frames_below(sp.saturating_sub(1));
}

/// An explicit switch point (the kernel's `klp_update_patch_state(current)`): the
/// calling thread switches to the target of the transition in progress unless a
/// function that the transition replaces is on its stack. Patchable functions that the
/// caller left by longjmp or an exception no longer count.
#[cfg(target_arch = "x86_64")]
#[unsafe(no_mangle)]
#[unsafe(naked)]
pub extern "C" fn klp_update_patch_state() {
    std::arch::naked_asm!("lea rdi, [rsp + 8]", "jmp {f}", f = sym update_patch_state_sp)
}

/// See the x86-64 version.
///
/// cbindgen:ignore
#[cfg(not(target_arch = "x86_64"))]
#[unsafe(no_mangle)]
pub extern "C" fn klp_update_patch_state() {
    let marker = 0u8;
    update_patch_state_sp(std::ptr::from_ref(&marker) as usize);
}

extern "C" fn update_patch_state_sp(sp: usize) {
    guard((), || {
        forget_left_frames(sp);
        klp_core::update_patch_state();
    });
}

/// The calling thread is about to block (sleep, wait, read): transitions may switch it
/// from outside until [`klp_unpark`]. Calls do not nest: parking a parked thread, or
/// unparking a running one, does nothing.
///
/// Patchable functions that the caller left by longjmp or an exception no longer count.
#[cfg(target_arch = "x86_64")]
#[unsafe(no_mangle)]
#[unsafe(naked)]
pub extern "C" fn klp_park() {
    std::arch::naked_asm!("lea rdi, [rsp + 8]", "jmp {f}", f = sym park_sp)
}

/// See the x86-64 version.
///
/// cbindgen:ignore
#[cfg(not(target_arch = "x86_64"))]
#[unsafe(no_mangle)]
pub extern "C" fn klp_park() {
    let marker = 0u8;
    park_sp(std::ptr::from_ref(&marker) as usize);
}

extern "C" fn park_sp(sp: usize) {
    guard((), || {
        forget_left_frames(sp);
        klp_core::park();
    });
}

/// The calling thread runs again after [`klp_park`].
#[unsafe(no_mangle)]
pub extern "C" fn klp_unpark() {
    guard((), klp_core::unpark);
}

/// The calling thread's patch state in the process engine: -1 (no transition), 0
/// (unpatched) or 1 (patched), or `KLP_ERROR_PANIC`.
#[unsafe(no_mangle)]
pub extern "C" fn klp_thread_patch_state() -> c_int {
    guard(KLP_ERROR_PANIC, || {
        c_int::from(dispatch!(engine(), k => k.thread_patch_state()))
    })
}

/// A thread's kick: wakes the thread it was registered by (the kernel's fake signal).
#[allow(non_camel_case_types)]
pub type klp_thread_kick_t = Option<unsafe extern "C" fn(data: *mut c_void)>;

/// Register `kick(data)`, called from another thread when a transition has waited for
/// the calling thread too long, to wake it (so that it reaches a switch point). A NULL
/// `kick` removes the calling thread's kick. Returns 0.
///
/// # Safety
///
/// 1. `kick`, if not NULL, may be called with `data` from any thread until it is
///    replaced or the calling thread exits, and does not unwind.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_set_thread_kick(kick: klp_thread_kick_t, data: *mut c_void) -> c_int {
    guard(KLP_ERROR_PANIC, || {
        let data = UserData(data);
        klp_core::set_thread_kick(kick.map(|f| -> Arc<dyn Fn() + Send + Sync> {
            Arc::new(move || {
                let d = data;
                // SAFETY: clause 1: `f` may be called with `data` from any thread.
                unsafe { f(d.0) }
            })
        }));
        0
    })
}

// ---------------------------------------------------------------------------------------
// Shadow variables (kernel/livepatch/shadow.c).

/// The kernel's allocation flags: accepted and ignored (libklp always allocates with
/// the system allocator, which may block).
#[allow(non_camel_case_types)]
pub type gfp_t = c_uint;

/// `GFP_KERNEL` (ignored).
pub const GFP_KERNEL: gfp_t = 0x1;
/// `GFP_ATOMIC` (ignored).
pub const GFP_ATOMIC: gfp_t = 0x2;
/// `GFP_NOWAIT` (ignored).
pub const GFP_NOWAIT: gfp_t = 0x4;
/// `GFP_NOIO` (ignored).
pub const GFP_NOIO: gfp_t = 0x8;
/// `GFP_NOFS` (ignored).
pub const GFP_NOFS: gfp_t = 0x10;
/// `GFP_USER` (ignored).
pub const GFP_USER: gfp_t = 0x20;
/// `GFP_HIGHUSER` (ignored).
pub const GFP_HIGHUSER: gfp_t = 0x40;
/// `GFP_DMA` (ignored).
pub const GFP_DMA: gfp_t = 0x80;
/// `GFP_DMA32` (ignored).
pub const GFP_DMA32: gfp_t = 0x100;
/// The kernel's `__GFP_ZERO`: `kmalloc` of the compatibility headers zeroes the memory.
pub const KLP_GFP_ZERO: gfp_t = 0x1000;
/// The kernel's `__GFP_NOWARN` (ignored).
pub const KLP_GFP_NOWARN: gfp_t = 0x2000;
/// The kernel's `__GFP_NOFAIL` (ignored).
pub const KLP_GFP_NOFAIL: gfp_t = 0x4000;
/// The kernel's `__GFP_NORETRY` (ignored).
pub const KLP_GFP_NORETRY: gfp_t = 0x8000;
/// The kernel's `__GFP_ACCOUNT` (ignored).
pub const KLP_GFP_ACCOUNT: gfp_t = 0x10000;
/// The kernel's `__GFP_RETRY_MAYFAIL` (ignored).
pub const KLP_GFP_RETRY_MAYFAIL: gfp_t = 0x20000;

/// A shadow constructor: initializes the zeroed `shadow_data` of a new variable of
/// `obj`; returns 0, or an error (the allocation then fails and attaches nothing).
#[allow(non_camel_case_types)]
pub type klp_shadow_ctor_t = Option<
    unsafe extern "C" fn(
        obj: *mut c_void,
        shadow_data: *mut c_void,
        ctor_data: *mut c_void,
    ) -> c_int,
>;

/// A shadow destructor: called on a variable being freed, before its memory goes back.
#[allow(non_camel_case_types)]
pub type klp_shadow_dtor_t =
    Option<unsafe extern "C" fn(obj: *mut c_void, shadow_data: *mut c_void)>;

/// The process's shadow variables. Their readers use an rcu flavor of their own,
/// whatever the engine's: freeing never waits for a grace period (the memory goes back
/// later, on another thread), so `klp_shadow_free` may be called anywhere, also from a
/// patched function.
static SHADOW: klp_sync::fork::RaceCell<Shadow<Rcu>> = klp_sync::fork::RaceCell::new();

fn shadow() -> &'static Shadow<Rcu> {
    if let Some(s) = SHADOW.get() {
        return s;
    }
    install_fork();
    let log = log().clone();
    // Created at most twice (one is dropped, empty), never half made.
    SHADOW.get_or_create(|| Shadow::new(Arc::new(Rcu::new()), log))
}

/// The id as the store keeps it (`unsigned long` is at most 64 bits on Linux).
#[allow(clippy::unnecessary_cast)]
fn shadow_id(id: c_ulong) -> u64 {
    id as u64
}

fn data_ptr(p: Option<NonNull<u8>>) -> *mut c_void {
    p.map_or(ptr::null_mut(), |p| p.as_ptr().cast())
}

/// `klp_shadow_get`: the data of the shadow variable `<obj, id>`, or NULL.
///
/// `obj` is only a key, never dereferenced: any value, NULL included, is one (the
/// kernel accepts any pointer too).
///
/// The data stays valid until the variable is freed: the program must make sure that
/// no `klp_shadow_free`/`klp_shadow_free_all` of it runs while it uses the pointer (the
/// kernel's rule: callers provide the mutual exclusion the data needs).
#[unsafe(no_mangle)]
pub extern "C" fn klp_shadow_get(obj: *mut c_void, id: c_ulong) -> *mut c_void {
    guard(ptr::null_mut(), || {
        shadow_register();
        data_ptr(shadow().get(obj.cast_const(), shadow_id(id)))
    })
}

/// Register the calling thread with the store's rcu flavor once, so that its lookups are
/// watched without the `irq_enter` the store makes for unwatched threads.
#[inline]
fn shadow_register() {
    thread_local! {
        static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if !DONE.with(std::cell::Cell::get) {
        DONE.with(|d| d.set(true));
        shadow().flavor().register_current_thread();
    }
}

/// Allocate, construct and attach: the body of `klp_shadow_alloc` and
/// `klp_shadow_get_or_alloc`.
///
/// # Safety
///
/// 1. `ctor`, if not NULL, may be called with `obj`, the new data and `ctor_data` on
///    the calling thread, and does not unwind.
unsafe fn shadow_alloc(
    obj: *mut c_void,
    id: c_ulong,
    size: usize,
    ctor: klp_shadow_ctor_t,
    ctor_data: *mut c_void,
    exclusive: bool,
) -> *mut c_void {
    let mut call = ctor.map(|f| {
        move |obj: *const c_void, data: NonNull<u8>| -> Result<(), i32> {
            // SAFETY: clause 1; `data` is the new variable's `size` zeroed bytes.
            let r = unsafe { f(obj.cast_mut(), data.as_ptr().cast(), ctor_data) };
            if r == 0 { Ok(()) } else { Err(r) }
        }
    });
    let ctor = call.as_mut().map(|c| -> klp_core::shadow::Ctor<'_> { c });
    let s = shadow();
    if s.in_callback() {
        // From a constructor or destructor: the store's lock is held (refused).
        return ptr::null_mut();
    }
    shadow_register();
    let id = shadow_id(id);
    data_ptr(if exclusive {
        s.alloc(obj.cast_const(), id, size, ctor)
    } else {
        s.get_or_alloc(obj.cast_const(), id, size, ctor)
    })
}

/// `klp_shadow_alloc`: attach a new shadow variable of `size` zeroed bytes to
/// `<obj, id>`, initialized by `ctor(obj, data, ctor_data)` when `ctor` is not NULL,
/// before anyone else can see it. Returns its data, or NULL when `<obj, id>` exists
/// already (with the warning `Duplicate shadow variable`; the constructor does not
/// run), when the constructor returns non-zero, or when memory runs out.
///
/// `obj` is only a key (NULL is one); `gfp_flags` is ignored. The constructor runs under
/// a lock of the store: it may call `klp_shadow_get` (of any variable), but any other
/// `klp_shadow_*` call from it, or from a destructor, is refused (returns NULL or does
/// nothing), as is a control operation (`-EDEADLK`).
///
/// # Safety
///
/// 1. `ctor`, if not NULL, may be called with `obj`, the new data and `ctor_data` on
///    the calling thread, and does not unwind.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_shadow_alloc(
    obj: *mut c_void,
    id: c_ulong,
    size: usize,
    gfp_flags: gfp_t,
    ctor: klp_shadow_ctor_t,
    ctor_data: *mut c_void,
) -> *mut c_void {
    let _ = gfp_flags;
    guard(ptr::null_mut(), || {
        // SAFETY: clause 1 is shadow_alloc's.
        unsafe { shadow_alloc(obj, id, size, ctor, ctor_data, true) }
    })
}

/// `klp_shadow_get_or_alloc`: the data of `<obj, id>` if it exists (returned as it is,
/// without calling `ctor`), else as [`klp_shadow_alloc`]. Concurrent callers for one
/// pair get the same variable, constructed once.
///
/// # Safety
///
/// 1. As [`klp_shadow_alloc`] clause 1.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_shadow_get_or_alloc(
    obj: *mut c_void,
    id: c_ulong,
    size: usize,
    gfp_flags: gfp_t,
    ctor: klp_shadow_ctor_t,
    ctor_data: *mut c_void,
) -> *mut c_void {
    let _ = gfp_flags;
    guard(ptr::null_mut(), || {
        // SAFETY: clause 1 is shadow_alloc's.
        unsafe { shadow_alloc(obj, id, size, ctor, ctor_data, false) }
    })
}

/// Wrap a C destructor for the store.
///
/// # Safety
///
/// 1. `f` may be called with an object key and its variable's data on the calling
///    thread, and does not unwind.
unsafe fn dtor_closure(
    f: unsafe extern "C" fn(obj: *mut c_void, shadow_data: *mut c_void),
) -> impl FnMut(*const c_void, NonNull<u8>) {
    move |obj, data| {
        // SAFETY: clause 1; `data` is a variable just detached, intact until reclaimed.
        unsafe { f(obj.cast_mut(), data.as_ptr().cast()) }
    }
}

/// `klp_shadow_free`: detach `<obj, id>`, call `dtor(obj, data)` on it when `dtor` is
/// not NULL, and give its memory back later (after every `klp_shadow_get` that may have
/// found it has returned). A missing pair is ignored.
///
/// # Safety
///
/// 1. `dtor`, if not NULL, may be called on the calling thread with `obj` and the
///    variable's data, and does not unwind.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_shadow_free(obj: *mut c_void, id: c_ulong, dtor: klp_shadow_dtor_t) {
    guard((), || {
        // SAFETY: clause 1 is dtor_closure's.
        let mut d = dtor.map(|f| unsafe { dtor_closure(f) });
        let d = d.as_mut().map(|d| -> klp_core::shadow::Dtor<'_> { d });
        if shadow().in_callback() {
            return;
        }
        shadow().free(obj.cast_const(), shadow_id(id), d);
    });
}

/// `klp_shadow_free_all`: [`klp_shadow_free`] for every variable with `id`, atomically
/// with respect to concurrent allocations.
///
/// # Safety
///
/// 1. `dtor`, if not NULL, may be called on the calling thread with each variable's
///    object key and data, and does not unwind.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_shadow_free_all(id: c_ulong, dtor: klp_shadow_dtor_t) {
    guard((), || {
        // SAFETY: clause 1 is dtor_closure's.
        let mut d = dtor.map(|f| unsafe { dtor_closure(f) });
        let d = d.as_mut().map(|d| -> klp_core::shadow::Dtor<'_> { d });
        if shadow().in_callback() {
            return;
        }
        shadow().free_all(shadow_id(id), d);
    });
}
