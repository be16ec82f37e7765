//! `struct klp_patch` and friends as C declares them, `klp_enable_patch`, the system
//! states and the callbacks' view of their object.
//!
//! The C structs belong to the program: like a kernel livepatch module's static
//! structs, they must stay valid and unchanged (but for `klp_state.data`, which is the
//! program's, and `klp_object.mod`, which libklp writes, as the kernel its internal
//! fields) from `klp_enable_patch` until the patch is disabled or replaced and
//! released (the program may free them once it no longer appears under that name).

use crate::module::{klp_module, module_get, module_ptr_for, module_put};
use crate::{EINVAL, KLP_ERROR_PANIC, engine, guard, status};
use klp_core::{Callbacks, Func, Object, ObjectCtx, Patch};
use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_int, c_uint, c_ulong, c_void};
use std::ptr;
use std::sync::{Arc, Mutex, mpsc};

/// One replaced function. Arrays of them end with an all-zero entry.
#[repr(C)]
pub struct klp_func {
    /// The name of the original function.
    pub old_name: *const c_char,
    /// The replacement, a function with the original's signature.
    pub new_func: *mut c_void,
    /// Which of several functions named `old_name` in the object (1-based, in the
    /// order of their registration); 0: the name must be unique.
    pub old_sympos: c_ulong,
    /// Internal, reserved: zero.
    pub klp_reserved: [*mut c_void; 4],
}

/// `pre_patch`: 0, or a negative errno that refuses the object (and fails the enable).
#[allow(non_camel_case_types)]
pub type klp_pre_patch_t = Option<unsafe extern "C" fn(obj: *mut klp_object) -> c_int>;

/// `post_patch`, `pre_unpatch`, `post_unpatch`.
#[allow(non_camel_case_types)]
pub type klp_object_callback_t = Option<unsafe extern "C" fn(obj: *mut klp_object)>;

/// The callbacks of an object, all optional. They run with libklp's control lock held,
/// on the thread that enables or disables, or on the transition's worker thread; they
/// may call [`klp_get_state`], [`klp_get_prev_state`] and [`klp_object_state`], and
/// must not enable, disable or force a patch.
#[repr(C)]
pub struct klp_callbacks {
    /// Before the object is patched.
    pub pre_patch: klp_pre_patch_t,
    /// After the object is patched (at the end of the transition).
    pub post_patch: klp_object_callback_t,
    /// Before the object is unpatched (at the start of the unpatching transition).
    pub pre_unpatch: klp_object_callback_t,
    /// After the object is unpatched.
    pub post_unpatch: klp_object_callback_t,
    /// Internal (the kernel's): libklp keeps its own and neither reads nor writes it.
    pub post_unpatch_enabled: bool,
}

/// One patched object: the main program (`name` NULL, `vmlinux`) or a named object.
/// Arrays of them end with an entry whose `name` and `funcs` are NULL.
#[repr(C)]
pub struct klp_object {
    /// The object's name, NULL for the main program.
    pub name: *const c_char,
    /// The replaced functions (not NULL), ending with an all-zero entry.
    pub funcs: *mut klp_func,
    /// The callbacks.
    pub callbacks: klp_callbacks,
    /// Internal (the kernel's): the object's module while it is loaded (written by
    /// libklp, with its `state`, before each callback of the object and when the object
    /// is loaded or unloaded), NULL for the main program and for an object that is not
    /// loaded. A module built with the compatibility headers is its own `struct module`;
    /// another object gets one of libklp's.
    pub r#mod: *mut klp_module,
    /// Internal, reserved: zero.
    pub klp_reserved: [*mut c_void; 3],
}

/// A system state. Arrays of them end with an entry whose `id` is 0.
#[repr(C)]
pub struct klp_state {
    /// Non-zero identifier.
    pub id: c_ulong,
    /// Compatibility version: a later patch may take the state over at the same or a
    /// higher version.
    pub version: c_uint,
    /// The program's (libklp never touches it).
    pub data: *mut c_void,
}

