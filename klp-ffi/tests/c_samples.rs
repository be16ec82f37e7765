//! The kernel's `samples/livepatch/` modules, rewritten in the kernel's form and built
//! with the compatibility headers (`include/klp/compat`) without `KBUILD_MODNAME` (each
//! module is named after its file, as kbuild names it), loaded into
//! `c-tests/samples/kernel.c`, a program that plays vmlinux and runs the steps of the
//! samples' usage notes (see its header): the livepatch sample, the callbacks demo (a
//! target module loaded before and after its livepatch, refused by a failing pre_patch,
//! coming and going while a busy module holds the transition back), and the shadow
//! variable demo (fix1 and fix2 on the buggy module). Every scenario runs under both
//! flavors.
//!
//! The log of every scenario but the shadow demo is compared line by line, with its
//! levels, with `c-tests/samples/expected/<scenario>.log`. The shadow demo's pointers,
//! times and counts differ from run to run: its echo lines and libklp's lines are
//! compared with `expected/shadow.log`, and the demo's own lines are checked for what
//! they say (which dummies leak, which leaks are prevented, the counters).
//!
//! The compiler is `gcc`, or `$CC`.

mod common;

use common::{cc, cc_kernel, lib_dir, root, scratch};
use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The modules: `c-tests/samples/<name>.c` → `<name>.so`.
const MODULES: &[&str] = &[
    "livepatch-sample",
    "livepatch-shadow-mod",
    "livepatch-shadow-fix1",
    "livepatch-shadow-fix2",
    "livepatch-callbacks-demo",
    "livepatch-callbacks-mod",
    "livepatch-callbacks-busymod",
];

/// The scenarios whose logs are compared whole.
const EXACT: &[&str] = &[
    "sample",
    "callbacks-mod-first",
    "callbacks-demo-first",
    "callbacks-refused",
    "callbacks-busy",
];

fn build() -> (PathBuf, PathBuf) {
    let lib = lib_dir();
    let dir = scratch("samples");
    let src = root().join("c-tests/samples");
    let include = root().join("include");
    let mut inc = OsString::from("-I");
    inc.push(&include);
    let mut inc_compat = OsString::from("-I");
    inc_compat.push(include.join("klp/compat"));
    let mut l = OsString::from("-L");
    l.push(&lib);
    let mut rpath = OsString::from("-Wl,-rpath,");
    rpath.push(&lib);
    std::thread::scope(|s| {
        for m in MODULES {
            let (dir, src, inc_compat, l) = (&dir, &src, &inc_compat, &l);
            s.spawn(move || {
                let so = dir.join(format!("{m}.so"));
                let c = src.join(format!("{m}.c"));
                cc_kernel(&[
                    "-fPIC".as_ref(),
                    "-shared".as_ref(),
                    inc_compat,
                    c.as_os_str(),
                    "-o".as_ref(),
                    so.as_os_str(),
                    l,
                    "-lklp".as_ref(),
                    "-lpthread".as_ref(),
                ]);
            });
        }
    });
    // The program includes <linux/workqueue.h> for the layout of the work items it runs.
    let exe = dir.join("kernel");
    let c = src.join("kernel.c");
    cc(&[
        &inc,
        &inc_compat,
        c.as_os_str(),
        "-o".as_ref(),
        exe.as_os_str(),
        "-rdynamic".as_ref(),
        &l,
        "-lklp".as_ref(),
        &rpath,
        "-lpthread".as_ref(),
    ]);
    (dir, exe)
}

/// Run one scenario: its standard output.
fn run_scenario(exe: &Path, dir: &Path, scenario: &str, sync: &str) -> Result<String, String> {
    let out = Command::new(exe)
        .arg(scenario)
        .arg(dir)
        .env("KLP_SYNC", sync)
        .env_remove("KLP_DEBUG")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "{scenario} ({sync}) failed ({}):\n--- stderr\n{}--- stdout\n{stdout}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(stdout)
}

