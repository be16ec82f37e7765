//! `test-sysfs.sh` (reference §10.6): the values of the attributes, through [`PatchInfo`]
//! (file permissions do not apply).

use klp_sync::Flavor;

use super::*;

/// 1. "sysfs test".
pub fn sysfs_test<F: Flavor + 'static>(flavor: F) {
    let env = Env::new(flavor);

    env.load_lp(test_klp_livepatch(), "");
    let p = env.info(LIVEPATCH);
    assert_eq!(
        p,
        PatchInfo {
            name: LIVEPATCH.to_owned(),
            enabled: true,
            transition: false,
            replace: false,
            stack_order: 1,
            forced: false,
            objects: vec![("vmlinux".to_owned(), true)],
        }
    );
    assert!(env.patched(LIVEPATCH, "vmlinux"));

    env.disable_lp(LIVEPATCH);
    env.unload_lp(LIVEPATCH);

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

/// 2. "sysfs test object/patched".
pub fn object_patched<F: Flavor + 'static>(flavor: F) {
    let env = Env::new(flavor);
    let pre_patch_ret = Arc::new(AtomicI32::new(0));

    env.load_lp(test_klp_callbacks_demo(&pre_patch_ret), "");
    assert!(
        !env.patched(CALLBACKS_DEMO, CALLBACKS_MOD),
        "{CALLBACKS_MOD}/patched reads 0"
    );
    assert!(
        env.patched(CALLBACKS_DEMO, "vmlinux"),
        "vmlinux/patched reads 1"
    );

    env.load_mod(CALLBACKS_MOD, "");
    assert!(
        env.patched(CALLBACKS_DEMO, CALLBACKS_MOD),
        "{CALLBACKS_MOD}/patched reads 1"
    );

    env.unload_mod(CALLBACKS_MOD);
    assert!(
        !env.patched(CALLBACKS_DEMO, CALLBACKS_MOD),
        "{CALLBACKS_MOD}/patched reads 0"
    );

    env.disable_lp(CALLBACKS_DEMO);
    env.unload_lp(CALLBACKS_DEMO);

    env.check_result(&[
        "% insmod test_modules/test_klp_callbacks_demo.ko",
        "livepatch: enabling patch 'test_klp_callbacks_demo'",
        "livepatch: 'test_klp_callbacks_demo': initializing patching transition",
        "test_klp_callbacks_demo: pre_patch_callback: vmlinux",
        "livepatch: 'test_klp_callbacks_demo': starting patching transition",
        "livepatch: 'test_klp_callbacks_demo': completing patching transition",
        "test_klp_callbacks_demo: post_patch_callback: vmlinux",
        "livepatch: 'test_klp_callbacks_demo': patching complete",
        "% insmod test_modules/test_klp_callbacks_mod.ko",
        "livepatch: applying patch 'test_klp_callbacks_demo' to loading module 'test_klp_callbacks_mod'",
        "test_klp_callbacks_demo: pre_patch_callback: test_klp_callbacks_mod -> [MODULE_STATE_COMING] Full formed, running module_init",
        "test_klp_callbacks_demo: post_patch_callback: test_klp_callbacks_mod -> [MODULE_STATE_COMING] Full formed, running module_init",
        "test_klp_callbacks_mod: test_klp_callbacks_mod_init",
        "% rmmod test_klp_callbacks_mod",
        "test_klp_callbacks_mod: test_klp_callbacks_mod_exit",
        "test_klp_callbacks_demo: pre_unpatch_callback: test_klp_callbacks_mod -> [MODULE_STATE_GOING] Going away",
        "livepatch: reverting patch 'test_klp_callbacks_demo' on unloading module 'test_klp_callbacks_mod'",
        "test_klp_callbacks_demo: post_unpatch_callback: test_klp_callbacks_mod -> [MODULE_STATE_GOING] Going away",
        "% echo 0 > /sys/kernel/livepatch/test_klp_callbacks_demo/enabled",
        "livepatch: 'test_klp_callbacks_demo': initializing unpatching transition",
        "test_klp_callbacks_demo: pre_unpatch_callback: vmlinux",
        "livepatch: 'test_klp_callbacks_demo': starting unpatching transition",
        "livepatch: 'test_klp_callbacks_demo': completing unpatching transition",
        "test_klp_callbacks_demo: post_unpatch_callback: vmlinux",
        "livepatch: 'test_klp_callbacks_demo': unpatching complete",
        "% rmmod test_klp_callbacks_demo",
    ]);
}

/// 3. "sysfs test replace enabled".
pub fn replace_enabled<F: Flavor + 'static>(flavor: F) {
    let env = Env::new(flavor);

    env.load_lp(test_klp_atomic_replace(true), "replace=1");
    assert!(env.info(ATOMIC_REPLACE).replace, "replace reads 1");
    env.disable_lp(ATOMIC_REPLACE);
    env.unload_lp(ATOMIC_REPLACE);

    env.check_result(&[
        "% insmod test_modules/test_klp_atomic_replace.ko replace=1",
        "livepatch: enabling patch 'test_klp_atomic_replace'",
        "livepatch: 'test_klp_atomic_replace': initializing patching transition",
        "livepatch: 'test_klp_atomic_replace': starting patching transition",
        "livepatch: 'test_klp_atomic_replace': completing patching transition",
        "livepatch: 'test_klp_atomic_replace': patching complete",
        "% echo 0 > /sys/kernel/livepatch/test_klp_atomic_replace/enabled",
        "livepatch: 'test_klp_atomic_replace': initializing unpatching transition",
        "livepatch: 'test_klp_atomic_replace': starting unpatching transition",
        "livepatch: 'test_klp_atomic_replace': completing unpatching transition",
        "livepatch: 'test_klp_atomic_replace': unpatching complete",
        "% rmmod test_klp_atomic_replace",
    ]);
}

