//! How the entry bytes of a site are rewritten while other threads run them, as data the
//! engine applies and a tiny decoder that lets tests prove every intermediate state safe.
//!
//! # The patch area
//!
//! `-fpatchable-function-entry=N,M` puts M bytes of NOPs *before* a function's label (the
//! *prefix*) and N−M bytes of NOPs at the label (the *entry*), after `endbr64` when the
//! function has one. GCC spells every unit as a one-byte `90`; Clang spells the two entry
//! bytes as one instruction, `66 90`. All offsets here are **area offsets**: 0 is the first
//! prefix byte (the address the compiler records in `__patchable_function_entries`), `f = M`
//! is the label, `e` the entry (`f`, or `f+4` after `endbr64`), and `e+2` the *body*, the
//! first instruction the compiler wrote, where the old path continues.
//!
//! | [`Layout`] | flags | prefix once prepared | armed entry |
//! |---|---|---|---|
//! | A | 16,14 | `f-14..f-7`: 8-byte slot = stub address; `f-6..f-1`: `jmp *-14(%rip)` | `EB F8` (CLC) → `f-6` |
//! | B | 16,14 + `endbr64` | `f-14..f-9`: `jmp *disp32(%rip)` to a slot in a libklp data page; `f-5..f-4`: `EB F5` → `f-14` | `EB F5` (CMC) at `f+4` → `f-5` |
//! | C | 18,16 | `f-16..f-9`: slot; `f-8..f-3`: `jmp *-14(%rip)`; `f-2..f-1`: `EB F8` → `f-8` | `EB FC` (CLD) at `f`, or `EB F8` at `f+4` → `f-2` |
//!
//! The displacement of every entry jump is chosen so that its byte, executed on its own, is
//! one of the [`HARMLESS`] one-byte instructions: that is what makes P1 possible.
//!
//! # The protocols
//!
//! Every [`Step`] is a set of byte writes followed by one `membarrier(SYNC_CORE)`; the engine
//! applies a step to all sites of a batch, then syncs once. Bytes written before a sync are
//! seen new by every core; bytes written since the last sync may be seen old or new, each
//! byte on its own.
//!
//! * [`Protocol::ByteWise`] (P1, trap-free): the entry stays two one-byte instructions and
//!   every write changes one byte that begins an instruction. Arm: displacement, sync,
//!   opcode, sync. Disarm: opcode back to `90`, sync, displacement back to `90`, sync.
//!   Clang's `66 90` is first split into `90 90` by [`prepare_step`].
//! * [`Protocol::Int3`] (P2, the kernel's int3 protocol): `CC` over the first byte, sync,
//!   tail, sync, new first byte, sync; a thread that hits the `CC` is resumed by the SIGTRAP
//!   handler as if the instruction being installed had run whole ([`Step::on_trap`]). Only
//!   for an entry that is *one* instruction (`66 90`); refused on GCC's `90 90`.
//!
//! The prefix is written once, by [`prepare_step`], before the site is first armed, and never
//! again: a thread preempted between the entry jump and the prefix jump may resume there at
//! any later time.
//!
//! # What P1 rests on
//!
//! P1 assumes that a core fetching instructions while another core stores **one byte** sees
//! that byte either wholly old or wholly new, for any byte value. Linux relies on exactly this
//! for its `int3` byte, for which Intel gave assurance; the manuals document only the fully
//! synchronised cross-modifying-code sequence. Multi-threaded churn runs found no violation,
//! but the assumption is per CPU family, which is why P2 stays available as an option. It
//! also assumes that `membarrier(SYNC_CORE)` leaves no core running instructions it fetched
//! before the sync. The state model below checks every outcome these assumptions allow; it
//! cannot check the assumptions themselves (that is the churn tests' job, per CPU family).
//!
//! # Checking
//!
//! [`decode`] knows exactly the opcodes the protocols use; [`step`] and [`execute`] follow a
//! thread from a PC until it reaches the body ([`Path::Old`]), the stub ([`Path::New`]), or
//! does something harmful ([`Harm`]). The exhaustive state model built on them enumerates
//! every step boundary, every subset of in-flight bytes and every PC a thread can be at
//! (`klp-core/tests/entry_protocol.rs`).

use std::ops::Range;

