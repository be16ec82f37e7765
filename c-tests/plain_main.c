/* A patch of a function that a shared object without KLP_OBJECT (c-tests/plain_lib.c)
 * defines: the function belongs to the main program's object (vmlinux), so closing the
 * shared object unloads no object and reverts nothing. The program closes it while the
 * patch is enabled: libklp holds it (its site is in the patch's use), so it stays mapped
 * and its destructor does not run; once the patch is disabled and released it is
 * unmapped (the destructor runs), its function is no longer known, and it can be opened
 * and patched again. Run by klp-ffi/tests/c_lifecycle.rs with the shared object's path;
 * needs GNU C. */
#include <klp.h>

#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (!(cond)) {                                                          \
			printf("FAILED: %s (line %d)\n", #cond, __LINE__);              \
			exit(1);                                                        \
		}                                                                       \
	} while (0)

static int replacement(int x)
{
	return x + 100;
}

static struct klp_func funcs[] = { { .old_name = "plain_value", .new_func = (void *)replacement },
				   { 0 } };
static struct klp_object objs[] = { { .name = NULL, .funcs = funcs }, { 0 } };
static struct klp_patch patch = { .name = "plain_patch", .objs = objs };

static const char *path;
static atomic_int unloaded;
static int (*plain_value)(int);

static void on_unload(void)
{
	atomic_fetch_add(&unloaded, 1);
}

static void *open_lib(void)
{
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h)
		printf("dlopen: %s\n", dlerror());
	CHECK(h != NULL);
	void (**hook)(void) = dlsym(h, "plain_lib_unloaded");
	CHECK(hook != NULL);
	*hook = on_unload;
	plain_value = (int (*)(int))dlsym(h, "plain_value");
	CHECK(plain_value != NULL);
	return h;
}

/* Whether the shared object is still mapped (open by anyone). */
static int mapped(void)
{
	void *h = dlopen(path, RTLD_LAZY | RTLD_NOLOAD);
	if (h)
		dlclose(h);
	return h != NULL;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000 * 1000 };
	nanosleep(&ts, NULL);
}

/* Wait up to 5 s for the destructor's `n`th run. */
static int unloaded_soon(int n)
{
	for (int i = 0; i < 500; i++) {
		if (atomic_load(&unloaded) >= n)
			return 1;
		sleep_ms(10);
	}
	return 0;
}

static void enable(void)
{
	CHECK(klp_enable_patch(&patch) == 0);
	CHECK(klp_wait_transition(5000) == 0);
}

static void disable(void)
{
	CHECK(klp_patch_set_enabled("plain_patch", 0) == 0);
	CHECK(klp_wait_transition(5000) == 0);
	CHECK(klp_patch_enabled("plain_patch") == -ENOENT);
}

int main(int argc, char **argv)
{
	CHECK(argc == 2);
	path = argv[1];
	setvbuf(stdout, NULL, _IOLBF, 0);
	CHECK(klp_set_retry_period(10) == 0);

	void *h = open_lib();
	CHECK(plain_value(1) == 2);
	enable();
	CHECK(klp_object_patched("plain_patch", NULL) == 1);
	CHECK(plain_value(1) == 101);

	/* Closed while the patch is enabled: held by libklp. */
	CHECK(dlclose(h) == 0);
	for (int i = 0; i < 3; i++)
		klp_synchronize();
	sleep_ms(50);
	CHECK(atomic_load(&unloaded) == 0);
	CHECK(mapped());
	CHECK(plain_value(1) == 101); /* still mapped, still patched */
	printf("ok: closed while patched, still mapped\n");

	disable();
	CHECK(unloaded_soon(1));
	CHECK(!mapped());
	CHECK(atomic_load(&unloaded) == 1);
	/* Its function is no longer known. */
	CHECK(klp_enable_patch(&patch) == -EINVAL);
	printf("ok: unmapped once the patch is released\n");

	/* Opened again: the original, then patched and unpatched again. */
	h = open_lib();
	CHECK(plain_value(1) == 2);
	enable();
	CHECK(plain_value(1) == 101);
	disable();
	CHECK(plain_value(1) == 2);
	CHECK(dlclose(h) == 0);
	CHECK(unloaded_soon(2));
	CHECK(!mapped());
	printf("ok: opened again\n");
	printf("done\n");
	return 0;
}
