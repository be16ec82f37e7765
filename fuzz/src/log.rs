//! libklp's log during fuzzing: quiet, but lines of the kernel's warning kind (`WARNING`,
//! `BUG`) are kept, and a target fails on them.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::{Mutex, Once};

static BAD_LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

unsafe extern "C" fn on_log(_level: c_int, line: *const c_char, _data: *mut c_void) {
    // SAFETY: libklp passes a valid NUL-terminated line.
    let line = unsafe { CStr::from_ptr(line) }.to_string_lossy();
    if line.contains("WARNING") || line.contains("BUG") {
        BAD_LINES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line.into_owned());
    }
}

/// Send libklp's log to the recorder (once per process).
pub fn quiet() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a handler callable from any thread, concurrently, that does not unwind.
        unsafe { klp::klp_set_log_handler(Some(on_log), std::ptr::null_mut()) };
    });
}

/// Forget the lines recorded so far.
pub fn clear() {
    BAD_LINES.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// Panic if a warning-kind line was logged since [`clear`].
pub fn assert_clean() {
    let bad = std::mem::take(&mut *BAD_LINES.lock().unwrap_or_else(|e| e.into_inner()));
    assert!(bad.is_empty(), "warnings in the log: {bad:#?}");
}
