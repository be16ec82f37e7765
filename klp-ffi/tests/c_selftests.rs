//! The kernel's livepatch selftests as C programs against the C API (`c-tests/selftests/`,
//! see its README.md): test-livepatch.sh, test-callbacks.sh, test-shadow-vars.sh,
//! test-state.sh and test-sysfs.sh, every case, under both flavors.
//!
//! The driver (`selftests`: vmlinux, functions.sh and the cases) loads the target and
//! livepatch modules, each a shared object, with `dlopen`, and prints the kernel log. Each
//! case runs in a process of its own, with `KLP_SYNC=preempt` and with `KLP_SYNC=rcu`,
//! the cases of one script in parallel. As the harness's `check_result` does, the lines
//! that contain `livepatch:` or `test_klp` are kept and compared line by line with
//! `c-tests/selftests/expected/<case>.log`; libklp's lines must also carry the kernel's
//! levels (the driver prints them as `<N>`).
//!
//! The compiler is `gcc`, or `$CC`.

// This test builds in the target's tmp directory: `common::scratch` is unused.
#[allow(dead_code)]
mod common;

use common::{cc, cc_kernel, lib_dir, root};
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The target and livepatch modules: `c-tests/selftests/test_modules/<name>.c`, built
/// as `<name>.so` with `KBUILD_MODNAME` set to the name (as kbuild does). The livepatch
/// modules and test_klp_shadow_vars are the kernel's, in its form, built with the
/// compatibility headers (`include/klp/compat`); the target modules ([`TARGETS`]) stand
/// for kernel code and use `c-tests/selftests/klp_selftest.h`.
const MODULES: &[&str] = &[
    "test_klp_livepatch",
    "test_klp_atomic_replace",
    "test_klp_syscall",
    "test_klp_callbacks_demo",
    "test_klp_callbacks_demo2",
    "test_klp_callbacks_mod",
    "test_klp_callbacks_busy",
    "test_klp_mod_target",
    "test_klp_mod_patch",
    "test_klp_shadow_vars",
    "test_klp_state",
    "test_klp_state2",
    "test_klp_state3",
];

/// The target modules.
const TARGETS: &[&str] = &[
    "test_klp_callbacks_mod",
    "test_klp_callbacks_busy",
    "test_klp_mod_target",
];

/// The sources of the driver, in `c-tests/selftests/`.
const DRIVER: &[&str] = &[
    "vmlinux.c",
    "functions.c",
    "test-livepatch.c",
    "test-callbacks.c",
    "test-shadow-vars.c",
    "test-state.c",
    "test-sysfs.c",
];

const FLAVORS: &[&str] = &["preempt", "rcu"];

/// How long one case may take before it is killed.
const CASE_TIMEOUT: Duration = Duration::from_secs(60);

struct Built {
    dir: PathBuf,
    exe: PathBuf,
}

/// Build libklp, the modules and the driver once for the whole binary.
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(build)
}

/// A directory of this process under the target's tmp directory, after removing those
/// of earlier runs whose process is gone.
fn scratch_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("c-selftests-")) else {
                continue;
            };
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = tmp.join(format!("c-selftests-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn build() -> Built {
    let lib = lib_dir();
    let dir = scratch_dir();
    let root = root();
    let src = root.join("c-tests/selftests");
    let include = root.join("include");
    // Linked as libklp.so; run as libklp.so.0 (its soname), found through the rpath.
    std::fs::copy(lib.join("libklp.so"), dir.join("libklp.so")).unwrap();
    std::fs::copy(lib.join("libklp.so"), dir.join("libklp.so.0")).unwrap();
    let mut l = OsString::from("-L");
    l.push(&dir);
    let mut rpath = OsString::from("-Wl,-rpath,");
    rpath.push(&dir);
    let mut inc_src = OsString::from("-I");
    inc_src.push(&src);
    let mut inc = OsString::from("-I");
    inc.push(&include);
    let mut inc_compat = OsString::from("-I");
    inc_compat.push(include.join("klp/compat"));

    std::thread::scope(|s| {
        for &m in MODULES {
            let (dir, src, l, inc, inc_src, inc_compat) =
                (&dir, &src, &l, &inc, &inc_src, &inc_compat);
            s.spawn(move || {
                let modname = OsString::from(format!("-DKBUILD_MODNAME=\"{m}\""));
                let so = dir.join(format!("{m}.so"));
                let source = src.join(format!("test_modules/{m}.c"));
                let rest: [&std::ffi::OsStr; 7] = [
                    modname.as_os_str(),
                    source.as_os_str(),
                    "-o".as_ref(),
                    so.as_os_str(),
                    l.as_os_str(),
                    "-lklp".as_ref(),
                    "-lpthread".as_ref(),
                ];
                if TARGETS.contains(&m) {
                    let mut args: Vec<&std::ffi::OsStr> = vec![
                        "-fPIC".as_ref(),
                        "-shared".as_ref(),
                        inc.as_os_str(),
                        inc_src.as_os_str(),
                    ];
                    args.extend(rest);
                    cc(&args);
                } else {
                    let mut args: Vec<&std::ffi::OsStr> =
                        vec!["-fPIC".as_ref(), "-shared".as_ref(), inc_compat.as_os_str()];
                    args.extend(rest);
                    cc_kernel(&args);
                }
            });
        }
        // vmlinux exports its symbols to the modules (-rdynamic).
        let exe = dir.join("selftests");
        let mut args: Vec<OsString> = vec![inc.clone(), inc_src.clone()];
        args.extend(DRIVER.iter().map(|f| src.join(f).into_os_string()));
        args.extend([
            "-o".into(),
            exe.clone().into_os_string(),
            "-rdynamic".into(),
            l.clone(),
            "-lklp".into(),
            rpath.clone(),
            "-ldl".into(),
            "-lpthread".into(),
        ]);
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        cc(&args);
    });
    Built {
        exe: dir.join("selftests"),
        dir,
    }
}

/// Run one case in its own process: its standard output, or why it failed.
fn run_case(b: &Built, case: &str, sync: &str) -> Result<String, String> {
    let mut child = Command::new(&b.exe)
        .arg(case)
        .arg(&b.dir)
        .env("KLP_SYNC", sync)
        .env_remove("KLP_DEBUG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", b.exe.display()))?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let end = Instant::now() + CASE_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(st);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    match status {
        Some(st) if st.success() => Ok(out),
        Some(st) => Err(format!(
            "the driver failed ({st})\n--- stderr\n{err}--- stdout\n{out}"
        )),
        None => Err(format!(
            "timed out after {CASE_TIMEOUT:?}\n--- stderr\n{err}--- stdout\n{out}"
        )),
    }
}

