/* fork() in a program whose threads use libklp: the child (a copy of the forking thread
 * alone) must be able to patch, unpatch, synchronize and wait, and so must the parent
 * afterwards. The argument picks the case:
 *
 *   idle      Three threads call patched functions in a loop, a fourth is parked in a
 *             blocking wait and a fifth waits for grace periods back to back; after a
 *             completed patch cycle, with a patch in place, the main thread forks. The
 *             child stacks a new patch on the inherited one, synchronizes and unpatches
 *             both, while a thread of its own makes calls; the parent does the same with
 *             its threads still running.
 *   mid       A thread busy-waits (running, not parked) inside a function that the
 *             transition in progress replaces, and the main thread forks. In the child
 *             that thread does not exist: the transition completes there, and the child
 *             disables, enables again, synchronizes and reverses a transition. In the
 *             parent the transition still waits for the thread until it is let go.
 *   inside    The main thread forks from inside a function that the transition in progress
 *             replaces: in both processes it holds the transition until it returns, and
 *             then switches. Then a thread other than main enables a patch and forks while
 *             two threads make patched calls.
 *   callback  A post_patch and a post_unpatch callback fork (the forking thread holds the
 *             control lock): both processes finish the operation, and go on patching,
 *             also with a transition that has to wait for a thread.
 *   control   A thread enables and disables a patch back to back, two threads make calls,
 *             and the main thread forks again and again: the fork waits for the control
 *             operation in progress; the child finishes what it inherited, and patches.
 *   kick      A thread other than main forks from inside a replaced function while the
 *             transition worker runs its kick; in the child that thread ends by returning
 *             from its start routine, and its exit must complete.
 *   first     A thread makes the process's first libklp call (which creates the library's
 *             state) while the main thread forks; the child must patch, unpatch and
 *             synchronize. Each try runs in a fresh process.
 *
 * Every call of outer() checks that the inner() it calls belongs to the same version (a
 * thread switches only outside both), and a call begun after a transition completed
 * must run the version it installed. A child reports by its exit status; an alarm makes
 * a hang in either process fail instead of blocking. Run by klp-ffi/tests/c_fork.rs
 * under both flavors. Needs GNU C (-std=gnu11). */
#include <klp.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Which process a failure is reported from. */
static const char *role = "parent";

/* _exit, not exit: a child must not run the parent's exit handlers. */
#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (!(cond)) {                                                          \
			printf("FAILED (%s): %s (line %d)\n", role, #cond, __LINE__);   \
			fflush(stdout);                                                 \
			_exit(1);                                                       \
		}                                                                       \
	} while (0)

/* How much slower than usual the program runs: 20 under valgrind (one thread at a time,
 * instrumented), else 1. */
static int slowness = 1;

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define UNDER_VALGRIND() RUNNING_ON_VALGRIND
#endif
#endif
#ifndef UNDER_VALGRIND
#define UNDER_VALGRIND() 0
#endif

/* How long a process may take before its alarm fails it, in seconds. */
#define CHILD_WATCHDOG (10 * slowness)
#define PARENT_WATCHDOG (60 * slowness)

/* How long a wait for a transition that must complete may take, in milliseconds. */
#define COMPLETES (5000 * slowness)

static void on_alarm(int sig)
{
	static const char head[] = "FAILED (";
	static const char tail[] = "): hung (the watchdog fired)\n";
	(void)sig;
	if (write(1, head, sizeof head - 1) < 0 || write(1, role, strlen(role)) < 0 ||
	    write(1, tail, sizeof tail - 1) < 0)
		_exit(3);
	_exit(3);
}

/* klp_synchronize succeeded. */
static int synchronized(void)
{
	return klp_synchronize() == 0;
}

/* fork, with the parent's output flushed first (the child would print it again). In the
 * child: the role and the watchdog. */
static pid_t fork_checked(void)
{
	fflush(stdout);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		role = "child";
		alarm(CHILD_WATCHDOG);
	}
	return pid;
}

