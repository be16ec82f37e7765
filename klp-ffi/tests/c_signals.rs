//! Signal handlers under load (`c-tests/signals.c`): worker threads call nested patchable
//! functions in a tight loop, some parking now and then (outside patchable functions
//! and inside a replaced one), while another thread sends them SIGUSR1 without pause and
//! the main thread enables and disables a patch of all of them over and over. The
//! handlers call nested patchable functions, `klp_update_patch_state()` and
//! `klp_park()`/`klp_unpark()`. No call may run a mix of old and new functions, nor a
//! handler another version than the function it interrupted; a thread's first libklp
//! call may be in a handler (SIGUSR2); libklp's own threads block every signal; after
//! each wait the queries already show the transition over and the disabled patch gone.
//!
//! The program is built against `libklp.a` and run under preempt and rcu. By default it
//! runs until 10,000,000 calls, 30,000 handled signals and 20 enable/disable cycles
//! (a few seconds); `KLP_STRESS_SECS=N` in the environment of `cargo test` makes each
//! flavor run at least N seconds.

mod common;

use common::{cc, lib_dir, root, run, scratch};
use std::ffi::OsStr;

#[test]
fn signal_handlers_on_running_and_parked_threads_never_see_a_mix() {
    let dir = scratch("signals");
    let exe = dir.join("signals");
    let root = root();
    let lib = lib_dir().join("libklp.a");
    cc(&[
        "-I".as_ref(),
        root.join("include").as_os_str(),
        root.join("c-tests/signals.c").as_os_str(),
        "-o".as_ref(),
        exe.as_os_str(),
        lib.as_os_str(),
        OsStr::new("-lpthread"),
        OsStr::new("-ldl"),
        OsStr::new("-lm"),
    ]);
    for sync in ["preempt", "rcu"] {
        let out = run(&exe, &[], Some(sync));
        eprint!("{sync}:\n{out}");
        assert!(!out.contains("FAILED"), "{sync}:\n{out}");
        assert!(out.ends_with("done\n"), "{sync}:\n{out}");
        let summary = out
            .lines()
            .find(|l| l.starts_with("summary: "))
            .unwrap_or_else(|| panic!("{sync}: no summary line:\n{out}"));
        assert!(summary.contains(" mixes=0 "), "{sync}: {summary}");
        // The acceptance floor of a CI run: 10^7 calls and 10^4 handled signals.
        let count = |key: &str| -> u64 {
            summary
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{sync}: no {key} in {summary}"))
        };
        assert!(count("calls=") >= 10_000_000, "{sync}: {summary}");
        assert!(count("signals=") >= 10_000, "{sync}: {summary}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
