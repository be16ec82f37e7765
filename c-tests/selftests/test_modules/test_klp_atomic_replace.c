/* test_klp_atomic_replace: /proc/meminfo shows "test_klp_atomic_replace: this has been
 * live patched"; the parameter replace (insmod ... replace=1) makes it an atomic-replace
 * patch. */
#include "klp_selftest.h"

module_param(replace, int);

static int livepatch_meminfo_proc_show(struct seq_file *m, void *v)
{
	(void)v;
	seq_printf(m, "%s: %s\n", KBUILD_MODNAME, "this has been live patched");
	return 0;
}

static struct klp_func funcs[] = {
	{ .old_name = "meminfo_proc_show", .new_func = (void *)livepatch_meminfo_proc_show },
	{ 0 }
};

static struct klp_object objs[] = {
	{ .name = NULL, .funcs = funcs },
	{ 0 }
};

static struct klp_patch patch = {
	.name = KBUILD_MODNAME,
	.objs = objs,
};

static int test_klp_atomic_replace_init(void)
{
	patch.replace = replace;
	return klp_enable_patch(&patch);
}

static void test_klp_atomic_replace_exit(void)
{
}

module_init(test_klp_atomic_replace_init);
module_exit(test_klp_atomic_replace_exit);
