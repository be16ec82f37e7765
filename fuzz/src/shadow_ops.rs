//! Sequences of the C shadow-variable API (`klp_shadow_alloc`, `klp_shadow_get_or_alloc`,
//! `klp_shadow_get`, `klp_shadow_free`, `klp_shadow_free_all`) with arbitrary keys
//! (NULL and `~0` included), ids (0 and `~0` included), sizes (0 to sizes no allocator
//! can give), constructors that write, fail, or call the API back, and destructors,
//! checked after every call against a map of what should be attached.
//!
//! The model requires: an allocation of a pair that exists returns NULL (`alloc`, without
//! calling the constructor) or the existing data (`get_or_alloc`); a new one returns
//! NULL when the size cannot be allocated or the constructor fails (nothing attached),
//! else data aligned to `DATA_ALIGN`, zeroed but for what the constructor wrote; a
//! constructor may look variables up but its other calls are refused; `get` finds exactly
//! what is attached; `free` and `free_all` call the destructor once per variable they
//! detach, with its data intact, and detach exactly those. The input ends by freeing
//! everything, after which nothing is found.

use crate::bytes::Bytes;
use klp_core::shadow::DATA_ALIGN;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_int, c_ulong, c_void};
use std::ptr;

const OBJS: [usize; 5] = [0, 0x1000, 0x2000, 0x1008, usize::MAX];
const IDS: [c_ulong; 4] = [0, 1, 2, c_ulong::MAX];
/// Sizes: the last two cannot be laid out (the allocation must fail cleanly, without
/// asking the allocator).
const SIZES: [usize; 9] = [0, 1, 7, 8, 24, 64, 4096, usize::MAX, isize::MAX as usize];

/// What a constructor does.
#[derive(Clone, Copy, Debug)]
enum Ctor {
    /// NULL constructor.
    None,
    /// Writes the value (when the data has 8 bytes) and returns 0.
    Write(u64),
    /// Returns this non-zero value.
    Fail(c_int),
    /// Looks `<obj, id>` up, tries an allocation and a free (both refused), writes the
    /// value and returns 0.
    CallsBack(usize, c_ulong, u64),
}

/// One call.
#[derive(Clone, Copy, Debug)]
enum Op {
    Alloc(usize, c_ulong, usize, Ctor),
    GetOrAlloc(usize, c_ulong, usize, Ctor),
    Get(usize, c_ulong),
    /// Overwrite the first 8 bytes of an attached variable (found with `get`).
    Write(usize, c_ulong, u64),
    Free(usize, c_ulong, bool),
    FreeAll(c_ulong, bool),
}

fn decode_ctor(b: &mut Bytes<'_>) -> Ctor {
    match b.below(6) {
        0 => Ctor::None,
        1 => Ctor::Fail(b.pick(&[-libc::ENOMEM, -libc::EINVAL, 1])),
        2 => Ctor::CallsBack(b.pick(&OBJS), b.pick(&IDS), u64::from(b.byte()) + 1),
        _ => Ctor::Write(u64::from(b.byte()) + 1),
    }
}

fn decode(b: &mut Bytes<'_>) -> Op {
    let (obj, id) = (b.pick(&OBJS), b.pick(&IDS));
    match b.below(8) {
        0 | 1 => Op::Alloc(obj, id, b.pick(&SIZES), decode_ctor(b)),
        2 => Op::GetOrAlloc(obj, id, b.pick(&SIZES), decode_ctor(b)),
        3 => Op::Get(obj, id),
        4 => Op::Write(obj, id, u64::from(b.byte()) + 1),
        5 | 6 => Op::Free(obj, id, b.coin()),
        _ => Op::FreeAll(id, b.coin()),
    }
}

/// A variable the model says is attached.
#[derive(Clone, Copy, Debug)]
struct Var {
    data: usize,
    size: usize,
    /// The first 8 bytes, when there are 8.
    value: u64,
}

/// What the callbacks saw, on this thread.
#[derive(Default)]
struct Seen {
    ctor_calls: u32,
    /// A constructor's lookup, allocation and free results.
    callback_results: Vec<(usize, bool, bool)>,
    /// Destructor calls: (obj, data).
    dtor_calls: Vec<(usize, usize)>,
    /// The size of the variable being constructed.
    constructing: usize,
}

thread_local! {
    static SEEN: RefCell<Seen> = RefCell::new(Seen::default());
}

