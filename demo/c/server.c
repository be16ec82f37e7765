/* The demo server: worker threads answer "add A B" requests through patchable
 * functions (handle_request -> parse_request, format_reply), while the control thread
 * (main) live patches them: patch_v1.so fixes parse_request, patch_v2.so (cumulative,
 * replace) fixes parse_request and format_reply and replaces demo_v1, then demo_v2 is
 * disabled. Then it measures call overhead, transition and synchronize times and prints
 * one RESULT line for the klp-demo runner.
 *
 * usage: server <dir of patch_v1.so and patch_v2.so> [--quick]
 * The flavor comes from KLP_SYNC (preempt or rcu). Needs GNU C (-std=gnu11). */
#define _GNU_SOURCE
#include "demo.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WORKERS 4
#define SLOW_WORKER 3
#define BATCH 1000
#define RETRY_MS 10
#define SLOW_SWITCH \
	"when its slow request returned (parse_request was on its stack while it was blocked)"

/* Which counters a reply goes to: the steady phases of the story, or nowhere. */
enum phase { PH_NONE, PH_UNPATCHED, PH_V1, PH_V2, PH_DISABLED, PHASES };

static const char *const phase_name[PHASES] = {
	"-", "unpatched", "demo_v1", "demo_v2", "disabled",
};

static int quick;
static struct timespec t_start;
static atomic_int quiet;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static double ms_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0->tv_sec) * 1e3 + (t.tv_nsec - t0->tv_nsec) / 1e6;
}

static void sleep_us(long us)
{
	struct timespec d = { us / 1000000, us % 1000000 * 1000 };

	nanosleep(&d, NULL);
}

void demo_say(const char *fmt, ...)
{
	va_list ap;

	if (atomic_load(&quiet))
		return;
	pthread_mutex_lock(&out_lock);
	printf("[%8.2f ms] ", ms_since(&t_start));
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	pthread_mutex_unlock(&out_lock);
}

/* The kernel's log lines ("livepatch: ..."), among ours. */
static void log_line(int level, const char *line, void *data)
{
	(void)data;
	demo_say("    %s%s", line, level <= KLP_LOG_WARNING ? "   <-- warning" : "");
}

/* ------------------------------------------------------------------------------------
 * The patchable functions. */

static atomic_int slow_inside;

void demo_read_slow_body(void)
{
	/* Blocking inside parse_request: parked, so a transition may look at this thread's
	 * stack, where it finds parse_request and must leave the thread alone. */
	atomic_store(&slow_inside, 1);
	klp_park();
	sleep_us(quick ? 20000 : 40000);
	klp_unpark();
	atomic_store(&slow_inside, 0);
}

static long parse_number(const char **p)
{
	long v = 0;

	/* The bug: the sign is skipped along with the blanks. */
	while (**p == ' ' || **p == '-')
		++*p;
	while (**p >= '0' && **p <= '9')
		v = v * 10 + (*(*p)++ - '0');
	return v;
}

/* The original parse_request, also called directly (not patchable) to measure the
 * cost of the patchable call itself. */
static inline __attribute__((always_inline)) int parse_body(const char *text, long *a, long *b)
{
	if (strncmp(text, "slow ", 5) == 0) {
		demo_read_slow_body();
		text += 5;
	}
	if (strncmp(text, "add ", 4) != 0)
		return -1;
	text += 4;
	*a = parse_number(&text);
	*b = parse_number(&text);
	return 0;
}

KLP_PATCHABLE(int, parse_request, (const char *text, long *a, long *b), (text, a, b))
{
	return parse_body(text, a, b);
}

static __attribute__((noinline)) int parse_direct(const char *text, long *a, long *b)
{
	return parse_body(text, a, b);
}

KLP_PATCHABLE(const char *, format_reply, (struct conn *c, long value), (c, value))
{
	/* The other bug: five digits do not fit. */
	snprintf(c->reply, sizeof(c->reply), "%ld", value);
	return c->reply;
}

