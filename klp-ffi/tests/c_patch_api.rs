//! `klp_enable_patch` and the C patch structs from Rust: bad input (NULL everywhere,
//! arrays that look unterminated), the conversion of funcs, sympos, objects, callbacks
//! and states, `klp_get_state`, `klp_get_prev_state` from a callback, `klp_object_state`,
//! and C sites (`klp_site_register`, `klp_enter`, `klp_leave`). The tests share the
//! process engine, so they run one at a time.

use klp::*;
use klp_core::{libc_errno, patchable};
use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;
use std::sync::Mutex;

const EINVAL: c_int = -libc_errno::EINVAL;
const ENOENT: c_int = -libc_errno::ENOENT;
const EEXIST: c_int = -libc_errno::EEXIST;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn wait() {
    assert_eq!(klp_wait_transition(10_000), 0);
}

fn zero_func() -> klp_func {
    func(ptr::null(), ptr::null_mut(), 0)
}

fn func(old_name: *const c_char, new_func: *mut c_void, old_sympos: u64) -> klp_func {
    klp_func {
        old_name,
        new_func,
        old_sympos: old_sympos as _,
        klp_reserved: [ptr::null_mut(); 4],
    }
}

fn no_callbacks() -> klp_callbacks {
    klp_callbacks {
        pre_patch: None,
        post_patch: None,
        pre_unpatch: None,
        post_unpatch: None,
        post_unpatch_enabled: false,
    }
}

fn object(name: *const c_char, funcs: *mut klp_func, callbacks: klp_callbacks) -> klp_object {
    klp_object {
        name,
        funcs,
        callbacks,
        r#mod: ptr::null_mut(),
        klp_reserved: [ptr::null_mut(); 3],
    }
}

fn zero_object() -> klp_object {
    object(ptr::null(), ptr::null_mut(), no_callbacks())
}

fn state(id: u64, version: u32) -> klp_state {
    klp_state {
        id: id as _,
        version,
        data: ptr::null_mut(),
    }
}

/// Static storage for C structs: leaked, like a module's static arrays.
fn leak<T>(v: Vec<T>) -> *mut T {
    Box::leak(v.into_boxed_slice()).as_mut_ptr()
}

fn patch(name: &'static CStr, objs: *mut klp_object, states: *mut klp_state) -> *mut klp_patch {
    Box::leak(Box::new(klp_patch {
        name: name.as_ptr(),
        objs,
        states,
        replace: false,
        r#mod: ptr::null_mut(),
        klp_reserved: [ptr::null_mut(); 3],
    }))
}

patchable! {
    fn ffi_answer(x: u32) -> u32 { x }
}

extern "C" fn ffi_answer_v2(x: u32) -> u32 {
    x + 100
}

extern "C" fn replacement_noop(x: u32) -> u32 {
    x
}

