// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * test_klp_livepatch: the kernel's selftest module of that name, in the kernel's form,
 * rewritten for libklp. /proc/cmdline (cmdline_proc_show of vmlinux, the driver) shows
 * "test_klp_livepatch: this has been live patched".
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>

static int livepatch_cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%s: %s\n", THIS_MODULE->name, "this has been live patched");
	return 0;
}

static struct klp_func funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = livepatch_cmdline_proc_show,
	}, { }
};

static struct klp_object objs[] = {
	{
		/* no name: vmlinux */
		.funcs = funcs,
	}, { }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
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
MODULE_LICENSE("MIT OR Apache-2.0");
MODULE_INFO(livepatch, "Y");
MODULE_AUTHOR("The libklp authors");
MODULE_DESCRIPTION("Livepatch test: livepatch module");
