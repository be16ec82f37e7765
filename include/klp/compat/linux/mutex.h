/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * <linux/mutex.h>: sleeping locks on POSIX mutexes. A thread that has to wait for one
 * sleeps as a kernel task does: it is parked (klp_park) while it waits, so that a
 * transition may switch it from outside, unless a function the transition replaces is
 * on its stack.
 */
#ifndef KLP_COMPAT_LINUX_MUTEX_H
#define KLP_COMPAT_LINUX_MUTEX_H

#include "../klp_compat.h"

#include <pthread.h>

struct mutex {
	pthread_mutex_t klp_lock;
};

#define __MUTEX_INITIALIZER(name) { PTHREAD_MUTEX_INITIALIZER }
#define DEFINE_MUTEX(name) struct mutex name = __MUTEX_INITIALIZER(name)

static inline void mutex_init(struct mutex *lock)
{
	pthread_mutex_init(&lock->klp_lock, NULL);
}

static inline void mutex_destroy(struct mutex *lock)
{
	pthread_mutex_destroy(&lock->klp_lock);
}

static inline void mutex_lock(struct mutex *lock)
{
	if (pthread_mutex_trylock(&lock->klp_lock) == 0)
		return;
	klp_park();
	pthread_mutex_lock(&lock->klp_lock);
	klp_unpark();
}

/* No signals interrupt the wait here: 0. */
static inline int mutex_lock_interruptible(struct mutex *lock)
{
	mutex_lock(lock);
	return 0;
}

static inline int mutex_lock_killable(struct mutex *lock)
{
	mutex_lock(lock);
	return 0;
}

/* 1 when taken, 0 when another holds it. */
static inline int mutex_trylock(struct mutex *lock)
{
	return pthread_mutex_trylock(&lock->klp_lock) == 0;
}

static inline void mutex_unlock(struct mutex *lock)
{
	pthread_mutex_unlock(&lock->klp_lock);
}

/* Whether someone holds it (a snapshot). */
static inline bool mutex_is_locked(struct mutex *lock)
{
	if (pthread_mutex_trylock(&lock->klp_lock) != 0)
		return true;
	pthread_mutex_unlock(&lock->klp_lock);
	return false;
}

#endif /* KLP_COMPAT_LINUX_MUTEX_H */
