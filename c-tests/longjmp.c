/* longjmp out of patchable functions (so their wrappers never leave) must leave the
 * thread able to switch: at its next patchable call or klp_update_patch_state() it
 * switches, and the transition completes. The opposite is checked too: a thread that is
 * really inside a replaced function holds the transition up. Run by
 * klp-ffi/tests/c_unwind.rs. Needs GNU C (-std=gnu11). */
#include <klp.h>

#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
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

#define ETIMEDOUT_ 110
#define ENOENT_ 2

enum how { RETURN, JUMP, BLOCK };

/* Where a JUMP goes: the innermost catching frame of this thread; and the version of the
 * implementation that jumped. */
static __thread jmp_buf *catcher;
static __thread int jumped_from;

/* A thread that BLOCKs inside a function spins there, running (not parked), until
 * released: it really is inside the function. */
static atomic_int blocked, unblock;

static void spin_until_released(void)
{
	atomic_store(&blocked, 1);
	while (!atomic_load(&unblock))
		sched_yield();
	atomic_store(&blocked, 0);
}

/* Every implementation returns (or longjmps with) its version: 1 original, 2 patched. */
static int act(int how, int version)
{
	if (how == JUMP) {
		jumped_from = version;
		longjmp(*catcher, 1);
	}
	if (how == BLOCK)
		spin_until_released();
	return version;
}

KLP_PATCHABLE(int, jumper, (int how), (how))
{
	return act(how, 1);
}

static int jumper_v2(int how)
{
	return act(how, 2);
}

/* middle -> jumper, with middle's version in the tens. */
KLP_PATCHABLE(int, middle, (int how), (how))
{
	return 10 + jumper(how);
}

static int middle_v2(int how)
{
	return 20 + jumper(how);
}

/* outer -> middle, in the hundreds. */
KLP_PATCHABLE(int, outer, (int how), (how))
{
	return 100 + middle(how);
}

static int outer_v2(int how)
{
	return 200 + middle(how);
}

/* Not patched: a plain patchable call is a switch point. */
KLP_PATCHABLE(int, other, (int x), (x))
{
	return x;
}

/* Holds a transition up: a holder thread spins inside it. */
static atomic_int holding, hold_release;

static void hold(void)
{
	atomic_store(&holding, 1);
	while (!atomic_load(&hold_release))
		sched_yield();
	atomic_store(&holding, 0);
}

KLP_PATCHABLE_VOID(holder, (void), ())
{
	hold();
}

static void holder_v2(void)
{
	hold();
}

/* Patch "pj": jumper and holder. */
static struct klp_func pj_funcs[] = {
	{ .old_name = "jumper", .new_func = (void *)jumper_v2 },
	{ .old_name = "holder", .new_func = (void *)holder_v2 },
	{ 0 }
};
static struct klp_object pj_objs[] = { { .name = NULL, .funcs = pj_funcs }, { 0 } };
static struct klp_patch pj = { .name = "pj", .objs = pj_objs };

/* Patch "pall": jumper, middle, outer and holder. */
static struct klp_func pall_funcs[] = {
	{ .old_name = "jumper", .new_func = (void *)jumper_v2 },
	{ .old_name = "middle", .new_func = (void *)middle_v2 },
	{ .old_name = "outer", .new_func = (void *)outer_v2 },
	{ .old_name = "holder", .new_func = (void *)holder_v2 },
	{ 0 }
};
static struct klp_object pall_objs[] = { { .name = NULL, .funcs = pall_funcs }, { 0 } };
static struct klp_patch pall = { .name = "pall", .objs = pall_objs };

/* ---- threads ---- */

static pthread_barrier_t bar;

/* Meet the other thread; parked, so that the wait holds nothing up. Inlined: klp_park
 * forgets the patchable functions its caller left, and the caller must be the function
 * that caught the longjmp (a frame called from it could lie where they were). */
static inline __attribute__((always_inline)) void meet(void)
{
	klp_park();
	pthread_barrier_wait(&bar);
	klp_unpark();
}

static pthread_t holder_thread;

static void *holder_main(void *arg)
{
	(void)arg;
	holder();
	return NULL;
}

/* A thread inside holder() until release_holder(): the transition cannot complete. */
static void start_holder(void)
{
	atomic_store(&hold_release, 0);
	CHECK(pthread_create(&holder_thread, NULL, holder_main, NULL) == 0);
	while (!atomic_load(&holding))
		sched_yield();
}

