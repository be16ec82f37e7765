//! The kernel compatibility headers (`include/klp/compat/linux/*.h`, written by hand):
//! each compiles alone, included twice, as C11 (`-Wall -Wextra -Werror`; not
//! `-pedantic`: they use `#include_next` to add to the system's `<linux/errno.h>`,
//! `<linux/types.h>` and `<linux/stat.h>`, which the C library includes too) and as C++;
//! the headers that the kernel's sample and selftest modules include are there; and a C
//! library header that includes the system's `<linux/...>` still works beside them.
//!
//! The constants they share with `klp.h` (module states, GFP flags, parameter types,
//! HZ) are `klp.h`'s names, which `tests/header.rs` checks for drift.

use std::path::{Path, PathBuf};
use std::process::Command;

fn compat_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../include/klp/compat")
}

/// The headers, by name (`module` for `linux/module.h`).
fn headers() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(compat_dir().join("linux"))
        .expect("include/klp/compat/linux")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|n| n.strip_suffix(".h").map(str::to_owned))
        .collect();
    names.sort();
    names
}

fn compile(compiler: &str, args: &[&str], source: &str, file: &Path) -> Result<(), String> {
    std::fs::write(file, source).unwrap();
    let out = Command::new(compiler)
        .args(args)
        .arg("-fsyntax-only")
        .arg("-I")
        .arg(compat_dir())
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{compiler} {args:?} {}:\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("klp-compat-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn each_alone_twice(compiler: &str, args: &[&str], ext: &str) {
    let dir = scratch(ext);
    let failures: Vec<String> = headers()
        .iter()
        .filter_map(|h| {
            let src = format!(
                "#include <linux/{h}.h>\n#include <linux/{h}.h>\nint klp_compat_test_{};\n",
                h.replace('-', "_")
            );
            compile(compiler, args, &src, &dir.join(format!("{h}.{ext}"))).err()
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn each_header_compiles_alone_twice_as_c11() {
    each_alone_twice(
        "gcc",
        &["-std=c11", "-Wall", "-Wextra", "-Werror", "-x", "c"],
        "c",
    );
}

#[test]
fn each_header_compiles_alone_twice_as_cxx() {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".to_owned());
    if Command::new(&cxx).arg("--version").output().is_err() {
        eprintln!("SKIPPED: no C++ compiler ({cxx})");
        return;
    }
    each_alone_twice(&cxx, &["-Wall", "-Wextra", "-Werror", "-x", "c++"], "cpp");
}

#[test]
fn the_headers_of_the_kernels_modules_are_there() {
    let have = headers();
    for h in [
        "livepatch",
        "module",
        "moduleparam",
        "init",
        "kernel",
        "printk",
        "slab",
        "gfp",
        "list",
        "mutex",
        "jiffies",
        "delay",
        "seq_file",
        "sched",
        "workqueue",
        "completion",
        "types",
        "errno",
        "stat",
        "kobject",
        "sysfs",
        "threads",
    ] {
        assert!(have.iter().any(|x| x == h), "no linux/{h}.h");
    }
}

/// The C library's headers include the system's `<linux/errno.h>` and friends: with the
/// compatibility headers first on the path, they still get what they need.
#[test]
fn the_c_library_still_works_beside_them() {
    let dir = scratch("libc");
    let src = "#include <linux/module.h>\n#include <errno.h>\n#include <sys/stat.h>\n\
               #include <linux/stat.h>\n#include <linux/types.h>\n\
               int klp_compat_e2big = E2BIG + EWOULDBLOCK + S_IRUGO;\n\
               __u64 klp_compat_u64;\nu64 klp_compat_kernel_u64;\n";
    let r = compile(
        "gcc",
        &[
            "-std=gnu11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-D_GNU_SOURCE",
            "-x",
            "c",
        ],
        src,
        &dir.join("libc.c"),
    );
    let _ = std::fs::remove_dir_all(&dir);
    r.unwrap();
}