unsafe extern "C" fn ctor(obj: *mut c_void, data: *mut c_void, ctor_data: *mut c_void) -> c_int {
    // SAFETY: `ctor_data` is the `Ctor` that `call_alloc` passed, alive for the call.
    let what = unsafe { *ctor_data.cast::<Ctor>() };
    let size = SEEN.with(|s| {
        let mut s = s.borrow_mut();
        s.ctor_calls += 1;
        s.constructing
    });
    let _ = obj;
    let write = |v: u64| {
        if size >= 8 {
            // SAFETY: the new variable's data: `size` (≥ 8) bytes aligned to DATA_ALIGN.
            unsafe { data.cast::<u64>().write(v) };
        }
    };
    match what {
        Ctor::None => 0,
        Ctor::Write(v) => {
            write(v);
            0
        }
        Ctor::Fail(e) => e,
        Ctor::CallsBack(o, id, v) => {
            let got = klp::klp_shadow_get(o as *mut c_void, id) as usize;
            // SAFETY: no constructor; the call is refused from a constructor anyway.
            let alloc =
                unsafe { klp::klp_shadow_alloc(o as *mut c_void, id, 8, 0, None, ptr::null_mut()) };
            // SAFETY: no destructor; refused from a constructor.
            unsafe { klp::klp_shadow_free(o as *mut c_void, id, None) };
            let still = klp::klp_shadow_get(o as *mut c_void, id) as usize;
            SEEN.with(|s| {
                s.borrow_mut()
                    .callback_results
                    .push((got, alloc.is_null(), got == still))
            });
            write(v);
            0
        }
    }
}

/// The destructor: records its call (the model checked the data just before).
unsafe extern "C" fn dtor(obj: *mut c_void, data: *mut c_void) {
    SEEN.with(|s| {
        s.borrow_mut()
            .dtor_calls
            .push((obj as usize, data as usize))
    });
}

/// Read the first 8 bytes of attached data.
///
/// # Safety
///
/// 1. `data` is attached data of at least 8 bytes.
unsafe fn read(data: usize) -> u64 {
    // SAFETY: clause 1.
    unsafe { (data as *const u64).read() }
}

fn call_alloc(obj: usize, id: c_ulong, size: usize, c: Ctor, exclusive: bool) -> usize {
    let mut c = c;
    let f = match c {
        Ctor::None => None,
        _ => Some(ctor as unsafe extern "C" fn(*mut c_void, *mut c_void, *mut c_void) -> c_int),
    };
    SEEN.with(|s| s.borrow_mut().constructing = size);
    let data: *mut c_void = ptr::from_mut(&mut c).cast();
    // SAFETY: the constructor may run here, with `data` alive for the call.
    (unsafe {
        if exclusive {
            klp::klp_shadow_alloc(obj as *mut c_void, id, size, 0, f, data)
        } else {
            klp::klp_shadow_get_or_alloc(obj as *mut c_void, id, size, 0, f, data)
        }
    }) as usize
}

/// Whether a constructor or the store could have made a variable of `size`.
fn allocatable(size: usize) -> bool {
    size <= 4096
}

/// Check a new variable's data: aligned, zeroed but for the constructor's value.
fn check_fresh(data: usize, size: usize, c: Ctor) -> u64 {
    assert_eq!(data % DATA_ALIGN, 0, "data not aligned to {DATA_ALIGN}");
    let written = match c {
        Ctor::Write(v) | Ctor::CallsBack(_, _, v) if size >= 8 => v,
        _ => 0,
    };
    // SAFETY: the variable's `size` bytes; only the first 64 are looked at.
    let bytes = unsafe { std::slice::from_raw_parts(data as *const u8, size.min(64)) };
    for (i, &byte) in bytes.iter().enumerate() {
        let want = if i < 8 { written.to_ne_bytes()[i] } else { 0 };
        assert_eq!(
            byte, want,
            "byte {i} of a new variable of {size} bytes ({c:?})"
        );
    }
    written
}

/// Run one input. Panics on a finding.
pub fn run(data: &[u8]) {
    crate::log::quiet();
    crate::log::clear();
    let mut b = Bytes::new(data);
    let mut model: HashMap<(usize, c_ulong), Var> = HashMap::new();
    SEEN.with(|s| *s.borrow_mut() = Seen::default());
    let mut steps = 0;
    while b.more() && steps < 64 {
        steps += 1;
        let op = decode(&mut b);
        step(op, &mut model);
    }
    for id in IDS {
        step(Op::FreeAll(id, true), &mut model);
    }
    assert!(model.is_empty());
    for obj in OBJS {
        for id in IDS {
            assert!(
                klp::klp_shadow_get(obj as *mut c_void, id).is_null(),
                "<{obj:#x}, {id}> found after every variable was freed"
            );
        }
    }
    crate::log::assert_clean();
}

