/* test_klp_callbacks_mod: an ordinary target module (the object test_klp_callbacks_mod,
 * without patchable functions); prints its init and exit. */
#include "klp_selftest.h"

KLP_OBJECT("test_klp_callbacks_mod");

static int test_klp_callbacks_mod_init(void)
{
	pr_info("%s", __func__);
	return 0;
}

static void test_klp_callbacks_mod_exit(void)
{
	pr_info("%s", __func__);
}

/* After KLP_OBJECT: see module_init in klp_selftest.h. */
module_init(test_klp_callbacks_mod_init);
module_exit(test_klp_callbacks_mod_exit);
