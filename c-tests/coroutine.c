/* Coroutines (ucontext: makecontext, swapcontext): one thread runs code on several
 * stacks. libklp records one activation stack per thread, whatever stack each call runs
 * on, and drops an activation as left (longjmp, an exception) only when its frame lies in
 * the memory that the running call occupies: no live frame of any stack can be there, so
 * a suspended coroutine's calls are never dropped, wherever its stack is. What holds:
 *
 *   - the thread never switches while a function that the transition replaces is live on
 *     any of its stacks, suspended or running, whichever stack makes the switch point,
 *     wherever the coroutines' stacks are;
 *   - a call that returns while calls of another stack are live above it is marked
 *     returned, and popped once those return: the thread switches when all have;
 *   - a coroutine abandoned inside a function (never resumed) holds every patching
 *     transition that replaces the implementation it runs, for as long as the thread
 *     lives: the conservative answer. klp_patch_force completes such a transition.
 *
 * The scenarios, each on one thread (a patch replaces outer, inner and step; other and
 * nest are patchable and not replaced):
 *
 *   (a) coroutine A enters outer and swaps back to the thread's main context from inside
 *       it; the main context enables the patch, makes patchable calls and switch points:
 *       the transition does not complete while A is suspended; A resumes, calls inner
 *       (the old one: no mix of old and new) and returns from outer; then the thread
 *       switches and new calls run the new functions.
 *   (b) A enters outer and swaps to B; B enables the patch, enters step and swaps back to
 *       A; A returns from outer (its activation is not on top); B resumes and returns
 *       from step: the thread is outside every patchable function and switches.
 *   (d) the main context is inside outer and swaps to coroutine D, which enables the
 *       patch and makes patchable calls and switch points on its own stack: no switch
 *       until the main context returns from outer.
 *   (c) coroutine C enters outer, swaps back and is never resumed: the transition waits
 *       (forever) until it is forced; the unpatching transition does not wait (C runs the
 *       original), a later patch of outer waits again.
 *
 * Argument, where the stacks are: `heap` (the process's main thread; the coroutines'
 * stacks from malloc, below its stack), `below` or `above` (a thread whose stack is part
 * of one mapping, the coroutines' stacks in the same mapping below or above it, split from
 * it by a guard page). Run by klp-ffi/tests/c_lifecycle.rs under both flavors.
 *
 * Two more arguments put the coroutines' stacks where frame addresses alone cannot tell
 * them from the thread's own: `shared` (as `below` without the guard page, as when the
 * kernel merges a MAP_STACK mapping with a thread stack that has no guard page) and
 * `local` (the main thread, the coroutines' stacks in an array on its own stack, as many
 * ucontext programs allocate them).
 *
 * Needs GNU C. */
#include <klp.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (!(cond)) {                                                          \
			printf("FAILED: %s (line %d)\n", #cond, __LINE__);              \
			exit(1);                                                        \
		}                                                                       \
	} while (0)

#define CO_SIZE (256 * 1024)
#define NCO 4 /* A, B, C, D */
#define THREAD_SIZE (1024 * 1024)

/* A coroutine; main_co is the thread's main context. */
struct co {
	ucontext_t ctx;
	struct co *yield_to; /* where suspend() goes */
	void (*body)(struct co *c);
	int result;
	int done;
};

static struct co main_co, cos[NCO];
static struct co *cur = &main_co;
static char *stacks[NCO];

static void transfer(struct co *to)
{
	struct co *from = cur;
	cur = to;
	CHECK(swapcontext(&from->ctx, &to->ctx) == 0);
}

static void suspend(void)
{
	transfer(cur->yield_to);
}

static void trampoline(void)
{
	struct co *c = cur;
	c->body(c);
	c->done = 1;
	transfer(&main_co);
	abort(); /* a finished coroutine is never resumed */
}

/* Under valgrind, the coroutines' stacks are declared as stacks (so that switching to one
 * is not taken for a wild stack pointer); elsewhere this does nothing. */
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define CO_STACK_REGISTER(lo, hi) ((void)VALGRIND_STACK_REGISTER((lo), (hi)))
#endif
#endif
#ifndef CO_STACK_REGISTER
#define CO_STACK_REGISTER(lo, hi) ((void)0)
#endif

static struct co *co_new(int i, void (*body)(struct co *c), struct co *yield_to)
{
	struct co *c = &cos[i];
	memset(c, 0, sizeof(*c));
	CO_STACK_REGISTER(stacks[i], stacks[i] + CO_SIZE);
	CHECK(getcontext(&c->ctx) == 0);
	c->ctx.uc_stack.ss_sp = stacks[i];
	c->ctx.uc_stack.ss_size = CO_SIZE;
	c->ctx.uc_link = NULL;
	makecontext(&c->ctx, trampoline, 0);
	c->body = body;
	c->yield_to = yield_to;
	return c;
}

KLP_PATCHABLE(int, inner, (void), ())
{
	return 1;
}

