//! libklp as a system library: `cargo xtask install` into a temporary prefix (with a
//! `DESTDIR` too), the README's C example built with pkg-config against the shared and
//! the static library and run, the same example linked from the build tree (the soname
//! link there), a kernel livepatch module (the kernel's livepatch sample, in its form)
//! built against the installed compatibility headers (`compatdir` of `klp.pc`) and
//! loaded into a program, the soname, file names and `klp_version()` against the
//! package version, and `cargo xtask uninstall`.

mod common;

use common::{lib_dir, root, scratch};
use std::path::{Path, PathBuf};
use std::process::Command;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The C block of the README that follows the `c-example` marker.
fn readme_example() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let after = readme
        .split_once("<!-- c-example:")
        .expect("README: no c-example marker")
        .1;
    let body = after
        .split_once("```c\n")
        .expect("README: no C block after the marker")
        .1;
    body.split_once("```")
        .expect("README: unterminated block")
        .0
        .to_owned()
}

/// Run `cmd`; its standard output, or a panic with everything it printed.
fn output(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `cargo xtask <args>` taking the libraries already built in `lib_dir()`.
fn xtask(args: &[&str], env: &[(&str, &Path)]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let target = lib_dir().parent().unwrap().to_path_buf();
    let mut cmd = Command::new(cargo);
    cmd.args(["run", "--quiet", "-p", "xtask", "--", args[0], "--from"])
        .arg(lib_dir())
        .args(&args[1..])
        .current_dir(root())
        .env("CARGO_TARGET_DIR", target);
    for var in ["PREFIX", "LIBDIR", "INCLUDEDIR", "DESTDIR"] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    output(&mut cmd)
}

/// `pkg-config args` over the installed `.pc` files. Where pkg-config is not installed,
/// the few queries used here are answered from the file itself (variables expanded),
/// so that the test command keeps working on a machine with only a C compiler.
fn pkg_config(pcdir: &Path, args: &[&str]) -> Vec<String> {
    let mut cmd = Command::new("pkg-config");
    cmd.args(args)
        .env("PKG_CONFIG_PATH", pcdir)
        .env_remove("PKG_CONFIG_LIBDIR")
        .env_remove("PKG_CONFIG_SYSROOT_DIR");
    if cmd.output().is_err() {
        eprintln!("pkg-config is not installed: reading the .pc files directly");
        return pc_fallback(pcdir, args);
    }
    output(&mut cmd)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn pc_fallback(pcdir: &Path, args: &[&str]) -> Vec<String> {
    let name = args.last().unwrap();
    let text = std::fs::read_to_string(pcdir.join(format!("{name}.pc"))).unwrap();
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut fields = std::collections::HashMap::new();
    for line in text.lines() {
        let expand = |v: &str| {
            vars.iter()
                .fold(v.to_owned(), |v, (k, x)| v.replace(&format!("${{{k}}}"), x))
        };
        if let Some((k, v)) = line.split_once('=').filter(|(k, _)| !k.contains(':')) {
            let v = expand(v.trim());
            vars.push((k.trim().to_owned(), v));
        } else if let Some((k, v)) = line.split_once(':') {
            fields.insert(k.trim().to_owned(), expand(v.trim()));
        }
    }
    let field = |k: &str| fields.get(k).cloned().unwrap_or_default();
    let mut out = String::new();
    for a in &args[..args.len() - 1] {
        if let Some(var) = a.strip_prefix("--variable=") {
            out += &vars
                .iter()
                .find(|(k, _)| k == var)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            continue;
        }
        match *a {
            "--modversion" => out += &field("Version"),
            "--cflags" => out += &format!(" {}", field("Cflags")),
            "--libs" => out += &format!(" {}", field("Libs")),
            "--static" => out += &format!(" {}", field("Libs.private")),
            other => panic!("pkg-config fallback: {other}"),
        }
    }
    out.split_whitespace().map(str::to_owned).collect()
}

fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "gcc".to_owned())
}

/// Build `src` with `flags`, run it, check the example's output.
fn build_and_run(src: &Path, exe: &Path, flags: &[String]) {
    output(
        Command::new(cc())
            .args(["-std=gnu11", "-O2", "-Wall", "-Werror"])
            .arg(src)
            .args(flags)
            .arg("-o")
            .arg(exe),
    );
    let out = output(&mut Command::new(exe));
    assert_eq!(
        out,
        "compute(1) = 2\ncompute(1) = 3\ncompute(1) = 2\n",
        "{}",
        exe.display()
    );
}

/// The `NEEDED` entries of an ELF file.
fn needed(exe: &Path) -> Vec<String> {
    output(Command::new("readelf").arg("-d").arg(exe))
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next().map(str::to_owned))
        .collect()
}