fn take_seen() -> Seen {
    SEEN.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

fn step(op: Op, model: &mut HashMap<(usize, c_ulong), Var>) {
    let before = model.clone();
    match op {
        Op::Alloc(obj, id, size, c) | Op::GetOrAlloc(obj, id, size, c) => {
            let exclusive = matches!(op, Op::Alloc(..));
            let r = call_alloc(obj, id, size, c, exclusive);
            let seen = take_seen();
            if let Some(v) = model.get(&(obj, id)) {
                assert_eq!(
                    seen.ctor_calls, 0,
                    "{op:?}: the constructor ran for a pair that exists"
                );
                if exclusive {
                    assert_eq!(r, 0, "{op:?}: alloc of an existing pair returned data");
                } else {
                    assert_eq!(r, v.data, "{op:?}: get_or_alloc returned other data");
                }
                return;
            }
            let fails = matches!(c, Ctor::Fail(_));
            if !allocatable(size) {
                assert_eq!(r, 0, "{op:?}: an impossible size was allocated");
                assert_eq!(seen.ctor_calls, 0);
                return;
            }
            let want_calls = u32::from(!matches!(c, Ctor::None));
            assert_eq!(seen.ctor_calls, want_calls, "{op:?}: constructor calls");
            if let Ctor::CallsBack(o, i, _) = c {
                let (got, alloc_refused, not_freed) = seen.callback_results[0];
                let want = before.get(&(o, i)).map_or(0, |v| v.data);
                assert_eq!(got, want, "{op:?}: a lookup from the constructor");
                assert!(
                    alloc_refused,
                    "{op:?}: an allocation from a constructor was not refused"
                );
                assert!(
                    not_freed,
                    "{op:?}: a free from a constructor was not refused"
                );
            }
            if fails {
                assert_eq!(r, 0, "{op:?}: a failing constructor attached data");
                return;
            }
            assert_ne!(r, 0, "{op:?}: the allocation failed");
            let value = check_fresh(r, size, c);
            model.insert(
                (obj, id),
                Var {
                    data: r,
                    size,
                    value,
                },
            );
        }
        Op::Get(obj, id) => {
            let r = klp::klp_shadow_get(obj as *mut c_void, id) as usize;
            let want = model.get(&(obj, id)).map_or(0, |v| v.data);
            assert_eq!(r, want, "{op:?}");
            if let Some(v) = model.get(&(obj, id))
                && v.size >= 8
            {
                // SAFETY: attached data of 8 bytes or more, freed by nobody meanwhile.
                assert_eq!(unsafe { read(r) }, v.value, "{op:?}: the data changed");
            }
        }
        Op::Write(obj, id, value) => {
            let r = klp::klp_shadow_get(obj as *mut c_void, id) as usize;
            if let Some(v) = model.get_mut(&(obj, id)) {
                assert_eq!(r, v.data);
                if v.size >= 8 {
                    // SAFETY: attached data of 8 bytes or more.
                    unsafe { (r as *mut u64).write(value) };
                    v.value = value;
                }
            } else {
                assert_eq!(r, 0, "{op:?}");
            }
        }
        Op::Free(obj, id, with_dtor) => {
            let expect = model.remove(&(obj, id));
            if let Some(v) = expect
                && v.size >= 8
            {
                // The destructor cannot know the size: check the value before.
                // SAFETY: attached data of 8 bytes or more.
                assert_eq!(unsafe { read(v.data) }, v.value, "{op:?}: the data changed");
            }
            // SAFETY: the destructor may run here.
            unsafe { klp::klp_shadow_free(obj as *mut c_void, id, with_dtor.then_some(dtor as _)) };
            let seen = take_seen();
            let want: Vec<(usize, usize)> = match expect {
                Some(v) if with_dtor => vec![(obj, v.data)],
                _ => vec![],
            };
            assert_eq!(seen.dtor_calls, want, "{op:?}: destructor calls");
        }
        Op::FreeAll(id, with_dtor) => {
            let mut want: Vec<(usize, usize)> = Vec::new();
            model.retain(|&(o, i), v| {
                if i != id {
                    return true;
                }
                if v.size >= 8 {
                    // SAFETY: attached data of 8 bytes or more.
                    assert_eq!(unsafe { read(v.data) }, v.value, "{op:?}: the data changed");
                }
                if with_dtor {
                    want.push((o, v.data));
                }
                false
            });
            // SAFETY: the destructor may run here.
            unsafe { klp::klp_shadow_free_all(id, with_dtor.then_some(dtor as _)) };
            let mut seen = take_seen().dtor_calls;
            seen.sort_unstable();
            want.sort_unstable();
            assert_eq!(seen, want, "{op:?}: destructor calls");
        }
    }
    // Everything the model holds is found, with its data.
    for (&(obj, id), v) in model.iter() {
        let r = klp::klp_shadow_get(obj as *mut c_void, id) as usize;
        assert_eq!(r, v.data, "after {op:?}: <{obj:#x}, {id}> lost");
    }
}
