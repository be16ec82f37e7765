//! Runs `examples/patch_self.rs`, the program that live patches itself, and checks what
//! it prints.

use std::path::Path;
use std::process::Command;

/// `target/<profile>/examples/patch_self`, built by cargo in the profile and target
/// directory of this test (`cargo test` builds the examples already; then this is a
/// no-op). The test executable is `target/<profile>/deps/patch_self_example-<hash>`.
fn example() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let target_dir = profile_dir.parent().expect("target/<profile>");
    let profile = profile_dir.file_name().unwrap().to_str().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "-p", "klp-core", "--example", "patch_self"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
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
        "cargo build --example patch_self failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = profile_dir.join("examples").join("patch_self");
    assert!(bin.exists(), "{} missing", bin.display());
    bin
}

#[test]
fn patch_self_switches_each_thread_at_its_own_safe_point() {
    let out = Command::new(example()).output().expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "patch_self failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let want = [
        "version 1: exchange(5) = (6, 5)",
        "enabling protocol_v2 while busy makes requests and blocked waits inside one",
        "busy switched to version 2 between two requests",
        "in transition: busy patch_state 1, blocked patch_state 0 (inside its version 1 request)",
        "main: exchange(5) = (15, 5): version 2",
        "blocked: its waiting request finished with version 1: exchange(7) = (8, 7)",
        "blocked: its next request ran version 2: exchange(7) = (21, 7)",
        "transition complete: protocol_v2 enabled = true",
        "disabling protocol_v2",
        "version 1 again: exchange(5) = (6, 5)",
    ];
    assert_eq!(lines.len(), want.len() + 1, "output:\n{stdout}");
    assert_eq!(lines[..want.len()], want, "output:\n{stdout}");
    let last = lines[want.len()];
    assert!(
        last.starts_with("busy: versions 1 -> 2 -> 1, never a mix ("),
        "last line: {last}"
    );
    // The kernel's lines, on standard error.
    for line in [
        "livepatch: enabling patch 'protocol_v2'",
        "livepatch: 'protocol_v2': patching complete",
        "livepatch: 'protocol_v2': unpatching complete",
    ] {
        assert!(stderr.contains(line), "no {line:?} in:\n{stderr}");
    }
}
