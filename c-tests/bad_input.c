/* Every export of klp.h given bad input from C: NULL pointers, unknown names, names that
 * are not UTF-8, structs the library can tell are wrong, calls in the wrong state. Each
 * call must return the kernel's errno (or the documented value) and change nothing: the
 * patch does not exist, the function runs what it ran, the kernel's log line (or none)
 * is printed. klp_enter and klp_leave are left out (no checks by contract: the macros
 * call them). Run by klp-ffi/tests/c_bad_input.rs. Needs GNU C (-std=gnu11). */
#include <klp.h>

#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (!(cond)) {                                                          \
			printf("FAILED: %s (line %d)\n", #cond, __LINE__);              \
			fflush(stdout);                                                 \
			exit(1);                                                        \
		}                                                                       \
	} while (0)

/* The kernel's errnos, negative. */
#define EINVAL_ (-22)
#define ENOENT_ (-2)
#define EEXIST_ (-17)
#define EBUSY_ (-16)
#define ENODEV_ (-19)
#define ETIMEDOUT_ (-110)

/* Check that `call` returns `want`, and say so. */
#define EXPECT(call, want)                                                              \
	do {                                                                            \
		int r_ = (call);                                                        \
		if (r_ != (want)) {                                                     \
			printf("FAILED: %s = %d, want %d (line %d)\n", #call, r_,       \
			       (want), __LINE__);                                       \
			fflush(stdout);                                                 \
			exit(1);                                                        \
		}                                                                       \
	} while (0)

static const char NOT_UTF8[] = "bad\xff\xfe";

/* ---- the log ---- */

#define LOG_MAX 256
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_lines[LOG_MAX][320];
static int log_levels[LOG_MAX];
static int log_n;

static void handler(int level, const char *line, void *data)
{
	CHECK(data == (void *)&log_n);
	pthread_mutex_lock(&log_mu);
	if (log_n < LOG_MAX) {
		snprintf(log_lines[log_n], sizeof log_lines[0], "%s", line);
		log_levels[log_n] = level;
	}
	log_n++;
	pthread_mutex_unlock(&log_mu);
}

static void log_clear(void)
{
	pthread_mutex_lock(&log_mu);
	log_n = 0;
	pthread_mutex_unlock(&log_mu);
}

/* Lines at `level` (or any level for -1) containing `text`. */
static int log_count(int level, const char *text)
{
	int n = 0;
	pthread_mutex_lock(&log_mu);
	for (int i = 0; i < log_n && i < LOG_MAX; i++)
		if ((level < 0 || log_levels[i] == level) && strstr(log_lines[i], text))
			n++;
	pthread_mutex_unlock(&log_mu);
	return n;
}

static int log_total(void)
{
	pthread_mutex_lock(&log_mu);
	int n = log_n;
	pthread_mutex_unlock(&log_mu);
	return n;
}

/* ---- the patchable functions ---- */

KLP_PATCHABLE(int, target, (int x), (x))
{
	return x + 1;
}

static int target_v2(int x)
{
	return x + 2;
}

static int target_v3(int x)
{
	return x + 3;
}

/* "twin": this one, and a second site of the same name registered by hand. */
KLP_PATCHABLE(int, twin, (int x), (x))
{
	return x + 10;
}

static int twin_b(int x)
{
	return x + 20;
}

static struct klp_site twin_b_site;

/* A holder thread spins inside held(), running, to hold a transition up. */
static atomic_int holding, hold_release;

KLP_PATCHABLE_VOID(held, (void), ())
{
	atomic_store(&holding, 1);
	while (!atomic_load(&hold_release))
		sched_yield();
	atomic_store(&holding, 0);
}

static void held_v2(void)
{
}

static void *holder_main(void *arg)
{
	(void)arg;
	held();
	return NULL;
}

/* What target(1) returns now. */
static int target_now = 2;

/* A failed enable changed nothing: no such patch (unless `name` is in use), target runs
 * what it ran, no transition, and "enabling patch" was not printed. */
static void unchanged(const char *name)
{
	if (name) {
		EXPECT(klp_patch_enabled(name), ENOENT_);
		EXPECT(klp_patch_transition(name), ENOENT_);
	}
	EXPECT(target(1), target_now);
	EXPECT(klp_thread_patch_state(), -1);
	EXPECT(klp_wait_transition(0), 0);
	CHECK(log_count(-1, "enabling patch") == 0);
}

