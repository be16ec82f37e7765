/* Signal handlers against the consistency model, under load. Three worker threads call
 * the patchable outer(), which calls the patchable inner(), in a tight loop; one of them
 * never parks, the others park now and then for about 50 us, outside any patchable
 * function or inside inner() (a thread sleeping in a replaced function). A signaler
 * thread sends SIGUSR1 to the workers without pause. The handler, twice over, calls
 * sig_outer() (patchable, calling the patchable sig_inner() and inner()), then
 * klp_update_patch_state(), sig_outer() again, then klp_park() and klp_unpark(); and
 * sig_outer() once more at the end. The main thread meanwhile enables a patch that
 * replaces all four functions, waits for the transition, disables it, waits again and
 * for the patch to be released, over and over.
 *
 * Every implementation reports its version (1 original, 2 replacement), and each caller
 * checks that the patchable functions it called nested ran one version (a thread never
 * runs a mix of old and new functions): outer's against the inner it called,
 * sig_outer's against its sig_inner and inner. A handler that interrupted its thread
 * inside outer() (the body of either version marks the thread) must run that version as
 * well: the thread cannot switch while outer() is on its stack, neither at the handler's
 * switch point nor while the handler parks, and the handler runs with the thread's
 * state.
 *
 * Also: a thread whose first libklp call is a patchable call in a signal handler
 * (SIGUSR2; registration inside the handler), during patching and unpatching
 * transitions, runs one version and does not hold up the transition once it exited; and
 * libklp's own threads (klp-transition, klp-rcu, klp-unmap) block every signal that can
 * be blocked (/proc/self/task/<tid>/status, SigBlk).
 *
 * It runs until the workers made at least 10,000,000 calls of outer(), the handlers ran
 * at least 30,000 times and 20 enable/disable cycles completed, and at least
 * KLP_STRESS_SECS seconds when that is set. It prints a summary line
 * (`summary: calls=... signals=... cycles=... mixes=...`) and then `done`; any mix or
 * unexpected return value fails it (exit status 1). The queries may lag a moment behind
 * klp_wait_transition (the patch still reads as in transition, or a disabled patch as
 * listed): that is waited out, and counted in the output. Run by
 * klp-ffi/tests/c_signals.rs under both flavors. Needs GNU C (-std=gnu11). */
#include <klp.h>

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (!(cond)) {                                                          \
			printf("FAILED: %s (line %d)\n", #cond, __LINE__);              \
			fflush(stdout);                                                 \
			exit(1);                                                        \
		}                                                                       \
	} while (0)

/* `expr` must return `want`: say what it returned otherwise. */
#define CHECK_RET(expr, want)                                                           \
	do {                                                                            \
		int check_ret_ = (expr);                                                \
		if (check_ret_ != (want)) {                                             \
			printf("FAILED: %s returned %d (%s), not %d (line %d)\n", #expr, \
			       check_ret_, klp_strerror(check_ret_), (want), __LINE__);  \
			fflush(stdout);                                                 \
			exit(1);                                                        \
		}                                                                       \
	} while (0)

#define WORKERS 3
/* How much the run must do before it stops; the argument `quick` (for the runs under
 * AddressSanitizer and valgrind, which look for memory errors, not for counts) asks for
 * one cycle and a hundredth of the calls and signals, or 10 seconds, whichever comes
 * first. */
static unsigned long long min_calls = 10000000ULL, min_signals = 30000ULL;
static int quick;
/* How long a transition may take: longer in the quick run (valgrind runs one thread at a
 * time, slowly). */
static unsigned wait_ms = 10000;
static int min_cycles = 20;
/* Threads whose first libklp call is in a SIGUSR2 handler, one in each of the first
 * cycles (alternately during the patching and the unpatching transition). */
#define FRESH_THREADS 8
/* A parking worker parks once every PARK_EVERY calls, for PARK_NS nanoseconds. */
#define PARK_EVERY 64
#define PARK_NS 50000L
/* A handler's rounds of calls, switch point and parking. */
#define HANDLER_ROUNDS 2

static const char patch_name[] = "signals";

/* Set by the bodies of outer() (either version) on their thread while they run: the
 * version of the outer() that a handler interrupted, 0 outside. */
static __thread volatile sig_atomic_t in_outer;
/* Set while a worker is parked around a sleep (outside or inside inner()). */
static __thread volatile sig_atomic_t parked;