/// A livepatch.
#[repr(C)]
pub struct klp_patch {
    /// The patch's name: unique among the patches in use. NULL when `mod` names it.
    pub name: *const c_char,
    /// The patched objects, ending with an entry whose `name` and `funcs` are NULL.
    pub objs: *mut klp_object,
    /// The system states, ending with an entry whose `id` is 0; may be NULL.
    pub states: *mut klp_state,
    /// Atomic replace: a cumulative patch that replaces every patch before it.
    pub replace: bool,
    /// The livepatch module (`.mod = THIS_MODULE` with the compatibility headers), or
    /// NULL. When set, the patch's name is the module's (`name` is then NULL, or the
    /// same), the module must say `MODULE_INFO(livepatch, "Y")` (else `-EINVAL` and the
    /// kernel's line `module %s is not marked as a livepatch module`), and the patch
    /// holds a reference on the module from its enable until it is released: the
    /// module cannot be unloaded meanwhile (`klp_module_unload` returns `-EBUSY`).
    pub r#mod: *mut klp_module,
    /// Internal, reserved: zero.
    pub klp_reserved: [*mut c_void; 3],
}

/// `obj->mod->state` of a loaded named object: running.
pub const KLP_MODULE_STATE_LIVE: c_int = 0;
/// Being loaded.
pub const KLP_MODULE_STATE_COMING: c_int = 1;
/// Being unloaded.
pub const KLP_MODULE_STATE_GOING: c_int = 2;
/// Not loaded (yet, or any more): a module's state before its load and after its
/// unload.
pub const KLP_MODULE_STATE_UNFORMED: c_int = 3;

/// A C pointer that the engine's callbacks carry to other threads.
struct CPtr<T>(*mut T);
impl<T> Clone for CPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for CPtr<T> {}
// SAFETY: the pointed-to structs are the program's static patch structs, which
// klp_enable_patch's contract keeps valid and unchanged while the patch exists; they are
// only read (or handed back to the program's callbacks, whose thread safety is the
// program's).
unsafe impl<T> Send for CPtr<T> {}
// SAFETY: as for Send.
unsafe impl<T> Sync for CPtr<T> {}

/// The C patch structs of the patches in use, by name.
/// Each entry is the struct's address and the number of the enable that registered it
/// (the same struct may be enabled again before the release of its previous use).
static REG: Mutex<Option<HashMap<String, (usize, u64)>>> = Mutex::new(None);

fn registered<R>(f: impl FnOnce(&mut HashMap<String, (usize, u64)>) -> R) -> R {
    crate::install_fork();
    let mut g = REG.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(HashMap::new))
}

/// The C struct a patch in use was enabled with, if it was enabled from C.
#[doc(hidden)]
pub fn registered_patch(name: &str) -> *mut klp_patch {
    registered(|reg| {
        reg.get(name)
            .map_or(ptr::null_mut(), |&(p, _)| p as *mut klp_patch)
    })
}

/// The value in `m`, taken (the lock is not held afterwards).
fn take<T>(m: &Mutex<Option<T>>) -> Option<T> {
    m.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// The unmapping thread's queue.
static UNMAPPER: Mutex<Option<mpsc::Sender<Pins>>> = Mutex::new(None);

thread_local! {
    /// The calling thread holds `ENABLE` (its enable's callbacks and log lines run).
    static ENABLING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `fork` prepare: this file's locks, in the order `klp_enable_patch` takes them.
pub(crate) fn fork_prepare() {
    if !ENABLING.with(std::cell::Cell::get) {
        crate::fork_hold(ENABLE.lock().unwrap_or_else(|e| e.into_inner()));
    }
    crate::fork_hold(REG.lock().unwrap_or_else(|e| e.into_inner()));
    crate::fork_hold(UNMAPPER.lock().unwrap_or_else(|e| e.into_inner()));
}

/// `fork` child (locks released): the unmapping thread does not exist here; the
/// references queued for it stay (the objects stay mapped in the child).
pub(crate) fn fork_child() {
    if let Some(tx) = UNMAPPER.lock().unwrap_or_else(|e| e.into_inner()).take() {
        std::mem::forget(tx);
    }
}

/// References (`dlopen` handles) that keep the shared objects of a patch mapped.
struct Pins(Vec<usize>);

impl Pins {
    /// Drop the references, on a thread of their own: `dlclose` may run the objects'
    /// destructors and takes the loader's lock, which a thread inside `dlopen` (a patch
    /// enabling itself from its constructor, then waiting for its transition) may hold
    /// while it waits for the very thread that released this patch.
    fn release(self) {
        if self.0.is_empty() {
            return;
        }
        crate::install_fork();
        let mut tx = UNMAPPER.lock().unwrap_or_else(|e| e.into_inner());
        let tx = tx.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel::<Pins>();
            // Signals blocked: a program's handler never runs on the library's threads.
            klp_sync::spawn_service("klp-unmap", move || {
                for pins in rx {
                    for h in pins.0 {
                        // SAFETY: a handle of `dlopen` that nothing else closes.
                        unsafe { libc::dlclose(h as *mut c_void) };
                    }
                }
            })
            .expect("spawn the unmapping thread");
            tx
        });
        // The receiver lives as long as the process (the thread never exits).
        let _ = tx.send(self);
    }
}