/* Enable a copy of the one-func patch {old_name, new_func, sympos} named `name`; expect
 * `want`, and nothing changed. */
static void enable_one(const char *name, const char *old_name, void *new_func,
		       unsigned long sympos, int want, const char *what)
{
	struct klp_func funcs[] = {
		{ .old_name = old_name, .new_func = new_func, .old_sympos = sympos },
		{ 0 },
	};
	struct klp_object objs[] = { { .name = NULL, .funcs = funcs }, { 0 } };
	struct klp_patch p = { .name = name, .objs = objs };
	log_clear();
	EXPECT(klp_enable_patch(&p), want);
	unchanged(name);
	printf("ok: klp_enable_patch, %s: %d (%s)\n", what, want, klp_strerror(want));
}

static void enable_patch(struct klp_patch *p, int want, const char *what)
{
	log_clear();
	EXPECT(klp_enable_patch(p), want);
	unchanged(p && p->name && strcmp(p->name, NOT_UTF8) != 0 ? p->name : NULL);
	printf("ok: klp_enable_patch, %s: %d (%s)\n", what, want, klp_strerror(want));
}

/* ---- the control surface with unknown names ---- */

static void control_names(void)
{
	const char *unknown[] = { "nope", "", NOT_UTF8 };
	char one = 'x';
	EXPECT(klp_patch_list(NULL, 4), EINVAL_);
	EXPECT(klp_patch_list(NULL, 0), 1); /* no patch: the empty list, one NUL */
	EXPECT(klp_patch_list(&one, 0), 1);
	CHECK(one == 'x'); /* too short: nothing written */
	EXPECT(klp_patch_enabled(NULL), EINVAL_);
	EXPECT(klp_patch_set_enabled(NULL, 0), EINVAL_);
	EXPECT(klp_patch_set_enabled(NULL, 1), EINVAL_);
	EXPECT(klp_patch_transition(NULL), EINVAL_);
	EXPECT(klp_patch_force(NULL), EINVAL_);
	EXPECT(klp_patch_replace(NULL), EINVAL_);
	EXPECT(klp_patch_stack_order(NULL), EINVAL_);
	EXPECT(klp_object_patched(NULL, NULL), EINVAL_);
	EXPECT(klp_object_patched(NULL, "vmlinux"), EINVAL_);
	EXPECT(klp_object_patched(NULL, NOT_UTF8), EINVAL_);
	for (unsigned i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
		const char *n = unknown[i];
		EXPECT(klp_patch_enabled(n), ENOENT_);
		EXPECT(klp_patch_set_enabled(n, 0), ENOENT_);
		EXPECT(klp_patch_set_enabled(n, 1), ENOENT_);
		EXPECT(klp_patch_transition(n), ENOENT_);
		EXPECT(klp_patch_force(n), ENOENT_);
		EXPECT(klp_patch_replace(n), ENOENT_);
		EXPECT(klp_patch_stack_order(n), ENOENT_);
		EXPECT(klp_object_patched(n, NULL), ENOENT_);
		EXPECT(klp_object_patched(n, "vmlinux"), ENOENT_);
		EXPECT(klp_object_patched(n, NOT_UTF8), ENOENT_);
	}
	EXPECT(target(1), 2);
	printf("ok: control functions: NULL names -EINVAL, unknown, empty and non-UTF-8 "
	       "names -ENOENT\n");
}

/* ---- klp_enable_patch ---- */

static int refuse(struct klp_object *obj)
{
	(void)obj;
	return ENODEV_;
}

