/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/* <linux/export.h>: the functions of a shared object are exported already;
 * EXPORT_SYMBOL declares nothing new. */
#ifndef KLP_COMPAT_LINUX_EXPORT_H
#define KLP_COMPAT_LINUX_EXPORT_H

#define EXPORT_SYMBOL(sym) extern __typeof__(sym) sym
#define EXPORT_SYMBOL_GPL(sym) extern __typeof__(sym) sym
#define EXPORT_SYMBOL_NS(sym, ns) extern __typeof__(sym) sym
#define EXPORT_SYMBOL_NS_GPL(sym, ns) extern __typeof__(sym) sym

#endif /* KLP_COMPAT_LINUX_EXPORT_H */