/// `nop`.
pub const NOP: u8 = 0x90;
/// `int3`, the trap P2 plants (and a debugger's breakpoint).
pub const INT3: u8 = 0xCC;
/// `jmp rel8`.
pub const JMP8: u8 = 0xEB;
/// The operand-size prefix of Clang's two-byte NOP `66 90`.
pub const OPSIZE: u8 = 0x66;
/// `endbr64`.
pub const ENDBR64: [u8; 4] = [0xF3, 0x0F, 0x1E, 0xFA];
/// The one-byte instructions a thread may run at `e+1` on its own and still reach the body
/// unharmed: `nop`, CMC and CLC (only CF changes, and flags are dead at a call boundary), CLD
/// (the ABI requires DF clear at every call anyway). `F0` (LOCK), `F4` (HLT), `EC`..`EF`
/// (port I/O), `98`/`99` (they change RAX/RDX, which hold arguments) and `FD` (STD) are not.
pub const HARMLESS: [u8; 4] = [NOP, 0xF5, 0xF8, 0xFC];

/// Length of the inline slot of layouts A and C.
const SLOT_LEN: usize = 8;
/// Length of `jmp *disp32(%rip)` (`FF 25 disp32`).
const JMP_IND_LEN: usize = 6;

/// The `-fpatchable-function-entry=N,M` conventions libklp knows (the section does not record
/// N and M; the engine fixes them by convention and validates every site's bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Convention {
    /// `=16,14`: libpulp's and SUSE's choice, layouts A and B.
    Pfe16_14,
    /// `=18,16`: layout C, whose prefix alone holds slot, jump and bounce, with or without
    /// `endbr64`.
    Pfe18_16,
}

impl Convention {
    /// M, the prefix length.
    pub const fn prefix_len(self) -> usize {
        match self {
            Self::Pfe16_14 => 14,
            Self::Pfe18_16 => 16,
        }
    }

    /// How many bytes, from the recorded address, [`validate_site`] may read: prefix,
    /// `endbr64`, entry, and 4 bytes of the body (to catch a site built with another N,M).
    pub const fn read_len(self) -> usize {
        self.prefix_len() + ENDBR64.len() + 2 + 4
    }
}

/// How the compiler spelled the two entry bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryNop {
    /// `90 90`, two instructions (GCC): a thread may be parked between them, at `e+1`.
    OneByte,
    /// `66 90`, one instruction (Clang, or libpulp's `ulp post`).
    TwoByte,
}

/// What the prefix holds once prepared (see the module's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// 16,14 without `endbr64`: inline slot + `jmp *-14(%rip)`; entry `EB F8`.
    A,
    /// 16,14 with `endbr64`: `jmp *disp32(%rip)` to an outside slot + bounce `EB F5`; entry
    /// `EB F5`.
    B,
    /// 18,16: inline slot + `jmp *-14(%rip)` + bounce `EB F8`; entry `EB FC` or `EB F8`.
    C,
}

/// The protocols that arm and disarm a site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// P1: trap-free, one byte per step, every state decodes (the default).
    ByteWise,
    /// P2: the kernel's int3 protocol, for entries that are one instruction.
    Int3,
}

/// One site's shape, as [`validate_site`] found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EntryShape {
    /// The N,M convention the site was validated against.
    pub convention: Convention,
    /// `endbr64` at the label (entry at `f+4`).
    pub endbr: bool,
    /// How the entry NOPs are spelled.
    pub nop: EntryNop,
}

impl EntryShape {
    /// The prefix layout this shape uses.
    pub const fn layout(self) -> Layout {
        match (self.convention, self.endbr) {
            (Convention::Pfe16_14, false) => Layout::A,
            (Convention::Pfe16_14, true) => Layout::B,
            (Convention::Pfe18_16, _) => Layout::C,
        }
    }

    /// Area offset of the label `f`.
    pub const fn func(self) -> usize {
        self.convention.prefix_len()
    }

    /// Area offset of the entry `e`.
    pub const fn entry(self) -> usize {
        self.func() + if self.endbr { ENDBR64.len() } else { 0 }
    }

    /// Area offset of the body (`e+2`), which is also the area's length.
    pub const fn body(self) -> usize {
        self.entry() + 2
    }

    /// Where the armed entry jump lands: the prefix jump (A) or a bounce (B, C).
    pub const fn jump_target(self) -> usize {
        match self.layout() {
            Layout::A => SLOT_LEN,
            Layout::B => JMP_IND_LEN + 3,
            Layout::C => SLOT_LEN + JMP_IND_LEN,
        }
    }

