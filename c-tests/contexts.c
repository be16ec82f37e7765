/* The table of contexts at the top of klp.h, cell by cell: each export called from an
 * ordinary thread, from a log handler (the lines of a control operation, of the
 * transition worker, and a line logged outside both), from each object callback
 * (pre_patch, post_patch, pre_unpatch, post_unpatch; on the enabling thread and on the
 * transition worker), from shadow constructors and destructors, from a kick and from a
 * signal handler. Every "ok" cell is called with a result that is checked against the
 * state the context is in (a log line or callback sees the state its line describes, as
 * in the kernel); a sample of the "EDEADLK" and "refused" cells is checked to return at
 * once. The "no" cells are never called.
 *
 * Regressions: queries from a log handler during klp_enable_patch, from post_patch and
 * from a kick used to hang; klp_shadow_get from a shadow constructor used to miss
 * variables allocated before.
 *
 * Each context records its results (without printing: a signal handler may record too);
 * the main thread prints one line per checked cell, "ok: <call> from <context>: <value>"
 * or "FAILED: ...", and exits non-zero on any mismatch. An alarm() watchdog turns a hang
 * into a failure naming the section and the last call recorded.
 *
 * Argument: a section (thread, log, callbacks, shadow, kick, signal) runs that one
 * alone; none runs them all. Each starts and ends with no patch in use. Run by
 * klp-ffi/tests/c_contexts.rs under both flavors. Needs GNU C (-std=gnu11). */
#include <klp.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (!(cond)) {                                                          \
			report();                                                       \
			printf("FAILED: %s (line %d)\n", #cond, __LINE__);              \
			fflush(stdout);                                                 \
			exit(1);                                                        \
		}                                                                       \
	} while (0)

/* Seconds a section may take before the watchdog calls it hung. */
#define WATCHDOG_S 20

/* A query result left unchecked (the value depends on timing the test does not fix). */
#define ANY INT_MIN

/* The state id that the patches "base" and "ctx" both carry. */
#define STATE_ID 7UL

/* Shadow ids: the variable every context looks up, and the 300-key regression's. */
#define S0_ID 0x50UL
#define MANY_A 0x51UL
#define MANY_B 0x52UL
#define MANY 300
#define PROBE_ID 0x53UL

static void report(void);

/* ---- results ---- */

/* One checked call: `what` in `ctx` gave `got`, wanted `want`. Recorded with an atomic
 * counter and plain stores only, so that a signal handler can record; read by the main
 * thread once the context is known to have returned. */
struct rec {
	const char *ctx;
	const char *what;
	long got;
	long want;
};

#define RECS 4096
static struct rec recs[RECS];
static atomic_int rec_n;
static int rec_shown;
static int failures;

static void rec(const char *ctx, const char *what, long got, long want)
{
	int i = atomic_fetch_add(&rec_n, 1);
	if (i >= RECS)
		return;
	recs[i].ctx = ctx;
	recs[i].what = what;
	recs[i].got = got;
	recs[i].want = want;
}

/* `got` is `want`, unless `want` is ANY; `what` names the call. */
#define EQ_AS(ctx, what, got, want)                                                     \
	do {                                                                            \
		long w_ = (want);                                                       \
		long g_ = (got);                                                        \
		if (w_ != ANY)                                                          \
			rec((ctx), (what), g_, w_);                                     \
	} while (0)

/* `call` (an int) returns `want`, unless `want` is ANY. */
#define EQ(ctx, call, want) EQ_AS((ctx), #call, (call), (want))

/* `cond` holds (recorded as 1 or 0). */
#define TRUE(ctx, cond) rec((ctx), #cond, !!(cond), 1)

/* `cond` holds; `what` says what that means. */
#define SAYS(ctx, what, cond) rec((ctx), (what), !!(cond), 1)

/* Print the results recorded since the last report. */
static void report(void)
{
	int n = atomic_load(&rec_n);
	if (n > RECS) {
		printf("FAILED: more than %d results\n", RECS);
		failures++;
		n = RECS;
	}
	for (; rec_shown < n; rec_shown++) {
		const struct rec *r = &recs[rec_shown];
		if (r->got == r->want) {
			printf("ok: %s from %s: %ld\n", r->what, r->ctx, r->got);
		} else {
			printf("FAILED: %s from %s: %ld, want %ld\n", r->what, r->ctx, r->got,
			       r->want);
			failures++;
		}
	}
	fflush(stdout);
}

/* ---- the watchdog ---- */

static const char *volatile section = "start";

static void put(const char *s)
{
	ssize_t r = write(1, s, strlen(s));
	(void)r;
}

static void on_alarm(int sig)
{
	(void)sig;
	put("FAILED: hung in section ");
	put(section);
	int n = atomic_load(&rec_n);
	if (n > 0 && n <= RECS && recs[n - 1].what) {
		put(", after ");
		put(recs[n - 1].what);
		put(" from ");
		put(recs[n - 1].ctx ? recs[n - 1].ctx : "?");
	}
	put("\n");
	_exit(2);
}

/* ---- the log ---- */

#define LOG_MAX 1024
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_lines[LOG_MAX][200];
static int log_n;
static int log_data; /* the handler's data pointer is its address */

static int log_count(const char *text)
{
	int n = 0;
	pthread_mutex_lock(&log_mu);
	for (int i = 0; i < log_n && i < LOG_MAX; i++)
		if (strstr(log_lines[i], text))
			n++;
	pthread_mutex_unlock(&log_mu);
	return n;
}

/* ---- patchable functions and patches ---- */

KLP_PATCHABLE(int, target, (int x), (x))
{
	return x + 1;
}

static int target_v2(int x)
{
	return x + 2;
}

KLP_PATCHABLE(int, base_fn, (int x), (x))
{
	return x + 10;
}

static int base_fn_v2(int x)
{
	return x + 20;
}

KLP_PATCHABLE(int, extra_fn, (int x), (x))
{
	return x + 100;
}

static int extra_fn_v2(int x)
{
	return x + 200;
}

/* A thread stays inside busy() or its replacement, running (not parked), until
 * busy_leave: it holds a transition up. */
static atomic_int busy_inside, busy_leave;

static void busy_wait(void)
{
	atomic_store(&busy_inside, 1);
	while (!atomic_load(&busy_leave))
		sched_yield();
	atomic_store(&busy_inside, 0);
}

KLP_PATCHABLE(int, busy, (int x), (x))
{
	busy_wait();
	return x + 1;
}

static int busy_v2(int x)
{
	busy_wait();
	return x + 2;
}

static int pre_patch(struct klp_object *obj);
static void post_patch(struct klp_object *obj);
static void pre_unpatch(struct klp_object *obj);
static void post_unpatch(struct klp_object *obj);