KLP_PATCHABLE(const char *, handle_request, (struct conn *c, const char *text), (c, text))
{
	long a, b;

	if (parse_request(text, &a, &b) != 0)
		return "error";
	return format_reply(c, a + b);
}

/* ------------------------------------------------------------------------------------
 * The workers. */

struct counters {
	atomic_ulong requests, wrong_sign, wrong_long;
};

struct worker {
	pthread_t thread;
	int id;
	unsigned long long rng;
	struct conn conn;
	atomic_int slow_request; /* take one slow request next */
	atomic_int reported;     /* switched in the watched transition, and said so */
	int had_slow;            /* had a slow request, not reported yet */
	struct counters count[PHASES];
} __attribute__((aligned(64)));

static struct worker workers[WORKERS];
static atomic_int phase;
static atomic_int stopping;

/* Pausing (for the call measurements): the workers wait, parked. */
static pthread_mutex_t pause_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pause_cond = PTHREAD_COND_INITIALIZER;
static int paused, paused_count;

/* The transition being watched: 0 for none. */
static atomic_int watch_gen, watch_started;
static int watch_target;
static struct timespec watch_t0;

static pthread_mutex_t example_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int has_example[PHASES];
static char example[PHASES][96];

static void bump(atomic_ulong *c)
{
	/* One writer per counter: no locked instruction needed. */
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
			      memory_order_relaxed);
}

static long next_operand(struct worker *w)
{
	w->rng ^= w->rng << 13;
	w->rng ^= w->rng >> 7;
	w->rng ^= w->rng << 17;
	return (long)(w->rng % 6201) - 200; /* -200 .. 6000 */
}

static void report_switch(struct worker *w, const char *how, int timed)
{
	const char *to = watch_target ? "patched" : "unpatched";

	if (atomic_exchange(&w->reported, 1) != 0)
		return;
	if (timed)
		demo_say("  worker %d -> %s  +%.3f ms  %s", w->id, to, ms_since(&watch_t0), how);
	else
		demo_say("  worker %d -> %s  %s", w->id, to, how);
}

/* During a watched transition: report once when this thread runs the target (`how`),
 * or, when the transition is over before it looked, that it was switched (`late`).
 * A worker that had a slow request says so instead. */
static void watch(struct worker *w, int before, const char *how, const char *late)
{
	int s;

	if (atomic_load(&watch_gen) == 0 || atomic_load(&w->reported))
		return;
	s = klp_thread_patch_state();
	if (w->had_slow) {
		how = SLOW_SWITCH;
		late = SLOW_SWITCH " (seen after completion)";
	}
	if (s == watch_target && before != watch_target)
		report_switch(w, how, 1);
	else if (s == -1 && atomic_load(&watch_started))
		report_switch(w, late, 0);
	else
		return;
	w->had_slow = 0;
}

/* Count a reply in phase `p`, read before the request: every request counted in a
 * steady phase ran entirely between the end of its transition and the report. */
static void account(struct worker *w, int p, long a, long b, const char *reply)
{
	char want[32];

	snprintf(want, sizeof(want), "%ld", a + b);
	bump(&w->count[p].requests);
	if (strcmp(reply, want) == 0)
		return;
	bump(a < 0 || b < 0 ? &w->count[p].wrong_sign : &w->count[p].wrong_long);
	if (!atomic_load(&has_example[p])) {
		pthread_mutex_lock(&example_lock);
		if (!atomic_load(&has_example[p]))
			snprintf(example[p], sizeof(example[p]), "\"add %ld %ld\" -> \"%s\"", a, b,
				 reply);
		atomic_store(&has_example[p], 1);
		pthread_mutex_unlock(&example_lock);
	}
}