    /// The armed entry's displacement byte: always one of [`HARMLESS`].
    pub const fn displacement(self) -> u8 {
        rel8(self.body(), self.jump_target())
    }

    /// The inline 8-byte slot (A, C), or `None` when the slot lives outside (B).
    pub const fn slot(self) -> Option<Range<usize>> {
        match self.layout() {
            Layout::A | Layout::C => Some(0..SLOT_LEN),
            Layout::B => None,
        }
    }

    /// The entry as the compiler wrote it.
    pub const fn original_entry(self) -> [u8; 2] {
        match self.nop {
            EntryNop::OneByte => [NOP, NOP],
            EntryNop::TwoByte => [OPSIZE, NOP],
        }
    }

    /// The entry of a prepared site that is not armed: P1 splits `66 90` into `90 90`.
    pub const fn disarmed_entry(self, protocol: Protocol) -> [u8; 2] {
        match protocol {
            Protocol::ByteWise => [NOP, NOP],
            Protocol::Int3 => self.original_entry(),
        }
    }

    /// The entry of an armed site.
    pub const fn armed_entry(self) -> [u8; 2] {
        [JMP8, self.displacement()]
    }

    /// The whole area as the compiler emitted it.
    pub fn pristine(self) -> Vec<u8> {
        let mut a = vec![NOP; self.func()];
        if self.endbr {
            a.extend_from_slice(&ENDBR64);
        }
        a.extend_from_slice(&self.original_entry());
        a
    }

    /// The prefix once prepared, for the area at address `area`. `target` is the address of
    /// the site's stub (A, C: stored in the inline slot), or of the 8-byte slot that holds it
    /// (B: 8-aligned, within ±2 GiB of the prefix jump).
    pub fn prepared_prefix(self, area: u64, target: u64) -> Result<Vec<u8>, Refusal> {
        let mut p = vec![NOP; self.func()];
        let put_jmp_ind = |p: &mut [u8], at: usize, disp: i32| {
            p[at] = 0xFF;
            p[at + 1] = 0x25;
            p[at + 2..at + JMP_IND_LEN].copy_from_slice(&disp.to_le_bytes());
        };
        match self.layout() {
            Layout::A | Layout::C => {
                // The slot sits at 0 and the jump ends at 14: displacement −14.
                p[..SLOT_LEN].copy_from_slice(&target.to_le_bytes());
                put_jmp_ind(&mut p, SLOT_LEN, -((SLOT_LEN + JMP_IND_LEN) as i32));
                if self.layout() == Layout::C {
                    let b = SLOT_LEN + JMP_IND_LEN;
                    p[b] = JMP8;
                    p[b + 1] = rel8(b + 2, SLOT_LEN);
                }
            }
            Layout::B => {
                let from = area.wrapping_add(JMP_IND_LEN as u64);
                let disp = i32::try_from(i128::from(target) - i128::from(from))
                    .map_err(|_| Refusal::SlotOutOfReach { slot: target, from })?;
                if !target.is_multiple_of(8) {
                    return Err(Refusal::SlotMisaligned(target));
                }
                put_jmp_ind(&mut p, 0, disp);
                let b = self.jump_target();
                p[b] = JMP8;
                p[b + 1] = rel8(b + 2, 0);
            }
        }
        Ok(p)
    }
}

/// The rel8 byte of a short jump whose next instruction is at `next`, landing on `to`.
const fn rel8(next: usize, to: usize) -> u8 {
    (to as isize - next as isize) as i8 as u8
}

/// One byte store at an area offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Write {
    /// Area offset.
    pub offset: usize,
    /// The byte stored.
    pub byte: u8,
}

/// A set of writes followed by one `membarrier(SYNC_CORE)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The writes, in any order: until the sync each may be seen old or new, independently.
    pub writes: Vec<Write>,
    /// P2: while this step's bytes may be in flight, a thread that traps on the `CC` at `e`
    /// (and still finds it there) resumes at this area offset, the instruction being
    /// installed emulated whole. `None`: the protocol plants no trap.
    pub on_trap: Option<usize>,
    /// Why this step comes here, for logs and for readers.
    pub why: &'static str,
}

