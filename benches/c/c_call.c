/* The C call benchmark (benches/benches/c_call.rs): the same body called directly and as
 * a KLP_PATCHABLE function, in loops whose calls depend on each other, and a patch that
 * replaces the patchable function with the same body. Built twice: into the benchmark
 * program with libklp linked statically (benches/build.rs), and as a shared object linked
 * with libklp.so. */
#include <klp.h>

#include <stdint.h>

__attribute__((noinline)) int cbench_direct(int x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

KLP_PATCHABLE(int, cbench_patchable, (int x), (x))
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

static int cbench_replacement(int x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

static struct klp_func funcs[] = {
	{ .old_name = "cbench_patchable", .new_func = (void *)cbench_replacement },
	{ 0 }
};

static struct klp_object objs[] = {
	{ .name = NULL, .funcs = funcs },
	{ 0 }
};

static struct klp_patch patch = {
	.name = "cbench",
	.objs = objs,
};

int cbench_loop_direct(uint64_t n)
{
	int a = 0;
	while (n--)
		a = cbench_direct(a);
	return a;
}

int cbench_loop_patchable(uint64_t n)
{
	int a = 0;
	while (n--)
		a = cbench_patchable(a);
	return a;
}

/* Enable the patch and wait for its transition: 0 or a negative errno. */
int cbench_patch(void)
{
	int r = klp_enable_patch(&patch);
	return r ? r : klp_wait_transition(10000);
}
