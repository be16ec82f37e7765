//! The seed's case, counted: read sections where a flavor is not watching the thread, and
//! what happens to them.
//!
//! Two measurements:
//!
//! * [`reclaim_race`], on a flavor alone: a reader thread in a given [`ReaderKind`] holds
//!   read sections of a few tens of microseconds on a published cell, while an updater
//!   publishes a new cell, waits for a grace period and then poisons the old one (what
//!   freeing it would be, without the undefined behaviour). A section that sees its cell
//!   change was not waited for: it read reclaimed memory. Under preempt every thread is
//!   watched; under rcu a thread that is not registered, or is parked, is not.
//! * [`engine_signals`] (module `seed`), through the engine: signal handlers that call a
//!   patched function on a parked thread while a transition is held, where the engine
//!   makes rcu watch the call (the kernel's `rcu_irq_enter`) and counts it; and the same
//!   calls outside a transition, where they run the site's resolved target with no read
//!   section, so no call depends on the flavor.
//!
//! [`engine_signals`]: crate::seed::engine_signals

use klp_sync::Flavor;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// What the reader thread is, for the flavor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReaderKind {
    /// Never registered with the flavor (a thread the library never saw).
    Unregistered,
    /// Registered, then parked (a signal handler running on a blocked thread).
    Parked,
    /// Registered and parked, each section inside `irq_enter`/`irq_exit`: what the engine
    /// does for a call on a parked thread.
    ParkedMadeToWatch,
}

impl ReaderKind {
    /// Every kind, in the order of the report.
    pub const ALL: [ReaderKind; 3] = [
        ReaderKind::Unregistered,
        ReaderKind::Parked,
        ReaderKind::ParkedMadeToWatch,
    ];

    /// A short label for the report.
    pub fn label(self) -> &'static str {
        match self {
            ReaderKind::Unregistered => "thread not registered",
            ReaderKind::Parked => "parked thread",
            ReaderKind::ParkedMadeToWatch => "parked, made to watch",
        }
    }
}

/// What [`reclaim_race`] counted.
#[derive(Clone, Copy, Debug, Default)]
pub struct RaceOutcome {
    /// Read sections the reader ran.
    pub sections: u64,
    /// Of them, sections where the flavor said it was not watching the thread.
    pub unwatched: u64,
    /// Of them, sections whose cell was poisoned or reused while they read it.
    pub reclaimed: u64,
    /// Grace periods the updater waited for (publish, synchronize, poison).
    pub updates: u64,
}

/// Cells the updater publishes in turn; a reader's section reads one.
const CELLS: usize = 64;
/// The value of a reclaimed cell.
const POISON: u64 = 0;

/// Run the reader (of `kind`) and the updater (the calling thread) for `dur`, the
/// reader's sections lasting `hold`.
pub fn reclaim_race<F: Flavor + 'static>(
    f: &Arc<F>,
    kind: ReaderKind,
    hold: Duration,
    dur: Duration,
) -> RaceOutcome {
    struct Shared {
        current: AtomicUsize,
        cells: [AtomicU64; CELLS],
        stop: AtomicBool,
    }
    let shared = Arc::new(Shared {
        current: AtomicUsize::new(0),
        cells: std::array::from_fn(|i| AtomicU64::new(if i == 0 { 1 } else { POISON })),
        stop: AtomicBool::new(false),
    });
    let ready = Arc::new(Barrier::new(2));
    let reader = {
        let (f, shared, ready) = (Arc::clone(f), Arc::clone(&shared), Arc::clone(&ready));
        std::thread::spawn(move || {
            if kind != ReaderKind::Unregistered {
                f.register_current_thread();
                f.park();
            }
            ready.wait();
            let mut out = RaceOutcome::default();
            while !shared.stop.load(Ordering::Relaxed) {
                let irq = (kind == ReaderKind::ParkedMadeToWatch).then(|| f.irq_enter());
                {
                    let _g = f.read_lock();
                    if !f.is_watching() {
                        out.unwatched += 1;
                    }
                    // Acquire: pairs with the updater's Release publication.
                    let i = shared.current.load(Ordering::Acquire);
                    let seen = shared.cells[i].load(Ordering::Acquire);
                    let t = Instant::now();
                    while t.elapsed() < hold {
                        std::hint::spin_loop();
                    }
                    let again = shared.cells[i].load(Ordering::Acquire);
                    if seen == POISON || again != seen {
                        out.reclaimed += 1;
                    }
                }
                if let Some(irq) = irq {
                    f.irq_exit(irq);
                }
                out.sections += 1;
            }
            if kind != ReaderKind::Unregistered {
                f.unpark();
                f.unregister_current_thread();
            }
            out
        })
    };
    ready.wait();
    let t0 = Instant::now();
    let mut generation = 1u64;
    let mut cur = 0usize;
    while t0.elapsed() < dur {
        generation += 1;
        let next = (cur + 1) % CELLS;
        // The new cell is filled, then published (Release).
        shared.cells[next].store(generation, Ordering::Relaxed);
        shared.current.store(next, Ordering::Release);
        f.synchronize();
        // No reader the grace period waited for can still read the old cell.
        shared.cells[cur].store(POISON, Ordering::Release);
        cur = next;
    }
    shared.stop.store(true, Ordering::Relaxed);
    let mut out = reader.join().unwrap();
    out.updates = generation - 1;
    out
}
