//! `klp-demo`: a multi-threaded C server live patched while it serves, under both
//! read-side flavors.
//!
//! Builds libklp (`cargo build -p klp-ffi --lib`, same profile and target directory as
//! this binary), compiles `demo/c` with `$CC` (default `gcc`) into
//! `<target>/klp-demo/<pid>/`, runs the server once with `KLP_SYNC=preempt` and once with
//! `KLP_SYNC=rcu`, streaming its output, and prints both flavors' figures side by side.
//!
//! `--quick` (or `KLP_DEMO_QUICK=1`): shorter phases and fewer measurements (the test).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

const FLAVORS: [&str; 2] = ["preempt", "rcu"];

/// A failure, already worded for the user.
struct Failure(String);

type Result<T> = std::result::Result<T, Failure>;

fn fail<T>(msg: impl Into<String>) -> Result<T> {
    Err(Failure(msg.into()))
}

/// The figures of one flavor, from the server's `RESULT` line.
struct Figures {
    flavor: String,
    direct_ns: f64,
    unpatched_ns: f64,
    patched_ns: f64,
    transition_us: f64,
    transition_max_us: f64,
    /// `k/n`: how many of the measured transitions waited for a retry.
    transition_retried: String,
    synchronize_us: f64,
}

impl Figures {
    /// `RESULT flavor=rcu call_direct_ns=... call_unpatched_ns=... ...`
    fn parse(line: &str) -> Option<Self> {
        let fields: Vec<(&str, &str)> = line
            .strip_prefix("RESULT ")?
            .split_whitespace()
            .map(|f| f.split_once('='))
            .collect::<Option<_>>()?;
        let get = |key: &str| fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let num = |key: &str| get(key)?.parse::<f64>().ok();
        Some(Figures {
            flavor: get("flavor")?.to_owned(),
            direct_ns: num("call_direct_ns")?,
            unpatched_ns: num("call_unpatched_ns")?,
            patched_ns: num("call_patched_ns")?,
            transition_us: num("transition_us")?,
            transition_max_us: num("transition_max_us")?,
            transition_retried: get("transition_retried")?.to_owned(),
            synchronize_us: num("synchronize_us")?,
        })
    }
}

/// The workspace root (this crate's parent directory).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("demo/ has a parent")
        .to_path_buf()
}

/// `target/<profile>/`, with libklp built there, as this binary was.
fn build_libklp() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| Failure(format!("current_exe: {e}")))?;
    let Some(profile_dir) = exe.parent() else {
        return fail("cannot find the target directory");
    };
    let Some(target_dir) = profile_dir.parent() else {
        return fail("cannot find the target directory");
    };
    let profile = profile_dir
        .file_name()
        .and_then(|p| p.to_str())
        .unwrap_or("release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "-p", "klp-ffi", "--lib"])
        .current_dir(root())
        .env("CARGO_TARGET_DIR", target_dir)
        .stdout(Stdio::null());
    match profile {
        "release" => {
            cmd.arg("--release");
        }
        "debug" => {}
        other => {
            cmd.args(["--profile", other]);
        }
    }
    println!("klp-demo: building libklp (cargo build -p klp-ffi --lib, profile {profile})");
    let status = cmd
        .status()
        .map_err(|e| Failure(format!("cannot run {cargo}: {e}")))?;
    if !status.success() {
        return fail(format!("cargo build -p klp-ffi --lib failed ({status})"));
    }
    if !profile_dir.join("libklp.so").exists() {
        return fail(format!(
            "{} is missing",
            profile_dir.join("libklp.so").display()
        ));
    }
    Ok(profile_dir.to_path_buf())
}

