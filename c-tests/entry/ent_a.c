/* Functions of a library built with -fpatchable-function-entry=16,14 and no libklp
 * code at all: klp-core/tests/entry_discover.rs finds their entry sites. VERSION tells
 * two builds apart (the "replaced on disk" case). */
#ifndef VERSION
#define VERSION 1
#endif

__attribute__((noinline)) static int ent_static(int x)
{
	return x * 3 + VERSION;
}

/* Same name as in ent_b.c: old_sympos tells them apart. */
__attribute__((noinline)) static int ent_dup(int x)
{
	return x + 100;
}

int ent_dup_a(int x)
{
	return ent_dup(x);
}

int ent_extern(int x)
{
	return ent_static(x) + 1;
}

/* Opted out of the flag: no entry site. */
__attribute__((patchable_function_entry(0, 0))) int ent_none(int x)
{
	return x - 1;
}
