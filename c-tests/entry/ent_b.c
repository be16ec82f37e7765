/* The second file of the library of ent_a.c: a static function of the same name. */
__attribute__((noinline)) static int ent_dup(int x)
{
	return x + 200;
}

int ent_dup_b(int x)
{
	return ent_dup(x);
}
