//! The trampoline of entry sites (`klp_core::entry::trampoline`) with the writer
//! (`klp_core::entry::text`), on a library built with `-fpatchable-function-entry=16,14`
//! (`c-tests/entry/ent_abi.c`): an armed entry reaches the handler and continues in the
//! original body or a replacement with every argument intact (8 integers, 9 doubles,
//! varargs, a struct returned through memory, 256-bit vectors) although the handler
//! clobbers every register the ABI lets it; and entries armed and disarmed while threads
//! call the function never give a wrong result.
//!
//! The sites are prepared, armed and disarmed with the steps of `entry::protocol` (the
//! byte-wise protocol, layout A), each step's writes followed by one core serialization.
#![cfg(target_arch = "x86_64")]

use klp_core::entry::discover::{EntrySite, find_object, sites_of};
use klp_core::entry::protocol::{Layout, Protocol, Step, arm_steps, disarm_steps, prepare_step};
use klp_core::entry::text::Text;
use klp_core::entry::trampoline::{self, Width};
use std::ffi::{CString, c_int, c_void};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Where stub i continues: a replacement, or the original body.
static TARGETS: [AtomicUsize; 16] = [const { AtomicUsize::new(0) }; 16];
static HANDLED: AtomicU64 = AtomicU64::new(0);
static SERIAL: Mutex<()> = Mutex::new(());

/// The handler: count, clobber every register the ABI lets a callee clobber, continue
/// where the test says.
extern "C" fn handler(i: u32, frame: usize) -> usize {
    assert_ne!(frame, 0);
    HANDLED.fetch_add(1, Ordering::Relaxed);
    // SAFETY: only clobbers caller-saved registers, declared as such.
    unsafe {
        std::arch::asm!(
            "mov rdi, -1", "mov rsi, -1", "mov rdx, -1", "mov rcx, -1",
            "mov r8, -1", "mov r9, -1", "mov r10, -1", "mov rax, -1",
            "vzeroall",
            out("rdi") _, out("rsi") _, out("rdx") _, out("rcx") _,
            out("r8") _, out("r9") _, out("r10") _, out("rax") _,
            out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
            out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
        );
    }
    TARGETS[i as usize].load(Ordering::Acquire)
}

fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!("klp-entry-trampoline-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn build(src: &str, out: &Path, flags: &[&str]) {
    build_with("gcc", src, out, flags)
}

fn build_with(cc: &str, src: &str, out: &Path, flags: &[&str]) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../c-tests/entry")
        .join(src);
    let st = Command::new(cc)
        .args(["-O2", "-mavx", "-fPIC", "-shared", "-fcf-protection=none"])
        .args(flags)
        .arg(&src)
        .arg("-o")
        .arg(out)
        .status()
        .unwrap();
    assert!(st.success());
}

struct Lib(*mut c_void);

impl Lib {
    fn open(path: &Path) -> Lib {
        let c = CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid path to a library without constructors.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!h.is_null());
        Lib(h)
    }
    fn sym(&self, name: &str) -> usize {
        let c = CString::new(name).unwrap();
        // SAFETY: a handle from dlopen.
        let p = unsafe { libc::dlsym(self.0, c.as_ptr()) } as usize;
        assert_ne!(p, 0, "{name}");
        p
    }
}

/// The libraries: the functions (with the flag) and their replacements (without).
fn libs() -> (Lib, Lib, Vec<EntrySite>) {
    let dir = scratch();
    let (old, new) = (dir.join("libentabi.so"), dir.join("libentabinew.so"));
    if !old.exists() {
        build("ent_abi.c", &old, &["-fpatchable-function-entry=16,14"]);
        build("ent_abi_new.c", &new, &[]);
    }
    let (o, n) = (Lib::open(&old), Lib::open(&new));
    let sites = sites_of(&find_object(Some("libentabi")).unwrap()).unwrap();
    (o, n, sites)
}

fn site<'a>(sites: &'a [EntrySite], name: &str) -> &'a EntrySite {
    sites.iter().find(|s| s.name == name).unwrap()
}

/// Each step: its writes, then one serialization.
fn apply(t: &Text, s: &EntrySite, steps: &[Step]) {
    for step in steps {
        for w in &step.writes {
            t.write(s.area + w.offset, &[w.byte]).unwrap();
        }
        t.sync_core();
    }
}

/// Prepared once: the slot holds stub `i`.
fn prepare(t: &Text, s: &EntrySite, i: usize) {
    let shape = s.shape.clone().unwrap();
    assert_eq!(shape.layout(), Layout::A);
    let stub = trampoline::stub(i).unwrap() as u64;
    let step = prepare_step(shape, Protocol::ByteWise, s.area as u64, stub).unwrap();
    apply(t, s, &[step]);
}

fn arm(t: &Text, s: &EntrySite) {
    apply(
        t,
        s,
        &arm_steps(s.shape.clone().unwrap(), Protocol::ByteWise).unwrap(),
    );
}

fn disarm(t: &Text, s: &EntrySite) {
    apply(
        t,
        s,
        &disarm_steps(s.shape.clone().unwrap(), Protocol::ByteWise).unwrap(),
    );
}

const FUNCS: [&str; 5] = [
    "ent_ints",
    "ent_doubles",
    "ent_varargs",
    "ent_struct",
    "ent_m256",
];

