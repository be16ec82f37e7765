/* libklp: the Linux kernel's livepatch model for userspace programs. SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The macros that make C functions patchable. Included by <klp.h>; written by hand
 * (cbindgen cannot generate them).
 *
 * They need GNU C (GCC or Clang): they use __attribute__((constructor)), weak hidden
 * symbols, __builtin_frame_address and conversions between function and object
 * pointers (their attributes are spelled __name__, so that a program's macros of the
 * same names, as the kernel's noinline, leave them alone). Compile the programs that
 * use them with -std=gnu11 (or -std=c11 without -pedantic). This header itself compiles
 * as strict ISO C and C++ (nothing here is expanded unless used).
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
 * called from a constructor of a lower priority number (0-100 are reserved anyway). A
 * destructor of priority 101 unregisters each site when the program exits or its shared
 * object is closed.
 *
 * A shared object with KLP_OBJECT is an object of its own (the kernel's module): opening
 * it loads the object (patches already enabled for it are applied: "applying patch '%s'
 * to loading module '%s'"), closing it unloads it ("reverting patch '%s' on unloading
 * module '%s'"). When a patch refuses the object (its pre_patch fails), dlopen cannot
 * fail as the kernel's module load does: the object stays unloaded and its patchable
 * functions run their originals (klp_object_refused gives the errno). Objects that are not shared objects can be loaded and
 * unloaded by hand: klp_object_load / klp_object_unload.
 */
#ifndef KLP_MACROS_H
#define KLP_MACROS_H

#if defined(__GNUC__) && !defined(__cplusplus)

/* The call path, called without the PLT's extra jump (through the GOT, or directly
 * when libklp is linked statically). */
void *klp_enter(struct klp_site *site, void *frame, void **task_out) __attribute__((__noplt__));
void klp_leave(void *frame, void *task) __attribute__((__noplt__));

/* The name of the object the code belongs to: a weak hidden symbol, NULL (the main
 * program) unless KLP_OBJECT defines it. */
extern const char *const klp__object_name __attribute__((__weak__, __visibility__("hidden")));

/* The object's name, NULL for the main program. */
#define KLP__OBJECT_NAME (&klp__object_name != NULL ? klp__object_name : NULL)

/* Name this object (a string literal): the sites of its code register under it. It is
 * loaded (klp_object_coming: enabled patches are applied to it) by a constructor of
 * default priority, after the registration of its sites, and unloaded
 * (klp_object_going: the patches are reverted) by a destructor of default priority,
 * before the unregistration of its sites (destructors of priority 101). */
#define KLP_OBJECT(name)                                                                \
	__attribute__((__constructor__)) static void klp__object_coming(void)           \
	{                                                                               \
		(void)klp_object_coming(klp__object_name);                              \
	}                                                                               \
	__attribute__((__destructor__)) static void klp__object_going(void)             \
	{                                                                               \
		klp_object_going(klp__object_name);                                     \
	}                                                                               \
	__attribute__((__visibility__("hidden"))) const char *const klp__object_name = (name)

#define KLP__DECLARE(storage, ret, name, params)                                        \
	storage ret name params;                                                        \
	static __attribute__((__noinline__)) ret name##__klp_orig params;               \
	static struct klp_site name##__klp_site;                                        \
	__attribute__((__constructor__(101))) static void name##__klp_reg(void)         \
	{                                                                               \
		klp_site_register(&name##__klp_site, KLP__OBJECT_NAME, #name,           \
				  (void *)name##__klp_orig);                            \
	}                                                                               \
	__attribute__((__destructor__(101))) static void name##__klp_unreg(void)        \
	{                                                                               \
		klp_site_unregister(&name##__klp_site);                                 \
	}

#define KLP__PATCHABLE(storage, ret, name, params, args)                                \
	KLP__DECLARE(storage, ret, name, params)                                        \
	storage __attribute__((__noinline__)) ret name params                           \
	{                                                                               \
		void *klp__t;                                                           \
		void *klp__f = klp_enter(&name##__klp_site, __builtin_frame_address(0), \
					 &klp__t);                                      \
		ret klp__r = ((ret(*) params)klp__f)args;                               \
		klp_leave(__builtin_frame_address(0), klp__t);                          \
		return klp__r;                                                          \
	}                                                                               \
	static ret name##__klp_orig params

#define KLP__PATCHABLE_VOID(storage, name, params, args)                                \
	KLP__DECLARE(storage, void, name, params)                                       \
	storage __attribute__((__noinline__)) void name params                          \
	{                                                                               \
		void *klp__t;                                                           \
		void *klp__f = klp_enter(&name##__klp_site, __builtin_frame_address(0), \
					 &klp__t);                                      \
		((void (*) params)klp__f)args;                                          \
		klp_leave(__builtin_frame_address(0), klp__t);                          \
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
