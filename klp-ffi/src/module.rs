//! Kernel livepatch modules, unchanged: what the compatibility headers
//! (`include/klp/compat/linux/*.h`) need from libklp.
//!
//! * `struct klp_module`: the kernel's `struct module`. `<linux/module.h>` defines one per
//!   shared object (`__this_module`, `THIS_MODULE`) with its name, init and exit, its
//!   `MODULE_INFO` strings and its parameters, and registers it from a constructor
//!   ([`klp_module_register`]).
//! * The loader: [`klp_module_load`] (insmod), [`klp_module_unload`] (rmmod),
//!   [`klp_module_param_set`] (`/sys/module/<m>/parameters/<p>`), and what a plain
//!   `dlopen` of a module does (the constructor loads it with no parameters).
//! * The kernel's facilities that are libklp's here: [`klp_log_write`] (printk's end, in
//!   one order with libklp's own lines), [`klp_format_pointer`] (printk's `%p` forms),
//!   `jiffies`, [`klp_sleep_us`] (msleep and friends, parked), [`klp_current`]
//!   (`current`).
//!
//! # Loading, as the kernel's `load_module` and `do_init_module`
//!
//! 1. The module's name: its `KBUILD_MODNAME`, or else its file's name in kbuild's form
//!    (up to the first `.`, `-` made `_`: `livepatch-sample.so` is `livepatch_sample`).
//! 2. Refused when a module or object of that name is loaded (`-EEXIST`).
//! 3. The parameters are parsed and set (`-ENOENT` for an unknown one, `-EINVAL` for a
//!    bad value); nothing else has happened yet.
//! 4. The module is an object coming: enabled patches with an object of its name are
//!    applied to it, with their callbacks (`MODULE_STATE_COMING`); a patch that refuses
//!    it refuses the load with its errno.
//! 5. Its init runs. A negative return refuses the load: the object goes (the patches
//!    applied in step 4 are reverted) and the shared object is closed. A positive return
//!    is the kernel's "suspiciously returned" warning, and the module loads.
//! 6. `MODULE_STATE_LIVE`.
//!
//! Unloading refuses a module whose patch is in use (from its `klp_enable_patch` until
//! the patch is disabled or replaced and released, the kernel's module reference;
//! forever when it was forced) and a module with an init but no exit (`-EBUSY`); else
//! the module is `MODULE_STATE_GOING`, its exit runs, the object goes, and the shared
//! object is closed.

use crate::{EBUSY, EDEADLK, EEXIST, EINVAL, ENOENT, KLP_ERROR_PANIC, guard, log};
use klp_core::log::Level;
use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_ulong, c_void};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// `-ENOEXEC`: not a module (a shared object without `<linux/module.h>`, or one that
/// cannot be opened).
const ENOEXEC: c_int = libc::ENOEXEC;
/// `-EACCES`: a parameter that is not writable (its file in sysfs is read-only).
const EACCES: c_int = libc::EACCES;

/// `MODULE_NAME_LEN` on 64-bit: a module's name is shorter.
pub const KLP_MODULE_NAME_LEN: usize = 56;

/// The version of `struct klp_module` that `<linux/module.h>` fills in.
pub const KLP_MODULE_ABI: c_uint = 1;

/// `HZ`: `jiffies` advances this many times a second.
pub const KLP_HZ: c_ulong = 100;

/// One `MODULE_INFO(tag, value)` of a module (`MODULE_LICENSE`, `MODULE_AUTHOR`,
/// `MODULE_DESCRIPTION`, `MODULE_PARM_DESC`, `MODULE_INFO(livepatch, "Y")`), in a list.
#[repr(C)]
pub struct klp_modinfo {
    /// The tag (`"license"`, `"livepatch"`, ...).
    pub tag: *const c_char,
    /// Its value.
    pub value: *const c_char,
    /// The next one, or NULL.
    pub next: *const klp_modinfo,
}

/// `module_param(name, byte, perm)`: an `unsigned char`.
pub const KLP_PARAM_BYTE: c_int = 1;
/// `short`.
pub const KLP_PARAM_SHORT: c_int = 2;
/// `unsigned short`.
pub const KLP_PARAM_USHORT: c_int = 3;
/// `int`.
pub const KLP_PARAM_INT: c_int = 4;
/// `unsigned int`.
pub const KLP_PARAM_UINT: c_int = 5;
/// `long`.
pub const KLP_PARAM_LONG: c_int = 6;
/// `unsigned long`.
pub const KLP_PARAM_ULONG: c_int = 7;
/// `unsigned long long`.
pub const KLP_PARAM_ULLONG: c_int = 8;
/// `unsigned int`, shown in hexadecimal.
pub const KLP_PARAM_HEXINT: c_int = 9;
/// `bool`.
pub const KLP_PARAM_BOOL: c_int = 10;
/// `bool`, inverted (`x=y` stores false).
pub const KLP_PARAM_INVBOOL: c_int = 11;
/// `char *`: a copy of the value, valid while the module is loaded.
pub const KLP_PARAM_CHARP: c_int = 12;

/// One `module_param` (or `module_param_array`) of a module, in a list.
#[repr(C)]
pub struct klp_module_param {
    /// The parameter's name.
    pub name: *const c_char,
    /// Its type, one of `KLP_PARAM_*`.
    pub kind: c_int,
    /// The variable (the array's first element).
    pub arg: *mut c_void,
    /// The size of the variable (of one element of an array).
    pub size: usize,
    /// 0 for a variable; the number of elements of an array.
    pub max: c_uint,
    /// An array's count of values given, or NULL.
    pub num: *mut c_uint,
    /// The permissions of `/sys/module/<m>/parameters/<name>`: writable (by
    /// [`klp_module_param_set`]) when one of the write bits (0222) is set.
    pub perm: c_uint,
    /// The next one, or NULL.
    pub next: *const klp_module_param,
}

/// A module's init (`module_init`): 0, or a negative errno that refuses the load.
#[allow(non_camel_case_types)]
pub type klp_module_init_t = Option<unsafe extern "C" fn() -> c_int>;

/// A module's exit (`module_exit`).
#[allow(non_camel_case_types)]
pub type klp_module_exit_t = Option<unsafe extern "C" fn()>;

/// A module: the kernel's `struct module`, which `<linux/module.h>` of the compatibility
/// headers names so (`struct module`, `THIS_MODULE`) and defines once per shared object.
/// `obj->mod` of a patch's named object points to one while the object is loaded: the
/// module's own for a module, one of libklp's for another object.
#[repr(C)]
pub struct klp_module {
    /// `KLP_MODULE_ABI`.
    pub abi: c_uint,
    /// `MODULE_STATE_*` (`KLP_MODULE_STATE_*`): written by libklp.
    pub state: c_int,
    /// The module's name, NUL-terminated; empty until the load when the module was
    /// built without `KBUILD_MODNAME` (libklp writes the name derived from its file).
    pub name: [c_char; KLP_MODULE_NAME_LEN],
    /// `module_init`, or NULL.
    pub init: klp_module_init_t,
    /// `module_exit`, or NULL.
    pub exit: klp_module_exit_t,
    /// The `MODULE_INFO` strings.
    pub info: *const klp_modinfo,
    /// The parameters.
    pub params: *const klp_module_param,
    /// Internal, reserved: zero.
    pub klp_reserved: [*mut c_void; 4],
}

/// The name in `m`, if it is NUL-terminated UTF-8 within the array and not empty, and
/// `m` is of the version libklp knows.
///
/// # Safety
///
/// 1. `m` points to a valid `klp_module`.
pub(crate) unsafe fn module_name(m: *const klp_module) -> Option<String> {
    // SAFETY: clause 1.
    if unsafe { (*m).abi } != KLP_MODULE_ABI {
        return None;
    }
    // SAFETY: clause 1.
    unsafe { name_of(m) }.filter(|n| !n.is_empty())
}