/// Why a protocol cannot be applied to a site.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// P2 on GCC's `90 90`.
    #[error(
        "the int3 protocol replaces one instruction, and this entry is two one-byte NOPs: a \
         thread preempted between them resumes on the new second byte with no trap to catch \
         it; use the byte-wise protocol"
    )]
    Int3OnOneByteNops,
    /// Layout B: the slot is farther than a `disp32` reaches.
    #[error("slot at {slot:#x} is out of reach (±2 GiB) of the prefix jump ending at {from:#x}")]
    SlotOutOfReach {
        /// The slot's address.
        slot: u64,
        /// The address after the prefix jump.
        from: u64,
    },
    /// Layout B: the slot could not be retargeted with one aligned store.
    #[error("slot at {0:#x} is not 8-byte aligned")]
    SlotMisaligned(u64),
}

fn writes(w: &[(usize, u8)]) -> Vec<Write> {
    w.iter()
        .map(|&(offset, byte)| Write { offset, byte })
        .collect()
}

/// The step that prepares a site: the prefix (only the bytes that change) and, for P1 on a
/// `66 90` entry, `90` over the `66`. Apply it once, before the site is first armed, while
/// nothing can reach the prefix; never again afterwards (a thread may sit in the prefix for
/// any length of time once the site has been armed). See [`EntryShape::prepared_prefix`] for
/// `area` and `target`.
pub fn prepare_step(
    shape: EntryShape,
    protocol: Protocol,
    area: u64,
    target: u64,
) -> Result<Step, Refusal> {
    applicable(shape, protocol)?;
    let prefix = shape.prepared_prefix(area, target)?;
    let mut w: Vec<Write> = (prefix.iter().enumerate())
        .filter(|&(_, &b)| b != NOP)
        .map(|(offset, &byte)| Write { offset, byte })
        .collect();
    if protocol == Protocol::ByteWise && shape.nop == EntryNop::TwoByte {
        w.push(Write {
            offset: shape.entry(),
            byte: NOP,
        });
    }
    Ok(Step {
        writes: w,
        on_trap: None,
        why: "fill the prefix while nothing can reach it; for P1, split `66 90` into two \
              one-byte NOPs (a core sees one NOP or the other)",
    })
}

fn applicable(shape: EntryShape, protocol: Protocol) -> Result<(), Refusal> {
    match (protocol, shape.nop) {
        (Protocol::Int3, EntryNop::OneByte) => Err(Refusal::Int3OnOneByteNops),
        _ => Ok(()),
    }
}

/// The steps that arm a site prepared by [`prepare_step`] with the same protocol (its entry
/// is [`EntryShape::disarmed_entry`]): afterwards every new call takes the new path.
pub fn arm_steps(shape: EntryShape, protocol: Protocol) -> Result<Vec<Step>, Refusal> {
    applicable(shape, protocol)?;
    let (e, d) = (shape.entry(), shape.displacement());
    Ok(match protocol {
        Protocol::ByteWise => vec![
            Step {
                writes: writes(&[(e + 1, d)]),
                on_trap: None,
                why: "displacement first: a thread parked at e+1 now runs it as a harmless \
                      one-byte instruction, and after the sync no core can see the jump \
                      opcode without it",
            },
            Step {
                writes: writes(&[(e, JMP8)]),
                on_trap: None,
                why: "opcode: a core fetching at e sees the old NOP (then the harmless byte) or \
                      the whole jump; after the sync every new call takes the new path",
            },
        ],
        Protocol::Int3 => {
            let on_trap = Some(shape.jump_target());
            vec![
                Step {
                    writes: writes(&[(e, INT3)]),
                    on_trap,
                    why: "trap over the first byte of the one instruction: a core runs the old \
                          NOP whole or traps, and the handler emulates the new jump",
                },
                Step {
                    writes: writes(&[(e + 1, d)]),
                    on_trap,
                    why: "tail behind the trap: nobody can be inside the instruction, and a \
                          fetch at e traps",
                },
                Step {
                    writes: writes(&[(e, JMP8)]),
                    on_trap,
                    why: "new first byte: the jump is whole; a late handler re-executes it",
                },
            ]
        }
    })
}

