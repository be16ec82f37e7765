//! Gives `libklp.so` its soname, so that programs linked with `-lklp` record
//! `libklp.so.0`.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libklp.so.0");
    println!("cargo:rerun-if-changed=build.rs");
}