/// The name in `m`, if it is NUL-terminated UTF-8 within the array.
///
/// # Safety
///
/// 1. `m` points to a valid `klp_module`.
unsafe fn name_of(m: *const klp_module) -> Option<String> {
    // SAFETY: clause 1.
    let bytes: &[c_char; KLP_MODULE_NAME_LEN] = unsafe { &(*m).name };
    let bytes: Vec<u8> = bytes.iter().map(|&c| c as u8).collect();
    let end = bytes.iter().position(|&b| b == 0)?;
    String::from_utf8(bytes[..end].to_vec()).ok()
}

/// Write `name` (shorter than the array) into `m`.
///
/// # Safety
///
/// 1. `m` points to a valid, writable `klp_module`.
unsafe fn set_name(m: *mut klp_module, name: &str) {
    let mut arr = [0 as c_char; KLP_MODULE_NAME_LEN];
    for (d, s) in arr
        .iter_mut()
        .zip(name.bytes().take(KLP_MODULE_NAME_LEN - 1))
    {
        *d = s as c_char;
    }
    // SAFETY: clause 1.
    unsafe { (*m).name = arr };
}

/// The `MODULE_INFO` values of `m` with `tag`.
///
/// # Safety
///
/// 1. `m` points to a valid `klp_module` whose info list is valid and terminated.
pub(crate) unsafe fn modinfo(m: *const klp_module, tag: &str) -> Vec<String> {
    let mut out = Vec::new();
    // SAFETY: clause 1.
    let mut i = unsafe { (*m).info };
    let mut n = 0;
    while !i.is_null() && n < 4096 {
        // SAFETY: clause 1: a node of the list.
        let node = unsafe { &*i };
        if !node.tag.is_null() {
            // SAFETY: clause 1: NUL-terminated strings of the module.
            let t = unsafe { CStr::from_ptr(node.tag) };
            if t.to_bytes() == tag.as_bytes() {
                let v = if node.value.is_null() {
                    String::new()
                } else {
                    // SAFETY: as above.
                    unsafe { CStr::from_ptr(node.value) }
                        .to_string_lossy()
                        .into_owned()
                };
                out.push(v);
            }
        }
        i = node.next;
        n += 1;
    }
    out
}

/// Whether `m` says `MODULE_INFO(livepatch, "Y")` (the kernel's rule: the tag is there).
///
/// # Safety
///
/// 1. As [`modinfo`] clause 1.
pub(crate) unsafe fn is_livepatch(m: *const klp_module) -> bool {
    // SAFETY: clause 1.
    !unsafe { modinfo(m, "livepatch") }.is_empty()
}

/// A module's name from its file, as kbuild names a module after its source: the file
/// name up to its first `.`, every `-` made `_` (`dir/livepatch-sample.so` →
/// `livepatch_sample`).
pub(crate) fn module_name_from_path(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split('.').next().unwrap_or(file);
    stem.replace('-', "_")
}

/// The file of the loaded object that holds `addr` (`dladdr`), if any.
pub(crate) fn file_of(addr: *const c_void) -> Option<String> {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::uninit();
    // SAFETY: dladdr only reads the address's mapping; the out-pointer is valid.
    if unsafe { libc::dladdr(addr, info.as_mut_ptr()) } == 0 {
        return None;
    }
    // SAFETY: dladdr succeeded and filled `info`.
    let info = unsafe { info.assume_init() };
    if info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: the loader's NUL-terminated file name.
    let f = unsafe { CStr::from_ptr(info.dli_fname) };
    Some(f.to_string_lossy().into_owned())
}

// ---------------------------------------------------------------------------------------
// The module list (/sys/module).

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Coming,
    Live,
    Going,
}

struct Loaded {
    /// The module's `struct klp_module`.
    module: usize,
    name: String,
    /// The loader's `dlopen` handle (0: opened by the program).
    handle: usize,
    /// The file, for the wait until it is unmapped.
    path: String,
    phase: Phase,
    /// Patches of the module in use (the kernel's module references).
    refs: usize,
    /// The values of its `charp` parameters.
    strings: Vec<CString>,
}

/// The loaded modules and libklp's `klp_module` structs for the other objects, under one
/// lock (never held across a module's code, a `dlopen` or an engine call).
#[derive(Default)]
struct Tables {
    loaded: Vec<Loaded>,
    /// `klp_module` structs of libklp's, for the objects that are not modules
    /// (`KLP_OBJECT`, [`crate::klp_object_load`]): `obj->mod` of their patches' objects.
    objects: Vec<(String, ObjectModule)>,
    /// Every snapshot published (see [`SNAPSHOT`]), kept for good: a reader may still
    /// use an old one. Boxed: the pointer published is the `Vec`'s own address, which
    /// must not move when this list grows.
    #[allow(clippy::vec_box)]
    snapshots: Vec<Box<Vec<(String, usize)>>>,
}

static MODULES: Mutex<Tables> = Mutex::new(Tables {
    loaded: Vec::new(),
    objects: Vec::new(),
    snapshots: Vec::new(),
});

fn modules() -> std::sync::MutexGuard<'static, Tables> {
    crate::install_fork();
    MODULES.lock().unwrap_or_else(|e| e.into_inner())
}

/// A `klp_module` of libklp's.
struct ObjectModule(Box<klp_module>);
// SAFETY: its pointers are NULL (no info, no parameters); only its name and state are
// read, by whoever gets it from `obj->mod`.
unsafe impl Send for ObjectModule {}

/// What `obj->mod` points to, by object name (the loaded modules first, then libklp's
/// structs): published by whoever changes the tables, read without a lock by the
/// callbacks, which run under an engine's control lock (a fork takes this layer's locks
/// before the engine's, so they must not wait for one). Earlier versions are never
/// freed (`Tables::snapshots`: a few bytes per module load or unload).
static SNAPSHOT: std::sync::atomic::AtomicPtr<Vec<(String, usize)>> =
    std::sync::atomic::AtomicPtr::new(ptr::null_mut());

/// Publish the name → struct mapping of `t`.
fn publish(t: &mut Tables) {
    let mut v: Vec<(String, usize)> = t
        .loaded
        .iter()
        .map(|l| (l.name.clone(), l.module))
        .collect();
    for (n, m) in &mut t.objects {
        v.push((
            n.clone(),
            std::ptr::from_mut::<klp_module>(&mut m.0) as usize,
        ));
    }
    let mut snap = Box::new(v);
    let p: *mut Vec<(String, usize)> = &mut *snap;
    // The box's heap memory does not move when the box is moved into the list.
    t.snapshots.push(snap);
    SNAPSHOT.store(p, Ordering::Release);
}

/// A `klp_module` with `name` and `state`, zero otherwise.
fn blank_module(name: &str, state: c_int) -> Box<klp_module> {
    let mut m = Box::new(klp_module {
        abi: KLP_MODULE_ABI,
        state,
        name: [0; KLP_MODULE_NAME_LEN],
        init: None,
        exit: None,
        info: ptr::null(),
        params: ptr::null(),
        klp_reserved: [ptr::null_mut(); 4],
    });
    // SAFETY: a valid, writable struct of ours.
    unsafe { set_name(&mut *m, name) };
    m
}

/// Before the object `name` (not a module of the headers) loads: a `klp_module` of
/// libklp's for it, which its patches' callbacks see as `obj->mod`.
pub(crate) fn object_module_prepare(name: &str) {
    let mut t = modules();
    if t.objects.iter().any(|(n, _)| n == name) {
        return;
    }
    t.objects.push((
        name.to_owned(),
        ObjectModule(blank_module(name, crate::KLP_MODULE_STATE_UNFORMED)),
    ));
    publish(&mut t);
}

/// What `obj->mod` of an object named `name` points to while it is loaded in `state`:
/// its module's struct, or libklp's (the state written in either), or NULL when neither
/// is known. Takes no lock.
pub(crate) fn module_ptr_for(name: &str, state: c_int) -> *mut klp_module {
    let snap = SNAPSHOT.load(Ordering::Acquire);
    if snap.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: published snapshots are kept in `Tables::snapshots` for good and never
    // changed.
    let snap: &'static Vec<(String, usize)> = unsafe { &*snap };
    let Some(&(_, m)) = snap.iter().find(|(n, _)| n == name) else {
        return ptr::null_mut();
    };
    let m = m as *mut klp_module;
    // SAFETY: a loaded module is valid while it is an object (its shared object is
    // closed after the object went); libklp's structs are never freed. The state is
    // libklp's field.
    unsafe { (*m).state = state };
    m
}

