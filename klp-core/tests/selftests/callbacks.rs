//! `test-callbacks.sh` (reference §10.3).

use klp_sync::Flavor;

use super::*;

/// 1. "target module before livepatch".
pub fn target_module_before_livepatch<F: Flavor + 'static>(flavor: F) {
    let env = Env::new(flavor);
    let pre_patch_ret = Arc::new(AtomicI32::new(0));

    env.load_mod(CALLBACKS_MOD, "");
    env.load_lp(test_klp_callbacks_demo(&pre_patch_ret), "");
    env.disable_lp(CALLBACKS_DEMO);
    env.unload_lp(CALLBACKS_DEMO);
    env.unload_mod(CALLBACKS_MOD);

    env.check_result(&[
        "% insmod test_modules/test_klp_callbacks_mod.ko",
        "test_klp_callbacks_mod: test_klp_callbacks_mod_init",
        "% insmod test_modules/test_klp_callbacks_demo.ko",
        "livepatch: enabling patch 'test_klp_callbacks_demo'",
        "livepatch: 'test_klp_callbacks_demo': initializing patching transition",
        "test_klp_callbacks_demo: pre_patch_callback: vmlinux",
        "test_klp_callbacks_demo: pre_patch_callback: test_klp_callbacks_mod -> [MODULE_STATE_LIVE] Normal state",
        "livepatch: 'test_klp_callbacks_demo': starting patching transition",
        "livepatch: 'test_klp_callbacks_demo': completing patching transition",
        "test_klp_callbacks_demo: post_patch_callback: vmlinux",
        "test_klp_callbacks_demo: post_patch_callback: test_klp_callbacks_mod -> [MODULE_STATE_LIVE] Normal state",
        "livepatch: 'test_klp_callbacks_demo': patching complete",
        "% echo 0 > /sys/kernel/livepatch/test_klp_callbacks_demo/enabled",
        "livepatch: 'test_klp_callbacks_demo': initializing unpatching transition",
        "test_klp_callbacks_demo: pre_unpatch_callback: vmlinux",
        "test_klp_callbacks_demo: pre_unpatch_callback: test_klp_callbacks_mod -> [MODULE_STATE_LIVE] Normal state",
        "livepatch: 'test_klp_callbacks_demo': starting unpatching transition",
        "livepatch: 'test_klp_callbacks_demo': completing unpatching transition",
        "test_klp_callbacks_demo: post_unpatch_callback: vmlinux",
        "test_klp_callbacks_demo: post_unpatch_callback: test_klp_callbacks_mod -> [MODULE_STATE_LIVE] Normal state",
        "livepatch: 'test_klp_callbacks_demo': unpatching complete",
        "% rmmod test_klp_callbacks_demo",
        "% rmmod test_klp_callbacks_mod",
        "test_klp_callbacks_mod: test_klp_callbacks_mod_exit",
    ]);
}

/// 2. "module_coming notifier".
pub fn module_coming_notifier<F: Flavor + 'static>(flavor: F) {
    let env = Env::new(flavor);
    let pre_patch_ret = Arc::new(AtomicI32::new(0));

    env.load_lp(test_klp_callbacks_demo(&pre_patch_ret), "");
    env.load_mod(CALLBACKS_MOD, "");
    env.disable_lp(CALLBACKS_DEMO);
    env.unload_lp(CALLBACKS_DEMO);
    env.unload_mod(CALLBACKS_MOD);

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
        "% echo 0 > /sys/kernel/livepatch/test_klp_callbacks_demo/enabled",
        "livepatch: 'test_klp_callbacks_demo': initializing unpatching transition",
        "test_klp_callbacks_demo: pre_unpatch_callback: vmlinux",
        "test_klp_callbacks_demo: pre_unpatch_callback: test_klp_callbacks_mod -> [MODULE_STATE_LIVE] Normal state",
        "livepatch: 'test_klp_callbacks_demo': starting unpatching transition",
        "livepatch: 'test_klp_callbacks_demo': completing unpatching transition",
        "test_klp_callbacks_demo: post_unpatch_callback: vmlinux",
        "test_klp_callbacks_demo: post_unpatch_callback: test_klp_callbacks_mod -> [MODULE_STATE_LIVE] Normal state",
        "livepatch: 'test_klp_callbacks_demo': unpatching complete",
        "% rmmod test_klp_callbacks_demo",
        "% rmmod test_klp_callbacks_mod",
        "test_klp_callbacks_mod: test_klp_callbacks_mod_exit",
    ]);
}

