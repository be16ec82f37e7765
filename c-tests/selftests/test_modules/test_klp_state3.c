// SPDX-License-Identifier: MIT OR Apache-2.0
/* test_klp_state3: test_klp_state2 under another name (the module's name is its
 * KBUILD_MODNAME), as the kernel builds it. */
#include "test_klp_state2.c"