static void enable_bad_structs(void)
{
	char long_name[600];

	enable_patch(NULL, EINVAL_, "NULL patch");
	{
		struct klp_func funcs[] = { { .old_name = "target", .new_func = (void *)target_v2 },
					    { 0 } };
		struct klp_object objs[] = { { .name = NULL, .funcs = funcs }, { 0 } };
		struct klp_patch p = { .name = NULL, .objs = objs };
		enable_patch(&p, EINVAL_, "NULL name");
		struct klp_patch q = { .name = "nullobjs", .objs = NULL };
		enable_patch(&q, EINVAL_, "NULL objs");
		struct klp_patch u = { .name = NOT_UTF8, .objs = objs };
		enable_patch(&u, EINVAL_, "a patch name that is not UTF-8");
		EXPECT(klp_patch_enabled(NOT_UTF8), ENOENT_);
		struct klp_patch e = { .name = "", .objs = objs };
		enable_patch(&e, EINVAL_, "an empty patch name");
		memset(long_name, 'p', 56);
		long_name[56] = 0;
		struct klp_patch l = { .name = long_name, .objs = objs };
		enable_patch(&l, EINVAL_, "a patch name of MODULE_NAME_LEN characters");
	}
	{
		/* A named object without funcs is an entry (not the terminator). */
		struct klp_func funcs[] = { { .old_name = "target", .new_func = (void *)target_v2 },
					    { 0 } };
		struct klp_object objs[] = { { .name = NULL, .funcs = funcs },
					     { .name = "libx", .funcs = NULL },
					     { 0 } };
		struct klp_patch p = { .name = "nullfuncs", .objs = objs };
		enable_patch(&p, EINVAL_, "an object with NULL funcs");
		struct klp_object objs2[] = { { .name = NOT_UTF8, .funcs = funcs }, { 0 } };
		struct klp_patch q = { .name = "objutf8", .objs = objs2 };
		enable_patch(&q, EINVAL_, "an object name that is not UTF-8");
		memset(long_name, 'o', 56);
		long_name[56] = 0;
		struct klp_object objs3[] = { { .name = long_name, .funcs = funcs }, { 0 } };
		struct klp_patch r = { .name = "objlong", .objs = objs3 };
		enable_patch(&r, EINVAL_, "an object name of MODULE_NAME_LEN characters");
		struct klp_object objs4[] = { { .name = NULL, .funcs = funcs },
					      { .name = NULL, .funcs = funcs },
					      { 0 } };
		struct klp_patch s = { .name = "twovmlinux", .objs = objs4 };
		enable_patch(&s, EEXIST_, "two vmlinux objects");
		struct klp_func mfuncs[] = { { .old_name = "mod_fn", .new_func = (void *)target_v2 },
					     { 0 } };
		struct klp_object objs5[] = { { .name = "libdup", .funcs = mfuncs },
					      { .name = "libdup", .funcs = mfuncs },
					      { 0 } };
		struct klp_patch t = { .name = "twomods", .objs = objs5 };
		enable_patch(&t, EEXIST_, "two objects of one name");
	}
	/* Funcs. */
	enable_one("nullold", NULL, (void *)target_v2, 0, EINVAL_, "a func with NULL old_name");
	enable_one("nullnew", "target", NULL, 0, EINVAL_, "a func with NULL new_func");
	enable_one("onlypos", NULL, NULL, 1, EINVAL_, "a func with only old_sympos");
	enable_one("missing", "no_such_function", (void *)target_v2, 0, EINVAL_,
		   "a missing symbol");
	CHECK(log_count(KLP_LOG_ERR,
			"livepatch: symbol 'no_such_function' not found in symbol table") == 1);
	enable_one("oldutf8", NOT_UTF8, (void *)target_v2, 0, EINVAL_,
		   "an old_name that is not UTF-8");
	CHECK(log_count(KLP_LOG_ERR, "not found in symbol table") == 1);
	memset(long_name, 'f', 512);
	long_name[512] = 0;
	enable_one("oldlong", long_name, (void *)target_v2, 0, EINVAL_,
		   "an old_name of KSYM_NAME_LEN characters");
	enable_one("ambiguous", "twin", (void *)target_v2, 0, EINVAL_,
		   "an ambiguous symbol without old_sympos");
	CHECK(log_count(KLP_LOG_ERR,
			"livepatch: unresolvable ambiguity for symbol 'twin' in object '(null)'") ==
	      1);
	enable_one("sympos3", "twin", (void *)target_v2, 3, EINVAL_, "old_sympos 3 of 2");
	CHECK(log_count(KLP_LOG_ERR, "livepatch: symbol position 3 for symbol 'twin' in "
				     "object 'vmlinux' not found") == 1);
	enable_one("sympos2", "target", (void *)target_v2, 2, EINVAL_,
		   "old_sympos 2 of a unique symbol");
	CHECK(log_count(KLP_LOG_ERR, "livepatch: symbol position 2 for symbol 'target'") == 1);
	EXPECT(twin(1), 11);
	{
		struct klp_func funcs[] = { { .old_name = "target", .new_func = (void *)target_v2 },
					    { .old_name = "target", .new_func = (void *)target_v3 },
					    { 0 } };
		struct klp_object objs[] = { { .name = NULL, .funcs = funcs }, { 0 } };
		struct klp_patch p = { .name = "dupfunc", .objs = objs };
		enable_patch(&p, EEXIST_, "one func twice");
		struct klp_func funcs2[] = {
			{ .old_name = "target", .new_func = (void *)target_v2, .old_sympos = 0 },
			{ .old_name = "target", .new_func = (void *)target_v3, .old_sympos = 1 },
			{ 0 }
		};
		struct klp_object objs2[] = { { .name = NULL, .funcs = funcs2 }, { 0 } };
		struct klp_patch q = { .name = "dupsympos", .objs = objs2 };
		enable_patch(&q, EEXIST_, "one func with old_sympos 0 and 1");
	}
	{
		struct klp_func funcs[] = { { .old_name = "target", .new_func = (void *)target_v2 },
					    { 0 } };
		struct klp_object objs[] = { { .name = NULL,
					       .funcs = funcs,
					       .callbacks = { .pre_patch = refuse } },
					     { 0 } };
		struct klp_patch p = { .name = "refused", .objs = objs };
		log_clear();
		EXPECT(klp_enable_patch(&p), ENODEV_);
		EXPECT(klp_patch_enabled("refused"), ENOENT_);
		EXPECT(target(1), target_now);
		EXPECT(klp_wait_transition(0), 0);
		CHECK(log_count(KLP_LOG_WARNING,
				"livepatch: pre-patch callback failed for object 'vmlinux'") == 1);
		CHECK(log_count(KLP_LOG_WARNING, "livepatch: failed to enable patch 'refused'") ==
		      1);
		printf("ok: klp_enable_patch, a refusing pre_patch: its errno, the kernel's "
		       "lines\n");
	}
}