fn soname_of(lib: &Path) -> String {
    output(Command::new("readelf").arg("-d").arg(lib))
        .lines()
        .find(|l| l.contains("(SONAME)"))
        .and_then(|l| l.split('[').nth(1)?.split(']').next().map(str::to_owned))
        .unwrap_or_else(|| panic!("{}: no SONAME", lib.display()))
}

fn link_target(p: &Path) -> PathBuf {
    std::fs::read_link(p).unwrap_or_else(|e| panic!("{} is not a link: {e}", p.display()))
}

/// A program that plays the kernel for the livepatch sample: `cmdline_proc_show`
/// (patchable) and `seq_printf`; it loads the module given, shows the command line
/// before, with and after the patch, and unloads the module.
const KERNEL: &str = r#"#include <klp.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

struct seq_file {
	char buf[256];
	size_t n;
};

void seq_printf(struct seq_file *m, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	m->n += vsnprintf(m->buf + m->n, sizeof(m->buf) - m->n, fmt, ap);
	va_end(ap);
}

KLP_PATCHABLE(int, cmdline_proc_show, (struct seq_file *m, void *v), (m, v))
{
	(void)v;
	seq_printf(m, "%s\n", "original");
	return 0;
}

static void show(void)
{
	struct seq_file m = { "", 0 };

	cmdline_proc_show(&m, NULL);
	fputs(m.buf, stdout);
}

int main(int argc, char **argv)
{
	(void)argc;
	show();
	if (klp_module_load(argv[1], "") || klp_wait_transition(10000))
		return 1;
	show();
	if (klp_patch_set_enabled("livepatch_sample", 0) || klp_wait_transition(10000))
		return 1;
	while (klp_module_refcnt("livepatch_sample") > 0)
		usleep(1000);
	if (klp_module_unload("livepatch_sample"))
		return 1;
	show();
	return 0;
}
"#;

