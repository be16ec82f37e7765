//! Builds the C parts of the benchmarks (needs a C compiler: `$CC`, default `gcc`):
//!
//! * `c/c_call.c`, for the C call benchmark, into a static library of the benchmark
//!   program, whose klp symbols come from klp-ffi linked into it (as a program linked
//!   with `libklp.a`);
//! * `c/urcu_shim.c`, the peer liburcu-memb, when its headers and library are found
//!   (Debian: `liburcu-dev`): then the crate is built with `cfg(klp_urcu)` and links
//!   `liburcu-memb`; otherwise the reports say "not installed". `KLP_BENCH_NO_URCU=1`
//!   builds without it even where it is installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("manifest dir"));
    let include = root.join("../include");
    println!("cargo:rerun-if-changed={}", include.display());
    println!("cargo:rerun-if-env-changed=CC");
    println!("cargo:rerun-if-env-changed=KLP_BENCH_NO_URCU");
    println!("cargo::rustc-check-cfg=cfg(klp_urcu)");
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".to_owned());

    let src = root.join("c/c_call.c");
    println!("cargo:rerun-if-changed={}", src.display());
    let obj = out.join("c_call.o");
    let ok = compile(&cc, &src, &obj, &["-I".as_ref(), include.as_os_str()]);
    assert!(ok, "{cc} failed on {}", src.display());
    archive(&out.join("libcbench.a"), &obj);
    println!("cargo:rustc-link-search=native={}", out.display());

    let shim = root.join("c/urcu_shim.c");
    println!("cargo:rerun-if-changed={}", shim.display());
    if std::env::var_os("KLP_BENCH_NO_URCU").is_some_and(|v| v != "0") {
        println!("cargo:rustc-env=KLP_URCU_VERSION=");
        return;
    }
    let obj = out.join("urcu_shim.o");
    // The header is there, and the library links (a program of the shim and a main).
    if compile(&cc, &shim, &obj, &[]) && links(&cc, &out, &obj) {
        archive(&out.join("libklpurcu.a"), &obj);
        println!("cargo:rustc-link-lib=static=klpurcu");
        println!("cargo:rustc-link-lib=dylib=urcu-memb");
        println!("cargo:rustc-link-lib=dylib=urcu-common");
        println!("cargo:rustc-cfg=klp_urcu");
        let version = Command::new("pkg-config")
            .args(["--modversion", "liburcu-memb"])
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "(version unknown)".to_owned());
        println!("cargo:rustc-env=KLP_URCU_VERSION={version}");
    } else {
        println!(
            "cargo:warning=liburcu-memb not found (Debian: liburcu-dev): its rows say \"not installed\""
        );
        println!("cargo:rustc-env=KLP_URCU_VERSION=");
    }
}

/// `cc -c src -o obj`, with warnings as errors; whether it succeeded.
fn compile(cc: &str, src: &Path, obj: &Path, extra: &[&std::ffi::OsStr]) -> bool {
    Command::new(cc)
        .args([
            "-std=gnu11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-O2",
            "-fPIC",
            "-c",
        ])
        .args(extra)
        .arg(src)
        .arg("-o")
        .arg(obj)
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc}: {e}"))
        .success()
}

/// Whether the shim's object links with liburcu-memb into a program.
fn links(cc: &str, out: &Path, obj: &Path) -> bool {
    let main = out.join("urcu_main.c");
    std::fs::write(&main, "int main(void) { return 0; }\n").expect("write urcu_main.c");
    Command::new(cc)
        .arg(&main)
        .arg(obj)
        .args(["-lurcu-memb", "-lurcu-common", "-lpthread", "-o"])
        .arg(out.join("urcu_main"))
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn archive(lib: &Path, obj: &Path) {
    let _ = std::fs::remove_file(lib);
    let status = Command::new("ar")
        .arg("crs")
        .arg(lib)
        .arg(obj)
        .status()
        .unwrap_or_else(|e| panic!("cannot run ar: {e}"));
    assert!(status.success(), "ar failed");
}
