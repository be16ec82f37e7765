//! Kernel livepatch modules, unchanged, through the compatibility headers
//! (`include/klp/compat`): `c-tests/modules/modules_main.c` loads the modules of
//! `c-tests/modules/` with `klp_module_load` and plain `dlopen`, and checks every bad
//! input of the loader (its errno, its line, nothing changed: a NULL or missing file, a
//! shared object that is not a module, a symbol nobody exports, an init that fails, a
//! livepatch module without `MODULE_INFO(livepatch, "Y")`, unknown parameters and bad
//! values, a second load, the unload of a module whose patch is in use or that has no
//! exit), the parameters of every type, and the kernel's facilities of the headers
//! (printk's levels and `%p` forms, `KBUILD_MODNAME` from the file name, `jiffies`, a
//! mutex and a completion whose waiters park). Under both flavors, against
//! `libklp.so`; and once against `libklp.a`.
//!
//! The compiler is `gcc`, or `$CC`.

mod common;

use common::{cc, cc_kernel, lib_dir, root, run, scratch};
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

/// The modules in the kernel's form (`c-tests/modules/<name>.c` → `<name>.so`), built
/// without `KBUILD_MODNAME`: each is named after its file.
const MODULES: &[&str] = &[
    "lp_good",
    "lp_unmarked",
    "mod_initfail",
    "mod_noexit",
    "mod_unknown_symbol",
    "mod-kernel-api",
];

fn build() -> (PathBuf, PathBuf) {
    let lib = lib_dir();
    let dir = scratch("modules");
    let src = root().join("c-tests/modules");
    let include = root().join("include");
    let mut inc = OsString::from("-I");
    inc.push(&include);
    let mut inc_compat = OsString::from("-I");
    inc_compat.push(include.join("klp/compat"));
    let mut l = OsString::from("-L");
    l.push(&lib);
    let mut rpath = OsString::from("-Wl,-rpath,");
    rpath.push(&lib);
    for m in MODULES {
        let so = dir.join(format!("{m}.so"));
        let c = src.join(format!("{m}.c"));
        cc_kernel(&[
            "-fPIC".as_ref(),
            "-shared".as_ref(),
            &inc_compat,
            c.as_os_str(),
            "-o".as_ref(),
            so.as_os_str(),
            &l,
            "-lklp".as_ref(),
            "-lpthread".as_ref(),
        ]);
    }
    let so = dir.join("not_a_module.so");
    let c = src.join("not_a_module.c");
    cc(&[
        "-fPIC".as_ref(),
        "-shared".as_ref(),
        c.as_os_str(),
        "-o".as_ref(),
        so.as_os_str(),
    ]);
    let exe = dir.join("modules_main");
    let c = src.join("modules_main.c");
    cc(&[
        &inc,
        c.as_os_str(),
        "-o".as_ref(),
        exe.as_os_str(),
        "-rdynamic".as_ref(),
        &l,
        "-lklp".as_ref(),
        &rpath,
        "-ldl".as_ref(),
        "-lpthread".as_ref(),
    ]);
    (dir, exe)
}

#[test]
fn the_loader_and_the_compatibility_headers() {
    let (dir, exe) = build();
    for sync in ["preempt", "rcu"] {
        let out = run(&exe, &[dir.as_os_str()], Some(sync));
        assert!(out.ends_with("modules_main: ok\n"), "{sync}:\n{out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A module may also be built against libklp's headers alone, with its klp symbols left
/// to the program (`libklp.a` linked into a program with `-rdynamic`).
#[test]
fn a_module_of_a_static_program() {
    let lib = lib_dir();
    let dir = scratch("modules-static");
    let src = root().join("c-tests/modules");
    let include = root().join("include");
    let mut inc = OsString::from("-I");
    inc.push(&include);
    let mut inc_compat = OsString::from("-I");
    inc_compat.push(include.join("klp/compat"));
    for m in MODULES {
        let so = dir.join(format!("{m}.so"));
        let c = src.join(format!("{m}.c"));
        cc_kernel(&[
            "-fPIC".as_ref(),
            "-shared".as_ref(),
            &inc_compat,
            c.as_os_str(),
            "-o".as_ref(),
            so.as_os_str(),
        ]);
    }
    let so = dir.join("not_a_module.so");
    cc(&[
        "-fPIC".as_ref(),
        "-shared".as_ref(),
        src.join("not_a_module.c").as_os_str(),
        "-o".as_ref(),
        so.as_os_str(),
    ]);
    let exe = dir.join("modules_main");
    let c = src.join("modules_main.c");
    let a = lib.join("libklp.a");
    let args: Vec<&OsStr> = vec![
        &inc,
        c.as_os_str(),
        a.as_os_str(),
        "-o".as_ref(),
        exe.as_os_str(),
        "-rdynamic".as_ref(),
        "-ldl".as_ref(),
        "-lpthread".as_ref(),
        "-lm".as_ref(),
    ];
    cc(&args);
    let out = run(&exe, &[dir.as_os_str()], Some("preempt"));
    assert!(out.ends_with("modules_main: ok\n"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
