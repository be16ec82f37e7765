/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/* <linux/gfp.h>: the allocation flags. <klp.h> gives GFP_KERNEL, GFP_ATOMIC,
 * GFP_NOWAIT, ... (libklp knows their names, for %pGg); the kernel's __GFP_* bits are its
 * KLP_GFP_*. Only __GFP_ZERO does something (kmalloc zeroes the memory). */
#ifndef KLP_COMPAT_LINUX_GFP_H
#define KLP_COMPAT_LINUX_GFP_H

#include "../klp_compat.h"

#define __GFP_ZERO KLP_GFP_ZERO
#define __GFP_NOWARN KLP_GFP_NOWARN
#define __GFP_NOFAIL KLP_GFP_NOFAIL
#define __GFP_NORETRY KLP_GFP_NORETRY
#define __GFP_ACCOUNT KLP_GFP_ACCOUNT
#define __GFP_RETRY_MAYFAIL KLP_GFP_RETRY_MAYFAIL
#define GFP_KERNEL_ACCOUNT (GFP_KERNEL | __GFP_ACCOUNT)

#endif /* KLP_COMPAT_LINUX_GFP_H */
