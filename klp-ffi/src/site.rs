//! Patchable C functions: the storage of a site, its registration, and the call path
//! (`klp_enter` / `klp_leave`) that the macros of `include/klp_macros.h`
//! (`KLP_PATCHABLE` and friends) expand to.

use crate::guard;
use klp_core::Site;
use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;
use std::sync::Mutex;

/// The size in bytes of the storage of a site (`struct klp_site`).
pub const KLP_SITE_BYTES: usize = 128;

/// The storage of one patchable function: opaque, static (zero-initialized) and never
/// moved. The macros of `KLP_PATCHABLE` define one per function; libklp constructs it
/// in place at registration.
#[repr(C, align(16))]
pub struct klp_site {
    /// Opaque: the site, once registered.
    pub opaque: [u8; KLP_SITE_BYTES],
}

const _: () = {
    assert!(std::mem::size_of::<Site>() <= KLP_SITE_BYTES);
    assert!(std::mem::align_of::<Site>() <= 16);
};

/// A C string that lives for the rest of the process, as a `&'static str` (a copy when
/// it is not UTF-8, leaked: registration happens once per site).
///
/// # Safety
///
/// 1. `s` is not NULL and points to a NUL-terminated string that stays unchanged and
///    allocated as long as the site is registered.
unsafe fn static_str(s: *const c_char) -> &'static str {
    // SAFETY: clause 1.
    let s: &'static CStr = unsafe { CStr::from_ptr(s) };
    match s.to_str() {
        Ok(s) => s,
        Err(_) => Box::leak(s.to_string_lossy().into_owned().into_boxed_str()),
    }
}

/// The name of the module whose file holds `addr` (see `module_name_from_path`), kept
/// for the rest of the process (once per name).
fn file_module_name(addr: *const c_void) -> &'static str {
    static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let name =
        crate::module::module_name_from_path(&crate::module::file_of(addr).unwrap_or_default());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = names.iter().find(|n| **n == name) {
        return n;
    }
    let n: &'static str = Box::leak(name.into_boxed_str());
    names.push(n);
    n
}

/// Construct the site `site` for the function `name` of the object `object` (NULL:
/// the main program, `vmlinux`; an empty name: the module that holds the site, named
/// after its file, for a module of the compatibility headers built without
/// `KBUILD_MODNAME`), whose original implementation is `original`, and make
/// it known (the kernel's kallsyms), so that a patch can name it. Called by the
/// constructor that `KLP_PATCHABLE` defines; registering a site again does nothing.
/// Several sites of one name in one object (static functions) are told apart by
/// `old_sympos`, in the order of their registration.
///
/// Does nothing when `site`, `name` or `original` is NULL.
///
/// # Safety
///
/// 1. `site` is NULL or points to a `struct klp_site` of static storage duration that
///    is zero until this call, is never written by anyone else, and stays allocated as
///    long as the program (or its shared object) runs.
/// 2. `object` and `name` are NULL or string literals (NUL-terminated, unchanged and
///    allocated as long as the site).
/// 3. `original` is NULL or the address of a function with the signature of the
///    patchable function.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_site_register(
    site: *mut klp_site,
    object: *const c_char,
    name: *const c_char,
    original: *mut c_void,
) {
    guard((), || {
        if site.is_null() || name.is_null() || original.is_null() {
            return;
        }
        // SAFETY: clause 1: valid for reads of the whole storage.
        let bytes = unsafe { &(*site).opaque };
        if bytes.iter().any(|&b| b != 0) {
            // Constructed already (a site's name is never NULL, so a constructed site
            // is never all zero).
            return;
        }
        // SAFETY: clause 2.
        let object = (!object.is_null()).then(|| unsafe { static_str(object) });
        // An empty name: the module of the compatibility headers that holds the site,
        // built without KBUILD_MODNAME, is named after its file.
        let object = match object {
            Some("") => Some(file_module_name(site.cast_const().cast())),
            o => o,
        };
        // SAFETY: clause 2; not NULL.
        let name = unsafe { static_str(name) };
        let s: *mut Site = site.cast();
        // SAFETY: clause 1: static storage, large and aligned enough (the assertions
        // above), not constructed yet and written by no one else.
        unsafe {
            ptr::write(
                s,
                Site::new(object, name, original.cast_const().cast(), None),
            )
        };
        // SAFETY: just constructed; static storage that is never moved (clause 1).
        let s: &'static Site = unsafe { &*s };
        s.register();
    });
}

