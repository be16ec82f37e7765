/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/* <linux/stringify.h>: __stringify(x), after expanding x. */
#ifndef KLP_COMPAT_LINUX_STRINGIFY_H
#define KLP_COMPAT_LINUX_STRINGIFY_H

#define __stringify_1(...) #__VA_ARGS__
#define __stringify(...) __stringify_1(__VA_ARGS__)

#endif /* KLP_COMPAT_LINUX_STRINGIFY_H */
