//! Objects as shared libraries (the kernel's test-livepatch.sh, tests 4 and 5, "module
//! function patching"): `c-tests/target_mod.c` is a shared object with
//! `KLP_OBJECT("test_klp_mod_target")` and a patchable function; `c-tests/object_main.c`
//! enables a patch of that object with the target opened first, then with the patch
//! first (`dlopen` applies it: "applying patch ... to loading module ..."), then closes
//! the target under the enabled patch ("reverting patch ... on unloading module ..."),
//! opens it under a patch that refuses it (the kernel refuses the module; here `dlopen`
//! succeeds, the target's init runs and its function runs the original, and
//! `klp_object_refused` gives the errno), and loads objects by hand. Its output is compared with the kernel's lines.
//!
//! Two ways to link: the target against `libklp.so` (the program too); or the program
//! against `libklp.a` with `-rdynamic` (exporting the klp symbols) and the target with
//! its klp symbols undefined, resolved from the program when it is opened.
//!
//! The compiler is `gcc`, or `$CC`.

mod common;

use common::{cc, lib_dir, root, run, scratch};
use std::ffi::OsString;
use std::path::Path;

/// What the program prints: its own lines, the target's init and exit and every log
/// line with its level (3 err, 5 notice, 7 debug). `%` lines stand for the kernel
/// test's commands.
const EXPECTED: &str = "# module function patching
% insmod test_klp_mod_target
test_klp_mod_target: test_klp_mod_target_init
test_klp_mod_target: original output
% insmod test_klp_mod_patch
5 livepatch: enabling patch 'test_klp_mod_patch'
7 livepatch: 'test_klp_mod_patch': initializing patching transition
5 livepatch: 'test_klp_mod_patch': starting patching transition
7 livepatch: 'test_klp_mod_patch': completing patching transition
5 livepatch: 'test_klp_mod_patch': patching complete
test_klp_mod_patch: this has been live patched
% echo 0 > /sys/kernel/livepatch/test_klp_mod_patch/enabled
7 livepatch: 'test_klp_mod_patch': initializing unpatching transition
5 livepatch: 'test_klp_mod_patch': starting unpatching transition
7 livepatch: 'test_klp_mod_patch': completing unpatching transition
5 livepatch: 'test_klp_mod_patch': unpatching complete
test_klp_mod_target: original output
% rmmod test_klp_mod_target
test_klp_mod_target: test_klp_mod_target_exit
# module function patching (livepatch first)
% insmod test_klp_mod_patch
5 livepatch: enabling patch 'test_klp_mod_patch'
7 livepatch: 'test_klp_mod_patch': initializing patching transition
5 livepatch: 'test_klp_mod_patch': starting patching transition
7 livepatch: 'test_klp_mod_patch': completing patching transition
5 livepatch: 'test_klp_mod_patch': patching complete
% insmod test_klp_mod_target
5 livepatch: applying patch 'test_klp_mod_patch' to loading module 'test_klp_mod_target'
test_klp_mod_target: test_klp_mod_target_init
test_klp_mod_patch: this has been live patched
% echo 0 > /sys/kernel/livepatch/test_klp_mod_patch/enabled
7 livepatch: 'test_klp_mod_patch': initializing unpatching transition
5 livepatch: 'test_klp_mod_patch': starting unpatching transition
7 livepatch: 'test_klp_mod_patch': completing unpatching transition
5 livepatch: 'test_klp_mod_patch': unpatching complete
test_klp_mod_target: original output
% rmmod test_klp_mod_target
test_klp_mod_target: test_klp_mod_target_exit
# unloading a patched module
% insmod test_klp_mod_patch
5 livepatch: enabling patch 'test_klp_mod_patch'
7 livepatch: 'test_klp_mod_patch': initializing patching transition
5 livepatch: 'test_klp_mod_patch': starting patching transition
7 livepatch: 'test_klp_mod_patch': completing patching transition
5 livepatch: 'test_klp_mod_patch': patching complete
% insmod test_klp_mod_target
5 livepatch: applying patch 'test_klp_mod_patch' to loading module 'test_klp_mod_target'
test_klp_mod_target: test_klp_mod_target_init
test_klp_mod_patch: this has been live patched
% rmmod test_klp_mod_target
test_klp_mod_target: test_klp_mod_target_exit
5 livepatch: reverting patch 'test_klp_mod_patch' on unloading module 'test_klp_mod_target'
% echo 0 > /sys/kernel/livepatch/test_klp_mod_patch/enabled
7 livepatch: 'test_klp_mod_patch': initializing unpatching transition
5 livepatch: 'test_klp_mod_patch': starting unpatching transition
7 livepatch: 'test_klp_mod_patch': completing unpatching transition
5 livepatch: 'test_klp_mod_patch': unpatching complete
# a patch refuses the module
5 livepatch: enabling patch 'test_klp_mod_refuse'
7 livepatch: 'test_klp_mod_refuse': initializing patching transition
5 livepatch: 'test_klp_mod_refuse': starting patching transition
7 livepatch: 'test_klp_mod_refuse': completing patching transition
5 livepatch: 'test_klp_mod_refuse': patching complete
% insmod test_klp_mod_target
5 livepatch: applying patch 'test_klp_mod_refuse' to loading module 'test_klp_mod_target'
pre_patch: test_klp_mod_target refused
4 livepatch: pre-patch callback failed for object 'test_klp_mod_target'
4 livepatch: patch 'test_klp_mod_refuse' failed for module 'test_klp_mod_target', refusing to load module 'test_klp_mod_target'
test_klp_mod_target: test_klp_mod_target_init
test_klp_mod_target: original output
% rmmod test_klp_mod_target
test_klp_mod_target: test_klp_mod_target_exit
7 livepatch: 'test_klp_mod_refuse': initializing unpatching transition
5 livepatch: 'test_klp_mod_refuse': starting unpatching transition
7 livepatch: 'test_klp_mod_refuse': completing unpatching transition
5 livepatch: 'test_klp_mod_refuse': unpatching complete
% insmod test_klp_mod_target
test_klp_mod_target: test_klp_mod_target_init
test_klp_mod_target: original output
% rmmod test_klp_mod_target
test_klp_mod_target: test_klp_mod_target_exit
3 livepatch: vmlinux.ko: invalid module name
done
";

