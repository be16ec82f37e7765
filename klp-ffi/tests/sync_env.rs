//! Without `klp_set_sync`, the environment variable `KLP_SYNC` chooses the flavor at
//! first use. (A binary of its own: the engine and the environment are process-wide.)

use klp::*;
use klp_core::libc_errno::EBUSY;

#[test]
fn klp_sync_rcu_in_the_environment_chooses_rcu() {
    // SAFETY: the only test of this binary, and nothing else of the process reads or
    // writes the environment concurrently.
    unsafe { std::env::set_var("KLP_SYNC", "rcu") };
    assert_eq!(klp_thread_patch_state(), -1);
    assert_eq!(engine().flavor_name(), "rcu");
    assert_eq!(klp_set_sync(KLP_SYNC_PREEMPT), -EBUSY);
}