/// The kernel's `try_module_get(patch->mod)` of `klp_enable_patch`: `Ok(true)` when `m`
/// is a registered module, now referenced; `Ok(false)` when it is not one (nothing to
/// reference); `-ENODEV` when it is going away.
pub(crate) fn module_get(m: *const klp_module) -> Result<bool, c_int> {
    let mut t = modules();
    match t.loaded.iter_mut().find(|l| l.module == m as usize) {
        Some(l) if l.phase == Phase::Going => Err(-libc::ENODEV),
        Some(l) => {
            l.refs += 1;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Drop a reference that [`module_get`] took.
pub(crate) fn module_put(m: usize) {
    if let Some(l) = modules().loaded.iter_mut().find(|l| l.module == m) {
        l.refs = l.refs.saturating_sub(1);
    }
}

/// A line of the loader (not a kernel line: the kernel leaves these to insmod and rmmod).
fn say(level: Level, line: String) {
    log().raw(level, &line);
}

thread_local! {
    /// The modules that registered during the calling thread's `klp_module_load`
    /// `dlopen` (`None`: the thread is not loading).
    static REGISTERED: std::cell::RefCell<Option<Vec<usize>>> =
        const { std::cell::RefCell::new(None) };
}

/// Set when the process exits: module destructors then do nothing (the kernel does not
/// unload its modules at shutdown either).
static EXITING: AtomicBool = AtomicBool::new(false);

extern "C" fn mark_exiting() {
    EXITING.store(true, Ordering::SeqCst);
}

/// `atexit(mark_exiting)`, once: it runs before the destructors of shared objects.
fn watch_exit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a function without preconditions.
        unsafe { libc::atexit(mark_exiting) };
    });
}

// ---------------------------------------------------------------------------------------
// Parameters (kernel/params.c).

/// The arguments of an insmod command line: `name=value` or `name`, separated by
/// blanks; a value may be quoted (`name="a b"`).
fn split_args(s: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return out;
        }
        let mut word = String::new();
        let mut quoted = false;
        while let Some(&c) = chars.peek() {
            if c == '"' {
                quoted = !quoted;
                chars.next();
                continue;
            }
            if c.is_whitespace() && !quoted {
                break;
            }
            word.push(c);
            chars.next();
        }
        match word.split_once('=') {
            Some((n, v)) => out.push((n.to_owned(), Some(v.to_owned()))),
            None => out.push((word, None)),
        }
    }
}

/// Parameter names compare with `-` and `_` alike (the kernel's `parameq`).
fn param_eq(a: &str, b: &str) -> bool {
    let norm = |c: char| if c == '-' { '_' } else { c };
    a.len() == b.len() && a.chars().map(norm).eq(b.chars().map(norm))
}

/// The parameters of `m`.
///
/// # Safety
///
/// 1. `m` points to a valid `klp_module` whose parameter list is valid and terminated.
unsafe fn params_of(m: *const klp_module) -> Vec<*const klp_module_param> {
    let mut out = Vec::new();
    // SAFETY: clause 1.
    let mut p = unsafe { (*m).params };
    while !p.is_null() && out.len() < 4096 {
        out.push(p);
        // SAFETY: clause 1: a node of the list.
        p = unsafe { (*p).next };
    }
    out
}

