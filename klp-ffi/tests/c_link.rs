//! The documented link lines work: `c-tests/link_smoke.c` is compiled as strict C11
//! against `include/klp.h`, linked once with `libklp.a` and once with `libklp.so`
//! (through its soname, `libklp.so.0`), run, and its output checked.
//!
//! The libraries are built by the test itself, with the test's profile and target
//! directory (see `lib_dir`).
//! The compiler is `gcc`, or `$CC`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `target/<profile>/`, holding `libklp.a` and `libklp.so` up to date.
///
/// `cargo test` builds only the rlib of the package's library, so this asks cargo for
/// the C libraries of the same profile in the same target directory (a no-op when they
/// are up to date). The test executable is `target/<profile>/deps/c_link-<hash>`.
fn lib_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("current_exe");
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("target/<profile>/deps/<test>")
                .to_path_buf();
            let target_dir = profile_dir.parent().expect("target/<profile>");
            let profile = profile_dir.file_name().unwrap().to_str().unwrap();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let mut cmd = Command::new(&cargo);
            cmd.args(["build", "-p", "klp-ffi", "--lib"])
                .current_dir(root())
                .env("CARGO_TARGET_DIR", target_dir);
            if profile == "release" {
                cmd.arg("--release");
            } else if profile != "debug" {
                cmd.args(["--profile", profile]);
            }
            let out = cmd
                .output()
                .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
            assert!(
                out.status.success(),
                "cargo build -p klp-ffi failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            for lib in ["libklp.a", "libklp.so"] {
                assert!(
                    profile_dir.join(lib).exists(),
                    "{} missing",
                    profile_dir.join(lib).display()
                );
            }
            profile_dir
        })
        .clone()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("klp-c-link-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

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
    let out = Command::new(exe)
        .env_remove("KLP_SYNC")
        .output()
        .expect("run the C program");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} failed: {}\n{stdout}\n{}",
        exe.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
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
