//! Shadow variables under random sequences of operations (proptest), against a map of
//! what should be attached: `alloc`, `get_or_alloc` (with constructors that write, fail
//! or look other variables up), `get`, writes through the data, `free` and `free_all`
//! (with and without destructors), on stores of 1 to 4,096 buckets (so that keys share
//! buckets), under preempt and rcu.
//!
//! After every operation: each attached variable is found with its data, nothing else
//! is, `len()` counts the map; a new variable's data is aligned to `DATA_ALIGN` and zeroed
//! but for what its constructor wrote; an allocation of an existing pair never runs the
//! constructor; destructors run once per variable detached, with its data intact. At the
//! end everything is freed and, after `barrier`, no allocation is outstanding.
//! `PROPTEST_CASES` sets the number of cases per flavor (default 256).

use klp_core::log::{Capture, Log};
use klp_core::shadow::{DATA_ALIGN, Shadow};
use klp_sync::{Flavor, Preempt, Rcu};
use proptest::prelude::*;
use std::collections::HashMap;
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::Arc;

const OBJS: usize = 4;
const IDS: u64 = 3;
const SIZES: [usize; 6] = [0, 1, 8, 16, 40, 200];

#[derive(Clone, Copy, Debug)]
enum Ctor {
    None,
    Write(u64),
    Fail(i32),
    /// Looks `<obj, id>` up (allowed from a constructor), then writes.
    Lookup(usize, u64, u64),
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Alloc(usize, u64, usize, Ctor),
    GetOrAlloc(usize, u64, usize, Ctor),
    Get(usize, u64),
    Write(usize, u64, u64),
    Free(usize, u64, bool),
    FreeAll(u64, bool),
}

