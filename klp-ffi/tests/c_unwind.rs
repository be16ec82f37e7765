//! Leaving patchable C functions without returning: `c-tests/longjmp.c` (longjmp out of
//! them, nested too), `c-tests/cxx_exception.cpp` with `c-tests/cxx_exception_lib.c` (a
//! C++ exception through them; the C built with `-fexceptions`, the program with g++ or
//! `$CXX`) and `c-tests/cancel.c` (pthread_cancel inside them); `c-tests/altstack.c`:
//! a switch point in a signal handler on an alternate stack above the thread's frames
//! forgets none of them. Each is built against
//! `libklp.a` and run under preempt and rcu; it checks that the thread still switches
//! and that the transition completes, and that a thread really inside holds it up.
//!
//! The longjmp and C++ programs take the switch point as an argument: `call` (the next
//! patchable call), `update` (`klp_update_patch_state()`) or `park` (none: the thread
//! must be switched while parked: `klp_park` forgets the functions its caller left).

mod common;

use common::{cc, lib_dir, root, run, scratch};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

fn link_args(lib: &Path) -> Vec<std::ffi::OsString> {
    vec![
        lib.join("libklp.a").into(),
        "-lpthread".into(),
        "-ldl".into(),
        "-lm".into(),
    ]
}

/// Build the C program `c-tests/<name>.c` into `dir`.
fn build_c(dir: &Path, name: &str) -> PathBuf {
    let root = root();
    let exe = dir.join(name);
    let mut args: Vec<std::ffi::OsString> = vec![
        "-I".into(),
        root.join("include").into(),
        root.join(format!("c-tests/{name}.c")).into(),
        "-o".into(),
        exe.clone().into(),
    ];
    args.extend(link_args(&lib_dir()));
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    cc(&args);
    exe
}

/// Build `cxx_exception.cpp` (C++, `$CXX` or g++) with `cxx_exception_lib.c` (C with
/// `-fexceptions`) into `dir`.
/// Build the C++ program, or `None` (said on standard error) when there is no C++
/// compiler: the project promises only a C compiler.
fn build_cxx(dir: &Path) -> Option<PathBuf> {
    let root = root();
    let include = root.join("include");
    let obj = dir.join("cxx_exception_lib.o");
    cc(&[
        "-fexceptions".as_ref(),
        "-c".as_ref(),
        "-I".as_ref(),
        include.as_os_str(),
        root.join("c-tests/cxx_exception_lib.c").as_os_str(),
        "-o".as_ref(),
        obj.as_os_str(),
    ]);
    let exe = dir.join("cxx_exception");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".to_owned());
    if Command::new(&cxx).arg("--version").output().is_err() {
        eprintln!("SKIPPED: no C++ compiler ({cxx}); set CXX to test C++ exceptions");
        return None;
    }
    let out = Command::new(&cxx)
        .args(["-Wall", "-Wextra", "-Werror", "-O2", "-I"])
        .arg(&include)
        .arg(root.join("c-tests/cxx_exception.cpp"))
        .arg(&obj)
        .arg("-o")
        .arg(&exe)
        .args(link_args(&lib_dir()))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cxx}: {e}"));
    assert!(
        out.status.success(),
        "{cxx} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(exe)
}

/// Run `exe mode` under both flavors; it prints `done` last.
fn run_both(exe: &Path, mode: Option<&str>) {
    let args: Vec<&OsStr> = mode.iter().map(OsStr::new).collect();
    for sync in ["preempt", "rcu"] {
        let out = run(exe, &args, Some(sync));
        assert!(
            out.ends_with("done\n"),
            "{} {mode:?} ({sync}):\n{out}",
            exe.display()
        );
        assert!(!out.contains("FAILED"), "{out}");
    }
}

fn longjmp(mode: &str) {
    let dir = scratch(&format!("longjmp-{mode}"));
    let exe = build_c(&dir, "longjmp");
    run_both(&exe, Some(mode));
    let _ = std::fs::remove_dir_all(&dir);
}

fn cxx(mode: &str) {
    let dir = scratch(&format!("cxx-{mode}"));
    if let Some(exe) = build_cxx(&dir) {
        run_both(&exe, Some(mode));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn longjmp_out_of_patchable_functions_then_a_patchable_call_switches() {
    longjmp("call");
}

#[test]
fn longjmp_out_of_patchable_functions_then_klp_update_patch_state_switches() {
    longjmp("update");
}

#[test]
fn longjmp_out_of_patchable_functions_then_parking_lets_the_thread_switch() {
    longjmp("park");
}

#[test]
fn a_cxx_exception_through_patchable_functions_then_a_patchable_call_switches() {
    cxx("call");
}

#[test]
fn a_cxx_exception_through_patchable_functions_then_klp_update_patch_state_switches() {
    cxx("update");
}

#[test]
fn a_cxx_exception_through_patchable_functions_then_parking_lets_the_thread_switch() {
    cxx("park");
}

#[test]
fn a_cancelled_thread_does_not_hold_a_transition_up() {
    let dir = scratch("cancel");
    let exe = build_c(&dir, "cancel");
    run_both(&exe, None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_switch_point_on_an_alternate_signal_stack_keeps_the_live_frames() {
    let dir = scratch("altstack");
    let exe = build_c(&dir, "altstack");
    run_both(&exe, None);
    let _ = std::fs::remove_dir_all(&dir);
}
