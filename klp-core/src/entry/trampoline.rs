//! The way from an armed entry into the handler and out again (x86_64).
//!
//! ```text
//! caller: call f ──> f: jmp short (prefix) ──> jmp *slot ──> stub i: mov $i,%r11d
//!                                                               jmp *common(%rip)
//! common: save the argument registers (rdi rsi rdx rcx r8 r9, rax for varargs, r10 for
//!         the static chain, vector 0-7 at the width the CPU has), call
//!         handler(i, frame) -> where to continue, restore, jmp *%r11
//! ```
//!
//! Nothing is generated at run time: the stubs are a static pool in our own text and the
//! common part comes in three widths (xmm, ymm, zmm), chosen once from CPUID. The stack
//! at the handler's call is the function's entry stack plus the saved registers: no
//! return address is added or changed, so a shadow stack stays balanced and unwinders see
//! the trampoline as a function called by f's caller (which, before f runs, it is).
//! `r11` is the only register changed on the way to the function, as the ABI allows.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Stubs in the pool: at most this many entry sites can be armed in a process.
pub const STUBS: usize = 4096;
/// Bytes per stub.
pub const STUB_SIZE: usize = 16;

/// The handler the common part calls: `(stub index, address of the return-address slot)`
/// → the address to continue at. It must not unwind.
pub type Handler = extern "C" fn(u32, usize) -> usize;

/// One common part: `name`, moving the vector registers with `mov` at `width` bytes.
#[rustfmt::skip]
macro_rules! common {
    ($name:literal, $mov:literal, $reg:literal, $width:literal) => {
        concat!(
            ".p2align 4\n",
            ".globl ", $name, "\n",
            ".hidden ", $name, "\n",
            $name, ":\n",
            ".cfi_startproc\n",
            "pushq %rbp\n",
            ".cfi_adjust_cfa_offset 8\n",
            ".cfi_rel_offset %rbp, 0\n",
            "movq %rsp, %rbp\n",
            ".cfi_def_cfa_register %rbp\n",
            "pushq %rdi\n pushq %rsi\n pushq %rdx\n pushq %rcx\n",
            "pushq %r8\n pushq %r9\n pushq %rax\n pushq %r10\n",
            // rsp = 0 mod 16 here (8 + 8 + 64); keep a 64-byte alignment for the vectors.
            "andq $-64, %rsp\n",
            "subq $(8 * ", $width, "), %rsp\n",
            $mov, " %", $reg, "0, 0 * ", $width, "(%rsp)\n",
            $mov, " %", $reg, "1, 1 * ", $width, "(%rsp)\n",
            $mov, " %", $reg, "2, 2 * ", $width, "(%rsp)\n",
            $mov, " %", $reg, "3, 3 * ", $width, "(%rsp)\n",
            $mov, " %", $reg, "4, 4 * ", $width, "(%rsp)\n",
            $mov, " %", $reg, "5, 5 * ", $width, "(%rsp)\n",
            $mov, " %", $reg, "6, 6 * ", $width, "(%rsp)\n",
            $mov, " %", $reg, "7, 7 * ", $width, "(%rsp)\n",
            // The stub index: the stub's lea loaded its own address + 7, and stubs are
            // 16 bytes apart.
            "leaq klp_entry_stubs(%rip), %rdi\n",
            "subq %rdi, %r11\n",
            "shrq $4, %r11\n",
            "movl %r11d, %edi\n",
            "leaq 8(%rbp), %rsi\n",
            "callq *klp_entry_handler_ptr(%rip)\n",
            "movq %rax, %r11\n",
            $mov, " 0 * ", $width, "(%rsp), %", $reg, "0\n",
            $mov, " 1 * ", $width, "(%rsp), %", $reg, "1\n",
            $mov, " 2 * ", $width, "(%rsp), %", $reg, "2\n",
            $mov, " 3 * ", $width, "(%rsp), %", $reg, "3\n",
            $mov, " 4 * ", $width, "(%rsp), %", $reg, "4\n",
            $mov, " 5 * ", $width, "(%rsp), %", $reg, "5\n",
            $mov, " 6 * ", $width, "(%rsp), %", $reg, "6\n",
            $mov, " 7 * ", $width, "(%rsp), %", $reg, "7\n",
            "leaq -64(%rbp), %rsp\n",
            "popq %r10\n popq %rax\n popq %r9\n popq %r8\n",
            "popq %rcx\n popq %rdx\n popq %rsi\n popq %rdi\n",
            "popq %rbp\n",
            ".cfi_def_cfa %rsp, 8\n",
            "jmpq *%r11\n",
            ".cfi_endproc\n",
        )
    };
}

