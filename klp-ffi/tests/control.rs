//! The control functions and the log handler on patches enabled through the process
//! engine (there is no `klp_enable_patch` yet): every attribute, every errno of the
//! writes, a transition held up by a parked thread, force, atomic replace, and the log
//! lines with their levels.
//!
//! Patchable functions are process-wide and the log handler is too, so the tests of this
//! file run one at a time.

use klp::*;
use klp_core::libc_errno::{EBUSY, EINVAL, ENOENT, ETIMEDOUT};
use klp_core::{Func, KlpError, Object, Patch, park, patchable, unpark};
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    engine().set_retry_period(Duration::from_millis(5));
    g
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

// Thin safe wrappers: every pointer passed is a valid C string.
fn enabled(p: &str) -> c_int {
    // SAFETY: a valid C string (clause 1).
    unsafe { klp_patch_enabled(c(p).as_ptr()) }
}
fn set_enabled(p: &str, v: c_int) -> c_int {
    // SAFETY: a valid C string (clause 1).
    unsafe { klp_patch_set_enabled(c(p).as_ptr(), v) }
}
fn transition(p: &str) -> c_int {
    // SAFETY: a valid C string (clause 1).
    unsafe { klp_patch_transition(c(p).as_ptr()) }
}
fn force(p: &str) -> c_int {
    // SAFETY: a valid C string (clause 1).
    unsafe { klp_patch_force(c(p).as_ptr()) }
}
fn replace(p: &str) -> c_int {
    // SAFETY: a valid C string (clause 1).
    unsafe { klp_patch_replace(c(p).as_ptr()) }
}
fn stack_order(p: &str) -> c_int {
    // SAFETY: a valid C string (clause 1).
    unsafe { klp_patch_stack_order(c(p).as_ptr()) }
}
/// `klp_patch_list` into a buffer of `len` bytes (filled with 0xff first): its return
/// value and the buffer.
fn list(len: usize) -> (c_int, Vec<u8>) {
    let mut buf = vec![0xffu8; len];
    let p = if len == 0 {
        ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    };
    // SAFETY: NULL with 0, or a buffer of `len` bytes (clause 1).
    (unsafe { klp_patch_list(p, len) }, buf)
}
fn patched(p: &str, o: Option<&str>) -> c_int {
    let o = o.map(c);
    // SAFETY: valid C strings or NULL (clauses 1, 2).
    unsafe {
        klp_object_patched(
            c(p).as_ptr(),
            o.as_ref().map_or(ptr::null(), |o| o.as_ptr()),
        )
    }
}

fn wait() {
    assert_eq!(klp_wait_transition(20_000), 0, "the transition completes");
}

patchable! {
    fn f_add(x: u32) -> u32 { x + 1 }
}
fn f_add_2(x: u32) -> u32 {
    x + 2
}
fn f_add_3(x: u32) -> u32 {
    x + 3
}

fn add_patch(name: &str, f: fn(u32) -> u32) -> Patch {
    Patch::new(name).object(Object::vmlinux().func(Func::new("f_add", f)))
}

#[test]
fn attributes_and_writes_of_an_enabled_patch() {
    let _s = serial();
    engine().enable(add_patch("c_basic", f_add_2)).unwrap();
    wait();
    assert_eq!(f_add(1), 3);
    assert_eq!(enabled("c_basic"), 1);
    assert_eq!(transition("c_basic"), 0);
    assert_eq!(replace("c_basic"), 0);
    assert_eq!(stack_order("c_basic"), 1);
    assert_eq!(patched("c_basic", None), 1);
    assert_eq!(patched("c_basic", Some("vmlinux")), 1);
    assert_eq!(patched("c_basic", Some("some_module")), -ENOENT);
    assert_eq!(patched("c_other", None), -ENOENT);
    // Writes that change nothing: the kernel's -EINVAL.
    assert_eq!(force("c_basic"), -EINVAL, "not in transition");
    assert_eq!(set_enabled("c_basic", 1), -EINVAL, "already enabled");
    assert_eq!(set_enabled("c_other", 0), -ENOENT);
    assert_eq!(klp_thread_patch_state(), -1, "no transition");

    // A second patch stacks on top.
    engine().enable(add_patch("c_top", f_add_3)).unwrap();
    wait();
    assert_eq!(f_add(1), 4);
    assert_eq!(stack_order("c_basic"), 1);
    assert_eq!(stack_order("c_top"), 2);
    // The directory listing, in stack order; a short buffer is left alone.
    let both = b"c_basic\0c_top\0\0";
    assert_eq!(list(0).0, both.len() as c_int);
    assert_eq!(
        list(both.len() - 1),
        (both.len() as c_int, vec![0xff; both.len() - 1])
    );
    let (n, buf) = list(both.len() + 2);
    assert_eq!(n, both.len() as c_int);
    assert_eq!(&buf[..both.len()], both);
    // SAFETY: NULL with a length: refused before any write.
    assert_eq!(unsafe { klp_patch_list(ptr::null_mut(), 4) }, -EINVAL);
    assert_eq!(set_enabled("c_top", 0), 0);
    wait();
    assert_eq!(enabled("c_top"), -ENOENT, "a disabled patch is gone");
    assert_eq!(f_add(1), 3);

    assert_eq!(set_enabled("c_basic", 0), 0);
    wait();
    assert_eq!(f_add(1), 2);
    assert_eq!(enabled("c_basic"), -ENOENT);
    assert_eq!(set_enabled("c_basic", 0), -ENOENT);
    assert_eq!(list(1), (1, vec![0]), "no patch: the empty list");
}