/* ---- patches in use: names, states, writes in the wrong state ---- */

static struct klp_func base_funcs[] = { { .old_name = "target", .new_func = (void *)target_v2 },
					{ 0 } };
static struct klp_object base_objs[] = { { .name = NULL, .funcs = base_funcs }, { 0 } };
static struct klp_state base_states[] = { { .id = 7, .version = 2 }, { 0 } };
static struct klp_patch base = { .name = "base", .objs = base_objs, .states = base_states };

static struct klp_func hold_funcs[] = { { .old_name = "held", .new_func = (void *)held_v2 },
					{ 0 } };
static struct klp_object hold_objs[] = { { .name = NULL, .funcs = hold_funcs }, { 0 } };
static struct klp_state hold_states[] = { { .id = 7, .version = 2 }, { 0 } };
static struct klp_patch hold = { .name = "hold", .objs = hold_objs, .states = hold_states };

static void patches_in_use(void)
{
	log_clear();
	EXPECT(klp_enable_patch(&base), 0);
	EXPECT(klp_wait_transition(10000), 0);
	target_now = 3;
	EXPECT(target(1), 3);

	/* The same name again. */
	{
		struct klp_func funcs[] = { { .old_name = "target", .new_func = (void *)target_v3 },
					    { 0 } };
		struct klp_object objs[] = { { .name = NULL, .funcs = funcs }, { 0 } };
		struct klp_patch p = { .name = "base", .objs = objs };
		log_clear();
		EXPECT(klp_enable_patch(&p), EEXIST_);
		EXPECT(klp_patch_enabled("base"), 1);
		EXPECT(klp_patch_stack_order("base"), 1);
		unchanged(NULL);
		CHECK(klp_get_state(&base, 7) == &base_states[0]);
		printf("ok: klp_enable_patch, a name in use: -EEXIST, the first patch stays\n");
	}
	/* States. */
	{
		struct klp_func funcs[] = { { .old_name = "target", .new_func = (void *)target_v3 },
					    { 0 } };
		struct klp_object objs[] = { { .name = NULL, .funcs = funcs }, { 0 } };
		struct klp_state older[] = { { .id = 7, .version = 1 }, { 0 } };
		struct klp_patch p = { .name = "older", .objs = objs, .states = older };
		enable_patch(&p, EINVAL_, "a state of a lower version");
		CHECK(log_count(KLP_LOG_ERR, "livepatch: Livepatch patch (older) is not "
					     "compatible with the already installed "
					     "livepatches.") == 1);
		struct klp_patch r = { .name = "dropper", .objs = objs, .replace = true };
		enable_patch(&r, EINVAL_, "a replace patch without a state in use");
		CHECK(log_count(KLP_LOG_ERR, "livepatch: Livepatch patch (dropper) is not "
					     "compatible") == 1);
		EXPECT(klp_patch_enabled("base"), 1);
	}
	/* Writes that change nothing. */
	log_clear();
	EXPECT(klp_patch_set_enabled("base", 1), EINVAL_);
	EXPECT(klp_patch_set_enabled("base", 42), EINVAL_);
	EXPECT(klp_patch_force("base"), EINVAL_);
	EXPECT(klp_patch_enabled("base"), 1);
	EXPECT(klp_patch_transition("base"), 0);
	EXPECT(klp_object_patched("base", NULL), 1);
	EXPECT(klp_object_patched("base", "vmlinux"), 1);
	EXPECT(klp_object_patched("base", "libnope"), ENOENT_);
	EXPECT(klp_object_patched("base", NOT_UTF8), ENOENT_);
	EXPECT(klp_object_patched("base", ""), ENOENT_);
	EXPECT(target(1), 3);
	CHECK(log_total() == 0);
	printf("ok: enabling an enabled patch, forcing one not in transition: -EINVAL, "
	       "nothing printed; unknown objects of a patch: -ENOENT\n");

	/* A transition held up by a thread inside held(). */
	pthread_t holder;
	atomic_store(&hold_release, 0);
	CHECK(pthread_create(&holder, NULL, holder_main, NULL) == 0);
	while (!atomic_load(&holding))
		sched_yield();
	EXPECT(klp_enable_patch(&hold), 0);
	EXPECT(klp_patch_transition("hold"), 1);
	EXPECT(klp_wait_transition(50), ETIMEDOUT_);
	{
		struct klp_func funcs[] = { { .old_name = "target", .new_func = (void *)target_v3 },
					    { 0 } };
		struct klp_object objs[] = { { .name = NULL, .funcs = funcs }, { 0 } };
		struct klp_patch p = { .name = "busy", .objs = objs };
		log_clear();
		EXPECT(klp_enable_patch(&p), EBUSY_);
		EXPECT(klp_patch_enabled("busy"), ENOENT_);
		EXPECT(target(1), 3);
		CHECK(log_count(-1, "enabling patch") == 0);
		CHECK(log_count(-1, "busy") == 0);
	}
	EXPECT(klp_patch_set_enabled("base", 0), EBUSY_);
	EXPECT(klp_patch_enabled("base"), 1);
	EXPECT(klp_patch_set_enabled("hold", 1), EINVAL_);
	EXPECT(klp_patch_force("base"), EINVAL_);
	EXPECT(klp_patch_enabled("hold"), 1);
	EXPECT(klp_patch_transition("hold"), 1);
	EXPECT(klp_patch_transition("base"), 0);
	EXPECT(klp_set_retry_period(0), EINVAL_);
	EXPECT(klp_set_retry_period(60001), EINVAL_);
	EXPECT(klp_set_retry_period(UINT_MAX), EINVAL_);
	CHECK(klp_get_prev_state(7) == &base_states[0]); /* hold's transition runs */
	EXPECT(klp_wait_transition(30), ETIMEDOUT_);
	printf("ok: during another patch's transition: enable -EBUSY (nothing printed), "
	       "disable -EBUSY, enable the enabling patch -EINVAL\n");

	/* Reversing twice: the second write is -EINVAL. */
	EXPECT(klp_patch_set_enabled("hold", 0), 0);
	EXPECT(klp_patch_set_enabled("hold", 0), EINVAL_);
	EXPECT(klp_patch_enabled("hold"), 0);
	EXPECT(klp_patch_set_enabled("hold", 1), 0);
	EXPECT(klp_patch_enabled("hold"), 1);
	atomic_store(&hold_release, 1);
	klp_park();
	CHECK(pthread_join(holder, NULL) == 0);
	klp_unpark();
	EXPECT(klp_wait_transition(10000), 0);
	EXPECT(klp_patch_force("hold"), EINVAL_);
	EXPECT(klp_patch_stack_order("hold"), 2);
	printf("ok: writing 0 twice during a reversal: -EINVAL\n");

	log_clear();
	CHECK(klp_get_prev_state(7) == NULL);
	CHECK(log_count(KLP_LOG_WARNING, "klp_get_prev_state called outside a transition") ==
	      1);
	CHECK(klp_get_state(NULL, 7) == NULL);
	CHECK(klp_get_state(&base, 0) == NULL);
	CHECK(klp_get_state(&base, 8) == NULL);
	{
		struct klp_patch nostates = { .name = "x", .objs = base_objs, .states = NULL };
		CHECK(klp_get_state(&nostates, 7) == NULL);
	}
	printf("ok: klp_get_state with NULL, id 0, an unknown id, no states: NULL; "
	       "klp_get_prev_state outside a transition: NULL and the kernel's warning\n");

	EXPECT(klp_patch_set_enabled("hold", 0), 0);
	EXPECT(klp_wait_transition(10000), 0);
	EXPECT(klp_patch_set_enabled("base", 0), 0);
	EXPECT(klp_wait_transition(10000), 0);
	EXPECT(klp_patch_enabled("base"), ENOENT_);
	EXPECT(klp_patch_set_enabled("base", 0), ENOENT_);
	target_now = 2;
	EXPECT(target(1), 2);
}

