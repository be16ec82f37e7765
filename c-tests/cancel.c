/* pthread_cancel and transitions: a thread blocked at a cancellation point inside a
 * replaced function, running (not parked), holds the transition up until it is
 * cancelled, and then no longer (its task goes away when it exits); the same for a
 * thread parked there; a thread cancelled while parked outside patchable code breaks
 * nothing. A cleanup handler that calls a patched function runs the version of the
 * thread's state. Run by klp-ffi/tests/c_unwind.rs. Needs GNU C (-std=gnu11). */
#include <klp.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (!(cond)) {                                                          \
			printf("FAILED: %s (line %d)\n", #cond, __LINE__);              \
			fflush(stdout);                                                 \
			exit(1);                                                        \
		}                                                                       \
	} while (0)

#define ETIMEDOUT_ 110
#define ENOENT_ 2

/* A pipe nobody writes: read() on it blocks until the thread is cancelled. */
static int pipefd[2];
static atomic_int entered, cleanup_result;

/* Called by the cleanup handler: 1 original, 2 replacement. */
KLP_PATCHABLE(int, on_cleanup, (void), ())
{
	return 1;
}

static int on_cleanup_v2(void)
{
	return 2;
}

static void cleanup(void *arg)
{
	(void)arg;
	atomic_store(&cleanup_result, on_cleanup());
}

/* Blocks in read(), a cancellation point; parked around it when `parked`. */
KLP_PATCHABLE(int, reader, (int parked), (parked))
{
	char c;
	ssize_t n;
	pthread_cleanup_push(cleanup, NULL);
	atomic_store(&entered, 1);
	if (parked)
		klp_park();
	n = read(pipefd[0], &c, 1);
	if (parked)
		klp_unpark();
	pthread_cleanup_pop(0);
	return (int)n;
}

static int reader_v2(int parked)
{
	(void)parked;
	return -100;
}

/* reader, one patchable frame deeper. */
KLP_PATCHABLE(int, outer, (int parked), (parked))
{
	return reader(parked);
}

static struct klp_func funcs[] = {
	{ .old_name = "reader", .new_func = (void *)reader_v2 },
	{ .old_name = "on_cleanup", .new_func = (void *)on_cleanup_v2 },
	{ 0 }
};
static struct klp_object objs[] = { { .name = NULL, .funcs = funcs }, { 0 } };
static struct klp_patch patch = { .name = "pc", .objs = objs };

static void *t_reader(void *arg)
{
	int how = (int)(long)arg;
	/* how: 0 running, 1 parked, 2 running and nested under outer. */
	if (how == 2)
		(void)outer(0);
	else
		(void)reader(how);
	CHECK(!"not reached: the thread is cancelled");
	return NULL;
}

static void join_cancelled(pthread_t t)
{
	void *ret = NULL;
	klp_park();
	CHECK(pthread_join(t, &ret) == 0);
	klp_unpark();
	CHECK(ret == PTHREAD_CANCELED);
}

static const char *const hows[] = { "running", "parked", "running, nested" };

/* A thread blocked inside reader holds the patching transition up; cancelling it
 * completes the transition. */
static void test_cancel_inside(int how)
{
	pthread_t t;
	atomic_store(&entered, 0);
	atomic_store(&cleanup_result, 0);
	CHECK(pthread_create(&t, NULL, t_reader, (void *)(long)how) == 0);
	while (!atomic_load(&entered))
		sched_yield();
	CHECK(klp_enable_patch(&patch) == 0);
	CHECK(klp_wait_transition(100) == -ETIMEDOUT_);
	CHECK(klp_patch_transition("pc") == 1);
	CHECK(reader(0) == -100); /* this thread switched */
	CHECK(pthread_cancel(t) == 0);
	join_cancelled(t);
	/* The cleanup handler ran in the cancelled thread, unpatched. */
	CHECK(atomic_load(&cleanup_result) == 1);
	CHECK(klp_wait_transition(10000) == 0);
	CHECK(klp_patch_transition("pc") == 0);
	CHECK(reader(0) == -100 && on_cleanup() == 2);
	CHECK(klp_patch_set_enabled("pc", 0) == 0);
	CHECK(klp_wait_transition(10000) == 0);
	CHECK(klp_patch_enabled("pc") == -ENOENT_);
	CHECK(on_cleanup() == 1);
	printf("ok: a thread blocked (%s) in read() inside reader holds the transition; "
	       "cancelled, it no longer does\n",
	       hows[how]);
}

/* A thread parked outside patchable code, cancelled during a transition held up by
 * another thread, and then after it: nothing breaks. */
static atomic_int parked_outside;

static void *t_parked_outside(void *arg)
{
	char c;
	(void)arg;
	CHECK(on_cleanup() >= 1); /* a task */
	klp_park();
	atomic_store(&parked_outside, 1);
	(void)read(pipefd[0], &c, 1);
	klp_unpark();
	CHECK(!"not reached: the thread is cancelled");
	return NULL;
}

static void test_cancel_parked_outside(void)
{
	pthread_t parked, holder;
	atomic_store(&parked_outside, 0);
	CHECK(pthread_create(&parked, NULL, t_parked_outside, NULL) == 0);
	while (!atomic_load(&parked_outside))
		sched_yield();
	/* A holder blocked in reader keeps the transition going. */
	atomic_store(&entered, 0);
	CHECK(pthread_create(&holder, NULL, t_reader, (void *)0L) == 0);
	while (!atomic_load(&entered))
		sched_yield();
	CHECK(klp_enable_patch(&patch) == 0);
	CHECK(klp_wait_transition(60) == -ETIMEDOUT_);
	CHECK(pthread_cancel(parked) == 0);
	join_cancelled(parked);
	CHECK(klp_wait_transition(60) == -ETIMEDOUT_); /* still the holder's */
	CHECK(pthread_cancel(holder) == 0);
	join_cancelled(holder);
	CHECK(klp_wait_transition(10000) == 0);
	/* Later transitions are not held up by the cancelled threads. */
	CHECK(klp_patch_set_enabled("pc", 0) == 0);
	CHECK(klp_wait_transition(10000) == 0);
	CHECK(klp_patch_enabled("pc") == -ENOENT_);
	CHECK(klp_enable_patch(&patch) == 0);
	CHECK(klp_wait_transition(10000) == 0);
	CHECK(klp_patch_set_enabled("pc", 0) == 0);
	CHECK(klp_wait_transition(10000) == 0);
	CHECK(reader_v2(0) == -100 && on_cleanup() == 1);
	printf("ok: a thread parked outside patchable code, cancelled during a "
	       "transition: the transitions complete\n");
}

int main(void)
{
	CHECK(pipe(pipefd) == 0);
	CHECK(klp_set_retry_period(20) == 0);
	CHECK(on_cleanup() == 1);

	test_cancel_inside(0);
	test_cancel_inside(1);
	test_cancel_inside(2);
	test_cancel_parked_outside();

	close(pipefd[0]);
	close(pipefd[1]);
	printf("done\n");
	return 0;
}
