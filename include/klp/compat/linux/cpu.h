/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/* <linux/cpu.h>: NR_CPUS. */
#ifndef KLP_COMPAT_LINUX_CPU_H
#define KLP_COMPAT_LINUX_CPU_H

#include "threads.h"

#endif /* KLP_COMPAT_LINUX_CPU_H */