/// The kernel's `kstrtoull` with base 0: decimal, `0x` hexadecimal or `0` octal, a
/// leading `+`, a trailing newline.
fn parse_u64(s: &str) -> Option<u64> {
    let s = s.strip_suffix('\n').unwrap_or(s);
    let s = s.strip_prefix('+').unwrap_or(s);
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (h, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// The kernel's `kstrtoll` with base 0.
fn parse_i64(s: &str) -> Option<i64> {
    let t = s.strip_suffix('\n').unwrap_or(s);
    match t.strip_prefix('-') {
        Some(rest) => {
            let v = parse_u64(rest)?;
            if v <= i64::MAX as u64 + 1 {
                Some((v as i64).wrapping_neg())
            } else {
                None
            }
        }
        None => parse_u64(t).and_then(|v| i64::try_from(v).ok()),
    }
}

/// The kernel's `kstrtobool`: y/Y/t/T/1, n/N/f/F/0, on, off; no value means true.
fn parse_bool(s: Option<&str>) -> Option<bool> {
    let Some(s) = s else { return Some(true) };
    let b = s.as_bytes();
    match b.first()? {
        b'y' | b'Y' | b't' | b'T' | b'1' => Some(true),
        b'n' | b'N' | b'f' | b'F' | b'0' => Some(false),
        b'o' | b'O' => match b.get(1) {
            Some(b'n' | b'N') => Some(true),
            Some(b'f' | b'F') => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// The size of one value of `kind`, and whether it is signed.
fn kind_size(kind: c_int) -> Option<usize> {
    Some(match kind {
        KLP_PARAM_BYTE => 1,
        KLP_PARAM_SHORT | KLP_PARAM_USHORT => 2,
        KLP_PARAM_INT | KLP_PARAM_UINT | KLP_PARAM_HEXINT => 4,
        KLP_PARAM_LONG | KLP_PARAM_ULONG => std::mem::size_of::<libc::c_long>(),
        KLP_PARAM_ULLONG => 8,
        KLP_PARAM_BOOL | KLP_PARAM_INVBOOL => std::mem::size_of::<bool>(),
        KLP_PARAM_CHARP => std::mem::size_of::<*mut c_char>(),
        _ => return None,
    })
}

/// Store one value of a parameter at `at`; the `charp` copies go to `strings`.
///
/// # Safety
///
/// 1. `at` is valid for a write of one value of `kind`, suitably aligned.
unsafe fn store(
    kind: c_int,
    at: *mut c_void,
    val: Option<&str>,
    strings: &mut Vec<CString>,
) -> bool {
    macro_rules! put {
        ($t:ty, $v:expr) => {{
            let Some(v) = $v else { return false };
            let Some(v) = <$t>::try_from(v).ok() else {
                return false;
            };
            // SAFETY: clause 1.
            unsafe { ptr::write_volatile(at.cast::<$t>(), v) };
            true
        }};
    }
    let num_i = || val.and_then(parse_i64);
    let num_u = || val.and_then(parse_u64);
    match kind {
        KLP_PARAM_BYTE => put!(u8, num_u()),
        KLP_PARAM_SHORT => put!(i16, num_i()),
        KLP_PARAM_USHORT => put!(u16, num_u()),
        KLP_PARAM_INT => put!(i32, num_i()),
        KLP_PARAM_UINT | KLP_PARAM_HEXINT => put!(u32, num_u()),
        KLP_PARAM_LONG => put!(libc::c_long, num_i()),
        KLP_PARAM_ULONG => put!(libc::c_ulong, num_u()),
        KLP_PARAM_ULLONG => put!(u64, num_u()),
        KLP_PARAM_BOOL | KLP_PARAM_INVBOOL => {
            let Some(b) = parse_bool(val) else {
                return false;
            };
            let b = if kind == KLP_PARAM_INVBOOL { !b } else { b };
            // SAFETY: clause 1.
            unsafe { ptr::write_volatile(at.cast::<bool>(), b) };
            true
        }
        KLP_PARAM_CHARP => {
            let Some(v) = val else { return false };
            let Ok(c) = CString::new(v) else {
                return false;
            };
            let p = c.as_ptr().cast_mut();
            strings.push(c);
            // SAFETY: clause 1.
            unsafe { ptr::write_volatile(at.cast::<*mut c_char>(), p) };
            true
        }
        _ => false,
    }
}

/// Set the parameter `p` of module `mname` from `val`: 0, or `-EINVAL` with the
/// kernel's line.
///
/// # Safety
///
/// 1. `p` points to a valid parameter whose variable is as its kind and size say.
unsafe fn set_param(
    who: &str,
    mname: &str,
    p: *const klp_module_param,
    pname: &str,
    val: Option<&str>,
    strings: &mut Vec<CString>,
) -> c_int {
    // SAFETY: clause 1.
    let p = unsafe { &*p };
    let invalid = || {
        say(
            Level::Err,
            format!(
                "{who}: {mname}: '{}' invalid for parameter '{pname}'",
                val.unwrap_or("")
            ),
        );
        -EINVAL
    };
    let Some(size) = kind_size(p.kind) else {
        return invalid();
    };
    if size != p.size || p.arg.is_null() {
        say(
            Level::Err,
            format!("{who}: {mname}: parameter '{pname}' does not have the size of its type"),
        );
        return -EINVAL;
    }
    if p.max == 0 {
        // SAFETY: clause 1: the variable of the kind's size (checked).
        return if unsafe { store(p.kind, p.arg, val, strings) } {
            0
        } else {
            invalid()
        };
    }
    // An array: comma-separated values, at most `max`.
    let Some(v) = val else { return invalid() };
    let items: Vec<&str> = v.split(',').collect();
    if items.len() > p.max as usize {
        say(
            Level::Err,
            format!("{who}: {mname}: {pname}: can only take {} arguments", p.max),
        );
        return -EINVAL;
    }
    for (i, item) in items.iter().enumerate() {
        // SAFETY: clause 1: element i < max of an array of `max` elements of `size`.
        let at = unsafe { p.arg.cast::<u8>().add(i * size) }.cast::<c_void>();
        // SAFETY: as above.
        if !unsafe { store(p.kind, at, Some(item), strings) } {
            return invalid();
        }
    }
    if !p.num.is_null() {
        // SAFETY: clause 1: the module's count variable.
        unsafe { ptr::write_volatile(p.num, items.len() as c_uint) };
    }
    0
}

/// Parse `args` and set the parameters of `m`: 0, `-ENOENT` for an unknown parameter,
/// `-EINVAL` for a bad value (each with its line).
///
/// # Safety
///
/// 1. As [`params_of`] clause 1, every parameter as [`set_param`] clause 1.
unsafe fn set_params(m: *const klp_module, name: &str, args: &str) -> Result<Vec<CString>, c_int> {
    // SAFETY: clause 1.
    let params = unsafe { params_of(m) };
    let mut strings = Vec::new();
    for (pname, val) in split_args(args) {
        let found = params.iter().copied().find(|&p| {
            // SAFETY: clause 1.
            let n = unsafe { (*p).name };
            // SAFETY: clause 1: a NUL-terminated name of the module.
            !n.is_null() && param_eq(&unsafe { CStr::from_ptr(n) }.to_string_lossy(), &pname)
        });
        let Some(p) = found else {
            say(
                Level::Err,
                format!("klp_module_load: {name}: Unknown parameter `{pname}'"),
            );
            return Err(-ENOENT);
        };
        // SAFETY: clause 1.
        let r = unsafe {
            set_param(
                "klp_module_load",
                name,
                p,
                &pname,
                val.as_deref(),
                &mut strings,
            )
        };
        if r != 0 {
            return Err(r);
        }
    }
    Ok(strings)
}

// ---------------------------------------------------------------------------------------
// Loading and unloading.

/// Check `m` and name it: its name, or `-EINVAL` / `-EEXIST` (with a line).
///
/// # Safety
///
/// 1. `m` points to a valid, writable `klp_module`.
unsafe fn claim_name(m: *mut klp_module, file: Option<&str>) -> Result<String, c_int> {
    // SAFETY: clause 1.
    let abi = unsafe { (*m).abi };
    if abi != KLP_MODULE_ABI {
        say(
            Level::Err,
            format!(
                "klp_module_load: {}: struct module of version {abi}, not {KLP_MODULE_ABI}",
                file.unwrap_or("?")
            ),
        );
        return Err(-ENOEXEC);
    }
    // SAFETY: clause 1.
    let name = match unsafe { name_of(m) } {
        Some(n) if !n.is_empty() => n,
        Some(_) => match file {
            Some(f) => module_name_from_path(f),
            None => String::new(),
        },
        None => {
            say(
                Level::Err,
                format!(
                    "klp_module_load: {}: module name too long",
                    file.unwrap_or("?")
                ),
            );
            return Err(-EINVAL);
        }
    };
    if name.is_empty() || name.len() >= KLP_MODULE_NAME_LEN || name.contains('/') {
        say(
            Level::Err,
            format!("klp_module_load: '{name}': invalid module name"),
        );
        return Err(-EINVAL);
    }
    if name == "vmlinux" {
        say(Level::Err, "vmlinux.ko: invalid module name".to_owned());
        return Err(-EINVAL);
    }
    // SAFETY: clause 1.
    unsafe { set_name(m, &name) };
    Ok(name)
}

/// The kernel's taint line for the first livepatch module of the process.
fn taint_once(name: &str) {
    static DONE: AtomicBool = AtomicBool::new(false);
    if !DONE.swap(true, Ordering::SeqCst) {
        say(
            Level::Notice,
            format!("{name}: tainting kernel with TAINT_LIVEPATCH"),
        );
    }
}

/// `m` is not loaded.
///
/// # Safety
///
/// 1. `m` points to a valid, writable `klp_module`.
unsafe fn unformed(m: *mut klp_module) {
    // SAFETY: clause 1.
    unsafe { (*m).state = crate::KLP_MODULE_STATE_UNFORMED };
}

/// Load the registered module `m` (steps 1 to 6 of the module docs). `handle` is the
/// loader's `dlopen` handle (0 for a plain `dlopen`), `file` the shared object's file.
///
/// # Safety
///
/// 1. `m` points to a `klp_module` of a loaded shared object (valid and writable until
///    it is unregistered), whose lists are valid and terminated and whose init and exit
///    may be called on this thread.
unsafe fn load_module(m: *mut klp_module, handle: usize, file: &str, args: &str) -> c_int {
    ticker_start();
    // SAFETY: clause 1.
    let name = match unsafe { claim_name(m, Some(file)) } {
        Ok(n) => n,
        Err(e) => return e,
    };
    {
        let mut t = modules();
        if t.loaded.iter().any(|l| l.name == name) || klp_core::object_state(&name).is_some() {
            drop(t);
            say(
                Level::Err,
                format!("klp_module_load: {name}: module is already loaded"),
            );
            return -EEXIST;
        }
        // Reserved: a second load of the name is refused from now on.
        t.loaded.push(Loaded {
            module: m as usize,
            name: name.clone(),
            handle,
            path: file.to_owned(),
            phase: Phase::Coming,
            refs: 0,
            strings: Vec::new(),
        });
        publish(&mut t);
    }
    let forget = move |name: &str| {
        let mut t = modules();
        t.loaded.retain(|l| l.name != name);
        publish(&mut t);
        drop(t);
        // SAFETY: clause 1.
        unsafe { unformed(m) };
    };
    // SAFETY: clause 1.
    let strings = match unsafe { set_params(m, &name, args) } {
        Ok(s) => s,
        Err(e) => {
            forget(&name);
            return e;
        }
    };
    if let Some(l) = modules().loaded.iter_mut().find(|l| l.name == name) {
        l.strings = strings;
    }
    // SAFETY: clause 1.
    if unsafe { is_livepatch(m) } {
        taint_once(&name);
    }
    // SAFETY: clause 1.
    unsafe { (*m).state = crate::KLP_MODULE_STATE_COMING };
    if let Err(e) = klp_core::begin_load_object(&name) {
        forget(&name);
        if let klp_core::ObjectError::AlreadyLoaded(_) = e {
            say(
                Level::Err,
                format!("klp_module_load: {name}: module is already loaded"),
            );
        }
        return e.errno();
    }
    crate::patch::refresh_object_mod(&name);
    // SAFETY: clause 1.
    let init = unsafe { (*m).init };
    // SAFETY: clause 1: the module's init, on this thread.
    let r = init.map_or(0, |f| unsafe { f() });
    if r < 0 {
        // SAFETY: clause 1.
        unsafe { (*m).state = crate::KLP_MODULE_STATE_GOING };
        let _ = klp_core::finish_unload_object(&name);
        crate::patch::refresh_object_mod(&name);
        forget(&name);
        say(
            Level::Warning,
            format!(
                "klp_module_load: {name}: init failed ({r}): {}",
                // SAFETY: a static string.
                unsafe { CStr::from_ptr(crate::klp_strerror(r)) }.to_string_lossy()
            ),
        );
        return r;
    }
    if r > 0 {
        say(
            Level::Warning,
            format!(
                "do_init_module: '{name}'->init suspiciously returned {r}, it should follow 0/-E convention"
            ),
        );
        say(
            Level::Warning,
            "do_init_module: loading module anyway...".to_owned(),
        );
    }
    let _ = klp_core::finish_load_object(&name);
    // SAFETY: clause 1.
    unsafe { (*m).state = crate::KLP_MODULE_STATE_LIVE };
    if let Some(l) = modules().loaded.iter_mut().find(|l| l.name == name) {
        l.phase = Phase::Live;
    }
    0
}

/// Wait (parked, at most 5 s) until `path` is no longer mapped: references that libklp
/// held for a released patch are dropped on a thread of their own.
fn wait_unmapped(path: &str) {
    let Ok(c) = CString::new(path) else { return };
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        // SAFETY: a NUL-terminated path; NOLOAD only looks the object up.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD) };
        if h.is_null() {
            return;
        }
        // SAFETY: the handle just returned.
        unsafe { libc::dlclose(h) };
        if Instant::now() > end {
            return;
        }
        klp_core::park();
        std::thread::sleep(Duration::from_millis(1));
        klp_core::unpark();
    }
}

/// The last step of an unload (the module's exit, the object going): the entry is
/// removed; its handle and path are returned.
///
/// # Safety
///
/// 1. `m` is a live registered module, marked going by the caller.
unsafe fn unload_steps(m: *mut klp_module, name: &str) -> Option<Loaded> {
    // SAFETY: clause 1.
    unsafe { (*m).state = crate::KLP_MODULE_STATE_GOING };
    let begun = klp_core::begin_unload_object(name).is_ok();
    // SAFETY: clause 1.
    if let Some(exit) = unsafe { (*m).exit } {
        // SAFETY: clause 1: the module's exit, on this thread.
        unsafe { exit() };
    }
    if begun {
        let _ = klp_core::finish_unload_object(name);
    }
    crate::patch::refresh_object_mod(name);
    let mut t = modules();
    let i = t.loaded.iter().position(|l| l.name == name)?;
    let l = t.loaded.remove(i);
    publish(&mut t);
    Some(l)
}

/// Register the module `m` of a shared object: called by the constructor that
/// `<linux/module.h>` defines (after the module's `module_init`, `module_param` and
/// `MODULE_INFO` constructors). Inside [`klp_module_load`], the loader takes it from
/// there. Otherwise (the program opened the module with `dlopen`, or linked it in) the
/// module is loaded now, with no parameters: a constructor cannot make `dlopen` fail, so
/// when the load is refused the shared object stays open but the module is not loaded,
/// and [`crate::klp_object_refused`] gives the errno under the module's name (the
/// program should close it). Registering a module again does nothing. Returns 0 or the
/// refusal's negative errno.
///
/// # Safety
///
/// 1. `m` is NULL or points to the `struct klp_module` of a shared object (or of the
///    program) that is being loaded, valid until [`klp_module_unregister`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_module_register(m: *mut klp_module) -> c_int {
    guard(KLP_ERROR_PANIC, || {
        if m.is_null() {
            return -EINVAL;
        }
        watch_exit();
        let collected = REGISTERED.with(|r| match r.borrow_mut().as_mut() {
            Some(v) => {
                if !v.contains(&(m as usize)) {
                    v.push(m as usize);
                }
                true
            }
            None => false,
        });
        if collected || modules().loaded.iter().any(|l| l.module == m as usize) {
            return 0;
        }
        let file = file_of(m.cast_const().cast()).unwrap_or_default();
        // SAFETY: clause 1: being loaded; its lists were linked by its constructors.
        let r = unsafe { load_module(m, 0, &file, "") };
        // SAFETY: clause 1.
        let name = unsafe { name_of(m) }.unwrap_or_default();
        let name = if name.is_empty() {
            module_name_from_path(&file)
        } else {
            name
        };
        crate::site::record_refusal(&name, r);
        r
    })
}

/// Unregister the module `m`: called by the destructor that `<linux/module.h>` defines,
/// when its shared object is closed (or the program exits). A module still loaded there
/// (the program opened it with `dlopen` and now closes it) is unloaded first: its exit
/// runs and the object goes. Nothing happens at the process's exit (the kernel does not
/// unload its modules when it stops either), nor for a module that is not registered.
///
/// # Safety
///
/// 1. `m` is NULL or a module given to [`klp_module_register`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_module_unregister(m: *mut klp_module) {
    guard((), || {
        if m.is_null() || EXITING.load(Ordering::SeqCst) {
            return;
        }
        let name = {
            let mut t = modules();
            let Some(i) = t.loaded.iter().position(|l| l.module == m as usize) else {
                return;
            };
            if t.loaded[i].phase != Phase::Live || t.loaded[i].refs > 0 {
                // Coming or going on another path, or its patch holds it (only at exit:
                // the patch keeps the object mapped otherwise).
                t.loaded.remove(i);
                publish(&mut t);
                return;
            }
            t.loaded[i].phase = Phase::Going;
            t.loaded[i].name.clone()
        };
        // SAFETY: clause 1: live, marked going above.
        drop(unsafe { unload_steps(m, &name) });
    });
}

/// `insmod path params`: open the kernel livepatch module (or target module) `path`,
/// built with the compatibility headers, and load it: `params` (NULL or `""` for none)
/// are its parameters as insmod takes them (`"name=value name2=v1,v2 flag"`); its init
/// runs. Returns 0, or a negative errno with a line of the log, and then nothing stays
/// of the module (the shared object is closed):
///
/// * `-EINVAL`: `path` is NULL; the module's name is invalid; a parameter's value is
///   invalid (`'%s' invalid for parameter '%s'`).
/// * `-ENOENT`: no such file; a symbol that neither libklp nor the program exports (the
///   kernel's "Unknown symbol in module"); an unknown parameter (``Unknown parameter
///   `%s'``).
/// * `-ENOEXEC`: the file cannot be opened as a shared object otherwise (the dynamic
///   loader's message), or it is not a module (no `<linux/module.h>`).
/// * `-EEXIST`: a module or object of that name is loaded.
/// * `-EDEADLK`: called from a callback or log line of a control operation, a shadow
///   constructor or destructor.
/// * the errno of a patch that refused the module (its object), or of the module's
///   init (a livepatch module's `klp_enable_patch`, say: `-EINVAL` for a module without
///   `MODULE_INFO(livepatch, "Y")`).
///
/// Lines of the loader itself start with `klp_module_load: `; the kernel's lines (of
/// the patches, the module's own) are as in the kernel.
///
/// # Safety
///
/// 1. `path` and `params` are NULL or NUL-terminated strings valid for the call.
/// 2. The shared object is a module whose code may run in this process.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_module_load(path: *const c_char, params: *const c_char) -> c_int {
    guard(KLP_ERROR_PANIC, || {
        if path.is_null() {
            say(Level::Err, "klp_module_load: no file (NULL)".to_owned());
            return -EINVAL;
        }
        if crate::control_would_deadlock() {
            return -EDEADLK;
        }
        // SAFETY: clause 1.
        let file = unsafe { CStr::from_ptr(path) }
            .to_string_lossy()
            .into_owned();
        let args = if params.is_null() {
            String::new()
        } else {
            // SAFETY: clause 1.
            unsafe { CStr::from_ptr(params) }
                .to_string_lossy()
                .into_owned()
        };
        // A released module of this file may still be mapped for a moment.
        wait_unmapped_unless_loaded(&file);
        REGISTERED.with(|r| *r.borrow_mut() = Some(Vec::new()));
        // SAFETY: clause 1; clause 2: its constructors may run.
        let h = unsafe { libc::dlopen(path, libc::RTLD_NOW | libc::RTLD_LOCAL) };
        let regs = REGISTERED
            .with(|r| r.borrow_mut().take())
            .unwrap_or_default();
        if h.is_null() {
            // SAFETY: dlerror's string (per thread) or NULL.
            let why = unsafe { libc::dlerror() };
            let why = if why.is_null() {
                "unknown error".to_owned()
            } else {
                // SAFETY: a NUL-terminated message.
                unsafe { CStr::from_ptr(why) }
                    .to_string_lossy()
                    .into_owned()
            };
            // A missing file, or a symbol the program does not export (the kernel's
            // "Unknown symbol in module"): -ENOENT; any other failure: -ENOEXEC.
            let missing = !std::path::Path::new(&file).exists() || why.contains("undefined symbol");
            say(
                Level::Err,
                format!("klp_module_load: {file}: cannot open: {why}"),
            );
            return if missing { -ENOENT } else { -ENOEXEC };
        }
        let close = |h: *mut c_void| {
            // SAFETY: our handle of dlopen.
            unsafe { libc::dlclose(h) };
        };
        let m = match regs.as_slice() {
            [m] => *m as *mut klp_module,
            [] => {
                let loaded = modules()
                    .loaded
                    .iter()
                    .find(|l| file_of(l.module as *const c_void).as_deref() == Some(&file))
                    .map(|l| l.name.clone());
                close(h);
                return match loaded {
                    Some(name) => {
                        say(
                            Level::Err,
                            format!("klp_module_load: {name}: module is already loaded"),
                        );
                        -EEXIST
                    }
                    None => {
                        say(
                            Level::Err,
                            format!("klp_module_load: {file}: not a module (no <linux/module.h>)"),
                        );
                        -ENOEXEC
                    }
                };
            }
            _ => {
                close(h);
                say(
                    Level::Err,
                    format!("klp_module_load: {file}: more than one module in one file"),
                );
                return -ENOEXEC;
            }
        };
        // SAFETY: clause 2: the module just registered by its constructor.
        let r = unsafe { load_module(m, h as usize, &file, &args) };
        if r != 0 {
            close(h);
            wait_unmapped(&file);
        }
        r
    })
}

/// Before opening `file`: if it is still mapped but no module of it is loaded (a
/// released patch's references are being dropped), wait until it is unmapped.
fn wait_unmapped_unless_loaded(file: &str) {
    let loaded = modules()
        .loaded
        .iter()
        .any(|l| l.path == file || file_of(l.module as *const c_void).as_deref() == Some(file));
    if !loaded {
        wait_unmapped(file);
    }
}

/// `rmmod name`: unload the module `name` loaded by [`klp_module_load`] (or by the
/// program's `dlopen`): its exit runs, the object goes (the patches applied to it are
/// reverted), and the shared object the loader opened is closed (this waits, at most a
/// few seconds, until it is unmapped). Returns 0, or a negative errno with a line, and
/// then nothing changed:
///
/// * `-EINVAL`: `name` is NULL.
/// * `-ENOENT`: no such module.
/// * `-EBUSY`: the module is in use: its patch is enabled, in transition, or not yet
///   released (forever when it was forced), as rmmod refuses a livepatch module whose
///   patch the kernel holds; it has an init but no exit (the kernel cannot unload it);
///   it is being loaded or unloaded.
/// * `-EDEADLK`: as [`klp_module_load`].
///
/// # Safety
///
/// 1. `name` is NULL or a NUL-terminated string valid for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_module_unload(name: *const c_char) -> c_int {
    guard(KLP_ERROR_PANIC, || {
        if name.is_null() {
            say(Level::Err, "klp_module_unload: no name (NULL)".to_owned());
            return -EINVAL;
        }
        if crate::control_would_deadlock() {
            return -EDEADLK;
        }
        // SAFETY: clause 1.
        let name = unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned();
        let m = {
            let mut t = modules();
            let Some(l) = t.loaded.iter_mut().find(|l| l.name == name) else {
                drop(t);
                say(
                    Level::Err,
                    format!("klp_module_unload: {name}: no such module"),
                );
                return -ENOENT;
            };
            let m = l.module as *mut klp_module;
            let why = if l.phase != Phase::Live {
                Some("module is being loaded or unloaded")
            } else if l.refs > 0 {
                Some("module is in use (its livepatch is enabled or not yet released)")
            } else {
                // SAFETY: a registered module is valid while registered (this lock).
                let (init, exit) = unsafe { ((*m).init, (*m).exit) };
                (init.is_some() && exit.is_none()).then_some("module has an init but no exit")
            };
            if let Some(why) = why {
                drop(t);
                say(Level::Err, format!("klp_module_unload: {name}: {why}"));
                return -EBUSY;
            }
            l.phase = Phase::Going;
            m
        };
        // SAFETY: live, marked going above; valid until its shared object is closed
        // below.
        let Some(l) = (unsafe { unload_steps(m, &name) }) else {
            return 0;
        };
        if l.handle != 0 {
            // SAFETY: the loader's handle, closed once.
            unsafe { libc::dlclose(l.handle as *mut c_void) };
            wait_unmapped(&l.path);
        }
        drop(l.strings);
        0
    })
}