/// Entry of a patchable function (used by `KLP_PATCHABLE`): returns the implementation
/// that this call runs (the original or a replacement), to be called with the
/// function's arguments, and then be followed by `klp_leave(frame, task)`. `frame` is
/// the address of the caller's frame (`__builtin_frame_address(0)`); `*task_out`, if
/// `task_out` is not NULL, receives the calling thread's task for `klp_leave`.
///
/// # Safety
///
/// 1. `site` points to a site registered with [`klp_site_register`].
/// 2. `task_out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_enter(
    site: *mut klp_site,
    frame: *mut c_void,
    task_out: *mut *mut c_void,
) -> *mut c_void {
    // SAFETY: clause 1: a constructed site of static storage.
    let site: &'static Site = unsafe { &*site.cast::<Site>() };
    // No guard here: `enter_split` never unwinds (its inline part cannot panic, its
    // out-of-line parts catch a panic and return the original), and a guard's landing
    // pad would cost the common case its register-free path.
    // SAFETY: clause 2: `task_out` is NULL or writable.
    unsafe { klp_core::enter_split(site, frame as usize, task_out.cast()) }
        .cast_mut()
        .cast()
}

/// Return from a patchable function entered with [`klp_enter`] at `frame`; `task` is
/// what `klp_enter` wrote to `*task_out` on this thread, or NULL (then looked up).
///
/// # Safety
///
/// 1. `task` is NULL or the value `klp_enter` gave on the calling thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_leave(frame: *mut c_void, task: *mut c_void) {
    // No guard, as in `klp_enter`: `leave_split` never unwinds.
    // SAFETY: clause 1.
    unsafe { klp_core::leave_split(task.cast_const().cast(), frame as usize) }
}

/// Forget the site `site` (the kernel's kallsyms lose a module's symbols when it is
/// unloaded): a patch enabled later no longer finds it. Called by the destructor (of
/// priority 101) that `KLP_PATCHABLE` defines, which runs after the object's
/// `klp_object_going` (a destructor of default priority), when a shared object is
/// closed or the program exits. Does nothing when `site` is NULL or not registered.
///
/// # Safety
///
/// 1. `site` is NULL or points to a `struct klp_site` of static storage duration that
///    is zero or was constructed by [`klp_site_register`].
/// 2. The site's object is not loaded (`klp_object_going` ran for it, or it is the main
///    program at exit).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_site_unregister(site: *mut klp_site) {
    guard((), || {
        if site.is_null() {
            return;
        }
        // SAFETY: clause 1: valid for reads of the whole storage.
        let bytes = unsafe { &(*site).opaque };
        if bytes.iter().all(|&b| b == 0) {
            // Never constructed.
            return;
        }
        // SAFETY: clause 1: constructed by `klp_site_register`, static storage.
        let s: &'static Site = unsafe { &*site.cast::<Site>() };
        s.unregister();
    });
}

/// Load the object `name` (the kernel's module load): every enabled patch with an
/// object of that name is applied to it, with its callbacks and the kernel's lines
/// (`applying patch '%s' to loading module '%s'`). Its sites must be registered.
///
/// Returns 0, `-EINVAL` (`name` NULL, empty, `MODULE_NAME_LEN` (56) bytes or longer,
/// or `vmlinux`), `-ENOENT` (not UTF-8: no patch can name it), `-EEXIST` (loaded
/// already), `-EDEADLK` (from a callback or log line of a control operation, or a
/// shadow constructor or destructor: the load needs what the caller holds) or the
/// negative errno of a patch that refused the object (its `pre_patch` failed; the
/// engine logs `patch '%s' failed for module '%s', refusing to load module '%s'`): the
/// object is then not loaded and its functions run their originals.
///
/// # Safety
///
/// 1. `name` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_object_load(name: *const c_char) -> c_int {
    guard(crate::KLP_ERROR_PANIC, || {
        // SAFETY: clause 1.
        let name = match unsafe { crate::str_arg(name) } {
            Ok(n) => n,
            Err(e) => return e,
        };
        // A name that no patch could give (the kernel's module names are short too).
        if name.is_empty() || name.len() >= klp_core::MODULE_NAME_LEN {
            return -crate::EINVAL;
        }
        if crate::control_would_deadlock() {
            return -crate::EDEADLK;
        }
        crate::module::object_module_prepare(name);
        match klp_core::load_object(name, || {}) {
            Ok(()) => {
                crate::patch::refresh_object_mod(name);
                0
            }
            Err(e) => e.errno(),
        }
    })
}

