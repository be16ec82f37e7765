/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/* <linux/sysfs.h>: attributes; creating a file succeeds and shows nothing. */
#ifndef KLP_COMPAT_LINUX_SYSFS_H
#define KLP_COMPAT_LINUX_SYSFS_H

#include "../klp_compat.h"

struct kobject;

struct attribute {
	const char *name;
	unsigned short mode;
};

#define __ATTR(_name, _mode, _show, _store) { { #_name, (_mode) }, (_show), (_store) }
#define __ATTR_RO(_name) __ATTR(_name, 0444, _name##_show, NULL)
#define __ATTR_RW(_name) __ATTR(_name, 0644, _name##_show, _name##_store)
#define __ATTR_WO(_name) __ATTR(_name, 0200, NULL, _name##_store)

static inline int sysfs_create_file(struct kobject *kobj, const struct attribute *attr)
{
	(void)kobj;
	(void)attr;
	return 0;
}

static inline void sysfs_remove_file(struct kobject *kobj, const struct attribute *attr)
{
	(void)kobj;
	(void)attr;
}

#endif /* KLP_COMPAT_LINUX_SYSFS_H */
