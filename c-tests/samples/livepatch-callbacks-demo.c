// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * livepatch-callbacks-demo.c - the kernel's (un)patching callbacks livepatch demo, in
 * the kernel's form, rewritten for libklp.
 *
 * The four callbacks of vmlinux, livepatch_callbacks_mod and livepatch_callbacks_busymod
 * print their object and its module's state; it replaces busymod_work_func of the busy
 * module. The parameter pre_patch_ret is what pre_patch returns (-19, -ENODEV, makes the
 * module loader refuse a target module).
 *
 *   % insmod livepatch-callbacks-mod.ko
 *   % insmod livepatch-callbacks-demo.ko
 *   % echo 0 > /sys/kernel/livepatch/livepatch_callbacks_demo/enabled
 *   % rmmod livepatch_callbacks_demo
 *   % rmmod livepatch_callbacks_mod
 *
 * Load the two modules in the other order to see a target module loaded after its
 * livepatch; set pre_patch_ret to -19 before loading the target module to see it
 * refused:
 *
 *   % echo -19 > /sys/module/livepatch_callbacks_demo/parameters/pre_patch_ret
 *   % insmod livepatch-callbacks-mod.ko
 *   insmod: ERROR: could not insert module livepatch-callbacks-mod.ko: No such device
 *
 * livepatch-callbacks-busymod.ko sleep_secs=N sleeps N seconds in busymod_work_func,
 * which this patch replaces: loaded first, it holds the patching transition back while
 * other target modules come and go.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>

static int pre_patch_ret;
module_param(pre_patch_ret, int, 0644);
MODULE_PARM_DESC(pre_patch_ret, "pre_patch_ret (default=0)");

static const char *const module_state[] = {
	[MODULE_STATE_LIVE]	= "[MODULE_STATE_LIVE] Normal state",
	[MODULE_STATE_COMING]	= "[MODULE_STATE_COMING] Full formed, running module_init",
	[MODULE_STATE_GOING]	= "[MODULE_STATE_GOING] Going away",
	[MODULE_STATE_UNFORMED]	= "[MODULE_STATE_UNFORMED] Still setting it up",
};

static void callback_info(const char *callback, struct klp_object *obj)
{
	if (obj->mod)
		pr_info("%s: %s -> %s\n", callback, obj->mod->name,
			module_state[obj->mod->state]);
	else
		pr_info("%s: vmlinux\n", callback);
}

/* When an object is patched (the patch is enabled, or the object's module loads) */
static int pre_patch_callback(struct klp_object *obj)
{
	callback_info(__func__, obj);
	return pre_patch_ret;
}

/* When an object is patched */
static void post_patch_callback(struct klp_object *obj)
{
	callback_info(__func__, obj);
}

/* When an object is unpatched (the patch is disabled, or the object's module goes) */
static void pre_unpatch_callback(struct klp_object *obj)
{
	callback_info(__func__, obj);
}

/* When an object is unpatched */
static void post_unpatch_callback(struct klp_object *obj)
{
	callback_info(__func__, obj);
}

static void patched_work_func(struct work_struct *work)
{
	pr_info("%s\n", __func__);
}

static struct klp_func no_funcs[] = {
	{ }
};

static struct klp_func busymod_funcs[] = {
	{
		.old_name = "busymod_work_func",
		.new_func = patched_work_func,
	}, { }
};

static struct klp_object objs[] = {
	{
		.name = NULL,	/* vmlinux */
		.funcs = no_funcs,
		.callbacks = {
			.pre_patch = pre_patch_callback,
			.post_patch = post_patch_callback,
			.pre_unpatch = pre_unpatch_callback,
			.post_unpatch = post_unpatch_callback,
		},
	}, {
		.name = "livepatch_callbacks_mod",
		.funcs = no_funcs,
		.callbacks = {
			.pre_patch = pre_patch_callback,
			.post_patch = post_patch_callback,
			.pre_unpatch = pre_unpatch_callback,
			.post_unpatch = post_unpatch_callback,
		},
	}, {
		.name = "livepatch_callbacks_busymod",
		.funcs = busymod_funcs,
		.callbacks = {
			.pre_patch = pre_patch_callback,
			.post_patch = post_patch_callback,
			.pre_unpatch = pre_unpatch_callback,
			.post_unpatch = post_unpatch_callback,
		},
	}, { }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
};

static int livepatch_callbacks_demo_init(void)
{
	return klp_enable_patch(&patch);
}

static void livepatch_callbacks_demo_exit(void)
{
}

module_init(livepatch_callbacks_demo_init);
module_exit(livepatch_callbacks_demo_exit);
MODULE_LICENSE("MIT OR Apache-2.0");
MODULE_INFO(livepatch, "Y");
