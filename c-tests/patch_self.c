/* A program that patches one of its own functions: KLP_PATCHABLE, struct klp_patch,
 * callbacks, a state, klp_enable_patch and disabling through the control surface. Run
 * by klp-ffi/tests/c_patch.rs, which checks what it prints. Needs GNU C (-std=gnu11). */
#include <klp.h>

#include <stdio.h>
#include <stdlib.h>

KLP_PATCHABLE(int, compute, (int x), (x))
{
	return x + 1;
}

/* The other three forms (not patched here, only called). */
KLP_PATCHABLE_STATIC(int, twice, (int x), (x))
{
	return 2 * x;
}

KLP_PATCHABLE_STATIC_VOID(bump, (int *p), (p))
{
	++*p;
}

static int ticks;

KLP_PATCHABLE_VOID(tick, (void), ())
{
	++ticks;
}

static int compute_v2(int x)
{
	return x + 2;
}

static void handler(int level, const char *line, void *data)
{
	(void)data;
	printf("%d %s\n", level, line);
	fflush(stdout);
}

static const char *object_name(struct klp_object *obj)
{
	return obj->name ? obj->name : "vmlinux";
}

static int pre_patch(struct klp_object *obj)
{
	printf("pre_patch: %s (state %d)\n", object_name(obj), klp_object_state(obj));
	return 0;
}

static void post_patch(struct klp_object *obj)
{
	printf("post_patch: %s\n", object_name(obj));
}

static void pre_unpatch(struct klp_object *obj)
{
	printf("pre_unpatch: %s\n", object_name(obj));
}

static void post_unpatch(struct klp_object *obj)
{
	printf("post_unpatch: %s\n", object_name(obj));
}

static struct klp_func funcs[] = {
	{ .old_name = "compute", .new_func = (void *)compute_v2 },
	{ 0 }
};

static struct klp_object objs[] = {
	{
		.name = NULL,
		.funcs = funcs,
		.callbacks = {
			.pre_patch = pre_patch,
			.post_patch = post_patch,
			.pre_unpatch = pre_unpatch,
			.post_unpatch = post_unpatch,
		},
	},
	{ 0 }
};

static int state_data = 7;

static struct klp_state states[] = {
	{ .id = 42, .version = 1, .data = &state_data },
	{ 0 }
};

static struct klp_patch patch = {
	.name = "p",
	.objs = objs,
	.states = states,
};

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (!(cond)) {                                                          \
			printf("FAILED: %s (line %d)\n", #cond, __LINE__);              \
			exit(1);                                                        \
		}                                                                       \
	} while (0)

int main(void)
{
	struct klp_state *s;

	int n = 0;

	CHECK(klp_set_log_handler(handler, NULL) == 0);
	bump(&n);
	tick();
	CHECK(n == 1 && ticks == 1 && twice(3) == 6);
	printf("compute(1) = %d\n", compute(1));
	CHECK(compute(1) == 2);

	CHECK(klp_enable_patch(&patch) == 0);
	CHECK(klp_wait_transition(10000) == 0);
	printf("compute(1) = %d\n", compute(1));
	CHECK(compute(1) == 3);
	CHECK(klp_patch_enabled("p") == 1);
	CHECK(klp_object_patched("p", NULL) == 1);

	s = klp_get_state(&patch, 42);
	CHECK(s == &states[0]);
	CHECK(*(int *)s->data == 7);
	CHECK(klp_get_state(&patch, 43) == NULL);
	printf("state %lu version %u\n", s->id, s->version);

	CHECK(klp_patch_set_enabled("p", 0) == 0);
	CHECK(klp_wait_transition(10000) == 0);
	printf("compute(1) = %d\n", compute(1));
	CHECK(compute(1) == 2);
	CHECK(klp_patch_enabled("p") < 0);

	CHECK(klp_set_log_handler(NULL, NULL) == 0);
	printf("done\n");
	return 0;
}
