// SPDX-License-Identifier: MIT OR Apache-2.0
/* not_a_module: a shared object without <linux/module.h>. */
int not_a_module_answer(void);

int not_a_module_answer(void)
{
	return 42;
}