/// Run `$CC` (default gcc) with the project's flags and `args`.
fn cc(args: &[&str]) -> Result<()> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".to_owned());
    let out = Command::new(&cc)
        .args(["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O2"])
        .args(args)
        .output()
        .map_err(|e| {
            Failure(format!(
                "cannot run the C compiler '{cc}' ({e}): install gcc, or set CC to a GNU C compiler (gcc or clang)"
            ))
        })?;
    if !out.status.success() {
        return fail(format!(
            "{cc} {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Compile the server and the two patch modules into `dir`, next to a copy of libklp
/// (found through `$ORIGIN`).
fn compile(lib_dir: &Path, dir: &Path) -> Result<()> {
    let copy = |name: &str| {
        std::fs::copy(lib_dir.join("libklp.so"), dir.join(name))
            .map_err(|e| Failure(format!("copy libklp.so: {e}")))
    };
    copy("libklp.so")?;
    // The soname, which the programs record and the loader looks for.
    copy("libklp.so.0")?;
    let root = root();
    let s = |p: &Path| p.to_str().expect("UTF-8 path").to_owned();
    let (inc, c, out) = (s(&root.join("include")), s(&root.join("demo/c")), s(dir));
    let (inc, c_inc) = (format!("-I{inc}"), format!("-I{c}"));
    let lib = format!("-L{out}");
    let common = [
        inc.as_str(),
        c_inc.as_str(),
        lib.as_str(),
        "-Wl,-rpath,$ORIGIN",
    ];
    println!("klp-demo: compiling demo/c (server, patch_v1.so, patch_v2.so)");
    for name in ["patch_v1", "patch_v2"] {
        let (src, so) = (format!("{c}/{name}.c"), format!("{out}/{name}.so"));
        let mut args = vec!["-fPIC", "-shared", "-o", &so, &src];
        args.extend(common);
        args.push("-lklp");
        cc(&args)?;
    }
    let (src, exe) = (format!("{c}/server.c"), format!("{out}/server"));
    // -rdynamic: the patch modules call demo_say and demo_read_slow_body.
    let mut args = vec!["-rdynamic", "-o", &exe, &src];
    args.extend(common);
    args.extend(["-lklp", "-lpthread", "-ldl"]);
    cc(&args)
}

/// Run the server under `flavor`, streaming its output; its figures.
fn run(dir: &Path, flavor: &str, quick: bool) -> Result<Figures> {
    println!("\n=== flavor {flavor} (KLP_SYNC={flavor}) ===");
    let mut cmd = Command::new(dir.join("server"));
    cmd.arg(dir).env("KLP_SYNC", flavor).stdout(Stdio::piped());
    if quick {
        cmd.arg("--quick");
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Failure(format!("cannot run the server: {e}")))?;
    let stdout = child.stdout.take().expect("piped");
    let mut figures = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| Failure(format!("reading the server's output: {e}")))?;
        if line.starts_with("RESULT ") {
            figures = Figures::parse(&line);
        }
        println!("{line}");
    }
    let status = child
        .wait()
        .map_err(|e| Failure(format!("waiting for the server: {e}")))?;
    if !status.success() {
        return fail(format!("the server failed under {flavor} ({status})"));
    }
    match figures {
        Some(f) if f.flavor == flavor => Ok(f),
        _ => fail(format!("the server printed no RESULT line for {flavor}")),
    }
}

fn table(rows: &[Figures]) {
    println!("\n=== parse_request call cost, transition and grace period, per flavor ===");
    println!(
        "{:<8} | {:>10} {:>19} {:>19} | {:>10} {:>10} {:>7} | {:>15}",
        "flavor",
        "direct",
        "patchable",
        "patched",
        "transition",
        "max",
        "retried",
        "klp_synchronize"
    );
    for r in rows {
        println!(
            "{:<8} | {:>7.1} ns {:>8.1} ns ({:>+5.1}) {:>8.1} ns ({:>+5.1}) | {:>7.0} µs {:>7.0} µs {:>7} | {:>12.1} µs",
            r.flavor,
            r.direct_ns,
            r.unpatched_ns,
            r.unpatched_ns - r.direct_ns,
            r.patched_ns,
            r.patched_ns - r.direct_ns,
            r.transition_us,
            r.transition_max_us,
            r.transition_retried,
            r.synchronize_us
        );
    }
    println!(
        "call: median ns per call of parse_request(\"add 1 2\") (workers paused): \"direct\" is the same body"
    );
    println!(
        "  without the patchable wrapper, in brackets the wrapper's cost; \"patched\" runs a replacement through libklp."
    );
    println!(
        "transition: klp_enable_patch -> transition complete, one function, with the 4 workers serving: median, max,"
    );
    println!(
        "  and how many waited for the retry of a stalled transition (every 10 ms in the demo)."
    );
    println!("klp_synchronize: one grace period with the workers serving (median).");
}

fn main() -> ExitCode {
    let start = Instant::now();
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("KLP_DEMO_QUICK").is_ok_and(|v| v == "1");
    let result = (|| -> Result<Vec<Figures>> {
        let lib_dir = build_libklp()?;
        let dir = lib_dir
            .parent()
            .expect("target/<profile>")
            .join("klp-demo")
            .join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Failure(format!("create {}: {e}", dir.display())))?;
        compile(&lib_dir, &dir)?;
        let t = Instant::now();
        let rows = FLAVORS
            .iter()
            .map(|f| run(&dir, f, quick))
            .collect::<Result<Vec<_>>>()?;
        println!(
            "\nklp-demo: both runs took {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let _ = std::fs::remove_dir_all(&dir);
        Ok(rows)
    })();
    match result {
        Ok(rows) => {
            table(&rows);
            println!("\nklp-demo: done in {:.1} s", start.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(Failure(msg)) => {
            eprintln!("klp-demo: {msg}");
            ExitCode::FAILURE
        }
    }
}
