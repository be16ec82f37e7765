// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * test_klp_syscall: the kernel's selftest module of that name, in the kernel's form,
 * rewritten for libklp: it patches the getpid system call of vmlinux (named as the
 * architecture's syscall wrappers name it) with a version that counts down the threads
 * of the parameter klp_pids that called it, shown in /sys/kernel/test_klp_syscall/npids
 * (the directory is made, and shows nothing here).
 */

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/livepatch.h>
#include <linux/mutex.h>
#include <linux/kobject.h>
#include <linux/threads.h>

#if defined(__x86_64__)
#define FN_PREFIX __x64_
#elif defined(__s390x__)
#define FN_PREFIX __s390x_
#elif defined(__aarch64__)
#define FN_PREFIX __arm64_
#else
/* No syscall wrappers (powerpc) */
#define FN_PREFIX
#endif

/* Protects klp_pids and npids_pending. */
static DEFINE_MUTEX(kpid_mutex);

static unsigned int npids, npids_pending;
static int klp_pids[NR_CPUS];
module_param_array(klp_pids, int, &npids_pending, 0);
MODULE_PARM_DESC(klp_pids, "Array of pids to be transitioned to livepatched state.");

static ssize_t npids_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	return sprintf(buf, "%u\n", npids_pending);
}

static struct kobj_attribute klp_attr = __ATTR_RO(npids);
static struct kobject *klp_kobj;

static asmlinkage long lp_sys_getpid(void)
{
	unsigned int i;

	mutex_lock(&kpid_mutex);
	if (npids_pending > 0) {
		for (i = 0; i < npids; i++) {
			if (current->pid == klp_pids[i]) {
				klp_pids[i] = 0;
				npids_pending--;
				break;
			}
		}
	}
	mutex_unlock(&kpid_mutex);

	return task_tgid_vnr(current);
}

static struct klp_func vmlinux_funcs[] = {
	{
		.old_name = __stringify(FN_PREFIX) "sys_getpid",
		.new_func = lp_sys_getpid,
	}, { }
};

static struct klp_object objs[] = {
	{
		/* no name: vmlinux */
		.funcs = vmlinux_funcs,
	}, { }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
};

static int livepatch_init(void)
{
	int ret;

	klp_kobj = kobject_create_and_add("test_klp_syscall", kernel_kobj);
	if (!klp_kobj)
		return -ENOMEM;

	ret = sysfs_create_file(klp_kobj, &klp_attr.attr);
	if (ret) {
		kobject_put(klp_kobj);
		return ret;
	}

	/* The threads to switch, counted before the patch counts them down. */
	npids = npids_pending;

	return klp_enable_patch(&patch);
}

static void livepatch_exit(void)
{
	kobject_put(klp_kobj);
}

module_init(livepatch_init);
module_exit(livepatch_exit);
MODULE_LICENSE("MIT OR Apache-2.0");
MODULE_INFO(livepatch, "Y");
MODULE_AUTHOR("The libklp authors");
MODULE_DESCRIPTION("Livepatch test: syscall transition");
