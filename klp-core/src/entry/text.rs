//! Writing code that other threads may be running: the writer and the serialization.
//!
//! * **Writer**: `pwrite` to `/proc/self/mem`, opened once (the kernel writes through
//!   a forced access, so an `r-x` mapping stays `r-x`: no `mprotect`, nothing else on
//!   the page ever faults, and it works under W^X policies). Where the kernel refuses
//!   (`proc_mem.force_override=never`, no `/proc`), [`Text::open`] says so once and
//!   entry sites are unavailable; nothing is written.
//! * **Serialization**: `membarrier(PRIVATE_EXPEDITED_SYNC_CORE)` after each step of a
//!   protocol: every running thread of the process executes a core-serializing
//!   instruction before it returns, and the others do before they next run, so no core
//!   keeps executing bytes it fetched before the step.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_int = 1 << 5;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_int = 1 << 6;

/// Why code cannot be written in this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// `/proc/self/mem` cannot be opened for writing (the errno).
    NoProcMem(i32),
    /// `/proc/self/mem` opened, but the kernel refuses writes to code (the errno).
    WriteRefused(i32),
    /// `membarrier(PRIVATE_EXPEDITED_SYNC_CORE)` is not offered, or refused (the errno,
    /// or 0 when not offered).
    NoSyncCore(i32),
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let err = |e: &i32| std::io::Error::from_raw_os_error(*e);
        match self {
            Unavailable::NoProcMem(e) => {
                write!(
                    f,
                    "entry sites unavailable: cannot open /proc/self/mem ({})",
                    err(e)
                )
            }
            Unavailable::WriteRefused(e) => write!(
                f,
                "entry sites unavailable: /proc/self/mem is not writable ({}; proc_mem.force_override?)",
                err(e)
            ),
            Unavailable::NoSyncCore(0) => f.write_str(
                "entry sites unavailable: membarrier(PRIVATE_EXPEDITED_SYNC_CORE) is not offered",
            ),
            Unavailable::NoSyncCore(e) => write!(
                f,
                "entry sites unavailable: membarrier(PRIVATE_EXPEDITED_SYNC_CORE) refused ({})",
                err(e)
            ),
        }
    }
}

impl std::error::Error for Unavailable {}

/// The writer of code, with its serialization.
#[derive(Debug)]
pub struct Text {
    mem: File,
}

// A byte of our own code that the probe rewrites with its own value.
#[cfg(target_arch = "x86_64")]
std::arch::global_asm!(
    ".pushsection .text.klp_probe,\"ax\",@progbits",
    ".globl klp_text_probe_byte",
    ".hidden klp_text_probe_byte",
    "klp_text_probe_byte:",
    "ret",
    ".popsection",
);

#[cfg(target_arch = "x86_64")]
unsafe extern "C" {
    fn klp_text_probe_byte();
}

fn membarrier(cmd: libc::c_int) -> Result<libc::c_long, i32> {
    // SAFETY: membarrier takes integer arguments and touches no user memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            cmd,
            0 as libc::c_uint,
            0 as libc::c_int,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r)
    }
}

impl Text {
    /// The process's writer, opened and probed on first use.
    pub fn get() -> Result<&'static Text, Unavailable> {
        static TEXT: OnceLock<Result<Text, Unavailable>> = OnceLock::new();
        TEXT.get_or_init(Text::open).as_ref().map_err(Clone::clone)
    }

    /// Open `/proc/self/mem`, register for core serialization, and probe a write of one
    /// byte of our own code with its current value.
    pub fn open() -> Result<Text, Unavailable> {
        let mem = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/proc/self/mem")
            .map_err(|e| Unavailable::NoProcMem(e.raw_os_error().unwrap_or(0)))?;
        let offered = membarrier(MEMBARRIER_CMD_QUERY).map_err(Unavailable::NoSyncCore)?;
        if offered & libc::c_long::from(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE) == 0 {
            return Err(Unavailable::NoSyncCore(0));
        }
        membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE)
            .map_err(Unavailable::NoSyncCore)?;
        let text = Text { mem };
        #[cfg(target_arch = "x86_64")]
        {
            let at = klp_text_probe_byte as *const () as usize;
            // SAFETY: our own code, mapped for the life of the process.
            let byte = unsafe { std::ptr::read_volatile(at as *const u8) };
            text.write(at, &[byte])
                .map_err(|e| Unavailable::WriteRefused(e.raw_os_error().unwrap_or(0)))?;
        }
        Ok(text)
    }

    /// Write `bytes` at `addr` (no serialization: call [`Text::sync_core`] after the
    /// step). The caller owns the bytes being written: the protocol guarantees that every
    /// state a concurrently executing core may see decodes safely.
    pub fn write(&self, addr: usize, bytes: &[u8]) -> std::io::Result<()> {
        let n = self.mem.write_at(bytes, addr as u64)?;
        if n != bytes.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "short write to /proc/self/mem",
            ));
        }
        Ok(())
    }

    /// Read `len` bytes at `addr` through the same file (for mappings that may not be
    /// readable directly).
    pub fn read(&self, addr: usize, len: usize) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.mem.read_exact_at(&mut buf, addr as u64)?;
        Ok(buf)
    }

    /// Serialize every core of the process: no thread keeps executing bytes fetched
    /// before this call.
    pub fn sync_core(&self) {
        // Registered in `open`; the command cannot fail afterwards but for a kernel bug,
        // which must not go unnoticed.
        if let Err(e) = membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE) {
            panic!("membarrier(PRIVATE_EXPEDITED_SYNC_CORE) failed after registration: errno {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_code_without_changing_its_protection() {
        let text = Text::get().expect("this machine allows writing code through /proc/self/mem");
        let at = klp_text_probe_byte as *const () as usize;
        let maps_before = std::fs::read_to_string("/proc/self/maps").unwrap();
        // `ret` -> `ret` through the writer, then run it.
        text.write(at, &[0xc3]).unwrap();
        text.sync_core();
        // SAFETY: the byte is still `ret`.
        unsafe { klp_text_probe_byte() };
        assert_eq!(text.read(at, 1).unwrap(), [0xc3]);
        let line = |maps: &str| {
            maps.lines()
                .find(|l| {
                    let mut r = l.split(' ').next().unwrap().split('-');
                    let lo = usize::from_str_radix(r.next().unwrap(), 16).unwrap();
                    let hi = usize::from_str_radix(r.next().unwrap(), 16).unwrap();
                    (lo..hi).contains(&at)
                })
                .map(|l| l.split(' ').nth(1).unwrap().to_owned())
        };
        let after = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert_eq!(line(&maps_before), line(&after));
        assert_eq!(line(&after).as_deref(), Some("r-xp"), "still r-x");
    }
}
