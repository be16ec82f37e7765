//! No lost wake-ups: with the retry timer set to a minute, a transition whose threads all
//! reach switch points by themselves (or park) must complete through the early wake-ups
//! alone. Busy threads call a patchable function in a loop, with a switch point between
//! calls and short parked sleeps; a control thread enables and disables a patch many
//! times and waits for each transition with a deadline far below the timer's period. A
//! wake-up lost in a race (a thread switching itself while an attempt runs, the count of
//! pending threads stored late) leaves a transition to the timer and fails the test.

use klp_core::{Func, Klp, Object, Patch, park, patchable, unpark, update_patch_state};
use klp_sync::{Flavor, Preempt, Rcu};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

// One function per flavor: a site belongs to one engine at a time, and the tests run
// side by side.
patchable! {
    fn wake_preempt(x: u64) -> u64 { x.wrapping_mul(3) }
}
patchable! {
    fn wake_rcu(x: u64) -> u64 { x.wrapping_mul(3) }
}

fn wake_replacement(x: u64) -> u64 {
    x.wrapping_mul(3)
}

fn transitions_complete_without_the_timer<F: Flavor + 'static>(
    flavor: F,
    target: fn(u64) -> u64,
    target_name: &str,
) {
    let klp = Klp::new(flavor);
    klp.set_retry_period(Duration::from_secs(60));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut n = 0u64;
                let mut acc = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    acc = acc.wrapping_add(target(n));
                    update_patch_state();
                    n += 1;
                    if n.is_multiple_of(200 + 100 * i) {
                        park();
                        std::thread::sleep(Duration::from_micros(50));
                        unpark();
                    }
                }
                std::hint::black_box(acc)
            })
        })
        .collect();
    for round in 0..300 {
        let name = format!("wake{round}");
        let p = Patch::new(&name).object(
            Object::vmlinux().func(Func::new(target_name, wake_replacement as fn(u64) -> u64)),
        );
        klp.enable(p).expect("enable");
        assert!(
            klp.wait_transition(Duration::from_secs(10)),
            "{}: round {round}: the patching transition waited for the timer",
            klp.flavor().name()
        );
        klp.set_enabled(&name, false).expect("disable");
        assert!(
            klp.wait_transition(Duration::from_secs(10)),
            "{}: round {round}: the unpatching transition waited for the timer",
            klp.flavor().name()
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn preempt_transitions_complete_without_the_timer() {
    transitions_complete_without_the_timer(Preempt::new(), wake_preempt, "wake_preempt");
}

#[test]
fn rcu_transitions_complete_without_the_timer() {
    transitions_complete_without_the_timer(Rcu::new(), wake_rcu, "wake_rcu");
}
