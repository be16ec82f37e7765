//! `cargo xtask install` / `cargo xtask uninstall`: libklp as a system library.
//!
//! Installs, under `$DESTDIR$LIBDIR`: `libklp.so.X.Y.Z` with the links `libklp.so.X`
//! (the soname) and `libklp.so`, `libklp.a`, and `pkgconfig/klp.pc` and
//! `pkgconfig/klp-static.pc`; under `$DESTDIR$INCLUDEDIR`: `klp.h` and `klp_macros.h`,
//! and the kernel compatibility headers under `klp/compat/` (`klp/compat/linux/*.h`,
//! which kernel livepatch modules include; the `.pc` files name the directory as the
//! variable `compatdir`).
//! Each directory comes from an option, else the environment variable of the same name,
//! else its default: `PREFIX` `/usr/local`, `LIBDIR` `$PREFIX/lib` (Debian's multiarch
//! directories work: `--libdir lib/x86_64-linux-gnu`), `INCLUDEDIR` `$PREFIX/include`;
//! a relative `LIBDIR` or `INCLUDEDIR` is taken under the prefix. `DESTDIR` (staged
//! installs, packages) is prepended to every path written, never to the paths recorded
//! in the `.pc` files.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "\
usage: cargo xtask install   [OPTIONS]   build libklp (release) and install it
       cargo xtask uninstall [OPTIONS]   remove what install put there

options (each also read from the environment variable of the same name in capitals):
  --prefix DIR      installation prefix                      [/usr/local]
  --libdir DIR      libraries and pkgconfig/, relative to the prefix unless absolute
                                                             [lib]
  --includedir DIR  headers, relative to the prefix unless absolute [include]
  --destdir DIR     staging root prepended to every path written (not to klp.pc's)
  --no-build        install what target/release holds, do not run cargo build
  --from DIR        install the libraries built in DIR (implies --no-build)

examples:
  cargo xtask install                                        # /usr/local
  cargo xtask install --prefix /usr --libdir lib/x86_64-linux-gnu
  DESTDIR=/tmp/stage PREFIX=/usr cargo xtask install         # staged, for a package
  cargo xtask uninstall --prefix /usr";

/// Where things go.
struct Layout {
    prefix: PathBuf,
    libdir: PathBuf,
    includedir: PathBuf,
    destdir: Option<PathBuf>,
}

impl Layout {
    /// `path` under `DESTDIR`, if any.
    fn staged(&self, path: &Path) -> PathBuf {
        match &self.destdir {
            Some(d) => d.join(path.strip_prefix("/").unwrap_or(path)),
            None => path.to_path_buf(),
        }
    }
}

fn main() -> ExitCode {
    match run(std::env::args_os().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<OsString>) -> Result<(), String> {
    let mut args = args.into_iter();
    let cmd = args.next().and_then(|a| a.into_string().ok());
    let opt = |name: &str| std::env::var_os(name.to_uppercase()).filter(|v| !v.is_empty());
    let mut prefix = opt("prefix");
    let mut libdir = opt("libdir");
    let mut includedir = opt("includedir");
    let mut destdir = opt("destdir");
    let mut build = true;
    let mut from = None;
    while let Some(a) = args.next() {
        let a = a.into_string().map_err(|a| format!("bad argument {a:?}"))?;
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(OsString::from(v))),
            None => (a.clone(), None),
        };
        let slot = match name.as_str() {
            "--prefix" => &mut prefix,
            "--libdir" => &mut libdir,
            "--includedir" => &mut includedir,
            "--destdir" => &mut destdir,
            "--from" => &mut from,
            "--no-build" => {
                build = false;
                continue;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ => return Err(format!("unknown option {a}\n{USAGE}")),
        };
        *slot = Some(
            inline
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))?,
        );
    }
    let prefix = PathBuf::from(prefix.unwrap_or_else(|| "/usr/local".into()));
    if !prefix.is_absolute() {
        return Err(format!("the prefix must be absolute: {}", prefix.display()));
    }
    let under = |d: Option<OsString>, default: &str| {
        let d = PathBuf::from(d.unwrap_or_else(|| default.into()));
        if d.is_absolute() { d } else { prefix.join(d) }
    };
    let layout = Layout {
        libdir: under(libdir, "lib"),
        includedir: under(includedir, "include"),
        destdir: destdir.map(PathBuf::from),
        prefix,
    };
    match cmd.as_deref() {
        Some("install") => install(&layout, build && from.is_none(), from.map(PathBuf::from)),
        Some("uninstall") => uninstall(&layout),
        Some("-h" | "--help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other}\n{USAGE}")),
    }
}

