/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/* <linux/threads.h>: NR_CPUS, the most CPUs an array indexed by CPU must cover. */
#ifndef KLP_COMPAT_LINUX_THREADS_H
#define KLP_COMPAT_LINUX_THREADS_H

#define NR_CPUS 512

#endif /* KLP_COMPAT_LINUX_THREADS_H */
