// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * test_klp_mod_patch: the kernel's selftest module of that name, in the kernel's form,
 * rewritten for libklp: it replaces test_klp_mod_target_show of the module
 * test_klp_mod_target.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>

static int livepatch_mod_target_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%s: %s\n", THIS_MODULE->name, "this has been live patched");
	return 0;
}

static struct klp_func funcs[] = {
	{
		.old_name = "test_klp_mod_target_show",
		.new_func = livepatch_mod_target_show,
	}, { }
};

static struct klp_object objs[] = {
	{
		.name = "test_klp_mod_target",
		.funcs = funcs,
	}, { }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
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
MODULE_LICENSE("MIT OR Apache-2.0");
MODULE_INFO(livepatch, "Y");
MODULE_AUTHOR("The libklp authors");
MODULE_DESCRIPTION("Livepatch test: patch of a module's function");
