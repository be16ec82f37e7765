//! Entry sites: functions nobody annotated, patched at their entry (the kernel's ftrace
//! way), in programs built with `-fpatchable-function-entry=16,14`.
//!
//! * [`discover`]: the sites of every loaded object, found at run time from its
//!   `__patchable_function_entries` section and its symbols, each one's bytes validated.
//! * [`protocol`]: how the entry bytes are rewritten while other threads run them, and
//!   the exhaustive state model that proves every intermediate state decodes safely.
//! * [`text`]: the writer of code (`/proc/self/mem`) and the serialization of the cores
//!   (`membarrier(SYNC_CORE)`), never `mprotect`.

pub mod discover;
mod elf;
pub mod protocol;
pub mod text;
#[cfg(target_arch = "x86_64")]
pub mod trampoline;
