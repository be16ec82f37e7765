//! Lifecycles that end while libklp still looks at them: a coroutine suspended inside a
//! replaced function, a shared object closed under a patch, a thread that exits while a
//! transition kicks it.
//!
//! * `c-tests/coroutine.c`: coroutines (ucontext) on stacks from malloc, below or above
//!   the thread's own: no switch while a replaced function is live on any of the
//!   thread's stacks, a call that returns under another stack's call does not stay live,
//!   an abandoned coroutine holds the transition until it is forced; also with the
//!   coroutines' stacks inside the mapping of the thread's stack, and in an array on it.
//! * `c-tests/plain_lib.c` with `c-tests/plain_main.c`: a shared object without
//!   `KLP_OBJECT` (its function is the main program's), closed while a patch of its
//!   function is enabled: it stays mapped until the patch is released, then is unmapped
//!   and can be opened again. Against `libklp.so` (both linked with `-lklp`) and against
//!   `libklp.a` (the program linked with `-rdynamic`, the shared object's klp symbols left
//!   undefined).
//! * `c-tests/kick_exit.c`: short-lived threads exit while a fast-retrying transition
//!   calls their kicks: no kick of a thread that has exited.
//!
//! Each program runs under preempt and rcu and prints `done` last. The compiler is `gcc`,
//! or `$CC`.

mod common;

use common::{cc, lib_dir, root, run, scratch};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// Build the C program `c-tests/<name>.c` into `dir`, against `libklp.a`.
fn build_c(dir: &Path, name: &str) -> PathBuf {
    let root = root();
    let exe = dir.join(name);
    let lib = lib_dir();
    cc(&[
        "-I".as_ref(),
        root.join("include").as_os_str(),
        root.join(format!("c-tests/{name}.c")).as_os_str(),
        "-o".as_ref(),
        exe.as_os_str(),
        lib.join("libklp.a").as_os_str(),
        "-lpthread".as_ref(),
        "-ldl".as_ref(),
        "-lm".as_ref(),
    ]);
    exe
}

/// Run `exe args` under both flavors; it prints `done` last.
fn run_both(exe: &Path, args: &[&OsStr]) {
    for sync in ["preempt", "rcu"] {
        let out = run(exe, args, Some(sync));
        assert!(
            !out.contains("FAILED") && out.ends_with("done\n"),
            "{} {args:?} ({sync}):\n{out}",
            exe.display()
        );
    }
}

fn coroutine(layout: &str) {
    let dir = scratch(&format!("coroutine-{layout}"));
    let exe = build_c(&dir, "coroutine");
    run_both(&exe, &[layout.as_ref()]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn coroutines_on_heap_stacks_never_switch_with_a_replaced_function_live() {
    coroutine("heap");
}

#[test]
fn coroutines_on_stacks_below_the_threads_never_switch_with_a_replaced_function_live() {
    coroutine("below");
}

#[test]
fn coroutines_on_stacks_above_the_threads_never_switch_with_a_replaced_function_live() {
    coroutine("above");
}

#[test]
fn coroutines_on_stacks_in_the_mapping_of_the_threads_never_switch_with_a_replaced_function_live() {
    coroutine("shared");
}

#[test]
fn coroutines_on_stacks_inside_the_threads_own_never_switch_with_a_replaced_function_live() {
    coroutine("local");
}

/// Build `plain_lib.c` as a shared object and `plain_main.c` into `dir`: against
/// `libklp.so` when `shared`, else against `libklp.a` with `-rdynamic`. Returns the
/// program and the shared object.
fn build_plain(dir: &Path, shared: bool) -> (PathBuf, PathBuf) {
    let root = root();
    let include = root.join("include");
    let lib = lib_dir();
    let so = dir.join("libplain_lib.so");
    let exe = dir.join("plain_main");
    let mut l = OsString::from("-L");
    l.push(dir);
    let mut rpath = OsString::from("-Wl,-rpath,");
    rpath.push(dir);
    let plain_lib = root.join("c-tests/plain_lib.c");
    let mut so_args: Vec<&OsStr> = vec![
        "-fPIC".as_ref(),
        "-shared".as_ref(),
        "-I".as_ref(),
        include.as_os_str(),
        plain_lib.as_os_str(),
        "-o".as_ref(),
        so.as_os_str(),
    ];
    let plain_main = root.join("c-tests/plain_main.c");
    let mut exe_args: Vec<&OsStr> = vec![
        "-I".as_ref(),
        include.as_os_str(),
        plain_main.as_os_str(),
        "-o".as_ref(),
        exe.as_os_str(),
    ];
    let static_lib = lib.join("libklp.a");
    if shared {
        std::fs::copy(lib.join("libklp.so"), dir.join("libklp.so")).unwrap();
        so_args.extend([l.as_os_str(), "-lklp".as_ref()]);
        exe_args.extend([
            l.as_os_str(),
            "-lklp".as_ref(),
            rpath.as_os_str(),
            "-ldl".as_ref(),
        ]);
    } else {
        // The klp symbols of the shared object stay undefined: the program exports them.
        exe_args.extend([
            static_lib.as_os_str(),
            "-rdynamic".as_ref(),
            "-lpthread".as_ref(),
            "-ldl".as_ref(),
            "-lm".as_ref(),
        ]);
    }
    cc(&so_args);
    cc(&exe_args);
    if shared {
        // Found at run time by its soname.
        std::fs::rename(dir.join("libklp.so"), dir.join("libklp.so.0")).unwrap();
    }
    (exe, so)
}

fn plain(shared: bool) {
    let dir = scratch(if shared {
        "plain-shared"
    } else {
        "plain-static"
    });
    let (exe, so) = build_plain(&dir, shared);
    run_both(&exe, &[so.as_os_str()]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_shared_object_without_an_object_closed_under_a_patch_stays_mapped_with_the_shared_library() {
    plain(true);
}

#[test]
fn a_shared_object_without_an_object_closed_under_a_patch_stays_mapped_with_the_static_library() {
    plain(false);
}

#[test]
fn a_thread_that_exits_is_never_kicked() {
    let dir = scratch("kick-exit");
    let exe = build_c(&dir, "kick_exit");
    run_both(&exe, &[]);
    let _ = std::fs::remove_dir_all(&dir);
}