static struct klp_state base_states[] = { { .id = STATE_ID, .version = 1 }, { 0 } };
static struct klp_func base_funcs[] = { { .old_name = "base_fn", .new_func = (void *)base_fn_v2 },
					{ 0 } };
static struct klp_object base_objs[] = { { .name = NULL, .funcs = base_funcs }, { 0 } };
static struct klp_patch base_patch = { .name = "base", .objs = base_objs, .states = base_states };

/* "cbmod": an object of "ctx" beside the main program, loaded by hand; its one function
 * is registered by hand (by main). */
static int cb_fn(int x)
{
	return x + 1000;
}

static int cb_fn_v2(int x)
{
	return x + 2000;
}

static struct klp_site cb_fn_site;
static struct klp_func cbmod_funcs[] = { { .old_name = "cb_fn", .new_func = (void *)cb_fn_v2 },
					 { 0 } };

static struct klp_state ctx_states[] = { { .id = STATE_ID, .version = 1 }, { 0 } };
static struct klp_func ctx_funcs[] = { { .old_name = "target", .new_func = (void *)target_v2 },
				       { .old_name = "busy", .new_func = (void *)busy_v2 },
				       { 0 } };
static struct klp_object ctx_objs[] = {
	{ .name = NULL,
	  .funcs = ctx_funcs,
	  .callbacks = { .pre_patch = pre_patch,
			 .post_patch = post_patch,
			 .pre_unpatch = pre_unpatch,
			 .post_unpatch = post_unpatch } },
	{ .name = "cbmod",
	  .funcs = cbmod_funcs,
	  .callbacks = { .pre_patch = pre_patch,
			 .post_patch = post_patch,
			 .pre_unpatch = pre_unpatch,
			 .post_unpatch = post_unpatch } },
	{ 0 },
};
static struct klp_patch ctx_patch = { .name = "ctx", .objs = ctx_objs, .states = ctx_states };

static struct klp_func extra_funcs[] = {
	{ .old_name = "extra_fn", .new_func = (void *)extra_fn_v2 },
	{ 0 },
};
static struct klp_object extra_objs[] = { { .name = NULL, .funcs = extra_funcs }, { 0 } };
static struct klp_patch extra_patch = { .name = "extra", .objs = extra_objs };

/* Objects loaded and unloaded by hand: "held_mod" stays loaded through a section (a
 * refused klp_object_going must leave it so), "probe_mod" is loaded and unloaded by the
 * contexts where control operations work. */
static struct klp_object held_obj = { .name = "held_mod" };
static struct klp_object probe_obj = { .name = "probe_mod" };

/* The patch list while "base" and "ctx" are in use. */
static const char LIST_BASE_CTX[] = "base\0ctx\0"; /* and the final NUL: 10 bytes */

/* ---- shadow variables ---- */

/* S0: allocated by the main thread at the start of a section; every context finds it. */
static char s0_key;
static void *s0;

/* Keys and ids for the contexts' own variables, unique per call. */
static char keys[512];
static atomic_int key_n;
static atomic_int dtor_hits[512];
static atomic_ulong next_id = 0x1000;

static char *next_key(void)
{
	int n = atomic_fetch_add(&key_n, 2);
	CHECK(n + 1 < (int)sizeof keys);
	return &keys[n];
}

static int fill_ctor(void *obj, void *data, void *ctor_data)
{
	(void)obj;
	*(unsigned char *)data = (unsigned char)(uintptr_t)ctor_data;
	return 0;
}

static void count_dtor(void *obj, void *data)
{
	(void)data;
	char *k = obj;
	if (k >= keys && k < keys + sizeof keys)
		atomic_fetch_add(&dtor_hits[k - keys], 1);
}

/* ---- what each context should see ---- */

static const char *version;
static const char *deadlk_text;
static pthread_t main_tid;

struct want {
	/* klp_patch_enabled/_transition("ctx"), klp_object_patched("ctx", NULL), or ANY. */
	int enabled, transition, patched;
	/* The patch list (10 bytes: "base\0ctx\0\0"), or NULL for unchecked. */
	const char *list;
	/* klp_thread_patch_state() before and after klp_park/unpark/update, target(1). */
	int state, state_after, target;
	/* klp_get_prev_state(STATE_ID). */
	const struct klp_state *prev;
};

static void probe_basic(const char *ctx)
{
	SAYS(ctx, "klp_version(): the version", strcmp(klp_version(), version) == 0);
	SAYS(ctx, "klp_strerror(-EDEADLK): its text",
	     strcmp(klp_strerror(-EDEADLK), deadlk_text) == 0);
	SAYS(ctx, "klp_get_state(&ctx_patch, STATE_ID): &ctx_states[0]",
	     klp_get_state(&ctx_patch, STATE_ID) == &ctx_states[0]);
	SAYS(ctx, "klp_current(): the calling thread of this process",
	     klp_current() != NULL && klp_current()->tgid == (int)getpid());
}

static void probe_queries(const char *ctx, const struct want *w)
{
	EQ(ctx, klp_patch_enabled("ctx"), w->enabled);
	EQ(ctx, klp_patch_transition("ctx"), w->transition);
	EQ(ctx, klp_object_patched("ctx", NULL), w->patched);
	if (w->list) {
		char buf[64];
		memset(buf, 'x', sizeof buf);
		EQ(ctx, klp_patch_list(NULL, 0), 10);
		EQ(ctx, klp_patch_list(buf, sizeof buf), 10);
		SAYS(ctx, "klp_patch_list(buf, sizeof buf): \"base\", \"ctx\"",
		     memcmp(buf, LIST_BASE_CTX, 10) == 0);
		EQ(ctx, klp_patch_stack_order("ctx"), 2);
		EQ(ctx, klp_patch_replace("ctx"), 0);
	}
}

static void probe_thread(const char *ctx, const struct want *w)
{
	EQ(ctx, klp_thread_patch_state(), w->state);
	EQ(ctx, target(1), w->target);
	EQ(ctx, base_fn(1), 21);
	klp_park();
	klp_unpark();
	EQ_AS(ctx, "klp_park(), klp_unpark(), then klp_thread_patch_state()",
	      klp_thread_patch_state(), w->state_after);
	klp_update_patch_state();
	EQ_AS(ctx, "klp_update_patch_state(), then klp_thread_patch_state()",
	      klp_thread_patch_state(), w->state_after);
}

