//! `klp-compare`: the backend comparison report.
//!
//! 1. For every flavor and the peers (liburcu-memb when installed, crossbeam-epoch,
//!    arc-swap): the cost of a read section; the latency of one grace period with 0, 1
//!    and 2 busy reader threads, and the time of K = 1, 2, 4, 8 threads calling
//!    `synchronize` at once while one reader is busy (with the grace periods actually
//!    run, where the flavor counts them).
//! 2. **Batching**, where callers overlap on two processors: deferred frees (`defer` +
//!    `barrier`) with a busy reader, and K `synchronize` callers while a reader holds
//!    50 µs read sections; grace periods per call and per 1,000 frees.
//! 3. **Safety**, the seed's case counted: read sections where the flavor is not
//!    watching (threads not registered, parked threads) racing an updater that reclaims,
//!    and signal handlers calling a patched function on a parked thread through the
//!    engine, during a held transition and after it.
//!
//! Each side ends with a conclusion line drawn from the numbers of the run. Medians of
//! repeated runs; a quick report (about 10 s on two processors), not a substitute for
//! the criterion benches in `benches/`.

use klp_benches::overlap::{LongReaders, concurrent_synchronize_beside, deferred_frees_beside};
use klp_benches::peers;
use klp_benches::seed::{SeedOutcome, engine_signals};
use klp_benches::unwatched::{RaceOutcome, ReaderKind, reclaim_race};
use klp_benches::{BusyReaders, concurrent_synchronize, median};
use klp_sync::{Flavor, Lock, Preempt, Rcu};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Repetitions of every measurement; the median is reported.
const REPEATS: usize = 7;
/// Read sections per timed run.
const READS: u64 = 2_000_000;
/// The read sections of the long readers.
const LONG_HOLD: Duration = Duration::from_micros(50);
/// Deferred frees per run: this many threads, each this many.
const DEFER_THREADS: usize = 2;
const DEFER_EACH: u64 = 2_500;
/// Handler calls per phase of the engine's seed case.
const SIGNALS: u64 = 1_000;
/// How long each reclaim race runs, and its readers' sections.
const RACE_FOR: Duration = Duration::from_millis(250);
const RACE_HOLD: Duration = Duration::from_micros(30);

fn read_section_ns<F: Flavor>(f: &F) -> f64 {
    f.register_current_thread();
    let mut samples: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..READS {
                let g = f.read_lock();
                black_box(&g);
            }
            t.elapsed().as_nanos() as f64 / READS as f64
        })
        .collect();
    f.unregister_current_thread();
    median(&mut samples)
}

fn tls_floor_ns() -> f64 {
    thread_local! {
        static C: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    let mut samples: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..READS {
                C.with(|c| c.set(black_box(c.get()) + 1));
            }
            t.elapsed().as_nanos() as f64 / READS as f64
        })
        .collect();
    median(&mut samples)
}

fn synchronize_us<F: Flavor + 'static>(f: &Arc<F>, readers: usize) -> f64 {
    let busy = BusyReaders::start(f, readers);
    let calls = 200u32;
    let mut samples: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..calls {
                f.synchronize();
            }
            t.elapsed().as_secs_f64() * 1e6 / f64::from(calls)
        })
        .collect();
    drop(busy);
    median(&mut samples)
}

/// Grace periods a flavor has run, where it counts them (rcu shares them between callers).
trait GracePeriods {
    fn grace_periods(&self) -> Option<u64> {
        None
    }
}
impl GracePeriods for Preempt {}
impl GracePeriods for Lock {}
impl GracePeriods for Rcu {
    fn grace_periods(&self) -> Option<u64> {
        Some(self.completed_grace_periods())
    }
}
#[cfg(klp_urcu)]
impl GracePeriods for peers::UrcuMemb {}

/// Median time (µs) for `k` threads to make one `synchronize` call each, all at once,
/// while readers run (started by the caller; with `long`, the callers keep off its
/// processors); and the grace periods run per call (where counted).
fn concurrent_us<F: Flavor + GracePeriods + 'static>(
    f: &Arc<F>,
    k: usize,
    calls: u64,
    long: Option<&LongReaders>,
) -> (f64, Option<f64>) {
    let gp0 = f.grace_periods();
    let mut samples: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let d = match long {
                Some(l) => concurrent_synchronize_beside(f, l, k, calls),
                None => concurrent_synchronize(f, k, calls),
            };
            d.as_secs_f64() * 1e6 / calls as f64
        })
        .collect();
    let per_call = gp0
        .zip(f.grace_periods())
        .map(|(a, b)| (b - a) as f64 / (REPEATS as u64 * calls * k as u64) as f64);
    (median(&mut samples), per_call)
}

