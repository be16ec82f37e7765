/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * <linux/workqueue.h>: the system workqueue is the kernel's, so here the program's: it
 * defines schedule_work, schedule_delayed_work, flush_work, cancel_work_sync,
 * cancel_delayed_work, cancel_delayed_work_sync and flush_delayed_work (exported,
 * -rdynamic) with the kernel's meaning, and runs the work items on threads of its own
 * (delays in jiffies, KLP_HZ a second). The klp_ fields of the structs are its
 * bookkeeping: zero until a work item is first scheduled.
 */
#ifndef KLP_COMPAT_LINUX_WORKQUEUE_H
#define KLP_COMPAT_LINUX_WORKQUEUE_H

#include "../klp_compat.h"

struct work_struct;
typedef void (*work_func_t)(struct work_struct *work);

struct work_struct {
	work_func_t func;
	/* The program's. */
	void *klp_data[4];
};

struct delayed_work {
	struct work_struct work;
	/* The program's. */
	unsigned long klp_timer[4];
};

#define __WORK_INITIALIZER(n, f) { (f), { 0, 0, 0, 0 } }
#define __DELAYED_WORK_INITIALIZER(n, f, tflags) { __WORK_INITIALIZER((n).work, (f)), { 0, 0, 0, 0 } }
#define DECLARE_WORK(n, f) struct work_struct n = __WORK_INITIALIZER(n, f)
#define DECLARE_DELAYED_WORK(n, f) struct delayed_work n = __DELAYED_WORK_INITIALIZER(n, f, 0)
#define INIT_WORK(_work, _func)                                                         \
	do {                                                                            \
		memset((_work), 0, sizeof(*(_work)));                                   \
		(_work)->func = (_func);                                                \
	} while (0)
#define INIT_DELAYED_WORK(_work, _func)                                                 \
	do {                                                                            \
		memset((_work), 0, sizeof(*(_work)));                                   \
		(_work)->work.func = (_func);                                           \
	} while (0)
#define to_delayed_work(_work) ((struct delayed_work *)(void *)(_work))

KLP__C_BEGIN

/* Queue `work` on the system workqueue: false if it was queued already. */
bool schedule_work(struct work_struct *work);
/* Queue it after `delay` jiffies: false if it was pending already. */
bool schedule_delayed_work(struct delayed_work *dwork, unsigned long delay);
/* Wait until it is neither queued nor running (sleeping): whether it had to. */
bool flush_work(struct work_struct *work);
bool flush_delayed_work(struct delayed_work *dwork);
/* Unqueue it and wait until it does not run: whether it was pending. */
bool cancel_work_sync(struct work_struct *work);
bool cancel_delayed_work_sync(struct delayed_work *dwork);
/* Unqueue it without waiting: whether it was pending. */
bool cancel_delayed_work(struct delayed_work *dwork);

KLP__C_END

#endif /* KLP_COMPAT_LINUX_WORKQUEUE_H */
