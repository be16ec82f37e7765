/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * <linux/livepatch.h>: struct klp_patch, klp_object, klp_func, klp_callbacks,
 * klp_state, klp_enable_patch, the shadow variables and the system states are <klp.h>'s,
 * with the kernel's fields and meaning (patch->mod, obj->mod included); see there.
 */
#ifndef KLP_COMPAT_LINUX_LIVEPATCH_H
#define KLP_COMPAT_LINUX_LIVEPATCH_H

#include "../klp_compat.h"
#include "completion.h"
#include "list.h"
#include "module.h"

/* libklp has the consistency model on every architecture. */
static inline bool klp_have_reliable_stack(void)
{
	return true;
}

#endif /* KLP_COMPAT_LINUX_LIVEPATCH_H */
