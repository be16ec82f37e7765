// SPDX-License-Identifier: MIT OR Apache-2.0
/* mod_noexit: a module with an init and no exit, which the kernel cannot unload. */

#include <linux/module.h>
#include <linux/kernel.h>

static int mod_noexit_init(void)
{
	return 0;
}

module_init(mod_noexit_init);
MODULE_LICENSE("MIT OR Apache-2.0");
