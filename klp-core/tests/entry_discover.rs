//! Entry sites found at run time (`klp_core::entry::discover`) in libraries built with
//! `-fpatchable-function-entry=16,14` and no libklp code (`c-tests/entry/`): extern and
//! static functions, same-named statics by `old_sympos`, a function opted out of the flag,
//! with and without `endbr64`, GCC and (when installed) Clang; a library replaced on
//! disk, and one without symbols, are refused.

use klp_core::entry::discover::{
    AREA, DiscoverError, EntrySite, PREFIX, find_object, object_name, sites_of,
};
use std::ffi::{CString, c_void};
use std::path::{Path, PathBuf};
use std::process::Command;

fn src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../c-tests/entry")
        .join(name)
}

fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!("klp-entry-discover-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn have(cc: &str) -> bool {
    Command::new(cc)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Build the test library with `cc` and `flags` into `out`.
fn build(cc: &str, flags: &[&str], out: &Path) {
    let st = Command::new(cc)
        .args([
            "-O2",
            "-fpatchable-function-entry=16,14",
            "-fPIC",
            "-shared",
        ])
        .args(flags)
        .arg(src("ent_a.c"))
        .arg(src("ent_b.c"))
        .arg("-o")
        .arg(out)
        .status()
        .unwrap();
    assert!(st.success(), "{cc} {flags:?} failed");
}

fn dlopen(path: &Path) -> *mut c_void {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid path; the library has no constructors of its own.
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!h.is_null(), "dlopen {}", path.display());
    h
}

fn dlsym(h: *mut c_void, name: &str) -> usize {
    let c = CString::new(name).unwrap();
    // SAFETY: a handle from dlopen, a valid name.
    unsafe { libc::dlsym(h, c.as_ptr()) as usize }
}

fn sites(name: &str) -> Vec<EntrySite> {
    let obj = find_object(Some(name)).unwrap_or_else(|| panic!("{name} is not loaded"));
    sites_of(&obj).unwrap()
}

fn one<'a>(sites: &'a [EntrySite], name: &str) -> &'a EntrySite {
    let found: Vec<_> = sites.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "{name}: {found:?}");
    found[0]
}

/// The checks for one build: `entry` is what the compiler puts at the function.
fn check(cc: &str, flags: &[&str], file: &str, entry: &[u8]) {
    let path = scratch().join(file);
    build(cc, flags, &path);
    let h = dlopen(&path);
    let name = object_name(&path);
    let all = sites(&name);

    let ext = one(&all, "ent_extern");
    assert_eq!(ext.object.as_deref(), Some(name.as_str()));
    assert!(!ext.local);
    assert_eq!(ext.sympos, 1);
    assert_eq!(ext.func, dlsym(h, "ent_extern"), "the function's address");
    assert_eq!(ext.area + PREFIX, ext.func);
    assert_eq!(
        &ext.bytes[..PREFIX],
        &[0x90; PREFIX],
        "{cc} {flags:?}: the prefix"
    );
    assert_eq!(
        &ext.bytes[PREFIX..PREFIX + entry.len()],
        entry,
        "{cc} {flags:?}: the entry {:02x?}",
        &ext.bytes[PREFIX..AREA]
    );

    let shape = ext.shape.as_ref().expect("a valid site");
    assert_eq!(shape.endbr, entry.len() > 2, "{cc} {flags:?}: endbr64");
    assert!(all.iter().all(|s| s.shape.is_ok()), "every site valid");

    let st = one(&all, "ent_static");
    assert!(st.local, "a static function has a site too");

    let mut dups: Vec<_> = all.iter().filter(|s| s.name == "ent_dup").collect();
    dups.sort_by_key(|s| s.sympos);
    assert_eq!(dups.len(), 2, "two statics named ent_dup: {dups:?}");
    assert_eq!((dups[0].sympos, dups[1].sympos), (1, 2));
    assert!(dups[0].func < dups[1].func, "positions in address order");

    assert!(
        all.iter().all(|s| s.name != "ent_none"),
        "a function opted out of the flag has no site"
    );
    // SAFETY: nothing of the library is in use any more.
    unsafe { libc::dlclose(h) };
}

const GCC: &[u8] = &[0x90, 0x90];
const ENDBR: &[u8] = &[0xf3, 0x0f, 0x1e, 0xfa];

#[test]
fn gcc_without_and_with_endbr64() {
    check("gcc", &["-fcf-protection=none"], "libentgcc.so", GCC);
    let cet: Vec<u8> = [ENDBR, GCC].concat();
    check("gcc", &["-fcf-protection=full"], "libentgcccet.so", &cet);
}

#[test]
fn clang_without_and_with_endbr64() {
    if !have("clang") {
        eprintln!("clang is not installed: the Clang layouts are not checked here");
        return;
    }
    check(
        "clang",
        &["-fcf-protection=none"],
        "libentclang.so",
        &[0x66, 0x90],
    );
    let cet: Vec<u8> = [ENDBR, &[0x66, 0x90]].concat();
    check(
        "clang",
        &["-fcf-protection=full"],
        "libentclangcet.so",
        &cet,
    );
}

#[test]
fn a_library_replaced_on_disk_is_refused() {
    let dir = scratch();
    let path = dir.join("libentrepl.so");
    build("gcc", &[], &path);
    let h = dlopen(&path);
    assert!(!sites("libentrepl").is_empty());
    // A package upgrade: a new file renamed over the old one, which stays mapped.
    let next = dir.join("libentrepl.so.new");
    build("gcc", &["-DVERSION=2"], &next);
    std::fs::rename(&next, &path).unwrap();
    let obj = find_object(Some("libentrepl")).unwrap();
    match sites_of(&obj) {
        Err(e @ DiscoverError::Replaced { .. }) => {
            assert!(
                e.to_string().contains("is not the object that is loaded"),
                "{e}"
            )
        }
        other => panic!("a replaced library must be refused: {other:?}"),
    }
    // SAFETY: nothing of the library is in use.
    unsafe { libc::dlclose(h) };
}

#[test]
fn a_library_without_symbols_is_refused() {
    let dir = scratch();
    let path = dir.join("libentstripped.so");
    build("gcc", &["-fvisibility=hidden", "-s"], &path);
    let h = dlopen(&path);
    let obj = find_object(Some("libentstripped")).unwrap();
    match sites_of(&obj) {
        Err(e @ DiscoverError::NoSymbols { .. }) => {
            assert!(e.to_string().contains("has no symbol table"), "{e}")
        }
        other => panic!("a library without symbols must be refused: {other:?}"),
    }
    // SAFETY: nothing of the library is in use.
    unsafe { libc::dlclose(h) };
}

#[test]
fn a_stripped_library_keeps_its_exported_functions() {
    let path = scratch().join("libentdyn.so");
    build("gcc", &["-s"], &path);
    let h = dlopen(&path);
    let all = sites("libentdyn");
    assert_eq!(one(&all, "ent_extern").func, dlsym(h, "ent_extern"));
    assert!(
        all.iter().all(|s| s.name != "ent_static"),
        "static functions have no name in .dynsym"
    );
    // SAFETY: nothing of the library is in use.
    unsafe { libc::dlclose(h) };
}
