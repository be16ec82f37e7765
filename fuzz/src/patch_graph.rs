//! `klp_enable_patch` on arbitrary `struct klp_patch` graphs, checked against a model of
//! the kernel's validation.
//!
//! An input decodes to one to three patches enabled in turn, then disabled. Each patch is
//! a graph of C structs as a program would declare them — terminated arrays, as the
//! contract requires, with anything else arbitrary: NULL, empty, too long or non-UTF-8
//! names (patch, object, function), NULL `objs`, `funcs` and `new_func`, terminators in
//! the middle of arrays, `old_sympos` 0 to 3 on unique, duplicated and missing symbols,
//! duplicate objects and functions, objects loaded, not loaded and unknown, `pre_patch`
//! callbacks that refuse, system states of every compatibility, atomic replace.
//!
//! The model lists the input's defects (each with the errno the kernel gives it) and
//! requires: with defects, an error among theirs (any, whatever the order of the checks)
//! and nothing changed (the patch list, what every site runs); without, 0, or exactly
//! the errno of a refusing `pre_patch`; after a success, the transition completes, the
//! list is the model's and every site runs what the model says (the newest patch's
//! replacement, nothing of the patches an atomic replace removed). No panic may reach the
//! boundary (`KLP_ERROR_PANIC`) and no log line may be a warning of the kernel's kind.

use crate::bytes::Bytes;
use klp::{klp_callbacks, klp_func, klp_object, klp_patch, klp_state};
use std::ffi::{c_char, c_int, c_ulong, c_void};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};

klp_core::patchable! {
    /// A unique function of the main program.
    pub fn fz_a(x: u32) -> u32 { 1_000 + x }
}
klp_core::patchable! {
    /// Another.
    pub fn fz_b(x: u32) -> u32 { 2_000 + x }
}
/// `fz_dup`, twice in the main program (`old_sympos` 1 and 2).
pub mod dup1 {
    klp_core::patchable! {
        /// The first or second `fz_dup`.
        pub fn fz_dup(x: u32) -> u32 { 3_000 + x }
    }
}
/// The other `fz_dup` of the main program.
pub mod dup2 {
    klp_core::patchable! {
        /// The first or second `fz_dup`.
        pub fn fz_dup(x: u32) -> u32 { 4_000 + x }
    }
}
/// The object `fz_mod`, loaded once at start.
pub mod fz_mod {
    klp_core::patchable! {
        object = "fz_mod";
        /// A function of a loaded object.
        pub fn fz_m(x: u32) -> u32 { 5_000 + x }
    }
    klp_core::patchable! {
        object = "fz_mod";
        /// A name that the main program has twice, once here.
        pub fn fz_dup(x: u32) -> u32 { 6_000 + x }
    }
}
/// The object `fz_gone`, never loaded.
pub mod fz_gone {
    klp_core::patchable! {
        object = "fz_gone";
        /// A function of an object that is not loaded.
        pub fn fz_g(x: u32) -> u32 { 7_000 + x }
    }
}

fn v1(x: u32) -> u32 {
    100_000 + x
}
fn v2(x: u32) -> u32 {
    200_000 + x
}
fn v3(x: u32) -> u32 {
    300_000 + x
}
/// The replacements (every site has the same type, so any fits any site).
const REPLACEMENTS: [fn(u32) -> u32; 3] = [v1, v2, v3];

/// The sites whose calls are checked, in the order of [`SITE_FNS`].
const SITE_FNS: [fn(u32) -> u32; 6] = [
    fz_a,
    fz_b,
    dup1::fz_dup,
    dup2::fz_dup,
    fz_mod::fz_m,
    fz_mod::fz_dup,
];
const A: usize = 0;
const B: usize = 1;
const DUP1: usize = 2;
const DUP2: usize = 3;
const M: usize = 4;
const MOD_DUP: usize = 5;