#[test]
fn install_link_with_pkg_config_run_and_uninstall() {
    let dir = scratch("install");
    let prefix = dir.join("prefix");
    let major = VERSION.split('.').next().unwrap();
    let soname = format!("libklp.so.{major}");
    let real = format!("libklp.so.{VERSION}");

    // A Debian-style multiarch library directory, relative to the prefix.
    xtask(
        &["install", "--prefix", prefix.to_str().unwrap()],
        &[("LIBDIR", Path::new("lib/x86_64-linux-gnu"))],
    );
    let libdir = prefix.join("lib/x86_64-linux-gnu");
    assert!(libdir.join(&real).is_file());
    assert_eq!(link_target(&libdir.join(&soname)), Path::new(&real));
    assert_eq!(link_target(&libdir.join("libklp.so")), Path::new(&soname));
    assert!(libdir.join("libklp.a").is_file());
    assert!(prefix.join("include/klp.h").is_file());
    assert!(prefix.join("include/klp_macros.h").is_file());
    // The soname is the package's major version.
    assert_eq!(soname_of(&libdir.join(&real)), soname);

    let pcdir = libdir.join("pkgconfig");
    assert_eq!(pkg_config(&pcdir, &["--modversion", "klp"]), [VERSION]);
    let cflags = pkg_config(&pcdir, &["--cflags", "klp"]);
    assert_eq!(cflags, [format!("-I{}", prefix.join("include").display())]);
    let static_libs = pkg_config(&pcdir, &["--static", "--libs", "klp"]);
    assert!(
        static_libs.iter().any(|f| f == "-lpthread"),
        "{static_libs:?}"
    );

    let src = dir.join("ex.c");
    std::fs::write(&src, readme_example()).unwrap();

    // Shared, by pkg-config (and an rpath, since the prefix is not the loader's).
    let mut flags = pkg_config(&pcdir, &["--cflags", "--libs", "klp"]);
    flags.push(format!("-Wl,-rpath,{}", libdir.display()));
    let exe = dir.join("ex_shared");
    build_and_run(&src, &exe, &flags);
    assert!(needed(&exe).contains(&soname), "{:?}", needed(&exe));

    // Static, by pkg-config: no libklp at run time.
    let flags = pkg_config(&pcdir, &["--cflags", "--libs", "klp-static"]);
    let exe = dir.join("ex_static");
    build_and_run(&src, &exe, &flags);
    assert!(
        !needed(&exe).iter().any(|n| n.starts_with("libklp")),
        "{:?}",
        needed(&exe)
    );

    // klp_version() is the package version.
    let vsrc = dir.join("version.c");
    std::fs::write(
        &vsrc,
        "#include <klp.h>\n#include <stdio.h>\nint main(void) { puts(klp_version()); return 0; }\n",
    )
    .unwrap();
    let vexe = dir.join("version");
    output(
        Command::new(cc())
            .arg(&vsrc)
            .args(pkg_config(&pcdir, &["--cflags", "--libs", "klp-static"]))
            .arg("-o")
            .arg(&vexe),
    );
    assert_eq!(output(&mut Command::new(&vexe)).trim(), VERSION);

    // From the build tree: the soname link beside libklp.so.
    let built = lib_dir();
    assert_eq!(link_target(&built.join(&soname)), Path::new("libklp.so"));
    let flags = [
        format!("-I{}", root().join("include").display()),
        format!("-L{}", built.display()),
        "-lklp".to_owned(),
        format!("-Wl,-rpath,{}", built.display()),
    ];
    build_and_run(&src, &dir.join("ex_tree"), &flags);

    // A kernel livepatch module, unchanged, against the installed compatibility headers,
    // loaded into a program that plays the kernel.
    let compat = pkg_config(&pcdir, &["--variable=compatdir", "klp"]);
    assert_eq!(
        compat,
        [prefix.join("include/klp/compat").display().to_string()]
    );
    assert!(
        prefix
            .join("include/klp/compat/linux/livepatch.h")
            .is_file()
    );
    let module = dir.join("livepatch-sample.so");
    output(
        Command::new(cc())
            .args(["-std=gnu11", "-O2", "-Wall", "-Werror", "-fPIC", "-shared"])
            .arg(format!("-I{}", compat[0]))
            .arg(root().join("c-tests/samples/livepatch-sample.c"))
            .args(pkg_config(&pcdir, &["--libs", "klp"]))
            .arg("-o")
            .arg(&module),
    );
    let ksrc = dir.join("kernel.c");
    std::fs::write(&ksrc, KERNEL).unwrap();
    let kexe = dir.join("kernel");
    let mut flags = pkg_config(&pcdir, &["--cflags", "--libs", "klp"]);
    flags.push(format!("-Wl,-rpath,{}", libdir.display()));
    flags.push("-rdynamic".to_owned());
    output(
        Command::new(cc())
            .args(["-std=gnu11", "-O2", "-Wall", "-Werror"])
            .arg(&ksrc)
            .args(&flags)
            .arg("-o")
            .arg(&kexe),
    );
    assert_eq!(
        output(Command::new(&kexe).arg(&module)),
        "original\nthis has been live patched\noriginal\n"
    );

    // Uninstall leaves nothing of ours.
    xtask(
        &["uninstall", "--prefix", prefix.to_str().unwrap()],
        &[("LIBDIR", Path::new("lib/x86_64-linux-gnu"))],
    );
    for f in [
        libdir.join(&real),
        libdir.join(&soname),
        libdir.join("libklp.so"),
        libdir.join("libklp.a"),
        pcdir.join("klp.pc"),
        pcdir.join("klp-static.pc"),
        prefix.join("include/klp.h"),
        prefix.join("include/klp_macros.h"),
        prefix.join("include/klp"),
    ] {
        assert!(f.symlink_metadata().is_err(), "{} left", f.display());
    }

    // DESTDIR stages under another root; the .pc files name the final prefix.
    let stage = dir.join("stage");
    xtask(
        &["install", "--prefix", "/opt/klp"],
        &[("DESTDIR", stage.as_path())],
    );
    let pc = std::fs::read_to_string(stage.join("opt/klp/lib/pkgconfig/klp.pc")).unwrap();
    assert!(pc.contains("prefix=/opt/klp\n"), "{pc}");
    assert!(pc.contains("libdir=${prefix}/lib\n"), "{pc}");
    assert!(!pc.contains(stage.to_str().unwrap()), "{pc}");
    assert!(stage.join("opt/klp/include/klp.h").is_file());
    assert!(
        stage
            .join("opt/klp/include/klp/compat/linux/module.h")
            .is_file()
    );
    assert!(pc.contains("compatdir=${includedir}/klp/compat\n"), "{pc}");

    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_options_are_refused_and_install_nothing() {
    let dir = scratch("install-bad");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let target = lib_dir().parent().unwrap().to_path_buf();
    for args in [
        vec!["install", "--prefix", "relative/prefix"],
        vec!["install", "--bogus"],
        vec!["install", "--prefix"],
        vec!["frobnicate"],
    ] {
        let out = Command::new(&cargo)
            .args(["run", "--quiet", "-p", "xtask", "--manifest-path"])
            .arg(root().join("Cargo.toml"))
            .args(["--", args[0], "--from"])
            .arg(lib_dir())
            .args(&args[1..])
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("PREFIX")
            .env_remove("DESTDIR")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("xtask: "), "{args:?}: {err}");
    }
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
    let _ = std::fs::remove_dir_all(&dir);
}
