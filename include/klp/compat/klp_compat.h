/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The base of the compatibility headers (<linux/...> in this directory): every one of
 * them includes it first. Written for libklp from the kernel's documented interfaces;
 * see "Kernel livepatch modules" in the README.
 *
 * A module built with these headers (cc -shared -fPIC -I <includedir>/klp/compat ...)
 * is a kernel module for libklp: <linux/module.h> makes the shared object one
 * (struct module, THIS_MODULE, module_init, module_exit, module_param, MODULE_INFO), the
 * other headers give what the kernel's livepatch samples and selftest modules use.
 * Functions that are the kernel's and not the module's (seq_printf, the workqueue,
 * console_loglevel) are the program's: it plays the kernel and defines them (exported:
 * -rdynamic).
 *
 * KBUILD_MODNAME: kbuild passes it; when the compiler did not get it (-DKBUILD_MODNAME=
 * '"name"'), it is a placeholder that printk and the module's name resolve at load time
 * to the name of the module's file in kbuild's form (livepatch-sample.so:
 * "livepatch_sample"). Used anywhere else (a string compared or stored), pass it.
 */
#ifndef KLP_COMPAT_H
#define KLP_COMPAT_H

#include "../../klp.h"

#include <linux/errno.h>
#include <linux/types.h>

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef KBUILD_MODNAME
#define KLP__MODNAME_GIVEN 1
#else
/* The placeholder (see above). */
#define KBUILD_MODNAME "\033KBUILD_MODNAME\033"
#endif
#define KLP__MODNAME_PLACEHOLDER "\033KBUILD_MODNAME\033"

#ifdef __cplusplus
#define KLP__C_BEGIN extern "C" {
#define KLP__C_END }
#else
#define KLP__C_BEGIN
#define KLP__C_END
#endif

#define KLP__CAT2(a, b) a##b
#define KLP__CAT(a, b) KLP__CAT2(a, b)
/* A name of its own for each use. */
#define KLP__UNIQUE(prefix) KLP__CAT(prefix, __COUNTER__)

#endif /* KLP_COMPAT_H */