/* ---- objects ---- */

static void objects(void)
{
	struct klp_object obj = { .name = NULL };
	EXPECT(klp_object_state(NULL), EINVAL_);
	EXPECT(klp_object_state(&obj), KLP_MODULE_STATE_LIVE);
	obj.name = NOT_UTF8;
	EXPECT(klp_object_state(&obj), EINVAL_);
	obj.name = "libbad";
	EXPECT(klp_object_state(&obj), ENOENT_);

	log_clear();
	EXPECT(klp_object_load(NULL), EINVAL_);
	EXPECT(klp_object_load("vmlinux"), EINVAL_);
	CHECK(log_count(KLP_LOG_ERR, "vmlinux.ko: invalid module name") == 1);
	EXPECT(klp_object_load(NOT_UTF8), ENOENT_);
	/* Names no patch could give: empty, MODULE_NAME_LEN (56) bytes. */
	EXPECT(klp_object_load(""), EINVAL_);
	EXPECT(klp_object_load("a234567890123456789012345678901234567890123456789012345x"),
	       EINVAL_);
	EXPECT(klp_object_state(&(struct klp_object){ .name = "" }), ENOENT_);
	EXPECT(klp_object_unload(NULL), EINVAL_);
	EXPECT(klp_object_unload("libbad"), ENOENT_);
	EXPECT(klp_object_unload(NOT_UTF8), ENOENT_);
	EXPECT(klp_object_coming(NULL), EINVAL_);
	EXPECT(klp_object_refused(NULL), EINVAL_);
	EXPECT(klp_object_refused("libbad"), 0);
	EXPECT(klp_object_refused(NOT_UTF8), 0);
	klp_object_going(NULL);
	klp_object_going("libbad");
	klp_object_going(NOT_UTF8);
	EXPECT(klp_object_state(&obj), ENOENT_);

	EXPECT(klp_object_load("libbad"), 0);
	EXPECT(klp_object_state(&obj), KLP_MODULE_STATE_LIVE);
	EXPECT(klp_object_load("libbad"), EEXIST_);
	EXPECT(klp_object_coming("libbad"), EEXIST_);
	EXPECT(klp_object_refused("libbad"), 0);
	EXPECT(klp_object_state(&obj), KLP_MODULE_STATE_LIVE);
	EXPECT(klp_object_unload("libbad"), 0);
	EXPECT(klp_object_unload("libbad"), ENOENT_);
	EXPECT(klp_object_state(&obj), ENOENT_);
	printf("ok: objects: NULL -EINVAL, vmlinux -EINVAL with the kernel's line, "
	       "unknown -ENOENT, loaded twice -EEXIST, unloaded twice -ENOENT\n");
}

