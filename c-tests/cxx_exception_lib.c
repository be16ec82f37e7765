/* The C half of cxx_exception.cpp: patchable C functions (and their patch) that call
 * back into C++, whose exceptions pass through them. Compiled with gcc -fexceptions
 * (unwind tables and no-op cleanups for the C frames). Needs GNU C (-std=gnu11). */
#include <klp.h>

typedef int (*cxx_cb)(int x);
typedef void (*cxx_spin)(void);

/* The original returns 100 + cb(x), the replacement 200 + cb(x). */
KLP_PATCHABLE(int, c_call, (cxx_cb cb, int x), (cb, x))
{
	return 100 + cb(x);
}

static int c_call_v2(cxx_cb cb, int x)
{
	return 200 + cb(x);
}

/* c_outer -> c_call: 1000 (original) or 2000 (replacement) more. */
KLP_PATCHABLE(int, c_outer, (cxx_cb cb, int x), (cb, x))
{
	return 1000 + c_call(cb, x);
}

static int c_outer_v2(cxx_cb cb, int x)
{
	return 2000 + c_call(cb, x);
}

/* Not patched: a call of it is a switch point. */
KLP_PATCHABLE(int, c_plain, (int x), (x))
{
	return x;
}

/* A holder thread spins inside it to hold a transition up. */
KLP_PATCHABLE_VOID(c_holder, (cxx_spin spin), (spin))
{
	spin();
}

static void c_holder_v2(cxx_spin spin)
{
	spin();
}

static struct klp_func cx_funcs[] = {
	{ .old_name = "c_call", .new_func = (void *)c_call_v2 },
	{ .old_name = "c_outer", .new_func = (void *)c_outer_v2 },
	{ .old_name = "c_holder", .new_func = (void *)c_holder_v2 },
	{ 0 }
};
static struct klp_object cx_objs[] = { { .name = NULL, .funcs = cx_funcs }, { 0 } };
struct klp_patch cx_patch = { .name = "cx", .objs = cx_objs };