static void probe_shadow_get(const char *ctx)
{
	SAYS(ctx, "klp_shadow_get(&s0_key, S0_ID): S0", klp_shadow_get(&s0_key, S0_ID) == s0);
	SAYS(ctx, "klp_shadow_get(&s0_key, S0_ID + 1): NULL",
	     klp_shadow_get(&s0_key, S0_ID + 1) == NULL);
}

/* The shadow writes work: alloc, get, get_or_alloc, free and free_all. */
static void probe_shadow_ok(const char *ctx)
{
	char *k = next_key();
	unsigned long id = atomic_fetch_add(&next_id, 1);
	unsigned char *p = klp_shadow_alloc(k, id, 16, GFP_KERNEL, fill_ctor, (void *)0x5a);
	SAYS(ctx, "klp_shadow_alloc(k, id, .., fill_ctor, ..): a new variable, constructed",
	     p != NULL && p[0] == 0x5a);
	SAYS(ctx, "klp_shadow_get(k, id): that variable", klp_shadow_get(k, id) == p);
	SAYS(ctx, "klp_shadow_get_or_alloc(k, id, ..): that variable",
	     klp_shadow_get_or_alloc(k, id, 16, GFP_KERNEL, fill_ctor, NULL) == p);
	unsigned char *q = klp_shadow_get_or_alloc(k + 1, id, 16, GFP_ATOMIC, fill_ctor,
						   (void *)0x5b);
	SAYS(ctx, "klp_shadow_get_or_alloc(k + 1, id, .., fill_ctor, ..): a new variable",
	     q != NULL && q[0] == 0x5b);
	klp_shadow_free(k, id, count_dtor);
	SAYS(ctx, "klp_shadow_free(k, id, count_dtor): freed, the destructor called once",
	     klp_shadow_get(k, id) == NULL && atomic_load(&dtor_hits[k - keys]) == 1);
	klp_shadow_free_all(id, count_dtor);
	SAYS(ctx, "klp_shadow_free_all(id, count_dtor): freed, the destructor called once",
	     klp_shadow_get(k + 1, id) == NULL && atomic_load(&dtor_hits[k + 1 - keys]) == 1);
}

/* From a shadow constructor or destructor: everything but klp_shadow_get is refused. */
static void probe_shadow_refused(const char *ctx)
{
	char *k = next_key();
	unsigned long id = atomic_fetch_add(&next_id, 1);
	SAYS(ctx, "klp_shadow_alloc(k, id, ..): NULL (refused)",
	     klp_shadow_alloc(k, id, 16, GFP_KERNEL, NULL, NULL) == NULL);
	SAYS(ctx, "klp_shadow_get_or_alloc(k, id, ..): NULL (refused)",
	     klp_shadow_get_or_alloc(k, id, 16, GFP_KERNEL, NULL, NULL) == NULL);
	SAYS(ctx, "klp_shadow_get(k, id): NULL (nothing was attached)",
	     klp_shadow_get(k, id) == NULL);
	klp_shadow_free(&s0_key, S0_ID, count_dtor);
	SAYS(ctx, "klp_shadow_free(&s0_key, S0_ID, ..) (refused): S0 is still there",
	     klp_shadow_get(&s0_key, S0_ID) == s0);
	klp_shadow_free_all(S0_ID, NULL);
	SAYS(ctx, "klp_shadow_free_all(S0_ID, NULL) (refused): S0 is still there",
	     klp_shadow_get(&s0_key, S0_ID) == s0);
}

static void probe_misc(const char *ctx, const struct want *w)
{
	SAYS(ctx,
	     w->prev ? "klp_get_prev_state(STATE_ID): the state of \"base\""
		     : "klp_get_prev_state(STATE_ID): NULL (no transition)",
	     klp_get_prev_state(STATE_ID) == w->prev);
	EQ(ctx, klp_object_state(&ctx_objs[0]), KLP_MODULE_STATE_LIVE);
	EQ(ctx, klp_object_state(&held_obj), KLP_MODULE_STATE_LIVE);
	EQ(ctx, klp_object_refused("held_mod"), 0);
}

static void on_log(int level, const char *line, void *data);

static void probe_setters(const char *ctx)
{
	EQ(ctx, klp_set_log_handler(on_log, &log_data), 0);
	EQ(ctx, klp_set_thread_kick(NULL, NULL), 0);
	EQ(ctx, klp_set_retry_period(1), 0);
	EQ(ctx, klp_set_sync(KLP_SYNC_PREEMPT), -EBUSY); /* the engine exists */
}

/* klp_wait_transition from a line or callback of a control operation while no
 * transition is in progress (an enable before its transition starts, an object's load or
 * unload): it returns at once with 0, there being nothing to wait for (note (6) of the
 * table of klp.h). */
#define WAIT_NO_TRANSITION 0

/* Control operations where they return -EDEADLK at once, changing nothing. `wait`:
 * what klp_wait_transition returns (-EDEADLK, or WAIT_NO_TRANSITION). */
static void probe_control_deadlk(const char *ctx, int wait)
{
	EQ(ctx, klp_wait_transition(2000), wait);
	EQ(ctx, klp_enable_patch(&extra_patch), -EDEADLK);
	EQ(ctx, klp_patch_set_enabled("ctx", 0), -EDEADLK);
	EQ(ctx, klp_patch_set_enabled("ctx", 1), -EDEADLK);
	EQ(ctx, klp_patch_force("ctx"), -EDEADLK);
	EQ(ctx, klp_object_load("probe_mod"), -EDEADLK);
	EQ(ctx, klp_object_coming("probe_mod"), -EDEADLK);
	EQ(ctx, klp_object_unload("held_mod"), -EDEADLK);
	EQ(ctx, klp_module_load("/no/such/module.so", ""), -EDEADLK);
	EQ(ctx, klp_module_unload("held_mod"), -EDEADLK);
	klp_object_going("held_mod");
	rec(ctx, "klp_object_going(\"held_mod\") (refused), then klp_object_state(&held_obj)",
	    klp_object_state(&held_obj), KLP_MODULE_STATE_LIVE);
	EQ(ctx, klp_patch_enabled("extra"), -ENOENT);
	EQ(ctx, klp_object_state(&probe_obj), -ENOENT);
}

/* Control operations where they work. `busy`: another patch's transition is in
 * progress (an enable returns -EBUSY); else "extra" is enabled and disabled, waited
 * for. */