/// The `pre_patch` errno of a refusing callback.
const PRE_PATCH_ERR: c_int = -libc::EIO;
const EINVAL: c_int = -libc::EINVAL;
const EEXIST: c_int = -libc::EEXIST;

static CALLBACKS: AtomicU64 = AtomicU64::new(0);

/// Outcomes of `klp_enable_patch` so far: successes, errors.
pub static ENABLED: AtomicU64 = AtomicU64::new(0);
/// See [`ENABLED`].
pub static REFUSED: AtomicU64 = AtomicU64::new(0);
/// Errors accepted as known findings (see `Expect::tolerated`).
pub static TOLERATED: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" fn pre_ok(_obj: *mut klp_object) -> c_int {
    CALLBACKS.fetch_add(1, Ordering::Relaxed);
    0
}
unsafe extern "C" fn pre_fail(_obj: *mut klp_object) -> c_int {
    CALLBACKS.fetch_add(1, Ordering::Relaxed);
    PRE_PATCH_ERR
}
unsafe extern "C" fn count(_obj: *mut klp_object) {
    CALLBACKS.fetch_add(1, Ordering::Relaxed);
}

/// Which `fz_dup` of the main program is `old_sympos` 1 (the registration order).
static DUP_ORDER: std::sync::OnceLock<[usize; 2]> = std::sync::OnceLock::new();

/// One-time set-up: a quiet log, a short retry period, `fz_mod` loaded, the order of the
/// two `fz_dup`.
pub fn init() -> [usize; 2] {
    *DUP_ORDER.get_or_init(|| {
        crate::log::quiet();
        assert_eq!(klp::klp_set_retry_period(1), 0);
        // SAFETY: a NUL-terminated name.
        assert_eq!(unsafe { klp::klp_object_load(c"fz_mod".as_ptr()) }, 0);
        // Patch `fz_dup` position 1 and see which one changes.
        let mut funcs = [
            klp_func {
                old_name: c"fz_dup".as_ptr(),
                new_func: v1 as fn(u32) -> u32 as *mut c_void,
                old_sympos: 1,
                klp_reserved: [ptr::null_mut(); 4],
            },
            zeroed_func(),
        ];
        let mut objs = [
            object(ptr::null(), funcs.as_mut_ptr(), no_callbacks()),
            object(ptr::null(), ptr::null_mut(), no_callbacks()),
        ];
        let mut p = klp_patch {
            name: c"fz_probe".as_ptr(),
            objs: objs.as_mut_ptr(),
            states: ptr::null_mut(),
            replace: false,
            r#mod: ptr::null_mut(),
            klp_reserved: [ptr::null_mut(); 3],
        };
        // SAFETY: a valid, terminated graph that outlives the patch (disabled below).
        assert_eq!(unsafe { klp::klp_enable_patch(&mut p) }, 0);
        assert_eq!(klp::klp_wait_transition(10_000), 0);
        let first = if dup1::fz_dup(0) == v1(0) {
            [DUP1, DUP2]
        } else {
            assert_eq!(dup2::fz_dup(0), v1(0));
            [DUP2, DUP1]
        };
        // SAFETY: a NUL-terminated name.
        let r = unsafe { klp::klp_patch_set_enabled(c"fz_probe".as_ptr(), 0) };
        assert_eq!(r, 0);
        assert_eq!(klp::klp_wait_transition(10_000), 0);
        assert_eq!(patch_list(), Vec::<Vec<u8>>::new());
        first
    })
}

fn zeroed_func() -> klp_func {
    klp_func {
        old_name: ptr::null(),
        new_func: ptr::null_mut(),
        old_sympos: 0,
        klp_reserved: [ptr::null_mut(); 4],
    }
}

fn no_callbacks() -> klp_callbacks {
    klp_callbacks {
        pre_patch: None,
        post_patch: None,
        pre_unpatch: None,
        post_unpatch: None,
        post_unpatch_enabled: false,
    }
}