/// A line of the log: its printk level (`<N>` first), if any, and its text.
fn split_level(line: &str) -> (Option<u8>, &str) {
    let b = line.as_bytes();
    if b.len() >= 3 && b[0] == b'<' && b[1].is_ascii_digit() && b[2] == b'>' {
        (Some(b[1] - b'0'), &line[3..])
    } else {
        (None, line)
    }
}

/// The level (§9.1 of the reference) of a line of libklp that the selftests print.
fn core_level(line: &str) -> Option<u8> {
    const ERR: u8 = 3;
    const WARNING: u8 = 4;
    const NOTICE: u8 = 5;
    const DEBUG: u8 = 7;
    let msg = line.strip_prefix("livepatch: ")?;
    let debug = [
        "initializing patching transition",
        "initializing unpatching transition",
        "completing patching transition",
        "completing unpatching transition",
        "canceling patching transition, going to unpatch",
        "reversing transition from",
    ];
    let notice = [
        "starting patching transition",
        "starting unpatching transition",
        "patching complete",
        "unpatching complete",
    ];
    if msg.starts_with("enabling patch ")
        || msg.starts_with("applying patch ")
        || msg.starts_with("reverting patch ")
        || msg == "signaling remaining tasks"
        || notice.iter().any(|n| msg.ends_with(n))
    {
        Some(NOTICE)
    } else if debug.iter().any(|d| msg.contains(d)) {
        Some(DEBUG)
    } else if msg.starts_with("pre-patch callback failed")
        || msg.starts_with("failed to enable patch")
        || msg.starts_with("forcing remaining tasks")
        || (msg.starts_with("patch '") && msg.contains("refusing to load module"))
    {
        Some(WARNING)
    } else if msg.starts_with("Livepatch patch (") {
        Some(ERR)
    } else {
        None
    }
}

/// The lines `check_result` compares: those with `livepatch:` or `test_klp`, without
/// the taint lines, without their levels.
fn check_result(stdout: &str, expected: &str) -> Result<(), String> {
    let kept: Vec<(Option<u8>, &str)> = stdout
        .lines()
        .map(split_level)
        .filter(|(_, l)| {
            (l.contains("livepatch:") || l.contains("test_klp"))
                && !l.contains("tainting kernel")
                && !l.contains("taints kernel")
        })
        .collect();
    let actual: Vec<&str> = kept.iter().map(|&(_, l)| l).collect();
    let expected: Vec<&str> = expected.lines().collect();
    if actual != expected {
        return Err(format!(
            "the log differs from the expected log (- expected, + actual):\n{}",
            diff(&expected, &actual)
        ));
    }
    let wrong: Vec<String> = kept
        .iter()
        .filter_map(|&(level, l)| {
            let want = core_level(l)?;
            (level != Some(want)).then(|| format!("  {l:?}: level {level:?} instead of {want}"))
        })
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("lines at the wrong level:\n{}", wrong.join("\n")))
    }
}