/// The first table's row.
struct Row {
    name: &'static str,
    read_ns: f64,
    /// Grace periods and concurrent callers; `None` for peers without grace periods.
    sync: Option<SyncRow>,
}

struct SyncRow {
    sync_us: [f64; 3],
    conc_us: [f64; 4],
    /// Grace periods per call with K = 8, where counted.
    gp_per_call: Option<f64>,
}

/// The batching side, for one flavor.
struct Batching {
    name: &'static str,
    /// Median ns per deferred free (defer … barrier, divided by the frees).
    defer_ns: f64,
    /// Grace periods per 1,000 deferred frees, where counted.
    defer_gp_per_1000: Option<f64>,
    /// With long readers: µs for each of K callers to make one call, K = 1, 2, 4, 8.
    long_us: [f64; 4],
    /// Grace periods per call, K = 1, 2, 4, 8, where counted.
    long_gp: [Option<f64>; 4],
}

fn measure<F: Flavor + GracePeriods + 'static>(f: &Arc<F>, read_ns: f64) -> Row {
    let sync_us = [0, 1, 2].map(|r| synchronize_us(f, r));
    let busy = BusyReaders::start(f, 1);
    let conc = [1, 2, 4, 8].map(|k| concurrent_us(f, k, 100, None));
    drop(busy);
    Row {
        name: f.name(),
        read_ns,
        sync: Some(SyncRow {
            sync_us,
            conc_us: conc.map(|c| c.0),
            gp_per_call: conc[3].1,
        }),
    }
}

fn batching<F: Flavor + GracePeriods + 'static>(f: &Arc<F>) -> Batching {
    // Deferred frees, with one busy reader on a processor of its own (a grace period
    // costs the barrier's IPI).
    let busy = LongReaders::start(f, 1, Duration::ZERO);
    let frees = DEFER_THREADS as u64 * DEFER_EACH;
    let gp0 = f.grace_periods();
    let mut samples: Vec<f64> = (0..REPEATS)
        .map(|_| {
            deferred_frees_beside(f, &busy, DEFER_THREADS, DEFER_EACH).as_nanos() as f64
                / frees as f64
        })
        .collect();
    let defer_gp_per_1000 = gp0
        .zip(f.grace_periods())
        .map(|(a, b)| (b - a) as f64 * 1000.0 / (REPEATS as u64 * frees) as f64);
    drop(busy);
    let defer_ns = median(&mut samples);

    // K callers while a reader holds long sections: they pile up behind a grace period.
    let long = LongReaders::start(f, 1, LONG_HOLD);
    let conc = [1, 2, 4, 8].map(|k| concurrent_us(f, k, 40, Some(&long)));
    drop(long);
    Batching {
        name: f.name(),
        defer_ns,
        defer_gp_per_1000,
        long_us: conc.map(|c| c.0),
        long_gp: conc.map(|c| c.1),
    }
}

/// The safety side, for one flavor.
struct Safety {
    name: &'static str,
    /// Reclaim races per reader kind (`ReaderKind::ALL`); `None` where not measured.
    races: [Option<RaceOutcome>; 3],
    /// Through the engine: the parked thread called before / first called in a handler.
    engine: Option<[SeedOutcome; 2]>,
}

fn races<F: Flavor + 'static>(f: &Arc<F>, kinds: &[ReaderKind]) -> [Option<RaceOutcome>; 3] {
    ReaderKind::ALL.map(|k| {
        kinds
            .contains(&k)
            .then(|| reclaim_race(f, k, RACE_HOLD, RACE_FOR))
    })
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "—".to_owned(), |v| format!("{v:.prec$}"))
}