/// 4. "sysfs test replace disabled".
pub fn replace_disabled<F: Flavor + 'static>(flavor: F) {
    let env = Env::new(flavor);

    env.load_lp(test_klp_atomic_replace(false), "replace=0");
    assert!(!env.info(ATOMIC_REPLACE).replace, "replace reads 0");
    env.disable_lp(ATOMIC_REPLACE);
    env.unload_lp(ATOMIC_REPLACE);

    env.check_result(&[
        "% insmod test_modules/test_klp_atomic_replace.ko replace=0",
        "livepatch: enabling patch 'test_klp_atomic_replace'",
        "livepatch: 'test_klp_atomic_replace': initializing patching transition",
        "livepatch: 'test_klp_atomic_replace': starting patching transition",
        "livepatch: 'test_klp_atomic_replace': completing patching transition",
        "livepatch: 'test_klp_atomic_replace': patching complete",
        "% echo 0 > /sys/kernel/livepatch/test_klp_atomic_replace/enabled",
        "livepatch: 'test_klp_atomic_replace': initializing unpatching transition",
        "livepatch: 'test_klp_atomic_replace': starting unpatching transition",
        "livepatch: 'test_klp_atomic_replace': completing unpatching transition",
        "livepatch: 'test_klp_atomic_replace': unpatching complete",
        "% rmmod test_klp_atomic_replace",
    ]);
}

/// 5. "sysfs test stack_order value".
pub fn stack_order_value<F: Flavor + 'static>(flavor: F) {
    let env = Env::new(flavor);
    let pre_patch_ret = Arc::new(AtomicI32::new(0));
    let order = |p: &str| env.info(p).stack_order;

    env.load_lp(test_klp_livepatch(), "");
    assert_eq!(order(LIVEPATCH), 1);

    env.load_lp(test_klp_callbacks_demo(&pre_patch_ret), "");
    assert_eq!(order(CALLBACKS_DEMO), 2);

    env.load_lp(test_klp_syscall(), "");
    assert_eq!(order(SYSCALL), 3);

    env.disable_lp(CALLBACKS_DEMO);
    env.unload_lp(CALLBACKS_DEMO);
    assert_eq!(order(LIVEPATCH), 1);
    assert_eq!(order(SYSCALL), 2);

    env.disable_lp(SYSCALL);
    env.unload_lp(SYSCALL);
    env.disable_lp(LIVEPATCH);
    env.unload_lp(LIVEPATCH);

    env.check_result(&[
        "% insmod test_modules/test_klp_livepatch.ko",
        "livepatch: enabling patch 'test_klp_livepatch'",
        "livepatch: 'test_klp_livepatch': initializing patching transition",
        "livepatch: 'test_klp_livepatch': starting patching transition",
        "livepatch: 'test_klp_livepatch': completing patching transition",
        "livepatch: 'test_klp_livepatch': patching complete",
        "% insmod test_modules/test_klp_callbacks_demo.ko",
        "livepatch: enabling patch 'test_klp_callbacks_demo'",
        "livepatch: 'test_klp_callbacks_demo': initializing patching transition",
        "test_klp_callbacks_demo: pre_patch_callback: vmlinux",
        "livepatch: 'test_klp_callbacks_demo': starting patching transition",
        "livepatch: 'test_klp_callbacks_demo': completing patching transition",
        "test_klp_callbacks_demo: post_patch_callback: vmlinux",
        "livepatch: 'test_klp_callbacks_demo': patching complete",
        "% insmod test_modules/test_klp_syscall.ko",
        "livepatch: enabling patch 'test_klp_syscall'",
        "livepatch: 'test_klp_syscall': initializing patching transition",
        "livepatch: 'test_klp_syscall': starting patching transition",
        "livepatch: 'test_klp_syscall': completing patching transition",
        "livepatch: 'test_klp_syscall': patching complete",
        "% echo 0 > /sys/kernel/livepatch/test_klp_callbacks_demo/enabled",
        "livepatch: 'test_klp_callbacks_demo': initializing unpatching transition",
        "test_klp_callbacks_demo: pre_unpatch_callback: vmlinux",
        "livepatch: 'test_klp_callbacks_demo': starting unpatching transition",
        "livepatch: 'test_klp_callbacks_demo': completing unpatching transition",
        "test_klp_callbacks_demo: post_unpatch_callback: vmlinux",
        "livepatch: 'test_klp_callbacks_demo': unpatching complete",
        "% rmmod test_klp_callbacks_demo",
        "% echo 0 > /sys/kernel/livepatch/test_klp_syscall/enabled",
        "livepatch: 'test_klp_syscall': initializing unpatching transition",
        "livepatch: 'test_klp_syscall': starting unpatching transition",
        "livepatch: 'test_klp_syscall': completing unpatching transition",
        "livepatch: 'test_klp_syscall': unpatching complete",
        "% rmmod test_klp_syscall",
        "% echo 0 > /sys/kernel/livepatch/test_klp_livepatch/enabled",
        "livepatch: 'test_klp_livepatch': initializing unpatching transition",
        "livepatch: 'test_klp_livepatch': starting unpatching transition",
        "livepatch: 'test_klp_livepatch': completing unpatching transition",
        "livepatch: 'test_klp_livepatch': unpatching complete",
        "% rmmod test_klp_livepatch",
    ]);
}
