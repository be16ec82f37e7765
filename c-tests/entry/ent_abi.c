/* Functions whose arguments and results must cross an armed entry untouched: every
 * integer and vector argument register, the stack, varargs (%al), a struct returned
 * through memory, 256-bit vectors. Built with -fpatchable-function-entry=16,14 -mavx by
 * klp-core/tests/entry_trampoline.rs; ent_abi_new.c holds the replacements. */
#include <immintrin.h>
#include <stdarg.h>

struct big {
	long a, b, c, d;
};

long ent_ints(long a, long b, long c, long d, long e, long f, long g, long h)
{
	return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * g + 8 * h;
}

double ent_doubles(double a, double b, double c, double d, double e, double f, double g,
		   double h, double i)
{
	return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * g + 8 * h + 9 * i;
}

double ent_varargs(int n, ...)
{
	va_list ap;
	double s = 0;
	va_start(ap, n);
	for (int k = 0; k < n; k++)
		s += (k + 1) * va_arg(ap, double);
	va_end(ap);
	return s;
}

struct big ent_struct(long x)
{
	struct big r = { x, x + 1, x + 2, x + 3 };
	return r;
}

double ent_m256(__m256d a, __m256d b)
{
	double o[4];
	_mm256_storeu_pd(o, _mm256_add_pd(a, _mm256_mul_pd(b, _mm256_set1_pd(2.0))));
	return o[0] + 10 * o[1] + 100 * o[2] + 1000 * o[3];
}

/* For the stress: a version tag. */
int ent_tag(int x)
{
	return x + 1;
}

/* Calls each function above through a pointer the compiler cannot see through, and
 * returns a bit per result that is neither the original's (patched = 0) nor the
 * replacement's (patched = 1). */
int ent_check(int patched)
{
	static long (*volatile ints)(long, long, long, long, long, long, long, long) = ent_ints;
	static double (*volatile doubles)(double, double, double, double, double, double, double,
					  double, double) = ent_doubles;
	static double (*volatile varargs)(int, ...) = ent_varargs;
	static struct big (*volatile st)(long) = ent_struct;
	static double (*volatile m256)(__m256d, __m256d) = ent_m256;
	int bad = 0;

	long ei = 1 + 2 * 2 + 3 * 3 + 4 * 4 + 5 * 5 + 6 * 6 + 7 * 7 + 8 * 8;
	if (ints(1, 2, 3, 4, 5, 6, 7, 8) != (patched ? 1000000 + ei : ei))
		bad |= 1;
	double ed = 0.5 + 2 * 1.5 + 3 * 2.5 + 4 * 3.5 + 5 * 4.5 + 6 * 5.5 + 7 * 6.5 + 8 * 7.5 +
		    9 * 8.5;
	if (doubles(0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5) != (patched ? -ed : ed))
		bad |= 2;
	double ev = 1.5 + 2 * 2.5 + 3 * 3.5;
	if (varargs(3, 1.5, 2.5, 3.5) != (patched ? -ev : ev))
		bad |= 4;
	struct big r = st(10);
	long s = patched ? -1 : 1;
	if (r.a != s * 10 || r.b != s * 11 || r.c != s * 12 || r.d != s * 13)
		bad |= 8;
	double em = 11 + 10 * 14 + 100 * 17 + 1000 * 20;
	if (m256(_mm256_setr_pd(1, 2, 3, 4), _mm256_setr_pd(5, 6, 7, 8)) != (patched ? -em : em))
		bad |= 16;
	return bad;
}
