/* A patch in a shared object stays mapped while it can run: the program closes the
 * patch module while its patch is enabled and keeps calling the replacement; only once
 * the patch is disabled and released is the module unmapped (its destructor runs).
 * In the `forced` mode, the unpatching transition is forced while a thread sleeps in
 * the replacement, inside the module; the program closes the module and wakes the
 * thread, which returns through the module's code: the forced patch's module is never
 * unmapped. Run by klp-ffi/tests/c_patch_so.rs with the module's path and the mode
 * (`release` or `forced`). Needs GNU C. */
#include <klp.h>

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (!(cond)) {                                                          \
			printf("FAILED: %s (line %d)\n", #cond, __LINE__);              \
			exit(1);                                                        \
		}                                                                       \
	} while (0)

static sem_t inside, leave;

KLP_PATCHABLE(const char *, greeting, (void), ())
{
	return "original greeting";
}

/* Called in the replacement: blocks without parking, so the transition waits. */
static void hold(void)
{
	sem_post(&inside);
	sem_wait(&leave);
}

static void handler(int level, const char *line, void *data)
{
	(void)data;
	if (level <= KLP_LOG_NOTICE) {
		printf("%s\n", line);
		fflush(stdout);
	}
}

static void *holder(void *arg)
{
	(void)arg;
	printf("holder: %s\n", greeting());
	return NULL;
}

/* Whether the object `path` is still mapped (open by anyone). */
static int mapped(const char *path)
{
	void *h = dlopen(path, RTLD_LAZY | RTLD_NOLOAD);
	if (h)
		dlclose(h);
	return h != NULL;
}

/* Wait up to 5 s for `path` to be unmapped. */
static int unmapped_soon(const char *path)
{
	for (int i = 0; i < 500; i++) {
		if (!mapped(path))
			return 1;
		struct timespec ts = { 0, 10 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	return 0;
}

int main(int argc, char **argv)
{
	CHECK(argc == 3);
	const char *path = argv[1];
	int forced = strcmp(argv[2], "forced") == 0;
	setvbuf(stdout, NULL, _IOLBF, 0);
	klp_set_log_handler(handler, NULL);
	CHECK(klp_set_retry_period(10) == 0);
	sem_init(&inside, 0, 0);
	sem_init(&leave, 0, 0);
	printf("%s\n", greeting());

	printf("%% insmod patch_mod\n");
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	CHECK(h != NULL);
	int *ret = dlsym(h, "patch_mod_init_ret");
	CHECK(ret != NULL && *ret == 0);
	CHECK(klp_wait_transition(5000) == 0);
	printf("%s\n", greeting());

	if (forced) {
		void (**hook)(void) = dlsym(h, "patch_mod_hook");
		CHECK(hook != NULL);
		*hook = hold;
		pthread_t t;
		CHECK(pthread_create(&t, NULL, holder, NULL) == 0);
		sem_wait(&inside);
		printf("%% echo 0 > /sys/kernel/livepatch/patch_mod/enabled\n");
		CHECK(klp_patch_set_enabled("patch_mod", 0) == 0);
		CHECK(klp_wait_transition(100) == -ETIMEDOUT);
		printf("%% echo 1 > /sys/kernel/livepatch/patch_mod/force\n");
		CHECK(klp_patch_force("patch_mod") == 0);
		CHECK(klp_wait_transition(5000) == 0);
		printf("%s\n", greeting());
		/* The program lets go of the module, whose code the holder still runs. */
		printf("%% rmmod patch_mod\n");
		CHECK(dlclose(h) == 0);
		sem_post(&leave);
		pthread_join(t, NULL);
		/* Never released: give a release every chance to happen, then check. */
		for (int i = 0; i < 5; i++)
			klp_synchronize();
		struct timespec ts = { 0, 200 * 1000 * 1000 };
		nanosleep(&ts, NULL);
		CHECK(mapped(path));
		printf("still mapped\n");
		return 0;
	}

	/* The program lets go of the module: the patch still runs from it. */
	printf("dlclose while enabled\n");
	CHECK(dlclose(h) == 0);
	CHECK(mapped(path));
	printf("%s\n", greeting());

	printf("%% echo 0 > /sys/kernel/livepatch/patch_mod/enabled\n");
	CHECK(klp_patch_set_enabled("patch_mod", 0) == 0);
	CHECK(klp_wait_transition(5000) == 0);
	printf("%s\n", greeting());
	CHECK(unmapped_soon(path));
	printf("unmapped\n");

	/* It can be loaded again, and enables again. */
	printf("%% insmod patch_mod\n");
	h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	CHECK(h != NULL);
	CHECK(klp_wait_transition(5000) == 0);
	printf("%s\n", greeting());
	printf("%% echo 0 > /sys/kernel/livepatch/patch_mod/enabled\n");
	CHECK(klp_patch_set_enabled("patch_mod", 0) == 0);
	CHECK(klp_wait_transition(5000) == 0);
	printf("%% rmmod patch_mod\n");
	CHECK(dlclose(h) == 0);
	CHECK(unmapped_soon(path));
	printf("unmapped\n");
	return 0;
}
