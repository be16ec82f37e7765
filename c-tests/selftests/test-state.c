/* test-state.sh: the console_loglevel system state (id 1) of test_klp_state (version 1)
 * and test_klp_state2/3 (version 2); the expected logs are expected/state-<n>.log. */
#include "harness.h"

#define S1 "test_klp_state"
#define S2 "test_klp_state2"
#define S3 "test_klp_state3"

/* 1. system state modification */
static void system_state_modification(void)
{
	load_lp(S1, "");
	CHECK_INT(console_loglevel, CONSOLE_LOGLEVEL_MOTORMOUTH);

	disable_lp(S1);
	unload_lp(S1);
	CHECK_INT(console_loglevel, CONSOLE_LOGLEVEL_DEFAULT);
}

/* 2. taking over system state modification */
static void taking_over_system_state_modification(void)
{
	load_lp(S1, "");
	load_lp(S2, "");
	CHECK_INT(klp_patch_enabled(S2), 1);
	LOOP_UNTIL("test_klp_state is replaced", !patch_exists(S1));
	CHECK_INT(console_loglevel, CONSOLE_LOGLEVEL_MOTORMOUTH);

	unload_lp(S1);
	disable_lp(S2);
	unload_lp(S2);
	CHECK_INT(console_loglevel, CONSOLE_LOGLEVEL_DEFAULT);
}

/* 3. compatible cumulative livepatches */
static void compatible_cumulative_livepatches(void)
{
	load_lp(S2, "");
	load_lp(S3, "");
	LOOP_UNTIL("test_klp_state2 is replaced", !patch_exists(S2));
	unload_lp(S2);
	load_lp(S2, "");
	LOOP_UNTIL("test_klp_state3 is replaced", !patch_exists(S3));
	CHECK_INT(console_loglevel, CONSOLE_LOGLEVEL_MOTORMOUTH);

	disable_lp(S2);
	unload_lp(S2);
	unload_lp(S3);
	CHECK_INT(console_loglevel, CONSOLE_LOGLEVEL_DEFAULT);
}

/* 4. incompatible cumulative livepatches */
static void incompatible_cumulative_livepatches(void)
{
	load_lp(S2, "");
	CHECK_INT(load_failing_lp(S1, ""), -EINVAL);
	CHECK_INT(klp_patch_enabled(S2), 1);

	disable_lp(S2);
	unload_lp(S2);
	CHECK_INT(console_loglevel, CONSOLE_LOGLEVEL_DEFAULT);
}

const struct selftest test_state[] = {
	{ "state-1", system_state_modification },
	{ "state-2", taking_over_system_state_modification },
	{ "state-3", compatible_cumulative_livepatches },
	{ "state-4", incompatible_cumulative_livepatches },
	{ NULL, NULL },
};
