/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * <linux/moduleparam.h>: module_param(name, type, perm), module_param_named,
 * module_param_array(name, type, nump, perm), MODULE_PARM_DESC. Types: byte, short,
 * ushort, int, uint, long, ulong, ullong, hexint, bool, invbool, charp. The values are
 * given at load time (klp_module_load(path, "name=value ...")), as insmod's, and a
 * parameter with a write bit in perm can be written later (klp_module_param_set, the
 * kernel's /sys/module/<module>/parameters/<name>). A parameter's variable must have its
 * type (the compiler checks it).
 */
#ifndef KLP_COMPAT_LINUX_MODULEPARAM_H
#define KLP_COMPAT_LINUX_MODULEPARAM_H

#include "../klp_compat.h"
#include <linux/stat.h>

#define KLP__PARAM_CTYPE_byte unsigned char
#define KLP__PARAM_CTYPE_short short
#define KLP__PARAM_CTYPE_ushort unsigned short
#define KLP__PARAM_CTYPE_int int
#define KLP__PARAM_CTYPE_uint unsigned int
#define KLP__PARAM_CTYPE_long long
#define KLP__PARAM_CTYPE_ulong unsigned long
#define KLP__PARAM_CTYPE_ullong unsigned long long
#define KLP__PARAM_CTYPE_hexint unsigned int
#define KLP__PARAM_CTYPE_bool bool
/* bool, once <stdbool.h> expanded it. */
#define KLP__PARAM_CTYPE__Bool bool
#define KLP__PARAM_CTYPE_invbool bool
#define KLP__PARAM_CTYPE_charp char *

#define KLP__PARAM_KIND_byte KLP_PARAM_BYTE
#define KLP__PARAM_KIND_short KLP_PARAM_SHORT
#define KLP__PARAM_KIND_ushort KLP_PARAM_USHORT
#define KLP__PARAM_KIND_int KLP_PARAM_INT
#define KLP__PARAM_KIND_uint KLP_PARAM_UINT
#define KLP__PARAM_KIND_long KLP_PARAM_LONG
#define KLP__PARAM_KIND_ulong KLP_PARAM_ULONG
#define KLP__PARAM_KIND_ullong KLP_PARAM_ULLONG
#define KLP__PARAM_KIND_hexint KLP_PARAM_HEXINT
#define KLP__PARAM_KIND_bool KLP_PARAM_BOOL
#define KLP__PARAM_KIND__Bool KLP_PARAM_BOOL
#define KLP__PARAM_KIND_invbool KLP_PARAM_INVBOOL
#define KLP__PARAM_KIND_charp KLP_PARAM_CHARP

KLP__C_BEGIN
/* The module of the shared object (<linux/module.h> defines it). */
extern struct klp_module __this_module __attribute__((weak, visibility("hidden")));
KLP__C_END

/* Put `node` on the module's parameter list, before any other constructor of the
 * module runs its init (priority 102; 101 registers patchable functions). */
#define KLP__LINK_PARAM(node, fn)                                                       \
	__attribute__((constructor(102))) static void fn(void)                          \
	{                                                                               \
		(node).next = __this_module.params;                                     \
		__this_module.params = &(node);                                         \
	}                                                                               \
	extern struct klp_module __this_module

#define module_param_named(name, value, type, perm)                                     \
	static KLP__PARAM_CTYPE_##type *const klp__param_check_##name                   \
		__attribute__((unused)) = &(value);                                     \
	static struct klp_module_param klp__param_##name = {                            \
		#name, KLP__PARAM_KIND_##type, (void *)&(value), sizeof(value), 0, NULL, \
		(perm), NULL                                                            \
	};                                                                              \
	KLP__LINK_PARAM(klp__param_##name, klp__param_link_##name)

#define module_param(name, type, perm) module_param_named(name, name, type, perm)

#define module_param_array_named(name, array, type, nump, perm)                         \
	static KLP__PARAM_CTYPE_##type *const klp__param_check_##name                   \
		__attribute__((unused)) = &(array)[0];                                  \
	static struct klp_module_param klp__param_##name = {                            \
		#name,                                                                  \
		KLP__PARAM_KIND_##type,                                                 \
		(void *)(array),                                                        \
		sizeof((array)[0]),                                                     \
		(unsigned int)(sizeof(array) / sizeof((array)[0])),                     \
		(nump),                                                                 \
		(perm),                                                                 \
		NULL                                                                    \
	};                                                                              \
	KLP__LINK_PARAM(klp__param_##name, klp__param_link_##name)

#define module_param_array(name, type, nump, perm)                                      \
	module_param_array_named(name, name, type, nump, perm)

#define MODULE_PARM_DESC(_parm, desc) MODULE_INFO(parm, #_parm ":" desc)

#endif /* KLP_COMPAT_LINUX_MODULEPARAM_H */
