//! A C program patches one of its own functions: `c-tests/patch_self.c` (GNU C11,
//! `KLP_PATCHABLE`, `struct klp_patch`, callbacks, a state) is built against `libklp.a`
//! and against `libklp.so`, run, and its output compared with the kernel's lines; and a
//! shared object with `KLP_OBJECT` (`c-tests/object_name_lib.c`) registers its sites
//! under its own name, not the main program's (`c-tests/object_name_main.c`).
//!
//! The compiler is `gcc`, or `$CC`.

mod common;

use common::{cc, lib_dir, root, run, scratch};
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// What the program prints: its own lines, the callbacks' and every log line with its
/// level (5 notice, 7 debug).
const EXPECTED: &str = "compute(1) = 2
5 livepatch: enabling patch 'p'
7 livepatch: 'p': initializing patching transition
pre_patch: vmlinux (state 0)
5 livepatch: 'p': starting patching transition
7 livepatch: 'p': completing patching transition
post_patch: vmlinux
5 livepatch: 'p': patching complete
compute(1) = 3
state 42 version 1
7 livepatch: 'p': initializing unpatching transition
pre_unpatch: vmlinux
5 livepatch: 'p': starting unpatching transition
7 livepatch: 'p': completing unpatching transition
post_unpatch: vmlinux
5 livepatch: 'p': unpatching complete
compute(1) = 2
done
";

fn compile(out: &Path, opt: &str, link: &[&OsStr]) {
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".to_owned());
    let root = root();
    let status = Command::new(&cc)
        .args(["-std=gnu11", "-Wall", "-Wextra", "-Werror", opt, "-o"])
        .arg(out)
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("c-tests/patch_self.c"))
        .args(link)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
    assert!(
        status.status.success(),
        "{cc} failed:\n{}",
        String::from_utf8_lossy(&status.stderr)
    );
}

fn run_and_check(exe: &Path, sync: &str) {
    let stdout = run(exe, &[], Some(sync));
    assert_eq!(stdout, EXPECTED, "{} ({sync})", exe.display());
}

#[test]
fn a_c_program_patches_itself_with_the_static_library() {
    let lib = lib_dir();
    let dir = scratch("patch-static");
    let a = lib.join("libklp.a");
    for opt in ["-O0", "-O2"] {
        let exe = dir.join(format!("patch_self{opt}"));
        compile(
            &exe,
            opt,
            &[
                a.as_os_str(),
                "-lpthread".as_ref(),
                "-ldl".as_ref(),
                "-lm".as_ref(),
            ],
        );
        run_and_check(&exe, "preempt");
        run_and_check(&exe, "rcu");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_c_program_patches_itself_with_the_shared_library() {
    let lib = lib_dir();
    let dir = scratch("patch-shared");
    std::fs::copy(lib.join("libklp.so"), dir.join("libklp.so")).unwrap();
    let exe = dir.join("patch_self_shared");
    let mut rpath = std::ffi::OsString::from("-Wl,-rpath,");
    rpath.push(&dir);
    let mut l = std::ffi::OsString::from("-L");
    l.push(&dir);
    compile(
        &exe,
        "-O2",
        &[l.as_os_str(), "-lklp".as_ref(), rpath.as_os_str()],
    );
    std::fs::rename(dir.join("libklp.so"), dir.join("libklp.so.0")).unwrap();
    run_and_check(&exe, "preempt");
    run_and_check(&exe, "rcu");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_shared_object_registers_its_sites_under_its_klp_object_name() {
    let lib = lib_dir();
    let dir = scratch("objname");
    let root = root();
    std::fs::copy(lib.join("libklp.so"), dir.join("libklp.so")).unwrap();
    let include = root.join("include");
    let mut l = std::ffi::OsString::from("-L");
    l.push(&dir);
    let mut rpath = std::ffi::OsString::from("-Wl,-rpath,");
    rpath.push(&dir);
    let so = dir.join("libobjname.so");
    cc(&[
        "-fPIC".as_ref(),
        "-shared".as_ref(),
        "-I".as_ref(),
        include.as_os_str(),
        root.join("c-tests/object_name_lib.c").as_os_str(),
        "-o".as_ref(),
        so.as_os_str(),
        l.as_os_str(),
        "-lklp".as_ref(),
    ]);
    let exe = dir.join("object_name_main");
    cc(&[
        "-I".as_ref(),
        include.as_os_str(),
        root.join("c-tests/object_name_main.c").as_os_str(),
        "-o".as_ref(),
        exe.as_os_str(),
        so.as_os_str(),
        l.as_os_str(),
        "-lklp".as_ref(),
        rpath.as_os_str(),
    ]);
    std::fs::rename(dir.join("libklp.so"), dir.join("libklp.so.0")).unwrap();
    let out = Command::new(&exe).output().expect("run the C program");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "main_fn 2 lib_fn 10\npatch main_fn 0\npatch lib_fn as vmlinux 1\nmain_fn 2\n"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