/* ---- sites ---- */

static struct klp_site spare_site;

static void sites(void)
{
	static const unsigned char zero[KLP_SITE_BYTES];
	klp_site_register(NULL, NULL, "spare", (void *)target_v2);
	klp_site_register(&spare_site, NULL, NULL, (void *)target_v2);
	klp_site_register(&spare_site, NULL, "spare", NULL);
	CHECK(memcmp(&spare_site, zero, sizeof zero) == 0);
	enable_one("spare", "spare", (void *)target_v3, 0, EINVAL_,
		   "a function whose registration had NULL arguments");
	CHECK(log_count(KLP_LOG_ERR, "livepatch: symbol 'spare' not found in symbol table") ==
	      1);
	klp_site_unregister(NULL);
	klp_site_unregister(&spare_site); /* never constructed */
	CHECK(memcmp(&spare_site, zero, sizeof zero) == 0);
	/* Registering a site again does nothing: twin_b stays the second "twin". */
	klp_site_register(&twin_b_site, NULL, "twin", (void *)target_v3);
	{
		struct klp_func funcs[] = {
			{ .old_name = "twin", .new_func = (void *)target_v2, .old_sympos = 1 },
			{ 0 }
		};
		struct klp_object objs[] = { { .name = NULL, .funcs = funcs }, { 0 } };
		struct klp_patch p = { .name = "twin1", .objs = objs };
		EXPECT(klp_enable_patch(&p), 0);
		EXPECT(klp_wait_transition(10000), 0);
		EXPECT(twin(1), 3);
		EXPECT(klp_patch_set_enabled("twin1", 0), 0);
		EXPECT(klp_wait_transition(10000), 0);
		EXPECT(twin(1), 11);
	}
	printf("ok: sites: registration with NULLs does nothing, unregistering NULL or an "
	       "unregistered site does nothing\n");
}