// A function that a thread blocks (parked) inside, holding a transition up.
static GATE: Mutex<Option<mpsc::Receiver<()>>> = Mutex::new(None);
static INSIDE: AtomicBool = AtomicBool::new(false);

patchable! {
    fn f_block() -> u32 {
        let rx = GATE.lock().unwrap().take();
        INSIDE.store(true, Ordering::SeqCst);
        if let Some(rx) = rx {
            park();
            let _ = rx.recv();
            unpark();
        }
        INSIDE.store(false, Ordering::SeqCst);
        1
    }
}
fn f_block_2() -> u32 {
    2
}
fn f_block_3() -> u32 {
    3
}

/// A thread blocked inside `f_block` until the returned sender is dropped.
fn blocked_thread() -> (std::thread::JoinHandle<u32>, mpsc::Sender<()>) {
    let (tx, rx) = mpsc::channel();
    *GATE.lock().unwrap() = Some(rx);
    let h = std::thread::spawn(f_block);
    while !INSIDE.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    (h, tx)
}

fn block_patch(name: &str, f: fn() -> u32) -> Patch {
    Patch::new(name).object(Object::vmlinux().func(Func::new("f_block", f)))
}

#[test]
fn a_held_transition_times_out_reverses_and_is_forced() {
    let _s = serial();
    engine().enable(add_patch("c_base", f_add_2)).unwrap();
    wait();
    let (h, release) = blocked_thread();
    engine().enable(block_patch("c_stuck", f_block_2)).unwrap();
    assert_eq!(transition("c_stuck"), 1);
    assert_eq!(enabled("c_stuck"), 1);
    assert_eq!(
        patched("c_stuck", None),
        1,
        "patched as soon as the transition starts"
    );
    assert_eq!(klp_wait_transition(30), -ETIMEDOUT);
    assert_eq!(transition("c_stuck"), 1);
    // Another patch meanwhile: -EBUSY, for enable and for writes to other patches.
    assert_eq!(
        engine().enable(add_patch("c_while", f_add_2)),
        Err(KlpError::Busy)
    );
    assert_eq!(enabled("c_while"), -ENOENT);
    assert_eq!(set_enabled("c_base", 0), -EBUSY);
    assert_eq!(enabled("c_base"), 1);
    // A thread that is not stuck runs the patch, and is patched.
    assert_eq!(f_block(), 2);
    assert_eq!(klp_thread_patch_state(), 1);
    // Reverse: enabled 0 during the patching transition; then reverse again.
    assert_eq!(set_enabled("c_stuck", 0), 0);
    assert_eq!(enabled("c_stuck"), 0);
    assert_eq!(transition("c_stuck"), 1);
    assert_eq!(set_enabled("c_stuck", 0), -EINVAL, "already disabling");
    assert_eq!(set_enabled("c_stuck", 1), 0);
    assert_eq!(enabled("c_stuck"), 1);
    // Force completes it.
    assert_eq!(force("c_stuck"), 0);
    assert_eq!(klp_wait_transition(20_000), 0);
    assert_eq!(transition("c_stuck"), 0);
    assert_eq!(force("c_stuck"), -EINVAL, "no longer in transition");
    assert_eq!(klp_thread_patch_state(), -1);
    drop(release);
    assert_eq!(
        h.join().unwrap(),
        1,
        "the blocked call finishes in the original"
    );
    assert_eq!(f_block(), 2);

    // Atomic replace: the new patch takes over and the old one goes.
    assert_eq!(replace("c_stuck"), 0);
    engine()
        .enable(block_patch("c_replace", f_block_3).replace(true))
        .unwrap();
    wait();
    assert_eq!(replace("c_replace"), 1);
    assert_eq!(f_block(), 3);
    assert_eq!(enabled("c_stuck"), -ENOENT, "replaced patches are freed");
    assert_eq!(enabled("c_base"), -ENOENT);
    assert_eq!(
        f_add(1),
        2,
        "a replace patch reverts what it does not patch"
    );
    assert_eq!(stack_order("c_replace"), 1);
    assert_eq!(set_enabled("c_replace", 0), 0);
    wait();
    assert_eq!(f_block(), 1);
    assert_eq!(enabled("c_replace"), -ENOENT);
}

