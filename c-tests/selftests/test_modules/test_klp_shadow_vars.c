/* test_klp_shadow_vars: not a livepatch; its init exercises the shadow variable API and
 * logs every call. Pointers are never printed: each is logged as PTRn, numbered in the
 * order they are first seen (NULL first, PTR0). */
#include "klp_selftest.h"

#define SV_ID1 0x1234
#define SV_ID2 0x1235
#define NUM_OBJS 3

/* ptr_id: the number of a pointer, assigned at its first sight. */
static const void *ptrs[64];
static int nptrs;

static int ptr_id(const void *ptr)
{
	int i;

	for (i = 0; i < nptrs; i++)
		if (ptrs[i] == ptr)
			return i;
	if (nptrs == (int)(sizeof(ptrs) / sizeof(ptrs[0])))
		return -1;
	ptrs[nptrs] = ptr;
	return nptrs++;
}

/* The arguments of each logged call are numbered in order: obj, ctor, ctor_data's
 * value, result. */
static void *shadow_get(void *obj, unsigned long id)
{
	void *ret = klp_shadow_get(obj, id);
	int o = ptr_id(obj), r = ptr_id(ret);

	pr_info("klp_%s(obj=PTR%d, id=0x%lx) = PTR%d", __func__, o, id, r);
	return ret;
}

static void *shadow_alloc(void *obj, unsigned long id, size_t size, gfp_t gfp_flags,
			  klp_shadow_ctor_t ctor, void *ctor_data)
{
	int **var = ctor_data;
	void *ret = klp_shadow_alloc(obj, id, size, gfp_flags, ctor, var);
	int o = ptr_id(obj), c = ptr_id((void *)ctor), d = ptr_id(*var), r = ptr_id(ret);

	pr_info("klp_%s(obj=PTR%d, id=0x%lx, size=%zx, gfp_flags=%s), ctor=PTR%d, ctor_data=PTR%d = PTR%d",
		__func__, o, id, size, gfp_flags == GFP_KERNEL ? "GFP_KERNEL" : "GFP_ATOMIC",
		c, d, r);
	return ret;
}

static void *shadow_get_or_alloc(void *obj, unsigned long id, size_t size,
				 gfp_t gfp_flags, klp_shadow_ctor_t ctor, void *ctor_data)
{
	int **var = ctor_data;
	void *ret = klp_shadow_get_or_alloc(obj, id, size, gfp_flags, ctor, var);
	int o = ptr_id(obj), c = ptr_id((void *)ctor), d = ptr_id(*var), r = ptr_id(ret);

	pr_info("klp_%s(obj=PTR%d, id=0x%lx, size=%zx, gfp_flags=%s), ctor=PTR%d, ctor_data=PTR%d = PTR%d",
		__func__, o, id, size, gfp_flags == GFP_KERNEL ? "GFP_KERNEL" : "GFP_ATOMIC",
		c, d, r);
	return ret;
}

static void shadow_free(void *obj, unsigned long id, klp_shadow_dtor_t dtor)
{
	int o, d;

	klp_shadow_free(obj, id, dtor);
	o = ptr_id(obj);
	d = ptr_id((void *)dtor);
	pr_info("klp_%s(obj=PTR%d, id=0x%lx, dtor=PTR%d)", __func__, o, id, d);
}

static void shadow_free_all(unsigned long id, klp_shadow_dtor_t dtor)
{
	klp_shadow_free_all(id, dtor);
	pr_info("klp_%s(id=0x%lx, dtor=PTR%d)", __func__, id, ptr_id((void *)dtor));
}

/* The constructor stores the pointer that ctor_data points to. */
static int shadow_ctor(void *obj, void *shadow_data, void *ctor_data)
{
	int **sv = shadow_data;
	int **var = ctor_data;
	int s, v;

	(void)obj;
	if (!var)
		return -EINVAL;
	*sv = *var;
	s = ptr_id(sv);
	v = ptr_id(*var);
	pr_info("%s: PTR%d -> PTR%d", __func__, s, v);
	return 0;
}

