/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/* <linux/completion.h>: a thread that waits for a completion sleeps parked (klp_park), as
 * a kernel task sleeps. */
#ifndef KLP_COMPAT_LINUX_COMPLETION_H
#define KLP_COMPAT_LINUX_COMPLETION_H

#include "../klp_compat.h"

#include <pthread.h>
#include <time.h>

struct completion {
	pthread_mutex_t klp_lock;
	pthread_cond_t klp_cond;
	unsigned int done;
};

#define COMPLETION_INITIALIZER(work) { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 }
#define DECLARE_COMPLETION(work) struct completion work = COMPLETION_INITIALIZER(work)

static inline void init_completion(struct completion *x)
{
	pthread_mutex_init(&x->klp_lock, NULL);
	pthread_cond_init(&x->klp_cond, NULL);
	x->done = 0;
}

static inline void reinit_completion(struct completion *x)
{
	x->done = 0;
}

static inline void complete(struct completion *x)
{
	pthread_mutex_lock(&x->klp_lock);
	if (x->done != UINT_MAX)
		x->done++;
	pthread_cond_broadcast(&x->klp_cond);
	pthread_mutex_unlock(&x->klp_lock);
}

static inline void complete_all(struct completion *x)
{
	pthread_mutex_lock(&x->klp_lock);
	x->done = UINT_MAX;
	pthread_cond_broadcast(&x->klp_cond);
	pthread_mutex_unlock(&x->klp_lock);
}

static inline void wait_for_completion(struct completion *x)
{
	klp_park();
	pthread_mutex_lock(&x->klp_lock);
	while (!x->done)
		pthread_cond_wait(&x->klp_cond, &x->klp_lock);
	if (x->done != UINT_MAX)
		x->done--;
	pthread_mutex_unlock(&x->klp_lock);
	klp_unpark();
}

/* Wait at most `timeout` jiffies (KLP_HZ a second): what was left of it (at least 1),
 * or 0 when it ran out. */
static inline unsigned long wait_for_completion_timeout(struct completion *x,
							 unsigned long timeout)
{
	struct timespec end;
	unsigned long left = timeout;
	int timed_out = 0;

	timespec_get(&end, TIME_UTC);
	end.tv_sec += (time_t)(timeout / KLP_HZ);
	end.tv_nsec += (long)(timeout % KLP_HZ) * (1000000000L / KLP_HZ);
	if (end.tv_nsec >= 1000000000L) {
		end.tv_sec++;
		end.tv_nsec -= 1000000000L;
	}
	klp_park();
	pthread_mutex_lock(&x->klp_lock);
	while (!x->done && !timed_out)
		timed_out = pthread_cond_timedwait(&x->klp_cond, &x->klp_lock, &end) != 0;
	if (x->done) {
		if (x->done != UINT_MAX)
			x->done--;
		if (left == 0)
			left = 1;
	} else {
		left = 0;
	}
	pthread_mutex_unlock(&x->klp_lock);
	klp_unpark();
	return left;
}

static inline bool completion_done(struct completion *x)
{
	bool done;

	pthread_mutex_lock(&x->klp_lock);
	done = x->done != 0;
	pthread_mutex_unlock(&x->klp_lock);
	return done;
}

#endif /* KLP_COMPAT_LINUX_COMPLETION_H */
