//! `test-livepatch.sh` (reference §10.2).

use klp_sync::Flavor;

use super::*;

const CMDLINE_PATCHED: &str = "test_klp_livepatch: this has been live patched";
const MEMINFO_PATCHED: &str = "test_klp_atomic_replace: this has been live patched";
const TARGET_ORIGINAL: &str = "test_klp_mod_target: original output";
const TARGET_PATCHED: &str = "test_klp_mod_patch: this has been live patched";

/// 1. "basic function patching".
pub fn basic_function_patching<F: Flavor + 'static>(flavor: F) {
    let env = Env::new(flavor);

    env.load_lp(test_klp_livepatch(), "");
    assert_eq!(
        cmdline_proc_show(),
        CMDLINE_PATCHED,
        "livepatch kselftest(s) failed"
    );

    env.disable_lp(LIVEPATCH);
    env.unload_lp(LIVEPATCH);
    assert_ne!(
        cmdline_proc_show(),
        CMDLINE_PATCHED,
        "livepatch kselftest(s) failed"
    );
    assert_eq!(cmdline_proc_show(), CMDLINE);

    env.check_result(&[
        "% insmod test_modules/test_klp_livepatch.ko",
        "livepatch: enabling patch 'test_klp_livepatch'",
        "livepatch: 'test_klp_livepatch': initializing patching transition",
        "livepatch: 'test_klp_livepatch': starting patching transition",
        "livepatch: 'test_klp_livepatch': completing patching transition",
        "livepatch: 'test_klp_livepatch': patching complete",
        "% echo 0 > /sys/kernel/livepatch/test_klp_livepatch/enabled",
        "livepatch: 'test_klp_livepatch': initializing unpatching transition",
        "livepatch: 'test_klp_livepatch': starting unpatching transition",
        "livepatch: 'test_klp_livepatch': completing unpatching transition",
        "livepatch: 'test_klp_livepatch': unpatching complete",
        "% rmmod test_klp_livepatch",
    ]);
}

/// 2. "multiple livepatches": two non-replace patches of different functions.
pub fn multiple_livepatches<F: Flavor + 'static>(flavor: F) {
    let env = Env::new(flavor);

    env.load_lp(test_klp_livepatch(), "");
    grep_live_patched();
    assert_eq!(cmdline_proc_show(), CMDLINE_PATCHED);
    assert_eq!(meminfo_proc_show(), MEMINFO);

    env.load_lp(test_klp_atomic_replace(false), "replace=0");
    grep_live_patched();
    assert_eq!(cmdline_proc_show(), CMDLINE_PATCHED);
    assert_eq!(meminfo_proc_show(), MEMINFO_PATCHED);

    env.disable_lp(ATOMIC_REPLACE);
    env.unload_lp(ATOMIC_REPLACE);
    grep_live_patched();

    env.disable_lp(LIVEPATCH);
    env.unload_lp(LIVEPATCH);
    grep_live_patched();
    assert_eq!(cmdline_proc_show(), CMDLINE);
    assert_eq!(meminfo_proc_show(), MEMINFO);

    env.check_result(&[
        "% insmod test_modules/test_klp_livepatch.ko",
        "livepatch: enabling patch 'test_klp_livepatch'",
        "livepatch: 'test_klp_livepatch': initializing patching transition",
        "livepatch: 'test_klp_livepatch': starting patching transition",
        "livepatch: 'test_klp_livepatch': completing patching transition",
        "livepatch: 'test_klp_livepatch': patching complete",
        "test_klp_livepatch: this has been live patched",
        "% insmod test_modules/test_klp_atomic_replace.ko replace=0",
        "livepatch: enabling patch 'test_klp_atomic_replace'",
        "livepatch: 'test_klp_atomic_replace': initializing patching transition",
        "livepatch: 'test_klp_atomic_replace': starting patching transition",
        "livepatch: 'test_klp_atomic_replace': completing patching transition",
        "livepatch: 'test_klp_atomic_replace': patching complete",
        "test_klp_livepatch: this has been live patched",
        "test_klp_atomic_replace: this has been live patched",
        "% echo 0 > /sys/kernel/livepatch/test_klp_atomic_replace/enabled",
        "livepatch: 'test_klp_atomic_replace': initializing unpatching transition",
        "livepatch: 'test_klp_atomic_replace': starting unpatching transition",
        "livepatch: 'test_klp_atomic_replace': completing unpatching transition",
        "livepatch: 'test_klp_atomic_replace': unpatching complete",
        "% rmmod test_klp_atomic_replace",
        "test_klp_livepatch: this has been live patched",
        "% echo 0 > /sys/kernel/livepatch/test_klp_livepatch/enabled",
        "livepatch: 'test_klp_livepatch': initializing unpatching transition",
        "livepatch: 'test_klp_livepatch': starting unpatching transition",
        "livepatch: 'test_klp_livepatch': completing unpatching transition",
        "livepatch: 'test_klp_livepatch': unpatching complete",
        "% rmmod test_klp_livepatch",
    ]);
}