#[test]
fn null_and_unterminated_looking_input_is_einval() {
    let _s = serial();
    // SAFETY: (every call below) the structs are valid, terminated, and leaked.
    unsafe {
        assert_eq!(klp_enable_patch(ptr::null_mut()), EINVAL);
        let funcs = leak(vec![
            func(c"ffi_answer".as_ptr(), ffi_answer_v2 as *mut c_void, 0),
            zero_func(),
        ]);
        let objs = leak(vec![
            object(ptr::null(), funcs, no_callbacks()),
            zero_object(),
        ]);

        // NULL name, NULL objs.
        let p = patch(c"bad_null", objs, ptr::null_mut());
        (*p).name = ptr::null();
        assert_eq!(klp_enable_patch(p), EINVAL);
        let p = patch(c"bad_null", ptr::null_mut(), ptr::null_mut());
        assert_eq!(klp_enable_patch(p), EINVAL);

        // An object with a name but no funcs is an entry, and refused.
        let objs2 = leak(vec![
            object(ptr::null(), funcs, no_callbacks()),
            object(c"libx.so".as_ptr(), ptr::null_mut(), no_callbacks()),
            zero_object(),
        ]);
        assert_eq!(
            klp_enable_patch(patch(c"bad_obj", objs2, ptr::null_mut())),
            EINVAL
        );

        // A func with new_func but no old_name is an entry, and refused; so are a func
        // with only old_sympos and a func with no new_func.
        for f in [
            func(ptr::null(), ffi_answer_v2 as *mut c_void, 0),
            func(ptr::null(), ptr::null_mut(), 1),
            func(c"ffi_answer".as_ptr(), ptr::null_mut(), 0),
        ] {
            let funcs = leak(vec![f, zero_func()]);
            let objs = leak(vec![
                object(ptr::null(), funcs, no_callbacks()),
                zero_object(),
            ]);
            assert_eq!(
                klp_enable_patch(patch(c"bad_func", objs, ptr::null_mut())),
                EINVAL
            );
        }

        // Names that are not UTF-8.
        let bad: &'static CStr = c"bad\xff";
        assert_eq!(klp_enable_patch(patch(bad, objs, ptr::null_mut())), EINVAL);
        let objs3 = leak(vec![
            object(bad.as_ptr(), funcs, no_callbacks()),
            zero_object(),
        ]);
        assert_eq!(
            klp_enable_patch(patch(c"bad_utf8", objs3, ptr::null_mut())),
            EINVAL
        );

        // A symbol that does not exist (the engine's check and errno).
        let funcs = leak(vec![
            func(
                c"no_such_function".as_ptr(),
                ffi_answer_v2 as *mut c_void,
                0,
            ),
            zero_func(),
        ]);
        let objs = leak(vec![
            object(ptr::null(), funcs, no_callbacks()),
            zero_object(),
        ]);
        assert_eq!(
            klp_enable_patch(patch(c"bad_sym", objs, ptr::null_mut())),
            EINVAL
        );

        // Nothing was left behind.
        for n in [
            c"bad_null",
            c"bad_obj",
            c"bad_func",
            c"bad_utf8",
            c"bad_sym",
        ] {
            assert_eq!(klp_patch_enabled(n.as_ptr()), ENOENT);
            assert!(registered_patch(n.to_str().unwrap()).is_null());
        }

        // The state and object queries.
        assert!(klp_get_state(ptr::null_mut(), 1).is_null());
        let p = patch(c"q", objs, ptr::null_mut());
        assert!(klp_get_state(p, 1).is_null(), "no states");
        assert_eq!(klp_object_state(ptr::null()), EINVAL);
        let vmlinux = zero_object();
        assert_eq!(klp_object_state(&vmlinux), KLP_MODULE_STATE_LIVE);
        let absent = object(c"libabsent.so".as_ptr(), ptr::null_mut(), no_callbacks());
        assert_eq!(klp_object_state(&absent), ENOENT);
        assert!(klp_get_prev_state(1).is_null(), "no transition");
    }
}

static CALLS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static PREV: Mutex<Vec<usize>> = Mutex::new(Vec::new());

fn record(what: &str, obj: *mut klp_object) {
    // SAFETY: the engine passes the object given in the patch.
    let name = unsafe { (*obj).name };
    let name = if name.is_null() {
        "vmlinux".to_owned()
    } else {
        // SAFETY: a valid C string.
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned()
    };
    CALLS.lock().unwrap().push(format!("{what} {name}"));
}

unsafe extern "C" fn pre_patch(obj: *mut klp_object) -> c_int {
    record("pre_patch", obj);
    PREV.lock().unwrap().push(klp_get_prev_state(1) as usize);
    0
}

unsafe extern "C" fn post_patch(obj: *mut klp_object) {
    record("post_patch", obj);
}

unsafe extern "C" fn pre_unpatch(obj: *mut klp_object) {
    record("pre_unpatch", obj);
}

unsafe extern "C" fn post_unpatch(obj: *mut klp_object) {
    record("post_unpatch", obj);
}

unsafe extern "C" fn refuse(obj: *mut klp_object) -> c_int {
    record("refuse", obj);
    -libc_errno::ENODEV
}

