// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * livepatch-sample.c - the kernel's livepatch sample module, in the kernel's form,
 * rewritten for libklp.
 *
 * It replaces the function that shows the kernel's command line when /proc/cmdline is
 * read (cmdline_proc_show of vmlinux: here the program kernel.c).
 *
 *   % cat /proc/cmdline
 *   <the command line>
 *   % insmod livepatch-sample.ko
 *   % cat /proc/cmdline
 *   this has been live patched
 *   % echo 0 > /sys/kernel/livepatch/livepatch_sample/enabled
 *   % cat /proc/cmdline
 *   <the command line>
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>

#include <linux/seq_file.h>
static int livepatch_cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%s\n", "this has been live patched");
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

static int livepatch_init(void)
{
	return klp_enable_patch(&patch);
}

static void livepatch_exit(void)
{
}

module_init(livepatch_init);
module_exit(livepatch_exit);
MODULE_LICENSE("MIT OR Apache-2.0");
MODULE_INFO(livepatch, "Y");