/// `/sys/module/<name>/refcnt`: the references on the loaded module `name` (one per
/// patch of it in use: from its enable until it is released), `-ENOENT` when no such
/// module is loaded, `-EINVAL` for a NULL `name`. [`klp_module_unload`] refuses the
/// module while this is not 0.
///
/// # Safety
///
/// 1. `name` is NULL or a NUL-terminated string valid for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_module_refcnt(name: *const c_char) -> c_int {
    guard(KLP_ERROR_PANIC, || {
        if name.is_null() {
            return -EINVAL;
        }
        // SAFETY: clause 1.
        let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
        modules()
            .loaded
            .iter()
            .find(|l| l.name == name)
            .map_or(-ENOENT, |l| c_int::try_from(l.refs).unwrap_or(c_int::MAX))
    })
}

/// Write the parameter `param` of the loaded module `module` (`echo value >
/// /sys/module/<module>/parameters/<param>`). Returns 0, `-EINVAL` (a NULL argument, a
/// bad value), `-ENOENT` (no such module or parameter) or `-EACCES` (its permissions
/// have no write bit), each with a line.
///
/// # Safety
///
/// 1. `module`, `param` and `value` are NULL or NUL-terminated strings valid for the
///    call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_module_param_set(
    module: *const c_char,
    param: *const c_char,
    value: *const c_char,
) -> c_int {
    guard(KLP_ERROR_PANIC, || {
        if module.is_null() || param.is_null() || value.is_null() {
            say(
                Level::Err,
                "klp_module_param_set: NULL module, parameter or value".to_owned(),
            );
            return -EINVAL;
        }
        // SAFETY: clause 1.
        let (mname, pname, val) = unsafe {
            (
                CStr::from_ptr(module).to_string_lossy().into_owned(),
                CStr::from_ptr(param).to_string_lossy().into_owned(),
                CStr::from_ptr(value).to_string_lossy().into_owned(),
            )
        };
        let mut t = modules();
        let Some(l) = t
            .loaded
            .iter_mut()
            .find(|l| l.name == mname && l.phase != Phase::Going)
        else {
            drop(t);
            say(
                Level::Err,
                format!("klp_module_param_set: {mname}: no such module"),
            );
            return -ENOENT;
        };
        let m = l.module as *const klp_module;
        // SAFETY: a registered module, valid under this lock.
        let found = unsafe { params_of(m) }.into_iter().find(|&p| {
            // SAFETY: as above.
            let n = unsafe { (*p).name };
            // SAFETY: a NUL-terminated name of the module.
            !n.is_null() && param_eq(&unsafe { CStr::from_ptr(n) }.to_string_lossy(), &pname)
        });
        let Some(p) = found else {
            drop(t);
            say(
                Level::Err,
                format!("klp_module_param_set: {mname}: no parameter '{pname}'"),
            );
            return -ENOENT;
        };
        // SAFETY: as above.
        if unsafe { (*p).perm } & 0o222 == 0 {
            drop(t);
            say(
                Level::Err,
                format!("klp_module_param_set: {mname}: parameter '{pname}' is not writable"),
            );
            return -EACCES;
        }
        let mut strings = std::mem::take(&mut l.strings);
        // SAFETY: a parameter of a registered module.
        let r = unsafe {
            set_param(
                "klp_module_param_set",
                &mname,
                p,
                &pname,
                Some(val.as_str()),
                &mut strings,
            )
        };
        l.strings = strings;
        r
    })
}

