/* A signal handler running on an alternate signal stack that lies above the thread's own
 * stack calls klp_update_patch_state() while the thread is inside a function that a
 * transition replaces: the handler's frames are above the thread's, yet the thread's
 * patchable frames are live. libklp compares frame addresses only within one stack, so
 * the thread must not switch until it really returns. Run by klp-ffi/tests/c_unwind.rs
 * under both flavors; needs GNU C. */
#include <klp.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (!(cond)) {                                                          \
			printf("FAILED: %s (line %d)\n", #cond, __LINE__);              \
			exit(1);                                                        \
		}                                                                       \
	} while (0)

#define STACK_SIZE (1024 * 1024)
#define ALT_SIZE (256 * 1024)

static void *alt;
static atomic_int inside, leave, handled;

KLP_PATCHABLE(int, busy, (int x), (x))
{
	atomic_store(&inside, 1);
	while (!atomic_load(&leave))
		; /* running, not parked: only a return lets this thread switch */
	return x + 1;
}

static int busy_v2(int x)
{
	return x + 2;
}

static struct klp_func funcs[] = { { .old_name = "busy", .new_func = (void *)busy_v2 }, { 0 } };
static struct klp_object objs[] = { { .name = NULL, .funcs = funcs }, { 0 } };
static struct klp_patch patch = { .name = "altstack", .objs = objs };

static void on_signal(int sig)
{
	(void)sig;
	klp_update_patch_state(); /* on the alternate stack, above the thread's frames */
	atomic_store(&handled, 1);
}

static void *thread_main(void *arg)
{
	(void)arg;
	stack_t ss = { .ss_sp = alt, .ss_size = ALT_SIZE };
	/* The case this tests: the alternate stack lies above this thread's frames. */
	CHECK((char *)__builtin_frame_address(0) < (char *)alt);
	CHECK(sigaltstack(&ss, NULL) == 0);
	CHECK(busy(1) == 2); /* the original: it was inside it when the patch came */
	CHECK(busy(1) == 3);
	return NULL;
}

int main(void)
{
	/* One mapping: the thread's stack, and the alternate stack just above it. */
	char *m = mmap(NULL, STACK_SIZE + ALT_SIZE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(m != MAP_FAILED);
	alt = m + STACK_SIZE;
	pthread_attr_t attr;
	CHECK(pthread_attr_init(&attr) == 0);
	CHECK(pthread_attr_setstack(&attr, m, STACK_SIZE) == 0);
	struct sigaction sa = { .sa_handler = on_signal, .sa_flags = SA_ONSTACK };
	sigemptyset(&sa.sa_mask);
	CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
	CHECK(klp_set_retry_period(10) == 0);

	pthread_t t;
	CHECK(pthread_create(&t, &attr, thread_main, NULL) == 0);
	CHECK(pthread_attr_destroy(&attr) == 0);
	while (!atomic_load(&inside))
		;
	CHECK(klp_enable_patch(&patch) == 0);
	CHECK(pthread_kill(t, SIGUSR1) == 0);
	while (!atomic_load(&handled))
		;
	/* The handler's switch point must not have switched a thread inside busy(). */
	CHECK(klp_wait_transition(100) == -ETIMEDOUT);
	printf("ok: a handler on an alternate stack above the thread's keeps its live frames\n");
	atomic_store(&leave, 1);
	CHECK(klp_wait_transition(10000) == 0);
	CHECK(pthread_join(t, NULL) == 0);
	CHECK(klp_patch_set_enabled("altstack", 0) == 0);
	CHECK(klp_wait_transition(10000) == 0);
	printf("done\n");
	return 0;
}
