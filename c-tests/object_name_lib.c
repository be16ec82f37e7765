/* A shared object whose patchable functions register under its own name: built by
 * klp-ffi/tests/c_patch.rs and linked into object_name_main.c. Needs GNU C. */
#include <klp.h>

KLP_OBJECT("libobjname");

int lib_fn(int x);

KLP_PATCHABLE(int, lib_fn, (int x), (x))
{
	return x * 10;
}
