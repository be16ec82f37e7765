/* test_klp_state: an atomic-replace patch with the system state 1 (console_loglevel,
 * version 1): its callbacks save console_loglevel, raise it, restore it. */
#include "callback_info.h"

#define CONSOLE_LOGLEVEL_STATE 1
#define CONSOLE_LOGLEVEL_STATE_VERSION 1

static struct klp_patch patch;

static int allocate_loglevel_state(void)
{
	struct klp_state *loglevel_state = klp_get_state(&patch, CONSOLE_LOGLEVEL_STATE);

	if (!loglevel_state)
		return -EINVAL;
	loglevel_state->data = calloc(1, sizeof(console_loglevel));
	if (!loglevel_state->data)
		return -ENOMEM;
	pr_info("%s: allocating space to store console_loglevel", __func__);
	return 0;
}

static void fix_console_loglevel(void)
{
	struct klp_state *loglevel_state = klp_get_state(&patch, CONSOLE_LOGLEVEL_STATE);

	if (!loglevel_state)
		return;
	pr_info("%s: fixing console_loglevel", __func__);
	*(int *)loglevel_state->data = console_loglevel;
	console_loglevel = CONSOLE_LOGLEVEL_MOTORMOUTH;
}

static void restore_console_loglevel(void)
{
	struct klp_state *loglevel_state = klp_get_state(&patch, CONSOLE_LOGLEVEL_STATE);

	if (!loglevel_state)
		return;
	pr_info("%s: restoring console_loglevel", __func__);
	console_loglevel = *(int *)loglevel_state->data;
}

static void free_loglevel_state(void)
{
	struct klp_state *loglevel_state = klp_get_state(&patch, CONSOLE_LOGLEVEL_STATE);

	if (!loglevel_state)
		return;
	pr_info("%s: freeing space for the stored console_loglevel", __func__);
	free(loglevel_state->data);
	loglevel_state->data = NULL;
}

static int pre_patch_callback(struct klp_object *obj)
{
	callback_info(__func__, obj);
	return allocate_loglevel_state();
}

static void post_patch_callback(struct klp_object *obj)
{
	callback_info(__func__, obj);
	fix_console_loglevel();
}

static void pre_unpatch_callback(struct klp_object *obj)
{
	callback_info(__func__, obj);
	restore_console_loglevel();
}

static void post_unpatch_callback(struct klp_object *obj)
{
	callback_info(__func__, obj);
	free_loglevel_state();
}

static struct klp_func no_funcs[] = { { 0 } };

static struct klp_object objs[] = {
	{
		.name = NULL,
		.funcs = no_funcs,
		.callbacks = {
			.pre_patch = pre_patch_callback,
			.post_patch = post_patch_callback,
			.pre_unpatch = pre_unpatch_callback,
			.post_unpatch = post_unpatch_callback,
		},
	},
	{ 0 }
};

static struct klp_state states[] = {
	{ .id = CONSOLE_LOGLEVEL_STATE, .version = CONSOLE_LOGLEVEL_STATE_VERSION },
	{ 0 }
};

static struct klp_patch patch = {
	.name = KBUILD_MODNAME,
	.objs = objs,
	.states = states,
	.replace = true,
};

static int test_klp_state_init(void)
{
	return klp_enable_patch(&patch);
}

static void test_klp_state_exit(void)
{
}

module_init(test_klp_state_init);
module_exit(test_klp_state_exit);
