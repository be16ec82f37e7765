/* callback_info() of the callback demos and the state modules: "<callback>: vmlinux", or
 * "<callback>: <module> -> <module state>" for a module's object. */
#ifndef CALLBACK_INFO_H
#define CALLBACK_INFO_H

#include "klp_selftest.h"

static const char *const module_state[] = {
	[KLP_MODULE_STATE_LIVE] = "[MODULE_STATE_LIVE] Normal state",
	[KLP_MODULE_STATE_COMING] = "[MODULE_STATE_COMING] Full formed, running module_init",
	[KLP_MODULE_STATE_GOING] = "[MODULE_STATE_GOING] Going away",
};

static inline void callback_info(const char *callback, struct klp_object *obj)
{
	int state;

	if (!obj->name) {
		pr_info("%s: vmlinux", callback);
		return;
	}
	state = klp_object_state(obj);
	pr_info("%s: %s -> %s", callback, obj->name,
		state >= 0 && state <= KLP_MODULE_STATE_GOING ? module_state[state]
							   : "[MODULE_STATE_UNFORMED] Still setting it up");
}

#endif /* CALLBACK_INFO_H */
