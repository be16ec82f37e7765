/* test_klp_mod_target: a target module; its /proc/test_klp_mod_target is shown by
 * test_klp_mod_target_show, which the driver calls (found with dlsym). */
#include "klp_selftest.h"

KLP_OBJECT("test_klp_mod_target");

KLP_PATCHABLE(int, test_klp_mod_target_show, (struct seq_file *m, void *v), (m, v))
{
	(void)v;
	seq_printf(m, "%s: %s\n", KBUILD_MODNAME, "original output");
	return 0;
}

static int test_klp_mod_target_init(void)
{
	pr_info("%s", __func__);
	return 0;
}

static void test_klp_mod_target_exit(void)
{
	pr_info("%s", __func__);
}

/* After KLP_OBJECT: see module_init in klp_selftest.h. */
module_init(test_klp_mod_target_init);
module_exit(test_klp_mod_target_exit);
