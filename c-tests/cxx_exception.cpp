// A C++ exception thrown by a callback passes through patchable C functions (their
// wrappers never leave) and is caught in C++; the thread must still switch at its next
// switch point, and the transition complete. The opposite is checked too: a thread
// really inside a replaced function holds the transition up. The patchable functions
// and the patch are in cxx_exception_lib.c (gcc -fexceptions). Run by
// klp-ffi/tests/c_unwind.rs with g++.
#include <klp.h>

#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

extern "C" {
typedef int (*cxx_cb)(int x);
typedef void (*cxx_spin)(void);
int c_call(cxx_cb cb, int x);
int c_outer(cxx_cb cb, int x);
int c_plain(int x);
void c_holder(cxx_spin spin);
extern struct klp_patch cx_patch;
}

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (!(cond)) {                                                          \
			std::printf("FAILED: %s (line %d)\n", #cond, __LINE__);         \
			std::fflush(stdout);                                            \
			std::exit(1);                                                   \
		}                                                                       \
	} while (0)

static const int ETIMEDOUT_ = 110;
static const int ENOENT_ = 2;

struct Thrown : std::runtime_error {
	explicit Thrown(int x) : std::runtime_error("thrown"), value(x) {}
	int value;
};

// The callbacks: identity, a throw, and a spin (really inside, running, not parked).
extern "C" int identity(int x)
{
	return x;
}

extern "C" int thrower(int x)
{
	throw Thrown(x);
}

static std::atomic<int> spinning{ 0 }, spin_release{ 0 };

extern "C" int spinner(int x)
{
	spinning = 1;
	while (!spin_release)
		sched_yield();
	spinning = 0;
	return x;
}

// The holder: inside c_holder until released.
static std::atomic<int> holding{ 0 }, hold_release{ 0 };

extern "C" void hold(void)
{
	holding = 1;
	while (!hold_release)
		sched_yield();
	holding = 0;
}

static pthread_barrier_t bar;

// Meet the other thread, parked. Inlined, like switch_point: klp_park and
// klp_update_patch_state forget the patchable functions left below their caller, which
// must be the thread's function (a frame called from it could lie where they were).
static inline __attribute__((always_inline)) void meet()
{
	klp_park();
	pthread_barrier_wait(&bar);
	klp_unpark();
}

static void join(pthread_t t)
{
	klp_park();
	CHECK(pthread_join(t, nullptr) == 0);
	klp_unpark();
}

static pthread_t holder_thread;

static void start_holder()
{
	hold_release = 0;
	CHECK(pthread_create(
		      &holder_thread, nullptr,
		      [](void *) -> void * {
			      c_holder(hold);
			      return nullptr;
		      },
		      nullptr) == 0);
	while (!holding)
		sched_yield();
}

static void finish_held_transition()
{
	CHECK(klp_patch_transition("cx") == 1);
	CHECK(klp_wait_transition(60) == -ETIMEDOUT_);
	hold_release = 1;
	join(holder_thread);
	CHECK(klp_wait_transition(10000) == 0);
}

static void disable()
{
	CHECK(klp_patch_set_enabled("cx", 0) == 0);
	CHECK(klp_wait_transition(10000) == 0);
	CHECK(klp_patch_enabled("cx") == -ENOENT_);
}

enum SwitchPoint { SP_CALL, SP_UPDATE, SP_PARK };
static SwitchPoint sp_kind = SP_CALL;

static const char *sp_name()
{
	return sp_kind == SP_CALL ? "a patchable call"
	       : sp_kind == SP_UPDATE ? "klp_update_patch_state()"
				      : "parking only";
}

static inline __attribute__((always_inline)) void switch_point()
{
	if (sp_kind == SP_CALL)
		CHECK(c_plain(5) == 5);
	else if (sp_kind == SP_UPDATE)
		klp_update_patch_state();
}

// Call fn(cb, x) and return the thrown value, or -1 if nothing was thrown.
static int catching(int (*fn)(cxx_cb, int), int x)
{
	try {
		(void)fn(thrower, x);
	} catch (const Thrown &e) {
		return e.value;
	}
	return -1;
}

// The scenario thread: throws through fn, then (meets 1, 2) reaches a switch point and
// checks that it switched to `target`, then (meets 3, 4) waits for the completion.
struct Scenario {
	int (*fn)(cxx_cb, int);
	int target;      // the thread's patch state after its switch point
	int expect_after; // fn(identity, 1) after it
};
static Scenario scenario;

