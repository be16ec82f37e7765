//! The exhaustive state model of the entry-site write protocols
//! (`klp_core::entry::protocol`), with negative controls that prove it has teeth.
//!
//! A *phase* is a step boundary: in phase `t`, steps `0..t` are written and synchronised and
//! step `t`'s bytes are in flight, so a core may see any subset of them still old (the *view*).
//! A thread is a PC at a phase: it executes one instruction from any view of its phase, or is
//! preempted and resumes in a later phase. Threads start parked at every instruction boundary
//! of the states the site had before the operation (among them `e+1`, after GCC's first NOP),
//! and new calls arrive at the label in every phase. A `CC` enters the SIGTRAP handler, which
//! may run in any later phase: it re-executes the site if the `CC` is gone, or emulates the
//! instruction being installed, and must never resume inside the range being rewritten. Every
//! decoded instruction must be harmless, every path must end at the body or the stub, and in
//! the final phase no path may loop.

use klp_core::entry::protocol::{
    Area, Convention, EntryNop, EntryShape, HARMLESS, Harm, INT3, JMP8, NOP, Next, Path, Protocol,
    Refusal, Step, Write, arm_steps, disarm_steps, execute, prepare_step, step, validate_site,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::ops::Range;

/// Address of the area (16-aligned, as GCC and Clang place it).
const BASE: u64 = 0x5555_5555_4000;
/// Address of the site's stub: the new path.
const STUB: u64 = 0x7f12_3456_7010;
/// Layout B's slot, in a data page near the object.
const SLOT_B: u64 = BASE + 0x20_0000;

/// A sequence of steps applied to an area, and the threads that may be around.
struct Model {
    name: String,
    /// The area before the first step.
    image: Vec<u8>,
    data: Range<usize>,
    slots: Vec<(u64, u64)>,
    /// The label, where new calls arrive.
    func: usize,
    /// The entry `e`: `e..e+2` is the range being rewritten.
    entry: usize,
    steps: Vec<Step>,
    /// Where threads may be parked before the first step.
    parked: Vec<usize>,
}

/// A harmful path: the state it was found in and how the thread got there.
#[derive(Debug)]
struct Finding {
    model: String,
    /// Steps synchronised.
    phase: usize,
    steps: usize,
    /// In-flight bytes the core still saw old (area offsets).
    old: Vec<usize>,
    pc: usize,
    harm: Harm,
    /// (pc, phase) from where the thread started.
    trace: Vec<(usize, usize)>,
    func: usize,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |o: usize| format!("f{:+}", o as isize - self.func as isize);
        let old: Vec<String> = self.old.iter().map(|&o| at(o)).collect();
        let trace: Vec<String> = (self.trace.iter())
            .map(|&(p, t)| format!("{}@{t}", at(p)))
            .collect();
        write!(
            f,
            "{}: {} of {} steps synced, in-flight bytes seen old: [{}]; thread at {} \
             (path {}): {} (area offsets)",
            self.model,
            self.phase,
            self.steps,
            old.join(", "),
            at(self.pc),
            trace.join(" → "),
            self.harm
        )
    }
}

#[derive(Default)]
struct Report {
    /// (pc, phase) pairs reached.
    configs: usize,
    /// (pc, phase, view) triples decoded.
    states: usize,
    findings: Vec<Finding>,
}

type Cfg = (usize, usize);

