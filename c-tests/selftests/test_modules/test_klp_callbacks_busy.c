/* test_klp_callbacks_busy: a target module whose work item (on the driver's kworker)
 * sleeps in busymod_work_func while the parameter block_transition is set, so that a
 * patch replacing that function cannot complete its transition. */
#include "klp_selftest.h"

KLP_OBJECT("test_klp_callbacks_busy");

module_param(block_transition, bool);

static DECLARE_COMPLETION(busymod_work_started);

KLP_PATCHABLE_STATIC_VOID(busymod_work_func, (struct work_struct *work), (work))
{
	(void)work;
	pr_info("busymod_work_func enter");
	complete(&busymod_work_started);

	/* msleep parks: a sleeping task, with busymod_work_func on its stack. */
	while (READ_ONCE(block_transition))
		msleep(20);

	pr_info("busymod_work_func exit");
}

static DECLARE_WORK(work, busymod_work_func);

static int test_klp_callbacks_busy_init(void)
{
	pr_info("%s", __func__);
	schedule_work(&work);

	/* Wait until the work has started, and, when not blocking, finished. */
	wait_for_completion(&busymod_work_started);
	if (!block_transition)
		flush_work(&work);
	return 0;
}

static void test_klp_callbacks_busy_exit(void)
{
	WRITE_ONCE(block_transition, false);
	flush_work(&work);
	pr_info("%s", __func__);
}

/* After KLP_OBJECT: see module_init in klp_selftest.h. */
module_init(test_klp_callbacks_busy_init);
module_exit(test_klp_callbacks_busy_exit);
