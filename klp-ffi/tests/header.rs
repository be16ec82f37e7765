//! `include/klp.h` is what cbindgen makes of klp-ffi today, and it compiles alone,
//! included twice, as strict C11 and as C++.
//!
//! `KLP_UPDATE_HEADER=1 cargo test -p klp-ffi --test header` rewrites it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn header_path() -> PathBuf {
    crate_dir().join("../include/klp.h")
}

fn generate() -> String {
    let dir = crate_dir();
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    let text = String::from_utf8(out).expect("UTF-8 header");
    // cbindgen writes a negative constant bare (`#define KLP_ERROR_PANIC -4096`), which
    // `x-KLP_ERROR_PANIC` turns into `x--4096`: parenthesize it.
    text.lines()
        .map(|line| match line.strip_prefix("#define ") {
            Some(rest) => match rest.split_once(" -") {
                Some((name, digits))
                    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    format!("#define {name} (-{digits})\n")
                }
                _ => format!("{line}\n"),
            },
            None => format!("{line}\n"),
        })
        .collect()
}

#[test]
fn the_committed_header_is_up_to_date() {
    let fresh = generate();
    let path = header_path();
    if std::env::var_os("KLP_UPDATE_HEADER").is_some_and(|v| v == "1") {
        std::fs::write(&path, &fresh).expect("write include/klp.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "include/klp.h differs from what cbindgen makes of klp-ffi; run \
         `KLP_UPDATE_HEADER=1 cargo test -p klp-ffi --test header` and commit it"
    );
}

/// Compile `source` with `compiler` and `args` (syntax only); panic with its output.
fn syntax_check(compiler: &str, args: &[&str], source: &str, name: &str) {
    let dir = std::env::temp_dir().join(format!("klp-header-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, source).unwrap();
    let include = crate_dir().join("../include");
    let out = Command::new(compiler)
        .args(args)
        .arg("-fsyntax-only")
        .arg("-I")
        .arg(&include)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{compiler} {args:?} rejects klp.h:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const TWICE: &str = "#include <klp.h>\n#include <klp.h>\n\
int main(void) { int e = 1-KLP_ERROR_PANIC; return klp_version() == NULL || e != 4097; }\n";

#[test]
fn the_header_compiles_alone_twice_as_c11() {
    assert!(Path::new(&header_path()).exists());
    syntax_check(
        "gcc",
        &[
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-x",
            "c",
        ],
        TWICE,
        "twice.c",
    );
}

#[test]
fn the_header_compiles_alone_twice_as_cxx() {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".to_owned());
    if Command::new(&cxx).arg("--version").output().is_err() {
        eprintln!("SKIPPED: no C++ compiler ({cxx})");
        return;
    }
    syntax_check(
        &cxx,
        &["-Wall", "-Wextra", "-Werror", "-x", "c++"],
        TWICE,
        "twice.cpp",
    );
}