/// The workspace's root (this crate is `xtask/` in it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ is in the workspace")
        .to_path_buf()
}

/// The package version, which is the library's (`klp_version()`).
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The soname's version: the major one (`0.1.0` -> `0`).
fn major() -> &'static str {
    VERSION.split('.').next().unwrap_or(VERSION)
}

/// The compatibility headers, relative to `include/` of the source tree
/// (`klp/compat/...`), sorted.
fn compat_headers() -> Result<Vec<PathBuf>, String> {
    fn walk(base: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
        let dir = base.join(rel);
        let entries =
            fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        for e in entries {
            let e = e.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            let rel = rel.join(e.file_name());
            if e.path().is_dir() {
                walk(base, &rel, out)?;
            } else if rel.extension().is_some_and(|x| x == "h") {
                out.push(rel);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(&root().join("include"), Path::new("klp/compat"), &mut out)?;
    out.sort();
    Ok(out)
}

/// The files install writes, relative to the library and include directories.
fn files(layout: &Layout) -> Result<Vec<PathBuf>, String> {
    let lib = |n: &str| layout.libdir.join(n);
    let mut files = vec![
        lib(&format!("libklp.so.{VERSION}")),
        lib(&format!("libklp.so.{}", major())),
        lib("libklp.so"),
        lib("libklp.a"),
        lib("pkgconfig/klp.pc"),
        lib("pkgconfig/klp-static.pc"),
        layout.includedir.join("klp.h"),
        layout.includedir.join("klp_macros.h"),
    ];
    files.extend(
        compat_headers()?
            .into_iter()
            .map(|h| layout.includedir.join(h)),
    );
    Ok(files)
}

fn install(layout: &Layout, build: bool, from: Option<PathBuf>) -> Result<(), String> {
    let root = root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let target = if target.is_absolute() {
        target
    } else {
        root.join(target)
    };
    if build {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "-p", "klp-ffi", "--lib"])
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err("cargo build --release -p klp-ffi failed".into());
        }
    }
    let built = from.unwrap_or_else(|| target.join("release"));
    for lib in ["libklp.so", "libklp.a"] {
        if !built.join(lib).is_file() {
            return Err(format!(
                "{} missing (build it first)",
                built.join(lib).display()
            ));
        }
    }
    let libdir = layout.staged(&layout.libdir);
    let incdir = layout.staged(&layout.includedir);
    for d in [&libdir, &libdir.join("pkgconfig"), &incdir] {
        fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let real = format!("libklp.so.{VERSION}");
    let soname = format!("libklp.so.{}", major());
    copy(&built.join("libklp.so"), &libdir.join(&real), 0o755)?;
    copy(&built.join("libklp.a"), &libdir.join("libklp.a"), 0o644)?;
    link(&real, &libdir.join(&soname))?;
    link(&soname, &libdir.join("libklp.so"))?;
    for h in ["klp.h", "klp_macros.h"] {
        copy(&root.join("include").join(h), &incdir.join(h), 0o644)?;
    }
    for h in compat_headers()? {
        let to = incdir.join(&h);
        if let Some(d) = to.parent() {
            fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        copy(&root.join("include").join(&h), &to, 0o644)?;
    }
    let natives = native_static_libs()?;
    write(
        &libdir.join("pkgconfig/klp.pc"),
        &pc(layout, false, &natives),
    )?;
    write(
        &libdir.join("pkgconfig/klp-static.pc"),
        &pc(layout, true, &natives),
    )?;
    for f in files(layout)? {
        println!("installed {}", layout.staged(&f).display());
    }
    Ok(())
}

fn uninstall(layout: &Layout) -> Result<(), String> {
    for f in files(layout)? {
        let f = layout.staged(&f);
        match fs::remove_file(&f) {
            Ok(()) => println!("removed {}", f.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {}: {e}", f.display())),
        }
    }
    // The directories install made, only when nothing else is in them.
    let _ = fs::remove_dir(layout.staged(&layout.libdir.join("pkgconfig")));
    for d in ["klp/compat/linux", "klp/compat", "klp"] {
        let _ = fs::remove_dir(layout.staged(&layout.includedir.join(d)));
    }
    Ok(())
}

/// The `.pc` file: `klp.pc` links the shared library (its `Libs.private` are what a
/// static link needs besides `libklp.a`, for `pkg-config --static`); `klp-static.pc`
/// names the archive itself, so that `pkg-config --libs klp-static` links statically
/// whatever else is installed beside it.
fn pc(layout: &Layout, static_only: bool, natives: &str) -> String {
    let (name, libs, private) = if static_only {
        (
            "klp-static",
            format!("${{libdir}}/libklp.a {natives}"),
            String::new(),
        )
    } else {
        (
            "klp",
            "-L${libdir} -lklp".to_owned(),
            format!("Libs.private: {natives}\n"),
        )
    };
    format!(
        "prefix={prefix}\n\
         libdir={libdir}\n\
         includedir={includedir}\n\
         compatdir=${{includedir}}/klp/compat\n\
         \n\
         Name: {name}\n\
         Description: the Linux kernel's livepatch model for userspace programs\n\
         Version: {VERSION}\n\
         Libs: {libs}\n\
         {private}\
         Cflags: -I${{includedir}}\n",
        prefix = layout.prefix.display(),
        libdir = under_prefix(&layout.libdir, &layout.prefix),
        includedir = under_prefix(&layout.includedir, &layout.prefix),
    )
}

/// `dir` as pkg-config writes it: `${prefix}/...` when under the prefix (so that the
/// file still holds when `--define-prefix` relocates it).
fn under_prefix(dir: &Path, prefix: &Path) -> String {
    match dir.strip_prefix(prefix) {
        Ok(rest) => format!("${{prefix}}/{}", rest.display()),
        Err(_) => dir.display().to_string(),
    }
}

/// What a program linking the static library needs besides it, as rustc reports it for
/// this toolchain and target (`--print native-static-libs` of an empty static library).
fn native_static_libs() -> Result<String, String> {
    let dir = std::env::temp_dir().join(format!("klp-xtask-{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let src = dir.join("empty.rs");
    write(&src, "")?;
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc)
        .args(["--crate-type", "staticlib", "--crate-name", "empty"])
        .args(["--print", "native-static-libs", "--out-dir"])
        .arg(&dir)
        .arg(&src)
        .output()
        .map_err(|e| format!("cannot run rustc: {e}"))?;
    let _ = fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines()
        .find_map(|l| l.split_once("native-static-libs: ").map(|(_, v)| v.trim()))
        .map(str::to_owned)
        .ok_or_else(|| format!("rustc did not print native-static-libs:\n{text}"))
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    // A new file renamed into place: a running program keeps its mapping of the old one.
    let tmp = to.with_extension("xtask-tmp");
    fs::copy(from, &tmp)
        .and_then(|_| fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)))
        .and_then(|()| fs::rename(&tmp, to))
        .map_err(|e| {
            let _ = fs::remove_file(&tmp);
            format!("cannot install {} as {}: {e}", from.display(), to.display())
        })
}

fn link(target: &str, at: &Path) -> Result<(), String> {
    match fs::symlink_metadata(at) {
        Ok(_) => {
            fs::remove_file(at).map_err(|e| format!("cannot replace {}: {e}", at.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", at.display())),
    }
    std::os::unix::fs::symlink(target, at).map_err(|e| format!("cannot link {}: {e}", at.display()))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
