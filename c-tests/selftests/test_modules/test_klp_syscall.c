/* test_klp_syscall: patches the getpid syscall entry of vmlinux (sys_getpid, as on
 * powerpc); prints nothing. */
#include "klp_selftest.h"

#include <unistd.h>

static long lp_sys_getpid(void)
{
	return (long)getpid();
}

static struct klp_func funcs[] = {
	{ .old_name = "sys_getpid", .new_func = (void *)lp_sys_getpid },
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

static int test_klp_syscall_init(void)
{
	return klp_enable_patch(&patch);
}

static void test_klp_syscall_exit(void)
{
}

module_init(test_klp_syscall_init);
module_exit(test_klp_syscall_exit);
