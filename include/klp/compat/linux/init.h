/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/* <linux/init.h>: __init, __exit and friends mark nothing here; module_init and
 * module_exit are <linux/module.h>'s. */
#ifndef KLP_COMPAT_LINUX_INIT_H
#define KLP_COMPAT_LINUX_INIT_H

#include "module.h"

#define __init
#define __exit
#define __initdata
#define __exitdata
#define __initconst
#define __init_or_module

#endif /* KLP_COMPAT_LINUX_INIT_H */