static void release_holder(void)
{
	atomic_store(&hold_release, 1);
	klp_park();
	CHECK(pthread_join(holder_thread, NULL) == 0);
	klp_unpark();
}

/* Enable p while the holder holds its transition up. */
static void enable(struct klp_patch *p)
{
	CHECK(klp_enable_patch(p) == 0);
	CHECK(klp_patch_transition(p->name) == 1);
}

static void enable_now(struct klp_patch *p)
{
	CHECK(klp_enable_patch(p) == 0);
	CHECK(klp_wait_transition(10000) == 0);
	CHECK(klp_patch_enabled(p->name) == 1);
}

/* A transition held up by the holder stays held up; releasing it completes it. */
static void finish_held_transition(const char *name)
{
	CHECK(klp_patch_transition(name) == 1);
	CHECK(klp_wait_transition(60) == -ETIMEDOUT_);
	release_holder();
	CHECK(klp_wait_transition(10000) == 0);
	CHECK(klp_patch_transition(name) == 0 || klp_patch_enabled(name) == -ENOENT_);
}

static void disable(const char *name)
{
	CHECK(klp_patch_set_enabled(name, 0) == 0);
	CHECK(klp_wait_transition(10000) == 0);
	CHECK(klp_patch_enabled(name) == -ENOENT_);
}

/* How a thread that longjmp'd reaches its next switch point: a patchable call, an explicit
 * klp_update_patch_state(), or none at all (it only parks, and must be switched while
 * parked). */
enum { SP_CALL, SP_UPDATE, SP_PARK } sp_kind;

static inline __attribute__((always_inline)) void switch_point(void)
{
	if (sp_kind == SP_CALL)
		CHECK(other(5) == 5);
	else if (sp_kind == SP_UPDATE)
		klp_update_patch_state();
}

static const char *sp_name(void)
{
	return sp_kind == SP_CALL ? "a patchable call"
	       : sp_kind == SP_UPDATE ? "klp_update_patch_state()"
				      : "parking only";
}

/* ---- 1: really inside: the transition waits ---- */

static void *t_inside(void *arg)
{
	(void)arg;
	CHECK(jumper(BLOCK) == 1);
	return NULL;
}

static void test_really_inside_holds_the_transition(void)
{
	pthread_t t;
	atomic_store(&unblock, 0);
	CHECK(pthread_create(&t, NULL, t_inside, NULL) == 0);
	while (!atomic_load(&blocked))
		sched_yield();
	enable(&pj);
	CHECK(klp_wait_transition(100) == -ETIMEDOUT_);
	CHECK(jumper(RETURN) == 2); /* this thread switched */
	CHECK(klp_patch_transition("pj") == 1);
	atomic_store(&unblock, 1);
	CHECK(klp_wait_transition(10000) == 0);
	klp_park();
	CHECK(pthread_join(t, NULL) == 0);
	klp_unpark();
	CHECK(jumper(RETURN) == 2);
	disable("pj");
	CHECK(jumper(RETURN) == 1);
	printf("ok: a thread really inside jumper holds the transition until it returns\n");
}

/* ---- 2: longjmp out of the original, then a switch point ---- */

static void *t_jump_from_original(void *arg)
{
	jmp_buf jb;
	volatile int got = 0;
	(void)arg;
	catcher = &jb;
	if (setjmp(jb) == 0)
		got = jumper(JUMP);
	else
		got = jumped_from;
	CHECK(got == 1);
	meet(); /* 1: main enables pj */
	meet(); /* 2 */
	switch_point();
	if (sp_kind != SP_PARK) {
		CHECK(klp_thread_patch_state() == 1);
		CHECK(jumper(RETURN) == 2);
	}
	meet(); /* 3: main completes the transition */
	meet(); /* 4 */
	CHECK(jumper(RETURN) == 2);
	return NULL;
}

/* Run fn in a thread through meets 1-4, enabling (or disabling) patch p at 1. */
static void run_scenario(void *(*fn)(void *), struct klp_patch *p, int disabling)
{
	pthread_t t;
	start_holder();
	CHECK(pthread_create(&t, NULL, fn, NULL) == 0);
	meet(); /* 1 */
	if (disabling)
		CHECK(klp_patch_set_enabled(p->name, 0) == 0);
	else
		enable(p);
	meet(); /* 2 */
	meet(); /* 3 */
	finish_held_transition(p->name);
	meet(); /* 4 */
	klp_park();
	CHECK(pthread_join(t, NULL) == 0);
	klp_unpark();
}