fn object(name: *const c_char, funcs: *mut klp_func, callbacks: klp_callbacks) -> klp_object {
    klp_object {
        name,
        funcs,
        callbacks,
        r#mod: ptr::null_mut(),
        klp_reserved: [ptr::null_mut(); 3],
    }
}

/// A name as the graph carries it: NULL or bytes (no NUL inside).
#[derive(Clone, PartialEq, Eq)]
pub enum Name {
    /// NULL.
    Null,
    /// These bytes, NUL-terminated.
    Bytes(Vec<u8>),
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Name::Null => f.write_str("NULL"),
            Name::Bytes(b) if b.len() > 64 => write!(f, "<{} bytes>", b.len()),
            Name::Bytes(b) => write!(f, "\"{}\"", b.escape_ascii()),
        }
    }
}

impl Name {
    fn is_null(&self) -> bool {
        matches!(self, Name::Null)
    }
}

/// `pre_patch` of an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pre {
    /// NULL.
    None,
    /// Returns 0.
    Ok,
    /// Returns [`PRE_PATCH_ERR`].
    Fail,
}

/// A `struct klp_func`.
#[derive(Clone, Debug)]
pub struct FuncDesc {
    /// `old_name`.
    pub old_name: Name,
    /// `new_func`: NULL or a replacement (0, 1, 2).
    pub new_func: Option<usize>,
    /// `old_sympos`.
    pub sympos: u64,
}

impl FuncDesc {
    /// Whether the entry reads as the terminator.
    fn is_terminator(&self) -> bool {
        self.old_name.is_null() && self.new_func.is_none() && self.sympos == 0
    }
}

/// A `struct klp_object`.
#[derive(Clone, Debug)]
pub struct ObjDesc {
    /// `name` (NULL: the main program).
    pub name: Name,
    /// `funcs`: NULL or the entries before the terminator (which may contain one).
    pub funcs: Option<Vec<FuncDesc>>,
    /// `pre_patch`.
    pub pre: Pre,
    /// `post_patch`, `pre_unpatch`, `post_unpatch` set.
    pub others: bool,
}

impl ObjDesc {
    fn is_terminator(&self) -> bool {
        self.name.is_null() && self.funcs.is_none()
    }
}

/// A `struct klp_patch`.
#[derive(Clone, Debug)]
pub struct PatchDesc {
    /// `name`.
    pub name: Name,
    /// `objs`: NULL or the entries before the terminator.
    pub objs: Option<Vec<ObjDesc>>,
    /// `states`: NULL or `(id, version)` before the terminator (id 0 ends it early).
    pub states: Option<Vec<(u64, u32)>>,
    /// `replace`.
    pub replace: bool,
}

/// 55 bytes: the longest patch or object name (MODULE_NAME_LEN is 56).
const LONGEST_NAME: &[u8] = &[b'n'; 55];
/// 56 bytes: one too many.
const TOO_LONG_NAME: &[u8] = &[b'n'; 56];

const PATCH_NAMES: [&[u8]; 8] = [
    b"fzp0",
    b"fzp1",
    b"fzp2",
    b"",
    LONGEST_NAME,
    TOO_LONG_NAME,
    b"bad\xc3\x28utf8",
    b"fzp0",
];
const OBJ_NAMES: [&[u8]; 8] = [
    b"fz_mod",
    b"fz_gone",
    b"fz_none",
    b"vmlinux",
    b"",
    LONGEST_NAME,
    TOO_LONG_NAME,
    b"obj\xff",
];
const FUNC_NAMES: [&[u8]; 8] = [
    b"fz_a",
    b"fz_b",
    b"fz_dup",
    b"fz_m",
    b"fz_g",
    b"fz_missing",
    b"",
    b"fn\xfe",
];

fn decode_name(b: &mut Bytes<'_>, pool: &[&[u8]], null_one_in: usize) -> Name {
    if b.below(null_one_in) == 0 {
        return Name::Null;
    }
    // Rarely, a long name: 511 or 512 bytes (KSYM_NAME_LEN is 512).
    if b.below(32) == 0 {
        return Name::Bytes(vec![b'x'; 511 + b.below(2)]);
    }
    Name::Bytes(b.pick(pool).to_vec())
}