static void wait_if_paused(void)
{
	pthread_mutex_lock(&pause_lock);
	if (paused) {
		++paused_count;
		pthread_cond_broadcast(&pause_cond);
		/* Blocked: parked, so that transitions need not wait for this thread. */
		klp_park();
		while (paused)
			pthread_cond_wait(&pause_cond, &pause_lock);
		klp_unpark();
		--paused_count;
	}
	pthread_mutex_unlock(&pause_lock);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	char text[48];
	long a, b;

	w->conn.worker = w->id;
	while (!atomic_load(&stopping)) {
		wait_if_paused();
		for (int i = 0; i < BATCH; ++i) {
			const char *reply;
			int slow = atomic_exchange(&w->slow_request, 0);
			int p = atomic_load(&phase);

			a = next_operand(w);
			b = next_operand(w);
			snprintf(text, sizeof(text), "%sadd %ld %ld", slow ? "slow " : "", a, b);
			reply = handle_request(&w->conn, text);
			account(w, p, a, b, reply);
			/* Between requests nothing patchable is on the stack: the kernel's
			 * klp_update_patch_state() point. (Returning from handle_request is
			 * a switch point already; this one keeps the loop one even if the
			 * code between requests grows.) */
			klp_update_patch_state();
			w->had_slow |= slow;
			watch(w, -2, "switched itself between requests",
			      "switched between requests (seen after completion)");
		}
		/* The queue is empty: wait for the next batch. A thread blocked outside
		 * patchable code never reaches a switch point by itself; parked, it is
		 * switched by the transition from outside (the kernel switches sleeping
		 * tasks after checking their stacks). */
		int before = atomic_load(&watch_gen) ? klp_thread_patch_state() : -2;
		klp_park();
		sleep_us(300);
		klp_unpark();
		watch(w, before, "switched while blocked on the queue",
		      "switched while blocked on the queue (seen after completion)");
	}
	return NULL;
}

static void pause_workers(void)
{
	pthread_mutex_lock(&pause_lock);
	paused = 1;
	while (paused_count < WORKERS)
		pthread_cond_wait(&pause_cond, &pause_lock);
	pthread_mutex_unlock(&pause_lock);
}

static void resume_workers(void)
{
	pthread_mutex_lock(&pause_lock);
	paused = 0;
	pthread_cond_broadcast(&pause_cond);
	pthread_mutex_unlock(&pause_lock);
}

/* Count replies of `p` for a while, then say how many were wrong. */
static void steady(enum phase p)
{
	unsigned long req = 0, sign = 0, lng = 0;

	atomic_store(&phase, p);
	sleep_us(quick ? 60000 : 150000);
	atomic_store(&phase, PH_NONE);
	sleep_us(1000);
	for (int i = 0; i < WORKERS; ++i) {
		req += atomic_load(&workers[i].count[p].requests);
		sign += atomic_load(&workers[i].count[p].wrong_sign);
		lng += atomic_load(&workers[i].count[p].wrong_long);
	}
	pthread_mutex_lock(&example_lock);
	demo_say("replies [%s]: %lu requests, %lu wrong (%.1f%%): %lu with a negative operand, %lu with a 5-digit sum%s%s",
		 phase_name[p], req, sign + lng, req ? 100.0 * (sign + lng) / req : 0.0, sign, lng,
		 has_example[p] ? "; e.g. " : "", has_example[p] ? example[p] : "");
	pthread_mutex_unlock(&example_lock);
}

/* ------------------------------------------------------------------------------------
 * The control thread. */

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (!(cond)) {                                                          \
			fprintf(stderr, "server: FAILED: %s (line %d)\n", #cond, __LINE__); \
			exit(1);                                                        \
		}                                                                       \
	} while (0)

static void watch_start(int target)
{
	for (int i = 0; i < WORKERS; ++i)
		atomic_store(&workers[i].reported, 0);
	watch_target = target;
	atomic_store(&watch_started, 0);
	clock_gettime(CLOCK_MONOTONIC, &watch_t0);
	atomic_store(&watch_gen, atomic_load(&watch_gen) + 1);
}

/* Wait for the transition; then make sure every worker's switch was reported (`slow`:
 * worker SLOW_WORKER had a slow request). */
