//! Every export of `include/klp.h` given bad input from C: `c-tests/bad_input.c`, built
//! against `libklp.a` and run under preempt and rcu. It checks each errno (the kernel's,
//! as the exports document them) and that nothing changed: the patch does not exist, the
//! function runs what it ran, the kernel's log line is printed or none is.

mod common;

use common::{cc, lib_dir, root, run, scratch};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

fn build(dir: &Path) -> PathBuf {
    let root = root();
    let lib = lib_dir().join("libklp.a");
    let include = root.join("include");
    let exe = dir.join("bad_input");
    cc(&[
        "-I".as_ref(),
        include.as_os_str(),
        root.join("c-tests/bad_input.c").as_os_str(),
        "-o".as_ref(),
        exe.as_os_str(),
        lib.as_os_str(),
        "-lpthread".as_ref(),
        "-ldl".as_ref(),
        "-lm".as_ref(),
    ]);
    exe
}

fn run_both(name: &str, args: &[&OsStr]) {
    let dir = scratch(name);
    let exe = build(&dir);
    for sync in ["preempt", "rcu"] {
        let out = run(&exe, args, Some(sync));
        assert!(out.ends_with("done\n"), "{sync}:\n{out}");
        assert!(!out.contains("FAILED"), "{sync}:\n{out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_export_given_bad_input_returns_its_errno_and_changes_nothing() {
    run_both("bad-input", &[]);
}
