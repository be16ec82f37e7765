/* test_klp_mod_patch: replaces test_klp_mod_target_show of the module
 * test_klp_mod_target. */
#include "klp_selftest.h"

static int livepatch_mod_target_show(struct seq_file *m, void *v)
{
	(void)v;
	seq_printf(m, "%s: %s\n", KBUILD_MODNAME, "this has been live patched");
	return 0;
}

static struct klp_func funcs[] = {
	{ .old_name = "test_klp_mod_target_show", .new_func = (void *)livepatch_mod_target_show },
	{ 0 }
};

static struct klp_object objs[] = {
	{ .name = "test_klp_mod_target", .funcs = funcs },
	{ 0 }
};

static struct klp_patch patch = {
	.name = KBUILD_MODNAME,
	.objs = objs,
};

static int test_klp_mod_patch_init(void)
{
	return klp_enable_patch(&patch);
}

static void test_klp_mod_patch_exit(void)
{
}

module_init(test_klp_mod_patch_init);
module_exit(test_klp_mod_patch_exit);
