//! `test-state.sh` (reference §10.5): the console_loglevel system state.

use klp_sync::Flavor;

use super::*;

fn loglevel() -> i32 {
    CONSOLE_LOGLEVEL.load(Ordering::SeqCst)
}

/// 1. "system state modification".
pub fn system_state_modification<F: Flavor + 'static>(flavor: F) {
    let env = Env::new(flavor);

    env.load_lp(test_klp_state(STATE, 1, false), "");
    assert_eq!(loglevel(), CONSOLE_LOGLEVEL_MOTORMOUTH);
    let s = env
        .klp
        .get_state(STATE, CONSOLE_LOGLEVEL_STATE)
        .expect("state 1");
    assert_eq!((s.id, s.version), (1, 1));
    assert!(!s.data().is_null(), "the state carries the saved loglevel");

    env.disable_lp(STATE);
    env.unload_lp(STATE);
    assert_eq!(loglevel(), CONSOLE_LOGLEVEL_DEFAULT);
    assert!(s.data().is_null(), "post_unpatch freed the data");

    env.check_result(&[
        "% insmod test_modules/test_klp_state.ko",
        "livepatch: enabling patch 'test_klp_state'",
        "livepatch: 'test_klp_state': initializing patching transition",
        "test_klp_state: pre_patch_callback: vmlinux",
        "test_klp_state: allocate_loglevel_state: allocating space to store console_loglevel",
        "livepatch: 'test_klp_state': starting patching transition",
        "livepatch: 'test_klp_state': completing patching transition",
        "test_klp_state: post_patch_callback: vmlinux",
        "test_klp_state: fix_console_loglevel: fixing console_loglevel",
        "livepatch: 'test_klp_state': patching complete",
        "% echo 0 > /sys/kernel/livepatch/test_klp_state/enabled",
        "livepatch: 'test_klp_state': initializing unpatching transition",
        "test_klp_state: pre_unpatch_callback: vmlinux",
        "test_klp_state: restore_console_loglevel: restoring console_loglevel",
        "livepatch: 'test_klp_state': starting unpatching transition",
        "livepatch: 'test_klp_state': completing unpatching transition",
        "test_klp_state: post_unpatch_callback: vmlinux",
        "test_klp_state: free_loglevel_state: freeing space for the stored console_loglevel",
        "livepatch: 'test_klp_state': unpatching complete",
        "% rmmod test_klp_state",
    ]);
}

/// 2. "taking over system state modification".
pub fn taking_over_system_state_modification<F: Flavor + 'static>(flavor: F) {
    let env = Env::new(flavor);

    env.load_lp(test_klp_state(STATE, 1, false), "");
    let s1 = env
        .klp
        .get_state(STATE, CONSOLE_LOGLEVEL_STATE)
        .expect("state 1");
    env.load_lp(test_klp_state(STATE2, 2, true), "");
    assert_eq!(env.patch_names(), [STATE2], "test_klp_state was replaced");
    let s2 = env
        .klp
        .get_state(STATE2, CONSOLE_LOGLEVEL_STATE)
        .expect("state 1");
    assert_eq!(s2.version, 2);
    assert_eq!(s2.data(), s1.data(), "the data was taken over");
    assert_eq!(loglevel(), CONSOLE_LOGLEVEL_MOTORMOUTH);

    env.unload_lp(STATE);
    env.disable_lp(STATE2);
    env.unload_lp(STATE2);
    assert_eq!(loglevel(), CONSOLE_LOGLEVEL_DEFAULT);

    env.check_result(&[
        "% insmod test_modules/test_klp_state.ko",
        "livepatch: enabling patch 'test_klp_state'",
        "livepatch: 'test_klp_state': initializing patching transition",
        "test_klp_state: pre_patch_callback: vmlinux",
        "test_klp_state: allocate_loglevel_state: allocating space to store console_loglevel",
        "livepatch: 'test_klp_state': starting patching transition",
        "livepatch: 'test_klp_state': completing patching transition",
        "test_klp_state: post_patch_callback: vmlinux",
        "test_klp_state: fix_console_loglevel: fixing console_loglevel",
        "livepatch: 'test_klp_state': patching complete",
        "% insmod test_modules/test_klp_state2.ko",
        "livepatch: enabling patch 'test_klp_state2'",
        "livepatch: 'test_klp_state2': initializing patching transition",
        "test_klp_state2: pre_patch_callback: vmlinux",
        "test_klp_state2: allocate_loglevel_state: space to store console_loglevel already allocated",
        "livepatch: 'test_klp_state2': starting patching transition",
        "livepatch: 'test_klp_state2': completing patching transition",
        "test_klp_state2: post_patch_callback: vmlinux",
        "test_klp_state2: fix_console_loglevel: taking over the console_loglevel change",
        "livepatch: 'test_klp_state2': patching complete",
        "% rmmod test_klp_state",
        "% echo 0 > /sys/kernel/livepatch/test_klp_state2/enabled",
        "livepatch: 'test_klp_state2': initializing unpatching transition",
        "test_klp_state2: pre_unpatch_callback: vmlinux",
        "test_klp_state2: restore_console_loglevel: restoring console_loglevel",
        "livepatch: 'test_klp_state2': starting unpatching transition",
        "livepatch: 'test_klp_state2': completing unpatching transition",
        "test_klp_state2: post_unpatch_callback: vmlinux",
        "test_klp_state2: free_loglevel_state: freeing space for the stored console_loglevel",
        "livepatch: 'test_klp_state2': unpatching complete",
        "% rmmod test_klp_state2",
    ]);
}