/// Explores every reachable (pc, phase) under every view.
fn check(m: &Model) -> Report {
    let n = m.steps.len();
    let body = m.image.len();
    let mut bases = vec![m.image.clone()];
    for s in &m.steps {
        let mut b = bases.last().unwrap().clone();
        s.writes.iter().for_each(|w| b[w.offset] = w.byte);
        bases.push(b);
    }
    let inflight = |t: usize| -> &[Write] { m.steps.get(t).map_or(&[], |s| &s.writes) };
    // Every view of every phase: the bytes, and which in-flight writes are still old.
    let views: Vec<Vec<(Vec<u8>, Vec<usize>)>> = (0..=n)
        .map(|t| {
            let w = inflight(t);
            (0u32..1 << w.len())
                .map(|mask| {
                    let mut v = bases[t].clone();
                    let mut old = Vec::new();
                    for (i, w) in w.iter().enumerate() {
                        match (mask >> i) & 1 {
                            1 => v[w.offset] = w.byte,
                            _ => old.push(w.offset),
                        }
                    }
                    (v, old)
                })
                .collect()
        })
        .collect();
    let area = |bytes| Area {
        bytes,
        data: m.data.clone(),
        base: BASE,
        stub: STUB,
        slots: &m.slots,
    };
    let on_trap = |t: usize| m.steps[t.min(n.saturating_sub(1))].on_trap;

    let mut parent: HashMap<Cfg, Option<Cfg>> = HashMap::new();
    let mut queue = VecDeque::new();
    let mut push = |c: Cfg, from: Option<Cfg>, q: &mut VecDeque<Cfg>| {
        if c.0 < body && !parent.contains_key(&c) {
            parent.insert(c, from);
            q.push_back(c);
        }
    };
    for &p in &m.parked {
        push((p, 0), None, &mut queue);
    }
    for t in 0..=n {
        push((m.func, t), None, &mut queue);
    }
    let mut report = Report::default();
    let mut raw: Vec<(Cfg, Vec<usize>, Harm)> = Vec::new();
    while let Some(c @ (pc, t)) = queue.pop_front() {
        report.configs += 1;
        if t < n {
            push((pc, t + 1), Some(c), &mut queue);
        }
        for (view, old) in &views[t] {
            report.states += 1;
            match step(&area(view), pc) {
                Ok(Next::At(p)) => push((p, t), Some(c), &mut queue),
                Ok(Next::Old | Next::New) => {}
                Err(h) => raw.push((c, old.clone(), h)),
                Ok(Next::Trap) if pc != m.entry => {
                    raw.push((c, old.clone(), Harm::UnhandledTrap(pc)))
                }
                Ok(Next::Trap) => {
                    // The handler runs in this phase or a later one and reads the byte again.
                    for (t2, base) in bases.iter().enumerate().skip(t) {
                        let mut seen = vec![base[pc]];
                        seen.extend(
                            inflight(t2)
                                .iter()
                                .filter(|w| w.offset == pc)
                                .map(|w| w.byte),
                        );
                        for b in seen {
                            if b != INT3 {
                                push((pc, t2), Some(c), &mut queue); // re-executes the site
                                continue;
                            }
                            match on_trap(t2) {
                                None => raw.push((c, old.clone(), Harm::UnhandledTrap(pc))),
                                Some(r) if r > m.entry && r < m.entry + 2 => {
                                    raw.push((c, old.clone(), Harm::ResumeInside(r)));
                                }
                                Some(r) if r > body => {
                                    raw.push((c, old.clone(), Harm::IntoBody(r as isize)));
                                }
                                Some(r) => push((r, t2), Some(c), &mut queue),
                            }
                        }
                    }
                }
            }
        }
    }
    // The final state does not change any more: no path may loop there.
    for (&c @ (pc, t), _) in parent.iter().filter(|(c, _)| c.1 == n) {
        if let Err(h) = execute(&area(&bases[t]), pc, on_trap(t)) {
            raw.push((c, Vec::new(), h));
        }
    }
    let mut dedup = HashSet::new();
    for (c, old, harm) in raw {
        if !dedup.insert((c, old.clone(), harm)) {
            continue;
        }
        let mut trace = vec![c];
        while let Some(Some(p)) = parent.get(trace.last().unwrap()) {
            trace.push(*p);
        }
        trace.reverse();
        report.findings.push(Finding {
            model: m.name.clone(),
            phase: c.1,
            steps: n,
            old,
            pc: c.0,
            harm,
            trace,
            func: m.func,
        });
    }
    report
        .findings
        .sort_by_key(|f| (f.phase, f.pc, f.trace.len()));
    report
}

fn shapes() -> Vec<EntryShape> {
    let mut v = Vec::new();
    for convention in [Convention::Pfe16_14, Convention::Pfe18_16] {
        for endbr in [false, true] {
            for nop in [EntryNop::OneByte, EntryNop::TwoByte] {
                v.push(EntryShape {
                    convention,
                    endbr,
                    nop,
                });
            }
        }
    }
    v
}

fn protocols(s: EntryShape) -> Vec<Protocol> {
    match s.nop {
        EntryNop::OneByte => vec![Protocol::ByteWise],
        EntryNop::TwoByte => vec![Protocol::ByteWise, Protocol::Int3],
    }
}

/// What `prepare_step` is given for `s`, and the outside slots.
fn target(s: EntryShape) -> (u64, Vec<(u64, u64)>) {
    match s.slot() {
        Some(_) => (STUB, Vec::new()),
        None => (SLOT_B, vec![(SLOT_B, STUB)]),
    }
}

fn apply(image: &[u8], steps: &[Step]) -> Vec<u8> {
    let mut v = image.to_vec();
    steps
        .iter()
        .flat_map(|s| &s.writes)
        .for_each(|w| v[w.offset] = w.byte);
    v
}