fn all_callbacks() -> klp_callbacks {
    klp_callbacks {
        pre_patch: Some(pre_patch),
        post_patch: Some(post_patch),
        pre_unpatch: Some(pre_unpatch),
        post_unpatch: Some(post_unpatch),
        post_unpatch_enabled: false,
    }
}

#[test]
fn a_c_patch_is_converted_with_its_objects_callbacks_and_states() {
    let _s = serial();
    CALLS.lock().unwrap().clear();
    PREV.lock().unwrap().clear();
    assert_eq!(ffi_answer(1), 1);
    // SAFETY: (every call below) the structs are valid, terminated, and leaked.
    unsafe {
        let funcs = leak(vec![
            func(c"ffi_answer".as_ptr(), ffi_answer_v2 as *mut c_void, 0),
            zero_func(),
        ]);
        let mod_funcs = leak(vec![
            func(c"mod_fn".as_ptr(), replacement_noop as *mut c_void, 0),
            zero_func(),
        ]);
        let objs = leak(vec![
            object(ptr::null(), funcs, all_callbacks()),
            object(c"libffi_absent.so".as_ptr(), mod_funcs, all_callbacks()),
            zero_object(),
        ]);
        let mut data = 5u32;
        let states1 = leak(vec![state(1, 1), state(2, 3), state(0, 9), state(4, 4)]);
        (*states1).data = (&raw mut data).cast();
        let p1 = patch(c"conv1", objs, states1);
        assert_eq!(klp_enable_patch(p1), 0);
        wait();
        assert_eq!(ffi_answer(1), 101);
        assert_eq!(registered_patch("conv1"), p1);
        assert_eq!(klp_object_patched(c"conv1".as_ptr(), ptr::null()), 1);
        assert_eq!(
            klp_object_patched(c"conv1".as_ptr(), c"libffi_absent.so".as_ptr()),
            0,
            "not loaded"
        );
        assert_eq!(klp_get_state(p1, 2), states1.add(1));
        assert!(klp_get_state(p1, 4).is_null(), "after the terminator");
        assert!(klp_get_state(p1, 0).is_null());
        // The same name again.
        assert_eq!(
            klp_enable_patch(patch(c"conv1", objs, ptr::null_mut())),
            EEXIST
        );
        assert_eq!(registered_patch("conv1"), p1, "still the first one");

        // A second patch sees the first one's state from its pre_patch callback; the
        // engine's state maps back to the C struct.
        let funcs2 = leak(vec![
            func(c"ffi_answer".as_ptr(), replacement_noop as *mut c_void, 0),
            zero_func(),
        ]);
        let objs2 = leak(vec![
            object(ptr::null(), funcs2, all_callbacks()),
            zero_object(),
        ]);
        let states2 = leak(vec![state(1, 2), state(0, 0)]);
        let p2 = patch(c"conv2", objs2, states2);
        assert_eq!(klp_enable_patch(p2), 0);
        wait();
        assert_eq!(ffi_answer(1), 1, "the newest patch wins");
        assert_eq!(*PREV.lock().unwrap(), vec![0, states1 as usize]);
        assert_eq!(*(*states1).data.cast::<u32>(), 5);

        // A pre_patch that refuses: its errno.
        let objs3 = leak(vec![
            object(
                ptr::null(),
                funcs,
                klp_callbacks {
                    pre_patch: Some(refuse),
                    ..no_callbacks()
                },
            ),
            zero_object(),
        ]);
        let p3 = patch(c"conv3", objs3, ptr::null_mut());
        assert_eq!(klp_enable_patch(p3), -libc_errno::ENODEV);
        assert!(registered_patch("conv3").is_null());

        for n in [c"conv2", c"conv1"] {
            assert_eq!(klp_patch_set_enabled(n.as_ptr(), 0), 0);
            wait();
        }
        assert_eq!(ffi_answer(1), 1);
        for n in ["conv1", "conv2"] {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !registered_patch(n).is_null() {
                assert!(std::time::Instant::now() < deadline, "{n} released");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
    assert_eq!(
        *CALLS.lock().unwrap(),
        [
            "pre_patch vmlinux",
            "post_patch vmlinux",
            "pre_patch vmlinux",
            "post_patch vmlinux",
            "refuse vmlinux",
            "pre_unpatch vmlinux",
            "post_unpatch vmlinux",
            "pre_unpatch vmlinux",
            "post_unpatch vmlinux",
        ]
    );
}

// C sites, as KLP_PATCHABLE makes them: two static functions of one name.
static mut TWIN_A: klp_site = klp_site {
    opaque: [0; KLP_SITE_BYTES],
};
static mut TWIN_B: klp_site = klp_site {
    opaque: [0; KLP_SITE_BYTES],
};

extern "C" fn twin_a(x: u32) -> u32 {
    x + 1
}

extern "C" fn twin_b(x: u32) -> u32 {
    x + 2
}

extern "C" fn twin_v2(x: u32) -> u32 {
    x + 1000
}

/// What `KLP_PATCHABLE`'s wrapper does.
fn call_site(site: *mut klp_site, x: u32) -> u32 {
    let marker = 0u8;
    let frame = (&raw const marker).cast_mut().cast::<c_void>();
    // SAFETY: a registered site whose implementations have this signature.
    unsafe {
        let mut task = std::ptr::null_mut();
        let f = klp_enter(site, frame, &mut task);
        assert!(!task.is_null());
        let f: extern "C" fn(u32) -> u32 = std::mem::transmute(f);
        let r = f(x);
        // Every other call looks the task up again.
        klp_leave(
            frame,
            if x.is_multiple_of(2) {
                task
            } else {
                std::ptr::null_mut()
            },
        );
        std::hint::black_box(&marker);
        r
    }
}

#[test]
fn c_sites_register_and_are_told_apart_by_sympos() {
    let _s = serial();
    let a = &raw mut TWIN_A;
    let b = &raw mut TWIN_B;
    // SAFETY: static zeroed storage; static strings; functions of one signature.
    unsafe {
        klp_site_register(a, ptr::null(), c"ffi_twin".as_ptr(), twin_a as *mut c_void);
        klp_site_register(b, ptr::null(), c"ffi_twin".as_ptr(), twin_b as *mut c_void);
        // Again: nothing happens.
        klp_site_register(a, ptr::null(), c"ffi_twin".as_ptr(), twin_a as *mut c_void);
        // NULLs: nothing happens.
        klp_site_register(
            ptr::null_mut(),
            ptr::null(),
            c"x".as_ptr(),
            twin_a as *mut c_void,
        );
    }
    assert_eq!(call_site(a, 1), 2);
    assert_eq!(call_site(b, 1), 3);
    // SAFETY: the structs are valid, terminated, and leaked.
    unsafe {
        let funcs = leak(vec![
            func(c"ffi_twin".as_ptr(), twin_v2 as *mut c_void, 0),
            zero_func(),
        ]);
        let objs = leak(vec![
            object(ptr::null(), funcs, no_callbacks()),
            zero_object(),
        ]);
        assert_eq!(
            klp_enable_patch(patch(c"twin0", objs, ptr::null_mut())),
            EINVAL,
            "ambiguous"
        );
        let funcs = leak(vec![
            func(c"ffi_twin".as_ptr(), twin_v2 as *mut c_void, 2),
            zero_func(),
        ]);
        let objs = leak(vec![
            object(ptr::null(), funcs, no_callbacks()),
            zero_object(),
        ]);
        assert_eq!(klp_enable_patch(patch(c"twin2", objs, ptr::null_mut())), 0);
        wait();
        assert_eq!(call_site(a, 1), 2);
        assert_eq!(call_site(b, 1), 1001);
        assert_eq!(klp_patch_set_enabled(c"twin2".as_ptr(), 0), 0);
        wait();
        assert_eq!(call_site(b, 1), 3);
    }
}