/// 3. "compatible cumulative livepatches".
pub fn compatible_cumulative_livepatches<F: Flavor + 'static>(flavor: F) {
    let env = Env::new(flavor);

    env.load_lp(test_klp_state(STATE2, 2, true), "");
    env.load_lp(test_klp_state(STATE3, 2, true), "");
    assert_eq!(env.patch_names(), [STATE3]);
    env.unload_lp(STATE2);
    env.load_lp(test_klp_state(STATE2, 2, true), "");
    assert_eq!(env.patch_names(), [STATE2]);
    assert_eq!(loglevel(), CONSOLE_LOGLEVEL_MOTORMOUTH);
    env.disable_lp(STATE2);
    env.unload_lp(STATE2);
    env.unload_lp(STATE3);
    assert_eq!(loglevel(), CONSOLE_LOGLEVEL_DEFAULT);

    env.check_result(&[
        "% insmod test_modules/test_klp_state2.ko",
        "livepatch: enabling patch 'test_klp_state2'",
        "livepatch: 'test_klp_state2': initializing patching transition",
        "test_klp_state2: pre_patch_callback: vmlinux",
        "test_klp_state2: allocate_loglevel_state: allocating space to store console_loglevel",
        "livepatch: 'test_klp_state2': starting patching transition",
        "livepatch: 'test_klp_state2': completing patching transition",
        "test_klp_state2: post_patch_callback: vmlinux",
        "test_klp_state2: fix_console_loglevel: fixing console_loglevel",
        "livepatch: 'test_klp_state2': patching complete",
        "% insmod test_modules/test_klp_state3.ko",
        "livepatch: enabling patch 'test_klp_state3'",
        "livepatch: 'test_klp_state3': initializing patching transition",
        "test_klp_state3: pre_patch_callback: vmlinux",
        "test_klp_state3: allocate_loglevel_state: space to store console_loglevel already allocated",
        "livepatch: 'test_klp_state3': starting patching transition",
        "livepatch: 'test_klp_state3': completing patching transition",
        "test_klp_state3: post_patch_callback: vmlinux",
        "test_klp_state3: fix_console_loglevel: taking over the console_loglevel change",
        "livepatch: 'test_klp_state3': patching complete",
        "% rmmod test_klp_state2",
        "% insmod test_modules/test_klp_state2.ko",
        "livepatch: enabling patch 'test_klp_state2'",
        "livepatch: 'test_klp_state2': initializing patching transition",
        "test_klp_state2: pre_patch_callback: vmlinux",
        "test_klp_state2: allocate_loglevel_state: space to store console_loglevel already allocated",
        "livepatch: 'test_klp_state2': starting patching transition",
        "livepatch: 'test_klp_state2': completing patching transition",
        "test_klp_state2: post_patch_callback: vmlinux",
        "test_klp_state2: fix_console_loglevel: taking over the console_loglevel change",
        "livepatch: 'test_klp_state2': patching complete",
        "% echo 0 > /sys/kernel/livepatch/test_klp_state2/enabled",
        "livepatch: 'test_klp_state2': initializing unpatching transition",
        "test_klp_state2: pre_unpatch_callback: vmlinux",
        "test_klp_state2: restore_console_loglevel: restoring console_loglevel",
        "livepatch: 'test_klp_state2': starting unpatching transition",
        "livepatch: 'test_klp_state2': completing unpatching transition",
        "test_klp_state2: post_unpatch_callback: vmlinux",
        "test_klp_state2: free_loglevel_state: freeing space for the stored console_loglevel",
        "livepatch: 'test_klp_state2': unpatching complete",
        "% rmmod test_klp_state2",
        "% rmmod test_klp_state3",
    ]);
}

/// 4. "incompatible cumulative livepatches": a lower state version is refused.
pub fn incompatible_cumulative_livepatches<F: Flavor + 'static>(flavor: F) {
    let env = Env::new(flavor);

    env.load_lp(test_klp_state(STATE2, 2, true), "");
    let errno = env.load_failing_lp(test_klp_state(STATE, 1, false), "");
    assert_eq!(errno, -libc_errno::EINVAL);
    assert_eq!(env.patch_names(), [STATE2]);
    env.disable_lp(STATE2);
    env.unload_lp(STATE2);

    env.check_result(&[
        "% insmod test_modules/test_klp_state2.ko",
        "livepatch: enabling patch 'test_klp_state2'",
        "livepatch: 'test_klp_state2': initializing patching transition",
        "test_klp_state2: pre_patch_callback: vmlinux",
        "test_klp_state2: allocate_loglevel_state: allocating space to store console_loglevel",
        "livepatch: 'test_klp_state2': starting patching transition",
        "livepatch: 'test_klp_state2': completing patching transition",
        "test_klp_state2: post_patch_callback: vmlinux",
        "test_klp_state2: fix_console_loglevel: fixing console_loglevel",
        "livepatch: 'test_klp_state2': patching complete",
        "% insmod test_modules/test_klp_state.ko",
        "livepatch: Livepatch patch (test_klp_state) is not compatible with the already installed livepatches.",
        "insmod: ERROR: could not insert module test_modules/test_klp_state.ko: Invalid parameters",
        "% echo 0 > /sys/kernel/livepatch/test_klp_state2/enabled",
        "livepatch: 'test_klp_state2': initializing unpatching transition",
        "test_klp_state2: pre_unpatch_callback: vmlinux",
        "test_klp_state2: restore_console_loglevel: restoring console_loglevel",
        "livepatch: 'test_klp_state2': starting unpatching transition",
        "livepatch: 'test_klp_state2': completing unpatching transition",
        "test_klp_state2: post_unpatch_callback: vmlinux",
        "test_klp_state2: free_loglevel_state: freeing space for the stored console_loglevel",
        "livepatch: 'test_klp_state2': unpatching complete",
        "% rmmod test_klp_state2",
    ]);
}