/* The child's exit status must be 0. */
static void reap(pid_t pid, const char *what)
{
	int status;
	pid_t r;
	while ((r = waitpid(pid, &status, 0)) < 0 && errno == EINTR)
		;
	CHECK(r == pid);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return;
	if (WIFEXITED(status))
		printf("FAILED (%s): the child of %s exited with %d\n", role, what,
		       WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		printf("FAILED (%s): the child of %s was killed by signal %d\n", role, what,
		       WTERMSIG(status));
	else
		printf("FAILED (%s): the child of %s: status %#x\n", role, what, status);
	fflush(stdout);
	_exit(1);
}

/* ----- the patched functions ------------------------------------------------------- */

KLP_PATCHABLE(int, inner, (int x), (x))
{
	return x + 1;
}

/* 1 when inner() ran the original too, else the negative of what it ran. */
KLP_PATCHABLE(int, outer, (int x), (x))
{
	int r = inner(x);
	return r == x + 1 ? 1 : -(r - x);
}

static int inner_v2(int x)
{
	return x + 2;
}

static int outer_v2(int x)
{
	int r = inner(x);
	return r == x + 2 ? 2 : -(r - x);
}

static int inner_v3(int x)
{
	return x + 3;
}

static int outer_v3(int x)
{
	int r = inner(x);
	return r == x + 3 ? 3 : -(r - x);
}

static struct klp_func funcs_v2[] = {
	{ .old_name = "outer", .new_func = (void *)outer_v2 },
	{ .old_name = "inner", .new_func = (void *)inner_v2 },
	{ 0 }
};
static struct klp_func funcs_v3[] = {
	{ .old_name = "outer", .new_func = (void *)outer_v3 },
	{ .old_name = "inner", .new_func = (void *)inner_v3 },
	{ 0 }
};
static struct klp_object objs_v2[] = { { .name = NULL, .funcs = funcs_v2 }, { 0 } };
static struct klp_object objs_v3[] = { { .name = NULL, .funcs = funcs_v3 }, { 0 } };
/* v2, twice (one for a cycle, one kept across the fork), and v3 on top. */
static struct klp_patch patch_a = { .name = "fork_a", .objs = objs_v2 };
static struct klp_patch patch_b = { .name = "fork_b", .objs = objs_v2 };
static struct klp_patch patch_c = { .name = "fork_c", .objs = objs_v3 };

/* ----- threads making calls -------------------------------------------------------- */

/* What a call of outer() must return while the word is unchanged (a transition has
 * completed, the next one has not begun); 0: any version. The version is in the low 4
 * bits, above them the number of changes, so that a caller can tell that none happened
 * during its call. */
static atomic_uint expect_word = 1;
static atomic_int stop;

/* From now on, calls run `version` (0: any). */
static void expect(int version)
{
	unsigned w = atomic_load(&expect_word);
	atomic_store(&expect_word, (((w >> 4) + 1) << 4) | (unsigned)version);
}

static int expected(void)
{
	return (int)(atomic_load(&expect_word) & 15);
}

struct caller {
	pthread_t thread;
	atomic_long calls;
	/* The first wrong result and what was expected of it. */
	atomic_int bad, bad_expected;
};

static void *caller_main(void *arg)
{
	struct caller *c = arg;
	int i = 0;
	while (!atomic_load(&stop)) {
		unsigned before = atomic_load(&expect_word);
		int r = outer(i);
		int e = atomic_load(&expect_word) == before ? (int)(before & 15) : 0;
		if ((r < 1 || (e != 0 && r != e)) && atomic_load(&c->bad) == 0) {
			atomic_store(&c->bad_expected, e);
			atomic_store(&c->bad, r == 0 ? -100 : r);
		}
		atomic_fetch_add(&c->calls, 1);
		i = (i + 1) & 1023;
	}
	return NULL;
}

static void start_callers(struct caller *c, int n)
{
	for (int i = 0; i < n; i++)
		CHECK(pthread_create(&c[i].thread, NULL, caller_main, &c[i]) == 0);
}

/* Every caller has made a few more calls (with the version expected now). */
static void wait_calls(struct caller *c, int n)
{
	long seen[8];
	for (int i = 0; i < n; i++)
		seen[i] = atomic_load(&c[i].calls);
	for (int i = 0; i < n; i++)
		while (atomic_load(&c[i].calls) < seen[i] + 50)
			sched_yield();
}

/* Stop the callers, join them, check what they saw. */
static void stop_callers(struct caller *c, int n)
{
	atomic_store(&stop, 1);
	for (int i = 0; i < n; i++) {
		CHECK(pthread_join(c[i].thread, NULL) == 0);
		if (atomic_load(&c[i].bad) != 0) {
			printf("FAILED (%s): caller %d: outer() returned %d, expected %d (0: any "
			       "version)\n",
			       role, i, atomic_load(&c[i].bad), atomic_load(&c[i].bad_expected));
			fflush(stdout);
			_exit(1);
		}
		CHECK(atomic_load(&c[i].calls) > 0);
	}
	atomic_store(&stop, 0);
}

/* Enable `p`, wait for its transition: then every call runs `version`. */
static void enable_and_wait(struct klp_patch *p, int version)
{
	expect(0);
	CHECK(klp_enable_patch(p) == 0);
	CHECK(klp_wait_transition(COMPLETES) == 0);
	CHECK(klp_patch_enabled(p->name) == 1);
	expect(version);
	CHECK(outer(7) == version);
}

/* Disable `p`, wait for its transition: then every call runs `version`. */
static void disable_and_wait(struct klp_patch *p, int version)
{
	expect(0);
	CHECK(klp_patch_set_enabled(p->name, 0) == 0);
	CHECK(klp_wait_transition(COMPLETES) == 0);
	CHECK(klp_patch_enabled(p->name) == -ENOENT);
	expect(version);
	CHECK(outer(7) == version);
}

/* A thread that used libklp and now blocks, parked, until let go. */
static pthread_mutex_t park_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t park_cond = PTHREAD_COND_INITIALIZER;
static int park_go;
static atomic_int parked_in, parked_result;

static void *parked_main(void *arg)
{
	(void)arg;
	CHECK(outer(3) == expected());
	klp_park();
	atomic_store(&parked_in, 1);
	CHECK(pthread_mutex_lock(&park_mutex) == 0);
	while (!park_go)
		CHECK(pthread_cond_wait(&park_cond, &park_mutex) == 0);
	CHECK(pthread_mutex_unlock(&park_mutex) == 0);
	klp_unpark();
	atomic_store(&parked_result, outer(3));
	return NULL;
}

static void start_parked(pthread_t *t)
{
	CHECK(pthread_create(t, NULL, parked_main, NULL) == 0);
	while (!atomic_load(&parked_in))
		sched_yield();
}

/* Let the parked thread go; it returns the version then in place. */
static void release_parked(pthread_t t, int version)
{
	CHECK(pthread_mutex_lock(&park_mutex) == 0);
	park_go = 1;
	CHECK(pthread_cond_broadcast(&park_cond) == 0);
	CHECK(pthread_mutex_unlock(&park_mutex) == 0);
	CHECK(pthread_join(t, NULL) == 0);
	CHECK(atomic_load(&parked_result) == version);
}

/* ----- idle ------------------------------------------------------------------------ */

/* A thread that waits for grace periods back to back: a fork finds it inside one, as
 * often as not. */
static atomic_int stop_syncer;
static atomic_long syncs;

static void *syncer_main(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop_syncer)) {
		CHECK(synchronized());
		atomic_fetch_add(&syncs, 1);
	}
	return NULL;
}