// ---------------------------------------------------------------------------------------
// printk.

/// Log `text` at `level` (`KLP_LOG_*`; 0 to 2, the kernel's emerg, alert and crit,
/// count as `KLP_LOG_ERR`) through the log handler, in one order with libklp's own
/// lines: the end of printk of the compatibility headers. Each line of `text` (a
/// trailing newline ends the last one) is one line of the log. Returns 0, or `-EINVAL`
/// for a NULL `text` or another level (nothing is logged).
///
/// # Safety
///
/// 1. `text` is NULL or a NUL-terminated string valid for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_log_write(level: c_int, text: *const c_char) -> c_int {
    guard(KLP_ERROR_PANIC, || {
        let level = match level {
            0..=3 => Level::Err,
            4 => Level::Warning,
            5 => Level::Notice,
            6 => Level::Info,
            7 => Level::Debug,
            _ => return -EINVAL,
        };
        if text.is_null() {
            return -EINVAL;
        }
        // SAFETY: clause 1.
        let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
        if text.is_empty() {
            return 0;
        }
        let body = text.strip_suffix('\n').unwrap_or(&text);
        for line in body.split('\n') {
            log().raw(level, line);
        }
        0
    })
}

/// The process's key for hashed pointers (`%p`).
fn pointer_key() -> &'static std::collections::hash_map::RandomState {
    static KEY: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    KEY.get_or_init(std::collections::hash_map::RandomState::new)
}