/* ---- flavor, retry period, thread calls, strings, shadow variables ---- */

static void flavor_before_use(void)
{
	const char *env = getenv("KLP_SYNC");
	int flavor = env && strcmp(env, "rcu") == 0 ? KLP_SYNC_RCU : KLP_SYNC_PREEMPT;
	EXPECT(klp_set_sync(2), EINVAL_);
	EXPECT(klp_set_sync(-1), EINVAL_);
	EXPECT(klp_set_sync(INT_MAX), EINVAL_);
	EXPECT(klp_set_sync(flavor), 0);
	printf("ok: klp_set_sync of an unknown flavor: -EINVAL\n");
}

static void flavor_after_use(void)
{
	EXPECT(klp_set_sync(KLP_SYNC_PREEMPT), EBUSY_);
	EXPECT(klp_set_sync(KLP_SYNC_RCU), EBUSY_);
	EXPECT(klp_set_sync(7), EINVAL_);
	printf("ok: klp_set_sync after first use: -EBUSY (-EINVAL first)\n");
}

static void misc(void)
{
	const char *v = klp_version();
	CHECK(v != NULL && strcmp(v, "0.1.0") >= 0 && strlen(v) >= 5);
	int codes[] = { 1, -1, -5, -4095, -4097, INT_MIN, INT_MAX };
	for (unsigned i = 0; i < sizeof codes / sizeof codes[0]; i++)
		CHECK(strcmp(klp_strerror(codes[i]), "unknown error") == 0);
	CHECK(strcmp(klp_strerror(0), "success") == 0);
	CHECK(strstr(klp_strerror(EINVAL_), "EINVAL") != NULL);
	CHECK(strstr(klp_strerror(KLP_ERROR_PANIC), "panic") != NULL);

	EXPECT(klp_set_retry_period(0), EINVAL_);
	EXPECT(klp_set_retry_period(60001), EINVAL_);
	EXPECT(klp_set_retry_period(1), 0);
	EXPECT(klp_set_retry_period(60000), 0);
	EXPECT(klp_set_retry_period(20), 0);

	/* Thread calls outside a transition, and unpark without park. */
	klp_unpark();
	klp_update_patch_state();
	klp_synchronize();
	EXPECT(klp_thread_patch_state(), -1);
	EXPECT(klp_set_thread_kick(NULL, NULL), 0);
	EXPECT(klp_set_thread_kick(NULL, (void *)1), 0);
	EXPECT(klp_wait_transition(0), 0);
	EXPECT(klp_wait_transition(UINT_MAX), 0);
	EXPECT(target(1), 2);
	printf("ok: strerror of unknown codes, retry periods 0 and 60001 -EINVAL, thread "
	       "calls outside a transition\n");
}