static void wait_syncs(void)
{
	long seen = atomic_load(&syncs);
	while (atomic_load(&syncs) < seen + 10)
		sched_yield();
}

/* The child of `idle`: it inherits fork_b, stacks fork_c on it, unpatches both; a thread
 * of its own makes calls meanwhile. */
static void idle_child(void)
{
	CHECK(outer(1) == 2);
	CHECK(klp_patch_enabled("fork_b") == 1);
	CHECK(klp_patch_transition("fork_b") == 0);
	/* Nothing is in transition: at once. */
	CHECK(klp_wait_transition(0) == 0);
	CHECK(synchronized());
	static struct caller mine[1];
	start_callers(mine, 1);
	wait_calls(mine, 1);
	enable_and_wait(&patch_c, 3);
	CHECK(klp_patch_stack_order("fork_c") == 2);
	CHECK(synchronized());
	wait_calls(mine, 1);
	disable_and_wait(&patch_c, 2);
	wait_calls(mine, 1);
	CHECK(synchronized());
	disable_and_wait(&patch_b, 1);
	wait_calls(mine, 1);
	CHECK(synchronized());
	stop_callers(mine, 1);
	_exit(0);
}

static void mode_idle(void)
{
	static struct caller callers[3];
	pthread_t parked, syncer;
	start_callers(callers, 3);
	start_parked(&parked);
	CHECK(pthread_create(&syncer, NULL, syncer_main, NULL) == 0);
	wait_calls(callers, 3);

	/* A whole cycle first, then a patch left in place. */
	enable_and_wait(&patch_a, 2);
	wait_calls(callers, 3);
	CHECK(synchronized());
	disable_and_wait(&patch_a, 1);
	wait_calls(callers, 3);
	enable_and_wait(&patch_b, 2);
	wait_calls(callers, 3);
	wait_syncs();

	pid_t pid = fork_checked();
	if (pid == 0)
		idle_child();

	/* The parent goes on while the child works, its threads still calling. */
	wait_calls(callers, 3);
	disable_and_wait(&patch_b, 1);
	wait_calls(callers, 3);
	enable_and_wait(&patch_c, 3);
	wait_calls(callers, 3);
	CHECK(synchronized());
	disable_and_wait(&patch_c, 1);
	wait_calls(callers, 3);
	wait_syncs();
	reap(pid, "idle");
	/* And after the child has gone. */
	enable_and_wait(&patch_a, 2);
	CHECK(synchronized());
	disable_and_wait(&patch_a, 1);
	release_parked(parked, 1);
	stop_callers(callers, 3);
	atomic_store(&stop_syncer, 1);
	CHECK(pthread_join(syncer, NULL) == 0);
	printf("ok: idle: the child patched, synchronized and unpatched; so did the parent\n");
}

