//! Runs `klp-demo --quick` and checks the story it tells under both flavors.

use std::process::Command;

/// The numbers of a `replies [<phase>]: N requests, W wrong (..%): S with a negative
/// operand, L with a 5-digit sum` line: (N, W, S, L).
fn replies(run: &str, phase: &str) -> (u64, u64, u64, u64) {
    let tag = format!("replies [{phase}]: ");
    let line = run
        .lines()
        .find(|l| l.contains(&tag))
        .unwrap_or_else(|| panic!("no '{tag}' line in:\n{run}"));
    let rest = &line[line.find(&tag).unwrap() + tag.len()..];
    let nums: Vec<u64> = rest
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .filter(|w| !w.is_empty() && !w.contains('.'))
        .map(|w| w.parse().unwrap())
        .collect();
    // N, W, (the percentage has a dot: skipped), S, L, 5 (of "5-digit").
    assert!(nums.len() >= 5 && nums[4] == 5, "cannot parse: {line}");
    (nums[0], nums[1], nums[2], nums[3])
}

#[test]
fn demo_quick() {
    let out = Command::new(env!("CARGO_BIN_EXE_klp-demo"))
        .arg("--quick")
        .output()
        .expect("run klp-demo");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "klp-demo failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    for flavor in ["preempt", "rcu"] {
        let start = stdout
            .find(&format!("=== flavor {flavor} (KLP_SYNC={flavor}) ==="))
            .unwrap_or_else(|| panic!("no {flavor} run:\n{stdout}"));
        let end = stdout[start..]
            .find("RESULT ")
            .map(|i| start + i)
            .unwrap_or_else(|| panic!("no RESULT line for {flavor}:\n{stdout}"));
        let run = &stdout[start..end];
        assert!(
            stdout[end..].starts_with(&format!("RESULT flavor={flavor} ")),
            "{flavor}: RESULT of another flavor"
        );

        for line in [
            "livepatch: enabling patch 'demo_v1'",
            "livepatch: 'demo_v1': starting patching transition",
            "livepatch: 'demo_v1': patching complete",
            "demo_v1 post_patch",
            "livepatch: enabling patch 'demo_v2'",
            "demo_v2 pre_patch: state 1 taken over from the patch it replaces",
            "livepatch: 'demo_v2': patching complete",
            "demo_v1: klp_patch_enabled -> no such file or directory (ENOENT)",
            "livepatch: 'demo_v2': starting unpatching transition",
            "demo_v2 post_unpatch: shadow reply buffers freed",
            "livepatch: 'demo_v2': unpatching complete",
            "% dlclose patch_v2.so patch_v1.so",
            "worker 3 -> patched",
            "when its slow request returned",
        ] {
            assert!(run.contains(line), "{flavor}: no '{line}' in:\n{run}");
        }
        // Every worker is seen switching, in each of the three transitions.
        for w in 0..4 {
            let to_patched = format!("worker {w} -> patched");
            let to_unpatched = format!("worker {w} -> unpatched");
            assert_eq!(
                run.matches(&to_patched).count(),
                2,
                "{flavor}: {to_patched}"
            );
            assert_eq!(
                run.matches(&to_unpatched).count(),
                1,
                "{flavor}: {to_unpatched}"
            );
        }
        assert!(!run.contains("<-- warning"), "{flavor}: a warning:\n{run}");

        // Both bugs, then the parser fixed, then both fixed, then both back.
        let (n, w, s, l) = replies(run, "unpatched");
        assert!(n > 0 && s > 0 && l > 0 && w == s + l, "{flavor} unpatched");
        let (n, w, s, l) = replies(run, "demo_v1");
        assert!(n > 0 && s == 0 && l > 0 && w == l, "{flavor} demo_v1");
        let (n, w, _, _) = replies(run, "demo_v2");
        assert!(n > 0 && w == 0, "{flavor} demo_v2");
        let (n, w, s, l) = replies(run, "disabled");
        assert!(n > 0 && s > 0 && l > 0 && w == s + l, "{flavor} disabled");
    }

    // The final table has a row per flavor.
    let table = &stdout[stdout.rfind("=== parse_request call cost").expect("table")..];
    assert!(table.contains("\npreempt  |"), "{table}");
    assert!(table.contains("\nrcu      |"), "{table}");
}
