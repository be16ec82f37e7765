//! `fork()` in a C program whose threads use libklp: `c-tests/fork.c`, built against
//! `libklp.a` and against `libklp.so` (through its soname), each mode run under preempt
//! and rcu. The child, one copy of the forking thread, must patch, unpatch, synchronize
//! and wait; the parent must go on doing the same. The modes:
//!
//! * `idle`: the main thread forks while other threads call patched functions, one is
//!   parked and one waits for grace periods back to back;
//! * `mid`: it forks while a transition waits for a thread running inside a replaced
//!   function: the transition completes in the child, and in the parent once the thread
//!   returns;
//! * `inside`: the main thread forks from inside a replaced function during the transition
//!   (it switches once it returns, in both processes), then a thread other than main forks
//!   while two threads make patched calls;
//! * `callback`: `post_patch` and `post_unpatch` callbacks fork, with the control lock held
//!   by the forking thread: both processes finish the operation;
//! * `control`: the main thread forks again and again while another thread enables and
//!   disables a patch and two threads make calls;
//! * `kick`: a thread other than main forks while the transition worker runs its kick; in
//!   the child that thread then returns from its start routine, and its exit must complete;
//! * `first`: a thread makes the process's first libklp call while the main thread forks.
//!
//! The program checks a child by its exit status; an alarm in each process, and a bounded
//! wait for a child whose exit would not hear it, turn a hang into a failure.

mod common;

use common::{cc, lib_dir, root, run, scratch};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// Build `c-tests/fork.c` into `dir`, against `libklp.a` (`shared` false) or against a
/// copy of `libklp.so` in `dir`, found at run time by its soname.
fn build(dir: &Path, shared: bool) -> PathBuf {
    let root = root();
    let lib = lib_dir();
    let exe = dir.join(if shared { "fork_shared" } else { "fork_static" });
    let mut args: Vec<OsString> = vec![
        "-I".into(),
        root.join("include").into(),
        root.join("c-tests/fork.c").into(),
        "-o".into(),
        exe.clone().into(),
    ];
    if shared {
        std::fs::copy(lib.join("libklp.so"), dir.join("libklp.so")).unwrap();
        let mut l = OsString::from("-L");
        l.push(dir);
        let mut rpath = OsString::from("-Wl,-rpath,");
        rpath.push(dir);
        args.extend([l, "-lklp".into(), rpath, "-lpthread".into()]);
    } else {
        args.extend([
            lib.join("libklp.a").into(),
            "-lpthread".into(),
            "-ldl".into(),
            "-lm".into(),
        ]);
    }
    let args: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
    cc(&args);
    if shared {
        std::fs::rename(dir.join("libklp.so"), dir.join("libklp.so.0")).unwrap();
    }
    exe
}

/// Build against both libraries and run `mode` under both flavors; the program prints
/// `done` last.
fn fork_mode(mode: &str) {
    let dir = scratch(&format!("fork-{mode}"));
    for shared in [false, true] {
        let exe = build(&dir, shared);
        for sync in ["preempt", "rcu"] {
            let out = run(&exe, &[OsStr::new(mode)], Some(sync));
            assert!(
                out.ends_with("done\n") && !out.contains("FAILED"),
                "{} {mode} ({sync}):\n{out}",
                exe.display()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_child_forked_beside_running_parked_and_synchronizing_threads_patches_and_synchronizes() {
    fork_mode("idle");
}

#[test]
fn a_transition_in_progress_at_the_fork_completes_in_the_child_and_in_the_parent() {
    fork_mode("mid");
}

#[test]
fn a_fork_from_inside_a_replaced_function_or_from_another_thread_switches_normally() {
    fork_mode("inside");
}

#[test]
fn a_fork_from_a_callback_finishes_the_operation_in_both_processes() {
    fork_mode("callback");
}

#[test]
fn forks_while_another_thread_enables_and_disables_a_patch() {
    fork_mode("control");
}

#[test]
fn a_fork_during_the_forking_threads_kick_lets_the_thread_exit_in_the_child() {
    fork_mode("kick");
}

#[test]
fn a_fork_during_another_threads_first_libklp_call_leaves_the_child_working() {
    fork_mode("first");
}