/* ----- mid ------------------------------------------------------------------------- */

static atomic_int held_inside, held_leave;

/* held(1) stays inside until held_leave, running; held(0) returns at once. */
KLP_PATCHABLE(int, held, (int x), (x))
{
	if (x) {
		atomic_store(&held_inside, 1);
		while (!atomic_load(&held_leave))
			; /* running, not parked: only a return lets this thread switch */
	}
	return 10 + x;
}

static int held_v2(int x)
{
	return 20 + x;
}

static struct klp_func funcs_held[] = { { .old_name = "held", .new_func = (void *)held_v2 },
					{ 0 } };
static struct klp_object objs_held[] = { { .name = NULL, .funcs = funcs_held }, { 0 } };
static struct klp_patch patch_held = { .name = "fork_mid", .objs = objs_held };

static atomic_int holder_first, holder_second;

static void *holder_main(void *arg)
{
	(void)arg;
	atomic_store(&holder_first, held(1));
	atomic_store(&holder_second, held(0));
	return NULL;
}

/* A patch cycle whose transition needs the worker: a thread of this process is inside
 * held() when the patch comes, and switches only once it returns. */
static void held_cycle(void)
{
	atomic_store(&held_inside, 0);
	atomic_store(&held_leave, 0);
	pthread_t holder;
	CHECK(pthread_create(&holder, NULL, holder_main, NULL) == 0);
	while (!atomic_load(&held_inside))
		sched_yield();
	CHECK(klp_enable_patch(&patch_held) == 0);
	CHECK(klp_wait_transition(100) == -ETIMEDOUT);
	atomic_store(&held_leave, 1);
	CHECK(klp_wait_transition(COMPLETES) == 0);
	CHECK(pthread_join(holder, NULL) == 0);
	CHECK(atomic_load(&holder_first) == 11);
	CHECK(atomic_load(&holder_second) == 20);
	CHECK(klp_patch_set_enabled("fork_mid", 0) == 0);
	CHECK(klp_wait_transition(COMPLETES) == 0);
	CHECK(held(0) == 10);
}

static void mid_child(void)
{
	/* The thread inside held() is not here: the transition completes (a new worker;
	 * it may have completed already). */
	CHECK(klp_wait_transition(COMPLETES) == 0);
	CHECK(klp_patch_transition("fork_mid") == 0);
	CHECK(held(0) == 20);
	CHECK(synchronized());
	CHECK(klp_patch_set_enabled("fork_mid", 0) == 0);
	CHECK(klp_wait_transition(COMPLETES) == 0);
	CHECK(klp_patch_enabled("fork_mid") == -ENOENT);
	CHECK(held(0) == 10);
	/* Enabled again, the same struct, once it was released. */
	CHECK(klp_enable_patch(&patch_held) == 0);
	CHECK(klp_wait_transition(COMPLETES) == 0);
	CHECK(held(0) == 20);
	CHECK(synchronized());
	CHECK(klp_patch_set_enabled("fork_mid", 0) == 0);
	CHECK(klp_wait_transition(COMPLETES) == 0);
	CHECK(held(0) == 10);
	/* And a reversal: disable in the middle of a patching transition. */
	static struct caller mine[1];
	start_callers(mine, 1);
	expect(0);
	CHECK(klp_enable_patch(&patch_a) == 0);
	CHECK(klp_patch_set_enabled("fork_a", 0) == 0);
	CHECK(klp_wait_transition(COMPLETES) == 0);
	CHECK(klp_patch_enabled("fork_a") == -ENOENT);
	expect(1);
	wait_calls(mine, 1);
	stop_callers(mine, 1);
	CHECK(synchronized());
	_exit(0);
}

