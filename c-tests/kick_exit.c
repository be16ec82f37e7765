/* Kicks and exiting threads. A transition collects the kicks of the threads it waits for
 * under the task-list lock and calls them after dropping it; a thread that exits
 * meanwhile must not be kicked any more (its kick's data may be gone with it), nor exit
 * while its kick runs. Rounds of short-lived threads each register a kick, enter a
 * function that the transition replaces and stay there, running (not parked), until
 * their kick wakes them or, for half of them, until a few milliseconds have passed; then
 * they return and exit at once, with the kick still registered, in the middle of a
 * transition that retries every millisecond (kicks start after 15 attempts). The kick
 * wakes its thread, waits a little while the thread runs on towards its exit, and checks,
 * before and after, that the thread still exists (tgkill with signal 0: ESRCH once it
 * has exited). Patching and unpatching transitions alternate. Run by
 * klp-ffi/tests/c_lifecycle.rs under both flavors; needs GNU C. */
#include <klp.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (!(cond)) {                                                          \
			printf("FAILED: %s (line %d)\n", #cond, __LINE__);              \
			exit(1);                                                        \
		}                                                                       \
	} while (0)

#define NTHREADS 8
#define MAX_ROUNDS 200
#define RUN_MS 1500

/* One thread's kick data; never reused, so that a kick called too late still reads
 * valid memory and reports what it finds. */
struct slot {
	pid_t tid;
	int self_ms; /* leave on its own after this long; 0: only when kicked */
	atomic_int leave;
	atomic_int returned;
};

static struct slot slots[MAX_ROUNDS * NTHREADS];
static atomic_int inside;
static atomic_long kicks, kicks_after_return, gone_before, gone_after;

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_us(long us)
{
	struct timespec ts = { 0, us * 1000 };
	nanosleep(&ts, NULL);
}

/* Whether the thread `tid` of this process still exists. */
static int exists(pid_t tid)
{
	return syscall(SYS_tgkill, getpid(), tid, 0) == 0 || errno != ESRCH;
}

static void kick(void *data)
{
	struct slot *s = data;
	atomic_fetch_add(&kicks, 1);
	if (!exists(s->tid))
		atomic_fetch_add(&gone_before, 1);
	if (atomic_load(&s->returned))
		atomic_fetch_add(&kicks_after_return, 1);
	atomic_store(&s->leave, 1);
	sleep_us(300); /* the thread returns and goes on towards its exit meanwhile */
	if (!exists(s->tid))
		atomic_fetch_add(&gone_after, 1);
}

/* Stay, running, until kicked or (for some) until self_ms have passed. */
static int stay(struct slot *s, int r)
{
	long start = now_ms();
	atomic_fetch_add(&inside, 1);
	while (!atomic_load(&s->leave)) {
		long ms = now_ms() - start;
		if ((s->self_ms && ms >= s->self_ms) || ms >= 5000)
			break;
		sleep_us(50); /* not parked: only a return lets this thread switch */
	}
	return r;
}

KLP_PATCHABLE(int, busy, (struct slot * s), (s))
{
	return stay(s, 1);
}

static int busy_v2(struct slot *s)
{
	return stay(s, 2);
}

static struct klp_func funcs[] = { { .old_name = "busy", .new_func = (void *)busy_v2 }, { 0 } };
static struct klp_object objs[] = { { .name = NULL, .funcs = funcs }, { 0 } };
static struct klp_patch patch = { .name = "kick_exit", .objs = objs };

static void *thread_main(void *arg)
{
	struct slot *s = arg;
	s->tid = (pid_t)syscall(SYS_gettid);
	CHECK(klp_set_thread_kick(kick, s) == 0);
	busy(s);
	atomic_store(&s->returned, 1);
	return NULL; /* exits with its kick registered */
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	CHECK(klp_set_retry_period(1) == 0);
	pthread_attr_t attr;
	CHECK(pthread_attr_init(&attr) == 0);
	CHECK(pthread_attr_setstacksize(&attr, 256 * 1024) == 0);
	srand(1);

	long end = now_ms() + RUN_MS;
	int rounds = 0, enabled = 0;
	while (rounds < MAX_ROUNDS && now_ms() < end) {
		pthread_t t[NTHREADS];
		atomic_store(&inside, 0);
		for (int i = 0; i < NTHREADS; i++) {
			struct slot *s = &slots[rounds * NTHREADS + i];
			s->self_ms = i % 2 ? 5 + rand() % 35 : 0;
			CHECK(pthread_create(&t[i], &attr, thread_main, s) == 0);
		}
		while (atomic_load(&inside) < NTHREADS)
			sleep_us(100);
		/* Every thread is inside: patch (they run the original) or unpatch (they run
		 * the replacement), and wait until they have all left or exited. */
		if (enabled)
			CHECK(klp_patch_set_enabled("kick_exit", 0) == 0);
		else
			CHECK(klp_enable_patch(&patch) == 0);
		enabled = !enabled;
		CHECK(klp_wait_transition(10000) == 0);
		for (int i = 0; i < NTHREADS; i++)
			CHECK(pthread_join(t[i], NULL) == 0);
		rounds++;
	}
	if (enabled) {
		CHECK(klp_patch_set_enabled("kick_exit", 0) == 0);
		CHECK(klp_wait_transition(10000) == 0);
	}
	CHECK(pthread_attr_destroy(&attr) == 0);
	printf("%d rounds of %d threads, %ld kicks (%ld after the thread's function returned); "
	       "the thread no longer existed when %ld began, when %ld ended\n",
	       rounds, NTHREADS, atomic_load(&kicks), atomic_load(&kicks_after_return),
	       atomic_load(&gone_before), atomic_load(&gone_after));
	CHECK(atomic_load(&kicks) > 0);
	CHECK(atomic_load(&gone_before) == 0);
	CHECK(atomic_load(&gone_after) == 0);
	printf("done\n");
	return 0;
}
