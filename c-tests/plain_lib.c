/* A shared object without KLP_OBJECT: its patchable function registers as part of the
 * main program (vmlinux), and a patch names it with the object NULL. Opened and closed by
 * c-tests/plain_main.c (klp-ffi/tests/c_lifecycle.rs). Needs GNU C. */
#include <klp.h>

#include <stddef.h>

/* Set by the program (found with dlsym): called by the destructor, which runs when the
 * object is unmapped. */
void (*plain_lib_unloaded)(void);

KLP_PATCHABLE(int, plain_value, (int x), (x))
{
	return x + 1;
}

__attribute__((destructor)) static void plain_lib_fini(void)
{
	if (plain_lib_unloaded != NULL)
		plain_lib_unloaded();
}