fn expected(scenario: &str) -> String {
    let p = root().join(format!("c-tests/samples/expected/{scenario}.log"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn compare(what: &str, actual: &str, expected: &str) -> Result<(), String> {
    if actual == expected {
        return Ok(());
    }
    let a: Vec<&str> = actual.lines().collect();
    let e: Vec<&str> = expected.lines().collect();
    let first = a
        .iter()
        .zip(&e)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(e.len()));
    Err(format!(
        "{what}: the log differs from the expected one at line {} (expected {:?}, got {:?})\n\
         --- actual\n{actual}",
        first + 1,
        e.get(first),
        a.get(first)
    ))
}

/// A hashed pointer of `%p`: 16 hex digits, the first 8 zero.
fn is_hashed(p: &str) -> bool {
    p.len() == 16 && p.starts_with("00000000") && p.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The pointer after `dummy @ ` in `line`, checked.
fn dummy_of(line: &str) -> Result<String, String> {
    let p = line
        .split_once("dummy @ ")
        .map(|(_, r)| r.split([',', ' ']).next().unwrap_or(""))
        .ok_or_else(|| format!("no dummy in {line:?}"))?;
    if !is_hashed(p) {
        return Err(format!("not a hashed pointer in {line:?}"));
    }
    Ok(p.to_owned())
}

/// What the shadow demo's own lines say.
fn check_shadow(log: &str) -> Result<(), String> {
    let (mut orig, mut fix1) = (HashSet::new(), HashSet::new());
    let (mut leaked, mut prevented, mut counted) = (0, 0, 0);
    // Between fix1's patching complete and its unpatching, only fix1 allocates.
    let mut fix1_in = false;
    for line in log.lines() {
        let check = |ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(format!("unexpected: {line:?}\n--- log\n{log}"))
            }
        };
        if line.starts_with("% ")
            || line.starts_with("<5>livepatch: ")
            || line.starts_with("<7>livepatch: ")
        {
            if line.contains("'livepatch_shadow_fix1': patching complete") {
                fix1_in = true;
            }
            if line.contains("'livepatch_shadow_fix1': initializing unpatching") {
                fix1_in = false;
            }
            continue;
        }
        if line == "<5>livepatch_shadow_fix1: tainting kernel with TAINT_LIVEPATCH" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("<6>cleanup_work_func: jiffies = ") {
            check(is_hex(rest))?;
        } else if let Some(rest) = line.strip_prefix("<6>dummy_alloc: ") {
            check(!fix1_in)?;
            let p = dummy_of(rest)?;
            check(is_hex(rest.rsplit(' ').next().unwrap_or("")))?;
            orig.insert(p);
        } else if let Some(rest) =
            line.strip_prefix("<6>livepatch_shadow_fix1: livepatch_fix1_dummy_alloc: ")
        {
            fix1.insert(dummy_of(rest)?);
        } else if let Some(rest) = line.strip_prefix("<6>dummy_free: ") {
            let p = dummy_of(rest)?;
            check(orig.contains(&p) || fix1.contains(&p))?;
        } else if line.ends_with(" leaked!") {
            let p = dummy_of(line)?;
            check(
                (line.starts_with("<6>livepatch_shadow_fix1: livepatch_fix1_dummy_free: ")
                    || line.starts_with("<6>livepatch_shadow_fix2: livepatch_fix2_dummy_free: "))
                    && orig.contains(&p),
            )?;
            leaked += 1;
        } else if line.contains("_dummy_leak_dtor: dummy @ ") {
            let p = dummy_of(line)?;
            let q = line.rsplit(' ').next().unwrap_or("");
            check(
                (line.starts_with("<6>livepatch_shadow_fix1: livepatch_fix1_dummy_leak_dtor: ")
                    || line
                        .starts_with("<6>livepatch_shadow_fix2: livepatch_fix2_dummy_leak_dtor: "))
                    && line.contains(", prevented leak @ ")
                    && fix1.contains(&p)
                    && is_hashed(q),
            )?;
            prevented += 1;
        } else if let Some(rest) =
            line.strip_prefix("<6>livepatch_shadow_fix2: livepatch_fix2_dummy_free: ")
        {
            let p = dummy_of(rest)?;
            let n: u32 = rest
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            check(
                rest.contains(", check counter = ")
                    && n >= 1
                    && (orig.contains(&p) || fix1.contains(&p)),
            )?;
            counted += 1;
        } else {
            check(false)?;
        }
    }
    if orig.is_empty() || fix1.is_empty() || leaked == 0 || prevented == 0 || counted == 0 {
        return Err(format!(
            "the demo did not show everything: {} original and {} fix1 allocations, {leaked} \
             leaked, {prevented} prevented, {counted} counted\n--- log\n{log}",
            orig.len(),
            fix1.len()
        ));
    }
    Ok(())
}

#[test]
fn the_kernels_livepatch_samples() {
    let (dir, exe) = build();
    let mut jobs: Vec<(&str, &str)> = Vec::new();
    for sync in ["preempt", "rcu"] {
        for s in EXACT.iter().chain(["shadow"].iter()) {
            jobs.push((s, sync));
        }
    }
    let failures: Vec<String> = std::thread::scope(|sc| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|&(scenario, sync)| {
                let (exe, dir) = (&exe, &dir);
                sc.spawn(move || {
                    let out = run_scenario(exe, dir, scenario, sync)?;
                    let what = format!("{scenario} ({sync})");
                    if scenario == "shadow" {
                        let skeleton: String = out
                            .lines()
                            .filter(|l| {
                                l.starts_with("% ")
                                    || l[3.min(l.len())..].starts_with("livepatch: ")
                            })
                            .map(|l| format!("{l}\n"))
                            .collect();
                        compare(&what, &skeleton, &expected("shadow"))?;
                        check_shadow(&out)
                    } else {
                        compare(&what, &out, &expected(scenario))
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap().err())
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The checker of the shadow demo refuses what the demo must not say.
#[test]
fn the_shadow_checker_catches_wrong_lines() {
    let p = "00000000deadbeef";
    let q = "00000000cafef00d";
    let good = format!(
        "<6>dummy_alloc: dummy @ {p}, expires @ ffff9000\n\
         % insmod livepatch-shadow-fix1.ko\n\
         <5>livepatch: 'livepatch_shadow_fix1': patching complete\n\
         <6>livepatch_shadow_fix1: livepatch_fix1_dummy_alloc: dummy @ {q}, expires @ ffff9100\n\
         <6>livepatch_shadow_fix1: livepatch_fix1_dummy_free: dummy @ {p} leaked!\n\
         <6>livepatch_shadow_fix2: livepatch_fix2_dummy_free: dummy @ {q}, check counter = 2\n\
         <6>livepatch_shadow_fix1: livepatch_fix1_dummy_leak_dtor: dummy @ {q}, prevented leak @ {p}\n"
    );
    assert_eq!(check_shadow(&good), Ok(()));
    // A dummy of fix1 said to leak; a dummy of before the patch said to be fixed.
    let leak = good.replace(
        &format!("dummy @ {p} leaked!"),
        &format!("dummy @ {q} leaked!"),
    );
    assert!(check_shadow(&leak).is_err());
    let dtor = good.replace(&format!("dtor: dummy @ {q}"), &format!("dtor: dummy @ {p}"));
    assert!(check_shadow(&dtor).is_err());
    // An original allocation while fix1 is in.
    let alloc = format!("{good}<6>dummy_alloc: dummy @ {p}, expires @ ffff9000\n");
    assert!(check_shadow(&alloc).is_err());
    // A counter of 0, an unknown line, a missing behaviour.
    assert!(check_shadow(&good.replace("check counter = 2", "check counter = 0")).is_err());
    assert!(check_shadow(&format!("{good}<6>something else\n")).is_err());
    let no_count: String = good
        .lines()
        .filter(|l| !l.contains("check counter"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(check_shadow(&no_count).is_err());
}
