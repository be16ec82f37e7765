// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * livepatch-shadow-mod.c - the kernel's buggy module of the shadow variable demo,
 * rewritten for libklp: a target module (it stands for kernel code), built with the
 * compatibility headers, whose functions dummy_alloc, dummy_free and dummy_check are
 * patchable (KLP_PATCHABLE: the kernel's ftrace finds every function; here they say so).
 *
 * Every ALLOC_PERIOD a work item allocates a dummy, and with it a little memory that it
 * forgets (a leak); every CLEANUP_PERIOD another frees the dummies that expired
 * (EXPIRE_PERIOD after their allocation). livepatch-shadow-fix1 fixes the leak with a
 * shadow variable, livepatch-shadow-fix2 adds a counter to the dummies in flight.
 *
 * The periods are parameters here (alloc_ms, cleanup_ms, expire_ms; the kernel's
 * constants by default: 1 s, 3 s, 12 s), so that a test can run the demo faster.
 *
 *   % insmod livepatch-shadow-mod.ko
 *   % insmod livepatch-shadow-fix1.ko
 *   % insmod livepatch-shadow-fix2.ko
 *   % echo 0 > /sys/kernel/livepatch/livepatch_shadow_fix2/enabled
 *   % echo 0 > /sys/kernel/livepatch/livepatch_shadow_fix1/enabled
 *   % rmmod livepatch_shadow_fix2
 *   % rmmod livepatch_shadow_fix1
 *   % rmmod livepatch_shadow_mod
 */

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/stat.h>
#include <linux/workqueue.h>
#include <linux/jiffies.h>
#include <linux/list.h>
#include <linux/mutex.h>

MODULE_LICENSE("MIT OR Apache-2.0");
MODULE_AUTHOR("The libklp authors");
MODULE_DESCRIPTION("Buggy module for shadow variable demo");

/* New dummies every second */
#define ALLOC_PERIOD	1
/* Expired dummies are freed after a few allocations */
#define CLEANUP_PERIOD	(3 * ALLOC_PERIOD)
/* Dummies expire after a few cleanups */
#define EXPIRE_PERIOD	(4 * CLEANUP_PERIOD)

static unsigned int alloc_ms = 1000 * ALLOC_PERIOD;
module_param(alloc_ms, uint, 0444);
static unsigned int cleanup_ms = 1000 * CLEANUP_PERIOD;
module_param(cleanup_ms, uint, 0444);
static unsigned int expire_ms = 1000 * EXPIRE_PERIOD;
module_param(expire_ms, uint, 0444);

/* Every dummy, so that exit frees those that remain. */
LIST_HEAD(dummy_list);
DEFINE_MUTEX(dummy_list_mutex);

struct dummy {
	struct list_head list;
	unsigned long jiffies_expire;
};

/* __func__ in the body of a KLP_PATCHABLE function names its original implementation
 * (dummy_alloc__klp_orig): the names are written out. */
KLP_PATCHABLE(struct dummy *, dummy_alloc, (void), ())
{
	struct dummy *d;
	void *leak;

	d = kzalloc(sizeof(*d), GFP_KERNEL);
	if (!d)
		return NULL;

	d->jiffies_expire = jiffies + msecs_to_jiffies(expire_ms);

	/* The bug: nobody keeps this. */
	leak = kzalloc(sizeof(int), GFP_KERNEL);
	(void)leak;

	pr_info("%s: dummy @ %p, expires @ %lx\n",
		"dummy_alloc", d, d->jiffies_expire);

	return d;
}

KLP_PATCHABLE_VOID(dummy_free, (struct dummy *d), (d))
{
	pr_info("%s: dummy @ %p, expired = %lx\n",
		"dummy_free", d, d->jiffies_expire);

	kfree(d);
}

KLP_PATCHABLE(bool, dummy_check, (struct dummy *d, unsigned long jiffies), (d, jiffies))
{
	return time_after(jiffies, d->jiffies_expire);
}

/* alloc_work_func: a new dummy, and memory that nobody keeps ("leak"). */
static void alloc_work_func(struct work_struct *work);
static DECLARE_DELAYED_WORK(alloc_dwork, alloc_work_func);

static void alloc_work_func(struct work_struct *work)
{
	struct dummy *d;

	d = dummy_alloc();
	if (!d)
		return;

	mutex_lock(&dummy_list_mutex);
	list_add(&d->list, &dummy_list);
	mutex_unlock(&dummy_list_mutex);

	schedule_delayed_work(&alloc_dwork, msecs_to_jiffies(alloc_ms));
}

/* cleanup_work_func: frees the expired dummies, and not what alloc_work_func leaked. */
static void cleanup_work_func(struct work_struct *work);
static DECLARE_DELAYED_WORK(cleanup_dwork, cleanup_work_func);

static void cleanup_work_func(struct work_struct *work)
{
	struct dummy *d, *tmp;
	unsigned long j;

	j = jiffies;
	pr_info("%s: jiffies = %lx\n", __func__, j);

	mutex_lock(&dummy_list_mutex);
	list_for_each_entry_safe(d, tmp, &dummy_list, list) {
		/* Free the dummies that expired */
		if (dummy_check(d, j)) {
			list_del(&d->list);
			dummy_free(d);
		}
	}
	mutex_unlock(&dummy_list_mutex);

	schedule_delayed_work(&cleanup_dwork, msecs_to_jiffies(cleanup_ms));
}

static int livepatch_shadow_mod_init(void)
{
	schedule_delayed_work(&alloc_dwork, msecs_to_jiffies(alloc_ms));
	schedule_delayed_work(&cleanup_dwork, msecs_to_jiffies(cleanup_ms));

	return 0;
}

static void livepatch_shadow_mod_exit(void)
{
	struct dummy *d, *tmp;

	/* Wait for the work items that run */
	cancel_delayed_work_sync(&alloc_dwork);
	cancel_delayed_work_sync(&cleanup_dwork);

	/* Free the dummies that remain */
	list_for_each_entry_safe(d, tmp, &dummy_list, list) {
		list_del(&d->list);
		dummy_free(d);
	}
}

module_init(livepatch_shadow_mod_init);
module_exit(livepatch_shadow_mod_exit);