static void probe_control_ok(const char *ctx, int busy)
{
	if (busy) {
		EQ(ctx, klp_enable_patch(&extra_patch), -EBUSY);
		EQ(ctx, klp_patch_set_enabled("extra", 0), -ENOENT);
	} else {
		EQ(ctx, klp_enable_patch(&extra_patch), 0);
		EQ(ctx, klp_wait_transition(5000), 0);
		EQ(ctx, extra_fn(1), 201);
		EQ(ctx, klp_patch_force("extra"), -EINVAL); /* not in transition */
		EQ(ctx, klp_patch_set_enabled("extra", 0), 0);
		EQ(ctx, klp_wait_transition(5000), 0);
		EQ(ctx, extra_fn(1), 101);
		EQ(ctx, klp_patch_enabled("extra"), -ENOENT);
	}
	EQ(ctx, klp_patch_force("nosuch"), -ENOENT);
	EQ(ctx, klp_object_load("probe_mod"), 0);
	EQ(ctx, klp_object_state(&probe_obj), KLP_MODULE_STATE_LIVE);
	EQ(ctx, klp_object_unload("probe_mod"), 0);
	EQ(ctx, klp_object_state(&probe_obj), -ENOENT);
	EQ(ctx, klp_object_coming("probe_mod"), 0);
	EQ(ctx, klp_object_state(&probe_obj), KLP_MODULE_STATE_LIVE);
	klp_object_going("probe_mod");
	rec(ctx, "klp_object_going(\"probe_mod\"), then klp_object_state(&probe_obj)",
	    klp_object_state(&probe_obj), -ENOENT);
}

/* ---- set up and tear down a section ---- */

static void section_start(const char *name)
{
	section = name;
	alarm(WATCHDOG_S);
	printf("-- %s\n", name);
	fflush(stdout);
}

/* "base" in use (and "ctx" when `with_ctx`), S0 allocated, held_mod loaded. */
static void setup(int with_ctx)
{
	CHECK(klp_enable_patch(&base_patch) == 0);
	CHECK(klp_wait_transition(5000) == 0);
	if (with_ctx) {
		CHECK(klp_enable_patch(&ctx_patch) == 0);
		CHECK(klp_wait_transition(5000) == 0);
	}
	s0 = klp_shadow_alloc(&s0_key, S0_ID, 32, GFP_KERNEL, NULL, NULL);
	CHECK(s0 != NULL);
	CHECK(klp_object_load("held_mod") == 0);
}

static void teardown(void)
{
	report();
	if (klp_patch_enabled("ctx") == 1) {
		CHECK(klp_patch_set_enabled("ctx", 0) == 0);
		CHECK(klp_wait_transition(5000) == 0);
	}
	CHECK(klp_patch_set_enabled("base", 0) == 0);
	CHECK(klp_wait_transition(5000) == 0);
	CHECK(klp_patch_list(NULL, 0) == 1);
	CHECK(klp_object_unload("held_mod") == 0);
	klp_shadow_free(&s0_key, S0_ID, NULL);
	CHECK(klp_shadow_get(&s0_key, S0_ID) == NULL);
	CHECK(target(1) == 2 && base_fn(1) == 11 && extra_fn(1) == 101);
	alarm(0);
}

/* ---- an ordinary thread ---- */

static void section_thread(void)
{
	section_start("thread");
	setup(1);
	const char *ctx = "an ordinary thread";
	struct want w = { 1, 0, 1, LIST_BASE_CTX, -1, -1, 3, NULL };
	probe_queries(ctx, &w);
	probe_thread(ctx, &w);
	probe_basic(ctx);
	probe_shadow_get(ctx);
	probe_shadow_ok(ctx);
	EQ(ctx, klp_synchronize(), 0);
	probe_misc(ctx, &w); /* klp_get_prev_state warns: no transition */
	probe_setters(ctx);
	EQ(ctx, klp_wait_transition(0), 0);
	probe_control_ok(ctx, 0);
	teardown();
}

/* ---- log handlers ---- */

enum { LOG_OFF, LOG_ENABLE, LOG_SHADOW, LOG_KICK };
static atomic_int log_mode;
static atomic_int log_probed[16];
static atomic_int b_lines;
static int b_data;

static void on_log_b(int level, const char *line, void *data)
{
	(void)level;
	(void)line;
	if (data == &b_data)
		atomic_fetch_add(&b_lines, 1);
}

/* Whether this is the first time the line with `text` is probed. */
static int first(int slot, const char *line, const char *text)
{
	return strstr(line, text) && atomic_exchange(&log_probed[slot], 1) == 0;
}

/* The lines of enabling and disabling "ctx" and of loading and unloading "cbmod": a
 * control operation holds the control lock, so control operations return -EDEADLK, and
 * so does a wait while a transition is in progress. */
static void log_enable(const char *line)
{
	if (first(0, line, "livepatch: enabling patch 'ctx'")) {
		/* The patch exists: not yet enabled, not in transition, not patched. */
		const char *ctx = "log handler ('enabling patch')";
		struct want w = { 0, 0, 0, LIST_BASE_CTX, -1, -1, 2, NULL };
		probe_queries(ctx, &w);
		probe_thread(ctx, &w);
		probe_basic(ctx);
		probe_shadow_get(ctx);
		probe_shadow_ok(ctx);
		EQ(ctx, klp_synchronize(), 0);
		probe_misc(ctx, &w);
		probe_setters(ctx);
		probe_control_deadlk(ctx, WAIT_NO_TRANSITION);
	} else if (first(1, line, "livepatch: 'ctx': starting patching transition")) {
		/* As in the kernel, `enabled` is set after the start: 0 here. The enabling
		 * thread starts unpatched. */
		const char *ctx = "log handler ('starting patching transition')";
		struct want w = { 0, 1, 1, LIST_BASE_CTX, 0, 0, 2, &base_states[0] };
		probe_queries(ctx, &w);
		probe_thread(ctx, &w);
		probe_shadow_get(ctx);
		probe_shadow_ok(ctx);
		EQ(ctx, klp_synchronize(), 0);
		probe_misc(ctx, &w);
		probe_control_deadlk(ctx, -EDEADLK);
	} else if (first(2, line, "livepatch: 'ctx': patching complete")) {
		/* As in the kernel, the line comes before the transition ends. */
		const char *ctx = "log handler ('patching complete')";
		struct want w = { 1, 1, 1, LIST_BASE_CTX, -1, -1, 3, &base_states[0] };
		probe_queries(ctx, &w);
		probe_thread(ctx, &w);
		probe_shadow_get(ctx);
		EQ(ctx, klp_synchronize(), 0);
		probe_misc(ctx, &w);
		probe_control_deadlk(ctx, -EDEADLK);
	} else if (first(3, line, "livepatch: 'ctx': starting unpatching transition")) {
		/* `enabled` is cleared after the start; the thread starts patched. */
		const char *ctx = "log handler ('starting unpatching transition')";
		struct want w = { 1, 1, 1, LIST_BASE_CTX, 1, 1, 3, &base_states[0] };
		probe_queries(ctx, &w);
		probe_thread(ctx, &w);
		probe_shadow_get(ctx);
		probe_shadow_ok(ctx);
		EQ(ctx, klp_synchronize(), 0);
		probe_misc(ctx, &w);
		probe_setters(ctx);
		probe_control_deadlk(ctx, -EDEADLK);
	} else if (first(4, line, "livepatch: 'ctx': unpatching complete")) {
		const char *ctx = "log handler ('unpatching complete')";
		struct want w = { 0, 1, 0, LIST_BASE_CTX, -1, -1, 2, &base_states[0] };
		probe_queries(ctx, &w);
		probe_thread(ctx, &w);
		probe_shadow_get(ctx);
		EQ(ctx, klp_synchronize(), 0);
		probe_misc(ctx, &w);
		probe_control_deadlk(ctx, -EDEADLK);
	} else if (first(7, line, "livepatch: applying patch 'ctx' to loading module 'cbmod'") ||
		   first(8, line, "livepatch: reverting patch 'ctx' on unloading module 'cbmod'")) {
		/* An object's load or unload: a control operation, outside any transition. */
		const char *ctx = strstr(line, "applying")
					  ? "log handler ('applying patch to loading module')"
					  : "log handler ('reverting patch on unloading module')";
		struct want w = { 1, 0, 1, LIST_BASE_CTX, -1, -1, 3, NULL };
		EQ(ctx, klp_object_patched("ctx", "cbmod"), strstr(line, "applying") ? 0 : 1);
		probe_queries(ctx, &w);
		probe_thread(ctx, &w);
		probe_shadow_get(ctx);
		probe_shadow_ok(ctx);
		EQ(ctx, klp_synchronize(), 0);
		probe_misc(ctx, &w);
		probe_control_deadlk(ctx, WAIT_NO_TRANSITION);
	}
}