/* Suspends the coroutine that calls it, then calls inner. */
KLP_PATCHABLE(int, outer, (int x), (x))
{
	suspend();
	return 100 * x + inner();
}

KLP_PATCHABLE(int, step, (int x), (x))
{
	suspend();
	return x + 1;
}

KLP_PATCHABLE(int, other, (int x), (x))
{
	return x + 1;
}

KLP_PATCHABLE(int, nest, (int x), (x))
{
	return 2 * other(x);
}

static int inner_v2(void)
{
	return 2;
}

static int outer_v2(int x)
{
	return 200 * x + inner();
}

static int step_v2(int x)
{
	return x + 2;
}

/* One patch (each kept for good, in static storage: a forced patch is never released). */
struct lp {
	struct klp_func funcs[4];
	struct klp_object objs[2];
	struct klp_patch patch;
};

static struct klp_patch *new_patch(const char *name)
{
	static struct lp pool[8];
	static int used;
	CHECK(used < 8);
	struct lp *p = &pool[used++];
	p->funcs[0] = (struct klp_func){ .old_name = "outer", .new_func = (void *)outer_v2 };
	p->funcs[1] = (struct klp_func){ .old_name = "inner", .new_func = (void *)inner_v2 };
	p->funcs[2] = (struct klp_func){ .old_name = "step", .new_func = (void *)step_v2 };
	p->objs[0] = (struct klp_object){ .name = NULL, .funcs = p->funcs };
	p->patch = (struct klp_patch){ .name = name, .objs = p->objs };
	return &p->patch;
}

static void disable(const char *name)
{
	CHECK(klp_patch_set_enabled(name, 0) == 0);
	CHECK(klp_wait_transition(5000) == 0);
	CHECK(klp_patch_enabled(name) == -ENOENT);
}

/* Patchable calls of the main context, none of them replaced, then a switch point. */
static void calls_and_switch_point(void)
{
	CHECK(other(1) == 2);
	CHECK(nest(1) == 4);
	klp_update_patch_state();
}

static void body_a(struct co *c)
{
	c->result = outer(1);
}

static void scenario_a(void)
{
	struct co *a = co_new(0, body_a, &main_co);
	transfer(a); /* A is suspended inside outer */
	CHECK(!a->done);
	struct klp_patch *p = new_patch("coroutine-a");
	CHECK(klp_enable_patch(p) == 0);
	CHECK(klp_patch_transition(p->name) == 1);
	calls_and_switch_point();
	CHECK(klp_thread_patch_state() == 0);
	CHECK(klp_wait_transition(200) == -ETIMEDOUT);
	calls_and_switch_point();
	CHECK(klp_thread_patch_state() == 0);
	CHECK(inner() == 1); /* the thread has not switched: the old inner */
	transfer(a);
	CHECK(a->done);
	CHECK(a->result == 101); /* old outer, old inner */
	CHECK(klp_wait_transition(5000) == 0);
	CHECK(klp_thread_patch_state() == -1);
	CHECK(outer(1) == 202);
	CHECK(inner() == 2);
	disable(p->name);
	printf("ok: (a) no switch while a coroutine is suspended inside a replaced function\n");
}

static struct klp_patch *patch_b;

static void body_a_b(struct co *c)
{
	c->result = outer(2); /* swaps to B from inside */
}

static void body_b(struct co *c)
{
	/* A is inside outer. */
	CHECK(klp_enable_patch(patch_b) == 0);
	klp_update_patch_state();
	CHECK(klp_thread_patch_state() == 0);
	c->result = step(3); /* swaps back to A from inside */
}

static void scenario_b(void)
{
	struct co *a = co_new(0, body_a_b, NULL);
	struct co *b = co_new(1, body_b, a);
	a->yield_to = b;
	patch_b = new_patch("coroutine-b");
	transfer(a); /* A: outer, B: enable, step; A returns from outer under step */
	CHECK(a->done && !b->done);
	CHECK(a->result == 201);
	calls_and_switch_point();
	CHECK(klp_thread_patch_state() == 0);
	CHECK(klp_wait_transition(100) == -ETIMEDOUT); /* step is still live */
	transfer(b); /* B returns from step: nothing is live any more */
	CHECK(b->done);
	CHECK(b->result == 4);
	CHECK(klp_wait_transition(5000) == 0);
	CHECK(klp_thread_patch_state() == -1);
	CHECK(step(3) == 5);
	CHECK(outer(2) == 402);
	disable(patch_b->name);
	printf("ok: (b) a call that returns under another stack's call does not stay live\n");
}

static struct klp_patch *patch_d;

static void body_d(struct co *c)
{
	/* The main context is inside outer, on the thread's own stack. */
	CHECK(klp_enable_patch(patch_d) == 0);
	calls_and_switch_point();
	CHECK(klp_thread_patch_state() == 0);
	CHECK(klp_wait_transition(100) == -ETIMEDOUT);
	calls_and_switch_point();
	CHECK(klp_thread_patch_state() == 0);
	c->result = inner();
}

