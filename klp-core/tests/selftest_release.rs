//! The kernel frees a disabled or replaced patch asynchronously and drops the livepatch
//! module's reference (`klp_free_patch_finish`) **outside** `klp_mutex` (reference §5.5,
//! §11): that reference is what the selftests' `unload_lp` waits for. Here the release is
//! the patch's `on_release`; it must be able to use the engine, as a module's unload may.
//!
//! Each flavor's engine is separate; the tests share one patchable function and run one at
//! a time.

use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use klp_core::log::{Capture, Log};
use klp_core::{Func, Klp, Object, Patch, patchable};
use klp_sync::Flavor;

static SERIAL: Mutex<()> = Mutex::new(());
const TIMEOUT: Duration = Duration::from_secs(10);

patchable! {
    fn release_target() -> u32 { 1 }
}

fn release_fixed() -> u32 {
    2
}

/// Enable, disable from a helper thread (so that a deadlock fails the test instead of
/// hanging it), and check that `on_release` ran and could read the patch list.
fn release_outside_control_lock<F: Flavor + 'static>(flavor: F) {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let klp = Klp::with_log(flavor, Log::new(Capture::new()));
    let (tx, rx) = mpsc::channel();
    let patch = Patch::new("release_probe")
        .object(Object::vmlinux().func(Func::new("release_target", release_fixed as fn() -> u32)))
        .on_release(move || {
            // What /sys/kernel/livepatch shows once the module reference is dropped.
            let _ = tx.send(klp.patches().len());
        });
    klp.enable(patch).expect("enable");
    assert!(klp.wait_transition(TIMEOUT));
    assert_eq!(release_target(), 2);

    let (dtx, drx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = dtx.send(klp.set_enabled("release_probe", false));
    });
    let disabled = drx.recv_timeout(TIMEOUT).expect(
        "echo 0 > enabled never returned: on_release runs under the control mutex and \
         deadlocks on it",
    );
    disabled.expect("disable");
    let seen = rx
        .recv_timeout(TIMEOUT)
        .expect("the patch was never released");
    assert_eq!(seen, 0, "the released patch is off the list");
    assert_eq!(release_target(), 1);
}

#[test]
fn release_outside_control_lock_preempt() {
    release_outside_control_lock(klp_sync::Preempt::new());
}

#[test]
fn release_outside_control_lock_rcu() {
    release_outside_control_lock(klp_sync::Rcu::new());
}

#[test]
fn release_outside_control_lock_lock() {
    release_outside_control_lock(klp_sync::Lock::new());
}
