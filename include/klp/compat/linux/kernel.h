/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/* <linux/kernel.h>: types, printk, WARN/BUG, container_of, ARRAY_SIZE, min/max,
 * scnprintf. sprintf and snprintf are the C library's (without the %p forms). */
#ifndef KLP_COMPAT_LINUX_KERNEL_H
#define KLP_COMPAT_LINUX_KERNEL_H

#include "../klp_compat.h"
#include "bug.h"
#include "compiler.h"
#include "err.h"
#include <linux/errno.h>
#include "printk.h"
#include "string.h"
#include "stringify.h"
#include <linux/types.h>

/* The struct that holds member at ptr. */
#define container_of(ptr, type, member)                                                 \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#define ARRAY_SIZE(arr) (sizeof(arr) / sizeof((arr)[0]))

#define min(x, y)                                                                       \
	({                                                                              \
		__typeof__(x) klp__x = (x);                                             \
		__typeof__(y) klp__y = (y);                                             \
		klp__x < klp__y ? klp__x : klp__y;                                      \
	})
#define max(x, y)                                                                       \
	({                                                                              \
		__typeof__(x) klp__x = (x);                                             \
		__typeof__(y) klp__y = (y);                                             \
		klp__x > klp__y ? klp__x : klp__y;                                      \
	})
#define min_t(type, x, y) min((type)(x), (type)(y))
#define max_t(type, x, y) max((type)(x), (type)(y))
#define clamp(val, lo, hi) min(max(val, lo), hi)
#define clamp_t(type, val, lo, hi) min_t(type, max_t(type, val, lo), hi)

#define DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))
#define ALIGN(x, a) (((x) + ((a) - 1)) & ~((__typeof__(x))(a) - 1))
#define IS_ALIGNED(x, a) (((x) & ((__typeof__(x))(a) - 1)) == 0)

#define U8_MAX ((u8)~0U)
#define U16_MAX ((u16)~0U)
#define U32_MAX ((u32)~0U)
#define U64_MAX ((u64)~0ULL)
#define S32_MAX ((s32)(U32_MAX >> 1))
#define S64_MAX ((s64)(U64_MAX >> 1))

/* A point where a kernel task may sleep: nothing to do here. */
#define might_sleep() do { } while (0)

/* vsnprintf that returns what it wrote (at most size - 1), not what it would have. */
static inline int vscnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
	int n;

	if (size == 0)
		return 0;
	n = vsnprintf(buf, size, fmt, ap);
	if (n < 0)
		return 0;
	return (size_t)n < size ? n : (int)(size - 1);
}

static inline __attribute__((format(printf, 3, 4))) int scnprintf(char *buf, size_t size,
								   const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vscnprintf(buf, size, fmt, ap);
	va_end(ap);
	return n;
}

#endif /* KLP_COMPAT_LINUX_KERNEL_H */
