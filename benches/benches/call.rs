//! The cost of a patchable call and of a transition.
//!
//! * `patchable_call`: a direct call (the baseline), a patchable call to a site nobody
//!   patches, and, per flavor, a patched call (steady state) and a call while a transition
//!   is in progress (the handler reads the thread's patch state).
//! * `transition`: `enable` until the transition completes, with 0, 1 and 2 threads
//!   calling the patched function in a loop.
//!
//! `cargo bench -p klp-benches --bench call`; figures in `benches/README.md`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use klp_core::log::{Capture, Log};
use klp_core::{Func, Klp, Object, Patch, park, patchable, unpark};
use klp_sync::{Flavor, Lock, Preempt, Rcu};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::time::{Duration, Instant};

#[inline(never)]
fn direct(x: u64) -> u64 {
    x.wrapping_mul(3).wrapping_add(1)
}

patchable! {
    fn bench_unpatched(x: u64) -> u64 { x.wrapping_mul(3).wrapping_add(1) }
}
patchable! {
    fn bench_patched(x: u64) -> u64 { x.wrapping_mul(3).wrapping_add(1) }
}
patchable! {
    fn bench_transition(x: u64) -> u64 { x.wrapping_mul(3).wrapping_add(1) }
}
fn replacement(x: u64) -> u64 {
    x.wrapping_mul(3).wrapping_add(2)
}

static HOLD: Mutex<Option<mpsc::Receiver<()>>> = Mutex::new(None);

patchable! {
    /// Parks inside itself until told: it holds a transition of `bench_hold` open.
    fn bench_hold(x: u64) -> u64 {
        let rx = HOLD.lock().unwrap().take();
        if let Some(rx) = rx {
            park();
            let _ = rx.recv();
            unpark();
        }
        x
    }
}
fn hold_replacement(x: u64) -> u64 {
    x + 1
}

fn engine<F: Flavor + 'static>(f: F) -> Klp<F> {
    let klp = Klp::with_log(f, Log::new(Capture::new()));
    klp.set_retry_period(Duration::from_millis(1));
    klp
}

fn settle<F: Flavor + 'static>(klp: &Klp<F>) {
    assert!(klp.wait_transition(Duration::from_secs(30)));
}

fn disable<F: Flavor + 'static>(klp: &Klp<F>, name: &str) {
    klp.set_enabled(name, false).unwrap();
    settle(klp);
}

fn calls(c: &mut Criterion) {
    let mut g = c.benchmark_group("patchable_call");
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("baseline", "direct"), |b| {
        b.iter(|| direct(black_box(7)))
    });
    g.bench_function(BenchmarkId::new("any", "unpatched"), |b| {
        b.iter(|| bench_unpatched(black_box(7)))
    });
    fn flavor<F: Flavor + 'static>(
        g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        klp: Klp<F>,
    ) {
        let name = klp.flavor().name();
        klp.enable(Patch::new("bench_patch").object(
            Object::vmlinux().func(Func::new("bench_patched", replacement as fn(u64) -> u64)),
        ))
        .unwrap();
        settle(&klp);
        assert_eq!(bench_patched(1), 5);
        g.bench_function(BenchmarkId::new(name, "patched"), |b| {
            b.iter(|| bench_patched(black_box(7)))
        });
        disable(&klp, "bench_patch");

        // A transition held open by a thread parked inside the other function of the patch.
        let (tx, rx) = mpsc::channel();
        *HOLD.lock().unwrap() = Some(rx);
        let holder = std::thread::spawn(|| bench_hold(0));
        while HOLD.lock().unwrap().is_some() {
            std::thread::yield_now();
        }
        let p = Patch::new("bench_trans").object(
            Object::vmlinux()
                .func(Func::new("bench_transition", replacement as fn(u64) -> u64))
                .func(Func::new("bench_hold", hold_replacement as fn(u64) -> u64)),
        );
        klp.enable(p).unwrap();
        assert!(klp.in_transition());
        assert_eq!(bench_transition(1), 5);
        g.bench_function(BenchmarkId::new(name, "transition"), |b| {
            b.iter(|| bench_transition(black_box(7)))
        });
        drop(tx);
        holder.join().unwrap();
        settle(&klp);
        disable(&klp, "bench_trans");
    }
    flavor(&mut g, engine(Preempt::new()));
    flavor(&mut g, engine(Rcu::new()));
    flavor(&mut g, engine(Lock::new()));
    g.finish();
}

patchable! {
    fn bench_busy(x: u64) -> u64 { x.wrapping_add(1) }
}
fn busy_replacement(x: u64) -> u64 {
    x.wrapping_add(2)
}

fn transitions(c: &mut Criterion) {
    let mut g = c.benchmark_group("transition");
    g.sample_size(30).measurement_time(Duration::from_secs(4));
    fn flavor<F: Flavor + 'static>(
        g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        klp: Klp<F>,
    ) {
        for threads in [0usize, 1, 2] {
            g.bench_with_input(
                BenchmarkId::new(klp.flavor().name(), threads),
                &threads,
                |b, &threads| {
                    b.iter_custom(|iters| {
                        let stop = Arc::new(AtomicBool::new(false));
                        let ready = Arc::new(Barrier::new(threads + 1));
                        let busy: Vec<_> = (0..threads)
                            .map(|_| {
                                let (stop, ready) = (Arc::clone(&stop), Arc::clone(&ready));
                                std::thread::spawn(move || {
                                    bench_busy(0);
                                    ready.wait();
                                    let mut x = 0;
                                    while !stop.load(Ordering::Relaxed) {
                                        x = bench_busy(black_box(x));
                                    }
                                })
                            })
                            .collect();
                        ready.wait();
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let p =
                                Patch::new("bench_tr").object(Object::vmlinux().func(Func::new(
                                    "bench_busy",
                                    busy_replacement as fn(u64) -> u64,
                                )));
                            let t = Instant::now();
                            klp.enable(p).unwrap();
                            settle(&klp);
                            total += t.elapsed();
                            disable(&klp, "bench_tr");
                        }
                        stop.store(true, Ordering::Relaxed);
                        for t in busy {
                            t.join().unwrap();
                        }
                        total
                    })
                },
            );
        }
    }
    flavor(&mut g, engine(Preempt::new()));
    flavor(&mut g, engine(Rcu::new()));
    flavor(&mut g, engine(Lock::new()));
    g.finish();
}

criterion_group!(benches, calls, transitions);
criterion_main!(benches);