fn main() {
    let start = Instant::now();
    let urcu = peers::urcu_version();

    // ---- 1. Read sections, grace periods, concurrent callers ---------------------------
    let preempt = Arc::new(Preempt::new());
    let rcu = Arc::new(Rcu::new());
    let lock = Arc::new(Lock::new());
    let mut rows = vec![
        measure(&preempt, read_section_ns(&*preempt)),
        measure(&rcu, read_section_ns(&*rcu)),
        measure(&lock, read_section_ns(&*lock)),
    ];
    #[cfg(klp_urcu)]
    let urcu_flavor = Arc::new(peers::UrcuMemb);
    #[cfg(klp_urcu)]
    if let Some(read) = peers::urcu_read_section_ns(READS, REPEATS) {
        rows.push(measure(&urcu_flavor, read));
    }
    rows.push(Row {
        name: "crossbeam-epoch pin",
        read_ns: peers::crossbeam_pin_ns(READS, REPEATS),
        sync: None,
    });
    rows.push(Row {
        name: "arc-swap load",
        read_ns: peers::arc_swap_load_ns(READS, REPEATS),
        sync: None,
    });
    let floor = tls_floor_ns();

    // ---- 2. Batching ----------------------------------------------------------------
    #[allow(unused_mut)]
    let mut batch = vec![batching(&preempt), batching(&rcu)];
    #[cfg(klp_urcu)]
    batch.push(batching(&urcu_flavor));

    // ---- 3. Safety ------------------------------------------------------------------
    let mut safety = vec![
        Safety {
            name: "preempt",
            races: races(&preempt, &ReaderKind::ALL),
            engine: None,
        },
        Safety {
            name: "rcu",
            races: races(&rcu, &ReaderKind::ALL),
            engine: None,
        },
    ];
    #[cfg(klp_urcu)]
    safety.push(Safety {
        name: "urcu-memb",
        races: races(&urcu_flavor, &[ReaderKind::Unregistered]),
        engine: None,
    });
    safety[0].engine = Some([
        engine_signals(Preempt::new(), SIGNALS, false),
        engine_signals(Preempt::new(), SIGNALS, true),
    ]);
    safety[1].engine = Some([
        engine_signals(Rcu::new(), SIGNALS, false),
        engine_signals(Rcu::new(), SIGNALS, true),
    ]);

    // ---- Report ---------------------------------------------------------------------
    println!(
        "libklp synchronization flavors and their peers — barrier mode: {}",
        klp_sync::barrier_mode()
    );
    println!(
        "{} cores; medians of {REPEATS} runs; thread-local increment (the floor): {floor:.2} ns; liburcu-memb: {}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        urcu.unwrap_or("not installed")
    );
    print_first_table(&rows, urcu.is_some());
    print_batching(&batch);
    print_safety(&safety);
    println!("\nTook {:.1} s.", start.elapsed().as_secs_f64());
}

fn print_first_table(rows: &[Row], urcu: bool) {
    println!(
        "Read sections, one grace period with 0/1/2 busy readers, K concurrent callers with one busy reader"
    );
    println!(
        "{:<20} {:>10} | {:>11} {:>11} {:>11} | {:>9} {:>9} {:>9} {:>9} {:>8}",
        "flavor / peer",
        "read (ns)",
        "sync 0r µs",
        "sync 1r µs",
        "sync 2r µs",
        "K=1 µs",
        "K=2 µs",
        "K=4 µs",
        "K=8 µs",
        "K8/K1"
    );
    for r in rows {
        match &r.sync {
            Some(s) => println!(
                "{:<20} {:>10.2} | {:>11.2} {:>11.2} {:>11.2} | {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>7.1}x",
                r.name,
                r.read_ns,
                s.sync_us[0],
                s.sync_us[1],
                s.sync_us[2],
                s.conc_us[0],
                s.conc_us[1],
                s.conc_us[2],
                s.conc_us[3],
                s.conc_us[3] / s.conc_us[0]
            ),
            None => println!(
                "{:<20} {:>10.2} | {:>11} {:>11} {:>11} | {:>9} {:>9} {:>9} {:>9} {:>8}",
                r.name, r.read_ns, "—", "—", "—", "—", "—", "—", "—", "—"
            ),
        }
    }
    if !urcu {
        println!("{:<20} not installed (Debian: liburcu-dev)", "urcu-memb");
    }
    let find = |n: &str| rows.iter().find(|r| r.name == n);
    if let (Some(p), Some(r)) = (find("preempt"), find("rcu"))
        && let (Some(ps), Some(rs)) = (&p.sync, &r.sync)
    {
        let overlap = match rs.gp_per_call {
            Some(g) if g >= 0.9 => "they hardly overlapped (the sides below make them)",
            Some(_) => "some of them shared a grace period",
            None => "grace periods not counted",
        };
        println!(
            "K=8 with short sections: rcu took {:.2}x preempt's time and ran {} grace periods per call (1.00: no sharing; preempt runs one per call by design): {overlap}.",
            rs.conc_us[3] / ps.conc_us[3],
            fmt_opt(rs.gp_per_call, 2)
        );
    }
}

