/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * <linux/sched.h>: current is the calling thread (struct task_struct is <klp.h>'s
 * struct klp_task: pid is the thread's id, tgid the process's, comm its name);
 * cond_resched() is a switch point (klp_update_patch_state), as the kernel's is for a
 * kernel thread.
 */
#ifndef KLP_COMPAT_LINUX_SCHED_H
#define KLP_COMPAT_LINUX_SCHED_H

#include "../klp_compat.h"

#define task_struct klp_task
#define TASK_COMM_LEN 16

#define current (klp_current())

static inline pid_t task_pid_nr(struct task_struct *t)
{
	return t->pid;
}

static inline pid_t task_pid_vnr(struct task_struct *t)
{
	return t->pid;
}

static inline pid_t task_tgid_nr(struct task_struct *t)
{
	return t->tgid;
}

static inline pid_t task_tgid_vnr(struct task_struct *t)
{
	return t->tgid;
}

static inline int cond_resched(void)
{
	klp_update_patch_state();
	return 0;
}

#endif /* KLP_COMPAT_LINUX_SCHED_H */
