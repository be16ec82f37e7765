/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * <linux/types.h>: the system's <linux/types.h> (__u8 ... __s64: other system headers
 * include it too, so this header only adds to it), the kernel's u8 ... s64, bool,
 * size_t, ssize_t, pid_t, and gfp_t (<klp.h>'s).
 */
#ifndef KLP_COMPAT_LINUX_TYPES_H
#define KLP_COMPAT_LINUX_TYPES_H

#if defined(__has_include_next)
#if __has_include_next(<linux/types.h>)
#include_next <linux/types.h>
#define KLP__UAPI_TYPES 1
#endif
#endif

#include "../../../klp.h"

#include <sys/types.h>

#ifndef KLP__UAPI_TYPES
typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
#endif

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s8 s8;
typedef __s16 s16;
typedef __s32 s32;
typedef __s64 s64;
typedef unsigned long ulong;
typedef unsigned int uint;
typedef unsigned short ushort;
typedef unsigned char uchar;
typedef u64 phys_addr_t;
typedef u64 dma_addr_t;

#endif /* KLP_COMPAT_LINUX_TYPES_H */