/// The steps that disarm an armed site: afterwards every new call runs the body. The prefix
/// is left as it is.
pub fn disarm_steps(shape: EntryShape, protocol: Protocol) -> Result<Vec<Step>, Refusal> {
    applicable(shape, protocol)?;
    let e = shape.entry();
    Ok(match protocol {
        Protocol::ByteWise => vec![
            Step {
                writes: writes(&[(e, NOP)]),
                on_trap: None,
                why: "opcode back to a NOP: the tail is still the harmless byte, so both \
                      readings reach a path; after the sync no new call takes the new path",
            },
            Step {
                writes: writes(&[(e + 1, NOP)]),
                on_trap: None,
                why: "second NOP back: at e+1 a core runs the harmless byte or the NOP",
            },
        ],
        Protocol::Int3 => {
            let on_trap = Some(shape.body());
            let [first, tail] = shape.original_entry();
            vec![
                Step {
                    writes: writes(&[(e, INT3)]),
                    on_trap,
                    why: "trap over the jump's opcode: the handler emulates the NOP being \
                          installed by resuming at its end, e+2, never inside it",
                },
                Step {
                    writes: writes(&[(e + 1, tail)]),
                    on_trap,
                    why: "tail behind the trap",
                },
                Step {
                    writes: writes(&[(e, first)]),
                    on_trap,
                    why: "new first byte: the NOP is whole",
                },
            ]
        }
    })
}

/// Why the bytes at a recorded site are not a patch area libklp can use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadSite {
    /// Fewer bytes than the check needs.
    #[error("{got} bytes read, {need} needed")]
    TooShort {
        /// Bytes needed so far.
        need: usize,
        /// Bytes given.
        got: usize,
    },
    /// A debugger's breakpoint where a NOP (or `endbr64`, or the body) was expected.
    #[error("breakpoint (0xcc) at offset {offset}: a debugger owns this site")]
    Breakpoint {
        /// Area offset.
        offset: usize,
    },
    /// A byte that is not what the convention emits.
    #[error("unexpected byte {found:#04x} at offset {offset}, expected {expected}")]
    Unexpected {
        /// Area offset.
        offset: usize,
        /// The byte found.
        found: u8,
        /// What was expected there.
        expected: &'static str,
    },
    /// NOPs or `endbr64` continue after the entry: built with another N,M.
    #[error("the entry is followed by {found:#04x} at offset {offset}: not the N,M convention")]
    UnknownLayout {
        /// Area offset.
        offset: usize,
        /// The byte found.
        found: u8,
    },
}

/// Validates the bytes read at a recorded site (from the recorded address, at least
/// [`Convention::read_len`] bytes, fewer may do) against `convention`: M × `90`, optionally
/// `endbr64`, then `90 90` or `66 90`, and no NOP or `endbr64` right after. Returns the shape,
/// or the first offset that disagrees. Called by discovery on bytes read from memory.
pub fn validate_site(bytes: &[u8], convention: Convention) -> Result<EntryShape, BadSite> {
    let at = |k: usize| {
        bytes.get(k).copied().ok_or(BadSite::TooShort {
            need: k + 1,
            got: bytes.len(),
        })
    };
    let expect = |k: usize, want: u8, expected: &'static str| match at(k)? {
        b if b == want => Ok(()),
        INT3 => Err(BadSite::Breakpoint { offset: k }),
        found => Err(BadSite::Unexpected {
            offset: k,
            found,
            expected,
        }),
    };
    let f = convention.prefix_len();
    for k in 0..f {
        expect(k, NOP, "a one-byte NOP of the prefix")?;
    }
    let endbr = at(f)? == ENDBR64[0];
    if endbr {
        for (i, &b) in ENDBR64.iter().enumerate() {
            expect(f + i, b, "endbr64")?;
        }
    }
    let e = f + if endbr { ENDBR64.len() } else { 0 };
    let nop = match at(e)? {
        NOP => EntryNop::OneByte,
        OPSIZE => EntryNop::TwoByte,
        INT3 => return Err(BadSite::Breakpoint { offset: e }),
        found => {
            return Err(BadSite::Unexpected {
                offset: e,
                found,
                expected: "an entry NOP, 90 or 66 90",
            });
        }
    };
    expect(e + 1, NOP, "the entry's second byte, 90")?;
    let b = e + 2;
    let more = match at(b)? {
        INT3 => return Err(BadSite::Breakpoint { offset: b }),
        NOP => true,
        OPSIZE => at(b + 1)? == NOP,
        x if x == ENDBR64[0] => (1..4).all(|i| at(b + i) == Ok(ENDBR64[i])),
        _ => false,
    };
    if more {
        return Err(BadSite::UnknownLayout {
            offset: b,
            found: bytes[b],
        });
    }
    Ok(EntryShape {
        convention,
        endbr,
        nop,
    })
}

