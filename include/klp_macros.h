/* libklp: the Linux kernel's livepatch model for userspace programs. SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The macros that make C functions patchable. Included by <klp.h>; written by hand
 * (cbindgen cannot generate them).
 *
 * They need GNU C (GCC or Clang): they use __attribute__((constructor)), weak hidden
 * symbols, __builtin_frame_address and conversions between function and object
 * pointers. Compile the programs that use them with -std=gnu11 (or -std=c11 without
 * -pedantic). This header itself compiles as strict ISO C and C++ (nothing here is
 * expanded unless used).
 *
 *   KLP_PATCHABLE(int, compute, (int x), (x)) { return x + 1; }
 *   KLP_PATCHABLE_VOID(tick, (void), ()) { ++ticks; }
 *   KLP_PATCHABLE_STATIC(int, helper, (int a, int b), (a, b)) { return a * b; }
 *   KLP_PATCHABLE_STATIC_VOID(reset, (struct state *s), (s)) { s->n = 0; }
 *
 * The first argument list is the parameters with their types, the second the same
 * names as call arguments. The body that follows the macro is the original
 * implementation; the function itself (external, or static for the _STATIC forms)
 * becomes a wrapper that calls the implementation chosen by libklp: the original, or
 * the replacement of the patch a thread runs.
 *
 * Each function is registered (before main, or when its shared object is opened) under
 * the name of its object: the main program (vmlinux) unless the object's code says
 *
 *   KLP_OBJECT("name");
 *
 * once, at file scope, in one of its source files. Several static functions of one name
 * in one object are told apart by old_sympos, in the order of their registration.
 *
 * Registration runs as a constructor of priority 101: a patchable function must not be
 * called from a constructor of a lower priority number (0-100 are reserved anyway).
 */
#ifndef KLP_MACROS_H
#define KLP_MACROS_H

#if defined(__GNUC__) && !defined(__cplusplus)

/* The name of the object the code belongs to: a weak hidden symbol, NULL (the main
 * program) unless KLP_OBJECT defines it. */
extern const char *const klp__object_name __attribute__((weak, visibility("hidden")));

/* The object's name, NULL for the main program. */
#define KLP__OBJECT_NAME (&klp__object_name != NULL ? klp__object_name : NULL)

/* Name this object (a string literal): the sites of its code register under it. */
#define KLP_OBJECT(name) \
	__attribute__((visibility("hidden"))) const char *const klp__object_name = (name)

#define KLP__DECLARE(storage, ret, name, params)                                        \
	storage ret name params;                                                        \
	static __attribute__((noinline)) ret name##__klp_orig params;                   \
	static struct klp_site name##__klp_site;                                        \
	__attribute__((constructor(101))) static void name##__klp_reg(void)             \
	{                                                                               \
		klp_site_register(&name##__klp_site, KLP__OBJECT_NAME, #name,           \
				  (void *)name##__klp_orig);                            \
	}

#define KLP__PATCHABLE(storage, ret, name, params, args)                                \
	KLP__DECLARE(storage, ret, name, params)                                        \
	storage __attribute__((noinline)) ret name params                               \
	{                                                                               \
		void *klp__f = klp_enter(&name##__klp_site, __builtin_frame_address(0)); \
		ret klp__r = ((ret(*) params)klp__f)args;                               \
		klp_leave(__builtin_frame_address(0));                                  \
		return klp__r;                                                          \
	}                                                                               \
	static ret name##__klp_orig params

#define KLP__PATCHABLE_VOID(storage, name, params, args)                                \
	KLP__DECLARE(storage, void, name, params)                                       \
	storage __attribute__((noinline)) void name params                              \
	{                                                                               \
		void *klp__f = klp_enter(&name##__klp_site, __builtin_frame_address(0)); \
		((void (*) params)klp__f)args;                                          \
		klp_leave(__builtin_frame_address(0));                                  \
	}                                                                               \
	static void name##__klp_orig params

/* A patchable external function returning `ret`. */
#define KLP_PATCHABLE(ret, name, params, args) KLP__PATCHABLE(extern, ret, name, params, args)
/* A patchable external function returning nothing. */
#define KLP_PATCHABLE_VOID(name, params, args) KLP__PATCHABLE_VOID(extern, name, params, args)
/* A patchable static function returning `ret`. */
#define KLP_PATCHABLE_STATIC(ret, name, params, args) KLP__PATCHABLE(static, ret, name, params, args)
/* A patchable static function returning nothing. */
#define KLP_PATCHABLE_STATIC_VOID(name, params, args) KLP__PATCHABLE_VOID(static, name, params, args)

#endif /* __GNUC__ && !__cplusplus */

#endif /* KLP_MACROS_H */