fn ctor() -> impl Strategy<Value = Ctor> {
    prop_oneof![
        Just(Ctor::None),
        (1..u64::MAX).prop_map(Ctor::Write),
        prop_oneof![Just(-12), Just(-22), Just(1)].prop_map(Ctor::Fail),
        (0..OBJS, 0..IDS, 1..u64::MAX).prop_map(|(o, i, v)| Ctor::Lookup(o, i, v)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let key = (0..OBJS, 0..IDS);
    prop_oneof![
        3 => (key.clone(), proptest::sample::select(&SIZES[..]), ctor())
            .prop_map(|((o, i), s, c)| Op::Alloc(o, i, s, c)),
        2 => (key.clone(), proptest::sample::select(&SIZES[..]), ctor())
            .prop_map(|((o, i), s, c)| Op::GetOrAlloc(o, i, s, c)),
        2 => key.clone().prop_map(|(o, i)| Op::Get(o, i)),
        1 => (key.clone(), 1..u64::MAX).prop_map(|((o, i), v)| Op::Write(o, i, v)),
        2 => (key, any::<bool>()).prop_map(|((o, i), d)| Op::Free(o, i, d)),
        1 => (0..IDS, any::<bool>()).prop_map(|(i, d)| Op::FreeAll(i, d)),
    ]
}

/// A parent object: a key only, never dereferenced (0 is NULL, also a key).
fn obj(n: usize) -> *const c_void {
    std::ptr::without_provenance(n * 0x40)
}

#[derive(Clone, Copy, Debug)]
struct Var {
    data: NonNull<u8>,
    size: usize,
    value: u64,
}

fn read(v: &Var) -> u64 {
    // SAFETY: attached data of `v.size` (≥ 8) bytes, freed by nobody meanwhile.
    unsafe { v.data.cast::<u64>().as_ptr().read() }
}

fn run<F: Flavor + 'static>(flavor: &Arc<F>, buckets: usize, ops: &[Op]) {
    flavor.register_current_thread();
    let shadow = Shadow::with_buckets(Arc::clone(flavor), Log::new(Capture::new()), buckets);
    let counter = shadow.allocations();
    let mut model: HashMap<(usize, u64), Var> = HashMap::new();
    for &op in ops.iter().chain(
        (0..IDS)
            .map(|i| Op::FreeAll(i, true))
            .collect::<Vec<_>>()
            .iter(),
    ) {
        step(&shadow, &mut model, op);
        assert_eq!(shadow.len(), model.len(), "after {op:?}");
        for (&(o, i), v) in &model {
            assert_eq!(
                shadow.get(obj(o), i),
                Some(v.data),
                "after {op:?}: <{o}, {i}> lost"
            );
        }
    }
    assert!(model.is_empty() && shadow.is_empty());
    drop(shadow);
    flavor.barrier();
    assert_eq!(counter.outstanding(), 0, "allocations left after barrier");
    flavor.unregister_current_thread();
}

fn step<F: Flavor>(shadow: &Shadow<F>, model: &mut HashMap<(usize, u64), Var>, op: Op) {
    match op {
        Op::Alloc(o, i, size, c) | Op::GetOrAlloc(o, i, size, c) => {
            let exclusive = matches!(op, Op::Alloc(..));
            let mut calls = 0;
            let mut looked_up = None;
            let before: HashMap<(usize, u64), NonNull<u8>> =
                model.iter().map(|(k, v)| (*k, v.data)).collect();
            let mut f = |_: *const c_void, data: NonNull<u8>| -> Result<(), i32> {
                calls += 1;
                let write = |v: u64| {
                    if size >= 8 {
                        // SAFETY: the new variable's `size` (≥ 8) zeroed bytes.
                        unsafe { data.cast::<u64>().as_ptr().write(v) };
                    }
                };
                match c {
                    Ctor::None => unreachable!("no constructor passed"),
                    Ctor::Write(v) => write(v),
                    Ctor::Fail(e) => return Err(e),
                    Ctor::Lookup(lo, li, v) => {
                        looked_up = Some(shadow.get(obj(lo), li));
                        write(v);
                    }
                }
                Ok(())
            };
            let ctor: Option<klp_core::shadow::Ctor<'_>> = match c {
                Ctor::None => None,
                _ => Some(&mut f),
            };
            let r = if exclusive {
                shadow.alloc(obj(o), i, size, ctor)
            } else {
                shadow.get_or_alloc(obj(o), i, size, ctor)
            };
            if let Some(v) = model.get(&(o, i)) {
                assert_eq!(calls, 0, "{op:?}: constructor ran for a pair that exists");
                assert_eq!(r, if exclusive { None } else { Some(v.data) }, "{op:?}");
                return;
            }
            let want_calls = u32::from(!matches!(c, Ctor::None));
            assert_eq!(calls, want_calls, "{op:?}: constructor calls");
            if let Ctor::Lookup(lo, li, _) = c {
                assert_eq!(
                    looked_up,
                    Some(before.get(&(lo, li)).copied()),
                    "{op:?}: a lookup from the constructor"
                );
            }
            if let Ctor::Fail(_) = c {
                assert_eq!(r, None, "{op:?}: a failing constructor attached data");
                return;
            }
            let data = r.unwrap_or_else(|| panic!("{op:?}: the allocation failed"));
            assert_eq!(data.as_ptr() as usize % DATA_ALIGN, 0, "{op:?}: alignment");
            let value = match c {
                Ctor::Write(v) | Ctor::Lookup(_, _, v) if size >= 8 => v,
                _ => 0,
            };
            // SAFETY: the new variable's `size` bytes.
            let bytes = unsafe { std::slice::from_raw_parts(data.as_ptr(), size) };
            for (k, &b) in bytes.iter().enumerate() {
                let want = if k < 8 { value.to_ne_bytes()[k] } else { 0 };
                assert_eq!(b, want, "{op:?}: byte {k} of a new variable");
            }
            model.insert((o, i), Var { data, size, value });
        }
        Op::Get(o, i) => {
            let r = shadow.get(obj(o), i);
            assert_eq!(r, model.get(&(o, i)).map(|v| v.data), "{op:?}");
            if let Some(v) = model.get(&(o, i))
                && v.size >= 8
            {
                assert_eq!(read(v), v.value, "{op:?}: the data changed");
            }
        }
        Op::Write(o, i, value) => {
            if let Some(v) = model.get_mut(&(o, i))
                && v.size >= 8
            {
                // SAFETY: attached data of 8 bytes or more.
                unsafe { v.data.cast::<u64>().as_ptr().write(value) };
                v.value = value;
            }
        }
        Op::Free(o, i, with_dtor) => {
            let gone = model.remove(&(o, i));
            let mut seen = Vec::new();
            let mut d = |ob: *const c_void, data: NonNull<u8>| seen.push((ob, data));
            let dtor: Option<klp_core::shadow::Dtor<'_>> =
                if with_dtor { Some(&mut d) } else { None };
            if let Some(v) = &gone
                && v.size >= 8
            {
                assert_eq!(read(v), v.value, "{op:?}: the data changed");
            }
            let freed = shadow.free(obj(o), i, dtor);
            assert_eq!(freed, gone.is_some(), "{op:?}: free's result");
            let want: Vec<_> = match gone {
                Some(v) if with_dtor => vec![(obj(o), v.data)],
                _ => vec![],
            };
            assert_eq!(seen, want, "{op:?}: destructor calls");
        }
        Op::FreeAll(i, with_dtor) => {
            let mut want = Vec::new();
            model.retain(|&(o, id), v| {
                if id != i {
                    return true;
                }
                if v.size >= 8 {
                    assert_eq!(read(v), v.value, "{op:?}: the data changed");
                }
                want.push((obj(o) as usize, v.data.as_ptr() as usize));
                false
            });
            let mut seen = Vec::new();
            let mut d = |ob: *const c_void, data: NonNull<u8>| {
                seen.push((ob as usize, data.as_ptr() as usize))
            };
            let dtor: Option<klp_core::shadow::Dtor<'_>> =
                if with_dtor { Some(&mut d) } else { None };
            let n = shadow.free_all(i, dtor);
            assert_eq!(n, want.len(), "{op:?}: variables freed");
            if with_dtor {
                seen.sort_unstable();
                want.sort_unstable();
                assert_eq!(seen, want, "{op:?}: destructor calls");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn shadow_sequences_preempt(
        buckets in prop_oneof![Just(1usize), Just(2), Just(7), Just(4096)],
        ops in proptest::collection::vec(op(), 0..48),
    ) {
        static F: std::sync::OnceLock<Arc<Preempt>> = std::sync::OnceLock::new();
        run(F.get_or_init(|| Arc::new(Preempt::new())), buckets, &ops);
    }

    #[test]
    fn shadow_sequences_rcu(
        buckets in prop_oneof![Just(1usize), Just(2), Just(7), Just(4096)],
        ops in proptest::collection::vec(op(), 0..48),
    ) {
        static F: std::sync::OnceLock<Arc<Rcu>> = std::sync::OnceLock::new();
        run(F.get_or_init(|| Arc::new(Rcu::new())), buckets, &ops);
    }
}