/// The kernel's `%p`: NULL and error pointers as they are, others as a keyed hash cut to
/// 32 bits, in as many hex digits as a pointer has.
fn hashed(p: usize) -> String {
    use std::hash::BuildHasher;
    let w = 2 * std::mem::size_of::<usize>();
    if p == 0 || p >= (-4095isize) as usize {
        return format!("{p:0w$x}");
    }
    let h = pointer_key().hash_one(p) & 0xffff_ffff;
    format!("{h:0w$x}")
}

/// `%pGg` names, compound ones first (`<linux/gfp.h>` of the compatibility headers).
fn gfp_names() -> [(&'static str, crate::gfp_t); 16] {
    use crate::*;
    [
        ("GFP_KERNEL_ACCOUNT", GFP_KERNEL | KLP_GFP_ACCOUNT),
        ("GFP_KERNEL", GFP_KERNEL),
        ("GFP_ATOMIC", GFP_ATOMIC),
        ("GFP_NOWAIT", GFP_NOWAIT),
        ("GFP_NOIO", GFP_NOIO),
        ("GFP_NOFS", GFP_NOFS),
        ("GFP_USER", GFP_USER),
        ("GFP_HIGHUSER", GFP_HIGHUSER),
        ("GFP_DMA", GFP_DMA),
        ("GFP_DMA32", GFP_DMA32),
        ("__GFP_ZERO", KLP_GFP_ZERO),
        ("__GFP_NOWARN", KLP_GFP_NOWARN),
        ("__GFP_NOFAIL", KLP_GFP_NOFAIL),
        ("__GFP_NORETRY", KLP_GFP_NORETRY),
        ("__GFP_ACCOUNT", KLP_GFP_ACCOUNT),
        ("__GFP_RETRY_MAYFAIL", KLP_GFP_RETRY_MAYFAIL),
    ]
}

/// The kernel's `%pGg` of the flags at `p` (the kernel's `format_flags`: names joined by
/// `|`, unnamed bits in hex).
fn gfp_string(mut flags: crate::gfp_t) -> String {
    let mut out = String::new();
    for (name, mask) in gfp_names() {
        if flags == 0 {
            break;
        }
        if flags & mask != mask {
            continue;
        }
        out.push_str(name);
        flags &= !mask;
        if flags != 0 {
            out.push('|');
        }
    }
    if flags != 0 {
        out.push_str(&format!("{flags:#x}"));
    }
    out
}

/// The name of a negative errno (`%pe`).
fn errname(e: isize) -> Option<&'static str> {
    Some(match -e as c_int {
        libc::EPERM => "-EPERM",
        libc::ENOENT => "-ENOENT",
        libc::EINTR => "-EINTR",
        libc::EIO => "-EIO",
        libc::E2BIG => "-E2BIG",
        libc::ENOEXEC => "-ENOEXEC",
        libc::EAGAIN => "-EAGAIN",
        libc::ENOMEM => "-ENOMEM",
        libc::EACCES => "-EACCES",
        libc::EFAULT => "-EFAULT",
        libc::EBUSY => "-EBUSY",
        libc::EEXIST => "-EEXIST",
        libc::ENODEV => "-ENODEV",
        libc::EINVAL => "-EINVAL",
        libc::ENOSPC => "-ENOSPC",
        libc::ERANGE => "-ERANGE",
        libc::EDEADLK => "-EDEADLK",
        libc::ENOSYS => "-ENOSYS",
        libc::ETIMEDOUT => "-ETIMEDOUT",
        libc::EOPNOTSUPP => "-EOPNOTSUPP",
        _ => return None,
    })
}

/// `RTLD_DL_SYMENT` of `dladdr1`: the symbol's table entry.
const RTLD_DL_SYMENT: c_int = 1;

/// `%pS` / `%ps`: the symbol that holds `p`, with its offset and size (`name+0x1a/0x40`)
/// or alone; a raw address when none is known.
fn symbol_string(p: usize, with_offset: bool) -> String {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::uninit();
    let mut sym: *mut c_void = ptr::null_mut();
    // SAFETY: dladdr1 only reads the address's mapping; the out-pointers are valid.
    let found = unsafe {
        libc::dladdr1(
            p as *const c_void,
            info.as_mut_ptr(),
            &mut sym,
            RTLD_DL_SYMENT,
        )
    };
    if found != 0 {
        // SAFETY: filled by dladdr1.
        let info = unsafe { info.assume_init() };
        if !info.dli_sname.is_null() {
            // SAFETY: the loader's NUL-terminated symbol name.
            let name = unsafe { CStr::from_ptr(info.dli_sname) }.to_string_lossy();
            let off = p.wrapping_sub(info.dli_saddr as usize);
            let size = if sym.is_null() {
                0
            } else {
                // SAFETY: the symbol table entry dladdr1 found.
                unsafe { (*sym.cast::<libc::Elf64_Sym>()).st_size }
            };
            // The nearest exported symbol below an address of a static function is not
            // its symbol (only exported ones are known here).
            if size == 0 || (off as u64) < size {
                if !with_offset {
                    return name.into_owned();
                }
                return format!("{name}+{off:#x}/{size:#x}");
            }
        }
    }
    format!("{:#0w$x}", p, w = 2 + 2 * std::mem::size_of::<usize>())
}

