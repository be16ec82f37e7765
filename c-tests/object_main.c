/* Module function patching (the kernel's test-livepatch.sh, tests 4 and 5): a patch of
 * the object "test_klp_mod_target", a shared object (c-tests/target_mod.c) opened
 * before the patch is enabled, then after (the patch is applied to the loading object),
 * then closed while the patch is still enabled (reverted from the unloading object).
 * Run by klp-ffi/tests/c_object.rs with the path of the shared object; needs GNU C. */
#include <klp.h>

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (!(cond)) {                                                          \
			printf("FAILED: %s (line %d)\n", #cond, __LINE__);              \
			exit(1);                                                        \
		}                                                                       \
	} while (0)

static const char *livepatch_show(void)
{
	return "test_klp_mod_patch: this has been live patched";
}

static struct klp_func funcs[] = {
	{ .old_name = "test_klp_mod_target_show", .new_func = (void *)livepatch_show },
	{ 0 }
};

static struct klp_object objs[] = {
	{ .name = "test_klp_mod_target", .funcs = funcs },
	{ 0 }
};

static struct klp_patch patch = {
	.name = "test_klp_mod_patch",
	.objs = objs,
};

/* A patch that refuses the object: its pre_patch fails for it. */
static int refuse(struct klp_object *obj)
{
	printf("pre_patch: %s refused\n", obj->name);
	return -19;
}

static struct klp_object refusing_objs[] = {
	{ .name = "test_klp_mod_target", .funcs = funcs, .callbacks = { .pre_patch = refuse } },
	{ 0 }
};

static struct klp_patch refusing = {
	.name = "test_klp_mod_refuse",
	.objs = refusing_objs,
};

static void handler(int level, const char *line, void *data)
{
	(void)data;
	printf("%d %s\n", level, line);
	fflush(stdout);
}

static const char *target;

static void *load_mod(void)
{
	void *h;

	printf("%% insmod test_klp_mod_target\n");
	fflush(stdout);
	h = dlopen(target, RTLD_NOW | RTLD_LOCAL);
	if (!h)
		printf("dlopen: %s\n", dlerror());
	CHECK(h != NULL);
	return h;
}

static void unload_mod(void *h)
{
	printf("%% rmmod test_klp_mod_target\n");
	fflush(stdout);
	CHECK(dlclose(h) == 0);
}

static void show(void *h)
{
	const char *(*f)(void) = (const char *(*)(void))dlsym(h, "test_klp_mod_target_show");

	CHECK(f != NULL);
	printf("%s\n", f());
}

static void load_lp(void)
{
	printf("%% insmod test_klp_mod_patch\n");
	fflush(stdout);
	CHECK(klp_enable_patch(&patch) == 0);
	CHECK(klp_wait_transition(10000) == 0);
}

static void disable_lp(void)
{
	printf("%% echo 0 > /sys/kernel/livepatch/test_klp_mod_patch/enabled\n");
	fflush(stdout);
	CHECK(klp_patch_set_enabled("test_klp_mod_patch", 0) == 0);
	CHECK(klp_wait_transition(10000) == 0);
	CHECK(klp_patch_enabled("test_klp_mod_patch") < 0);
}

int main(int argc, char **argv)
{
	void *h;

	CHECK(argc == 2);
	target = argv[1];
	CHECK(klp_set_log_handler(handler, NULL) == 0);

	printf("# module function patching\n");
	h = load_mod();
	show(h);
	load_lp();
	show(h);
	disable_lp();
	show(h);
	unload_mod(h);

	printf("# module function patching (livepatch first)\n");
	load_lp();
	h = load_mod();
	show(h);
	disable_lp();
	show(h);
	unload_mod(h);

	printf("# unloading a patched module\n");
	load_lp();
	h = load_mod();
	show(h);
	unload_mod(h);
	disable_lp();

	printf("# a patch refuses the module\n");
	CHECK(klp_enable_patch(&refusing) == 0);
	CHECK(klp_wait_transition(10000) == 0);
	h = load_mod();
	CHECK(klp_object_refused("test_klp_mod_target") == -19);
	show(h);
	unload_mod(h);
	CHECK(klp_patch_set_enabled("test_klp_mod_refuse", 0) == 0);
	CHECK(klp_wait_transition(10000) == 0);
	h = load_mod();
	CHECK(klp_object_refused("test_klp_mod_target") == 0);
	show(h);
	unload_mod(h);

	/* Objects by hand. */
	CHECK(klp_object_refused(NULL) == -22);
	CHECK(klp_object_load(NULL) == -22);
	CHECK(klp_object_load("vmlinux") == -22);
	CHECK(klp_object_unload("nothing") == -2);
	CHECK(klp_object_load("by_hand") == 0);
	CHECK(klp_object_load("by_hand") == -17);
	CHECK(klp_object_unload("by_hand") == 0);
	CHECK(klp_object_unload("by_hand") == -2);

	CHECK(klp_set_log_handler(NULL, NULL) == 0);
	printf("done\n");
	return 0;
}
