/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/* <linux/delay.h>: msleep and friends sleep parked (a sleeping kernel task: a transition
 * may switch the thread from outside); udelay, ndelay and mdelay wait without parking (a
 * busy task). */
#ifndef KLP_COMPAT_LINUX_DELAY_H
#define KLP_COMPAT_LINUX_DELAY_H

#include "../klp_compat.h"

static inline void msleep(unsigned int msecs)
{
	klp_sleep_us((unsigned long)msecs * 1000, true);
}

static inline unsigned long msleep_interruptible(unsigned int msecs)
{
	msleep(msecs);
	return 0;
}

static inline void ssleep(unsigned int secs)
{
	klp_sleep_us((unsigned long)secs * 1000000, true);
}

static inline void usleep_range(unsigned long min, unsigned long max)
{
	(void)max;
	klp_sleep_us(min, true);
}

static inline void fsleep(unsigned long usecs)
{
	klp_sleep_us(usecs, true);
}

static inline void udelay(unsigned long usecs)
{
	klp_sleep_us(usecs, false);
}

static inline void ndelay(unsigned long nsecs)
{
	klp_sleep_us((nsecs + 999) / 1000, false);
}

static inline void mdelay(unsigned long msecs)
{
	klp_sleep_us(msecs * 1000, false);
}

#endif /* KLP_COMPAT_LINUX_DELAY_H */
