/* test-sysfs.sh: the values of the attributes, through libklp's control surface (file
 * permissions do not apply); the expected logs are expected/sysfs-<n>.log. */
#include "harness.h"

#define LP "test_klp_livepatch"
#define DEMO "test_klp_callbacks_demo"
#define MOD "test_klp_callbacks_mod"
#define R "test_klp_atomic_replace"
#define SYSCALL "test_klp_syscall"

/* 1. sysfs test */
static void sysfs_test(void)
{
	load_lp(LP, "");
	CHECK_INT(klp_patch_enabled(LP), 1);
	CHECK_INT(klp_patch_transition(LP), 0);
	CHECK_INT(klp_object_patched(LP, "vmlinux"), 1);
	CHECK_INT(klp_object_patched(LP, NULL), 1);
	CHECK_INT(klp_patch_replace(LP), 0);
	CHECK_INT(klp_patch_stack_order(LP), 1);
	/* force: writing 1 outside a transition is refused. */
	CHECK_INT(klp_patch_force(LP), -EINVAL);

	disable_lp(LP);
	unload_lp(LP);
}

/* 2. sysfs test object/patched */
static void object_patched(void)
{
	load_lp(DEMO, "");
	CHECK_INT(klp_object_patched(DEMO, MOD), 0);
	CHECK_INT(klp_object_patched(DEMO, "vmlinux"), 1);

	load_mod(MOD, "");
	CHECK_INT(klp_object_patched(DEMO, MOD), 1);

	unload_mod(MOD);
	CHECK_INT(klp_object_patched(DEMO, MOD), 0);

	disable_lp(DEMO);
	unload_lp(DEMO);
}

/* 3. sysfs test replace enabled */
static void replace_enabled(void)
{
	load_lp(R, "replace=1");
	CHECK_INT(klp_patch_replace(R), 1);
	disable_lp(R);
	unload_lp(R);
}

/* 4. sysfs test replace disabled */
static void replace_disabled(void)
{
	load_lp(R, "replace=0");
	CHECK_INT(klp_patch_replace(R), 0);
	disable_lp(R);
	unload_lp(R);
}

/* 5. sysfs test stack_order value */
static void stack_order_value(void)
{
	load_lp(LP, "");
	CHECK_INT(klp_patch_stack_order(LP), 1);

	load_lp(DEMO, "");
	CHECK_INT(klp_patch_stack_order(DEMO), 2);

	load_lp(SYSCALL, "");
	CHECK_INT(klp_patch_stack_order(SYSCALL), 3);

	disable_lp(DEMO);
	unload_lp(DEMO);
	CHECK_INT(klp_patch_stack_order(LP), 1);
	CHECK_INT(klp_patch_stack_order(SYSCALL), 2);

	disable_lp(SYSCALL);
	unload_lp(SYSCALL);
	disable_lp(LP);
	unload_lp(LP);
}

const struct selftest test_sysfs[] = {
	{ "sysfs-1", sysfs_test },
	{ "sysfs-2", object_patched },
	{ "sysfs-3", replace_enabled },
	{ "sysfs-4", replace_disabled },
	{ "sysfs-5", stack_order_value },
	{ NULL, NULL },
};
