//! Every entry point given bad input, the error texts, the flavor choice after first use,
//! the thread calls, and the shadow variables through the C functions (with the kernel's
//! constructor and destructor timing). Nothing here patches or sets the log handler, so
//! the tests may run in parallel; each uses its own shadow ids.

use klp::*;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;
use std::sync::Mutex;

use klp_core::libc_errno;

const EINVAL: c_int = -libc_errno::EINVAL;
const ENOENT: c_int = -libc_errno::ENOENT;
const EBUSY: c_int = -libc_errno::EBUSY;

fn text(p: *const c_char) -> String {
    assert!(!p.is_null());
    // SAFETY: libklp returns static NUL-terminated strings.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned()
}

#[test]
fn version_is_the_crate_version() {
    assert_eq!(text(klp_version()), env!("CARGO_PKG_VERSION"));
    assert_eq!(klp_version(), klp_version(), "a static string");
}

#[test]
fn every_code_has_a_text_and_others_are_unknown() {
    let codes = [0, -22, -16, -19, -2, -17, -12, -110, KLP_ERROR_PANIC];
    let texts: Vec<String> = codes.iter().map(|&c| text(klp_strerror(c))).collect();
    for (c, t) in codes.iter().zip(&texts) {
        assert_ne!(t, "unknown error", "code {c}");
    }
    let mut unique = texts.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), texts.len(), "distinct texts: {texts:?}");
    assert_eq!(text(klp_strerror(0)), "success");
    for c in [1, -1, -5, -4095, -4097, i32::MIN, i32::MAX] {
        assert_eq!(text(klp_strerror(c)), "unknown error", "code {c}");
    }
    const {
        assert!(
            KLP_ERROR_PANIC < -4095,
            "library codes are out of the errno range"
        )
    };
}

#[test]
fn a_bad_flavor_is_einval_and_any_flavor_after_first_use_ebusy() {
    assert_eq!(klp_set_sync(2), EINVAL);
    assert_eq!(klp_set_sync(-1), EINVAL);
    // First use (if no other test made the engine already).
    assert_eq!(klp_thread_patch_state(), -1);
    assert_eq!(klp_set_sync(KLP_SYNC_RCU), EBUSY);
    assert_eq!(klp_set_sync(KLP_SYNC_PREEMPT), EBUSY);
    assert_eq!(klp_set_sync(5), EINVAL, "EINVAL comes first");
    if std::env::var_os("KLP_SYNC").is_none() {
        assert_eq!(engine().flavor_name(), "preempt", "the default");
    }
}

#[test]
fn null_patch_names_are_einval() {
    // SAFETY: NULL is allowed (clause 1 of each).
    unsafe {
        assert_eq!(klp_patch_enabled(ptr::null()), EINVAL);
        assert_eq!(klp_patch_set_enabled(ptr::null(), 0), EINVAL);
        assert_eq!(klp_patch_set_enabled(ptr::null(), 1), EINVAL);
        assert_eq!(klp_patch_transition(ptr::null()), EINVAL);
        assert_eq!(klp_patch_force(ptr::null()), EINVAL);
        assert_eq!(klp_patch_replace(ptr::null()), EINVAL);
        assert_eq!(klp_patch_stack_order(ptr::null()), EINVAL);
        assert_eq!(klp_object_patched(ptr::null(), ptr::null()), EINVAL);
        assert_eq!(klp_object_patched(ptr::null(), c"vmlinux".as_ptr()), EINVAL);
        assert_eq!(klp_object_patched(ptr::null(), c"\xff".as_ptr()), EINVAL);
    }
}

#[test]
fn unknown_patches_are_enoent() {
    let not_utf8 = c"\xff\xfe".as_ptr();
    for name in [c"nope".as_ptr(), c"".as_ptr(), not_utf8] {
        // SAFETY: NUL-terminated static strings.
        unsafe {
            assert_eq!(klp_patch_enabled(name), ENOENT);
            assert_eq!(klp_patch_set_enabled(name, 0), ENOENT);
            assert_eq!(klp_patch_set_enabled(name, 1), ENOENT);
            assert_eq!(klp_patch_transition(name), ENOENT);
            assert_eq!(klp_patch_force(name), ENOENT);
            assert_eq!(klp_patch_replace(name), ENOENT);
            assert_eq!(klp_patch_stack_order(name), ENOENT);
            assert_eq!(klp_object_patched(name, ptr::null()), ENOENT);
            assert_eq!(klp_object_patched(name, c"vmlinux".as_ptr()), ENOENT);
            assert_eq!(klp_object_patched(name, not_utf8), ENOENT);
        }
    }
}