static void mode_mid(void)
{
	pthread_t holder;
	CHECK(pthread_create(&holder, NULL, holder_main, NULL) == 0);
	while (!atomic_load(&held_inside))
		sched_yield();
	CHECK(klp_enable_patch(&patch_held) == 0);
	/* The holder is inside the original: the transition waits for it. */
	CHECK(klp_wait_transition(100) == -ETIMEDOUT);
	CHECK(klp_patch_transition("fork_mid") == 1);

	pid_t pid = fork_checked();
	if (pid == 0)
		mid_child();

	reap(pid, "mid");
	/* Still held here: the child's completion is its own. */
	CHECK(klp_wait_transition(100) == -ETIMEDOUT);
	CHECK(klp_patch_transition("fork_mid") == 1);
	atomic_store(&held_leave, 1);
	CHECK(klp_wait_transition(COMPLETES) == 0);
	CHECK(pthread_join(holder, NULL) == 0);
	CHECK(atomic_load(&holder_first) == 11);
	CHECK(atomic_load(&holder_second) == 20);
	CHECK(held(0) == 20);
	CHECK(synchronized());
	CHECK(klp_patch_set_enabled("fork_mid", 0) == 0);
	CHECK(klp_wait_transition(COMPLETES) == 0);
	CHECK(held(0) == 10);
	printf("ok: mid: the transition completed in the child, and in the parent once let go\n");
}

/* ----- inside ---------------------------------------------------------------------- */

static struct klp_patch patch_forker;

/* forker(1) enables a patch that replaces it and forks, from inside the original; it
 * returns fork's result. forker(0) returns 30. */
KLP_PATCHABLE(int, forker, (int x), (x))
{
	if (!x)
		return 30;
	CHECK(klp_enable_patch(&patch_forker) == 0);
	/* This thread is inside the original: the transition waits for it. */
	CHECK(klp_wait_transition(100) == -ETIMEDOUT);
	pid_t pid = fork_checked();
	/* In both processes this thread is still inside, and has not switched. */
	CHECK(klp_wait_transition(50) == -ETIMEDOUT);
	CHECK(klp_thread_patch_state() == 0);
	CHECK(klp_patch_transition("fork_inside") == 1);
	return pid;
}

static int forker_v2(int x)
{
	return x ? -1 : 40;
}

static struct klp_func funcs_forker[] = {
	{ .old_name = "forker", .new_func = (void *)forker_v2 },
	{ 0 }
};
static struct klp_object objs_forker[] = { { .name = NULL, .funcs = funcs_forker }, { 0 } };
static struct klp_patch patch_forker = { .name = "fork_inside", .objs = objs_forker };

/* The thread other than main that forks: it enables fork_a and forks at once. */
static atomic_int other_pid;

static void other_child(void)
{
	/* Only this thread is here: the callers and the main thread are not. */
	CHECK(klp_wait_transition(COMPLETES) == 0);
	expect(2);
	CHECK(outer(1) == 2);
	CHECK(synchronized());
	static struct caller mine[1];
	start_callers(mine, 1);
	wait_calls(mine, 1);
	disable_and_wait(&patch_a, 1);
	wait_calls(mine, 1);
	enable_and_wait(&patch_c, 3);
	wait_calls(mine, 1);
	CHECK(synchronized());
	disable_and_wait(&patch_c, 1);
	stop_callers(mine, 1);
	_exit(0);
}

static void *other_main(void *arg)
{
	(void)arg;
	CHECK(outer(1) == 1);
	expect(0);
	CHECK(klp_enable_patch(&patch_a) == 0);
	pid_t pid = fork_checked();
	if (pid == 0)
		other_child();
	atomic_store(&other_pid, pid);
	return NULL;
}

static void mode_inside(void)
{
	/* From inside a function that the transition replaces. */
	int pid = forker(1);
	/* Returned: this thread switches, the transition completes. */
	CHECK(klp_wait_transition(COMPLETES) == 0);
	CHECK(forker(0) == 40);
	CHECK(synchronized());
	CHECK(klp_patch_set_enabled("fork_inside", 0) == 0);
	CHECK(klp_wait_transition(COMPLETES) == 0);
	CHECK(forker(0) == 30);
	if (pid == 0) {
		CHECK(klp_enable_patch(&patch_forker) == 0);
		CHECK(klp_wait_transition(COMPLETES) == 0);
		CHECK(forker(0) == 40);
		_exit(0);
	}
	reap(pid, "inside (from a replaced function)");
	printf("ok: inside: forked from inside a replaced function, both switched on return\n");

	/* From a thread other than main, while two threads make patched calls. */
	static struct caller callers[2];
	start_callers(callers, 2);
	wait_calls(callers, 2);
	pthread_t other;
	CHECK(pthread_create(&other, NULL, other_main, NULL) == 0);
	CHECK(pthread_join(other, NULL) == 0);
	CHECK(klp_wait_transition(COMPLETES) == 0);
	expect(2);
	wait_calls(callers, 2);
	CHECK(synchronized());
	disable_and_wait(&patch_a, 1);
	wait_calls(callers, 2);
	reap(atomic_load(&other_pid), "inside (from another thread)");
	enable_and_wait(&patch_c, 3);
	wait_calls(callers, 2);
	disable_and_wait(&patch_c, 1);
	stop_callers(callers, 2);
	printf("ok: inside: forked from another thread while two threads made calls\n");
}