static void *scenario_thread(void *)
{
	CHECK(catching(scenario.fn, 7) == 7);
	meet(); // 1: main enables or disables
	meet(); // 2
	switch_point();
	if (sp_kind != SP_PARK) {
		CHECK(klp_thread_patch_state() == scenario.target);
		CHECK(scenario.fn(identity, 1) == scenario.expect_after);
	}
	meet(); // 3: main completes the transition
	meet(); // 4
	CHECK(scenario.fn(identity, 1) == scenario.expect_after);
	return nullptr;
}

static void run_scenario(bool disabling)
{
	pthread_t t;
	start_holder();
	CHECK(pthread_create(&t, nullptr, scenario_thread, nullptr) == 0);
	meet(); // 1
	if (disabling) {
		CHECK(klp_patch_set_enabled("cx", 0) == 0);
	} else {
		CHECK(klp_enable_patch(&cx_patch) == 0);
	}
	meet(); // 2
	meet(); // 3
	finish_held_transition();
	meet(); // 4
	join(t);
}

static void test_really_inside_holds_the_transition()
{
	pthread_t t;
	spin_release = 0;
	CHECK(pthread_create(
		      &t, nullptr,
		      [](void *) -> void * {
			      CHECK(c_call(spinner, 1) == 101);
			      return nullptr;
		      },
		      nullptr) == 0);
	while (!spinning)
		sched_yield();
	CHECK(klp_enable_patch(&cx_patch) == 0);
	CHECK(klp_wait_transition(100) == -ETIMEDOUT_);
	CHECK(klp_patch_transition("cx") == 1);
	spin_release = 1;
	CHECK(klp_wait_transition(10000) == 0);
	join(t);
	CHECK(c_call(identity, 1) == 201);
	disable();
	std::printf("ok: a thread really inside c_call holds the transition until it "
		    "returns\n");
}

static void test_throw_through_original()
{
	scenario = Scenario{ c_call, 1, 201 };
	run_scenario(false);
	CHECK(klp_patch_enabled("cx") == 1);
	CHECK(c_call(identity, 1) == 201);
	disable();
	std::printf("ok: an exception through the original c_call, then %s: the thread "
		    "switches, the transition completes\n",
		    sp_name());
}

static void test_throw_through_replacement()
{
	CHECK(klp_enable_patch(&cx_patch) == 0);
	CHECK(klp_wait_transition(10000) == 0);
	scenario = Scenario{ c_call, 0, 101 };
	run_scenario(true);
	CHECK(klp_patch_enabled("cx") == -ENOENT_);
	CHECK(c_call(identity, 1) == 101);
	std::printf("ok: an exception through the replacement of c_call, then %s: the "
		    "thread switches back, the unpatching transition completes\n",
		    sp_name());
}

static void test_throw_through_nested()
{
	scenario = Scenario{ c_outer, 1, 2201 };
	run_scenario(false);
	CHECK(c_outer(identity, 1) == 2201);
	disable();
	CHECK(c_outer(identity, 1) == 1101);
	std::printf("ok: an exception through c_outer and c_call, then %s: the thread "
		    "switches\n",
		    sp_name());
}

// argv[1]: "call", "update" or "park", as longjmp.c.
int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "call";
	if (std::strcmp(mode, "call") == 0)
		sp_kind = SP_CALL;
	else if (std::strcmp(mode, "update") == 0)
		sp_kind = SP_UPDATE;
	else if (std::strcmp(mode, "park") == 0)
		sp_kind = SP_PARK;
	else
		CHECK(!"mode is call, update or park");

	CHECK(klp_set_retry_period(20) == 0);
	CHECK(pthread_barrier_init(&bar, nullptr, 2) == 0);
	CHECK(c_call(identity, 1) == 101 && c_outer(identity, 1) == 1101);
	// The exception really passes through C: caught here, on the main thread.
	CHECK(catching(c_outer, 3) == 3);
	CHECK(c_plain(2) == 2);

	if (sp_kind == SP_CALL)
		test_really_inside_holds_the_transition();
	test_throw_through_original();
	test_throw_through_replacement();
	test_throw_through_nested();

	CHECK(pthread_barrier_destroy(&bar) == 0);
	std::printf("done\n");
	return 0;
}
