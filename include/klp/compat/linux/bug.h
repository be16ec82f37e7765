/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * <linux/bug.h>: WARN_ON and friends print a warning line at KLP_LOG_WARNING and return
 * the condition ("WARNING: CPU: 0 PID: <thread> at <file>:<line> <function>()"); BUG
 * prints "kernel BUG at <file>:<line>!" at KLP_LOG_ERR and aborts the process.
 */
#ifndef KLP_COMPAT_LINUX_BUG_H
#define KLP_COMPAT_LINUX_BUG_H

#include "printk.h"

static inline void klp__warning(const char *file, int line, const char *func)
{
	struct klp_task *t = klp_current();

	printk(KERN_WARNING "WARNING: CPU: 0 PID: %d at %s:%d %s()\n", t ? t->pid : 0, file,
	       line, func);
}

static inline int klp__warn_on(int cond, const char *file, int line, const char *func)
{
	if (cond)
		klp__warning(file, line, func);
	return cond;
}

#define WARN_ON(condition) klp__warn_on(!!(condition), __FILE__, __LINE__, __func__)
#define WARN(condition, fmt, ...)                                                       \
	({                                                                              \
		int klp__c = !!(condition);                                             \
		if (klp__c) {                                                           \
			printk(KERN_WARNING fmt, ##__VA_ARGS__);                        \
			klp__warning(__FILE__, __LINE__, __func__);                     \
		}                                                                       \
		klp__c;                                                                 \
	})
#define WARN_ON_ONCE(condition)                                                         \
	({                                                                              \
		static bool klp__warned;                                                \
		int klp__c = !!(condition);                                             \
		if (klp__c && !klp__warned) {                                           \
			klp__warned = true;                                             \
			klp__warning(__FILE__, __LINE__, __func__);                     \
		}                                                                       \
		klp__c;                                                                 \
	})
#define WARN_ONCE(condition, fmt, ...)                                                  \
	({                                                                              \
		static bool klp__warned;                                                \
		int klp__c = !!(condition);                                             \
		if (klp__c && !klp__warned) {                                           \
			klp__warned = true;                                             \
			printk(KERN_WARNING fmt, ##__VA_ARGS__);                        \
			klp__warning(__FILE__, __LINE__, __func__);                     \
		}                                                                       \
		klp__c;                                                                 \
	})

#define BUG()                                                                           \
	do {                                                                            \
		printk(KERN_ERR "kernel BUG at %s:%d!\n", __FILE__, __LINE__);          \
		abort();                                                                \
	} while (0)
#define BUG_ON(condition)                                                               \
	do {                                                                            \
		if (condition)                                                          \
			BUG();                                                          \
	} while (0)

/* A compile-time check. */
#define BUILD_BUG_ON(condition) ((void)sizeof(char[1 - 2 * !!(condition)]))
#define BUILD_BUG_ON_ZERO(e) ((int)(sizeof(struct { int : (-!!(e)); })))

#endif /* KLP_COMPAT_LINUX_BUG_H */