/// A function name, mostly one that the object has (so that more graphs get through to
/// the later checks).
fn decode_func_name(b: &mut Bytes<'_>, obj: &Name) -> Name {
    let likely: &[&[u8]] = match obj {
        Name::Null => &[b"fz_a", b"fz_b", b"fz_dup"],
        Name::Bytes(n) if n == b"fz_mod" => &[b"fz_m", b"fz_dup"],
        Name::Bytes(n) if n == b"fz_gone" => &[b"fz_g"],
        Name::Bytes(_) => &[b"fz_a"],
    };
    if b.below(4) != 0 {
        Name::Bytes(b.pick(likely).to_vec())
    } else {
        decode_name(b, &FUNC_NAMES, 24)
    }
}

/// Decode one patch.
pub fn decode_patch(b: &mut Bytes<'_>) -> PatchDesc {
    let name = decode_name(b, &PATCH_NAMES, 16);
    let objs = (b.below(16) != 0).then(|| {
        (0..b.below(4))
            .map(|_| {
                // Mostly the main program.
                let name = match b.below(3) {
                    0 => decode_name(b, &OBJ_NAMES, 1 << 7),
                    _ => Name::Null,
                };
                let funcs = (b.below(12) != 0).then(|| {
                    (0..b.below(4))
                        .map(|_| FuncDesc {
                            old_name: decode_func_name(b, &name),
                            new_func: (b.below(12) != 0).then(|| b.below(3)),
                            sympos: match b.below(4) {
                                0 => b.below(4) as u64,
                                _ => 0,
                            },
                        })
                        .collect()
                });
                ObjDesc {
                    name,
                    funcs,
                    pre: match b.below(8) {
                        0 => Pre::Fail,
                        1 => Pre::Ok,
                        _ => Pre::None,
                    },
                    others: b.coin(),
                }
            })
            .collect()
    });
    let states = b.coin().then(|| {
        (0..b.below(4))
            .map(|_| ((b.below(8) as u64).min(3), b.below(3) as u32))
            .collect()
    });
    PatchDesc {
        name,
        objs,
        states,
        replace: b.below(3) == 0,
    }
}

/// The C structs of one patch, kept at fixed addresses while the patch may be in use.
pub struct Built {
    _names: Vec<Box<[u8]>>,
    _funcs: Vec<Box<[klp_func]>>,
    _objs: Option<Box<[klp_object]>>,
    _states: Option<Box<[klp_state]>>,
    patch: Box<klp_patch>,
}

fn c_name(names: &mut Vec<Box<[u8]>>, n: &Name) -> *const c_char {
    match n {
        Name::Null => ptr::null(),
        Name::Bytes(b) => {
            let mut v = b.clone();
            v.push(0);
            let boxed: Box<[u8]> = v.into_boxed_slice();
            let p = boxed.as_ptr().cast::<c_char>();
            names.push(boxed);
            p
        }
    }
}