fn print_batching(batch: &[Batching]) {
    println!(
        "\nBatching, where callers overlap: {DEFER_THREADS} threads × {DEFER_EACH} deferred frees then barrier, one busy reader; K callers of synchronize while one reader holds {} µs read sections (readers on a processor of their own)",
        LONG_HOLD.as_micros()
    );
    println!(
        "{:<10} {:>11} {:>11} | {:>9} {:>9} {:>9} {:>9} | {:>6} {:>6} {:>6} {:>6}",
        "flavor",
        "free (ns)",
        "GP / 1000",
        "K=1 µs",
        "K=2 µs",
        "K=4 µs",
        "K=8 µs",
        "GP K1",
        "GP K2",
        "GP K4",
        "GP K8"
    );
    for b in batch {
        // preempt runs one grace period per call and per deferred free by construction.
        let by_construction = b.name == "preempt";
        let gp1000 = if by_construction {
            "1000*".to_owned()
        } else {
            fmt_opt(b.defer_gp_per_1000, 1)
        };
        let gp = |g: Option<f64>| {
            if by_construction {
                "1.00*".to_owned()
            } else {
                fmt_opt(g, 2)
            }
        };
        println!(
            "{:<10} {:>11.0} {:>11} | {:>9.1} {:>9.1} {:>9.1} {:>9.1} | {:>6} {:>6} {:>6} {:>6}",
            b.name,
            b.defer_ns,
            gp1000,
            b.long_us[0],
            b.long_us[1],
            b.long_us[2],
            b.long_us[3],
            gp(b.long_gp[0]),
            gp(b.long_gp[1]),
            gp(b.long_gp[2]),
            gp(b.long_gp[3])
        );
    }
    println!(
        "* preempt: one grace period per synchronize call and per deferred free, by construction (defer = synchronize, then run); liburcu does not count its grace periods (—)."
    );
    let find = |n: &str| batch.iter().find(|b| b.name == n);
    let (Some(p), Some(r)) = (find("preempt"), find("rcu")) else {
        return;
    };
    let defer_x = p.defer_ns / r.defer_ns;
    let k8 = r.long_us[3] / p.long_us[3];
    let gp8 = r.long_gp[3];
    let shared = gp8.is_some_and(|g| g < 0.75) && k8 < 0.9;
    let batched = r.defer_gp_per_1000.is_some_and(|g| g < 500.0) && defer_x > 1.5;
    let verdict = match (batched, shared) {
        (true, true) => "rcu's batching shows on both",
        (true, false) => "rcu's batching shows on deferred frees, not on these synchronize callers",
        (false, true) => "rcu's batching shows on these synchronize callers, not on deferred frees",
        (false, false) => "no batching gain was measured in this run",
    };
    println!(
        "Conclusion (batching): deferred frees ran {defer_x:.1}x faster under rcu ({:.0} ns against {:.0} ns per free) with {} grace periods per 1,000 frees against 1,000; with {} µs readers, 8 concurrent synchronize callers ran {} grace periods per call under rcu against 1 and took {k8:.2}x preempt's time (K=1: {:.2}x): {verdict}.",
        r.defer_ns,
        p.defer_ns,
        fmt_opt(r.defer_gp_per_1000, 1),
        LONG_HOLD.as_micros(),
        fmt_opt(gp8, 2),
        r.long_us[0] / p.long_us[0],
    );
}

