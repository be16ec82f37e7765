/* test_klp_callbacks_demo: the four callbacks for vmlinux, test_klp_callbacks_mod and
 * test_klp_callbacks_busy (whose busymod_work_func it replaces); pre_patch returns the
 * parameter pre_patch_ret. */
#include "callback_info.h"

module_param(pre_patch_ret, int);

static int pre_patch_callback(struct klp_object *obj)
{
	callback_info(__func__, obj);
	return pre_patch_ret;
}

static void post_patch_callback(struct klp_object *obj)
{
	callback_info(__func__, obj);
}

static void pre_unpatch_callback(struct klp_object *obj)
{
	callback_info(__func__, obj);
}

static void post_unpatch_callback(struct klp_object *obj)
{
	callback_info(__func__, obj);
}

static void patched_work_func(struct work_struct *work)
{
	(void)work;
	pr_info("%s", __func__);
}

#define CALLBACKS                                                                       \
	{                                                                               \
		.pre_patch = pre_patch_callback, .post_patch = post_patch_callback,     \
		.pre_unpatch = pre_unpatch_callback,                                    \
		.post_unpatch = post_unpatch_callback,                                  \
	}

static struct klp_func no_funcs[] = { { 0 } };

static struct klp_func busymod_funcs[] = {
	{ .old_name = "busymod_work_func", .new_func = (void *)patched_work_func },
	{ 0 }
};

static struct klp_object objs[] = {
	{ .name = NULL, .funcs = no_funcs, .callbacks = CALLBACKS },
	{ .name = "test_klp_callbacks_mod", .funcs = no_funcs, .callbacks = CALLBACKS },
	{ .name = "test_klp_callbacks_busy", .funcs = busymod_funcs, .callbacks = CALLBACKS },
	{ 0 }
};

static struct klp_patch patch = {
	.name = KBUILD_MODNAME,
	.objs = objs,
};

static int test_klp_callbacks_demo_init(void)
{
	return klp_enable_patch(&patch);
}

static void test_klp_callbacks_demo_exit(void)
{
}

module_init(test_klp_callbacks_demo_init);
module_exit(test_klp_callbacks_demo_exit);
