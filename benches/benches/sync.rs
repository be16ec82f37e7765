//! klp-sync benchmarks: read-section cost, grace-period latency, concurrent grace periods,
//! beside the peers a user would pick instead (liburcu-memb when installed,
//! crossbeam-epoch, arc-swap), and the cases where grace periods can be shared on two
//! processors (long read sections, deferred frees).
//!
//! `cargo bench -p klp-benches --bench sync`; figures in `benches/README.md`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use klp_benches::overlap::{LongReaders, concurrent_synchronize_beside, deferred_frees_beside};
use klp_benches::{BusyReaders, concurrent_synchronize};
use klp_sync::{Flavor, Lock, Preempt, Rcu};
use std::cell::Cell;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

thread_local! {
    static COUNTER: Cell<u64> = const { Cell::new(0) };
}

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// Run `each` for every flavor and, where installed, liburcu-memb.
macro_rules! every_flavor {
    ($g:expr, $each:ident) => {
        $each($g, Preempt::new());
        $each($g, Rcu::new());
        $each($g, Lock::new());
        #[cfg(klp_urcu)]
        $each($g, klp_benches::peers::UrcuMemb);
    };
}

fn read_section(c: &mut Criterion) {
    let mut g = c.benchmark_group("read_section");
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("tls_increment", 1), |b| {
        b.iter(|| COUNTER.with(|c| c.set(black_box(c.get()) + 1)))
    });
    fn flavor<F: Flavor>(g: &mut Group<'_>, f: F) {
        f.register_current_thread();
        g.bench_function(BenchmarkId::new(f.name(), 1), |b| {
            b.iter(|| {
                let guard = f.read_lock();
                black_box(&guard);
            })
        });
        f.unregister_current_thread();
    }
    flavor(&mut g, Preempt::new());
    flavor(&mut g, Rcu::new());
    flavor(&mut g, Lock::new());
    // liburcu-memb's inline sections, in a C loop (a call per section would measure the
    // call).
    #[cfg(klp_urcu)]
    g.bench_function(BenchmarkId::new("urcu-memb", 1), |b| {
        b.iter_custom(klp_benches::peers::urcu_read_sections)
    });
    g.bench_function(BenchmarkId::new("crossbeam_epoch_pin", 1), |b| {
        b.iter(|| {
            let guard = crossbeam_epoch::pin();
            black_box(&guard);
        })
    });
    let swap = arc_swap::ArcSwap::from_pointee(7u64);
    g.bench_function(BenchmarkId::new("arc_swap_load", 1), |b| {
        b.iter(|| {
            let guard = swap.load();
            black_box(&**guard);
        })
    });
    g.finish();
}

fn synchronize(c: &mut Criterion) {
    let mut g = c.benchmark_group("synchronize");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    fn flavor<F: Flavor + 'static>(g: &mut Group<'_>, f: F) {
        let f = Arc::new(f);
        for readers in [0usize, 1, 2] {
            g.bench_with_input(
                BenchmarkId::new(f.name(), readers),
                &readers,
                |b, &readers| {
                    b.iter_custom(|iters| {
                        let busy = BusyReaders::start(&f, readers);
                        let t = Instant::now();
                        for _ in 0..iters {
                            f.synchronize();
                        }
                        let d = t.elapsed();
                        drop(busy);
                        d
                    })
                },
            );
        }
    }
    every_flavor!(&mut g, flavor);
    g.finish();
}

fn concurrent(c: &mut Criterion) {
    let mut g = c.benchmark_group("concurrent_synchronize");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    fn flavor<F: Flavor + 'static>(g: &mut Group<'_>, f: F) {
        let f = Arc::new(f);
        for k in [1usize, 2, 4, 8] {
            g.throughput(Throughput::Elements(k as u64));
            g.bench_with_input(BenchmarkId::new(f.name(), k), &k, |b, &k| {
                b.iter_custom(|iters| {
                    let busy = BusyReaders::start(&f, 1);
                    let d = concurrent_synchronize(&f, k, iters);
                    drop(busy);
                    d
                })
            });
        }
    }
    every_flavor!(&mut g, flavor);
    g.finish();
}

/// K callers of `synchronize` while one reader holds 50 µs read sections on a processor
/// of its own: the callers pile up behind a grace period, which a flavor that shares them
/// serves at once.
fn long_readers(c: &mut Criterion) {
    let mut g = c.benchmark_group("synchronize_long_readers");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    fn flavor<F: Flavor + 'static>(g: &mut Group<'_>, f: F) {
        let f = Arc::new(f);
        for k in [1usize, 2, 4, 8] {
            g.throughput(Throughput::Elements(k as u64));
            g.bench_with_input(BenchmarkId::new(f.name(), k), &k, |b, &k| {
                b.iter_custom(|iters| {
                    let long = LongReaders::start(&f, 1, Duration::from_micros(50));
                    let d = concurrent_synchronize_beside(&f, &long, k, iters);
                    drop(long);
                    d
                })
            });
        }
    }
    every_flavor!(&mut g, flavor);
    g.finish();
}

/// Deferred frees (`defer`, the kernel's `call_rcu`) from 1 and 2 threads with one busy
/// reader on a processor of its own, then `barrier`: per free.
fn deferred(c: &mut Criterion) {
    let mut g = c.benchmark_group("deferred_free");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    fn flavor<F: Flavor + 'static>(g: &mut Group<'_>, f: F) {
        let f = Arc::new(f);
        if f.name() == "lock" {
            return; // its defer runs in place after a write lock: nothing to batch
        }
        for threads in [1usize, 2] {
            g.throughput(Throughput::Elements(1));
            g.bench_with_input(
                BenchmarkId::new(f.name(), threads),
                &threads,
                |b, &threads| {
                    b.iter_custom(|iters| {
                        let busy = LongReaders::start(&f, 1, Duration::ZERO);
                        let each = iters.div_ceil(threads as u64);
                        let d = deferred_frees_beside(&f, &busy, threads, each);
                        drop(busy);
                        // Per free made (a few more than asked when `iters` is odd).
                        d.mul_f64(iters as f64 / (each * threads as u64) as f64)
                    })
                },
            );
        }
    }
    every_flavor!(&mut g, flavor);
    g.finish();
}

criterion_group!(
    benches,
    read_section,
    synchronize,
    concurrent,
    long_readers,
    deferred
);
criterion_main!(benches);