static void test_jump_from_original(void)
{
	run_scenario(t_jump_from_original, &pj, 0);
	CHECK(klp_patch_enabled("pj") == 1);
	CHECK(jumper(RETURN) == 2);
	disable("pj");
	printf("ok: longjmp out of the original jumper, then %s: the thread switches, "
	       "the transition completes\n",
	       sp_name());
}

/* ---- 3: longjmp out of the replacement, during the unpatching transition ---- */

static void *t_jump_from_replacement(void *arg)
{
	jmp_buf jb;
	volatile int got = 0;
	(void)arg;
	catcher = &jb;
	if (setjmp(jb) == 0)
		got = jumper(JUMP);
	else
		got = jumped_from;
	CHECK(got == 2);
	meet(); /* 1: main disables pj */
	meet(); /* 2 */
	switch_point();
	if (sp_kind != SP_PARK) {
		CHECK(klp_thread_patch_state() == 0);
		CHECK(jumper(RETURN) == 1);
	}
	meet(); /* 3 */
	meet(); /* 4 */
	CHECK(jumper(RETURN) == 1);
	return NULL;
}

static void test_jump_from_replacement(void)
{
	enable_now(&pj);
	run_scenario(t_jump_from_replacement, &pj, 1);
	CHECK(klp_patch_enabled("pj") == -ENOENT_);
	CHECK(jumper(RETURN) == 1);
	printf("ok: longjmp out of the replacement, then %s: the thread switches back, "
	       "the unpatching transition completes\n",
	       sp_name());
}

/* ---- 4: nested frames, longjmp from the deepest to above all of them ---- */

static void *t_nested_to_top(void *arg)
{
	jmp_buf jb;
	volatile int got = 0;
	(void)arg;
	catcher = &jb;
	if (setjmp(jb) == 0)
		got = outer(JUMP); /* outer -> middle -> jumper, which jumps */
	else
		got = jumped_from;
	CHECK(got == 1);
	meet(); /* 1: main enables pall */
	meet(); /* 2 */
	switch_point();
	if (sp_kind != SP_PARK) {
		CHECK(klp_thread_patch_state() == 1);
		CHECK(outer(RETURN) == 222);
	}
	meet(); /* 3 */
	meet(); /* 4 */
	CHECK(outer(RETURN) == 222);
	return NULL;
}

static void test_nested_jump_to_top(void)
{
	CHECK(outer(RETURN) == 111);
	run_scenario(t_nested_to_top, &pall, 0);
	CHECK(outer(RETURN) == 222);
	disable("pall");
	CHECK(outer(RETURN) == 111);
	printf("ok: longjmp from jumper through middle and outer, then %s: the thread "
	       "switches\n",
	       sp_name());
}

/* ---- 5: longjmp from the deepest frame into a live patchable frame ---- */

/* outer2 catches a jump from middle -> jumper, then, still inside outer2, reaches a
 * switch point and reports whether it switched. */
static atomic_int inside_switched;

KLP_PATCHABLE(int, outer2, (int how), (how))
{
	jmp_buf jb;
	jmp_buf *volatile saved = catcher;
	volatile int got = 0;
	catcher = &jb;
	if (setjmp(jb) == 0)
		got = middle(how);
	else
		got = jumped_from;
	catcher = saved;
	meet(); /* 1: main enables the patch */
	meet(); /* 2 */
	switch_point(); /* a call from inside outer2 is no switch point: depth 1 */
	atomic_store(&inside_switched, klp_thread_patch_state());
	meet(); /* 3: main reads inside_switched */
	return got;
}

static int outer2_v2(int how)
{
	return 1000 + middle(how);
}

/* Patch "po2": outer2 (a live frame of the thread), and holder. */
static struct klp_func po2_funcs[] = {
	{ .old_name = "outer2", .new_func = (void *)outer2_v2 },
	{ .old_name = "holder", .new_func = (void *)holder_v2 },
	{ 0 }
};
static struct klp_object po2_objs[] = { { .name = NULL, .funcs = po2_funcs }, { 0 } };
static struct klp_patch po2 = { .name = "po2", .objs = po2_objs };