/// A patch area as one core sees it at one moment: what [`decode`] and [`step`] read.
#[derive(Clone, Debug)]
pub struct Area<'a> {
    /// The bytes from the first prefix byte up to the body (exclusive): `bytes.len()` is the
    /// body's offset. Anything at or after it is the body, whose bytes are unknown.
    pub bytes: &'a [u8],
    /// Offsets that hold data (the inline slot): executing them is a crash.
    pub data: Range<usize>,
    /// Address of offset 0, for RIP-relative operands.
    pub base: u64,
    /// Address of the site's stub: reaching it is the new path.
    pub stub: u64,
    /// 8-byte slots outside the area: (address, value).
    pub slots: &'a [(u64, u64)],
}

/// The instructions the decoder knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insn {
    /// `90`, `66 90` or `endbr64` (of this length).
    Nop(usize),
    /// `F5` CMC, `F8` CLC or `FC` CLD: harmless at a call boundary.
    Flags,
    /// `EB rel8`, to this area offset (may be outside the area).
    Jump(isize),
    /// `FF 25 disp32`: through the 8-byte slot at this address.
    JumpIndirect(u64),
    /// `CC`.
    Int3,
}

impl Insn {
    /// Length in bytes.
    pub const fn size(self) -> usize {
        match self {
            Self::Nop(n) => n,
            Self::Flags | Self::Int3 => 1,
            Self::Jump(_) => 2,
            Self::JumpIndirect(_) => JMP_IND_LEN,
        }
    }
}

/// Something a thread must never do on its way through the area (offsets are area offsets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Harm {
    /// Decodes a byte of the slot as an instruction.
    #[error("executes the slot's data at offset {0}")]
    ExecutesData(usize),
    /// `F0`: LOCK prefix on whatever follows (#UD on the body's first instruction).
    #[error("LOCK prefix at offset {0} (#UD on the next instruction)")]
    Lock(usize),
    /// `F4`: privileged.
    #[error("HLT at offset {0} (#GP)")]
    Halt(usize),
    /// `E4`..`E7`, `EC`..`EF`: privileged port I/O.
    #[error("port I/O {1:#04x} at offset {0} (#GP)")]
    PortIo(usize, u8),
    /// `98`/`99`: change RAX/RDX, which carry `%al` for varargs and the third argument.
    #[error("{1:#04x} at offset {0} clobbers an argument register")]
    ClobbersArgs(usize, u8),
    /// Any other byte, or a known opcode with the wrong operand bytes.
    #[error("undecodable {1:#04x} at offset {0}")]
    Unknown(usize, u8),
    /// An instruction that begins in the area and needs bytes of the body.
    #[error("the instruction at offset {0} runs into the body")]
    RunsIntoBody(usize),
    /// A jump before the area (into unknown memory).
    #[error("jumps to offset {0}, before the area")]
    Outside(isize),
    /// A jump or fall-through past the body's first byte (into the middle of the body).
    #[error("lands at offset {0}, inside the body")]
    IntoBody(isize),
    /// `jmp *` through a slot that does not hold the stub.
    #[error("jumps through {0:#x} to {1:#x}, not the stub")]
    BadTarget(u64, u64),
    /// `jmp *` through an address that is no slot.
    #[error("jumps through {0:#x}, which is no slot")]
    NoSlot(u64),
    /// `CC` with no handler that owns it.
    #[error("int3 at offset {0} with no trap handler for it")]
    UnhandledTrap(usize),
    /// A trap emulation resuming inside the instruction being rewritten.
    #[error("trap emulation resumes at offset {0}, inside the range being rewritten")]
    ResumeInside(usize),
    /// Never reaches the body or the stub.
    #[error("loops from offset {0} without reaching the body or the stub")]
    Loops(usize),
}

