//! klp-sync benchmarks: read-section cost, grace-period latency, concurrent grace periods.
//!
//! `cargo bench -p klp-benches --bench sync`; figures in `benches/README.md`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use klp_benches::{BusyReaders, concurrent_synchronize};
use klp_sync::{Flavor, Lock, Preempt, Rcu};
use std::cell::Cell;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

thread_local! {
    static COUNTER: Cell<u64> = const { Cell::new(0) };
}

fn read_section(c: &mut Criterion) {
    let mut g = c.benchmark_group("read_section");
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("tls_increment", 1), |b| {
        b.iter(|| COUNTER.with(|c| c.set(black_box(c.get()) + 1)))
    });
    fn flavor<F: Flavor>(
        g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        f: F,
    ) {
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
    g.bench_function(BenchmarkId::new("crossbeam_epoch_pin", 1), |b| {
        b.iter(|| {
            let guard = crossbeam_epoch::pin();
            black_box(&guard);
        })
    });
    g.finish();
}

fn synchronize(c: &mut Criterion) {
    let mut g = c.benchmark_group("synchronize");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    fn flavor<F: Flavor + 'static>(
        g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        f: F,
    ) {
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
    flavor(&mut g, Preempt::new());
    flavor(&mut g, Rcu::new());
    flavor(&mut g, Lock::new());
    g.finish();
}

fn concurrent(c: &mut Criterion) {
    let mut g = c.benchmark_group("concurrent_synchronize");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    fn flavor<F: Flavor + 'static>(
        g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        f: F,
    ) {
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
    flavor(&mut g, Preempt::new());
    flavor(&mut g, Rcu::new());
    flavor(&mut g, Lock::new());
    g.finish();
}

criterion_group!(benches, read_section, synchronize, concurrent);
criterion_main!(benches);