static atomic_ullong calls, signals, handled_in_outer, handled_parked;
static atomic_ullong worker_mixes, handler_mixes, handler_state_mixes, fresh_mixes;
static atomic_int stop_signaler, stop_workers;

static void sleep_ns(long ns)
{
	struct timespec ts = { .tv_sec = ns / 1000000000L, .tv_nsec = ns % 1000000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void park_briefly(void)
{
	klp_park();
	parked = 1;
	sleep_ns(PARK_NS);
	parked = 0;
	klp_unpark();
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* --- the patchable functions: each returns its version, 1 or 2, or the versions of
 * itself and of what it called, one decimal digit each. --- */

/* Parks around a short sleep when `park`: a thread blocked inside a replaced function. */
KLP_PATCHABLE(int, inner, (int park), (park))
{
	if (park)
		park_briefly();
	return 1;
}

static int inner_v2(int park)
{
	if (park)
		park_briefly();
	return 2;
}

/* 10 * its version + inner's. */
KLP_PATCHABLE(int, outer, (int park), (park))
{
	sig_atomic_t saved = in_outer;
	in_outer = 1;
	atomic_signal_fence(memory_order_seq_cst);
	int i = inner(park);
	atomic_signal_fence(memory_order_seq_cst);
	in_outer = saved;
	return 10 + i;
}

static int outer_v2(int park)
{
	sig_atomic_t saved = in_outer;
	in_outer = 2;
	atomic_signal_fence(memory_order_seq_cst);
	int i = inner(park);
	atomic_signal_fence(memory_order_seq_cst);
	in_outer = saved;
	return 20 + i;
}

/* The handlers' own nested function. */
KLP_PATCHABLE(int, sig_inner, (void), ())
{
	return 1;
}

static int sig_inner_v2(void)
{
	return 2;
}

/* 100 * its version + 10 * sig_inner's + inner's. */
KLP_PATCHABLE(int, sig_outer, (void), ())
{
	int a = sig_inner();
	int b = inner(0);
	return 100 + 10 * a + b;
}

static int sig_outer_v2(void)
{
	int a = sig_inner();
	int b = inner(0);
	return 200 + 10 * a + b;
}

static struct klp_func funcs[] = {
	{ .old_name = "outer", .new_func = (void *)outer_v2 },
	{ .old_name = "inner", .new_func = (void *)inner_v2 },
	{ .old_name = "sig_outer", .new_func = (void *)sig_outer_v2 },
	{ .old_name = "sig_inner", .new_func = (void *)sig_inner_v2 },
	{ 0 }
};
static struct klp_object objs[] = { { .name = NULL, .funcs = funcs }, { 0 } };
static struct klp_patch patch = { .name = patch_name, .objs = objs };

/* The version of a result of outer(), or 0 for a mix (or garbage). */
static int outer_version(int r)
{
	int o = r / 10, i = r % 10;
	return (o == 1 || o == 2) && i == o ? o : 0;
}

/* The version of a result of sig_outer(), or 0 for a mix (or garbage). */
static int sig_outer_version(int r)
{
	int o = r / 100, a = r / 10 % 10, b = r % 10;
	return (o == 1 || o == 2) && a == o && b == o ? o : 0;
}

/* --- SIGUSR1 on the workers --- */

/* One call of sig_outer() from the handler: one version, and the version of the outer()
 * the handler interrupted, if any (`interrupted`). */
static void handler_call(int interrupted)
{
	int v = sig_outer_version(sig_outer());
	if (!v)
		atomic_fetch_add(&handler_mixes, 1);
	else if (interrupted && v != interrupted)
		atomic_fetch_add(&handler_state_mixes, 1);
}

static void on_usr1(int sig)
{
	(void)sig;
	int saved_errno = errno;
	int interrupted = in_outer;
	if (interrupted)
		atomic_fetch_add_explicit(&handled_in_outer, 1, memory_order_relaxed);
	if (parked)
		atomic_fetch_add_explicit(&handled_parked, 1, memory_order_relaxed);
	for (int round = 0; round < HANDLER_ROUNDS; round++) {
		handler_call(interrupted);
		klp_update_patch_state();
		handler_call(interrupted);
		klp_park();
		klp_unpark();
	}
	handler_call(interrupted);
	atomic_fetch_add_explicit(&signals, 1, memory_order_relaxed);
	errno = saved_errno;
}

/* Worker 0 never parks; worker 1 parks outside patchable functions, worker 2 alternately
 * outside and inside inner(). */
static void *worker(void *arg)
{
	int id = (int)(intptr_t)arg;
	unsigned long long n = 0, flushed = 0;
	while (!atomic_load_explicit(&stop_workers, memory_order_relaxed)) {
		int park_inside = 0;
		if (id > 0 && n % PARK_EVERY == 0) {
			if (id == 2 && n / PARK_EVERY % 2)
				park_inside = 1;
			else
				park_briefly();
		}
		if (!outer_version(outer(park_inside)))
			atomic_fetch_add(&worker_mixes, 1);
		if (++n % 1024 == 0) {
			atomic_fetch_add_explicit(&calls, n - flushed, memory_order_relaxed);
			flushed = n;
		}
	}
	atomic_fetch_add(&calls, n - flushed);
	return NULL;
}

static pthread_t workers[WORKERS];

static void *signaler(void *arg)
{
	(void)arg;
	while (!atomic_load_explicit(&stop_signaler, memory_order_relaxed)) {
		for (int i = 0; i < WORKERS; i++)
			CHECK_RET(pthread_kill(workers[i], SIGUSR1), 0);
		sleep_ns(10000);
	}
	return NULL;
}

/* --- SIGUSR2: a thread's first libklp call in a handler --- */

static atomic_int fresh_done;
static int fresh_first, fresh_second, fresh_state;

static void on_usr2(int sig)
{
	(void)sig;
	int saved_errno = errno;
	fresh_first = outer(0); /* the thread's first libklp call */
	fresh_state = klp_thread_patch_state();
	klp_update_patch_state();
	fresh_second = outer(0);
	atomic_store(&fresh_done, 1);
	errno = saved_errno;
}

static void *fresh_thread(void *arg)
{
	(void)arg;
	while (!atomic_load(&fresh_done))
		sleep_ns(1000000);
	return NULL;
}

static void first_call_in_a_handler(void)
{
	pthread_t t;
	atomic_store(&fresh_done, 0);
	CHECK_RET(pthread_create(&t, NULL, fresh_thread, NULL), 0);
	CHECK_RET(pthread_kill(t, SIGUSR2), 0);
	double deadline = now() + wait_ms / 1000.0;
	while (!atomic_load(&fresh_done)) {
		CHECK(now() < deadline);
		sleep_ns(100000);
	}
	CHECK_RET(pthread_join(t, NULL), 0);
	if (!outer_version(fresh_first) || !outer_version(fresh_second)) {
		printf("mix in a fresh thread's handler: %d, %d\n", fresh_first, fresh_second);
		atomic_fetch_add(&fresh_mixes, 1);
	}
	CHECK(fresh_state >= -1 && fresh_state <= 1);
}

/* --- libklp's threads block signals --- */

/* The SigBlk mask of thread `tid`. */
static unsigned long long sig_blocked(const char *tid)
{
	char path[300], line[256];
	unsigned long long mask = 0;
	int found = 0;
	snprintf(path, sizeof(path), "/proc/self/task/%s/status", tid);
	FILE *f = fopen(path, "r");
	CHECK(f != NULL);
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "SigBlk:", 7) == 0) {
			mask = strtoull(line + 7, NULL, 16);
			found = 1;
		}
	fclose(f);
	CHECK(found);
	return mask;
}

/* Every libklp thread (its name begins with "klp-") blocks every signal that
 * pthread_sigmask can block: all but SIGKILL, SIGSTOP and the two that the C library
 * keeps for itself (between 31 and SIGRTMIN); in the quick run (maybe under valgrind,
 * which keeps one more for itself) SIGUSR1 and SIGUSR2 at least. Returns how many
 * there are. */
static int check_library_threads(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/task");
	CHECK(d != NULL);
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		char path[300], comm[64] = "";
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
		FILE *f = fopen(path, "r");
		if (f == NULL)
			continue; /* exited meanwhile */
		if (fgets(comm, sizeof(comm), f) == NULL)
			comm[0] = 0;
		fclose(f);
		comm[strcspn(comm, "\n")] = 0;
		if (strncmp(comm, "klp-", 4) != 0)
			continue;
		unsigned long long mask = sig_blocked(e->d_name);
		for (int sig = 1; sig <= SIGRTMAX && sig <= 64; sig++) {
			if (sig == SIGKILL || sig == SIGSTOP || (sig > 31 && sig < SIGRTMIN))
				continue;
			if (quick && sig != SIGUSR1 && sig != SIGUSR2)
				continue;
			if (!(mask >> (sig - 1) & 1)) {
				printf("FAILED: thread %s (%s) does not block signal %d (SigBlk %016llx)\n",
				       e->d_name, comm, sig, mask);
				exit(1);
			}
		}
		printf("%s blocks every signal (SigBlk %016llx)\n", comm, mask);
		n++;
	}
	closedir(d);
	return n;
}