static LINES: Mutex<Vec<(c_int, String, usize)>> = Mutex::new(Vec::new());

unsafe extern "C" fn handler(level: c_int, line: *const c_char, data: *mut c_void) {
    // SAFETY: libklp passes a NUL-terminated line valid for the call.
    let line = unsafe { CStr::from_ptr(line) }.to_str().unwrap().to_owned();
    LINES.lock().unwrap().push((level, line, data as usize));
}

#[test]
fn the_log_handler_receives_every_line_with_its_level() {
    let _s = serial();
    // SAFETY: `handler` is thread-safe and does not unwind (clause 1).
    let r = unsafe { klp_set_log_handler(Some(handler), 0x77 as *mut c_void) };
    assert_eq!(r, 0);
    engine().enable(add_patch("c_log", f_add_2)).unwrap();
    wait();
    assert_eq!(set_enabled("c_log", 1), -EINVAL);
    assert_eq!(set_enabled("c_log", 0), 0);
    wait();
    // A warning: a duplicate shadow variable.
    let obj = 0x9000 as *mut c_void;
    // SAFETY: no constructor, no destructor.
    unsafe {
        assert!(!klp_shadow_alloc(obj, 0x6b, 8, GFP_KERNEL, None, ptr::null_mut()).is_null());
        assert!(klp_shadow_alloc(obj, 0x6b, 8, GFP_KERNEL, None, ptr::null_mut()).is_null());
        klp_shadow_free(obj, 0x6b, None);
    }
    // SAFETY: NULL restores the default.
    assert_eq!(unsafe { klp_set_log_handler(None, ptr::null_mut()) }, 0);
    let lines = std::mem::take(&mut *LINES.lock().unwrap());
    assert!(
        lines.iter().all(|l| l.2 == 0x77),
        "data passed back: {lines:?}"
    );
    let has = |level: c_int, text: &str| lines.iter().any(|l| l.0 == level && l.1 == text);
    assert!(
        has(KLP_LOG_NOTICE, "livepatch: enabling patch 'c_log'"),
        "{lines:?}"
    );
    assert!(
        has(
            KLP_LOG_NOTICE,
            "livepatch: 'c_log': starting patching transition"
        ),
        "{lines:?}"
    );
    assert!(
        has(
            KLP_LOG_DEBUG,
            "livepatch: 'c_log': initializing patching transition"
        ),
        "debug lines reach the handler too: {lines:?}"
    );
    assert!(
        has(KLP_LOG_NOTICE, "livepatch: 'c_log': patching complete"),
        "{lines:?}"
    );
    assert!(
        has(KLP_LOG_NOTICE, "livepatch: 'c_log': unpatching complete"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.0 == KLP_LOG_WARNING
            && l.1.starts_with("livepatch: Duplicate shadow variable <")
            && l.1.ends_with(", 6b>")),
        "{lines:?}"
    );
    let levels = [
        KLP_LOG_ERR,
        KLP_LOG_WARNING,
        KLP_LOG_NOTICE,
        KLP_LOG_INFO,
        KLP_LOG_DEBUG,
    ];
    assert!(lines.iter().all(|l| levels.contains(&l.0)), "{lines:?}");
    // After the reset, nothing more reaches the handler.
    engine().enable(add_patch("c_log2", f_add_2)).unwrap();
    wait();
    assert_eq!(set_enabled("c_log2", 0), 0);
    wait();
    assert!(LINES.lock().unwrap().is_empty());
}