static void shadow_dtor(void *obj, void *shadow_data)
{
	int o = ptr_id(obj), s = ptr_id(shadow_data);

	pr_info("%s(obj=PTR%d, shadow_data=PTR%d)", __func__, o, s);
}

/* "got expected" when the variable is the one made for obj and holds ptr. */
static void check_sv(int **sv, int **expected_sv, int *ptr)
{
	if (sv == expected_sv && *sv == ptr) {
		int s = ptr_id(sv), p = ptr_id(*sv);

		pr_info("  got expected PTR%d -> PTR%d result", s, p);
	}
}

static int test_klp_shadow_vars_init(void)
{
	/* The parent objects live on the stack of init, as in the kernel module. */
	long objs[NUM_OBJS];
	char nfields1[NUM_OBJS];
	int nfields2[NUM_OBJS];
	int *pnfields1[NUM_OBJS], *pnfields2[NUM_OBJS], *pndup[NUM_OBJS];
	int **sv1[NUM_OBJS], **sv2[NUM_OBJS], **sv;
	size_t size = sizeof(int *);
	int i;

	ptr_id(NULL);

	/* Pass 0: nothing attached yet. */
	if (!shadow_get(&objs[0], SV_ID1))
		pr_info("  got expected NULL result");

	/* Pass 1: two variables per object. */
	for (i = 0; i < NUM_OBJS; i++) {
		pnfields1[i] = (int *)&nfields1[i];
		ptr_id(pnfields1[i]);
		if (i % 2)
			sv1[i] = shadow_alloc(&objs[i], SV_ID1, size, GFP_KERNEL, shadow_ctor,
					      &pnfields1[i]);
		else
			sv1[i] = shadow_get_or_alloc(&objs[i], SV_ID1, size, GFP_KERNEL,
						     shadow_ctor, &pnfields1[i]);
		if (!sv1[i])
			return -ENOMEM;

		pnfields2[i] = &nfields2[i];
		ptr_id(pnfields2[i]);
		sv2[i] = shadow_alloc(&objs[i], SV_ID2, size, GFP_KERNEL, shadow_ctor,
				      &pnfields2[i]);
		if (!sv2[i])
			return -ENOMEM;
	}

	/* Pass 2: find them again, with what they hold. */
	for (i = 0; i < NUM_OBJS; i++) {
		sv = shadow_get(&objs[i], SV_ID1);
		if (!sv)
			return -EINVAL;
		check_sv(sv, sv1[i], pnfields1[i]);

		sv = shadow_get(&objs[i], SV_ID2);
		if (!sv)
			return -EINVAL;
		check_sv(sv, sv2[i], pnfields2[i]);
	}

	/* Pass 3: get_or_alloc finds the existing variables (no constructor runs). */
	for (i = 0; i < NUM_OBJS; i++) {
		pndup[i] = (int *)&nfields1[i];
		ptr_id(pndup[i]);
		sv = shadow_get_or_alloc(&objs[i], SV_ID1, size, GFP_KERNEL, shadow_ctor,
					 &pndup[i]);
		if (!sv)
			return -EINVAL;
		check_sv(sv, sv1[i], pnfields1[i]);
	}

	/* Pass 4: free the SV_ID1 variables, with the destructor. */
	for (i = 0; i < NUM_OBJS; i++) {
		shadow_free(&objs[i], SV_ID1, shadow_dtor);
		if (!shadow_get(&objs[i], SV_ID1))
			pr_info("  got expected NULL result");
	}

	/* Pass 5: the SV_ID2 variables are still there. */
	for (i = 0; i < NUM_OBJS; i++) {
		sv = shadow_get(&objs[i], SV_ID2);
		if (!sv)
			return -EINVAL;
		check_sv(sv, sv2[i], pnfields2[i]);
	}

	/* Pass 6: free every SV_ID2 variable at once, without a destructor. */
	shadow_free_all(SV_ID2, NULL);
	for (i = 0; i < NUM_OBJS; i++) {
		if (!shadow_get(&objs[i], SV_ID2))
			pr_info("  got expected NULL result");
	}

	return 0;
}

static void test_klp_shadow_vars_exit(void)
{
}

module_init(test_klp_shadow_vars_init);
module_exit(test_klp_shadow_vars_exit);
