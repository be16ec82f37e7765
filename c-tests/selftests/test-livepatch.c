/* test-livepatch.sh: the cases and their checks; the expected logs are
 * expected/livepatch-<n>.log. */
#include "harness.h"

#define LP1 "test_klp_livepatch"
#define LP2 "test_klp_syscall"
#define LP3 "test_klp_callbacks_demo"
#define R "test_klp_atomic_replace"
#define TGT "test_klp_mod_target"
#define TP "test_klp_mod_patch"

#define CMDLINE_PATCHED "test_klp_livepatch: this has been live patched\n"
#define MEMINFO_PATCHED "test_klp_atomic_replace: this has been live patched\n"
#define TARGET_ORIGINAL "test_klp_mod_target: original output\n"
#define TARGET_PATCHED "test_klp_mod_patch: this has been live patched\n"

/* 1. basic function patching */
static void basic_function_patching(void)
{
	load_lp(LP1, "");
	CHECK_STR(proc_read(cmdline_proc_show), CMDLINE_PATCHED);

	disable_lp(LP1);
	unload_lp(LP1);
	CHECK_STR(proc_read(cmdline_proc_show), CMDLINE);
}

/* 2. multiple livepatches */
static void multiple_livepatches(void)
{
	load_lp(LP1, "");
	grep_live_patched();
	CHECK_STR(proc_read(meminfo_proc_show), MEMINFO);

	load_lp(R, "replace=0");
	grep_live_patched();
	CHECK_STR(proc_read(cmdline_proc_show), CMDLINE_PATCHED);
	CHECK_STR(proc_read(meminfo_proc_show), MEMINFO_PATCHED);

	disable_lp(R);
	unload_lp(R);
	grep_live_patched();

	disable_lp(LP1);
	unload_lp(LP1);
	grep_live_patched();
	CHECK_STR(proc_read(cmdline_proc_show), CMDLINE);
	CHECK_STR(proc_read(meminfo_proc_show), MEMINFO);
}

/* 3. atomic replace livepatch */
static void atomic_replace_livepatch(void)
{
	load_lp(LP1, "");
	grep_live_patched();
	load_lp(LP2, "");
	load_lp(LP3, "");
	/* /sys/kernel/livepatch holds exactly the three patches. */
	CHECK(patch_exists(LP1) && patch_exists(LP2) && patch_exists(LP3));
	CHECK_INT(patch_count(), 3);

	load_lp(R, "replace=1");
	grep_live_patched();
	CHECK_STR(proc_read(cmdline_proc_show), CMDLINE);

	/* The replaced patches are freed asynchronously: one entry remains. */
	LOOP_UNTIL("/sys/kernel/livepatch holds one patch",
		   !patch_exists(LP1) && !patch_exists(LP2) && !patch_exists(LP3));
	CHECK_INT(patch_count(), 1);
	CHECK_INT(klp_patch_enabled(R), 1);
	CHECK_INT(klp_patch_replace(R), 1);
	CHECK_INT(klp_patch_transition(R), 0);
	CHECK_INT(klp_patch_stack_order(R), 1);
	CHECK_INT(klp_object_patched(R, "vmlinux"), 1);

	unload_lp(LP3);
	unload_lp(LP2);
	unload_lp(LP1);

	grep_live_patched();
	disable_lp(R);
	unload_lp(R);
	grep_live_patched();
	CHECK_STR(proc_read(meminfo_proc_show), MEMINFO);
}

/* 4. module function patching */
static void module_function_patching(void)
{
	load_mod(TGT, "");
	CHECK_STR(proc_read_mod_target(), TARGET_ORIGINAL);

	load_lp(TP, "");
	CHECK_STR(proc_read_mod_target(), TARGET_PATCHED);
	CHECK_INT(klp_object_patched(TP, TGT), 1);

	disable_lp(TP);
	unload_lp(TP);
	CHECK_STR(proc_read_mod_target(), TARGET_ORIGINAL);

	unload_mod(TGT);
}

/* 5. module function patching (livepatch first) */
static void module_function_patching_livepatch_first(void)
{
	load_lp(TP, "");
	CHECK_INT(klp_object_patched(TP, TGT), 0);

	load_mod(TGT, "");
	CHECK_STR(proc_read_mod_target(), TARGET_PATCHED);
	CHECK_INT(klp_object_patched(TP, TGT), 1);

	disable_lp(TP);
	unload_lp(TP);
	CHECK_STR(proc_read_mod_target(), TARGET_ORIGINAL);

	unload_mod(TGT);
}

const struct selftest test_livepatch[] = {
	{ "livepatch-1", basic_function_patching },
	{ "livepatch-2", multiple_livepatches },
	{ "livepatch-3", atomic_replace_livepatch },
	{ "livepatch-4", module_function_patching },
	{ "livepatch-5", module_function_patching_livepatch_first },
	{ NULL, NULL },
};
