//! The cost of a C call through a patchable function (`benches/c/c_call.c`), beside a
//! direct call of the same body, per flavor, for a program linked with libklp statically
//! (the C code is built into this benchmark, whose klp symbols come from klp-ffi: what
//! `libklp.a` gives) and for code linked with `libklp.so` (the same C built as a shared
//! object against it and opened here).
//!
//! * `c_call/static`, `c_call/shared`: ids `<flavor>/direct`, `<flavor>/patchable` (no
//!   patch) and `<flavor>/patched` (a patch replaces the function with the same body).
//!
//! The flavor of libklp's process engine is fixed once per process: without `KLP_SYNC`,
//! the benchmark runs itself once with `KLP_SYNC=preempt` and once with `KLP_SYNC=rcu`,
//! with the same arguments. `cargo bench -p klp-benches --bench c_call`; figures in
//! `benches/README.md`.

use criterion::{BenchmarkId, Criterion, Throughput};
use std::ffi::{CStr, c_int, c_void};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

type Loop = unsafe extern "C" fn(u64) -> c_int;
type Patch = unsafe extern "C" fn() -> c_int;

#[link(name = "cbench", kind = "static")]
unsafe extern "C" {
    fn cbench_loop_direct(n: u64) -> c_int;
    fn cbench_loop_patchable(n: u64) -> c_int;
    fn cbench_patch() -> c_int;
}

/// The three entry points of one build of `c_call.c`.
struct Build {
    direct: Loop,
    patchable: Loop,
    patch: Patch,
}

fn static_build() -> Build {
    // The klp symbols of the C code come from klp-ffi: keep it linked.
    std::hint::black_box(klp::klp_version as *const c_void);
    Build {
        direct: cbench_loop_direct,
        patchable: cbench_loop_patchable,
        patch: cbench_patch,
    }
}

/// `target/<profile>/` with `libklp.so` built (the benchmark runs from
/// `target/<profile>/deps/`).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<bench>")
        .to_path_buf();
    let target_dir = profile_dir.parent().expect("target/<profile>");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "-p", "klp-ffi", "--lib", "--release"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env("CARGO_TARGET_DIR", target_dir);
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
    assert!(status.success(), "cargo build -p klp-ffi failed");
    // `cargo bench` builds in target/release (the bench profile's directory).
    target_dir.join("release")
}

fn shared_build() -> Build {
    let lib = lib_dir();
    let dir = std::env::temp_dir().join(format!("klp-c-call-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["libklp.so", "libklp.so.0"] {
        std::fs::copy(lib.join("libklp.so"), dir.join(name)).unwrap();
    }
    let so = dir.join("libcbench.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".to_owned());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(&cc)
        .args([
            "-std=gnu11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-O2",
            "-fPIC",
            "-shared",
        ])
        .arg("-I")
        .arg(root.join("../include"))
        .arg(root.join("c/c_call.c"))
        .arg("-o")
        .arg(&so)
        .arg(format!("-L{}", dir.display()))
        .arg(format!("-Wl,-rpath,{}", dir.display()))
        .arg("-lklp")
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
    assert!(status.success(), "{cc} failed");
    let path = std::ffi::CString::new(so.to_str().unwrap()).unwrap();
    // SAFETY: a shared object just built from c_call.c, opened for the process's life.
    let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!h.is_null(), "dlopen {}", so.display());
    let sym = |name: &CStr| {
        // SAFETY: a handle of dlopen; the name is NUL-terminated.
        let p = unsafe { libc::dlsym(h, name.as_ptr()) };
        assert!(!p.is_null(), "dlsym {name:?}");
        p
    };
    // SAFETY: the symbols are the functions of c_call.c with these signatures.
    let build = unsafe {
        Build {
            direct: std::mem::transmute::<*mut c_void, Loop>(sym(c"cbench_loop_direct")),
            patchable: std::mem::transmute::<*mut c_void, Loop>(sym(c"cbench_loop_patchable")),
            patch: std::mem::transmute::<*mut c_void, Patch>(sym(c"cbench_patch")),
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    build
}

fn time(f: Loop, iters: u64) -> Duration {
    let t = Instant::now();
    // SAFETY: a loop of c_call.c.
    std::hint::black_box(unsafe { f(iters) });
    t.elapsed()
}

fn bench_build(c: &mut Criterion, flavor: &str, link: &str, b: &Build) {
    let mut g = c.benchmark_group(format!("c_call/{link}"));
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new(flavor, "direct"), |bn| {
        bn.iter_custom(|iters| time(b.direct, iters));
    });
    g.bench_function(BenchmarkId::new(flavor, "patchable"), |bn| {
        bn.iter_custom(|iters| time(b.patchable, iters));
    });
    // SAFETY: c_call.c's enable, once per build.
    let r = unsafe { (b.patch)() };
    assert_eq!(r, 0, "cbench_patch ({link}, {flavor})");
    g.bench_function(BenchmarkId::new(flavor, "patched"), |bn| {
        bn.iter_custom(|iters| time(b.patchable, iters));
    });
    g.finish();
}

fn main() {
    let Ok(flavor) = std::env::var("KLP_SYNC") else {
        // One process per flavor, with our arguments.
        let exe = std::env::current_exe().expect("current_exe");
        for flavor in ["preempt", "rcu"] {
            let status = Command::new(&exe)
                .args(std::env::args_os().skip(1))
                .env("KLP_SYNC", flavor)
                .status()
                .expect("run the benchmark for one flavor");
            assert!(status.success(), "the {flavor} run failed");
        }
        return;
    };
    let mut c = Criterion::default().configure_from_args();
    bench_build(&mut c, &flavor, "static", &static_build());
    bench_build(&mut c, &flavor, "shared", &shared_build());
    c.final_summary();
}