/// The start of glibc's `struct link_map` (`<link.h>`), as `dladdr1` returns it.
#[repr(C)]
struct LinkMap {
    l_addr: usize,
    l_name: *const c_char,
}

/// `RTLD_DL_LINKMAP` of `dladdr1`.
const RTLD_DL_LINKMAP: c_int = 2;

/// The loaded object that holds `addr`: its link map, or NULL.
fn object_of(addr: *const c_void) -> *const LinkMap {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::uninit();
    let mut map: *mut c_void = ptr::null_mut();
    // SAFETY: dladdr1 only reads the address's mapping; both out-pointers are valid.
    let found = unsafe { libc::dladdr1(addr, info.as_mut_ptr(), &mut map, RTLD_DL_LINKMAP) };
    if found == 0 {
        ptr::null()
    } else {
        map.cast_const().cast()
    }
}

/// Take a reference on every shared object (not the main program, not libklp) that
/// holds `patch`'s structs, replacement functions or callbacks, or the sites of the
/// functions it patches in the main program's object: `dlopen` of a loaded object by
/// its own name with `RTLD_NOLOAD` counts one more user, so that the program's `dlclose`
/// does not unmap it while the patch can still run or its func stacks use the site.
///
/// # Safety
///
/// 1. `patch` passed [`convert`]: its arrays are valid and terminated.
unsafe fn pin_objects(patch: *mut klp_patch) -> Pins {
    let mut addrs: Vec<*const c_void> = vec![patch.cast_const().cast()];
    // SAFETY: clause 1.
    let p = unsafe { &*patch };
    addrs.push(p.objs.cast_const().cast());
    // SAFETY: clause 1.
    for o in unsafe { objects(p.objs) } {
        // SAFETY: clause 1.
        let o = unsafe { &*o };
        addrs.push(o.funcs.cast_const().cast());
        // SAFETY: clause 1.
        addrs.extend(unsafe { funcs(o.funcs) }.map(|f| f.new_func.cast_const()));
        // The functions it patches in the main program's object (vmlinux) may live in a
        // shared object without an object of its own: closing it would unmap a site the
        // patch uses (named objects are modules: closing one unpatches it instead).
        if o.name.is_null() {
            // SAFETY: clause 1.
            for f in unsafe { funcs(o.funcs) } {
                if f.old_name.is_null() {
                    continue;
                }
                // SAFETY: clause 1: a NUL-terminated name.
                let name = unsafe { CStr::from_ptr(f.old_name) }.to_string_lossy();
                #[allow(clippy::unnecessary_cast)]
                if let Some(site) = klp_core::lookup(None, &name, f.old_sympos as u64) {
                    addrs.push(std::ptr::from_ref(site).cast());
                }
            }
        }
        let c = &o.callbacks;
        addrs.extend(c.pre_patch.map(|f| f as *const c_void));
        for f in [c.post_patch, c.pre_unpatch, c.post_unpatch]
            .into_iter()
            .flatten()
        {
            addrs.push(f as *const c_void);
        }
    }
    let own = object_of(klp_enable_patch as *const c_void);
    let mut maps: Vec<*const LinkMap> = Vec::new();
    for a in addrs {
        let m = object_of(a);
        if !m.is_null() && m != own && !maps.contains(&m) {
            maps.push(m);
        }
    }
    let mut handles = Vec::new();
    for m in maps {
        // SAFETY: a link map of a loaded object, which the patch's structs keep loaded
        // for this call (clause 1 of klp_enable_patch).
        let name = unsafe { (*m).l_name };
        // SAFETY: l_name is a NUL-terminated string of the loader; the main program's is
        // empty.
        if name.is_null() || unsafe { *name } == 0 {
            continue;
        }
        // SAFETY: a NUL-terminated name; NOLOAD finds the loaded object by that name.
        let h = unsafe { libc::dlopen(name, libc::RTLD_LAZY | libc::RTLD_NOLOAD) };
        if !h.is_null() {
            handles.push(h as usize);
        }
    }
    Pins(handles)
}