/* ----- callback -------------------------------------------------------------------- */

static pid_t main_tid;
/* fork's result in the last callback that forked; -2: none forked. */
static pid_t cb_pid = -2;
static atomic_int cb_forks;

/* Fork from a callback, on the thread that enables or disables. */
static void fork_in_callback(struct klp_object *obj)
{
	(void)obj;
	/* Only the parent's operations fork (a child does not fork again). */
	if (strcmp(role, "parent") != 0)
		return;
	/* The operation completes at once (no thread is left to wait for), so the callback
	 * runs on the thread that enables or disables, never on the transition worker. */
	CHECK((pid_t)syscall(SYS_gettid) == main_tid);
	atomic_fetch_add(&cb_forks, 1);
	cb_pid = fork_checked();
}

static struct klp_object objs_cb[] = {
	{ .name = NULL,
	  .funcs = funcs_v2,
	  .callbacks = { .post_patch = fork_in_callback, .post_unpatch = fork_in_callback } },
	{ 0 }
};
static struct klp_patch patch_cb = { .name = "fork_cb", .objs = objs_cb };

static void mode_callback(void)
{
	main_tid = (pid_t)syscall(SYS_gettid);
	/* The transition worker exists before the forks (the child has none of its own). */
	held_cycle();
	/* A thread parked outside patchable code: it can be switched at once. */
	pthread_t parked;
	start_parked(&parked);

	/* post_patch forks: both processes finish the enable. */
	CHECK(klp_enable_patch(&patch_cb) == 0);
	CHECK(cb_pid != -2);
	pid_t pid = cb_pid;
	cb_pid = -2;
	CHECK(klp_patch_transition("fork_cb") == 0);
	CHECK(klp_wait_transition(COMPLETES) == 0);
	expect(2);
	CHECK(outer(1) == 2);
	CHECK(synchronized());
	if (pid == 0) {
		/* The child unpatches (its callback does not fork), and patches again, also
		 * with a transition that its own worker completes. */
		disable_and_wait(&patch_cb, 1);
		CHECK(synchronized());
		enable_and_wait(&patch_c, 3);
		disable_and_wait(&patch_c, 1);
		held_cycle();
		_exit(0);
	}
	reap(pid, "callback (post_patch)");

	/* post_unpatch forks: both processes finish the disable. */
	CHECK(klp_patch_set_enabled("fork_cb", 0) == 0);
	CHECK(cb_pid != -2);
	pid = cb_pid;
	CHECK(klp_wait_transition(COMPLETES) == 0);
	CHECK(klp_patch_enabled("fork_cb") == -ENOENT);
	expect(1);
	CHECK(outer(1) == 1);
	CHECK(synchronized());
	if (pid == 0) {
		enable_and_wait(&patch_c, 3);
		CHECK(synchronized());
		disable_and_wait(&patch_c, 1);
		held_cycle();
		_exit(0);
	}
	reap(pid, "callback (post_unpatch)");
	CHECK(atomic_load(&cb_forks) == 2);
	enable_and_wait(&patch_c, 3);
	disable_and_wait(&patch_c, 1);
	held_cycle();
	release_parked(parked, 1);
	printf("ok: callback: forked from post_patch and post_unpatch, both processes went on\n");
}

/* ----- control --------------------------------------------------------------------- */

/* A thread that enables and disables fork_a back to back while the main thread forks: a
 * fork waits for the control operation in progress, and the child finds the patch
 * enabled, disabled or in transition. */
static atomic_int stop_cycler;

static void *cycler_main(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop_cycler)) {
		CHECK(klp_enable_patch(&patch_a) == 0);
		CHECK(klp_wait_transition(COMPLETES) == 0);
		CHECK(synchronized());
		CHECK(klp_patch_set_enabled("fork_a", 0) == 0);
		CHECK(klp_wait_transition(COMPLETES) == 0);
	}
	return NULL;
}