/// The instruction boundaries a call passes through in an area that does not change.
fn run(s: EntryShape, slots: &[(u64, u64)], image: &[u8]) -> (Path, Vec<usize>) {
    let area = Area {
        bytes: image,
        data: s.slot().unwrap_or(0..0),
        base: BASE,
        stub: STUB,
        slots,
    };
    let r = execute(&area, s.func(), None).unwrap();
    (r.path, r.boundaries)
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Arm,
    Disarm,
    /// Prepare, arm, disarm, arm, disarm, from the compiler's bytes.
    Life,
}

fn model(s: EntryShape, p: Protocol, op: Op) -> Model {
    let (tgt, slots) = target(s);
    let prepare = prepare_step(s, p, BASE, tgt).unwrap();
    let (arm, disarm) = (arm_steps(s, p).unwrap(), disarm_steps(s, p).unwrap());
    let pristine = s.pristine();
    let prepared = apply(&pristine, std::slice::from_ref(&prepare));
    let armed = apply(&prepared, &arm);
    let mut history: Vec<usize> = [&pristine, &prepared, &armed]
        .into_iter()
        .flat_map(|img| run(s, &slots, img).1)
        .collect();
    history.sort_unstable();
    history.dedup();
    let (image, steps, parked) = match op {
        Op::Arm => (prepared, arm, history),
        Op::Disarm => (armed, disarm, history),
        Op::Life => {
            let mut steps = vec![prepare];
            for _ in 0..2 {
                steps.extend(arm.iter().cloned());
                steps.extend(disarm.iter().cloned());
            }
            let parked = run(s, &slots, &pristine).1;
            (pristine, steps, parked)
        }
    };
    Model {
        name: format!("{p:?} {op:?} {s:?}"),
        image,
        data: s.slot().unwrap_or(0..0),
        slots,
        func: s.func(),
        entry: s.entry(),
        steps,
        parked,
    }
}

fn all_safe(op: Op) {
    let (mut models, mut configs, mut states) = (0, 0, 0);
    for s in shapes() {
        for p in protocols(s) {
            let m = model(s, p, op);
            let r = check(&m);
            let first: Vec<String> = r.findings.iter().take(5).map(|f| f.to_string()).collect();
            assert!(r.findings.is_empty(), "{}", first.join("\n"));
            eprintln!(
                "{}: {} steps, {} (pc, phase), {} (pc, phase, view)",
                m.name,
                m.steps.len(),
                r.configs,
                r.states
            );
            (models, configs, states) = (models + 1, configs + r.configs, states + r.states);
        }
    }
    eprintln!("{op:?}: {models} models, {configs} (pc, phase), {states} (pc, phase, view)");
}

#[test]
fn arm_is_safe_for_every_protocol_and_layout() {
    all_safe(Op::Arm);
}

#[test]
fn disarm_is_safe_for_every_protocol_and_layout() {
    all_safe(Op::Disarm);
}

#[test]
fn arm_then_disarm_twice_from_the_compilers_bytes_is_safe() {
    all_safe(Op::Life);
}

#[test]
fn layouts_reach_the_stub_when_armed_and_the_body_when_not() {
    for s in shapes() {
        assert!(HARMLESS.contains(&s.displacement()), "{s:?}");
        for p in protocols(s) {
            let (tgt, slots) = target(s);
            let prepared = apply(&s.pristine(), &[prepare_step(s, p, BASE, tgt).unwrap()]);
            assert_eq!(prepared[s.entry()..], s.disarmed_entry(p));
            let armed = apply(&prepared, &arm_steps(s, p).unwrap());
            assert_eq!(armed[s.entry()..], s.armed_entry());
            assert_eq!(run(s, &slots, &armed).0, Path::New, "{s:?} {p:?}");
            assert_eq!(run(s, &slots, &prepared).0, Path::Old, "{s:?} {p:?}");
            let disarmed = apply(&armed, &disarm_steps(s, p).unwrap());
            assert_eq!(disarmed, prepared, "{s:?} {p:?}");
        }
    }
}

#[test]
fn int3_is_refused_on_one_byte_nops() {
    for s in shapes().into_iter().filter(|s| s.nop == EntryNop::OneByte) {
        assert_eq!(
            arm_steps(s, Protocol::Int3),
            Err(Refusal::Int3OnOneByteNops)
        );
        assert_eq!(
            disarm_steps(s, Protocol::Int3),
            Err(Refusal::Int3OnOneByteNops)
        );
        let r = prepare_step(s, Protocol::Int3, BASE, STUB);
        assert_eq!(r, Err(Refusal::Int3OnOneByteNops));
    }
}

