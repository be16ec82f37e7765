/* test_klp_livepatch: /proc/cmdline (cmdline_proc_show of vmlinux, the driver) shows
 * "test_klp_livepatch: this has been live patched". */
#include "klp_selftest.h"

static int livepatch_cmdline_proc_show(struct seq_file *m, void *v)
{
	(void)v;
	seq_printf(m, "%s: %s\n", KBUILD_MODNAME, "this has been live patched");
	return 0;
}

static struct klp_func funcs[] = {
	{ .old_name = "cmdline_proc_show", .new_func = (void *)livepatch_cmdline_proc_show },
	{ 0 }
};

static struct klp_object objs[] = {
	{ .name = NULL, .funcs = funcs }, /* NULL: vmlinux */
	{ 0 }
};

static struct klp_patch patch = {
	.name = KBUILD_MODNAME,
	.objs = objs,
};

static int test_klp_livepatch_init(void)
{
	return klp_enable_patch(&patch);
}

static void test_klp_livepatch_exit(void)
{
}

module_init(test_klp_livepatch_init);
module_exit(test_klp_livepatch_exit);