fn run_and_check(exe: &Path, target: &Path, sync: &str) {
    let stdout = run(exe, &[target.as_os_str()], Some(sync));
    assert_eq!(stdout, EXPECTED, "{} ({sync})", exe.display());
}

#[test]
fn a_shared_object_is_an_object_with_the_shared_library() {
    let lib = lib_dir();
    let dir = scratch("object-shared");
    let root = root();
    let include = root.join("include");
    std::fs::copy(lib.join("libklp.so"), dir.join("libklp.so")).unwrap();
    let mut l = OsString::from("-L");
    l.push(&dir);
    let mut rpath = OsString::from("-Wl,-rpath,");
    rpath.push(&dir);
    let so = dir.join("libtarget_mod.so");
    cc(&[
        "-fPIC".as_ref(),
        "-shared".as_ref(),
        "-I".as_ref(),
        include.as_os_str(),
        root.join("c-tests/target_mod.c").as_os_str(),
        "-o".as_ref(),
        so.as_os_str(),
        l.as_os_str(),
        "-lklp".as_ref(),
    ]);
    let exe = dir.join("object_main");
    cc(&[
        "-I".as_ref(),
        include.as_os_str(),
        root.join("c-tests/object_main.c").as_os_str(),
        "-o".as_ref(),
        exe.as_os_str(),
        l.as_os_str(),
        "-lklp".as_ref(),
        rpath.as_os_str(),
        "-ldl".as_ref(),
    ]);
    std::fs::rename(dir.join("libklp.so"), dir.join("libklp.so.0")).unwrap();
    run_and_check(&exe, &so, "preempt");
    run_and_check(&exe, &so, "rcu");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_shared_object_is_an_object_with_the_static_library_exported() {
    let lib = lib_dir();
    let dir = scratch("object-static");
    let root = root();
    let include = root.join("include");
    let so = dir.join("libtarget_mod.so");
    // The klp symbols stay undefined: the program exports them (-rdynamic).
    cc(&[
        "-fPIC".as_ref(),
        "-shared".as_ref(),
        "-I".as_ref(),
        include.as_os_str(),
        root.join("c-tests/target_mod.c").as_os_str(),
        "-o".as_ref(),
        so.as_os_str(),
    ]);
    let exe = dir.join("object_main");
    cc(&[
        "-I".as_ref(),
        include.as_os_str(),
        root.join("c-tests/object_main.c").as_os_str(),
        "-o".as_ref(),
        exe.as_os_str(),
        lib.join("libklp.a").as_os_str(),
        "-rdynamic".as_ref(),
        "-lpthread".as_ref(),
        "-ldl".as_ref(),
        "-lm".as_ref(),
    ]);
    run_and_check(&exe, &so, "preempt");
    run_and_check(&exe, &so, "rcu");
    let _ = std::fs::remove_dir_all(&dir);
}