/* A line logged outside any control operation (a shadow warning): as from the thread. */
static void log_shadow(const char *line)
{
	if (!first(5, line, "livepatch: Duplicate shadow variable <"))
		return;
	const char *ctx = "log handler ('Duplicate shadow variable')";
	struct want w = { 1, 0, 1, LIST_BASE_CTX, -1, -1, 3, NULL };
	probe_queries(ctx, &w);
	probe_thread(ctx, &w);
	probe_basic(ctx);
	probe_shadow_get(ctx);
	probe_shadow_ok(ctx);
	EQ(ctx, klp_synchronize(), 0);
	probe_misc(ctx, &w);
	probe_setters(ctx);
	/* Another handler takes the next line (logged from here), then this one is back. */
	EQ(ctx, klp_set_log_handler(on_log_b, &b_data), 0);
	TRUE(ctx, klp_shadow_alloc(&s0_key, S0_ID, 32, GFP_KERNEL, NULL, NULL) == NULL);
	EQ(ctx, klp_set_log_handler(on_log, &log_data), 0);
	rec(ctx, "klp_set_log_handler(on_log_b, ..): lines on_log_b received",
	    atomic_load(&b_lines), 1);
	EQ(ctx, klp_wait_transition(0), 0);
	probe_control_ok(ctx, 0);
}

/* The worker's line before it kicks (it holds the control lock). */
static void log_kick(const char *line)
{
	if (!first(6, line, "livepatch: signaling remaining tasks"))
		return;
	const char *ctx = "log handler ('signaling remaining tasks')";
	struct want w = { 1, 1, 1, LIST_BASE_CTX, ANY, ANY, ANY, &base_states[0] };
	probe_queries(ctx, &w);
	probe_shadow_get(ctx);
	probe_shadow_ok(ctx);
	EQ(ctx, klp_synchronize(), 0);
	probe_misc(ctx, &w);
	probe_control_deadlk(ctx, -EDEADLK);
}

static void on_log(int level, const char *line, void *data)
{
	(void)level;
	if (data != &log_data)
		rec("a log handler", "its data pointer", 0, 1);
	pthread_mutex_lock(&log_mu);
	if (log_n < LOG_MAX)
		snprintf(log_lines[log_n], sizeof log_lines[0], "%s", line);
	log_n++;
	pthread_mutex_unlock(&log_mu);
	switch (atomic_load(&log_mode)) {
	case LOG_ENABLE:
		log_enable(line);
		break;
	case LOG_SHADOW:
		log_shadow(line);
		break;
	case LOG_KICK:
		log_kick(line);
		break;
	}
}

static void section_log(void)
{
	section_start("log");
	setup(0);
	for (int i = 0; i < 16; i++)
		atomic_store(&log_probed[i], 0);
	atomic_store(&log_mode, LOG_ENABLE);
	CHECK(klp_enable_patch(&ctx_patch) == 0);
	CHECK(klp_wait_transition(5000) == 0);
	atomic_store(&log_mode, LOG_SHADOW);
	CHECK(klp_shadow_alloc(&s0_key, S0_ID, 32, GFP_KERNEL, NULL, NULL) == NULL);
	atomic_store(&log_mode, LOG_ENABLE);
	CHECK(klp_object_load("cbmod") == 0);
	CHECK(klp_object_unload("cbmod") == 0);
	CHECK(klp_patch_set_enabled("ctx", 0) == 0);
	CHECK(klp_wait_transition(5000) == 0);
	atomic_store(&log_mode, LOG_OFF);
	for (int i = 0; i < 8; i++)
		CHECK(i == 6 || atomic_load(&log_probed[i]) == 1);
	teardown();
}

/* ---- object callbacks ---- */

static atomic_int cb_mode;
static atomic_int cb_calls[8];
static pthread_t holder_tid;

/* "pre_patch (enabling thread)", "post_patch (transition worker)", ... */
static const char *cb_ctx(const char *const names[2])
{
	return pthread_equal(pthread_self(), main_tid) ? names[0] : names[1];
}

static void cb_common(const char *ctx, const struct want *w)
{
	probe_queries(ctx, w);
	probe_thread(ctx, w);
	probe_basic(ctx);
	probe_shadow_get(ctx);
	probe_shadow_ok(ctx);
	EQ(ctx, klp_synchronize(), 0);
	probe_misc(ctx, w);
	probe_setters(ctx);
	probe_control_deadlk(ctx, -EDEADLK);
}

/* The callbacks of "cbmod" when it is loaded or unloaded while "ctx" is in use: no
 * transition is in progress. `patched`: klp_object_patched("ctx", "cbmod"). */
