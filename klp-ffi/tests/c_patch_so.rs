//! Patches as shared objects: `c-tests/patch_mod.c` is a livepatch module that enables
//! its patch from its constructor; `c-tests/patch_so_main.c` opens it, closes it while
//! the patch is enabled (the replacement keeps running: libklp holds the object), and
//! disables the patch, after which the object is unmapped (its destructor runs) and can
//! be opened again. In the `forced` mode the unpatching transition is forced past a
//! thread sleeping in the replacement; the program closes the module and wakes the
//! thread, which returns through the module's code: the object stays mapped for good.
//!
//! Linked both ways: program and module against `libklp.so`, and the program against
//! `libklp.a` with `-rdynamic`, the module's klp symbols resolved from it.

mod common;

use common::{cc, lib_dir, root, run, scratch};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

const EXPECTED_RELEASE: &str = "original greeting
% insmod patch_mod
livepatch: enabling patch 'patch_mod'
livepatch: 'patch_mod': starting patching transition
livepatch: 'patch_mod': patching complete
patch_mod: init 0
patched greeting
dlclose while enabled
patched greeting
% echo 0 > /sys/kernel/livepatch/patch_mod/enabled
livepatch: 'patch_mod': starting unpatching transition
livepatch: 'patch_mod': unpatching complete
original greeting
patch_mod: exit
unmapped
% insmod patch_mod
livepatch: enabling patch 'patch_mod'
livepatch: 'patch_mod': starting patching transition
livepatch: 'patch_mod': patching complete
patch_mod: init 0
patched greeting
% echo 0 > /sys/kernel/livepatch/patch_mod/enabled
livepatch: 'patch_mod': starting unpatching transition
livepatch: 'patch_mod': unpatching complete
% rmmod patch_mod
patch_mod: exit
unmapped
";

/// The module's exit runs only when the program exits (the loader's own teardown).
const EXPECTED_FORCED: &str = "original greeting
% insmod patch_mod
livepatch: enabling patch 'patch_mod'
livepatch: 'patch_mod': starting patching transition
livepatch: 'patch_mod': patching complete
patch_mod: init 0
patched greeting
% echo 0 > /sys/kernel/livepatch/patch_mod/enabled
livepatch: 'patch_mod': starting unpatching transition
% echo 1 > /sys/kernel/livepatch/patch_mod/force
livepatch: forcing remaining tasks to the patched state
livepatch: 'patch_mod': unpatching complete
original greeting
% rmmod patch_mod
holder: patched greeting
still mapped
patch_mod: exit
";

/// Build the module and the program in `dir`; `shared`: both against `libklp.so`.
fn build(dir: &Path, shared: bool) -> (PathBuf, PathBuf) {
    let lib = lib_dir();
    let root = root();
    let include = root.join("include");
    let so = dir.join("patch_mod.so");
    let exe = dir.join("patch_so_main");
    let mut l = OsString::from("-L");
    l.push(dir);
    let mut rpath = OsString::from("-Wl,-rpath,");
    rpath.push(dir);
    if shared {
        std::fs::copy(lib.join("libklp.so"), dir.join("libklp.so")).unwrap();
    }
    let mut module: Vec<&OsStr> = vec![
        OsStr::new("-fPIC"),
        OsStr::new("-shared"),
        OsStr::new("-I"),
        include.as_os_str(),
    ];
    let src = root.join("c-tests/patch_mod.c");
    module.extend([src.as_os_str(), OsStr::new("-o"), so.as_os_str()]);
    if shared {
        module.extend([l.as_os_str(), OsStr::new("-lklp")]);
    }
    cc(&module);
    let main_src = root.join("c-tests/patch_so_main.c");
    let static_lib = lib.join("libklp.a");
    let mut program: Vec<&OsStr> = vec![
        OsStr::new("-I"),
        include.as_os_str(),
        main_src.as_os_str(),
        OsStr::new("-o"),
        exe.as_os_str(),
    ];
    if shared {
        program.extend([l.as_os_str(), OsStr::new("-lklp"), rpath.as_os_str()]);
    } else {
        program.extend([
            static_lib.as_os_str(),
            OsStr::new("-rdynamic"),
            OsStr::new("-lm"),
        ]);
    }
    program.extend([OsStr::new("-lpthread"), OsStr::new("-ldl")]);
    cc(&program);
    if shared {
        std::fs::rename(dir.join("libklp.so"), dir.join("libklp.so.0")).unwrap();
    }
    (exe, so)
}

fn check(exe: &Path, so: &Path) {
    for sync in ["preempt", "rcu"] {
        for (mode, expected) in [("release", EXPECTED_RELEASE), ("forced", EXPECTED_FORCED)] {
            let out = run(exe, &[so.as_os_str(), mode.as_ref()], Some(sync));
            // The module's destructor runs on libklp's unmapping thread once the patch
            // is released (after a grace period that follows the transition): the
            // program's first call after the wait may print before or after it. Both
            // come after "unpatching complete" and before "unmapped".
            let other = expected.replacen(
                "original greeting\npatch_mod: exit\n",
                "patch_mod: exit\noriginal greeting\n",
                1,
            );
            assert!(
                out == expected || out == other,
                "{} {mode} ({sync}):\n{out}\nexpected:\n{expected}",
                exe.display()
            );
        }
    }
}

#[test]
fn a_patch_object_stays_mapped_while_its_patch_can_run_shared_library() {
    let dir = scratch("patch-so-shared");
    let (exe, so) = build(&dir, true);
    check(&exe, &so);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_patch_object_stays_mapped_while_its_patch_can_run_static_library() {
    let dir = scratch("patch-so-static");
    let (exe, so) = build(&dir, false);
    check(&exe, &so);
    let _ = std::fs::remove_dir_all(&dir);
}