static void *t_nested_into_live(void *arg)
{
	(void)arg;
	CHECK(outer2(JUMP) == 1); /* jumper's original jumped back into outer2 */
	/* Returned from outer2: a switch point at depth 0. */
	CHECK(klp_thread_patch_state() == 1);
	meet(); /* 4 */
	return NULL;
}

static void test_jump_into_a_live_frame(struct klp_patch *p, int live_frame_replaced)
{
	pthread_t t;
	start_holder();
	CHECK(pthread_create(&t, NULL, t_nested_into_live, NULL) == 0);
	meet(); /* 1 */
	enable(p);
	meet(); /* 2 */
	meet(); /* 3 */
	/* Stale middle and jumper entries are dropped; outer2 is live. */
	CHECK(atomic_load(&inside_switched) == (live_frame_replaced ? 0 : 1));
	meet(); /* 4 */
	finish_held_transition(p->name);
	klp_park();
	CHECK(pthread_join(t, NULL) == 0);
	klp_unpark();
	disable(p->name);
	printf("ok: longjmp from jumper into a live outer2 (%s replaced): the thread %s "
	       "while still inside outer2\n",
	       live_frame_replaced ? "outer2" : "only jumper and middle",
	       live_frame_replaced ? "does not switch" : "switches");
}

/* ---- 6: a deep chain of stale frames from repeated jumps ---- */

static void *t_many_jumps(void *arg)
{
	(void)arg;
	for (volatile int i = 0; i < 200; i++) {
		jmp_buf jb;
		catcher = &jb;
		if (setjmp(jb) == 0)
			(void)outer(JUMP);
	}
	meet(); /* 1 */
	meet(); /* 2 */
	switch_point();
	if (sp_kind != SP_PARK) {
		CHECK(klp_thread_patch_state() == 1);
		CHECK(outer(RETURN) == 222);
	}
	meet(); /* 3 */
	meet(); /* 4 */
	CHECK(outer(RETURN) == 222);
	return NULL;
}

static void test_many_jumps(void)
{
	run_scenario(t_many_jumps, &pall, 0);
	disable("pall");
	printf("ok: 200 jumps out of three nested frames each, then %s: the thread "
	       "switches\n",
	       sp_name());
}

/* ---- 7: the main thread jumps, then enables and waits (it counts as parked) ---- */

static void test_main_jumps_then_waits(void)
{
	jmp_buf jb;
	volatile int got = 0;
	catcher = &jb;
	if (setjmp(jb) == 0)
		got = jumper(JUMP);
	else
		got = jumped_from;
	CHECK(got == 1);
	CHECK(klp_enable_patch(&pj) == 0);
	CHECK(klp_wait_transition(2000) == 0);
	CHECK(jumper(RETURN) == 2);
	disable("pj");
	printf("ok: the main thread longjmps out of jumper, then enables a patch of it "
	       "and waits: the transition completes\n");
}

/* argv[1]: "call" (switch points are patchable calls), "update" (explicit
 * klp_update_patch_state()) or "park" (no switch point: the thread is switched while
 * parked). */
int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "call";

	CHECK(klp_set_retry_period(20) == 0);
	CHECK(pthread_barrier_init(&bar, NULL, 2) == 0);
	CHECK(jumper(RETURN) == 1 && other(3) == 3);

	if (strcmp(mode, "call") == 0) {
		sp_kind = SP_CALL;
		test_really_inside_holds_the_transition();
		/* A call from inside the live outer2 must not drop outer2's entry. */
		test_jump_into_a_live_frame(&po2, 1);
	} else if (strcmp(mode, "update") == 0) {
		sp_kind = SP_UPDATE;
		test_jump_into_a_live_frame(&po2, 1);
		test_jump_into_a_live_frame(&pj, 0);
	} else if (strcmp(mode, "park") == 0) {
		sp_kind = SP_PARK;
		test_main_jumps_then_waits();
	} else {
		CHECK(!"mode is call, update or park");
	}
	test_jump_from_original();
	test_jump_from_replacement();
	test_nested_jump_to_top();
	test_many_jumps();

	CHECK(pthread_barrier_destroy(&bar) == 0);
	printf("done\n");
	return 0;
}