static void control_child(void)
{
	CHECK(klp_wait_transition(COMPLETES) == 0);
	if (klp_patch_enabled("fork_a") == 1) {
		CHECK(outer(1) == 2);
		disable_and_wait(&patch_a, 1);
	}
	CHECK(outer(1) == 1);
	CHECK(synchronized());
	enable_and_wait(&patch_c, 3);
	CHECK(synchronized());
	disable_and_wait(&patch_c, 1);
	_exit(0);
}

static void mode_control(void)
{
	/* The library's state exists before the other threads start (a fork while it is
	 * being created is the case `first`). */
	(void)klp_shadow_get(NULL, 1);
	CHECK(klp_wait_transition(0) == 0);
	CHECK(synchronized());
	static struct caller callers[2];
	expect(0);
	start_callers(callers, 2);
	pthread_t cycler;
	CHECK(pthread_create(&cycler, NULL, cycler_main, NULL) == 0);
	for (int i = 0; i < 40; i++) {
		pid_t pid = fork_checked();
		if (pid == 0)
			control_child();
		reap(pid, "control");
	}
	atomic_store(&stop_cycler, 1);
	CHECK(pthread_join(cycler, NULL) == 0);
	stop_callers(callers, 2);
	printf("ok: control: 40 forks while another thread enabled and disabled a patch\n");
}

/* ----- kick ----------------------------------------------------------------------- */

/* A thread other than main forks from inside a function that the transition replaces,
 * while the transition worker runs the thread's kick (which takes a while). In the child
 * that thread then returns from its start routine: its exit must complete (another
 * thread joins it, then ends the child). */
static atomic_int kick_called, kicked_inside;
static atomic_int kicked_pid;

