/* A shared object that is an object of its own (the kernel's test_klp_mod_target
 * module): KLP_OBJECT names it, KLP_PATCHABLE makes its function patchable. Opened and
 * closed by c-tests/object_main.c (klp-ffi/tests/c_object.rs). Needs GNU C. */
#include <klp.h>

#include <stdio.h>

KLP_OBJECT("test_klp_mod_target");

KLP_PATCHABLE(const char *, test_klp_mod_target_show, (void), ())
{
	return "test_klp_mod_target: original output";
}

/* The module's init and exit: defined after KLP_OBJECT, so that (GCC and Clang run the
 * constructors of one priority in the order of definition, the destructors in the
 * reverse order) init runs after the object is loaded and exit before it is unloaded. */
__attribute__((constructor)) static void test_klp_mod_target_init(void)
{
	printf("test_klp_mod_target: %s\n", __func__);
	fflush(stdout);
}

__attribute__((destructor)) static void test_klp_mod_target_exit(void)
{
	printf("test_klp_mod_target: %s\n", __func__);
	fflush(stdout);
}