/// Set `obj->mod` from the object's current state: its module while it is loaded, NULL
/// otherwise (and for the main program).
///
/// # Safety
///
/// 1. `obj` points to a valid `klp_object` whose `name` is NULL or a NUL-terminated
///    string.
unsafe fn set_loaded_mod(obj: *mut klp_object) {
    // SAFETY: clause 1.
    let name = unsafe { (*obj).name };
    let m = if name.is_null() {
        ptr::null_mut()
    } else {
        // SAFETY: clause 1.
        let n = unsafe { CStr::from_ptr(name) }.to_string_lossy();
        match klp_core::object_state(&n) {
            Some(st) => module_ptr_for(&n, st.as_raw()),
            None => ptr::null_mut(),
        }
    };
    // SAFETY: clause 1; the field is libklp's.
    unsafe { (*obj).r#mod = m };
}

/// The object `name` was loaded or unloaded: `obj->mod` of the objects of that name of
/// the C patches in use follows (the kernel sets it in `klp_module_coming` and clears it
/// in `klp_module_going`).
pub(crate) fn refresh_object_mod(name: &str) {
    let patches: Vec<usize> = registered(|reg| reg.values().map(|&(p, _)| p).collect());
    for p in patches {
        let p = p as *mut klp_patch;
        // SAFETY: a patch in use: its structs are valid (klp_enable_patch's clause 1)
        // and were checked by convert.
        for o in unsafe { objects((*p).objs) } {
            // SAFETY: as above.
            let oname = unsafe { (*o).name };
            // SAFETY: as above: NULL or NUL-terminated.
            if !oname.is_null() && unsafe { CStr::from_ptr(oname) }.to_bytes() == name.as_bytes() {
                // SAFETY: as above.
                unsafe { set_loaded_mod(o) };
            }
        }
    }
}

/// One enable at a time: the engine's states get their C struct before another patch
/// can see them through `klp_get_prev_state`.
static ENABLE: Mutex<()> = Mutex::new(());

/// A name of the C structs, as UTF-8 (`-EINVAL` when it is not).
///
/// # Safety
///
/// 1. `s` is not NULL and NUL-terminated, valid for the call.
unsafe fn name_arg<'a>(s: *const c_char) -> Result<&'a str, c_int> {
    // SAFETY: clause 1.
    unsafe { CStr::from_ptr(s) }.to_str().map_err(|_| -EINVAL)
}

/// The objects of `patch`, walked as §1.2 says.
///
/// # Safety
///
/// 1. `objs` is a valid array of objects ending with its terminator.
unsafe fn objects(objs: *mut klp_object) -> impl Iterator<Item = *mut klp_object> {
    (0..)
        .map(move |i| {
            // SAFETY: clause 1: up to and including the terminator.
            unsafe { objs.add(i) }
        })
        .take_while(|&o| {
            // SAFETY: clause 1.
            let o = unsafe { &*o };
            !o.funcs.is_null() || !o.name.is_null()
        })
}

/// The funcs of an object.
///
/// # Safety
///
/// 1. `funcs` is a valid array of funcs ending with its all-zero terminator.
unsafe fn funcs<'a>(funcs: *const klp_func) -> impl Iterator<Item = &'a klp_func> {
    (0..)
        .map(move |i| {
            // SAFETY: clause 1: up to and including the terminator.
            unsafe { &*funcs.add(i) }
        })
        .take_while(|f: &&klp_func| {
            !f.old_name.is_null() || !f.new_func.is_null() || f.old_sympos != 0
        })
}

/// The states of a patch (none for NULL).
///
/// # Safety
///
/// 1. `states` is NULL or a valid array ending with an entry whose id is 0.
unsafe fn states(states: *mut klp_state) -> impl Iterator<Item = *mut klp_state> {
    (0..)
        .map_while(move |i| {
            // SAFETY: clause 1: up to and including the terminator.
            (!states.is_null()).then(|| unsafe { states.add(i) })
        })
        .take_while(|&s| {
            // SAFETY: clause 1.
            unsafe { (*s).id != 0 }
        })
}

/// `obj->mod` as the kernel's callbacks see it: the object's module with its state, NULL
/// for the main program.
///
/// # Safety
///
/// 1. `obj` points to a `klp_object` of a patch in use (klp_enable_patch's clause 1).
unsafe fn set_obj_mod(obj: *mut klp_object, ctx: &ObjectCtx<'_>) {
    let m = match (ctx.object(), ctx.module_state()) {
        (Some(name), Some(st)) => module_ptr_for(name, st.as_raw()),
        _ => ptr::null_mut(),
    };
    // SAFETY: clause 1; the field is libklp's (the kernel's internal `mod`).
    unsafe { (*obj).r#mod = m };
}

/// The callbacks of `obj`, calling the C functions with the C object.
fn callbacks(c: &klp_callbacks, obj: *mut klp_object) -> Callbacks {
    let obj = CPtr(obj);
    let mut cb = Callbacks::new();
    if let Some(f) = c.pre_patch {
        cb = cb.pre_patch(move |ctx: &ObjectCtx<'_>| {
            let o = obj;
            // SAFETY: klp_enable_patch's clause 1: the object is valid while the patch
            // exists.
            unsafe { set_obj_mod(o.0, ctx) };
            // SAFETY: klp_enable_patch's clause 1: the callback may be called with its
            // object while the patch exists.
            match unsafe { f(o.0) } {
                0 => Ok(()),
                e => Err(e),
            }
        });
    }
    for (slot, f) in [(0, c.post_patch), (1, c.pre_unpatch), (2, c.post_unpatch)] {
        let Some(f) = f else { continue };
        let call = move |ctx: &ObjectCtx<'_>| {
            let o = obj;
            // SAFETY: as for pre_patch.
            unsafe { set_obj_mod(o.0, ctx) };
            // SAFETY: as for pre_patch.
            unsafe { f(o.0) }
        };
        cb = match slot {
            0 => cb.post_patch(call),
            1 => cb.pre_unpatch(call),
            _ => cb.post_unpatch(call),
        };
    }
    cb
}