/// 3. "atomic replace livepatch": a replace patch frees the three patches before it.
pub fn atomic_replace_livepatch<F: Flavor + 'static>(flavor: F) {
    let env = Env::new(flavor);
    let pre_patch_ret = Arc::new(AtomicI32::new(0));

    env.load_lp(test_klp_livepatch(), "");
    grep_live_patched();

    env.load_lp(test_klp_syscall(), "");
    env.load_lp(test_klp_callbacks_demo(&pre_patch_ret), "");
    assert_eq!(
        env.patch_names(),
        [LIVEPATCH, SYSCALL, CALLBACKS_DEMO],
        "/sys/kernel/livepatch holds the three patches"
    );

    env.load_lp(test_klp_atomic_replace(true), "replace=1");
    grep_live_patched();
    assert_eq!(
        cmdline_proc_show(),
        CMDLINE,
        "the replaced cmdline patch is gone"
    );
    assert_eq!(meminfo_proc_show(), MEMINFO_PATCHED);

    // The replaced patches are freed asynchronously.
    wait_until("/sys/kernel/livepatch holds one patch", || {
        env.klp.patches().len() == 1
    });
    let r = env.info(ATOMIC_REPLACE);
    assert!(r.enabled && r.replace && !r.transition);
    assert_eq!(r.stack_order, 1, "the replace patch is the only one");
    assert_eq!(
        r.objects,
        [("vmlinux".to_owned(), true)],
        "the nops and dynamic objects were discarded"
    );

    env.unload_lp(CALLBACKS_DEMO);
    env.unload_lp(SYSCALL);
    env.unload_lp(LIVEPATCH);

    grep_live_patched();
    env.disable_lp(ATOMIC_REPLACE);
    env.unload_lp(ATOMIC_REPLACE);
    grep_live_patched();
    assert_eq!(meminfo_proc_show(), MEMINFO);

    env.check_result(&[
        "% insmod test_modules/test_klp_livepatch.ko",
        "livepatch: enabling patch 'test_klp_livepatch'",
        "livepatch: 'test_klp_livepatch': initializing patching transition",
        "livepatch: 'test_klp_livepatch': starting patching transition",
        "livepatch: 'test_klp_livepatch': completing patching transition",
        "livepatch: 'test_klp_livepatch': patching complete",
        "test_klp_livepatch: this has been live patched",
        "% insmod test_modules/test_klp_syscall.ko",
        "livepatch: enabling patch 'test_klp_syscall'",
        "livepatch: 'test_klp_syscall': initializing patching transition",
        "livepatch: 'test_klp_syscall': starting patching transition",
        "livepatch: 'test_klp_syscall': completing patching transition",
        "livepatch: 'test_klp_syscall': patching complete",
        "% insmod test_modules/test_klp_callbacks_demo.ko",
        "livepatch: enabling patch 'test_klp_callbacks_demo'",
        "livepatch: 'test_klp_callbacks_demo': initializing patching transition",
        "test_klp_callbacks_demo: pre_patch_callback: vmlinux",
        "livepatch: 'test_klp_callbacks_demo': starting patching transition",
        "livepatch: 'test_klp_callbacks_demo': completing patching transition",
        "test_klp_callbacks_demo: post_patch_callback: vmlinux",
        "livepatch: 'test_klp_callbacks_demo': patching complete",
        "% insmod test_modules/test_klp_atomic_replace.ko replace=1",
        "livepatch: enabling patch 'test_klp_atomic_replace'",
        "livepatch: 'test_klp_atomic_replace': initializing patching transition",
        "livepatch: 'test_klp_atomic_replace': starting patching transition",
        "livepatch: 'test_klp_atomic_replace': completing patching transition",
        "livepatch: 'test_klp_atomic_replace': patching complete",
        "test_klp_atomic_replace: this has been live patched",
        "% rmmod test_klp_callbacks_demo",
        "% rmmod test_klp_syscall",
        "% rmmod test_klp_livepatch",
        "test_klp_atomic_replace: this has been live patched",
        "% echo 0 > /sys/kernel/livepatch/test_klp_atomic_replace/enabled",
        "livepatch: 'test_klp_atomic_replace': initializing unpatching transition",
        "livepatch: 'test_klp_atomic_replace': starting unpatching transition",
        "livepatch: 'test_klp_atomic_replace': completing unpatching transition",
        "livepatch: 'test_klp_atomic_replace': unpatching complete",
        "% rmmod test_klp_atomic_replace",
    ]);
}

