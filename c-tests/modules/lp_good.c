// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * lp_good: a livepatch module in the kernel's form (the compatibility headers). It
 * replaces compute() of vmlinux (modules_main.c) and has a parameter of each type,
 * which its init prints.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>

static int p_int = -1;
static unsigned int p_uint;
static long p_long;
static unsigned long p_ulong;
static short p_short;
static unsigned short p_ushort;
static unsigned char p_byte;
static unsigned long long p_ullong;
static unsigned int p_hexint;
static bool p_bool;
static bool p_invbool;
static char *p_charp = "none";
static int p_array[4];
static unsigned int p_array_n;
static int p_ro;

module_param(p_int, int, 0644);
module_param(p_uint, uint, 0644);
module_param(p_long, long, 0644);
module_param(p_ulong, ulong, 0644);
module_param(p_short, short, 0644);
module_param(p_ushort, ushort, 0644);
module_param(p_byte, byte, 0644);
module_param(p_ullong, ullong, 0644);
module_param(p_hexint, hexint, 0644);
module_param(p_bool, bool, 0644);
module_param(p_invbool, invbool, 0644);
module_param(p_charp, charp, 0644);
module_param_array(p_array, int, &p_array_n, 0644);
module_param(p_ro, int, 0444);
MODULE_PARM_DESC(p_int, "an int (default -1)");

/* What the program reads back (dlsym). */
int lp_good_p_int(void)
{
	return p_int;
}

static int new_compute(int x)
{
	return x + 100;
}

static struct klp_func funcs[] = {
	{
		.old_name = "compute",
		.new_func = new_compute,
	}, { }
};

static struct klp_object objs[] = {
	{
		.funcs = funcs,
	}, { }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
};

static int lp_good_init(void)
{
	pr_info("params: int=%d uint=%u long=%ld ulong=%lu short=%d ushort=%u byte=%u ullong=%llu hexint=%#x bool=%d invbool=%d charp=%s array=%u:%d,%d,%d,%d\n",
		p_int, p_uint, p_long, p_ulong, p_short, p_ushort, p_byte, p_ullong, p_hexint,
		p_bool, p_invbool, p_charp, p_array_n, p_array[0], p_array[1], p_array[2],
		p_array[3]);
	pr_info("state %d, name %s\n", THIS_MODULE->state, THIS_MODULE->name);
	return klp_enable_patch(&patch);
}

static void lp_good_exit(void)
{
	pr_info("exit, state %d\n", THIS_MODULE->state);
}

module_init(lp_good_init);
module_exit(lp_good_exit);
MODULE_LICENSE("MIT OR Apache-2.0");
MODULE_INFO(livepatch, "Y");
MODULE_AUTHOR("The libklp authors");
MODULE_DESCRIPTION("libklp test: a livepatch module with parameters");