static void scenario_d(void)
{
	struct co *d = co_new(3, body_d, &main_co);
	patch_d = new_patch("coroutine-d");
	main_co.yield_to = d;
	CHECK(outer(4) == 401); /* swaps to D from inside; D ends */
	main_co.yield_to = NULL;
	CHECK(d->done);
	CHECK(d->result == 1);
	CHECK(klp_wait_transition(5000) == 0);
	CHECK(klp_thread_patch_state() == -1);
	CHECK(outer(4) == 802);
	disable(patch_d->name);
	printf("ok: (d) no switch from a coroutine while the main context is inside\n");
}

static void body_c(struct co *c)
{
	c->result = outer(3);
	CHECK(!"an abandoned coroutine resumed");
}

static void scenario_c(void)
{
	struct co *c = co_new(2, body_c, &main_co);
	transfer(c); /* C is suspended inside outer, for good */
	struct klp_patch *p = new_patch("coroutine-c");
	CHECK(klp_enable_patch(p) == 0);
	calls_and_switch_point();
	CHECK(klp_thread_patch_state() == 0);
	CHECK(klp_wait_transition(100) == -ETIMEDOUT);
	CHECK(klp_patch_force(p->name) == 0);
	CHECK(klp_wait_transition(5000) == 0);
	CHECK(klp_thread_patch_state() == -1);
	CHECK(outer(3) == 602);
	CHECK(inner() == 2);
	/* C runs the original outer: the unpatching transition does not wait for it. */
	disable(p->name);
	CHECK(inner() == 1);
	/* A later patch of outer waits for it again. */
	struct klp_patch *q = new_patch("coroutine-c2");
	CHECK(klp_enable_patch(q) == 0);
	klp_update_patch_state();
	CHECK(klp_wait_transition(100) == -ETIMEDOUT);
	CHECK(klp_patch_force(q->name) == 0);
	CHECK(klp_wait_transition(5000) == 0);
	CHECK(inner() == 2);
	disable(q->name);
	CHECK(!c->done);
	printf("ok: (c) an abandoned coroutine holds the transition until it is forced\n");
}

static void run_all(void)
{
	scenario_a();
	scenario_b();
	scenario_d();
	scenario_c();
}

static int above;

static void *thread_main(void *arg)
{
	(void)arg;
	char *sp = __builtin_frame_address(0);
	CHECK(above ? sp < stacks[0] : sp > stacks[NCO - 1] + CO_SIZE);
	run_all();
	return NULL;
}

/* The coroutines' stacks in an array on the main thread's stack, above every later
 * frame. */
static __attribute__((noinline)) void run_local(void)
{
	static char *volatile keep;
	char area[NCO * CO_SIZE];
	keep = area;
	for (int i = 0; i < NCO; i++)
		stacks[i] = keep + (size_t)i * CO_SIZE;
	run_all();
	keep = NULL;
}

int main(int argc, char **argv)
{
	CHECK(argc == 2);
	setvbuf(stdout, NULL, _IOLBF, 0);
	CHECK(klp_set_retry_period(10) == 0);
	long page = sysconf(_SC_PAGESIZE);
	char here;

	if (strcmp(argv[1], "local") == 0) {
		run_local();
		printf("done\n");
		return 0;
	}
	if (strcmp(argv[1], "heap") == 0) {
		for (int i = 0; i < NCO; i++) {
			stacks[i] = malloc(CO_SIZE);
			CHECK(stacks[i] != NULL);
			CHECK(stacks[i] + CO_SIZE < &here);
		}
		run_all();
		printf("done\n");
		return 0;
	}

	/* One mapping: the thread's stack and the coroutines' stacks, a guard page between
	 * (two mappings in /proc/self/maps, where libklp finds the thread's stack), or none
	 * (`shared`: one). */
	above = strcmp(argv[1], "above") == 0;
	int shared = strcmp(argv[1], "shared") == 0;
	CHECK(above || shared || strcmp(argv[1], "below") == 0);
	size_t co_area = (size_t)NCO * CO_SIZE;
	char *m = mmap(NULL, THREAD_SIZE + page + co_area, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(m != MAP_FAILED);
	char *thread_stack = above ? m : m + co_area + page;
	char *co = above ? m + THREAD_SIZE + page : m;
	if (!shared)
		CHECK(mprotect(above ? m + THREAD_SIZE : m + co_area, page, PROT_NONE) == 0);
	for (int i = 0; i < NCO; i++)
		stacks[i] = co + (size_t)i * CO_SIZE;

	pthread_attr_t attr;
	pthread_t t;
	CHECK(pthread_attr_init(&attr) == 0);
	CHECK(pthread_attr_setstack(&attr, thread_stack, THREAD_SIZE) == 0);
	CHECK(pthread_create(&t, &attr, thread_main, NULL) == 0);
	CHECK(pthread_attr_destroy(&attr) == 0);
	CHECK(pthread_join(t, NULL) == 0);
	printf("done\n");
	return 0;
}