/* --- the main thread: enable, wait, disable, wait, over and over --- */

/* After klp_wait_transition returned 0, the queries already see the transition over. */
static void check_out_of_transition(void)
{
	CHECK_RET(klp_patch_transition(patch_name), 0);
}

/* After the unpatching transition: the patch is gone (released) at once, and may be
 * enabled again. */
static void wait_released(void)
{
	CHECK_RET(klp_patch_enabled(patch_name), -ENOENT);
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "quick") == 0) {
		quick = 1;
		wait_ms = 120000;
		min_cycles = 1;
		min_calls /= 100;
		min_signals /= 100;
	}
	const char *env = getenv("KLP_STRESS_SECS");
	double secs = env ? atof(env) : 0;
	/* A hang fails the test rather than stalling it (SIGALRM kills the process). */
	alarm((unsigned)secs + 600);

	struct sigaction sa = { .sa_handler = on_usr1, .sa_flags = SA_RESTART };
	sigemptyset(&sa.sa_mask);
	CHECK_RET(sigaction(SIGUSR1, &sa, NULL), 0);
	sa.sa_handler = on_usr2;
	CHECK_RET(sigaction(SIGUSR2, &sa, NULL), 0);
	CHECK_RET(klp_set_retry_period(5), 0);

	for (int i = 0; i < WORKERS; i++)
		CHECK_RET(pthread_create(&workers[i], NULL, worker, (void *)(intptr_t)i), 0);
	pthread_t sig_thread;
	CHECK_RET(pthread_create(&sig_thread, NULL, signaler, NULL), 0);

	double start = now();
	int cycles = 0;
	for (;;) {
		if (cycles >= min_cycles && now() - start >= secs &&
		    ((atomic_load(&calls) >= min_calls && atomic_load(&signals) >= min_signals) ||
		     (quick && now() - start >= 10)))
			break;
		CHECK_RET(klp_patch_enabled(patch_name), -ENOENT);
		CHECK_RET(klp_enable_patch(&patch), 0);
		if (cycles < FRESH_THREADS && cycles % 2 == 0)
			first_call_in_a_handler(); /* during the patching transition, mostly */
		CHECK_RET(klp_wait_transition(wait_ms), 0);
		check_out_of_transition();
		CHECK_RET(klp_patch_enabled(patch_name), 1);
		CHECK_RET(klp_patch_set_enabled(patch_name, 0), 0);
		if (cycles < FRESH_THREADS && cycles % 2 == 1)
			first_call_in_a_handler(); /* during the unpatching transition, mostly */
		CHECK_RET(klp_wait_transition(wait_ms), 0);
		wait_released();
		CHECK_RET(klp_patch_list(NULL, 0), 1); /* no patch: just the empty name */
		cycles++;
	}
	double elapsed = now() - start;

	atomic_store(&stop_signaler, 1);
	CHECK_RET(pthread_join(sig_thread, NULL), 0);
	atomic_store(&stop_workers, 1);
	for (int i = 0; i < WORKERS; i++)
		CHECK_RET(pthread_join(workers[i], NULL), 0);
	first_call_in_a_handler(); /* with no patch */

	unsigned long long mixes = atomic_load(&worker_mixes) + atomic_load(&handler_mixes) +
				   atomic_load(&handler_state_mixes) + atomic_load(&fresh_mixes);
	printf("summary: calls=%llu signals=%llu cycles=%d mixes=%llu (%.1f s)\n",
	       atomic_load(&calls), atomic_load(&signals), cycles, mixes, elapsed);
	printf("handlers inside outer: %llu, on parked threads: %llu\n",
	       atomic_load(&handled_in_outer), atomic_load(&handled_parked));
	printf("mixes: workers %llu, handlers %llu, handlers against the interrupted outer %llu, "
	       "first calls in handlers %llu\n",
	       atomic_load(&worker_mixes), atomic_load(&handler_mixes),
	       atomic_load(&handler_state_mixes), atomic_load(&fresh_mixes));
	CHECK(mixes == 0);

	CHECK(check_library_threads() >= 1);
	printf("done\n");
	return 0;
}
