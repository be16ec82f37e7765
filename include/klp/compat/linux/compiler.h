/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/* <linux/compiler.h>: attributes, branch hints, READ_ONCE/WRITE_ONCE (GCC, Clang). */
#ifndef KLP_COMPAT_LINUX_COMPILER_H
#define KLP_COMPAT_LINUX_COMPILER_H

#include "../klp_compat.h"

#define noinline __attribute__((noinline))
#define noinline_for_stack noinline
#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif
#define __maybe_unused __attribute__((unused))
#define __always_unused __attribute__((unused))
#define __used __attribute__((used))
#define __weak __attribute__((weak))
#define __aligned(x) __attribute__((aligned(x)))
#define __packed __attribute__((packed))
#define __printf(a, b) __attribute__((format(printf, a, b)))
#define __must_check __attribute__((warn_unused_result))
#define __cold __attribute__((cold))
#define __section(s) __attribute__((section(s)))
#define notrace
#define asmlinkage
#define __visible
#define __force
#define __user
#define __iomem
#define __rcu
#define __percpu
#define __read_mostly
#define __ro_after_init
#define fallthrough __attribute__((fallthrough))

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* A compiler barrier. */
#define barrier() __asm__ __volatile__("" : : : "memory")

/* One access of the variable, as the kernel's (a volatile access). */
#define READ_ONCE(x) (*(const volatile __typeof__(x) *)&(x))
#define WRITE_ONCE(x, val)                                                              \
	do {                                                                            \
		*(volatile __typeof__(x) *)&(x) = (val);                                \
	} while (0)

#endif /* KLP_COMPAT_LINUX_COMPILER_H */
