//! Entry points for the loom models (`--cfg klp_loom` only): the real read side, grace
//! period and batcher, on an explicit registry instead of thread-locals.

use crate::gp::Batcher;
use crate::os::ProcessBarrier;
use crate::reader::{self, Registry, Slot};
use crate::sync::Ordering;

/// A registry of reader slots private to one model execution.
pub struct Model {
    registry: Registry,
    batcher: Batcher,
}

/// A reader's slot in a [`Model`].
#[derive(Clone, Copy)]
pub struct Reader<'a>(&'a Slot);

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

impl Model {
    /// An empty registry.
    pub fn new() -> Self {
        Model {
            registry: Registry::new(),
            batcher: Batcher::new(),
        }
    }

    /// Claim a slot (a thread's first read section).
    pub fn claim(&self) -> Reader<'_> {
        Reader(self.registry.claim())
    }

    /// Give a slot back (thread exit).
    pub fn release(&self, r: Reader<'_>) {
        self.registry.release(r.0);
    }

    /// Enter a read section.
    pub fn enter(&self, r: Reader<'_>) {
        reader::enter(r.0);
    }

    /// Leave a read section.
    pub fn exit(&self, r: Reader<'_>) {
        reader::exit(r.0);
    }

    /// Mark the reader rcu-registered (true) or parked (false), as `local::set_flags` does.
    pub fn set_rcu_watched(&self, r: Reader<'_>, watched: bool) {
        let f = if watched {
            reader::RCU_REGISTERED
        } else {
            reader::RCU_REGISTERED | reader::PARKED
        };
        r.0.flags.store(f, Ordering::SeqCst);
        crate::sync::fence(Ordering::SeqCst);
    }

    /// A preempt grace period: every slot in use.
    pub fn preempt_synchronize(&self) {
        self.registry.grace_period(&ProcessBarrier, |_| true, false);
    }

    /// An rcu grace period, batched, calling `on_gp` once per grace period actually run.
    pub fn rcu_synchronize(&self, on_gp: impl Fn()) {
        self.batcher.synchronize(|| {
            on_gp();
            self.registry
                .grace_period(&ProcessBarrier, reader::rcu_watched, false);
        });
    }

    /// Completed rcu grace periods.
    pub fn rcu_completed(&self) -> u64 {
        self.batcher.completed()
    }
}