fn print_safety(safety: &[Safety]) {
    println!(
        "\nSafety, where the flavor is not watching: read sections of {} µs on a cell that an updater publishes anew, waits for a grace period, then poisons ({} ms per case)",
        RACE_HOLD.as_micros(),
        RACE_FOR.as_millis()
    );
    println!(
        "{:<10} {:<22} {:>9} {:>11} {:>11} {:>9}",
        "flavor", "reader", "sections", "unwatched", "reclaimed", "updates"
    );
    for s in safety {
        for (k, r) in ReaderKind::ALL.iter().zip(&s.races) {
            let Some(r) = r else { continue };
            println!(
                "{:<10} {:<22} {:>9} {:>11} {:>11} {:>9}",
                s.name,
                k.label(),
                r.sections,
                r.unwatched,
                r.reclaimed,
                r.updates
            );
        }
    }
    println!(
        "\nThrough the engine: {SIGNALS} SIGUSR1 handlers calling a patched function on a parked thread while a transition is held (a thread parked inside the patch), then {SIGNALS} after it completes"
    );
    println!(
        "{:<10} {:<28} {:>7} {:>10} | {:>7} {:>10} | {:>6} {:>8}",
        "flavor", "parked thread", "calls", "unwatched", "after", "unwatched", "wrong", "warnings"
    );
    for s in safety {
        let Some(e) = &s.engine else { continue };
        for (label, o) in ["registered (called before)", "first call in a handler"]
            .iter()
            .zip(e)
        {
            println!(
                "{:<10} {:<28} {:>7} {:>10} | {:>7} {:>10} | {:>6} {:>8}",
                s.name,
                label,
                o.calls_in_transition,
                o.unwatched_in_transition,
                o.calls_outside,
                o.unwatched_outside,
                o.wrong,
                o.warnings
            );
        }
    }
    println!(
        "unwatched: calls where the flavor was not watching the thread; the engine made rcu watch each (the kernel's rcu_irq_enter), counted by Klp::not_watching_count. Outside transitions a call runs the site's resolved target: no handler, no read section, no flavor."
    );

    let find = |n: &str| safety.iter().find(|s| s.name == n);
    let (Some(p), Some(r)) = (find("preempt"), find("rcu")) else {
        return;
    };
    let sum = |s: &Safety, kinds: &[ReaderKind], f: fn(&RaceOutcome) -> u64| -> u64 {
        ReaderKind::ALL
            .iter()
            .zip(&s.races)
            .filter(|(k, _)| kinds.contains(k))
            .filter_map(|(_, r)| r.as_ref().map(f))
            .sum()
    };
    let exposed = [ReaderKind::Unregistered, ReaderKind::Parked];
    let r_sections = sum(r, &exposed, |o| o.sections);
    let r_unwatched = sum(r, &exposed, |o| o.unwatched);
    let r_reclaimed = sum(r, &exposed, |o| o.reclaimed);
    let p_sections = sum(p, &exposed, |o| o.sections);
    let p_unwatched = sum(p, &exposed, |o| o.unwatched);
    let p_reclaimed = sum(p, &exposed, |o| o.reclaimed);
    let fixed = [ReaderKind::ParkedMadeToWatch];
    let r_fixed = sum(r, &fixed, |o| o.sections);
    let r_fixed_reclaimed = sum(r, &fixed, |o| o.reclaimed);
    let engine = |s: &Safety| -> (u64, u64, u64, u64, u64) {
        s.engine.as_ref().map_or((0, 0, 0, 0, 0), |e| {
            e.iter().fold((0, 0, 0, 0, 0), |a, o| {
                (
                    a.0 + o.calls_in_transition,
                    a.1 + o.unwatched_in_transition,
                    a.2 + o.calls_outside,
                    a.3 + o.unwatched_outside,
                    a.4 + o.wrong,
                )
            })
        })
    };
    let (rc, ru, ro, rou, rw) = engine(r);
    let (pc, pu, po, pou, pw) = engine(p);
    let hazard = if r_reclaimed > 0 {
        format!("{r_reclaimed} of them read a reclaimed cell")
    } else {
        "none of them happened to read a reclaimed cell in this run".to_owned()
    };
    let guarded = if p_reclaimed == 0 && r_fixed_reclaimed == 0 {
        "no protected section read one"
    } else {
        "A PROTECTED SECTION READ A RECLAIMED CELL"
    };
    println!(
        "Conclusion (safety): rcu alone did not watch {r_unwatched} of {r_sections} sections on threads not registered or parked and {hazard}; preempt watched all {p_sections} ({p_unwatched} unwatched, {p_reclaimed} reclaimed), and rcu made to watch ran {r_fixed} sections with {r_fixed_reclaimed} reclaimed: {guarded}. Through the engine, during a held transition rcu had to be made to watch {ru} of {rc} handler calls, preempt {pu} of {pc}, with {} wrong results; after the transition {} of {} calls needed the flavor: outside transitions no call depends on it.",
        rw + pw,
        rou + pou,
        ro + po
    );
}
