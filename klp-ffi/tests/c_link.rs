//! The documented link lines work: `c-tests/link_smoke.c` is compiled as strict C11
//! against `include/klp.h`, linked once with `libklp.a` and once with `libklp.so`
//! (through its soname, `libklp.so.0`), run, and its output checked.
//!
//! The libraries are built by the test itself, with the test's profile and target
//! directory (see `lib_dir`).
//! The compiler is `gcc`, or `$CC`.

mod common;

use common::{lib_dir, root, run, scratch};
use std::path::Path;
use std::process::Command;

fn compile(out: &Path, link: &[&std::ffi::OsStr]) {
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".to_owned());
    let root = root();
    let status = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(out)
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("c-tests/link_smoke.c"))
        .args(link)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
    assert!(
        status.status.success(),
        "{cc} failed:\n{}",
        String::from_utf8_lossy(&status.stderr)
    );
}

fn run_and_check(exe: &Path) {
    let stdout = run(exe, &[], None);
    let expected = format!(
        "version {}
strerror no such file or directory (ENOENT)
set_sync bad -22
set_sync 0
set_log_handler 0
enabled nope 1
set_sync late 1
alloc 1
get 1
log 4 livepatch: Duplicate shadow variable <",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        stdout.starts_with(&expected),
        "unexpected output:\n{stdout}\nexpected to start with:\n{expected}"
    );
    let tail = "duplicate 1
warnings 1
freed 42
gone 1
set_log_handler NULL 0
";
    assert!(stdout.ends_with(tail), "unexpected output:\n{stdout}");
}

#[test]
fn a_c_program_links_with_the_static_library() {
    let lib = lib_dir();
    let dir = scratch("static");
    let exe = dir.join("link_smoke_static");
    let a = lib.join("libklp.a");
    compile(
        &exe,
        &[
            a.as_os_str(),
            "-lpthread".as_ref(),
            "-ldl".as_ref(),
            "-lm".as_ref(),
        ],
    );
    run_and_check(&exe);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_c_program_links_with_the_shared_library_through_its_soname() {
    let lib = lib_dir();
    let dir = scratch("shared");
    // Link against a copy named libklp.so, then leave only libklp.so.0: the program
    // runs only if it recorded the soname.
    std::fs::copy(lib.join("libklp.so"), dir.join("libklp.so")).unwrap();
    let exe = dir.join("link_smoke_shared");
    let mut rpath = std::ffi::OsString::from("-Wl,-rpath,");
    rpath.push(&dir);
    let mut l = std::ffi::OsString::from("-L");
    l.push(&dir);
    compile(&exe, &[l.as_os_str(), "-lklp".as_ref(), rpath.as_os_str()]);
    std::fs::rename(dir.join("libklp.so"), dir.join("libklp.so.0")).unwrap();
    run_and_check(&exe);
    let _ = std::fs::remove_dir_all(&dir);
}