/// 3. "module_going notifier".
pub fn module_going_notifier<F: Flavor + 'static>(flavor: F) {
    let env = Env::new(flavor);
    let pre_patch_ret = Arc::new(AtomicI32::new(0));

    env.load_mod(CALLBACKS_MOD, "");
    env.load_lp(test_klp_callbacks_demo(&pre_patch_ret), "");
    env.unload_mod(CALLBACKS_MOD);
    env.disable_lp(CALLBACKS_DEMO);
    env.unload_lp(CALLBACKS_DEMO);

    env.check_result(&[
        "% insmod test_modules/test_klp_callbacks_mod.ko",
        "test_klp_callbacks_mod: test_klp_callbacks_mod_init",
        "% insmod test_modules/test_klp_callbacks_demo.ko",
        "livepatch: enabling patch 'test_klp_callbacks_demo'",
        "livepatch: 'test_klp_callbacks_demo': initializing patching transition",
        "test_klp_callbacks_demo: pre_patch_callback: vmlinux",
        "test_klp_callbacks_demo: pre_patch_callback: test_klp_callbacks_mod -> [MODULE_STATE_LIVE] Normal state",
        "livepatch: 'test_klp_callbacks_demo': starting patching transition",
        "livepatch: 'test_klp_callbacks_demo': completing patching transition",
        "test_klp_callbacks_demo: post_patch_callback: vmlinux",
        "test_klp_callbacks_demo: post_patch_callback: test_klp_callbacks_mod -> [MODULE_STATE_LIVE] Normal state",
        "livepatch: 'test_klp_callbacks_demo': patching complete",
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

/// 4. "module_coming and module_going notifiers".
pub fn module_coming_and_going_notifiers<F: Flavor + 'static>(flavor: F) {
    let env = Env::new(flavor);
    let pre_patch_ret = Arc::new(AtomicI32::new(0));

    env.load_lp(test_klp_callbacks_demo(&pre_patch_ret), "");
    env.load_mod(CALLBACKS_MOD, "");
    env.unload_mod(CALLBACKS_MOD);
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

/// 5. "target module not present".
pub fn target_module_not_present<F: Flavor + 'static>(flavor: F) {
    let env = Env::new(flavor);
    let pre_patch_ret = Arc::new(AtomicI32::new(0));

    env.load_lp(test_klp_callbacks_demo(&pre_patch_ret), "");
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

/// 6. "pre-patch callback -ENODEV".
pub fn pre_patch_callback_enodev<F: Flavor + 'static>(flavor: F) {
    let env = Env::new(flavor);
    let pre_patch_ret = Arc::new(AtomicI32::new(-libc_errno::ENODEV));

    env.load_mod(CALLBACKS_MOD, "");
    let errno = env.load_failing_lp(test_klp_callbacks_demo(&pre_patch_ret), "pre_patch_ret=-19");
    assert_eq!(errno, -libc_errno::ENODEV);
    assert!(env.klp.patches().is_empty());
    env.unload_mod(CALLBACKS_MOD);

    env.check_result(&[
        "% insmod test_modules/test_klp_callbacks_mod.ko",
        "test_klp_callbacks_mod: test_klp_callbacks_mod_init",
        "% insmod test_modules/test_klp_callbacks_demo.ko pre_patch_ret=-19",
        "livepatch: enabling patch 'test_klp_callbacks_demo'",
        "livepatch: 'test_klp_callbacks_demo': initializing patching transition",
        "test_klp_callbacks_demo: pre_patch_callback: vmlinux",
        "livepatch: pre-patch callback failed for object 'vmlinux'",
        "livepatch: failed to enable patch 'test_klp_callbacks_demo'",
        "livepatch: 'test_klp_callbacks_demo': canceling patching transition, going to unpatch",
        "livepatch: 'test_klp_callbacks_demo': completing unpatching transition",
        "livepatch: 'test_klp_callbacks_demo': unpatching complete",
        "insmod: ERROR: could not insert module test_modules/test_klp_callbacks_demo.ko: No such device",
        "% rmmod test_klp_callbacks_mod",
        "test_klp_callbacks_mod: test_klp_callbacks_mod_exit",
    ]);
}

/// 7. "module_coming + pre-patch callback -ENODEV".
pub fn module_coming_pre_patch_callback_enodev<F: Flavor + 'static>(flavor: F) {
    let env = Env::new(flavor);
    let pre_patch_ret = Arc::new(AtomicI32::new(0));

    env.load_lp(test_klp_callbacks_demo(&pre_patch_ret), "");
    env.set_pre_patch_ret(CALLBACKS_DEMO, &pre_patch_ret, -libc_errno::ENODEV);
    let errno = env.load_failing_mod(CALLBACKS_MOD, "");
    assert_eq!(errno, -libc_errno::ENODEV);
    assert!(!env.patched(CALLBACKS_DEMO, CALLBACKS_MOD));
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
        "% echo -19 > /sys/module/test_klp_callbacks_demo/parameters/pre_patch_ret",
        "% insmod test_modules/test_klp_callbacks_mod.ko",
        "livepatch: applying patch 'test_klp_callbacks_demo' to loading module 'test_klp_callbacks_mod'",
        "test_klp_callbacks_demo: pre_patch_callback: test_klp_callbacks_mod -> [MODULE_STATE_COMING] Full formed, running module_init",
        "livepatch: pre-patch callback failed for object 'test_klp_callbacks_mod'",
        "livepatch: patch 'test_klp_callbacks_demo' failed for module 'test_klp_callbacks_mod', refusing to load module 'test_klp_callbacks_mod'",
        "insmod: ERROR: could not insert module test_modules/test_klp_callbacks_mod.ko: No such device",
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

/// 8. "multiple target modules".
pub fn multiple_target_modules<F: Flavor + 'static>(flavor: F) {
    let env = Env::new(flavor);
    let pre_patch_ret = Arc::new(AtomicI32::new(0));

    env.load_mod(CALLBACKS_BUSY, "block_transition=N");
    env.load_lp(test_klp_callbacks_demo(&pre_patch_ret), "");
    assert!(env.patched(CALLBACKS_DEMO, CALLBACKS_BUSY));
    env.load_mod(CALLBACKS_MOD, "");
    env.unload_mod(CALLBACKS_MOD);
    env.disable_lp(CALLBACKS_DEMO);
    env.unload_lp(CALLBACKS_DEMO);
    env.unload_mod(CALLBACKS_BUSY);

    env.check_result(&[
        "% insmod test_modules/test_klp_callbacks_busy.ko block_transition=N",
        "test_klp_callbacks_busy: test_klp_callbacks_busy_init",
        "test_klp_callbacks_busy: busymod_work_func enter",
        "test_klp_callbacks_busy: busymod_work_func exit",
        "% insmod test_modules/test_klp_callbacks_demo.ko",
        "livepatch: enabling patch 'test_klp_callbacks_demo'",
        "livepatch: 'test_klp_callbacks_demo': initializing patching transition",
        "test_klp_callbacks_demo: pre_patch_callback: vmlinux",
        "test_klp_callbacks_demo: pre_patch_callback: test_klp_callbacks_busy -> [MODULE_STATE_LIVE] Normal state",
        "livepatch: 'test_klp_callbacks_demo': starting patching transition",
        "livepatch: 'test_klp_callbacks_demo': completing patching transition",
        "test_klp_callbacks_demo: post_patch_callback: vmlinux",
        "test_klp_callbacks_demo: post_patch_callback: test_klp_callbacks_busy -> [MODULE_STATE_LIVE] Normal state",
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
        "test_klp_callbacks_demo: pre_unpatch_callback: test_klp_callbacks_busy -> [MODULE_STATE_LIVE] Normal state",
        "livepatch: 'test_klp_callbacks_demo': starting unpatching transition",
        "livepatch: 'test_klp_callbacks_demo': completing unpatching transition",
        "test_klp_callbacks_demo: post_unpatch_callback: vmlinux",
        "test_klp_callbacks_demo: post_unpatch_callback: test_klp_callbacks_busy -> [MODULE_STATE_LIVE] Normal state",
        "livepatch: 'test_klp_callbacks_demo': unpatching complete",
        "% rmmod test_klp_callbacks_demo",
        "% rmmod test_klp_callbacks_busy",
        "test_klp_callbacks_busy: test_klp_callbacks_busy_exit",
    ]);
}