/// The kernel's `%p` conversion with the extension `ext` (the letters and digits that
/// follow `%p`: `""`, `"x"`, `"K"`, `"s"`, `"S"`, `"Gg"`, `"e"`, ...) of `ptr`, written
/// to `buf` (`len` bytes, NUL-terminated when `len` is not 0, truncated if need be): the
/// printk of the compatibility headers calls it. Returns the length of the whole text,
/// as snprintf does, or `-EINVAL` for a NULL `buf` with a non-zero `len`.
///
/// `%p`, `%pK`: hashed (NULL and error pointers as they are); `%px`: the address; `%ps`,
/// `%pf`: the symbol; `%pS`, `%pF`, `%pB`: the symbol, its offset and size; `%pGg`: the
/// `GFP_*` flags at `ptr`; `%pe`: the errno's name of an error pointer. Other forms are
/// printed as `%p`.
///
/// # Safety
///
/// 1. `buf` is NULL or valid for writes of `len` bytes; `ext` is valid for reads of
///    `ext_len` bytes (or `ext_len` is 0).
/// 2. For `%pGg`, `ptr` is NULL or points to a `gfp_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_format_pointer(
    buf: *mut c_char,
    len: usize,
    ext: *const c_char,
    ext_len: usize,
    ptr: *const c_void,
) -> c_int {
    guard(KLP_ERROR_PANIC, || {
        if buf.is_null() && len != 0 {
            return -EINVAL;
        }
        let ext: &[u8] = if ext.is_null() || ext_len == 0 {
            &[]
        } else {
            // SAFETY: clause 1.
            unsafe { std::slice::from_raw_parts(ext.cast::<u8>(), ext_len) }
        };
        let p = ptr as usize;
        let bad = |p: usize| {
            if p == 0 {
                Some("(null)".to_owned())
            } else if p < 4096 || p >= (-4095isize) as usize {
                Some("(efault)".to_owned())
            } else {
                None
            }
        };
        let text = match ext {
            [b'x', ..] => format!("{p:0w$x}", w = 2 * std::mem::size_of::<usize>()),
            [b's' | b'f', ..] => symbol_string(p, false),
            [b'S' | b'F' | b'B', ..] => symbol_string(p, true),
            [b'G', b'g', ..] => bad(p).unwrap_or_else(|| {
                // SAFETY: clause 2: a gfp_t (checked not NULL nor tiny).
                gfp_string(unsafe { *ptr.cast::<crate::gfp_t>() })
            }),
            [b'e', ..] => {
                let e = p as isize;
                if (-4095..0).contains(&e) {
                    errname(e).map_or_else(|| e.to_string(), str::to_owned)
                } else {
                    hashed(p)
                }
            }
            _ => hashed(p),
        };
        if len != 0 {
            let n = text.len().min(len - 1);
            // SAFETY: clause 1: `n + 1 <= len` bytes.
            unsafe {
                ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
                *buf.add(n) = 0;
            }
        }
        c_int::try_from(text.len()).unwrap_or(c_int::MAX)
    })
}

// ---------------------------------------------------------------------------------------
// jiffies, sleeping, current.

/// The kernel's `INITIAL_JIFFIES`: five minutes before a 32-bit wrap.
const INITIAL_JIFFIES: usize = (-(300 * KLP_HZ as i64)) as u32 as usize;

/// `jiffies`: a real variable (modules name parameters `jiffies`), advanced `KLP_HZ`
/// times a second from the first module's load on (`<linux/jiffies.h>` of the
/// compatibility headers declares it).
///
/// cbindgen:ignore
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static jiffies: AtomicUsize = AtomicUsize::new(INITIAL_JIFFIES);

static TICKING: AtomicBool = AtomicBool::new(false);

/// Start the thread that advances `jiffies` (once; again in a forked child).
pub(crate) fn ticker_start() {
    if TICKING.swap(true, Ordering::SeqCst) {
        return;
    }
    let base = jiffies.load(Ordering::Relaxed);
    let start = Instant::now();
    #[allow(clippy::unnecessary_cast)]
    let period = Duration::from_micros(1_000_000 / KLP_HZ as u64);
    let spawned = klp_sync::spawn_service("klp-jiffies", move || {
        loop {
            std::thread::sleep(period);
            let ticks = start.elapsed().as_micros() * u128::from(KLP_HZ) / 1_000_000;
            jiffies.store(base.wrapping_add(ticks as usize), Ordering::Relaxed);
        }
    });
    if spawned.is_err() {
        TICKING.store(false, Ordering::SeqCst);
    }
}

/// `fork` child: the ticker does not exist there; start a new one if it ran.
pub(crate) fn fork_child() {
    if TICKING.swap(false, Ordering::SeqCst) {
        ticker_start();
    }
}

/// `fork` prepare: the tables.
pub(crate) fn fork_prepare() {
    crate::fork_hold(MODULES.lock().unwrap_or_else(|e| e.into_inner()));
}

/// Sleep `usecs` microseconds: `parked` (msleep, usleep_range: a sleeping task, which a
/// transition may switch from outside) or not (udelay, mdelay: a busy task). Patchable
/// functions that the caller left by longjmp or an exception no longer count when it
/// parks.
#[unsafe(no_mangle)]
pub extern "C" fn klp_sleep_us(usecs: c_ulong, parked: bool) {
    guard((), || {
        if parked {
            crate::klp_park();
        }
        #[allow(clippy::unnecessary_cast)]
        std::thread::sleep(Duration::from_micros(usecs as u64));
        if parked {
            crate::klp_unpark();
        }
    });
}

/// The calling thread as the kernel's `current` sees a task (`<linux/sched.h>` of the
/// compatibility headers names it `struct task_struct`).
#[repr(C)]
pub struct klp_task {
    /// The thread's id (`gettid`).
    pub pid: c_int,
    /// The process's id (`getpid`).
    pub tgid: c_int,
    /// The thread's name.
    pub comm: [c_char; 16],
}

thread_local! {
    static TASK: std::cell::UnsafeCell<klp_task> = const {
        std::cell::UnsafeCell::new(klp_task { pid: 0, tgid: 0, comm: [0; 16] })
    };
}

/// `current`: the calling thread's task, valid on this thread while it runs (its ids
/// and name are read again at each call).
#[unsafe(no_mangle)]
pub extern "C" fn klp_current() -> *mut klp_task {
    guard(ptr::null_mut(), || {
        TASK.with(|t| {
            let p = t.get();
            // SAFETY: the calling thread's own record; no reference to it is held
            // elsewhere on this thread.
            let t = unsafe { &mut *p };
            // SAFETY: system calls without preconditions.
            t.pid = unsafe { libc::gettid() };
            // SAFETY: as above.
            t.tgid = unsafe { libc::getpid() };
            // SAFETY: PR_GET_NAME writes at most 16 bytes, the size of `comm`.
            unsafe { libc::prctl(libc::PR_GET_NAME, t.comm.as_mut_ptr()) };
            p
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_files() {
        assert_eq!(
            module_name_from_path("/x/livepatch-sample.so"),
            "livepatch_sample"
        );
        assert_eq!(module_name_from_path("test_klp_state.so"), "test_klp_state");
        assert_eq!(module_name_from_path("a.b.so"), "a");
    }

    #[test]
    fn numbers_as_the_kernel_reads_them() {
        assert_eq!(parse_i64("-19"), Some(-19));
        assert_eq!(parse_i64("0x10"), Some(16));
        assert_eq!(parse_i64("010"), Some(8));
        assert_eq!(parse_i64("12\n"), Some(12));
        assert_eq!(parse_i64("abc"), None);
        assert_eq!(parse_i64(""), None);
        assert_eq!(parse_u64("-1"), None);
        assert_eq!(parse_bool(Some("Y")), Some(true));
        assert_eq!(parse_bool(Some("off")), Some(false));
        assert_eq!(parse_bool(None), Some(true));
        assert_eq!(parse_bool(Some("x")), None);
    }

    #[test]
    fn insmod_arguments() {
        assert_eq!(
            split_args(" a=1  b=\"x y\" c "),
            vec![
                ("a".to_owned(), Some("1".to_owned())),
                ("b".to_owned(), Some("x y".to_owned())),
                ("c".to_owned(), None)
            ]
        );
        assert!(param_eq("pre-patch_ret", "pre_patch_ret"));
    }

    #[test]
    fn pointers_as_printk_prints_them() {
        assert_eq!(hashed(0), "0000000000000000");
        assert_eq!(hashed(-12isize as usize), "fffffffffffffff4");
        let h = hashed(0x1234_5678_9abc);
        assert_eq!(h.len(), 16);
        assert!(h.starts_with("00000000"), "{h}");
        assert_eq!(h, hashed(0x1234_5678_9abc));
        assert_eq!(gfp_string(crate::GFP_KERNEL), "GFP_KERNEL");
        assert_eq!(
            gfp_string(crate::GFP_KERNEL | crate::KLP_GFP_ZERO),
            "GFP_KERNEL|__GFP_ZERO"
        );
        assert_eq!(gfp_string(crate::GFP_NOWAIT), "GFP_NOWAIT");
        assert_eq!(gfp_string(0x4000_0000), "0x40000000");
    }
}