#[test]
fn layout_b_slot_must_be_near_and_aligned() {
    let s = EntryShape {
        convention: Convention::Pfe16_14,
        endbr: true,
        nop: EntryNop::OneByte,
    };
    let far = BASE + (3 << 30);
    assert!(matches!(
        s.prepared_prefix(BASE, far),
        Err(Refusal::SlotOutOfReach { .. })
    ));
    assert_eq!(
        s.prepared_prefix(BASE, SLOT_B + 4),
        Err(Refusal::SlotMisaligned(SLOT_B + 4))
    );
}

// ---- negative controls: the same checker must find these unsafe ----

fn findings(m: &Model) -> Vec<Finding> {
    let f = check(m).findings;
    for x in f.iter().take(3) {
        eprintln!("{x}");
    }
    f
}

/// GCC, layout A.
fn gcc_a() -> EntryShape {
    EntryShape {
        convention: Convention::Pfe16_14,
        endbr: false,
        nop: EntryNop::OneByte,
    }
}

fn steps(writes: &[(usize, u8)], on_trap: Option<usize>) -> Vec<Step> {
    (writes.iter())
        .map(|&(offset, byte)| Step {
            writes: vec![Write { offset, byte }],
            on_trap,
            why: "negative control",
        })
        .collect()
}

/// libpulp's prefix for an area of `len` bytes before the entry: `jmp *0(%rip)` at
/// `jmp`, then the 8-byte target; the entry jumps to `jmp` with displacement `disp`.
fn libpulp(name: &str, prefix: usize, jmp: usize, disp: u8, steps: Vec<Step>) -> Model {
    let mut image = vec![NOP; prefix + 2];
    image[jmp..jmp + 6].copy_from_slice(&[0xFF, 0x25, 0, 0, 0, 0]);
    image[jmp + 6..jmp + 14].copy_from_slice(&STUB.to_le_bytes());
    let area = |bytes| Area {
        bytes,
        data: jmp + 6..jmp + 14,
        base: BASE,
        stub: STUB,
        slots: &[],
    };
    let parked = execute(&area(&image), prefix, None).unwrap().boundaries;
    assert_eq!(
        parked,
        [prefix, prefix + 1],
        "a thread may sit between the NOPs"
    );
    // The armed state itself is fine: only the way there is not.
    let mut armed = image.clone();
    armed[prefix..].copy_from_slice(&[JMP8, disp]);
    let r = execute(&area(&armed), prefix, None).unwrap();
    assert_eq!(r.path, Path::New);
    Model {
        name: name.into(),
        image,
        data: jmp + 6..jmp + 14,
        slots: Vec::new(),
        func: prefix,
        entry: prefix,
        steps,
        parked,
    }
}

#[test]
fn control_a_opcode_byte_first_is_unsafe() {
    let s = gcc_a();
    let (e, mut m) = (s.entry(), model(s, Protocol::ByteWise, Op::Arm));
    m.steps.reverse();
    m.name = "P1 arm, opcode first".into();
    let f = findings(&m);
    // `EB 90`: jump −112 from e+2, far before the area.
    let hit = f.iter().find(|f| f.pc == e && f.phase == 0).expect("found");
    assert_eq!(hit.harm, Harm::Outside(e as isize + 2 - 112));
    assert!(hit.old.is_empty(), "the core sees the new EB: {hit}");
}

#[test]
fn control_b_int3_on_gccs_one_byte_nops_with_f0_is_unsafe() {
    let s = gcc_a();
    let e = s.entry();
    assert!(
        arm_steps(s, Protocol::Int3).is_err(),
        "the engine refuses it"
    );
    let st = steps(&[(e, INT3), (e + 1, 0xF0), (e, JMP8)], Some(0));
    let m = libpulp("P2 arm on 90 90, disp F0", 14, 0, 0xF0, st);
    let f = findings(&m);
    // The thread that ran the first NOP resumes on F0: LOCK on the body's first instruction.
    let hit = f.iter().find(|f| f.pc == e + 1).expect("found");
    assert_eq!(hit.harm, Harm::Lock(e + 1));
    assert_eq!(
        hit.phase, 1,
        "while the tail is written behind the trap: {hit}"
    );
    assert_eq!(
        hit.trace.first(),
        Some(&(e + 1, 0)),
        "parked there from the start"
    );
    assert!(
        f.iter().all(|f| f.pc == e + 1),
        "the trap itself is emulated fine"
    );
}