static void cb_module(int i, const char *ctx, int patched)
{
	atomic_fetch_add(&cb_calls[4 + i], 1);
	TRUE(ctx, pthread_equal(pthread_self(), main_tid));
	EQ(ctx, klp_object_patched("ctx", "cbmod"), patched);
	struct want w = { 1, 0, 1, LIST_BASE_CTX, -1, -1, 3, NULL };
	probe_queries(ctx, &w);
	probe_thread(ctx, &w);
	probe_basic(ctx);
	probe_shadow_get(ctx);
	probe_shadow_ok(ctx);
	EQ(ctx, klp_synchronize(), 0);
	probe_misc(ctx, &w); /* klp_get_prev_state warns: no transition */
	probe_setters(ctx);
	probe_control_deadlk(ctx, WAIT_NO_TRANSITION);
}

static int pre_patch(struct klp_object *obj)
{
	static const char *const names[2] = { "pre_patch (enabling thread)",
					      "pre_patch (another thread)" };
	if (!atomic_load(&cb_mode))
		return 0;
	if (obj == &ctx_objs[1]) {
		cb_module(0, "pre_patch (object load)", 0);
		return 0;
	}
	atomic_fetch_add(&cb_calls[0], 1);
	const char *ctx = cb_ctx(names);
	TRUE(ctx, obj == &ctx_objs[0]);
	/* In transition, not yet enabled nor patched; the thread starts unpatched. */
	struct want w = { 0, 1, 0, LIST_BASE_CTX, 0, 0, 2, &base_states[0] };
	cb_common(ctx, &w);
	return 0;
}

static void post_patch(struct klp_object *obj)
{
	static const char *const names[2] = { "post_patch (enabling thread)",
					      "post_patch (transition worker)" };
	if (!atomic_load(&cb_mode))
		return;
	if (obj == &ctx_objs[1]) {
		cb_module(1, "post_patch (object load)", 1);
		return;
	}
	atomic_fetch_add(&cb_calls[1], 1);
	const char *ctx = cb_ctx(names);
	/* Enabled and patched first: these used to hang. */
	EQ(ctx, klp_patch_enabled("ctx"), 1);
	EQ(ctx, klp_object_patched("ctx", NULL), 1);
	TRUE(ctx, obj == &ctx_objs[0]);
	if (!pthread_equal(pthread_self(), main_tid))
		TRUE(ctx, !pthread_equal(pthread_self(), holder_tid));
	/* As in the kernel, still the transition's patch; every thread idle. */
	struct want w = { 1, 1, 1, LIST_BASE_CTX, -1, -1, 3, &base_states[0] };
	cb_common(ctx, &w);
}

static void pre_unpatch(struct klp_object *obj)
{
	static const char *const names[2] = { "pre_unpatch (disabling thread)",
					      "pre_unpatch (another thread)" };
	if (!atomic_load(&cb_mode))
		return;
	if (obj == &ctx_objs[1]) {
		cb_module(2, "pre_unpatch (object unload)", 1);
		return;
	}
	atomic_fetch_add(&cb_calls[2], 1);
	const char *ctx = cb_ctx(names);
	TRUE(ctx, obj == &ctx_objs[0]);
	/* Still enabled and patched; the thread starts patched. */
	struct want w = { 1, 1, 1, LIST_BASE_CTX, 1, 1, 3, &base_states[0] };
	cb_common(ctx, &w);
}

static void post_unpatch(struct klp_object *obj)
{
	static const char *const names[2] = { "post_unpatch (disabling thread)",
					      "post_unpatch (transition worker)" };
	if (!atomic_load(&cb_mode))
		return;
	if (obj == &ctx_objs[1]) {
		cb_module(3, "post_unpatch (object unload)", 0);
		return;
	}
	atomic_fetch_add(&cb_calls[3], 1);
	const char *ctx = cb_ctx(names);
	TRUE(ctx, obj == &ctx_objs[0]);
	if (!pthread_equal(pthread_self(), main_tid))
		TRUE(ctx, !pthread_equal(pthread_self(), holder_tid));
	/* Disabled, unpatched, still listed until the transition ends. */
	struct want w = { 0, 1, 0, LIST_BASE_CTX, -1, -1, 2, &base_states[0] };
	cb_common(ctx, &w);
}

static void *holder_main(void *arg)
{
	(void)arg;
	int r = busy(1);
	return (void *)(intptr_t)r;
}

/* A thread inside busy() holds the transition until released: the callback at its end
 * runs on the transition worker. */
static void holder_start(void)
{
	atomic_store(&busy_leave, 0);
	CHECK(pthread_create(&holder_tid, NULL, holder_main, NULL) == 0);
	while (!atomic_load(&busy_inside))
		sched_yield();
}

static int holder_finish(void)
{
	void *r;
	atomic_store(&busy_leave, 1);
	CHECK(pthread_join(holder_tid, &r) == 0);
	return (int)(intptr_t)r;
}

static void section_callbacks(void)
{
	section_start("callbacks");
	setup(0);
	atomic_store(&cb_mode, 1);
	/* Every thread can switch at once: the callbacks run on the calling thread. */
	CHECK(klp_enable_patch(&ctx_patch) == 0);
	CHECK(klp_wait_transition(5000) == 0);
	CHECK(klp_patch_set_enabled("ctx", 0) == 0);
	CHECK(klp_wait_transition(5000) == 0);
	for (int i = 0; i < 4; i++)
		CHECK(atomic_load(&cb_calls[i]) == 1);
	report();
	/* A thread inside busy() holds each transition: post_patch and post_unpatch run on
	 * the worker once it leaves. */
	holder_start();
	CHECK(klp_enable_patch(&ctx_patch) == 0);
	CHECK(klp_wait_transition(20) == -ETIMEDOUT);
	CHECK(atomic_load(&cb_calls[1]) == 1);
	CHECK(holder_finish() == 2);
	CHECK(klp_wait_transition(5000) == 0);
	holder_start();
	CHECK(klp_patch_set_enabled("ctx", 0) == 0);
	CHECK(klp_wait_transition(20) == -ETIMEDOUT);
	CHECK(atomic_load(&cb_calls[3]) == 1);
	CHECK(holder_finish() == 3);
	CHECK(klp_wait_transition(5000) == 0);
	for (int i = 0; i < 4; i++)
		CHECK(atomic_load(&cb_calls[i]) == 2);
	report();
	/* Loading and unloading an object of the patch in use: its callbacks run on the
	 * loading thread, outside any transition. */
	atomic_store(&cb_mode, 0);
	CHECK(klp_enable_patch(&ctx_patch) == 0);
	CHECK(klp_wait_transition(5000) == 0);
	atomic_store(&cb_mode, 1);
	CHECK(klp_object_load("cbmod") == 0);
	CHECK(klp_object_patched("ctx", "cbmod") == 1);
	CHECK(klp_object_unload("cbmod") == 0);
	CHECK(klp_object_patched("ctx", "cbmod") == 0);
	atomic_store(&cb_mode, 0);
	for (int i = 0; i < 8; i++)
		CHECK(atomic_load(&cb_calls[i]) == (i < 4 ? 2 : 1));
	teardown();
}