static void slow_kick(void *data)
{
	(void)data;
	atomic_store(&kick_called, 1);
	struct timespec ts = { .tv_sec = 0, .tv_nsec = 300 * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* kicked(1) waits inside, running, until its thread's kick is called, then forks and
 * returns fork's result; kicked(0) returns 50. */
KLP_PATCHABLE(int, kicked, (int x), (x))
{
	if (!x)
		return 50;
	atomic_store(&kicked_inside, 1);
	while (!atomic_load(&kick_called))
		; /* running, not parked: the transition kicks this thread */
	return fork_checked();
}

static int kicked_v2(int x)
{
	return x ? -1 : 60;
}

static struct klp_func funcs_kicked[] = {
	{ .old_name = "kicked", .new_func = (void *)kicked_v2 },
	{ 0 }
};
static struct klp_object objs_kicked[] = { { .name = NULL, .funcs = funcs_kicked }, { 0 } };
static struct klp_patch patch_kicked = { .name = "fork_kick", .objs = objs_kicked };

/* In the child: the copy of the thread that forked. */
static pthread_t kicked_thread;

/* Waits for the thread that forked to be gone, and ends the child. */
static void *join_and_exit(void *arg)
{
	(void)arg;
	CHECK(pthread_join(kicked_thread, NULL) == 0);
	_exit(0);
}

static void *kicked_main(void *arg)
{
	(void)arg;
	CHECK(klp_set_thread_kick(slow_kick, NULL) == 0);
	int pid = kicked(1);
	if (pid == 0) {
		/* The child: this thread is the only one of the program. */
		CHECK(klp_wait_transition(COMPLETES) == 0);
		CHECK(kicked(0) == 60);
		CHECK(synchronized());
		/* This thread ends like any other: its exit must not wait for the kick that
		 * the parent's worker was calling. */
		kicked_thread = pthread_self();
		pthread_t joiner;
		CHECK(pthread_create(&joiner, NULL, join_and_exit, NULL) == 0);
		return NULL;
	}
	atomic_store(&kicked_pid, pid);
	return NULL;
}

/* reap, but a child that has not exited within its watchdog (which a thread's exit with
 * every signal blocked would not hear) is killed and reported. */
static void reap_within(pid_t pid, const char *what)
{
	for (int waited = 0; waited < CHILD_WATCHDOG * 1000; waited += 10) {
		int status;
		pid_t r = waitpid(pid, &status, WNOHANG);
		CHECK(r == 0 || r == pid);
		if (r == pid) {
			if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
				return;
			printf("FAILED (%s): the child of %s: status %#x\n", role, what, status);
			fflush(stdout);
			_exit(1);
		}
		struct timespec ts = { .tv_sec = 0, .tv_nsec = 10 * 1000000L };
		nanosleep(&ts, NULL);
	}
	kill(pid, SIGKILL);
	(void)waitpid(pid, NULL, 0);
	printf("FAILED (%s): the child of %s did not exit (killed)\n", role, what);
	fflush(stdout);
	_exit(1);
}

static void mode_kick(void)
{
	pthread_t t;
	CHECK(pthread_create(&t, NULL, kicked_main, NULL) == 0);
	while (!atomic_load(&kicked_inside))
		sched_yield();
	CHECK(klp_enable_patch(&patch_kicked) == 0);
	CHECK(pthread_join(t, NULL) == 0);
	CHECK(klp_wait_transition(COMPLETES) == 0);
	CHECK(kicked(0) == 60);
	reap_within(atomic_load(&kicked_pid), "kick");
	CHECK(klp_patch_set_enabled("fork_kick", 0) == 0);
	CHECK(klp_wait_transition(COMPLETES) == 0);
	CHECK(kicked(0) == 50);
	printf("ok: kick: forked while the thread's kick ran; the thread exited in the child\n");
}

/* ----- first ---------------------------------------------------------------------- */

/* What the thread of a subject does first; each subject tries the next. */
static atomic_int first_started;
static int first_kind;

static void *first_user(void *arg)
{
	(void)arg;
	atomic_store(&first_started, 1);
	switch (first_kind) {
	case 0:
		(void)klp_shadow_get(NULL, 1); /* the shadow store and the log */
		break;
	case 1:
		(void)klp_thread_patch_state(); /* the engine */
		break;
	case 2:
		(void)outer(1); /* the call path */
		break;
	default:
		CHECK(klp_enable_patch(&patch_a) == 0); /* all of it */
		break;
	}
	return NULL;
}

/* A process that has not used libklp yet: a thread makes the process's first libklp call
 * while the main thread forks. The child patches, unpatches and synchronizes. */
static void first_subject(int kind)
{
	role = "subject";
	alarm(2 * CHILD_WATCHDOG); /* after the child's */
	first_kind = kind;
	pthread_t t;
	CHECK(pthread_create(&t, NULL, first_user, NULL) == 0);
	while (!atomic_load(&first_started))
		;
	pid_t pid = fork_checked();
	if (pid == 0) {
		CHECK(klp_set_retry_period(10) == 0);
		CHECK(klp_shadow_get(NULL, 1) == NULL);
		CHECK(klp_wait_transition(COMPLETES) == 0);
		/* The thread's enable may have come before the fork. */
		if (klp_patch_enabled("fork_a") == 1)
			disable_and_wait(&patch_a, 1);
		CHECK(outer(1) == 1);
		enable_and_wait(&patch_c, 3);
		CHECK(synchronized());
		disable_and_wait(&patch_c, 1);
		_exit(0);
	}
	reap(pid, "first");
	CHECK(pthread_join(t, NULL) == 0);
	_exit(0);
}

static void mode_first(void)
{
	/* This process never uses libklp: each subject is a fresh copy of it. */
	for (int i = 0; i < 8; i++) {
		pid_t pid = fork_checked();
		if (pid == 0)
			first_subject(i % 4);
		reap(pid, "a subject of first");
	}
	printf("ok: first: a fork during another thread's first libklp call left the child "
	       "working\n");
}

int main(int argc, char **argv)
{
	if (UNDER_VALGRIND())
		slowness = 20;
	CHECK(argc == 2);
	struct sigaction sa = { .sa_handler = on_alarm };
	sigemptyset(&sa.sa_mask);
	CHECK(sigaction(SIGALRM, &sa, NULL) == 0);
	alarm(PARENT_WATCHDOG);
	if (strcmp(argv[1], "first") == 0) {
		/* Before any libklp call of this process. */
		mode_first();
		printf("done\n");
		return 0;
	}
	CHECK(klp_set_retry_period(10) == 0);
	if (strcmp(argv[1], "idle") == 0)
		mode_idle();
	else if (strcmp(argv[1], "mid") == 0)
		mode_mid();
	else if (strcmp(argv[1], "inside") == 0)
		mode_inside();
	else if (strcmp(argv[1], "callback") == 0)
		mode_callback();
	else if (strcmp(argv[1], "control") == 0)
		mode_control();
	else if (strcmp(argv[1], "kick") == 0)
		mode_kick();
	else
		CHECK(!"a mode: idle, mid, inside, callback, control, kick or first");
	printf("done\n");
	return 0;
}
