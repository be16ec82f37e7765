// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * livepatch-callbacks-busymod.c - the kernel's busy target module of the callbacks demo,
 * rewritten for libklp (built with the compatibility headers): its work item sleeps
 * sleep_secs seconds in busymod_work_func (patchable: KLP_PATCHABLE), which
 * livepatch-callbacks-demo replaces. See livepatch-callbacks-demo.c.
 *
 * Its init and exit keep the names they have in the kernel's sample, which shows in
 * their lines.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/workqueue.h>
#include <linux/delay.h>

static int sleep_secs;
module_param(sleep_secs, int, 0644);
MODULE_PARM_DESC(sleep_secs, "sleep_secs (default=0)");

static void busymod_work_func(struct work_struct *work);
static DECLARE_DELAYED_WORK(work, busymod_work_func);

/* __func__ in the body of a KLP_PATCHABLE function names its original implementation
 * (busymod_work_func__klp_orig): the name is written out. */
KLP_PATCHABLE_STATIC_VOID(busymod_work_func, (struct work_struct *work), (work))
{
	pr_info("%s, sleeping %d seconds ...\n", "busymod_work_func", sleep_secs);
	msleep(sleep_secs * 1000);
	pr_info("%s exit\n", "busymod_work_func");
}

static int livepatch_callbacks_mod_init(void)
{
	pr_info("%s\n", __func__);
	schedule_delayed_work(&work, msecs_to_jiffies(1000 * 0));
	return 0;
}

static void livepatch_callbacks_mod_exit(void)
{
	cancel_delayed_work_sync(&work);
	pr_info("%s\n", __func__);
}

module_init(livepatch_callbacks_mod_init);
module_exit(livepatch_callbacks_mod_exit);
MODULE_LICENSE("MIT OR Apache-2.0");
