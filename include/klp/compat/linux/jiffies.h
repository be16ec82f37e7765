/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * <linux/jiffies.h>: jiffies is a real variable of libklp (modules name parameters
 * `jiffies`), advanced HZ (KLP_HZ, 100) times a second from the first module's load on,
 * starting, as the kernel's, five minutes before a 32-bit wrap (use time_after and
 * friends to compare).
 */
#ifndef KLP_COMPAT_LINUX_JIFFIES_H
#define KLP_COMPAT_LINUX_JIFFIES_H

#include "../klp_compat.h"

KLP__C_BEGIN
extern volatile unsigned long jiffies;
KLP__C_END

#define HZ KLP_HZ
#define MSEC_PER_SEC 1000L
#define USEC_PER_SEC 1000000L
#define MAX_JIFFY_OFFSET ((LONG_MAX >> 1) - 1)

#define time_after(a, b) ((long)((b) - (a)) < 0)
#define time_before(a, b) time_after(b, a)
#define time_after_eq(a, b) ((long)((a) - (b)) >= 0)
#define time_before_eq(a, b) time_after_eq(b, a)
#define time_in_range(a, b, c) (time_after_eq(a, b) && time_before_eq(a, c))
#define time_is_before_jiffies(a) time_after(jiffies, a)
#define time_is_after_jiffies(a) time_before(jiffies, a)

static inline unsigned long get_jiffies_64(void)
{
	return jiffies;
}

/* Milliseconds as jiffies, rounded up. */
static inline unsigned long msecs_to_jiffies(const unsigned int m)
{
	return ((unsigned long)m * HZ + MSEC_PER_SEC - 1) / MSEC_PER_SEC;
}

static inline unsigned long usecs_to_jiffies(const unsigned int u)
{
	return ((unsigned long)u * HZ + USEC_PER_SEC - 1) / USEC_PER_SEC;
}

#define secs_to_jiffies(s) ((unsigned long)(s) * HZ)

static inline unsigned int jiffies_to_msecs(const unsigned long j)
{
	return (unsigned int)(j * MSEC_PER_SEC / HZ);
}

static inline unsigned int jiffies_to_usecs(const unsigned long j)
{
	return (unsigned int)(j * USEC_PER_SEC / HZ);
}

#endif /* KLP_COMPAT_LINUX_JIFFIES_H */
