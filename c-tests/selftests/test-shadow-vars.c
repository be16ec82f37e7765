/* test-shadow-vars.sh: the module test_klp_shadow_vars does everything in its init; the
 * expected log is expected/shadow-vars-1.log. */
#include "harness.h"

/* 1. basic shadow variable API */
static void basic_shadow_variable_api(void)
{
	load_mod("test_klp_shadow_vars", "");
	unload_mod("test_klp_shadow_vars");
}

const struct selftest test_shadow_vars[] = {
	{ "shadow-vars-1", basic_shadow_variable_api },
	{ NULL, NULL },
};
