/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * <linux/errno.h>: the system's <linux/errno.h> (the C library's <errno.h> includes it
 * too: this header only adds to it), and the kernel's own values.
 */
#ifndef KLP_COMPAT_LINUX_ERRNO_H
#define KLP_COMPAT_LINUX_ERRNO_H

#if defined(__has_include_next)
#if __has_include_next(<linux/errno.h>)
#include_next <linux/errno.h>
#endif
#endif
#include <errno.h>

#ifndef ERESTARTSYS
#define ERESTARTSYS 512
#endif
#ifndef ENOTSUPP
#define ENOTSUPP 524
#endif
#define MAX_ERRNO 4095
#define IS_ERR_VALUE(x) ((unsigned long)(void *)(x) >= (unsigned long)-MAX_ERRNO)

#endif /* KLP_COMPAT_LINUX_ERRNO_H */