/// Lay the graph out as C structs.
pub fn build(d: &PatchDesc) -> Built {
    let mut names = Vec::new();
    let mut all_funcs: Vec<Box<[klp_func]>> = Vec::new();
    let objs = d.objs.as_ref().map(|objs| {
        let mut out: Vec<klp_object> = objs
            .iter()
            .map(|o| {
                let funcs = o.funcs.as_ref().map_or(ptr::null_mut(), |fs| {
                    let mut v: Vec<klp_func> = fs
                        .iter()
                        .map(|f| klp_func {
                            old_name: c_name(&mut names, &f.old_name),
                            new_func: f.new_func.map_or(ptr::null_mut(), |i| {
                                REPLACEMENTS[i] as fn(u32) -> u32 as *mut c_void
                            }),
                            old_sympos: f.sympos as c_ulong,
                            klp_reserved: [ptr::null_mut(); 4],
                        })
                        .collect();
                    v.push(zeroed_func());
                    let mut boxed = v.into_boxed_slice();
                    let p = boxed.as_mut_ptr();
                    all_funcs.push(boxed);
                    p
                });
                let mut cb = no_callbacks();
                cb.pre_patch = match o.pre {
                    Pre::None => None,
                    Pre::Ok => Some(pre_ok),
                    Pre::Fail => Some(pre_fail),
                };
                if o.others {
                    cb.post_patch = Some(count);
                    cb.pre_unpatch = Some(count);
                    cb.post_unpatch = Some(count);
                }
                object(c_name(&mut names, &o.name), funcs, cb)
            })
            .collect();
        out.push(object(ptr::null(), ptr::null_mut(), no_callbacks()));
        out.into_boxed_slice()
    });
    let states = d.states.as_ref().map(|ss| {
        let mut v: Vec<klp_state> = ss
            .iter()
            .map(|&(id, version)| klp_state {
                id: id as c_ulong,
                version,
                data: ptr::null_mut(),
            })
            .collect();
        v.push(klp_state {
            id: 0,
            version: 0,
            data: ptr::null_mut(),
        });
        v.into_boxed_slice()
    });
    let mut objs = objs;
    let mut states = states;
    let patch = Box::new(klp_patch {
        name: c_name(&mut names, &d.name),
        objs: objs.as_mut().map_or(ptr::null_mut(), |o| o.as_mut_ptr()),
        states: states.as_mut().map_or(ptr::null_mut(), |s| s.as_mut_ptr()),
        replace: d.replace,
        r#mod: ptr::null_mut(),
        klp_reserved: [ptr::null_mut(); 3],
    });
    Built {
        _names: names,
        _funcs: all_funcs,
        _objs: objs,
        _states: states,
        patch,
    }
}

/// An object of the model: its name (`None`: the main program) and its funcs'
/// `(old_name, old_sympos)`.
type ObjKey = (Option<Vec<u8>>, Vec<(String, u64)>);

/// A patch of the model: in use, in stack order.
#[derive(Clone, Debug)]
struct InUse {
    name: Vec<u8>,
    objects: Vec<ObjKey>,
    states: Vec<(u64, u32)>,
    /// (site, replacement) for every func resolved in a loaded object.
    funcs: Vec<(usize, usize)>,
}

