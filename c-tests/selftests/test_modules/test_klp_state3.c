/* test_klp_state3: test_klp_state2 under another name (KBUILD_MODNAME). */
#include "test_klp_state2.c"