/// Unload the object `name` (the kernel's module unload): the patches applied to it
/// are reverted (`reverting patch '%s' on unloading module '%s'`). Returns 0,
/// `-EINVAL` (`name` NULL), `-ENOENT` (not loaded) or `-EDEADLK` (as
/// [`klp_object_load`]).
///
/// # Safety
///
/// 1. `name` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_object_unload(name: *const c_char) -> c_int {
    guard(crate::KLP_ERROR_PANIC, || {
        // SAFETY: clause 1.
        let name = match unsafe { crate::str_arg(name) } {
            Ok(n) => n,
            Err(e) => return e,
        };
        if crate::control_would_deadlock() {
            return -crate::EDEADLK;
        }
        match klp_core::unload_object(name, || {}) {
            Ok(()) => {
                crate::patch::refresh_object_mod(name);
                0
            }
            Err(e) => e.errno(),
        }
    })
}

/// The object `name` of a shared object is coming: called by the constructor that
/// `KLP_OBJECT` defines (of default priority, after the registration of the object's
/// sites), when the shared object is opened. The same as [`klp_object_load`].
///
/// A constructor cannot make `dlopen` fail: when a patch refuses the object (the
/// kernel refuses to load the module), the shared object stays open but is not loaded
/// as an object, and its patchable functions run their originals. The negative errno
/// is returned and recorded ([`klp_object_refused`]; the constructor ignores it, the
/// engine has logged the refusal).
///
/// # Safety
///
/// 1. `name` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_object_coming(name: *const c_char) -> c_int {
    // SAFETY: clause 1.
    let r = unsafe { klp_object_load(name) };
    guard((), || {
        // SAFETY: clause 1.
        if let Ok(name) = unsafe { crate::str_arg(name) } {
            let mut refused = refusals().lock().unwrap_or_else(|e| e.into_inner());
            let refused = refused.get_or_insert_with(HashMap::new);
            if r == 0 {
                refused.remove(name);
            } else if r != -crate::EEXIST && r != -crate::EINVAL {
                refused.insert(name.to_owned(), r);
            }
        }
    });
    r
}

/// Record the result `r` of loading the module `name` from a constructor (0 forgets an
/// earlier refusal), for [`klp_object_refused`].
pub(crate) fn record_refusal(name: &str, r: c_int) {
    let mut refused = refusals().lock().unwrap_or_else(|e| e.into_inner());
    let refused = refused.get_or_insert_with(HashMap::new);
    if r == 0 {
        refused.remove(name);
    } else if r != -crate::EEXIST {
        refused.insert(name.to_owned(), r);
    }
}

/// `fork` prepare: the refusals.
pub(crate) fn fork_prepare() {
    crate::fork_hold(refusals().lock().unwrap_or_else(|e| e.into_inner()));
}

/// The negative errnos of the objects whose `klp_object_coming` was refused, by name.
fn refusals() -> &'static Mutex<Option<HashMap<String, c_int>>> {
    static REFUSED: Mutex<Option<HashMap<String, c_int>>> = Mutex::new(None);
    crate::install_fork();
    &REFUSED
}

/// The negative errno with which a patch refused the object `name` at its last
/// `klp_object_coming` (its shared object is open, but the object is not loaded and its
/// functions run their originals); 0 when it was not refused (or never came),
/// `-EINVAL` when `name` is NULL.
///
/// # Safety
///
/// 1. `name` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_object_refused(name: *const c_char) -> c_int {
    guard(crate::KLP_ERROR_PANIC, || {
        // SAFETY: clause 1.
        let name = match unsafe { crate::str_arg(name) } {
            Ok(n) => n,
            Err(e) if e == -crate::EINVAL => return e,
            Err(_) => return 0,
        };
        let refused = refusals().lock().unwrap_or_else(|e| e.into_inner());
        refused
            .as_ref()
            .and_then(|m| m.get(name).copied())
            .unwrap_or(0)
    })
}

/// The object `name` of a shared object is going: called by the destructor that
/// `KLP_OBJECT` defines (of default priority, before the unregistration of the
/// object's sites), when the shared object is closed or the program exits. The patches
/// applied to it are reverted; nothing happens when it is not loaded (refused).
///
/// # Safety
///
/// 1. `name` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_object_going(name: *const c_char) {
    // SAFETY: clause 1.
    let _ = unsafe { klp_object_unload(name) };
}
