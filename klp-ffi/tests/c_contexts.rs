//! What each export does from each context that libklp calls back into, and from a
//! signal handler: `c-tests/contexts.c` checks the table at the top of `include/klp.h`
//! cell by cell (log handlers, object callbacks, shadow constructors and destructors,
//! kicks, signal handlers, an ordinary thread). Built against `libklp.a` and run under
//! preempt and rcu; it prints one line per checked call and `done` last.

mod common;

use common::{cc, lib_dir, root, run, scratch};
use std::path::{Path, PathBuf};

fn build(dir: &Path) -> PathBuf {
    let root = root();
    let lib = lib_dir().join("libklp.a");
    let include = root.join("include");
    let exe = dir.join("contexts");
    cc(&[
        "-I".as_ref(),
        include.as_os_str(),
        root.join("c-tests/contexts.c").as_os_str(),
        "-o".as_ref(),
        exe.as_os_str(),
        lib.as_os_str(),
        "-lpthread".as_ref(),
        "-ldl".as_ref(),
        "-lm".as_ref(),
    ]);
    exe
}

/// The contexts that must each have been checked, as the program names them.
const CONTEXTS: &[&str] = &[
    "an ordinary thread",
    "log handler ('enabling patch')",
    "log handler ('starting patching transition')",
    "log handler ('patching complete')",
    "log handler ('starting unpatching transition')",
    "log handler ('unpatching complete')",
    "log handler ('applying patch to loading module')",
    "log handler ('reverting patch on unloading module')",
    "log handler ('Duplicate shadow variable')",
    "log handler ('signaling remaining tasks')",
    "pre_patch (enabling thread)",
    "post_patch (enabling thread)",
    "post_patch (transition worker)",
    "pre_unpatch (disabling thread)",
    "post_unpatch (disabling thread)",
    "post_unpatch (transition worker)",
    "pre_patch (object load)",
    "post_patch (object load)",
    "pre_unpatch (object unload)",
    "post_unpatch (object unload)",
    "shadow constructor (klp_shadow_alloc)",
    "shadow constructor (klp_shadow_get_or_alloc)",
    "shadow destructor (klp_shadow_free)",
    "shadow destructor (klp_shadow_free_all)",
    "shadow constructors (300 keys)",
    "a kick",
    "a signal handler (running thread)",
    "a signal handler (thread inside a replaced function)",
    "a signal handler (parked thread)",
];

#[test]
fn every_export_from_every_context_does_what_the_table_of_klp_h_says() {
    let dir = scratch("contexts");
    let exe = build(&dir);
    for sync in ["preempt", "rcu"] {
        let out = run(&exe, &[], Some(sync));
        assert!(out.ends_with("done\n"), "{sync}:\n{out}");
        assert!(!out.contains("FAILED"), "{sync}:\n{out}");
        for ctx in CONTEXTS {
            assert!(
                out.lines()
                    .any(|l| l.starts_with("ok: ") && l.contains(&format!(" from {ctx}: "))),
                "{sync}: nothing checked from {ctx}:\n{out}"
            );
        }
        // The regressions: queries from a log handler during an enable, from post_patch
        // and from a kick (they used to hang), and lookups from shadow constructors.
        for line in [
            "ok: klp_patch_enabled(\"ctx\") from log handler ('enabling patch'): 0",
            "ok: klp_patch_transition(\"ctx\") from log handler ('starting patching transition'): 1",
            "ok: klp_patch_enabled(\"ctx\") from post_patch (enabling thread): 1",
            "ok: klp_object_patched(\"ctx\", NULL) from post_patch (transition worker): 1",
            "ok: klp_patch_transition(\"ctx\") from a kick: 1",
            "ok: klp_shadow_get of 300 keys allocated before: found from a shadow constructor: 300",
            "ok: klp_synchronize() from a signal handler (thread inside a replaced function): 0",
        ] {
            assert!(
                out.lines().any(|l| l == line),
                "{sync}: no `{line}`:\n{out}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
