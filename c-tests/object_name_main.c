/* The main program registers its patchable functions under vmlinux and a shared object
 * with KLP_OBJECT under its name: a vmlinux patch finds main_fn but not the shared
 * object's lib_fn. Built and run by klp-ffi/tests/c_patch.rs. Needs GNU C. */
#include <klp.h>

#include <errno.h>
#include <stdio.h>

int lib_fn(int x);

KLP_PATCHABLE(int, main_fn, (int x), (x))
{
	return x + 1;
}

static int replacement(int x)
{
	return x - 1;
}

static int try_patch(const char *name, const char *func)
{
	struct klp_func funcs[] = { { .old_name = func, .new_func = (void *)replacement }, { 0 } };
	struct klp_object objs[] = { { .name = NULL, .funcs = funcs }, { 0 } };
	struct klp_patch patch = { .name = name, .objs = objs };
	int ret = klp_enable_patch(&patch);

	if (ret == 0) {
		/* The structs must outlive the patch: disable it before returning. */
		klp_wait_transition(10000);
		klp_patch_set_enabled(name, 0);
		klp_wait_transition(10000);
	}
	return ret;
}

static void quiet(int level, const char *line, void *data)
{
	(void)level;
	(void)line;
	(void)data;
}

int main(void)
{
	klp_set_log_handler(quiet, NULL);
	printf("main_fn %d lib_fn %d\n", main_fn(1), lib_fn(1));
	printf("patch main_fn %d\n", try_patch("pm", "main_fn"));
	printf("patch lib_fn as vmlinux %d\n", try_patch("pl", "lib_fn") == -EINVAL);
	printf("main_fn %d\n", main_fn(1));
	return 0;
}
