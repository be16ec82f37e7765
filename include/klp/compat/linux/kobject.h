/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/* <linux/kobject.h>: kobjects, enough for a module to make its sysfs directory; the
 * directory and its files are not shown anywhere (kernel_kobj is NULL). */
#ifndef KLP_COMPAT_LINUX_KOBJECT_H
#define KLP_COMPAT_LINUX_KOBJECT_H

#include "sysfs.h"

struct kobject {
	const char *name;
	struct kobject *parent;
};

struct kobj_attribute {
	struct attribute attr;
	ssize_t (*show)(struct kobject *kobj, struct kobj_attribute *attr, char *buf);
	ssize_t (*store)(struct kobject *kobj, struct kobj_attribute *attr, const char *buf,
			 size_t count);
};

#define kernel_kobj ((struct kobject *)NULL)

static inline struct kobject *kobject_create_and_add(const char *name, struct kobject *parent)
{
	struct kobject *k = (struct kobject *)calloc(1, sizeof(*k));

	if (k) {
		k->name = name;
		k->parent = parent;
	}
	return k;
}

static inline void kobject_put(struct kobject *kobj)
{
	free(kobj);
}

static inline const char *kobject_name(const struct kobject *kobj)
{
	return kobj->name;
}

#endif /* KLP_COMPAT_LINUX_KOBJECT_H */