/* ---- shadow constructors and destructors ---- */

static void *many_a[MANY];
static char many_keys[MANY];
static atomic_int many_found, many_all;

/* Each constructor of <many_keys[i], MANY_B> looks up <many_keys[i], MANY_A>, and the
 * last one every <many_keys[j], MANY_A>. */
static int find_ctor(void *obj, void *data, void *ctor_data)
{
	(void)obj;
	(void)data;
	int i = (int)(intptr_t)ctor_data;
	if (klp_shadow_get(&many_keys[i], MANY_A) == many_a[i])
		atomic_fetch_add(&many_found, 1);
	if (i == MANY - 1)
		for (int j = 0; j < MANY; j++)
			if (klp_shadow_get(&many_keys[j], MANY_A) == many_a[j])
				atomic_fetch_add(&many_all, 1);
	return 0;
}

static void shadow_callback(const char *ctx)
{
	struct want w = { 1, 0, 1, LIST_BASE_CTX, -1, -1, 3, NULL };
	probe_queries(ctx, &w);
	probe_thread(ctx, &w);
	probe_basic(ctx);
	probe_shadow_get(ctx);
	probe_shadow_refused(ctx);
	EQ(ctx, klp_synchronize(), 0);
	probe_misc(ctx, &w); /* klp_get_prev_state warns: no transition */
	probe_setters(ctx);
	/* No transition in progress here: the wait returns 0 at once (note (6)). */
	probe_control_deadlk(ctx, WAIT_NO_TRANSITION);
}

static int probe_ctor(void *obj, void *data, void *ctor_data)
{
	(void)obj;
	(void)data;
	shadow_callback(ctor_data);
	return 0;
}

static void probe_dtor(void *obj, void *data)
{
	(void)obj;
	(void)data;
	shadow_callback("shadow destructor (klp_shadow_free)");
}

/* The short version, for the constructor of get_or_alloc and free_all's destructor. */
static int probe_ctor_short(void *obj, void *data, void *ctor_data)
{
	(void)obj;
	(void)data;
	const char *ctx = ctor_data;
	probe_shadow_get(ctx);
	probe_shadow_refused(ctx);
	EQ(ctx, klp_wait_transition(2000), WAIT_NO_TRANSITION); /* no transition: note (6) */
	EQ(ctx, klp_enable_patch(&extra_patch), -EDEADLK);
	EQ(ctx, klp_patch_enabled("ctx"), 1);
	return 0;
}

static void probe_dtor_short(void *obj, void *data)
{
	probe_ctor_short(obj, data, "shadow destructor (klp_shadow_free_all)");
}

static void section_shadow(void)
{
	section_start("shadow");
	setup(1);
	/* The regression: from a constructor, variables allocated before are found. */
	for (int i = 0; i < MANY; i++) {
		many_a[i] = klp_shadow_alloc(&many_keys[i], MANY_A, 8, GFP_KERNEL, NULL, NULL);
		CHECK(many_a[i] != NULL);
	}
	for (int i = 0; i < MANY; i++)
		CHECK(klp_shadow_alloc(&many_keys[i], MANY_B, 8, GFP_KERNEL, find_ctor,
				       (void *)(intptr_t)i) != NULL);
	rec("shadow constructors (300 keys)",
	    "klp_shadow_get of the constructor's key allocated before: found", many_found, MANY);
	rec("a shadow constructor", "klp_shadow_get of 300 keys allocated before: found",
	    many_all, MANY);
	klp_shadow_free_all(MANY_A, NULL);
	klp_shadow_free_all(MANY_B, NULL);
	report();

	static char pkey[3];
	void *p = klp_shadow_alloc(&pkey[0], PROBE_ID, 16, GFP_KERNEL, probe_ctor,
				   "shadow constructor (klp_shadow_alloc)");
	CHECK(p != NULL && klp_shadow_get(&pkey[0], PROBE_ID) == p);
	void *q = klp_shadow_get_or_alloc(&pkey[1], PROBE_ID, 16, GFP_KERNEL, probe_ctor_short,
					  "shadow constructor (klp_shadow_get_or_alloc)");
	CHECK(q != NULL && klp_shadow_get(&pkey[1], PROBE_ID) == q);
	klp_shadow_free(&pkey[0], PROBE_ID, probe_dtor);
	CHECK(klp_shadow_get(&pkey[0], PROBE_ID) == NULL);
	klp_shadow_free_all(PROBE_ID, probe_dtor_short);
	CHECK(klp_shadow_get(&pkey[1], PROBE_ID) == NULL);
	CHECK(klp_shadow_get(&s0_key, S0_ID) == s0);
	teardown();
}

/* ---- kicks ---- */

static int kick_data;
static atomic_int kick_calls, kick_done;

/* Called on the transition worker, with no lock of the engine held: queries and control
 * operations work, a wait returns -EDEADLK. */
static void on_kick(void *data)
{
	if (atomic_fetch_add(&kick_calls, 1) != 0)
		return;
	const char *ctx = "a kick";
	TRUE(ctx, data == &kick_data);
	TRUE(ctx, !pthread_equal(pthread_self(), main_tid));
	/* The queries first: these used to hang. */
	struct want w = { 1, 1, 1, LIST_BASE_CTX, ANY, ANY, ANY, &base_states[0] };
	probe_queries(ctx, &w);
	/* The worker becomes a task at its first switch point; born during the
	 * transition, it starts at its target (patched). */
	klp_update_patch_state();
	w.state = w.state_after = 1;
	w.target = 3;
	probe_thread(ctx, &w);
	probe_basic(ctx);
	probe_shadow_get(ctx);
	probe_shadow_ok(ctx);
	EQ(ctx, klp_synchronize(), 0);
	probe_misc(ctx, &w);
	probe_setters(ctx);
	EQ(ctx, klp_wait_transition(2000), -EDEADLK);
	probe_control_ok(ctx, 1);
	/* Let the thread leave busy(): the transition completes. */
	atomic_store(&kick_done, 1);
	atomic_store(&busy_leave, 1);
}

static void *kicked_main(void *arg)
{
	(void)arg;
	CHECK(klp_set_thread_kick(on_kick, &kick_data) == 0);
	int r = busy(1);
	CHECK(klp_set_thread_kick(NULL, NULL) == 0);
	return (void *)(intptr_t)r;
}