/// Decodes the instruction at area offset `pc` (inside the area).
pub fn decode(area: &Area<'_>, pc: usize) -> Result<Insn, Harm> {
    let body = area.bytes.len();
    // Byte k of the instruction: body bytes are unknown, slot bytes are data.
    let byte = |k: usize| {
        if pc + k >= body {
            Err(Harm::RunsIntoBody(pc))
        } else if area.data.contains(&(pc + k)) {
            Err(Harm::ExecutesData(pc + k))
        } else {
            Ok(area.bytes[pc + k])
        }
    };
    let op = byte(0)?;
    Ok(match op {
        NOP => Insn::Nop(1),
        0xF5 | 0xF8 | 0xFC => Insn::Flags,
        INT3 => Insn::Int3,
        OPSIZE if byte(1)? == NOP => Insn::Nop(2),
        JMP8 => Insn::Jump((pc + 2) as isize + isize::from(byte(1)? as i8)),
        0xFF if byte(1)? == 0x25 => {
            let mut d = [0; 4];
            for (i, b) in d.iter_mut().enumerate() {
                *b = byte(2 + i)?;
            }
            let next = area.base.wrapping_add((pc + JMP_IND_LEN) as u64);
            Insn::JumpIndirect(next.wrapping_add_signed(i64::from(i32::from_le_bytes(d))))
        }
        0xF3 if (1..4).all(|i| byte(i) == Ok(ENDBR64[i])) => Insn::Nop(ENDBR64.len()),
        0xF0 => return Err(Harm::Lock(pc)),
        0xF4 => return Err(Harm::Halt(pc)),
        0xE4..=0xE7 | 0xEC..=0xEF => return Err(Harm::PortIo(pc, op)),
        0x98 | 0x99 => return Err(Harm::ClobbersArgs(pc, op)),
        _ => return Err(Harm::Unknown(pc, op)),
    })
}

/// Where one instruction took a thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// To this area offset, still before the body.
    At(usize),
    /// To the body: the end of the path.
    Old,
    /// To the stub: the end of the path.
    New,
    /// Into the SIGTRAP handler, from the `CC` at the current PC.
    Trap,
}

/// The end of a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Took the old path: reached the body.
    Old,
    /// Took the new path: reached the stub.
    New,
}

/// Executes one instruction at `pc` (inside the area).
pub fn step(area: &Area<'_>, pc: usize) -> Result<Next, Harm> {
    match decode(area, pc)? {
        Insn::Int3 => Ok(Next::Trap),
        Insn::Jump(to) => land(area, to),
        Insn::JumpIndirect(slot) => {
            let off = slot.wrapping_sub(area.base) as usize;
            let value = if let Some(b) = area.bytes.get(off..off.wrapping_add(SLOT_LEN)) {
                u64::from_le_bytes(b.try_into().expect("8 bytes"))
            } else if let Some(&(_, v)) = area.slots.iter().find(|s| s.0 == slot) {
                v
            } else {
                return Err(Harm::NoSlot(slot));
            };
            if value == area.stub {
                Ok(Next::New)
            } else {
                Err(Harm::BadTarget(slot, value))
            }
        }
        i => land(area, (pc + i.size()) as isize),
    }
}

/// Where a thread that moves to area offset `to` is: still in the area, or at the body.
fn land(area: &Area<'_>, to: isize) -> Result<Next, Harm> {
    let body = area.bytes.len() as isize;
    match to {
        t if t < 0 => Err(Harm::Outside(t)),
        t if t == body => Ok(Next::Old),
        t if t > body => Err(Harm::IntoBody(t)),
        t => Ok(Next::At(t as usize)),
    }
}

/// A path followed to its end, with the instruction boundaries it went through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// Where it ended.
    pub path: Path,
    /// The PCs it executed an instruction at, in order: where a thread may be preempted.
    pub boundaries: Vec<usize>,
}

/// Follows a thread from `pc` through an area that does not change. A `CC` resumes at
/// `on_trap` (the SIGTRAP handler's emulation), or is harm when there is no handler.
pub fn execute(area: &Area<'_>, mut pc: usize, on_trap: Option<usize>) -> Result<Run, Harm> {
    let mut boundaries = Vec::new();
    let path = loop {
        if boundaries.contains(&pc) {
            return Err(Harm::Loops(pc));
        }
        boundaries.push(pc);
        let next = match step(area, pc)? {
            Next::Trap => land(area, on_trap.ok_or(Harm::UnhandledTrap(pc))? as isize)?,
            n => n,
        };
        match next {
            Next::At(p) => pc = p,
            Next::New => break Path::New,
            // `land` never answers `Trap`.
            Next::Old | Next::Trap => break Path::Old,
        }
    };
    Ok(Run { path, boundaries })
}