/// A line diff (longest common subsequence): `  ` common, `- ` expected only, `+ `
/// actual only, each with its line number in the expected or actual log.
fn diff(expected: &[&str], actual: &[&str]) -> String {
    let (n, m) = (expected.len(), actual.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if expected[i] == actual[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < n || j < m {
        if i < n && j < m && expected[i] == actual[j] {
            out.push_str(&format!("  {:3} {}\n", i + 1, expected[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("+ {:3} {}\n", j + 1, actual[j]));
            j += 1;
        } else {
            out.push_str(&format!("- {:3} {}\n", i + 1, expected[i]));
            i += 1;
        }
    }
    out
}

fn expected_log(case: &str) -> String {
    let path = root().join(format!("c-tests/selftests/expected/{case}.log"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Run `cases` under every flavor, in parallel processes; panic naming every failure.
fn run_script(script: &str, cases: &[&str]) {
    let b = built();
    let jobs: Vec<(&str, &str)> = cases
        .iter()
        .flat_map(|&c| FLAVORS.iter().map(move |&f| (c, f)))
        .collect();
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
        * 2;
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..workers.min(jobs.len()) {
            s.spawn(|| {
                while let Some(&(case, sync)) = jobs.get(next.fetch_add(1, Ordering::SeqCst)) {
                    let t = Instant::now();
                    let r = run_case(b, case, sync)
                        .and_then(|out| check_result(&out, &expected_log(case)));
                    eprintln!(
                        "{script}: {case} ({sync}): {} in {:?}",
                        if r.is_ok() { "ok" } else { "FAILED" },
                        t.elapsed()
                    );
                    if let Err(e) = r {
                        failures
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(format!("=== {case} (KLP_SYNC={sync}): {e}"));
                    }
                }
            });
        }
    });
    eprintln!("{script}: {} runs in {:?}", jobs.len(), start.elapsed());
    let failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    assert!(
        failures.is_empty(),
        "{} of {} runs of {script} failed:\n{}",
        failures.len(),
        jobs.len(),
        failures.join("\n")
    );
}

#[test]
fn test_livepatch_sh() {
    run_script(
        "test-livepatch.sh",
        &[
            "livepatch-1",
            "livepatch-2",
            "livepatch-3",
            "livepatch-4",
            "livepatch-5",
        ],
    );
}

#[test]
fn test_callbacks_sh() {
    run_script(
        "test-callbacks.sh",
        &[
            "callbacks-1",
            "callbacks-2",
            "callbacks-3",
            "callbacks-4",
            "callbacks-5",
            "callbacks-6",
            "callbacks-7",
            "callbacks-8",
            "callbacks-9",
            "callbacks-9b",
            "callbacks-10",
            "callbacks-11",
        ],
    );
}

#[test]
fn test_shadow_vars_sh() {
    run_script("test-shadow-vars.sh", &["shadow-vars-1"]);
}

#[test]
fn test_state_sh() {
    run_script(
        "test-state.sh",
        &["state-1", "state-2", "state-3", "state-4"],
    );
}

#[test]
fn test_sysfs_sh() {
    run_script(
        "test-sysfs.sh",
        &["sysfs-1", "sysfs-2", "sysfs-3", "sysfs-4", "sysfs-5"],
    );
}

/// The checker itself: the filter of check_result, a missing line, an extra line, a
/// wrong level.
#[test]
fn check_result_compares_line_by_line() {
    let expected = "% insmod test_modules/test_klp_livepatch.ko\n\
                    livepatch: enabling patch 'test_klp_livepatch'\n\
                    test_klp_livepatch: this has been live patched\n";
    let good = "TEST: filtered out\n\
                % insmod test_modules/test_klp_livepatch.ko\n\
                <5>livepatch: enabling patch 'test_klp_livepatch'\n\
                <4>test_klp_livepatch: tainting kernel with TAINT_LIVEPATCH\n\
                test_klp_livepatch: this has been live patched\n";
    assert_eq!(check_result(good, expected), Ok(()));
    let missing = good.replace("<5>livepatch: enabling patch 'test_klp_livepatch'\n", "");
    let e = check_result(&missing, expected).unwrap_err();
    assert!(e.contains("-   2 livepatch: enabling patch"), "{e}");
    let extra = format!("{good}<5>livepatch: 'test_klp_livepatch': patching complete\n");
    let e = check_result(&extra, expected).unwrap_err();
    assert!(
        e.contains("+   4 livepatch: 'test_klp_livepatch': patching complete"),
        "{e}"
    );
    let level = good.replace("<5>livepatch", "<6>livepatch");
    let e = check_result(&level, expected).unwrap_err();
    assert!(e.contains("wrong level"), "{e}");
}

/// The driver refuses an unknown case (so that a typo in a case list cannot pass).
#[test]
fn an_unknown_case_fails() {
    let b = built();
    let r = run_case(b, "no-such-case", "preempt");
    assert!(r.is_err(), "{r:?}");
}