static void section_kick(void)
{
	section_start("kick");
	setup(0);
	atomic_store(&log_probed[6], 0);
	atomic_store(&log_mode, LOG_KICK);
	CHECK(klp_set_retry_period(1) == 0);
	atomic_store(&busy_leave, 0);
	pthread_t t;
	CHECK(pthread_create(&t, NULL, kicked_main, NULL) == 0);
	while (!atomic_load(&busy_inside))
		sched_yield();
	/* The thread inside busy() holds the transition: after 15 attempts, the worker
	 * signals it. */
	CHECK(klp_enable_patch(&ctx_patch) == 0);
	while (!atomic_load(&kick_done))
		sched_yield();
	CHECK(klp_wait_transition(5000) == 0);
	void *r;
	CHECK(pthread_join(t, &r) == 0);
	CHECK((int)(intptr_t)r == 2); /* it was inside the original */
	atomic_store(&log_mode, LOG_OFF);
	CHECK(log_count("livepatch: signaling remaining tasks") >= 1);
	CHECK(atomic_load(&log_probed[6]) == 1);
	teardown();
}

/* ---- signal handlers ---- */

enum { SIG_IDLE = 1, SIG_INSIDE, SIG_PARKED };
static atomic_int sig_phase, sig_handled;
static atomic_int sig_ready, sig_go_busy, sig_stop, sig_parked;
static pthread_t sig_tid;

/* Only what the table allows in a signal handler: no locks, no allocation. */
static void on_usr1(int sig)
{
	(void)sig;
	int phase = atomic_load(&sig_phase);
	if (phase == SIG_IDLE || phase == SIG_PARKED) {
		/* Outside any transition, "ctx" in use. */
		const char *ctx = phase == SIG_IDLE ? "a signal handler (running thread)"
						    : "a signal handler (parked thread)";
		struct want w = { 1, 0, 1, LIST_BASE_CTX, -1, -1, 3, NULL };
		probe_queries(ctx, &w);
		probe_thread(ctx, &w);
		probe_basic(ctx);
		probe_shadow_get(ctx);
		EQ(ctx, klp_synchronize(), 0);
		EQ(ctx, klp_wait_transition(0), 0);
	} else if (phase == SIG_INSIDE) {
		/* The thread is inside busy_v2() while "ctx" is being unpatched: it keeps
		 * its state (patched) and does not switch from here. */
		const char *ctx = "a signal handler (thread inside a replaced function)";
		struct want w = { 0, 1, 1, LIST_BASE_CTX, 1, 1, 3, NULL };
		probe_queries(ctx, &w);
		probe_thread(ctx, &w);
		probe_basic(ctx);
		probe_shadow_get(ctx);
		EQ(ctx, klp_synchronize(), 0);
		EQ(ctx, klp_wait_transition(0), -ETIMEDOUT);
	}
	atomic_fetch_add(&sig_handled, 1);
}

static void *sig_main(void *arg)
{
	(void)arg;
	klp_update_patch_state(); /* a task of the engine from here */
	atomic_store(&sig_ready, 1);
	while (!atomic_load(&sig_go_busy))
		sched_yield();
	int r = busy(1);
	klp_park();
	atomic_store(&sig_parked, 1);
	while (!atomic_load(&sig_stop))
		sched_yield();
	klp_unpark();
	return (void *)(intptr_t)r;
}

static void signal_and_wait(int phase)
{
	int n = atomic_load(&sig_handled);
	atomic_store(&sig_phase, phase);
	CHECK(pthread_kill(sig_tid, SIGUSR1) == 0);
	while (atomic_load(&sig_handled) == n)
		sched_yield();
}

static void section_signal(void)
{
	section_start("signal");
	setup(1);
	struct sigaction sa = { .sa_handler = on_usr1 };
	sigemptyset(&sa.sa_mask);
	CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
	atomic_store(&busy_leave, 0);
	CHECK(pthread_create(&sig_tid, NULL, sig_main, NULL) == 0);
	while (!atomic_load(&sig_ready))
		sched_yield();
	/* A running thread outside any patchable function, no transition. */
	signal_and_wait(SIG_IDLE);
	/* A thread inside busy_v2() holds the unpatching transition of "ctx". */
	atomic_store(&sig_go_busy, 1);
	while (!atomic_load(&busy_inside))
		sched_yield();
	CHECK(klp_patch_set_enabled("ctx", 0) == 0);
	signal_and_wait(SIG_INSIDE);
	CHECK(klp_wait_transition(20) == -ETIMEDOUT); /* the handler switched nothing */
	atomic_store(&busy_leave, 1);
	CHECK(klp_wait_transition(5000) == 0);
	/* A parked thread: the enable switches it from outside. */
	while (!atomic_load(&sig_parked))
		sched_yield();
	CHECK(klp_enable_patch(&ctx_patch) == 0);
	CHECK(klp_wait_transition(5000) == 0);
	signal_and_wait(SIG_PARKED);
	atomic_store(&sig_stop, 1);
	void *r;
	CHECK(pthread_join(sig_tid, &r) == 0);
	CHECK((int)(intptr_t)r == 3); /* it was inside the replacement */
	sa.sa_handler = SIG_DFL;
	CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
	teardown();
}

/* ---- main ---- */

static const struct {
	const char *name;
	void (*run)(void);
} sections[] = {
	{ "thread", section_thread },	  { "log", section_log },
	{ "callbacks", section_callbacks }, { "shadow", section_shadow },
	{ "kick", section_kick },	  { "signal", section_signal },
};

int main(int argc, char **argv)
{
	main_tid = pthread_self();
	/* The main thread is a task of the engine from here (as every kernel task is one):
	 * klp_thread_patch_state() of a thread that never made a patchable call, parked or
	 * reached a switch point is -1 even during a transition. */
	klp_update_patch_state();
	klp_site_register(&cb_fn_site, "cbmod", "cb_fn", (void *)cb_fn);
	struct sigaction sa = { .sa_handler = on_alarm };
	sigemptyset(&sa.sa_mask);
	CHECK(sigaction(SIGALRM, &sa, NULL) == 0);
	CHECK(klp_set_log_handler(on_log, &log_data) == 0);
	CHECK(klp_set_retry_period(1) == 0);
	version = klp_version();
	deadlk_text = klp_strerror(-EDEADLK);
	int ran = 0;
	for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
		if (argc > 1 && strcmp(argv[1], sections[i].name) != 0)
			continue;
		sections[i].run();
		ran++;
	}
	CHECK(ran > 0);
	report();
	if (failures) {
		printf("FAILED: %d checks\n", failures);
		return 1;
	}
	printf("done\n");
	return 0;
}
