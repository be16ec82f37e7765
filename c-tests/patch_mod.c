/* A livepatch module as a shared object: its constructor (the module's init) enables
 * its patch of the main program's `greeting`, its destructor (the module's exit) says
 * when it runs, which is when the object is really unmapped. Built by
 * klp-ffi/tests/c_patch_so.rs; opened by patch_so_main.c. */
#include <klp.h>

#include <stdio.h>

/* Set by the program (found with dlsym): called inside the replacement, to hold a
 * thread there. */
void (*patch_mod_hook)(void);

static const char *livepatch_greeting(void)
{
	if (patch_mod_hook)
		patch_mod_hook();
	return "patched greeting";
}

static struct klp_func funcs[] = {
	{ .old_name = "greeting", .new_func = (void *)livepatch_greeting },
	{ 0 }
};

static struct klp_object objs[] = {
	{ .name = NULL, .funcs = funcs },
	{ 0 }
};

static struct klp_patch patch = {
	.name = "patch_mod",
	.objs = objs,
};

/* What the module's init returned, for the program (insmod's exit status). */
int patch_mod_init_ret = 1;

__attribute__((constructor)) static void patch_mod_init(void)
{
	patch_mod_init_ret = klp_enable_patch(&patch);
	printf("patch_mod: init %d\n", patch_mod_init_ret);
	fflush(stdout);
}

__attribute__((destructor)) static void patch_mod_exit(void)
{
	printf("patch_mod: exit\n");
	fflush(stdout);
}
