//! `klp_set_sync` before first use chooses the flavor, over the environment; after first
//! use it is `-EBUSY`. (A binary of its own: the engine is process-wide.)

use klp::*;
use klp_core::libc_errno::{EBUSY, EINVAL};

#[test]
fn the_flavor_chosen_before_first_use_is_the_engines() {
    assert_eq!(klp_set_sync(KLP_SYNC_PREEMPT), 0);
    assert_eq!(klp_set_sync(3), -EINVAL);
    assert_eq!(klp_set_sync(KLP_SYNC_RCU), 0, "the last choice counts");
    // Neither the log handler nor the shadow variables fix the flavor.
    // SAFETY: NULL restores the default handler.
    let r = unsafe { klp_set_log_handler(None, std::ptr::null_mut()) };
    assert_eq!(r, 0);
    assert!(klp_shadow_get(std::ptr::null_mut(), 1).is_null());
    assert_eq!(klp_set_sync(KLP_SYNC_RCU), 0);
    // First use.
    assert_eq!(klp_wait_transition(0), 0);
    assert_eq!(engine().flavor_name(), "rcu");
    assert_eq!(klp_set_sync(KLP_SYNC_RCU), -EBUSY);
    assert_eq!(klp_set_sync(KLP_SYNC_PREEMPT), -EBUSY);
}