/// 4. "module function patching": the target module is loaded first.
pub fn module_function_patching<F: Flavor + 'static>(flavor: F) {
    let env = Env::new(flavor);

    env.load_mod(MOD_TARGET, "");
    assert_eq!(test_klp_mod_target_show(), TARGET_ORIGINAL);

    env.load_lp(test_klp_mod_patch(), "");
    assert_eq!(test_klp_mod_target_show(), TARGET_PATCHED);
    assert!(env.patched(MOD_PATCH, MOD_TARGET));

    env.disable_lp(MOD_PATCH);
    env.unload_lp(MOD_PATCH);
    assert_eq!(test_klp_mod_target_show(), TARGET_ORIGINAL);

    env.unload_mod(MOD_TARGET);

    env.check_result(&[
        "% insmod test_modules/test_klp_mod_target.ko",
        "test_klp_mod_target: test_klp_mod_target_init",
        "% insmod test_modules/test_klp_mod_patch.ko",
        "livepatch: enabling patch 'test_klp_mod_patch'",
        "livepatch: 'test_klp_mod_patch': initializing patching transition",
        "livepatch: 'test_klp_mod_patch': starting patching transition",
        "livepatch: 'test_klp_mod_patch': completing patching transition",
        "livepatch: 'test_klp_mod_patch': patching complete",
        "% echo 0 > /sys/kernel/livepatch/test_klp_mod_patch/enabled",
        "livepatch: 'test_klp_mod_patch': initializing unpatching transition",
        "livepatch: 'test_klp_mod_patch': starting unpatching transition",
        "livepatch: 'test_klp_mod_patch': completing unpatching transition",
        "livepatch: 'test_klp_mod_patch': unpatching complete",
        "% rmmod test_klp_mod_patch",
        "% rmmod test_klp_mod_target",
        "test_klp_mod_target: test_klp_mod_target_exit",
    ]);
}

/// 5. "module function patching (livepatch first)": module coming patches the target.
pub fn module_function_patching_livepatch_first<F: Flavor + 'static>(flavor: F) {
    let env = Env::new(flavor);

    env.load_lp(test_klp_mod_patch(), "");
    assert!(!env.patched(MOD_PATCH, MOD_TARGET));

    env.load_mod(MOD_TARGET, "");
    assert_eq!(test_klp_mod_target_show(), TARGET_PATCHED);
    assert!(env.patched(MOD_PATCH, MOD_TARGET));

    env.disable_lp(MOD_PATCH);
    env.unload_lp(MOD_PATCH);
    assert_eq!(test_klp_mod_target_show(), TARGET_ORIGINAL);

    env.unload_mod(MOD_TARGET);

    env.check_result(&[
        "% insmod test_modules/test_klp_mod_patch.ko",
        "livepatch: enabling patch 'test_klp_mod_patch'",
        "livepatch: 'test_klp_mod_patch': initializing patching transition",
        "livepatch: 'test_klp_mod_patch': starting patching transition",
        "livepatch: 'test_klp_mod_patch': completing patching transition",
        "livepatch: 'test_klp_mod_patch': patching complete",
        "% insmod test_modules/test_klp_mod_target.ko",
        "livepatch: applying patch 'test_klp_mod_patch' to loading module 'test_klp_mod_target'",
        "test_klp_mod_target: test_klp_mod_target_init",
        "% echo 0 > /sys/kernel/livepatch/test_klp_mod_patch/enabled",
        "livepatch: 'test_klp_mod_patch': initializing unpatching transition",
        "livepatch: 'test_klp_mod_patch': starting unpatching transition",
        "livepatch: 'test_klp_mod_patch': completing unpatching transition",
        "livepatch: 'test_klp_mod_patch': unpatching complete",
        "% rmmod test_klp_mod_patch",
        "% rmmod test_klp_mod_target",
        "test_klp_mod_target: test_klp_mod_target_exit",
    ]);
}