#[test]
fn every_argument_crosses_an_armed_entry() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !std::is_x86_feature_detected!("avx") {
        eprintln!("no AVX on this CPU: the 256-bit argument cannot be built");
        return;
    }
    let width = trampoline::init(handler);
    assert!(
        width != Width::Xmm || !std::is_x86_feature_detected!("avx"),
        "the full vector width is saved"
    );
    let text = Text::get().unwrap();
    let (old, new, sites) = libs();
    // SAFETY: `ent_check` has this C signature.
    let check: extern "C" fn(c_int) -> c_int = unsafe { std::mem::transmute(old.sym("ent_check")) };
    assert_eq!(check(0), 0, "unarmed");
    for (i, name) in FUNCS.iter().enumerate() {
        let s = site(&sites, name);
        TARGETS[i].store(s.func + 2, Ordering::Release);
        prepare(text, s, i);
        arm(text, s);
    }
    let before = HANDLED.load(Ordering::Relaxed);
    assert_eq!(check(0), 0, "armed, continuing in the original bodies");
    assert_eq!(
        HANDLED.load(Ordering::Relaxed) - before,
        5,
        "each call went through"
    );
    for (i, name) in FUNCS.iter().enumerate() {
        TARGETS[i].store(new.sym(&name.replace("ent_", "new_")), Ordering::Release);
    }
    assert_eq!(check(1), 0, "armed, continuing in the replacements");
    for name in FUNCS {
        disarm(text, site(&sites, name));
    }
    let before = HANDLED.load(Ordering::Relaxed);
    assert_eq!(check(0), 0, "disarmed");
    assert_eq!(
        HANDLED.load(Ordering::Relaxed),
        before,
        "disarmed: no handler"
    );
}

#[test]
fn arming_and_disarming_under_calls() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    trampoline::init(handler);
    let text = Text::get().unwrap();
    let (old, new, sites) = libs();
    let s = site(&sites, "ent_tag").clone();
    let slot = 8;
    TARGETS[slot].store(new.sym("new_tag"), Ordering::Release);
    prepare(text, &s, slot);
    // SAFETY: `ent_tag` has this C signature.
    let tag: extern "C" fn(c_int) -> c_int = unsafe { std::mem::transmute(old.sym("ent_tag")) };
    let stop = Arc::new(AtomicBool::new(false));
    let wrong = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (stop, wrong, calls) = (stop.clone(), wrong.clone(), calls.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                let mut x = 0;
                while !stop.load(Ordering::Relaxed) {
                    let r = tag(x);
                    if r != x + 1 && r != x + 2 {
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                    x = (x + 1) & 0xffff;
                    n += 1;
                }
                calls.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    let cycles: usize = std::env::var("KLP_ENTRY_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let before = HANDLED.load(Ordering::Relaxed);
    for _ in 0..cycles {
        arm(text, &s);
        // Let a call through while armed (bounded: the callers may not be scheduled).
        let seen = HANDLED.load(Ordering::Relaxed);
        let until = std::time::Instant::now() + std::time::Duration::from_millis(5);
        while HANDLED.load(Ordering::Relaxed) == seen && std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
        disarm(text, &s);
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let handled = HANDLED.load(Ordering::Relaxed) - before;
    eprintln!(
        "{cycles} arm/disarm cycles, {} calls, {handled} through the trampoline",
        calls.load(Ordering::Relaxed)
    );
    assert_eq!(wrong.load(Ordering::Relaxed), 0);
    assert!(handled > 0, "some calls went through the armed entry");
}

/// Clang's entry is one two-byte NOP (`66 90`): the byte-wise protocol splits it into two
/// one-byte NOPs when it prepares the site, then arms and disarms it like GCC's.
#[test]
fn a_clang_entry_is_split_then_armed() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !Command::new("clang")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("clang is not installed: the Clang entry is not armed here");
        return;
    }
    trampoline::init(handler);
    let text = Text::get().unwrap();
    let dir = scratch();
    let (old, new) = (
        dir.join("libentclangabi.so"),
        dir.join("libentclangabinew.so"),
    );
    build_with(
        "clang",
        "ent_abi.c",
        &old,
        &["-fpatchable-function-entry=16,14"],
    );
    build("ent_abi_new.c", &new, &[]);
    let (old, new) = (Lib::open(&old), Lib::open(&new));
    let sites = sites_of(&find_object(Some("libentclangabi")).unwrap()).unwrap();
    let s = site(&sites, "ent_tag").clone();
    assert_eq!(&s.bytes[14..16], &[0x66, 0x90], "Clang's entry");
    let slot = 12;
    TARGETS[slot].store(new.sym("new_tag"), Ordering::Release);
    prepare(text, &s, slot);
    // SAFETY: `ent_tag` has this C signature.
    let tag: extern "C" fn(c_int) -> c_int = unsafe { std::mem::transmute(old.sym("ent_tag")) };
    assert_eq!(tag(1), 2, "prepared, not armed: the original");
    let before = HANDLED.load(Ordering::Relaxed);
    arm(text, &s);
    assert_eq!(tag(1), 3, "armed: the replacement");
    assert_eq!(HANDLED.load(Ordering::Relaxed) - before, 1);
    disarm(text, &s);
    assert_eq!(tag(1), 2, "disarmed: the original again");
}