static int ctor_runs, dtor_runs;

static int ctor(void *obj, void *data, void *ctor_data)
{
	(void)obj;
	(void)data;
	ctor_runs++;
	return ctor_data ? -12 : 0;
}

static void dtor(void *obj, void *data)
{
	(void)obj;
	(void)data;
	dtor_runs++;
}

static void shadow(void)
{
	/* NULL and 0 are keys like any other. */
	CHECK(klp_shadow_get(NULL, 0) == NULL);
	void *a = klp_shadow_alloc(NULL, 0, 8, GFP_KERNEL, NULL, NULL);
	CHECK(a != NULL);
	CHECK(klp_shadow_get(NULL, 0) == a);
	CHECK(klp_shadow_get(NULL, 1) == NULL);
	log_clear();
	CHECK(klp_shadow_alloc(NULL, 0, 8, GFP_KERNEL, ctor, NULL) == NULL);
	CHECK(ctor_runs == 0);
	CHECK(log_count(KLP_LOG_WARNING, "livepatch: Duplicate shadow variable <") == 1);
	CHECK(klp_shadow_get_or_alloc(NULL, 0, 8, GFP_ATOMIC, ctor, NULL) == a);
	CHECK(ctor_runs == 0);
	/* A failing constructor attaches nothing. */
	CHECK(klp_shadow_alloc(NULL, 1, 8, GFP_KERNEL, ctor, (void *)1) == NULL);
	CHECK(klp_shadow_get_or_alloc(NULL, 1, 8, GFP_KERNEL, ctor, (void *)1) == NULL);
	CHECK(ctor_runs == 2);
	CHECK(klp_shadow_get(NULL, 1) == NULL);
	/* Size 0. */
	void *z = klp_shadow_alloc((void *)&ctor_runs, 2, 0, GFP_KERNEL, NULL, NULL);
	CHECK(z != NULL && klp_shadow_get((void *)&ctor_runs, 2) == z);
	/* Missing pairs are ignored; NULL destructors are allowed. */
	klp_shadow_free(NULL, 99, dtor);
	klp_shadow_free_all(99, dtor);
	CHECK(dtor_runs == 0);
	klp_shadow_free(NULL, 0, dtor);
	CHECK(dtor_runs == 1 && klp_shadow_get(NULL, 0) == NULL);
	klp_shadow_free_all(2, NULL);
	CHECK(klp_shadow_get((void *)&ctor_runs, 2) == NULL);
	klp_shadow_free_all(0, NULL);
	printf("ok: shadow variables: NULL objects and id 0 are keys, duplicates NULL with "
	       "the warning, failing constructors attach nothing, missing pairs ignored\n");
}

/* An object named "vmlinux" beside the main program's. */
static void vmlinux_twice(void)
{
	/* The kernel names a vmlinux object's directory "vmlinux": an object named
	 * "vmlinux" beside it collides (-EEXIST). */
	struct klp_func funcs[] = { { .old_name = "target", .new_func = (void *)target_v2 },
				    { 0 } };
	struct klp_object objs[] = { { .name = NULL, .funcs = funcs },
				     { .name = "vmlinux", .funcs = funcs },
				     { 0 } };
	struct klp_patch p = { .name = "vmlinuxtwice", .objs = objs };
	enable_patch(&p, EEXIST_, "a vmlinux object and an object named vmlinux");
	printf("ok: a vmlinux object and an object named vmlinux: -EEXIST\n");
}

int main(void)
{
	/* Before the engine exists (the log and shadow variables do not create it). */
	EXPECT(klp_set_log_handler(handler, &log_n), 0);
	flavor_before_use();
	EXPECT(target(1), 2);
	EXPECT(klp_thread_patch_state(), -1); /* the engine exists from here on */
	flavor_after_use();
	EXPECT(klp_set_retry_period(20), 0);
	klp_site_register(&twin_b_site, NULL, "twin", (void *)twin_b);

	misc();
	control_names();
	enable_bad_structs();
	vmlinux_twice();
	patches_in_use();
	objects();
	sites();
	shadow();

	EXPECT(klp_set_log_handler(NULL, NULL), 0);
	printf("done\n");
	return 0;
}
