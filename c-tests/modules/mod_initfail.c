// SPDX-License-Identifier: MIT OR Apache-2.0
/* mod_initfail: a module whose init fails (-ENODEV) after printing a line; the exit must
 * never run. */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/kernel.h>

static int mod_initfail_init(void)
{
	pr_info("init runs and fails\n");
	return -ENODEV;
}

static void mod_initfail_exit(void)
{
	pr_err("exit must not run\n");
}

module_init(mod_initfail_init);
module_exit(mod_initfail_exit);
MODULE_LICENSE("MIT OR Apache-2.0");