/// 9. "busy target module": a stalled patching transition, reversed by the disable.
///
/// The transition stays stuck for [`STALL_PERIODS`] retry periods, as in the kernel, where
/// the script's steps take a few seconds while the work retries every second: well short
/// of `SIGNALS_TIMEOUT` (15) retries, so there is no `signaling remaining tasks` line.
pub fn busy_target_module<F: Flavor + 'static>(flavor: F) {
    busy_target_module_stalled(flavor, STALL_PERIODS);
}

/// How many retry periods test 9 keeps the transition stuck (the kernel's seconds).
pub const STALL_PERIODS: u32 = 8;

/// Test 9 with the stall cut to 1 retry period, fewer than 15 completion attempts even when
/// every park of the busy work triggers one: the same steps and log as test 9, whatever
/// the engine's signal cadence.
pub fn busy_target_module_short_stall<F: Flavor + 'static>(flavor: F) {
    busy_target_module_stalled(flavor, 1);
}

fn busy_target_module_stalled<F: Flavor + 'static>(flavor: F, stall_periods: u32) {
    let env = Env::new(flavor);
    let pre_patch_ret = Arc::new(AtomicI32::new(0));

    env.load_mod(CALLBACKS_BUSY, "block_transition=Y");
    env.load_lp_nowait(test_klp_callbacks_demo(&pre_patch_ret), "");
    wait_until("test_klp_callbacks_demo/transition reads 1", || {
        env.klp.patch(CALLBACKS_DEMO).is_some_and(|p| p.transition)
    });
    // The busy work sleeps in busymod_work_func: the retries cannot complete.
    parked(|| std::thread::sleep(RETRY * stall_periods));
    let lp = env.info(CALLBACKS_DEMO);
    assert!(
        lp.transition && lp.enabled && !lp.forced,
        "the patching transition is stuck: {lp:?}"
    );
    assert!(
        env.klp
            .tasks()
            .iter()
            .any(|t| t.pending && t.task.contains("busymod_work")),
        "the busy work is the task holding the transition up: {:?}",
        env.klp.tasks()
    );

    env.load_mod(CALLBACKS_MOD, "");
    assert!(env.patched(CALLBACKS_DEMO, CALLBACKS_MOD));
    env.unload_mod(CALLBACKS_MOD);
    assert!(!env.patched(CALLBACKS_DEMO, CALLBACKS_MOD));

    // Still the transition patch: writing 0 reverses its transition, which the write does
    // not complete itself; `enabled` reads 0 at once.
    env.write_enabled_0(CALLBACKS_DEMO);
    let lp = env.klp.patch(CALLBACKS_DEMO);
    assert!(
        lp.as_ref().is_none_or(|p| !p.enabled && p.transition),
        "after the reversing write: {lp:?}"
    );
    env.wait_gone(CALLBACKS_DEMO);
    env.unload_lp(CALLBACKS_DEMO);
    env.unload_mod(CALLBACKS_BUSY);

    env.check_result(&[
        "% insmod test_modules/test_klp_callbacks_busy.ko block_transition=Y",
        "test_klp_callbacks_busy: test_klp_callbacks_busy_init",
        "test_klp_callbacks_busy: busymod_work_func enter",
        "% insmod test_modules/test_klp_callbacks_demo.ko",
        "livepatch: enabling patch 'test_klp_callbacks_demo'",
        "livepatch: 'test_klp_callbacks_demo': initializing patching transition",
        "test_klp_callbacks_demo: pre_patch_callback: vmlinux",
        "test_klp_callbacks_demo: pre_patch_callback: test_klp_callbacks_busy -> [MODULE_STATE_LIVE] Normal state",
        "livepatch: 'test_klp_callbacks_demo': starting patching transition",
        "% insmod test_modules/test_klp_callbacks_mod.ko",
        "livepatch: applying patch 'test_klp_callbacks_demo' to loading module 'test_klp_callbacks_mod'",
        "test_klp_callbacks_demo: pre_patch_callback: test_klp_callbacks_mod -> [MODULE_STATE_COMING] Full formed, running module_init",
        "test_klp_callbacks_mod: test_klp_callbacks_mod_init",
        "% rmmod test_klp_callbacks_mod",
        "test_klp_callbacks_mod: test_klp_callbacks_mod_exit",
        "livepatch: reverting patch 'test_klp_callbacks_demo' on unloading module 'test_klp_callbacks_mod'",
        "test_klp_callbacks_demo: post_unpatch_callback: test_klp_callbacks_mod -> [MODULE_STATE_GOING] Going away",
        "% echo 0 > /sys/kernel/livepatch/test_klp_callbacks_demo/enabled",
        "livepatch: 'test_klp_callbacks_demo': reversing transition from patching to unpatching",
        "livepatch: 'test_klp_callbacks_demo': starting unpatching transition",
        "livepatch: 'test_klp_callbacks_demo': completing unpatching transition",
        "test_klp_callbacks_demo: post_unpatch_callback: vmlinux",
        "test_klp_callbacks_demo: post_unpatch_callback: test_klp_callbacks_busy -> [MODULE_STATE_LIVE] Normal state",
        "livepatch: 'test_klp_callbacks_demo': unpatching complete",
        "% rmmod test_klp_callbacks_demo",
        "% rmmod test_klp_callbacks_busy",
        "test_klp_callbacks_busy: busymod_work_func exit",
        "test_klp_callbacks_busy: test_klp_callbacks_busy_exit",
    ]);
}