#[test]
fn without_a_transition_waiting_returns_at_once() {
    assert_eq!(klp_wait_transition(0), 0);
    assert_eq!(klp_wait_transition(u32::MAX), 0);
}

static KICKED: Mutex<usize> = Mutex::new(0);

unsafe extern "C" fn kick(data: *mut c_void) {
    assert_eq!(data as usize, 0x5a);
    *KICKED.lock().unwrap() += 1;
}

#[test]
fn thread_calls_outside_any_transition() {
    klp_park();
    klp_unpark();
    klp_update_patch_state();
    assert_eq!(klp_thread_patch_state(), -1);
    // SAFETY: `kick` is thread-safe and does not unwind (clause 1).
    unsafe {
        assert_eq!(klp_set_thread_kick(Some(kick), 0x5a as *mut c_void), 0);
        assert_eq!(klp_set_thread_kick(None, ptr::null_mut()), 0);
    }
    assert_eq!(*KICKED.lock().unwrap(), 0, "no transition kicked anyone");
}

// ---------------------------------------------------------------------------------------
// Shadow variables.

/// What the callbacks saw: (callback, obj, data, ctor_data).
static CALLS: Mutex<Vec<(&'static str, usize, usize, usize)>> = Mutex::new(Vec::new());

fn calls_of(obj: usize) -> Vec<(&'static str, usize, usize, usize)> {
    let mut c = CALLS.lock().unwrap();
    let (mine, rest): (Vec<_>, Vec<_>) = c.drain(..).partition(|x| x.1 == obj);
    *c = rest;
    mine
}

/// Copies a u64 from `ctor_data`; fails with -EEXIST when it is 0xbad.
unsafe extern "C" fn ctor(obj: *mut c_void, data: *mut c_void, ctor_data: *mut c_void) -> c_int {
    // SAFETY: the tests pass a u64 as ctor_data, and 8-byte variables.
    let v = unsafe { *ctor_data.cast::<u64>() };
    // SAFETY: the new data is zeroed (the kernel's kzalloc).
    assert_eq!(unsafe { *data.cast::<u64>() }, 0, "zeroed before the ctor");
    CALLS
        .lock()
        .unwrap()
        .push(("ctor", obj as usize, data as usize, ctor_data as usize));
    if v == 0xbad {
        return -17;
    }
    // SAFETY: 8 bytes of data.
    unsafe { *data.cast::<u64>() = v };
    0
}

unsafe extern "C" fn dtor(obj: *mut c_void, data: *mut c_void) {
    // SAFETY: 8 bytes, intact until reclaimed.
    let v = unsafe { *data.cast::<u64>() };
    CALLS
        .lock()
        .unwrap()
        .push(("dtor", obj as usize, data as usize, v as usize));
}

fn alloc(obj: usize, id: u64, v: &mut u64) -> *mut c_void {
    // SAFETY: `ctor` reads a u64 from ctor_data, writes 8 bytes (clause 1).
    unsafe {
        klp_shadow_alloc(
            obj as *mut c_void,
            id as _,
            8,
            GFP_KERNEL,
            Some(ctor),
            ptr::from_mut(v).cast(),
        )
    }
}

fn get_or_alloc(obj: usize, id: u64, v: &mut u64) -> *mut c_void {
    // SAFETY: as in `alloc`.
    unsafe {
        klp_shadow_get_or_alloc(
            obj as *mut c_void,
            id as _,
            8,
            GFP_ATOMIC,
            Some(ctor),
            ptr::from_mut(v).cast(),
        )
    }
}

fn free(obj: usize, id: u64) {
    // SAFETY: `dtor` reads 8 bytes (clause 1).
    unsafe { klp_shadow_free(obj as *mut c_void, id as _, Some(dtor)) }
}

fn value(p: *mut c_void) -> u64 {
    // SAFETY: an 8-byte variable nobody frees meanwhile.
    unsafe { *p.cast::<u64>() }
}

#[test]
fn shadow_alloc_get_free_with_the_kernels_callback_timing() {
    let (obj, id) = (0x1000usize, 101u64);
    let mut v = 7u64;
    let p = alloc(obj, id, &mut v);
    assert!(!p.is_null());
    assert_eq!(value(p), 7);
    let vp = ptr::from_mut(&mut v) as usize;
    assert_eq!(calls_of(obj), [("ctor", obj, p as usize, vp)]);
    assert_eq!(klp_shadow_get(obj as *mut c_void, id as _), p);
    assert!(klp_shadow_get(obj as *mut c_void, (id + 1) as _).is_null());
    assert!(klp_shadow_get((obj + 1) as *mut c_void, id as _).is_null());

    // A duplicate: NULL, the constructor does not run, the variable is unchanged.
    let mut other = 8u64;
    assert!(alloc(obj, id, &mut other).is_null());
    assert_eq!(calls_of(obj), []);
    // get_or_alloc returns the existing variable without constructing.
    assert_eq!(get_or_alloc(obj, id, &mut other), p);
    assert_eq!(calls_of(obj), []);
    assert_eq!(value(p), 7);

    free(obj, id);
    assert_eq!(calls_of(obj), [("dtor", obj, p as usize, 7)]);
    assert!(klp_shadow_get(obj as *mut c_void, id as _).is_null());
    // A missing pair is ignored: no destructor.
    free(obj, id);
    assert_eq!(calls_of(obj), []);

    // get_or_alloc constructs when there is none.
    let q = get_or_alloc(obj, id, &mut other);
    assert!(!q.is_null());
    assert_eq!(value(q), 8);
    assert_eq!(calls_of(obj).len(), 1);
    // SAFETY: NULL destructor.
    unsafe { klp_shadow_free(obj as *mut c_void, id as _, None) };
    assert_eq!(calls_of(obj), []);
    assert!(klp_shadow_get(obj as *mut c_void, id as _).is_null());
}

#[test]
fn a_failing_constructor_attaches_nothing() {
    let (obj, id) = (0x2000usize, 102u64);
    let mut bad = 0xbadu64;
    assert!(alloc(obj, id, &mut bad).is_null());
    assert_eq!(calls_of(obj).len(), 1, "the constructor ran");
    assert!(klp_shadow_get(obj as *mut c_void, id as _).is_null());
    assert!(get_or_alloc(obj, id, &mut bad).is_null());
    assert!(klp_shadow_get(obj as *mut c_void, id as _).is_null());
    calls_of(obj);
}

#[test]
fn free_all_frees_every_object_of_an_id_and_only_those() {
    let id = 103u64;
    let objs = [0x3000usize, 0x3008, 0x3010];
    for (i, &o) in objs.iter().enumerate() {
        let mut v = i as u64 + 1;
        assert!(!alloc(o, id, &mut v).is_null());
        calls_of(o);
    }
    let mut v = 9u64;
    let keep = alloc(objs[0], id + 1, &mut v);
    assert!(!keep.is_null());
    calls_of(objs[0]);
    // SAFETY: `dtor` reads 8 bytes (clause 1).
    unsafe { klp_shadow_free_all(id as _, Some(dtor)) };
    for (i, &o) in objs.iter().enumerate() {
        let c = calls_of(o);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!((c[0].0, c[0].1, c[0].3), ("dtor", o, i + 1));
        assert!(klp_shadow_get(o as *mut c_void, id as _).is_null());
    }
    assert_eq!(klp_shadow_get(objs[0] as *mut c_void, (id + 1) as _), keep);
    free(objs[0], id + 1);
    calls_of(objs[0]);
}

#[test]
fn null_is_an_object_key_like_any_other() {
    let id = 104u64;
    let mut v = 5u64;
    let p = alloc(0, id, &mut v);
    assert!(!p.is_null());
    assert_eq!(klp_shadow_get(ptr::null_mut(), id as _), p);
    free(0, id);
    assert_eq!(calls_of(0).len(), 2, "ctor and dtor, with obj NULL");
    assert!(klp_shadow_get(ptr::null_mut(), id as _).is_null());
}

static NESTED: Mutex<Option<usize>> = Mutex::new(None);

/// A constructor that calls `klp_shadow_alloc` on the store whose lock it runs under:
/// libklp panics inside (it would deadlock), and the inner call's guard returns NULL.
unsafe extern "C" fn nesting_ctor(obj: *mut c_void, _data: *mut c_void, _cd: *mut c_void) -> c_int {
    // SAFETY: no constructor.
    let inner = unsafe { klp_shadow_alloc(obj, 106, 8, GFP_KERNEL, None, ptr::null_mut()) };
    *NESTED.lock().unwrap() = Some(inner as usize);
    0
}

#[test]
fn a_panic_inside_libklp_becomes_an_error_value() {
    let obj = 0x5000 as *mut c_void;
    // SAFETY: `nesting_ctor` does not unwind (clause 1).
    let p =
        unsafe { klp_shadow_alloc(obj, 105, 8, GFP_KERNEL, Some(nesting_ctor), ptr::null_mut()) };
    assert!(!p.is_null(), "the outer allocation succeeds");
    assert_eq!(
        *NESTED.lock().unwrap(),
        Some(0),
        "the nested one returned NULL"
    );
    assert!(klp_shadow_get(obj, 106).is_null());
    // SAFETY: no destructor.
    unsafe { klp_shadow_free(obj, 105, None) };
    assert!(klp_shadow_get(obj, 105).is_null());
}