/// The engine's patch for the C `patch`, checked as the kernel's `klp_enable_patch`
/// steps 1 and 2 and `klp_init_func` step 1 do.
///
/// # Safety
///
/// 1. As [`klp_enable_patch`] clause 1.
unsafe fn convert(patch: *mut klp_patch) -> Result<(Patch, String), c_int> {
    if patch.is_null() {
        return Err(-EINVAL);
    }
    // SAFETY: clause 1.
    let p = unsafe { &*patch };
    if (p.name.is_null() && p.r#mod.is_null()) || p.objs.is_null() {
        return Err(-EINVAL);
    }
    // SAFETY: clause 1: a terminated array.
    let objs: Vec<*mut klp_object> = unsafe { objects(p.objs) }.collect();
    // SAFETY: clause 1.
    if objs.iter().any(|&o| unsafe { (*o).funcs.is_null() }) {
        return Err(-EINVAL);
    }
    let name: String = if p.r#mod.is_null() {
        // SAFETY: clause 1: not NULL.
        unsafe { name_arg(p.name) }?.to_owned()
    } else {
        // SAFETY: clause 1: `mod` is a module of the compatibility headers.
        let Some(m) = (unsafe { crate::module::module_name(p.r#mod) }) else {
            return Err(-EINVAL);
        };
        if !p.name.is_null() {
            // SAFETY: clause 1: not NULL.
            if unsafe { name_arg(p.name) }? != m {
                return Err(-EINVAL);
            }
        }
        // The kernel's step 3 of klp_enable_patch.
        // SAFETY: clause 1.
        if !unsafe { crate::module::is_livepatch(p.r#mod) } {
            crate::log().emit(
                klp_core::log::Level::Err,
                format_args!("module {m} is not marked as a livepatch module"),
            );
            return Err(-EINVAL);
        }
        m
    };
    let name = name.as_str();
    let mut out = Patch::new(name).replace(p.replace);
    for &o in &objs {
        // SAFETY: clause 1.
        let c = unsafe { &*o };
        let mut obj = if c.name.is_null() {
            Object::vmlinux()
        } else {
            // SAFETY: clause 1: not NULL.
            Object::named(unsafe { name_arg(c.name) }?)
        };
        // SAFETY: clause 1: funcs is not NULL (checked) and terminated.
        for f in unsafe { funcs(c.funcs) } {
            if f.old_name.is_null() {
                return Err(-EINVAL);
            }
            // SAFETY: clause 1: not NULL. A name that is not UTF-8 is looked up as is
            // (lossily): it names nothing, and the engine says so as the kernel does.
            let old = unsafe { CStr::from_ptr(f.old_name) }.to_string_lossy();
            #[allow(clippy::unnecessary_cast)]
            let pos = f.old_sympos as u64;
            obj = obj.func(Func::raw(&old, f.new_func.cast_const().cast()).sympos(pos));
        }
        obj = obj.callbacks(callbacks(&c.callbacks, o));
        out = out.object(obj);
    }
    // SAFETY: clause 1: NULL or terminated.
    for s in unsafe { states(p.states) } {
        // SAFETY: clause 1.
        let s = unsafe { &*s };
        #[allow(clippy::unnecessary_cast)]
        let id = s.id as u64;
        out = out.state(id, s.version);
    }
    let name = name.to_owned();
    Ok((out, name))
}

/// `klp_enable_patch()`: check `patch`, resolve its functions, run the pre-patch
/// callbacks, patch, and start the patching transition (which completes in the
/// background; see `klp_wait_transition`). Returns 0 or the kernel's errno, with the
/// kernel's log lines:
///
/// * `-EINVAL`: `patch`, its name or its objects are NULL; an object's funcs are NULL;
///   a func's `old_name` or `new_func` is NULL; a name is too long or (patch or object
///   name) not UTF-8; a symbol is missing or ambiguous or its `old_sympos` out of
///   range; the patch's states are not compatible with the patches in use.
/// * `-EEXIST`: a patch of that name is in use; two objects or two funcs of one
///   object are the same.
/// * `-EBUSY`: another patch is in transition.
/// * the errno a `pre_patch` callback returned.
///
/// # Safety
///
/// 1. `patch` is NULL or points to a `struct klp_patch` whose arrays are terminated as
///    documented, with valid strings, replacement functions of the originals'
///    signatures and callbacks that may be called from any thread and do not unwind;
///    all of it stays valid and unchanged (but for `klp_state.data`, and
///    `klp_object.mod`, which libklp writes) until the patch has been disabled or
///    replaced and released, or the enable failed (like a kernel livepatch module's
///    static structs). `mod`, if not NULL, points to a `struct klp_module` that stays
///    valid as long.
#[cfg(target_arch = "x86_64")]
#[unsafe(no_mangle)]
#[unsafe(naked)]
pub unsafe extern "C" fn klp_enable_patch(patch: *mut klp_patch) -> c_int {
    // The caller's stack pointer, for the thread's own switch (see `forget_left_frames`).
    std::arch::naked_asm!("lea rsi, [rsp + 8]", "jmp {f}", f = sym enable_patch_sp)
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
pub unsafe extern "C" fn klp_enable_patch(patch: *mut klp_patch) -> c_int {
    let marker = 0u8;
    // SAFETY: the caller's contract.
    unsafe { enable_patch_sp(patch, std::ptr::from_ref(&marker) as usize) }
}

/// [`klp_enable_patch`] with its caller's stack pointer.
///
/// # Safety
///
/// 1. As [`klp_enable_patch`] clause 1.
unsafe extern "C" fn enable_patch_sp(patch: *mut klp_patch, sp: usize) -> c_int {
    guard(KLP_ERROR_PANIC, || {
        if crate::control_would_deadlock() {
            return -crate::EDEADLK;
        }
        // The engine first: it is never created under this function's lock.
        let e = engine();
        crate::forget_left_frames(sp);
        // SAFETY: clause 1 is convert's.
        let (p, name) = match unsafe { convert(patch) } {
            Ok(p) => p,
            Err(e) => return e,
        };
        // The kernel's try_module_get(patch->mod).
        // SAFETY: clause 1.
        let module = unsafe { (*patch).r#mod };
        let referenced = match module_get(module) {
            Ok(r) => r,
            Err(e) => return e,
        };
        let module = referenced.then_some(module as usize);
        static ENABLES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let me = (
            patch as usize,
            ENABLES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        let release_name = name.clone();
        // The shared objects holding the patch's code and structs stay mapped until the
        // patch is released (the kernel's module reference); a forced patch is never
        // released, so they stay mapped for good.
        // SAFETY: clause 1: the structs are valid and terminated (convert checked them).
        let pins = Arc::new(Mutex::new(Some(unsafe { pin_objects(patch) })));
        let release_pins = Arc::clone(&pins);
        let p = p.on_release(move || {
            registered(|reg| {
                if reg.get(&release_name) == Some(&me) {
                    reg.remove(&release_name);
                }
            });
            if let Some(m) = module {
                module_put(m);
            }
            if let Some(pins) = take(&release_pins) {
                pins.release();
            }
        });
        let _one = ENABLE.lock().unwrap_or_else(|e| e.into_inner());
        ENABLING.with(|e| e.set(true));
        struct Done;
        impl Drop for Done {
            fn drop(&mut self) {
                ENABLING.with(|e| e.set(false));
            }
        }
        let _done = Done;
        let previous = registered(|reg| reg.insert(name.clone(), me));
        // The kernel's klp_init_object: obj->mod of the loaded named objects.
        // SAFETY: clause 1: terminated arrays (convert checked them).
        for o in unsafe { objects((*patch).objs) } {
            // SAFETY: clause 1.
            unsafe { set_loaded_mod(o) };
        }
        let r = e.enable(p);
        if r.is_err() {
            if let Some(m) = module {
                module_put(m);
            }
            if let Some(pins) = take(&pins) {
                pins.release();
            }
            registered(|reg| match previous {
                Some(prev) => {
                    reg.insert(name, prev);
                }
                None => {
                    if reg.get(&name) == Some(&me) {
                        reg.remove(&name);
                    }
                }
            });
            return status(r);
        }
        // The engine's states point back to the C structs (their `data` is free: the C
        // struct holds the program's).
        // SAFETY: clause 1.
        for s in unsafe { states((*patch).states) } {
            // SAFETY: clause 1.
            #[allow(clippy::unnecessary_cast)]
            let id = unsafe { (*s).id } as u64;
            if let Some(st) = e.get_state(&name, id)
                && st.data().is_null()
            {
                st.set_data(s.cast());
            }
        }
        0
    })
}

/// `klp_get_state(patch, id)`: the first state of `patch` with `id`, or NULL (also for
/// a NULL `patch` or id 0).
///
/// # Safety
///
/// 1. `patch` is NULL or a `struct klp_patch` whose `states` is NULL or terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_get_state(patch: *mut klp_patch, id: c_ulong) -> *mut klp_state {
    guard(ptr::null_mut(), || {
        if patch.is_null() || id == 0 {
            return ptr::null_mut();
        }
        // SAFETY: clause 1.
        unsafe { states((*patch).states) }
            // SAFETY: clause 1.
            .find(|&s| unsafe { (*s).id } == id)
            .unwrap_or(ptr::null_mut())
    })
}

/// `klp_get_prev_state(id)`: the state `id` of the newest patch in use before the one
/// in transition (from a callback, or while a transition runs), or NULL (with the
/// kernel's warning when no transition is in progress). Only states of patches enabled
/// with [`klp_enable_patch`] are found.
#[unsafe(no_mangle)]
pub extern "C" fn klp_get_prev_state(id: c_ulong) -> *mut klp_state {
    guard(ptr::null_mut(), || {
        #[allow(clippy::unnecessary_cast)]
        let id = id as u64;
        engine()
            .get_prev_state(id)
            .map_or(ptr::null_mut(), |s| s.data().cast())
    })
}

/// The module state of `obj`'s object: `KLP_MODULE_STATE_LIVE` for the main program
/// (`name` NULL) and for a loaded object, `KLP_MODULE_STATE_COMING` or
/// `KLP_MODULE_STATE_GOING` while it is being loaded or unloaded; `-ENOENT` when it is
/// not loaded, `-EINVAL` for a NULL `obj` or a name that is not UTF-8.
///
/// # Safety
///
/// 1. `obj` is NULL or points to a `struct klp_object` whose `name` is NULL or a
///    NUL-terminated string, valid for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn klp_object_state(obj: *const klp_object) -> c_int {
    guard(KLP_ERROR_PANIC, || {
        if obj.is_null() {
            return -EINVAL;
        }
        // SAFETY: clause 1.
        let name = unsafe { (*obj).name };
        if name.is_null() {
            return KLP_MODULE_STATE_LIVE;
        }
        // SAFETY: clause 1: not NULL.
        match unsafe { name_arg(name) } {
            Ok(n) => klp_core::object_state(n).map_or(-crate::ENOENT, |s| s.as_raw()),
            Err(e) => e,
        }
    })
}
