/* The replacements of the functions of ent_abi.c: the same arguments, results that tell
 * them apart. */
#include <immintrin.h>
#include <stdarg.h>

struct big {
	long a, b, c, d;
};

long new_ints(long a, long b, long c, long d, long e, long f, long g, long h)
{
	return 1000000 + a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * g + 8 * h;
}

double new_doubles(double a, double b, double c, double d, double e, double f, double g,
		   double h, double i)
{
	return -(a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * g + 8 * h + 9 * i);
}

double new_varargs(int n, ...)
{
	va_list ap;
	double s = 0;
	va_start(ap, n);
	for (int k = 0; k < n; k++)
		s -= (k + 1) * va_arg(ap, double);
	va_end(ap);
	return s;
}

struct big new_struct(long x)
{
	struct big r = { -x, -x - 1, -x - 2, -x - 3 };
	return r;
}

double new_m256(__m256d a, __m256d b)
{
	double o[4];
	_mm256_storeu_pd(o, _mm256_add_pd(a, _mm256_mul_pd(b, _mm256_set1_pd(2.0))));
	return -(o[0] + 10 * o[1] + 100 * o[2] + 1000 * o[3]);
}

/* For the stress: a version tag. */
int new_tag(int x)
{
	return x + 2;
}