static void watch_end(int slow)
{
	int r = klp_wait_transition(10000);
	double took = ms_since(&watch_t0);
	int all = 0;

	CHECK(r == 0);
	/* Let the workers that were not looking see it (they wake within a millisecond). */
	for (int k = 0; k < 100 && !all; ++k) {
		sleep_us(100);
		all = 1;
		for (int i = 0; i < WORKERS; ++i)
			all &= atomic_load(&workers[i].reported);
	}
	atomic_store(&watch_gen, 0);
	for (int i = 0; i < WORKERS; ++i)
		report_switch(&workers[i],
			      slow && i == SLOW_WORKER ? SLOW_SWITCH " (seen after completion)"
						       : "switched (seen after completion)",
			      0);
	demo_say("transition complete after %.3f ms", took);
}

static void *load_patch(const char *dir, const char *file)
{
	char path[4096];
	void *h;
	int *status;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	demo_say("%% dlopen %s   (its constructor calls klp_enable_patch, like a livepatch module's init)", file);
	h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		fprintf(stderr, "server: dlopen: %s\n", dlerror());
		exit(1);
	}
	status = dlsym(h, "demo_patch_status");
	CHECK(status != NULL);
	if (*status != 0) {
		fprintf(stderr, "server: klp_enable_patch: %s\n", klp_strerror(*status));
		exit(1);
	}
	return h;
}

/* A patch of the server itself, for the measurements: parse_request fixed. */
static int parse_request_bench(const char *text, long *a, long *b)
{
	return parse_body(text, a, b);
}

static struct klp_func bench_funcs[] = {
	{ .old_name = "parse_request", .new_func = (void *)parse_request_bench },
	{ 0 }
};
static struct klp_object bench_objs[] = { { .name = NULL, .funcs = bench_funcs }, { 0 } };
static struct klp_patch bench_patch = { .name = "demo_bench", .objs = bench_objs };

static int cmp_double(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;

	return (a > b) - (a < b);
}

