//! Helpers of the tests that build C programs against libklp.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `target/<profile>/`, holding `libklp.a` and `libklp.so` up to date.
///
/// `cargo test` builds only the rlib of the package's library, so this asks cargo for
/// the C libraries of the same profile in the same target directory (a no-op when they
/// are up to date). The test executable is `target/<profile>/deps/c_link-<hash>`.
pub fn lib_dir() -> PathBuf {
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

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("klp-c-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Run the C compiler (`$CC`, else gcc) as GNU C11 with warnings as errors at `-O2`, then
/// `args`; panic with its output when it fails.
#[allow(dead_code)]
pub fn cc(args: &[&OsStr]) {
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".to_owned());
    let out = Command::new(&cc)
        .args(["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O2"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
    assert!(
        out.status.success(),
        "{cc} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run the C compiler as [`cc`] does, for a kernel module in the kernel's form built with
/// the compatibility headers: GNU C11 with `-Wall -Wextra` as errors but for unused
/// parameters (the kernel's code has many), no `-pedantic`.
#[allow(dead_code)]
pub fn cc_kernel(args: &[&OsStr]) {
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".to_owned());
    let out = Command::new(&cc)
        .args([
            "-std=gnu11",
            "-Wall",
            "-Wextra",
            "-Wno-unused-parameter",
            "-Werror",
            "-O2",
        ])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
    assert!(
        out.status.success(),
        "{cc} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run the C program `exe` with `args`, `KLP_SYNC` set to `sync` (removed when `None`);
/// panic with its output unless it succeeds; return its standard output.
#[allow(dead_code)]
pub fn run(exe: &Path, args: &[&OsStr], sync: Option<&str>) -> String {
    let mut cmd = Command::new(exe);
    cmd.args(args);
    match sync {
        Some(s) => cmd.env("KLP_SYNC", s),
        None => cmd.env_remove("KLP_SYNC"),
    };
    let out = cmd.output().expect("run the C program");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} failed: {}\n{stdout}\n{}",
        exe.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