/// 10. "multiple livepatches".
pub fn multiple_livepatches<F: Flavor + 'static>(flavor: F) {
    let env = Env::new(flavor);
    let pre_patch_ret = Arc::new(AtomicI32::new(0));

    env.load_lp(test_klp_callbacks_demo(&pre_patch_ret), "");
    env.load_lp(test_klp_callbacks_demo2(false), "");
    env.disable_lp(CALLBACKS_DEMO2);
    env.disable_lp(CALLBACKS_DEMO);
    env.unload_lp(CALLBACKS_DEMO2);
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
        "% insmod test_modules/test_klp_callbacks_demo2.ko",
        "livepatch: enabling patch 'test_klp_callbacks_demo2'",
        "livepatch: 'test_klp_callbacks_demo2': initializing patching transition",
        "test_klp_callbacks_demo2: pre_patch_callback: vmlinux",
        "livepatch: 'test_klp_callbacks_demo2': starting patching transition",
        "livepatch: 'test_klp_callbacks_demo2': completing patching transition",
        "test_klp_callbacks_demo2: post_patch_callback: vmlinux",
        "livepatch: 'test_klp_callbacks_demo2': patching complete",
        "% echo 0 > /sys/kernel/livepatch/test_klp_callbacks_demo2/enabled",
        "livepatch: 'test_klp_callbacks_demo2': initializing unpatching transition",
        "test_klp_callbacks_demo2: pre_unpatch_callback: vmlinux",
        "livepatch: 'test_klp_callbacks_demo2': starting unpatching transition",
        "livepatch: 'test_klp_callbacks_demo2': completing unpatching transition",
        "test_klp_callbacks_demo2: post_unpatch_callback: vmlinux",
        "livepatch: 'test_klp_callbacks_demo2': unpatching complete",
        "% echo 0 > /sys/kernel/livepatch/test_klp_callbacks_demo/enabled",
        "livepatch: 'test_klp_callbacks_demo': initializing unpatching transition",
        "test_klp_callbacks_demo: pre_unpatch_callback: vmlinux",
        "livepatch: 'test_klp_callbacks_demo': starting unpatching transition",
        "livepatch: 'test_klp_callbacks_demo': completing unpatching transition",
        "test_klp_callbacks_demo: post_unpatch_callback: vmlinux",
        "livepatch: 'test_klp_callbacks_demo': unpatching complete",
        "% rmmod test_klp_callbacks_demo2",
        "% rmmod test_klp_callbacks_demo",
    ]);
}