static double median(double *v, int n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Median ns per call of parse_request("add 1 2"), or of parse_direct. */
static double call_ns(int direct)
{
	const char *volatile text = "add 1 2";
	int batches = quick ? 11 : 31, calls = quick ? 20000 : 100000;
	double s[31];
	struct timespec t0;
	long a, b;

	for (int k = 0; k < batches; ++k) {
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (int i = 0; i < calls; ++i) {
			if (direct)
				parse_direct(text, &a, &b);
			else
				parse_request(text, &a, &b);
			__asm__ volatile("" : : "r"(a), "r"(b) : "memory");
		}
		s[k] = ms_since(&t0) * 1e6 / calls;
	}
	return median(s, batches);
}

int main(int argc, char **argv)
{
	const char *flavor = getenv("KLP_SYNC") ? getenv("KLP_SYNC") : "preempt";
	double direct_ns, unpatched_ns, patched_ns = 0, tr[9], sy[31];
	int reps = 5, syncs = 31, retried = 0;
	void *v1, *v2;

	CHECK(argc >= 2);
	quick = argc > 2 && strcmp(argv[2], "--quick") == 0;
	if (quick) {
		reps = 3;
		syncs = 11;
	}
	setvbuf(stdout, NULL, _IOFBF, 1 << 16);
	clock_gettime(CLOCK_MONOTONIC, &t_start);
	CHECK(klp_set_log_handler(log_line, NULL) == 0);
	/* A stalled transition tries again every RETRY_MS rather than every second (the
	 * kernel's period), so that one stall does not dominate the demo's figures. */
	CHECK(klp_set_retry_period(RETRY_MS) == 0);

	demo_say("server: libklp %s, flavor %s, %d workers answering \"add A B\" through handle_request -> parse_request, format_reply",
		 klp_version(), flavor, WORKERS);
	for (int i = 0; i < WORKERS; ++i) {
		workers[i].id = i;
		workers[i].rng = 0x9e3779b97f4a7c15ULL * (i + 1);
		CHECK(pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) == 0);
	}
	steady(PH_UNPATCHED);

	/* demo_v1, while worker 3 is blocked inside parse_request on a slow request. */
	atomic_store(&workers[SLOW_WORKER].slow_request, 1);
	while (!atomic_load(&slow_inside))
		sleep_us(100);
	demo_say("worker %d is blocked inside parse_request (a slow request body)", SLOW_WORKER);
	watch_start(1);
	v1 = load_patch(argv[1], "patch_v1.so");
	atomic_store(&watch_started, 1);
	watch_end(1);
	steady(PH_V1);

	/* demo_v2, cumulative: replaces demo_v1 atomically. */
	watch_start(1);
	v2 = load_patch(argv[1], "patch_v2.so");
	atomic_store(&watch_started, 1);
	watch_end(0);
	demo_say("demo_v1: klp_patch_enabled -> %s (replaced, released)",
		 klp_strerror(klp_patch_enabled("demo_v1")));
	steady(PH_V2);

	/* Disable demo_v2: back to the original code. */
	demo_say("%% echo 0 > /sys/kernel/livepatch/demo_v2/enabled   (klp_patch_set_enabled)");
	watch_start(0);
	CHECK(klp_patch_set_enabled("demo_v2", 0) == 0);
	atomic_store(&watch_started, 1);
	watch_end(0);
	steady(PH_DISABLED);
	/* Released (its name is free) and a grace period later: no thread can run the code of
	 * the patch modules any more. */
	while (klp_patch_enabled("demo_v2") != -2)
		sleep_us(1000);
	klp_synchronize();
	demo_say("%% dlclose patch_v2.so patch_v1.so");
	CHECK(dlclose(v2) == 0);
	CHECK(dlclose(v1) == 0);

	/* Measurements, quietly. */
	demo_say("measuring (workers paused for the call costs, busy for the rest)...");
	atomic_store(&quiet, 1);
	pause_workers();
	direct_ns = call_ns(1);
	unpatched_ns = call_ns(0);
	resume_workers();
	for (int k = 0; k < reps; ++k) {
		struct timespec t0;

		sleep_us(2000);
		clock_gettime(CLOCK_MONOTONIC, &t0);
		CHECK(klp_enable_patch(&bench_patch) == 0);
		CHECK(klp_wait_transition(10000) == 0);
		tr[k] = ms_since(&t0) * 1e3;
		retried += tr[k] >= RETRY_MS * 1e3;
		if (k == 0) {
			pause_workers();
			patched_ns = call_ns(0);
			resume_workers();
		}
		CHECK(klp_patch_set_enabled("demo_bench", 0) == 0);
		CHECK(klp_wait_transition(10000) == 0);
		while (klp_patch_enabled("demo_bench") != -2)
			sleep_us(100);
	}
	for (int k = 0; k < syncs; ++k) {
		struct timespec t0;

		clock_gettime(CLOCK_MONOTONIC, &t0);
		klp_synchronize();
		sy[k] = ms_since(&t0) * 1e3;
	}
	atomic_store(&quiet, 0);

	atomic_store(&stopping, 1);
	for (int i = 0; i < WORKERS; ++i)
		CHECK(pthread_join(workers[i].thread, NULL) == 0);

	double tr_us = median(tr, reps), sy_us = median(sy, syncs), tr_max = tr[reps - 1];
	demo_say("flavor %s: parse_request(\"add 1 2\"): direct %.1f ns, patchable unpatched %.1f ns (+%.1f), patched %.1f ns (+%.1f)",
		 flavor, direct_ns, unpatched_ns, unpatched_ns - direct_ns, patched_ns,
		 patched_ns - direct_ns);
	demo_say("flavor %s: transition (enable -> complete, %d busy workers) median %.1f us, max %.1f us (%d of %d waited for a %d ms retry); klp_synchronize %.1f us",
		 flavor, WORKERS, tr_us, tr_max, retried, reps, RETRY_MS, sy_us);
	printf("RESULT flavor=%s call_direct_ns=%.2f call_unpatched_ns=%.2f call_patched_ns=%.2f transition_us=%.1f transition_max_us=%.1f transition_retried=%d/%d synchronize_us=%.1f\n",
	       flavor, direct_ns, unpatched_ns, patched_ns, tr_us, tr_max, retried, reps, sy_us);
	CHECK(klp_set_log_handler(NULL, NULL) == 0);
	return 0;
}
