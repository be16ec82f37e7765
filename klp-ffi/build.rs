//! Gives `libklp.so` its soname, so that programs linked with `-lklp` record
//! `libklp.so.0`, and puts the soname's link beside the library in the output directory
//! (`target/<profile>/libklp.so.0 -> libklp.so`), so that such a program runs from the
//! build tree too (`-L target/release -Wl,-rpath,...`).

use std::path::{Path, PathBuf};

/// The soname: the major version of the ABI (see "ABI" in the README).
const SONAME: &str = "libklp.so.0";

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{SONAME}");
    println!("cargo:rerun-if-changed=build.rs");
    if let Some(dir) = profile_dir() {
        soname_link(&dir);
    }
}

/// `target[/<triple>]/<profile>`: `OUT_DIR` is `<that>/build/klp-ffi-<hash>/out`.
fn profile_dir() -> Option<PathBuf> {
    let out = PathBuf::from(std::env::var_os("OUT_DIR")?);
    let dir = out.ancestors().nth(3)?.to_path_buf();
    dir.is_dir().then_some(dir)
}

/// The link, made before the library exists (it dangles until the link step). A file of
/// that name that is not our link is left alone, with a warning.
fn soname_link(dir: &Path) {
    let link = dir.join(SONAME);
    if std::fs::read_link(&link).is_ok_and(|t| t == Path::new("libklp.so")) {
        return;
    }
    if link.symlink_metadata().is_ok() {
        println!(
            "cargo:warning={} exists and is not a link to libklp.so; left alone",
            link.display()
        );
        return;
    }
    if let Err(e) = std::os::unix::fs::symlink("libklp.so", &link) {
        println!("cargo:warning=cannot create {}: {e}", link.display());
    }
}