std::arch::global_asm!(
    // The pool: every stub is the same two instructions; the common part tells them
    // apart by the address the first one loads (its own end).
    ".pushsection .text.klp_entry,\"ax\",@progbits",
    ".p2align 4",
    ".globl klp_entry_stubs",
    ".hidden klp_entry_stubs",
    "klp_entry_stubs:",
    ".rept {stubs}",
    ".p2align 4",
    "leaq 0(%rip), %r11",
    "jmp *klp_entry_common_ptr(%rip)",
    ".endr",
    ".globl klp_entry_stubs_end",
    ".hidden klp_entry_stubs_end",
    "klp_entry_stubs_end:",
    // The common parts. On entry: rsp -> the caller's return address (rsp = 8 mod 16).
    common!("klp_entry_common_xmm", "movdqu", "xmm", 16),
    common!("klp_entry_common_ymm", "vmovdqu", "ymm", 32),
    common!("klp_entry_common_zmm", "vmovdqu64", "zmm", 64),
    ".popsection",
    // Where the stubs and the common parts jump: ours, hidden (no interposition).
    ".pushsection .data.klp_entry,\"aw\",@progbits",
    ".p2align 3",
    ".globl klp_entry_common_ptr",
    ".hidden klp_entry_common_ptr",
    "klp_entry_common_ptr: .quad 0",
    ".globl klp_entry_handler_ptr",
    ".hidden klp_entry_handler_ptr",
    "klp_entry_handler_ptr: .quad 0",
    ".popsection",
    stubs = const STUBS,
    options(att_syntax)
);

unsafe extern "C" {
    static klp_entry_stubs: u8;
    static klp_entry_stubs_end: u8;
    fn klp_entry_common_xmm();
    fn klp_entry_common_ymm();
    fn klp_entry_common_zmm();
    /// The common part the stubs jump to, chosen by [`init`].
    static klp_entry_common_ptr: AtomicUsize;
    /// The handler the common part calls.
    static klp_entry_handler_ptr: AtomicUsize;
}

/// The vector width the trampoline saves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// SSE: xmm0-7.
    Xmm,
    /// AVX: ymm0-7.
    Ymm,
    /// AVX-512: zmm0-7.
    Zmm,
}

/// Choose the common part for this CPU and install `handler`. Idempotent for one
/// handler; returns the width saved.
pub fn init(handler: Handler) -> Width {
    let (width, common): (Width, unsafe extern "C" fn()) =
        if std::is_x86_feature_detected!("avx512f") {
            (Width::Zmm, klp_entry_common_zmm)
        } else if std::is_x86_feature_detected!("avx") {
            (Width::Ymm, klp_entry_common_ymm)
        } else {
            (Width::Xmm, klp_entry_common_xmm)
        };
    // Release: a stub that reads the pointers (after an armed entry made visible later,
    // with a serializing membarrier) finds both set.
    // SAFETY: two words of our own data, only ever accessed atomically.
    unsafe {
        klp_entry_handler_ptr.store(handler as usize, Ordering::Release);
        klp_entry_common_ptr.store(common as usize, Ordering::Release);
    }
    width
}

/// The address of stub `i`.
pub fn stub(i: usize) -> Option<usize> {
    let (lo, hi) = (
        (&raw const klp_entry_stubs) as usize,
        (&raw const klp_entry_stubs_end) as usize,
    );
    let at = lo + i * STUB_SIZE;
    (i < STUBS && at < hi).then_some(at)
}
