// SPDX-License-Identifier: MIT OR Apache-2.0
/* mod_unknown_symbol: a module that needs a kernel symbol the program does not export
 * (the kernel's "Unknown symbol in module"): its load is refused with -ENOENT. */

#include <linux/module.h>
#include <linux/kernel.h>

extern int no_such_kernel_symbol;

static int mod_unknown_symbol_init(void)
{
	return no_such_kernel_symbol;
}

static void mod_unknown_symbol_exit(void)
{
}

module_init(mod_unknown_symbol_init);
module_exit(mod_unknown_symbol_exit);
MODULE_LICENSE("MIT OR Apache-2.0");
