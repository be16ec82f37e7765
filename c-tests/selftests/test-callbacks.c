/* test-callbacks.sh: the cases and their checks; the expected logs are
 * expected/callbacks-<n>.log. */
#include "harness.h"

#define LP "test_klp_callbacks_demo"
#define LP2 "test_klp_callbacks_demo2"
#define TGT "test_klp_callbacks_mod"
#define BUSY "test_klp_callbacks_busy"

/* 1. target module before livepatch */
static void target_module_before_livepatch(void)
{
	load_mod(TGT, "");
	load_lp(LP, "");
	disable_lp(LP);
	unload_lp(LP);
	unload_mod(TGT);
}

/* 2. module_coming notifier */
static void module_coming_notifier(void)
{
	load_lp(LP, "");
	load_mod(TGT, "");
	disable_lp(LP);
	unload_lp(LP);
	unload_mod(TGT);
}

/* 3. module_going notifier */
static void module_going_notifier(void)
{
	load_mod(TGT, "");
	load_lp(LP, "");
	unload_mod(TGT);
	disable_lp(LP);
	unload_lp(LP);
}

/* 4. module_coming and module_going notifiers */
static void module_coming_and_going_notifiers(void)
{
	load_lp(LP, "");
	load_mod(TGT, "");
	unload_mod(TGT);
	disable_lp(LP);
	unload_lp(LP);
}

/* 5. target module not present */
static void target_module_not_present(void)
{
	load_lp(LP, "");
	disable_lp(LP);
	unload_lp(LP);
}

/* 6. pre-patch callback -ENODEV */
static void pre_patch_callback_enodev(void)
{
	load_mod(TGT, "");
	CHECK_INT(load_failing_lp(LP, "pre_patch_ret=-19"), -ENODEV);
	unload_mod(TGT);
}

/* 7. module_coming + pre-patch callback -ENODEV */
static void module_coming_pre_patch_callback_enodev(void)
{
	load_lp(LP, "");
	set_pre_patch_ret(LP, -19);
	CHECK_INT(load_failing_mod(TGT, ""), -ENODEV);
	CHECK_INT(klp_object_patched(LP, TGT), 0);
	disable_lp(LP);
	unload_lp(LP);
}

/* 8. multiple target modules */
static void multiple_target_modules(void)
{
	load_mod(BUSY, "block_transition=N");
	load_lp(LP, "");
	CHECK_INT(klp_object_patched(LP, BUSY), 1);
	load_mod(TGT, "");
	unload_mod(TGT);
	disable_lp(LP);
	unload_lp(LP);
	unload_mod(BUSY);
}

/* 9. busy target module: the work sleeps in busymod_work_func, which the patch replaces,
 * so the patching transition stalls for `periods` retry periods (the kernel's seconds,
 * while the script's steps run); writing 0 to enabled reverses it. The retries stay
 * well short of the 15 after which the kernel signals the remaining tasks. */
static void busy_target_module_stalled(unsigned int periods)
{
	const unsigned int retry_ms = 100;

	CHECK_INT(klp_set_retry_period(retry_ms), 0);
	load_mod(BUSY, "block_transition=Y");
	load_lp_nowait(LP, "");
	LOOP_UNTIL(LP "/transition reads 1", klp_patch_transition(LP) == 1);
	msleep(retry_ms * periods);
	CHECK_INT(klp_patch_transition(LP), 1);
	CHECK_INT(klp_patch_enabled(LP), 1);

	load_mod(TGT, "");
	CHECK_INT(klp_object_patched(LP, TGT), 1);
	unload_mod(TGT);
	CHECK_INT(klp_object_patched(LP, TGT), 0);

	/* Still in transition: writing 0 reverses it; enabled reads 0 at once. */
	write_enabled_0(LP);
	CHECK(!patch_exists(LP) || klp_patch_enabled(LP) == 0);
	wait_gone(LP);
	unload_lp(LP);
	unload_mod(BUSY);
}

static void busy_target_module(void)
{
	busy_target_module_stalled(8);
}

/* 9b. the same, stalled for one retry period only. */
static void busy_target_module_short_stall(void)
{
	busy_target_module_stalled(1);
}

/* 10. multiple livepatches */
static void multiple_livepatches(void)
{
	load_lp(LP, "");
	load_lp(LP2, "");
	disable_lp(LP2);
	disable_lp(LP);
	unload_lp(LP2);
	unload_lp(LP);
}

/* 11. atomic replace: none of the replaced patch's callbacks run. */
static void atomic_replace(void)
{
	load_lp(LP, "");
	load_lp(LP2, "replace=1");
	LOOP_UNTIL("the replaced patch is freed", !patch_exists(LP));
	/* The dynamic objects and the nop were discarded at completion. */
	CHECK_INT(klp_object_patched(LP2, "vmlinux"), 1);
	CHECK_INT(klp_object_patched(LP2, TGT), -ENOENT);
	CHECK_INT(klp_object_patched(LP2, BUSY), -ENOENT);
	disable_lp(LP2);
	unload_lp(LP2);
	unload_lp(LP);
}

const struct selftest test_callbacks[] = {
	{ "callbacks-1", target_module_before_livepatch },
	{ "callbacks-2", module_coming_notifier },
	{ "callbacks-3", module_going_notifier },
	{ "callbacks-4", module_coming_and_going_notifiers },
	{ "callbacks-5", target_module_not_present },
	{ "callbacks-6", pre_patch_callback_enodev },
	{ "callbacks-7", module_coming_pre_patch_callback_enodev },
	{ "callbacks-8", multiple_target_modules },
	{ "callbacks-9", busy_target_module },
	{ "callbacks-9b", busy_target_module_short_stall },
	{ "callbacks-10", multiple_livepatches },
	{ "callbacks-11", atomic_replace },
	{ NULL, NULL },
};
