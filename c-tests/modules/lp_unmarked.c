// SPDX-License-Identifier: MIT OR Apache-2.0
/* lp_unmarked: a livepatch module that forgot MODULE_INFO(livepatch, "Y"): its
 * klp_enable_patch is refused, as the kernel refuses it, and so is its load. */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>

static int new_compute(int x)
{
	return x + 200;
}

static struct klp_func funcs[] = {
	{ .old_name = "compute", .new_func = new_compute }, { }
};

static struct klp_object objs[] = {
	{ .funcs = funcs }, { }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
};

static int lp_unmarked_init(void)
{
	return klp_enable_patch(&patch);
}

static void lp_unmarked_exit(void)
{
}

module_init(lp_unmarked_init);
module_exit(lp_unmarked_exit);
MODULE_LICENSE("MIT OR Apache-2.0");