#[test]
fn control_c_byte_wise_with_f0_or_ec_displacement_is_unsafe() {
    let e = gcc_a().entry();
    let m = libpulp(
        "P1 arm, disp F0",
        14,
        0,
        0xF0,
        steps(&[(e + 1, 0xF0), (e, JMP8)], None),
    );
    let f = findings(&m);
    let hit = f.iter().find(|f| f.pc == e + 1).expect("found");
    assert_eq!((hit.harm, hit.phase), (Harm::Lock(e + 1), 0), "{hit}");
    // libpulp's older 24,22 area: `EB EC` jumps 20 bytes back from e+2.
    let m = libpulp(
        "P1 arm 24,22, disp EC",
        22,
        4,
        0xEC,
        steps(&[(23, 0xEC), (22, JMP8)], None),
    );
    let f = findings(&m);
    let hit = f.iter().find(|f| f.pc == 23).expect("found");
    assert_eq!((hit.harm, hit.phase), (Harm::PortIo(23, 0xEC), 0), "{hit}");
}

#[test]
fn control_d_emulating_a_nop_by_stepping_to_e_plus_1_is_unsafe() {
    let s = EntryShape {
        nop: EntryNop::TwoByte,
        ..gcc_a()
    };
    let e = s.entry();
    let mut m = model(s, Protocol::Int3, Op::Disarm);
    m.steps.iter_mut().for_each(|st| st.on_trap = Some(e + 1));
    m.name = "P2 disarm, NOP emulated as e+1".into();
    let f = findings(&m);
    let hit = f.iter().find(|f| f.pc == e).expect("found");
    assert_eq!(
        (hit.harm, hit.phase),
        (Harm::ResumeInside(e + 1), 0),
        "{hit}"
    );
    assert!(hit.old.is_empty(), "the core fetched the new CC: {hit}");
}

// ---- validation of the bytes found at a site ----

const BODY: [u8; 4] = [0x55, 0x48, 0x89, 0xE5]; // push %rbp; mov %rsp,%rbp

fn site(s: EntryShape) -> Vec<u8> {
    let mut v = s.pristine();
    v.extend_from_slice(&BODY);
    v
}

#[test]
fn validate_recognises_every_shape() {
    for s in shapes() {
        assert_eq!(validate_site(&site(s), s.convention), Ok(s));
        assert!(site(s).len() <= s.convention.read_len());
    }
}

#[test]
fn validate_reports_the_offending_offset() {
    use klp_core::entry::protocol::BadSite;
    let a = gcc_a();
    let b = EntryShape { endbr: true, ..a };
    let c16 = Convention::Pfe16_14;
    let with = |s: EntryShape, k: usize, x: u8| {
        let mut v = site(s);
        v[k] = x;
        validate_site(&v, c16)
    };
    assert_eq!(with(a, 14, INT3), Err(BadSite::Breakpoint { offset: 14 }));
    assert_eq!(with(b, 14, INT3), Err(BadSite::Breakpoint { offset: 14 }));
    assert_eq!(with(a, 16, INT3), Err(BadSite::Breakpoint { offset: 16 }));
    assert!(matches!(
        with(a, 3, 0x00),
        Err(BadSite::Unexpected {
            offset: 3,
            found: 0x00,
            ..
        })
    ));
    assert!(matches!(
        with(b, 16, 0x00),
        Err(BadSite::Unexpected { offset: 16, .. })
    ));
    assert!(matches!(
        with(a, 15, 0xEB),
        Err(BadSite::Unexpected {
            offset: 15,
            found: 0xEB,
            ..
        })
    ));
    assert_eq!(
        validate_site(&site(a)[..15], c16),
        Err(BadSite::TooShort { need: 16, got: 15 })
    );
    // Another N,M: 18,16 read as 16,14 (NOPs go on), 16,14 read as 18,16.
    for endbr in [false, true] {
        let c = EntryShape {
            convention: Convention::Pfe18_16,
            endbr,
            ..a
        };
        let (v, offset) = (site(c), 16);
        let found = v[offset];
        assert_eq!(
            validate_site(&v, c16),
            Err(BadSite::UnknownLayout { offset, found })
        );
    }
    let r = validate_site(&site(a), Convention::Pfe18_16);
    assert!(matches!(r, Err(BadSite::Unexpected { offset: 16, .. })));
    let r = validate_site(&site(b), Convention::Pfe18_16);
    assert!(matches!(
        r,
        Err(BadSite::Unexpected {
            offset: 14,
            found: 0xF3,
            ..
        })
    ));
}
