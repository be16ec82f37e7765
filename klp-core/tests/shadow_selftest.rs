//! The kernel selftest `test-shadow-vars.sh` ("basic shadow variable API"), step by step:
//! the module `test_klp_shadow_vars` is reproduced with its logging wrappers and its
//! `PTRn` numbering of pointers, and the log is compared line by line with the expected
//! log of the script, for every flavor.

use klp_core::log::{Capture, Level, Log};
use klp_core::shadow::{Ctor, Dtor, Shadow};
use klp_sync::Flavor;
use std::cell::RefCell;
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::Arc;

const SV_ID1: u64 = 0x1234;
const SV_ID2: u64 = 0x1235;
const NUM_OBJS: usize = 3;
const EINVAL: i32 = 22;

/// The expected log of the script, literally.
const EXPECTED: &str = "\
% insmod test_modules/test_klp_shadow_vars.ko
test_klp_shadow_vars: klp_shadow_get(obj=PTR1, id=0x1234) = PTR0
test_klp_shadow_vars:   got expected NULL result
test_klp_shadow_vars: shadow_ctor: PTR3 -> PTR2
test_klp_shadow_vars: klp_shadow_get_or_alloc(obj=PTR1, id=0x1234, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR2 = PTR3
test_klp_shadow_vars: shadow_ctor: PTR6 -> PTR5
test_klp_shadow_vars: klp_shadow_alloc(obj=PTR1, id=0x1235, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR5 = PTR6
test_klp_shadow_vars: shadow_ctor: PTR8 -> PTR7
test_klp_shadow_vars: klp_shadow_alloc(obj=PTR9, id=0x1234, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR7 = PTR8
test_klp_shadow_vars: shadow_ctor: PTR11 -> PTR10
test_klp_shadow_vars: klp_shadow_alloc(obj=PTR9, id=0x1235, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR10 = PTR11
test_klp_shadow_vars: shadow_ctor: PTR13 -> PTR12
test_klp_shadow_vars: klp_shadow_get_or_alloc(obj=PTR14, id=0x1234, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR12 = PTR13
test_klp_shadow_vars: shadow_ctor: PTR16 -> PTR15
test_klp_shadow_vars: klp_shadow_alloc(obj=PTR14, id=0x1235, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR15 = PTR16
test_klp_shadow_vars: klp_shadow_get(obj=PTR1, id=0x1234) = PTR3
test_klp_shadow_vars:   got expected PTR3 -> PTR2 result
test_klp_shadow_vars: klp_shadow_get(obj=PTR1, id=0x1235) = PTR6
test_klp_shadow_vars:   got expected PTR6 -> PTR5 result
test_klp_shadow_vars: klp_shadow_get(obj=PTR9, id=0x1234) = PTR8
test_klp_shadow_vars:   got expected PTR8 -> PTR7 result
test_klp_shadow_vars: klp_shadow_get(obj=PTR9, id=0x1235) = PTR11
test_klp_shadow_vars:   got expected PTR11 -> PTR10 result
test_klp_shadow_vars: klp_shadow_get(obj=PTR14, id=0x1234) = PTR13
test_klp_shadow_vars:   got expected PTR13 -> PTR12 result
test_klp_shadow_vars: klp_shadow_get(obj=PTR14, id=0x1235) = PTR16
test_klp_shadow_vars:   got expected PTR16 -> PTR15 result
test_klp_shadow_vars: klp_shadow_get_or_alloc(obj=PTR1, id=0x1234, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR2 = PTR3
test_klp_shadow_vars:   got expected PTR3 -> PTR2 result
test_klp_shadow_vars: klp_shadow_get_or_alloc(obj=PTR9, id=0x1234, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR7 = PTR8
test_klp_shadow_vars:   got expected PTR8 -> PTR7 result
test_klp_shadow_vars: klp_shadow_get_or_alloc(obj=PTR14, id=0x1234, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR12 = PTR13
test_klp_shadow_vars:   got expected PTR13 -> PTR12 result
test_klp_shadow_vars: shadow_dtor(obj=PTR1, shadow_data=PTR3)
test_klp_shadow_vars: klp_shadow_free(obj=PTR1, id=0x1234, dtor=PTR17)
test_klp_shadow_vars: klp_shadow_get(obj=PTR1, id=0x1234) = PTR0
test_klp_shadow_vars:   got expected NULL result
test_klp_shadow_vars: shadow_dtor(obj=PTR9, shadow_data=PTR8)
test_klp_shadow_vars: klp_shadow_free(obj=PTR9, id=0x1234, dtor=PTR17)
test_klp_shadow_vars: klp_shadow_get(obj=PTR9, id=0x1234) = PTR0
test_klp_shadow_vars:   got expected NULL result
test_klp_shadow_vars: shadow_dtor(obj=PTR14, shadow_data=PTR13)
test_klp_shadow_vars: klp_shadow_free(obj=PTR14, id=0x1234, dtor=PTR17)
test_klp_shadow_vars: klp_shadow_get(obj=PTR14, id=0x1234) = PTR0
test_klp_shadow_vars:   got expected NULL result
test_klp_shadow_vars: klp_shadow_get(obj=PTR1, id=0x1235) = PTR6
test_klp_shadow_vars:   got expected PTR6 -> PTR5 result
test_klp_shadow_vars: klp_shadow_get(obj=PTR9, id=0x1235) = PTR11
test_klp_shadow_vars:   got expected PTR11 -> PTR10 result
test_klp_shadow_vars: klp_shadow_get(obj=PTR14, id=0x1235) = PTR16
test_klp_shadow_vars:   got expected PTR16 -> PTR15 result
test_klp_shadow_vars: klp_shadow_free_all(id=0x1235, dtor=PTR0)
test_klp_shadow_vars: klp_shadow_get(obj=PTR1, id=0x1235) = PTR0
test_klp_shadow_vars:   got expected NULL result
test_klp_shadow_vars: klp_shadow_get(obj=PTR9, id=0x1235) = PTR0
test_klp_shadow_vars:   got expected NULL result
test_klp_shadow_vars: klp_shadow_get(obj=PTR14, id=0x1235) = PTR0
test_klp_shadow_vars:   got expected NULL result
% rmmod test_klp_shadow_vars";

/// The module's constructor type: `int (*)(void *obj, void *shadow_data, void *ctor_data)`,
/// plus the module (its log and pointer table) that the C version keeps in globals.
type CtorFn<F> = fn(&Module<'_, F>, *const c_void, NonNull<u8>, *mut c_void) -> i32;
/// `void (*)(void *obj, void *shadow_data)`, plus the module.
type DtorFn<F> = fn(&Module<'_, F>, *const c_void, NonNull<u8>);

/// The test module: its log and its pointer-to-`PTRn` table.
struct Module<'a, F: Flavor> {
    shadow: &'a Shadow<F>,
    log: Log,
    ptrs: RefCell<Vec<usize>>,
}

fn addr<T>(p: Option<NonNull<T>>) -> usize {
    p.map_or(0, |p| p.as_ptr() as usize)
}

impl<F: Flavor> Module<'_, F> {
    /// The module's `ptr_id()`: a pointer's number in first-seen order.
    fn ptr_id(&self, p: usize) -> usize {
        let mut ptrs = self.ptrs.borrow_mut();
        match ptrs.iter().position(|&q| q == p) {
            Some(n) => n,
            None => {
                ptrs.push(p);
                ptrs.len() - 1
            }
        }
    }

    fn pr_info(&self, line: String) {
        self.log
            .raw(Level::Info, &format!("test_klp_shadow_vars: {line}"));
    }

    fn shadow_get(&self, obj: *const c_void, id: u64) -> Option<NonNull<u8>> {
        let sv = self.shadow.get(obj, id);
        let (o, r) = (self.ptr_id(obj as usize), self.ptr_id(addr(sv)));
        self.pr_info(format!("klp_shadow_get(obj=PTR{o}, id=0x{id:x}) = PTR{r}"));
        sv
    }

    #[allow(clippy::too_many_arguments)]
    fn shadow_alloc_common(
        &self,
        name: &str,
        obj: *const c_void,
        id: u64,
        size: usize,
        gfp_flags: &str,
        ctor: Option<CtorFn<F>>,
        ctor_data: *mut c_void,
    ) -> Option<NonNull<u8>> {
        let mut call =
            |o: *const c_void, d: NonNull<u8>| match ctor.expect("set")(self, o, d, ctor_data) {
                0 => Ok(()),
                err => Err(err),
            };
        let c: Option<Ctor<'_>> = if ctor.is_some() {
            Some(&mut call)
        } else {
            None
        };
        let sv = if name == "alloc" {
            self.shadow.alloc(obj, id, size, c)
        } else {
            self.shadow.get_or_alloc(obj, id, size, c)
        };
        // The C wrapper's argument order: obj, ctor, *ctor_data, result.
        let o = self.ptr_id(obj as usize);
        let c = self.ptr_id(ctor.map_or(0, |f| f as usize));
        // SAFETY: ctor_data points to one of the test's pointer variables, alive.
        let var = unsafe { *ctor_data.cast::<*const c_void>() };
        let v = self.ptr_id(var as usize);
        let r = self.ptr_id(addr(sv));
        self.pr_info(format!(
            "klp_shadow_{name}(obj=PTR{o}, id=0x{id:x}, size={size:x}, gfp_flags={gfp_flags}), \
             ctor=PTR{c}, ctor_data=PTR{v} = PTR{r}"
        ));
        sv
    }

    fn shadow_alloc(
        &self,
        obj: *const c_void,
        id: u64,
        size: usize,
        ctor: Option<CtorFn<F>>,
        ctor_data: *mut c_void,
    ) -> Option<NonNull<u8>> {
        self.shadow_alloc_common("alloc", obj, id, size, "GFP_KERNEL", ctor, ctor_data)
    }

    fn shadow_get_or_alloc(
        &self,
        obj: *const c_void,
        id: u64,
        size: usize,
        ctor: Option<CtorFn<F>>,
        ctor_data: *mut c_void,
    ) -> Option<NonNull<u8>> {
        self.shadow_alloc_common("get_or_alloc", obj, id, size, "GFP_KERNEL", ctor, ctor_data)
    }

    fn dtor_closure(&self, dtor: Option<DtorFn<F>>) -> impl FnMut(*const c_void, NonNull<u8>) + '_ {
        move |o, d| dtor.expect("set")(self, o, d)
    }

    fn shadow_free(&self, obj: *const c_void, id: u64, dtor: Option<DtorFn<F>>) {
        let mut call = self.dtor_closure(dtor);
        let d: Option<Dtor<'_>> = if dtor.is_some() {
            Some(&mut call)
        } else {
            None
        };
        self.shadow.free(obj, id, d);
        let o = self.ptr_id(obj as usize);
        let f = self.ptr_id(dtor.map_or(0, |f| f as usize));
        self.pr_info(format!(
            "klp_shadow_free(obj=PTR{o}, id=0x{id:x}, dtor=PTR{f})"
        ));
    }

    fn shadow_free_all(&self, id: u64, dtor: Option<DtorFn<F>>) {
        let mut call = self.dtor_closure(dtor);
        let d: Option<Dtor<'_>> = if dtor.is_some() {
            Some(&mut call)
        } else {
            None
        };
        self.shadow.free_all(id, d);
        let f = self.ptr_id(dtor.map_or(0, |f| f as usize));
        self.pr_info(format!("klp_shadow_free_all(id=0x{id:x}, dtor=PTR{f})"));
    }
}

/// The module's `shadow_ctor`: store `*ctor_data` in the variable.
fn shadow_ctor<F: Flavor>(
    m: &Module<'_, F>,
    _obj: *const c_void,
    shadow_data: NonNull<u8>,
    ctor_data: *mut c_void,
) -> i32 {
    let sv = shadow_data.cast::<*const c_void>();
    let var = ctor_data.cast::<*const c_void>();
    if var.is_null() {
        return -EINVAL;
    }
    // SAFETY: `var` points to one of the test's pointer variables; `sv` is the new
    // variable's data, 8 bytes, aligned, private to the constructor.
    let value = unsafe { *var };
    // SAFETY: as above.
    unsafe { sv.write(value) };
    let (a, b) = (m.ptr_id(sv.as_ptr() as usize), m.ptr_id(value as usize));
    m.pr_info(format!("shadow_ctor: PTR{a} -> PTR{b}"));
    0
}

/// The module's `shadow_dtor`: only prints.
fn shadow_dtor<F: Flavor>(m: &Module<'_, F>, obj: *const c_void, shadow_data: NonNull<u8>) {
    let (a, b) = (
        m.ptr_id(obj as usize),
        m.ptr_id(shadow_data.as_ptr() as usize),
    );
    m.pr_info(format!("shadow_dtor(obj=PTR{a}, shadow_data=PTR{b})"));
}

/// The data of a variable made by `shadow_ctor`: the pointer it stored.
fn stored(sv: NonNull<u8>) -> *const c_void {
    // SAFETY: the variable is attached (the test frees it only later) and holds a pointer.
    unsafe { *sv.cast::<*const c_void>().as_ptr() }
}

/// `test_klp_shadow_vars_init`, pass by pass.
fn module_init<F: Flavor>(m: &Module<'_, F>) -> Result<(), &'static str> {
    let objs = [0u64; NUM_OBJS];
    let obj = |i: usize| std::ptr::from_ref(&objs[i]).cast::<c_void>();
    let nfields1 = [0u8; NUM_OBJS];
    let nfields2 = [0i32; NUM_OBJS];
    let mut pnfields1 = [std::ptr::null::<c_void>(); NUM_OBJS];
    let mut pnfields2 = [std::ptr::null::<c_void>(); NUM_OBJS];
    let mut pndup = [std::ptr::null::<c_void>(); NUM_OBJS];
    let mut sv1 = [None; NUM_OBJS];
    let mut sv2 = [None; NUM_OBJS];
    let ctor: Option<CtorFn<F>> = Some(shadow_ctor::<F>);
    let dtor: Option<DtorFn<F>> = Some(shadow_dtor::<F>);
    let size = size_of::<*const c_void>();

    m.ptr_id(0);

    // Pass 0: with an empty table, expect no match.
    if m.shadow_get(obj(0), SV_ID1).is_none() {
        m.pr_info("  got expected NULL result".into());
    }

    // Pass 1: a pair of variables for every object.
    for i in 0..NUM_OBJS {
        pnfields1[i] = std::ptr::from_ref(&nfields1[i]).cast();
        m.ptr_id(pnfields1[i] as usize);
        let data = std::ptr::from_mut(&mut pnfields1[i]).cast::<c_void>();
        sv1[i] = if i % 2 == 1 {
            m.shadow_alloc(obj(i), SV_ID1, size, ctor, data)
        } else {
            m.shadow_get_or_alloc(obj(i), SV_ID1, size, ctor, data)
        };
        sv1[i].ok_or("pass 1: no SV_ID1 variable (-ENOMEM)")?;

        pnfields2[i] = std::ptr::from_ref(&nfields2[i]).cast();
        m.ptr_id(pnfields2[i] as usize);
        let data = std::ptr::from_mut(&mut pnfields2[i]).cast::<c_void>();
        sv2[i] = m.shadow_alloc(obj(i), SV_ID2, size, ctor, data);
        sv2[i].ok_or("pass 1: no SV_ID2 variable (-ENOMEM)")?;
    }

    // Pass 2: find them, and what they point to.
    for i in 0..NUM_OBJS {
        let sv = m
            .shadow_get(obj(i), SV_ID1)
            .ok_or("pass 2: SV_ID1 missing")?;
        if Some(sv) == sv1[i] && stored(sv) == pnfields1[i] {
            let (a, b) = (
                m.ptr_id(sv.as_ptr() as usize),
                m.ptr_id(stored(sv) as usize),
            );
            m.pr_info(format!("  got expected PTR{a} -> PTR{b} result"));
        }
        let sv = m
            .shadow_get(obj(i), SV_ID2)
            .ok_or("pass 2: SV_ID2 missing")?;
        if Some(sv) == sv2[i] && stored(sv) == pnfields2[i] {
            let (a, b) = (
                m.ptr_id(sv.as_ptr() as usize),
                m.ptr_id(stored(sv) as usize),
            );
            m.pr_info(format!("  got expected PTR{a} -> PTR{b} result"));
        }
    }

    // Pass 3: get_or_alloc returns the existing variables.
    for i in 0..NUM_OBJS {
        pndup[i] = std::ptr::from_ref(&nfields1[i]).cast();
        m.ptr_id(pndup[i] as usize);
        let data = std::ptr::from_mut(&mut pndup[i]).cast::<c_void>();
        let sv = m
            .shadow_get_or_alloc(obj(i), SV_ID1, size, ctor, data)
            .ok_or("pass 3: get_or_alloc failed")?;
        if Some(sv) == sv1[i] && stored(sv) == pnfields1[i] {
            let (a, b) = (
                m.ptr_id(sv.as_ptr() as usize),
                m.ptr_id(stored(sv) as usize),
            );
            m.pr_info(format!("  got expected PTR{a} -> PTR{b} result"));
        }
    }

    // Pass 4: free the SV_ID1 variables, and check they are gone.
    for i in 0..NUM_OBJS {
        m.shadow_free(obj(i), SV_ID1, dtor);
        if m.shadow_get(obj(i), SV_ID1).is_none() {
            m.pr_info("  got expected NULL result".into());
        }
    }

    // Pass 5: the SV_ID2 variables are still there.
    for i in 0..NUM_OBJS {
        let sv = m
            .shadow_get(obj(i), SV_ID2)
            .ok_or("pass 5: SV_ID2 missing")?;
        if Some(sv) == sv2[i] && stored(sv) == pnfields2[i] {
            let (a, b) = (
                m.ptr_id(sv.as_ptr() as usize),
                m.ptr_id(stored(sv) as usize),
            );
            m.pr_info(format!("  got expected PTR{a} -> PTR{b} result"));
        }
    }

    // Pass 6: free all the SV_ID2 variables too.
    m.shadow_free_all(SV_ID2, None);
    for i in 0..NUM_OBJS {
        if m.shadow_get(obj(i), SV_ID2).is_none() {
            m.pr_info("  got expected NULL result".into());
        }
    }
    Ok(())
}

fn basic_shadow_variable_api<F: Flavor>(flavor: Arc<F>) {
    flavor.register_current_thread();
    let capture = Capture::new();
    let log = Log::new(capture.clone());
    let shadow = Shadow::new(Arc::clone(&flavor), log.clone());
    let allocations = shadow.allocations();

    capture.push("% insmod test_modules/test_klp_shadow_vars.ko");
    {
        let module = Module {
            shadow: &shadow,
            log,
            ptrs: RefCell::new(Vec::new()),
        };
        if let Err(e) = module_init(&module) {
            panic!("test_klp_shadow_vars failed to load: {e}");
        }
    }
    capture.push("% rmmod test_klp_shadow_vars");

    let got = capture.take();
    let expected: Vec<&str> = EXPECTED.lines().collect();
    for (n, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g, e, "line {} of the log differs", n + 1);
    }
    assert_eq!(got.len(), expected.len(), "log length differs: {got:#?}");

    // Everything was freed; after the grace periods nothing remains.
    assert!(shadow.is_empty());
    flavor.barrier();
    assert_eq!(allocations.outstanding(), 0);
    drop(shadow);
    flavor.unregister_current_thread();
}

/// Stamp a test out for every flavor.
macro_rules! for_every_flavor {
    ($test:ident) => {
        mod $test {
            use std::sync::Arc;

            #[test]
            fn preempt() {
                super::$test(Arc::new(klp_sync::Preempt::new()));
            }

            #[test]
            fn rcu() {
                super::$test(Arc::new(klp_sync::Rcu::new()));
            }

            #[test]
            fn lock() {
                super::$test(Arc::new(klp_sync::Lock::new()));
            }
        }
    };
}

for_every_flavor!(basic_shadow_variable_api);
