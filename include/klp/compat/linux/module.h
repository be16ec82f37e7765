/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * <linux/module.h>: the shared object that includes it is a kernel module for libklp.
 *
 * struct module is <klp.h>'s struct klp_module (this header defines `module` as
 * `klp_module`): THIS_MODULE is the one of this shared object (a hidden symbol,
 * __this_module), with its name (KBUILD_MODNAME, or its file's name), its state
 * (MODULE_STATE_*), its init and exit, MODULE_INFO strings and parameters. A livepatch
 * names it in its patch (.mod = THIS_MODULE): the patch is named after the module.
 * The module is an object of its own, named as it is: its patchable functions
 * (KLP_PATCHABLE) register under its name, and patches with an object of that name are
 * applied to it when it loads (do not use KLP_OBJECT in a module).
 *
 * module_init(fn) and module_exit(fn) are its init and exit. Loading (klp_module_load,
 * or a plain dlopen: see <klp.h>) runs the init after the module's parameters are set
 * and the patches for it are applied; a negative return refuses the load (the loader
 * gets the errno and closes the shared object). Unloading (klp_module_unload, or the
 * program's dlclose) runs the exit. MODULE_LICENSE, MODULE_AUTHOR, MODULE_DESCRIPTION
 * and MODULE_INFO are kept with the module; MODULE_INFO(livepatch, "Y") makes it a
 * livepatch module, which klp_enable_patch requires of the module named by .mod.
 *
 * The program itself (vmlinux) must not include this header: it would become a module.
 */
#ifndef KLP_COMPAT_LINUX_MODULE_H
#define KLP_COMPAT_LINUX_MODULE_H

#include "../klp_compat.h"
#include "export.h"
#include "jiffies.h"
#include "kernel.h"
#include "list.h"
#include "moduleparam.h"
#include <linux/stat.h>
#include "workqueue.h"

#define module klp_module
#define MODULE_NAME_LEN KLP_MODULE_NAME_LEN

enum module_state {
	MODULE_STATE_LIVE = KLP_MODULE_STATE_LIVE,
	MODULE_STATE_COMING = KLP_MODULE_STATE_COMING,
	MODULE_STATE_GOING = KLP_MODULE_STATE_GOING,
	MODULE_STATE_UNFORMED = KLP_MODULE_STATE_UNFORMED
};

#ifdef KLP__MODNAME_GIVEN
#define KLP__THIS_MODULE_NAME KBUILD_MODNAME
#else
#define KLP__THIS_MODULE_NAME ""
#endif

KLP__C_BEGIN

/* This shared object's module (one per shared object: weak, hidden). */
__attribute__((weak, visibility("hidden"))) struct klp_module __this_module = {
	KLP_MODULE_ABI, KLP_MODULE_STATE_UNFORMED, KLP__THIS_MODULE_NAME, NULL, NULL, NULL,
	NULL, { NULL, NULL, NULL, NULL }
};

/* The object name of its patchable functions (see KLP_PATCHABLE in <klp.h>). */
extern const char *const klp__object_name __attribute__((weak, visibility("hidden")));
const char *const klp__object_name = __this_module.name;

KLP__C_END

#define THIS_MODULE (&__this_module)

/* Register the module once its constructors of priority 102 have filled it in (the
 * constructors of default priority run after every prioritised one). */
__attribute__((constructor)) static void klp__module_register(void)
{
	(void)klp_module_register(&__this_module);
}

__attribute__((destructor)) static void klp__module_unregister(void)
{
	klp_module_unregister(&__this_module);
}

#define KLP__SET_MODULE_FN(field, fn, ctor)                                             \
	__attribute__((constructor(102))) static void ctor(void)                        \
	{                                                                               \
		__this_module.field = (fn);                                             \
	}                                                                               \
	extern struct klp_module __this_module

#define module_init(fn) KLP__SET_MODULE_FN(init, fn, klp__module_set_init)
#define module_exit(fn) KLP__SET_MODULE_FN(exit, fn, klp__module_set_exit)

/* Put `node` on the module's MODULE_INFO list (priority 102, see KLP__LINK_PARAM). */
#define KLP__LINK_INFO(node, fn)                                                        \
	__attribute__((constructor(102))) static void fn(void)                          \
	{                                                                               \
		(node).next = __this_module.info;                                       \
		__this_module.info = &(node);                                           \
	}                                                                               \
	extern struct klp_module __this_module

#define KLP__MODINFO(tag, value, id)                                                    \
	static struct klp_modinfo id = { #tag, value, NULL };                           \
	KLP__LINK_INFO(id, KLP__CAT(id, _link))

#define MODULE_INFO(tag, value) KLP__MODINFO(tag, value, KLP__UNIQUE(klp__modinfo_))
#define MODULE_LICENSE(_license) MODULE_INFO(license, _license)
#define MODULE_AUTHOR(_author) MODULE_INFO(author, _author)
#define MODULE_DESCRIPTION(_description) MODULE_INFO(description, _description)
#define MODULE_VERSION(_version) MODULE_INFO(version, _version)
#define MODULE_ALIAS(_alias) MODULE_INFO(alias, _alias)
#define MODULE_SOFTDEP(_softdep) MODULE_INFO(softdep, _softdep)
#define MODULE_IMPORT_NS(_ns) MODULE_INFO(import_ns, _ns)

/* References on a module: a module cannot be unloaded here while its own code holds
 * one (they always succeed). */
static inline bool try_module_get(struct module *mod)
{
	(void)mod;
	return true;
}

static inline void module_put(struct module *mod)
{
	(void)mod;
}

static inline void __module_get(struct module *mod)
{
	(void)mod;
}

#endif /* KLP_COMPAT_LINUX_MODULE_H */