/// What the model expects of one `klp_enable_patch`.
#[derive(Debug)]
struct Expect {
    /// The errnos of the defects found (empty: none).
    defects: Vec<(c_int, &'static str)>,
    /// Errors libklp gives where the kernel would not: known findings (`fuzz/README.md`),
    /// accepted until they are fixed (and success then too).
    tolerated: Vec<(c_int, &'static str)>,
    /// A loaded object's `pre_patch` refuses.
    pre_fails: bool,
    /// The funcs that take effect on success.
    funcs: Vec<(usize, usize)>,
    objects: Vec<ObjKey>,
    states: Vec<(u64, u32)>,
}

/// The sites named `name` in the loaded object `obj` (`None`: the main program), in
/// `old_sympos` order; `None` when the object is not loaded.
fn sites_of(obj: Option<&[u8]>, name: &[u8], dup: [usize; 2]) -> Option<Vec<usize>> {
    match obj {
        None => Some(match name {
            b"fz_a" => vec![A],
            b"fz_b" => vec![B],
            b"fz_dup" => dup.to_vec(),
            _ => vec![],
        }),
        Some(b"fz_mod") => Some(match name {
            b"fz_m" => vec![M],
            b"fz_dup" => vec![MOD_DUP],
            _ => vec![],
        }),
        Some(_) => None,
    }
}

fn expect(d: &PatchDesc, in_use: &[InUse], dup: [usize; 2]) -> Expect {
    let mut e = Expect {
        defects: Vec::new(),
        tolerated: Vec::new(),
        pre_fails: false,
        funcs: Vec::new(),
        objects: Vec::new(),
        states: Vec::new(),
    };
    let mut defect = |errno: c_int, what: &'static str| e.defects.push((errno, what));
    match &d.name {
        Name::Null => defect(EINVAL, "patch name NULL"),
        Name::Bytes(n) => {
            if std::str::from_utf8(n).is_err() {
                defect(EINVAL, "patch name not UTF-8");
            } else if n.is_empty() || n.len() >= klp_core::MODULE_NAME_LEN {
                defect(EINVAL, "patch name empty or too long");
            }
            if in_use.iter().any(|p| &p.name == n) {
                defect(EEXIST, "patch name in use");
            }
        }
    }
    let mut funcs = Vec::new();
    let mut objects: Vec<ObjKey> = Vec::new();
    let mut tolerated = Vec::new();
    let mut pre_fails = false;
    match &d.objs {
        None => defect(EINVAL, "objs NULL"),
        Some(objs) => {
            let mut seen_objs: Vec<Vec<u8>> = Vec::new();
            for o in objs.iter().take_while(|o| !o.is_terminator()) {
                let oname: Option<&[u8]> = match &o.name {
                    Name::Null => None,
                    Name::Bytes(b) => Some(b),
                };
                if let Some(n) = oname {
                    if std::str::from_utf8(n).is_err() {
                        defect(EINVAL, "object name not UTF-8");
                    } else if n.is_empty() || n.len() >= klp_core::MODULE_NAME_LEN {
                        defect(EINVAL, "object name empty or too long");
                    }
                }
                let display = oname.unwrap_or(b"vmlinux").to_vec();
                if seen_objs.contains(&display) {
                    defect(EEXIST, "object twice");
                }
                seen_objs.push(display);
                objects.push((oname.map(<[u8]>::to_vec), Vec::new()));
                let Some(fs) = &o.funcs else {
                    defect(EINVAL, "funcs NULL");
                    continue;
                };
                let loaded = match oname {
                    None => true,
                    Some(n) => n == b"fz_mod",
                };
                if loaded && o.pre == Pre::Fail {
                    pre_fails = true;
                }
                let mut seen_funcs: Vec<(String, u64)> = Vec::new();
                for f in fs.iter().take_while(|f| !f.is_terminator()) {
                    let Name::Bytes(raw) = &f.old_name else {
                        defect(EINVAL, "old_name NULL");
                        continue;
                    };
                    let name = String::from_utf8_lossy(raw).into_owned();
                    if name.is_empty() {
                        defect(EINVAL, "old_name empty");
                    }
                    if f.new_func.is_none() {
                        defect(EINVAL, "new_func NULL");
                    }
                    if name.len() >= klp_core::KSYM_NAME_LEN {
                        defect(EINVAL, "old_name too long");
                    }
                    let key = (name.clone(), f.sympos.max(1));
                    if seen_funcs.contains(&key) {
                        defect(EEXIST, "func twice");
                    }
                    seen_funcs.push(key);
                    if let Some(last) = objects.last_mut() {
                        last.1.push((name.clone(), f.sympos));
                    }
                    if !loaded {
                        continue;
                    }
                    let candidates =
                        sites_of(oname, name.as_bytes(), dup).expect("a loaded object");
                    let site = if candidates.is_empty() {
                        defect(EINVAL, "symbol not found");
                        None
                    } else if f.sympos == 0 && candidates.len() > 1 {
                        defect(EINVAL, "symbol ambiguous");
                        None
                    } else if f.sympos as usize > candidates.len() {
                        defect(EINVAL, "old_sympos out of range");
                        None
                    } else {
                        Some(candidates[f.sympos.max(1) as usize - 1])
                    };
                    if let (Some(s), Some(r)) = (site, f.new_func) {
                        funcs.push((s, r));
                    }
                }
            }
            // An atomic replace gets an object of nops for every object of the patches in
            // use that it lacks (the kernel's klp_add_nops): its directory name may
            // collide too (a named object "vmlinux" beside the main program's).
            if d.replace {
                let mut dynamic: Vec<&Option<Vec<u8>>> = Vec::new();
                for (o, _) in in_use.iter().flat_map(|p| p.objects.iter()) {
                    if !objects.iter().any(|n| &n.0 == o) && !dynamic.contains(&o) {
                        dynamic.push(o);
                        let display = o.clone().unwrap_or_else(|| b"vmlinux".to_vec());
                        if seen_objs.contains(&display) {
                            defect(EEXIST, "a nop object collides");
                        }
                        seen_objs.push(display);
                    }
                }
                // Nop funcs: the kernel takes `old_sympos` 0 and 1 for the same function
                // (klp_find_func); libklp compares them as they are, so a nop can
                // duplicate a func of the new patch (finding 1 of fuzz/README.md).
                let idents: Vec<&Option<Vec<u8>>> =
                    objects.iter().map(|o| &o.0).chain(dynamic).collect();
                for ident in idents {
                    let own: Vec<(String, u64)> = objects
                        .iter()
                        .filter(|o| &o.0 == ident)
                        .flat_map(|o| o.1.iter().cloned())
                        .collect();
                    let mut with_nops = own.clone();
                    for (_, fs) in in_use
                        .iter()
                        .flat_map(|p| p.objects.iter())
                        .filter(|o| &o.0 == ident)
                    {
                        for f in fs {
                            if !with_nops.contains(f) {
                                with_nops.push(f.clone());
                            }
                        }
                    }
                    let dups = |list: &[(String, u64)]| {
                        list.iter().enumerate().any(|(i, a)| {
                            list[..i]
                                .iter()
                                .any(|b| b.0 == a.0 && b.1.max(1) == a.1.max(1))
                        })
                    };
                    if dups(&with_nops) && !dups(&own) {
                        tolerated.push((EEXIST, "finding 1: a nop for old_sympos 0/1"));
                    }
                }
            }
        }
    }
    let states: Vec<(u64, u32)> = d
        .states
        .as_ref()
        .map(|s| s.iter().copied().take_while(|&(id, _)| id != 0).collect())
        .unwrap_or_default();
    let compatible = in_use.iter().flat_map(|p| p.states.iter()).all(|&(id, v)| {
        match states.iter().find(|s| s.0 == id) {
            Some(&(_, nv)) => nv >= v,
            None => !d.replace,
        }
    });
    if !compatible {
        defect(EINVAL, "states incompatible");
    }
    e.pre_fails = pre_fails;
    e.tolerated = tolerated;
    e.funcs = funcs;
    e.objects = objects;
    e.states = states;
    e
}

/// The patches in use, from `klp_patch_list`.
pub fn patch_list() -> Vec<Vec<u8>> {
    // SAFETY: NULL, 0 asks for the size.
    let need = unsafe { klp::klp_patch_list(ptr::null_mut(), 0) };
    assert!(need > 0, "klp_patch_list: {need}");
    let mut buf = vec![0u8; need as usize];
    // SAFETY: `buf` is valid for `need` bytes.
    let got = unsafe { klp::klp_patch_list(buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(got, need, "the list changed between two calls");
    buf.split(|&c| c == 0)
        .take_while(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn site_values() -> [u32; 6] {
    SITE_FNS.map(|f| f(0))
}

fn model_values(in_use: &[InUse]) -> [u32; 6] {
    let originals = [1_000, 2_000, 3_000, 4_000, 5_000, 6_000];
    std::array::from_fn(|s| {
        in_use
            .iter()
            .rev()
            .find_map(|p| p.funcs.iter().find(|f| f.0 == s).map(|f| f.1))
            .map_or(originals[s], |r| REPLACEMENTS[r](0))
    })
}

fn errno_name(e: c_int) -> String {
    match -e {
        libc::EINVAL => "-EINVAL".into(),
        libc::EEXIST => "-EEXIST".into(),
        libc::EIO => "-EIO (pre_patch)".into(),
        libc::EBUSY => "-EBUSY".into(),
        _ => e.to_string(),
    }
}

/// Run one input: decode, enable, check, clean up. Panics on a finding.
pub fn run(data: &[u8]) {
    let dup = init();
    let mut b = Bytes::new(data);
    crate::log::clear();
    let mut in_use: Vec<InUse> = Vec::new();
    let mut built: Vec<Built> = Vec::new();
    if b.below(64) == 0 {
        // SAFETY: NULL is allowed.
        assert_eq!(unsafe { klp::klp_enable_patch(ptr::null_mut()) }, EINVAL);
    }
    let n = 1 + b.below(3);
    for _ in 0..n {
        let d = decode_patch(&mut b);
        let e = expect(&d, &in_use, dup);
        let mut c = build(&d);
        let before_list = patch_list();
        let before_values = site_values();
        // SAFETY: a graph whose arrays are terminated, with valid strings, replacements
        // of the sites' type and callbacks that may run anywhere; it stays allocated until
        // the patch is gone (the end of this function).
        let r = unsafe { klp::klp_enable_patch(&mut *c.patch) };
        assert_ne!(
            r,
            klp::KLP_ERROR_PANIC,
            "a panic reached the boundary: {d:#?}"
        );
        let tolerated = e.tolerated.iter().any(|&(errno, _)| errno == r);
        if tolerated {
            TOLERATED.fetch_add(1, Ordering::Relaxed);
        } else if !e.defects.is_empty() {
            assert!(
                e.defects.iter().any(|&(errno, _)| errno == r),
                "klp_enable_patch returned {} where the model expects one of {:?}:\n{d:#?}",
                errno_name(r),
                e.defects
            );
        } else if e.pre_fails {
            assert_eq!(
                r,
                PRE_PATCH_ERR,
                "a refusing pre_patch, but {}:\n{d:#?}",
                errno_name(r)
            );
        } else {
            assert_eq!(r, 0, "no defect, but {}:\n{d:#?}", errno_name(r));
        }
        if r != 0 {
            REFUSED.fetch_add(1, Ordering::Relaxed);
            assert_eq!(
                patch_list(),
                before_list,
                "a failed enable changed the list"
            );
            assert_eq!(
                site_values(),
                before_values,
                "a failed enable changed a site"
            );
            continue;
        }
        ENABLED.fetch_add(1, Ordering::Relaxed);
        assert_eq!(
            klp::klp_wait_transition(30_000),
            0,
            "the transition did not complete"
        );
        let Name::Bytes(name) = &d.name else {
            unreachable!("enabled with a NULL name")
        };
        let p = InUse {
            name: name.clone(),
            objects: e.objects,
            states: e.states,
            funcs: e.funcs,
        };
        if d.replace {
            in_use.clear();
        }
        in_use.push(p);
        built.push(c);
        let names: Vec<Vec<u8>> = in_use.iter().map(|p| p.name.clone()).collect();
        assert_eq!(patch_list(), names, "the list after an enable:\n{d:#?}");
        assert_eq!(
            site_values(),
            model_values(&in_use),
            "what the sites run after an enable:\n{d:#?}"
        );
    }
    for p in in_use.iter().rev() {
        let mut name = p.name.clone();
        name.push(0);
        // SAFETY: a NUL-terminated name.
        let r = unsafe { klp::klp_patch_set_enabled(name.as_ptr().cast(), 0) };
        assert_eq!(r, 0, "disable {:?}", String::from_utf8_lossy(&p.name));
        assert_eq!(klp::klp_wait_transition(30_000), 0);
    }
    assert_eq!(patch_list(), Vec::<Vec<u8>>::new());
    assert_eq!(site_values(), model_values(&[]));
    // Every patch is off the list: its structs may go.
    drop(built);
    crate::log::assert_clean();
}
