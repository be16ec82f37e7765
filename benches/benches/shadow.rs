//! Shadow-variable benchmarks: `get` (hit and miss) among 10^3 and 10^6 live variables
//! from 1 and 2 threads, and an alloc+free pair, for every flavor.
//!
//! `cargo bench -p klp-benches --bench shadow`; figures in `benches/README.md`.
//!
//! * The stores are sized for their population (`Shadow::with_buckets(n)`, about one
//!   variable per bucket) and filled once per flavor and size, on first use.
//! * `get_hit` cycles over 1024 live keys spread over the whole store: the lookup cost with
//!   the touched nodes in cache. `get_hit_cold` cycles over 2^20 random live keys of the
//!   10^6 store: mostly cache misses, the cost of a lookup at memory latency.
//! * `get_miss` looks up keys that are not attached (an empty or one-node chain walk).
//! * With 2 threads, a second thread does the same lookups at the same time
//!   (`iter_custom` behind a barrier); the time is the first thread's, per lookup, and the
//!   throughput counts both threads' lookups.
//! * `alloc_free` attaches and frees one 8-byte variable: with preempt and lock every free
//!   waits for its own grace period; rcu queues the reclaim to its worker.

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use klp_core::log::Log;
use klp_core::shadow::Shadow;
use klp_sync::{Flavor, Lock, Preempt, Rcu};
use std::cell::OnceCell;
use std::ffi::c_void;
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const ID: u64 = 0x1234;
const SIZES: [usize; 2] = [1_000, 1_000_000];
const HOT_KEYS: usize = 1024;
const COLD_KEYS: usize = 1 << 20;

fn obj(n: usize) -> *const c_void {
    ((n + 1) * 64) as *const c_void
}

/// A splitmix step: well spread pseudo-random indices.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `count` keys drawn from `0..range`, offset by `base`, as object addresses.
fn keys(count: usize, range: usize, base: usize) -> Vec<usize> {
    (0..count)
        .map(|i| obj(base + (mix(i as u64) % range as u64) as usize) as usize)
        .collect()
}

/// One flavor's stores, filled on first use.
struct Stores<F: Flavor> {
    flavor: Arc<F>,
    filled: [OnceCell<Shadow<F>>; 2],
}

impl<F: Flavor> Stores<F> {
    fn new(flavor: F) -> Self {
        Stores {
            flavor: Arc::new(flavor),
            filled: [OnceCell::new(), OnceCell::new()],
        }
    }

    fn get(&self, which: usize) -> &Shadow<F> {
        self.filled[which].get_or_init(|| {
            let n = SIZES[which];
            let shadow = Shadow::with_buckets(Arc::clone(&self.flavor), quiet_log(), n);
            for i in 0..n {
                shadow.alloc(obj(i), ID, 8, None).expect("alloc");
            }
            shadow
        })
    }
}

fn quiet_log() -> Log {
    Log::new(Arc::new(|_: klp_core::log::Level, _: &str| {}))
}

/// Time `iters` lookups of `keys` (cycled) on this thread while `threads - 1` other
/// threads do the same.
fn timed_gets<F: Flavor>(
    shadow: &Shadow<F>,
    keys: &[usize],
    iters: u64,
    threads: usize,
) -> Duration {
    let mask = keys.len() - 1;
    let run = || {
        let mut i = 0usize;
        for _ in 0..iters {
            black_box(shadow.get(keys[i & mask] as *const c_void, black_box(ID)));
            i = i.wrapping_add(1);
        }
    };
    if threads == 1 {
        let t = Instant::now();
        run();
        return t.elapsed();
    }
    let start = Barrier::new(threads);
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(|| {
                shadow.flavor().register_current_thread();
                start.wait();
                run();
                shadow.flavor().unregister_current_thread();
            });
        }
        start.wait();
        let t = Instant::now();
        run();
        t.elapsed()
    })
}

fn get_group<F: Flavor>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    stores: &Stores<F>,
    sizes: &[usize],
    keys_for: impl Fn(usize, usize) -> Vec<usize>,
) {
    let name = stores.flavor.name();
    stores.flavor.register_current_thread();
    for (which, &n) in SIZES.iter().enumerate() {
        if !sizes.contains(&n) {
            continue;
        }
        let keys = keys_for(which, n);
        for threads in [1usize, 2] {
            g.throughput(Throughput::Elements(threads as u64));
            g.bench_with_input(
                BenchmarkId::new(name, format!("n={n},threads={threads}")),
                &threads,
                |b, &threads| {
                    let shadow = stores.get(which);
                    b.iter_custom(|iters| timed_gets(shadow, &keys, iters, threads));
                },
            );
        }
    }
    stores.flavor.unregister_current_thread();
}

fn gets(c: &mut Criterion) {
    let preempt = Stores::new(Preempt::new());
    let rcu = Stores::new(Rcu::new());
    let lock = Stores::new(Lock::new());

    let mut g = c.benchmark_group("shadow_get_hit");
    let hot = |_, n| keys(HOT_KEYS, n, 0);
    get_group(&mut g, &preempt, &SIZES, hot);
    get_group(&mut g, &rcu, &SIZES, hot);
    get_group(&mut g, &lock, &SIZES, hot);
    g.finish();

    let mut g = c.benchmark_group("shadow_get_hit_cold");
    let cold = |_, n| keys(COLD_KEYS, n, 0);
    get_group(&mut g, &preempt, &SIZES[1..], cold);
    get_group(&mut g, &rcu, &SIZES[1..], cold);
    get_group(&mut g, &lock, &SIZES[1..], cold);
    g.finish();

    let mut g = c.benchmark_group("shadow_get_miss");
    // Objects past the populated range: never attached.
    let miss = |_, n| keys(HOT_KEYS, n, n);
    get_group(&mut g, &preempt, &SIZES, miss);
    get_group(&mut g, &rcu, &SIZES, miss);
    get_group(&mut g, &lock, &SIZES, miss);
    g.finish();
}

fn alloc_free_flavor<F: Flavor>(g: &mut BenchmarkGroup<'_, WallTime>, flavor: F) {
    let flavor = Arc::new(flavor);
    let shadow = Shadow::new(Arc::clone(&flavor), quiet_log());
    flavor.register_current_thread();
    for threads in [1usize, 2] {
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_with_input(
            BenchmarkId::new(flavor.name(), format!("threads={threads}")),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    let run = |t: usize| {
                        let o = obj(t);
                        for _ in 0..iters {
                            black_box(shadow.alloc(o, ID, 8, None).expect("alloc"));
                            shadow.free(o, ID, None);
                        }
                    };
                    let start = Barrier::new(threads);
                    let d = std::thread::scope(|s| {
                        for t in 1..threads {
                            let (run, start, flavor) = (&run, &start, &flavor);
                            s.spawn(move || {
                                flavor.register_current_thread();
                                start.wait();
                                run(t);
                                flavor.unregister_current_thread();
                            });
                        }
                        start.wait();
                        let t = Instant::now();
                        run(0);
                        t.elapsed()
                    });
                    // Reclaims queued by this sample must not pile up into the next.
                    flavor.barrier();
                    d
                });
            },
        );
    }
    flavor.unregister_current_thread();
}

fn alloc_free(c: &mut Criterion) {
    let mut g = c.benchmark_group("shadow_alloc_free");
    alloc_free_flavor(&mut g, Preempt::new());
    alloc_free_flavor(&mut g, Rcu::new());
    alloc_free_flavor(&mut g, Lock::new());
    g.finish();
}

criterion_group!(benches, gets, alloc_free);
criterion_main!(benches);