/// 11. "atomic replace": none of the replaced patch's callbacks run.
pub fn atomic_replace<F: Flavor + 'static>(flavor: F) {
    let env = Env::new(flavor);
    let pre_patch_ret = Arc::new(AtomicI32::new(0));

    env.load_lp(test_klp_callbacks_demo(&pre_patch_ret), "");
    env.load_lp(test_klp_callbacks_demo2(true), "replace=1");
    wait_until("the replaced patch is freed", || {
        env.patch_names() == [CALLBACKS_DEMO2]
    });
    // The dynamic objects (test_klp_callbacks_mod, test_klp_callbacks_busy) and the nop
    // for busymod_work_func were discarded at completion.
    assert_eq!(
        env.info(CALLBACKS_DEMO2).objects,
        [("vmlinux".to_owned(), true)]
    );
    env.disable_lp(CALLBACKS_DEMO2);
    env.unload_lp(CALLBACKS_DEMO2);
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
        "% insmod test_modules/test_klp_callbacks_demo2.ko replace=1",
        "livepatch: enabling patch 'test_klp_callbacks_demo2'",
        "livepatch: 'test_klp_callbacks_demo2': initializing patching transition",
        "test_klp_callbacks_demo2: pre_patch_callback: vmlinux",
        "livepatch: 'test_klp_callbacks_demo2': starting patching transition",
        "livepatch: 'test_klp_callbacks_demo2': completing patching transition",
        "test_klp_callbacks_demo2: post_patch_callback: vmlinux",
        "livepatch: 'test_klp_callbacks_demo2': patching complete",
        "% echo 0 > /sys/kernel/livepatch/test_klp_callbacks_demo2/enabled",
        "livepatch: 'test_klp_callbacks_demo2': initializing unpatching transition",
        "test_klp_callbacks_demo2: pre_unpatch_callback: vmlinux",
        "livepatch: 'test_klp_callbacks_demo2': starting unpatching transition",
        "livepatch: 'test_klp_callbacks_demo2': completing unpatching transition",
        "test_klp_callbacks_demo2: post_unpatch_callback: vmlinux",
        "livepatch: 'test_klp_callbacks_demo2': unpatching complete",
        "% rmmod test_klp_callbacks_demo2",
        "% rmmod test_klp_callbacks_demo",
    ]);
}
