//! The operating-system layer: the process-wide "heavy" barrier and the memory that slots
//! live in. Everything that talks to the kernel is here, behind [`HeavyBarrier`], so the
//! loom build can model it with a fence.

use crate::sync::{Ordering, fence};

/// How the read side orders its entry store against the data it then reads.
///
/// Chosen once per process, before the first flavor instance exists, and never changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarrierMode {
    /// `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` on the update side; readers use
    /// compiler fences only (no locked instruction, no fence instruction).
    Membarrier,
    /// Readers execute a real `fence(SeqCst)` at entry; updaters a real fence too.
    Fences(FenceReason),
}

/// Why the read side runs with real fences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FenceReason {
    /// The environment variable `KLP_SYNC_FORCE_FENCES=1` asked for it.
    Forced,
    /// The kernel does not offer private expedited membarrier (the errno, or 0 when the
    /// command is missing from the QUERY mask).
    Refused(i32),
    /// This build has no membarrier (not Linux, or the loom model).
    Unsupported,
}

impl std::fmt::Display for BarrierMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BarrierMode::Membarrier => f.write_str("membarrier (private expedited)"),
            BarrierMode::Fences(FenceReason::Forced) => {
                f.write_str("fences (forced by KLP_SYNC_FORCE_FENCES)")
            }
            BarrierMode::Fences(FenceReason::Refused(0)) => {
                f.write_str("fences (membarrier private expedited not offered)")
            }
            BarrierMode::Fences(FenceReason::Refused(e)) => {
                write!(f, "fences (membarrier refused, errno {e})")
            }
            BarrierMode::Fences(FenceReason::Unsupported) => {
                f.write_str("fences (no membarrier on this build)")
            }
        }
    }
}

/// The environment variable that forces the fence fallback.
pub const FORCE_FENCES_ENV: &str = "KLP_SYNC_FORCE_FENCES";

/// The update side's half of the asymmetric barrier.
pub(crate) trait HeavyBarrier {
    /// After this returns, every thread of the process has executed a full memory barrier
    /// at some point between the call and the return (or is itself the caller).
    fn heavy_barrier(&self);
}

#[cfg(not(klp_loom))]
mod imp {
    use super::*;
    use std::sync::atomic::AtomicBool;

    const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
    const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
    const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

    static MODE: crate::fork::RaceCell<BarrierMode> = crate::fork::RaceCell::new();
    /// Read on every read-side entry: `true` when readers must execute a real fence.
    /// Written once inside `init` before any flavor instance exists; a thread can only
    /// enter a read section through an instance it was handed, which orders that write
    /// before its loads.
    pub(crate) static READER_FENCES: AtomicBool = AtomicBool::new(true);

    fn membarrier(cmd: libc::c_int) -> Result<libc::c_long, i32> {
        // SAFETY: membarrier takes three integer arguments and touches no user memory.
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

    fn choose() -> BarrierMode {
        if std::env::var_os(FORCE_FENCES_ENV).is_some_and(|v| v == "1") {
            return BarrierMode::Fences(FenceReason::Forced);
        }
        let mask = match membarrier(MEMBARRIER_CMD_QUERY) {
            Ok(m) => m,
            Err(e) => return BarrierMode::Fences(FenceReason::Refused(e)),
        };
        let need = (MEMBARRIER_CMD_PRIVATE_EXPEDITED | MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED)
            as libc::c_long;
        if mask & need != need {
            return BarrierMode::Fences(FenceReason::Refused(0));
        }
        match membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) {
            Ok(_) => BarrierMode::Membarrier,
            Err(e) => BarrierMode::Fences(FenceReason::Refused(e)),
        }
    }

    /// Decide the barrier mode once for the process (and install the fork handlers).
    /// Every flavor constructor calls it.
    pub(crate) fn init() -> BarrierMode {
        if let Some(m) = MODE.get() {
            return *m;
        }
        crate::fork::ensure_registered();
        *MODE.get_or_create(|| {
            let mode = choose();
            READER_FENCES.store(mode != BarrierMode::Membarrier, Ordering::Relaxed);
            mode
        })
    }

    /// The mode in force, deciding it if nothing has yet.
    pub fn barrier_mode() -> BarrierMode {
        init()
    }

    /// The real heavy barrier of the process.
    pub(crate) struct ProcessBarrier;

    impl HeavyBarrier for ProcessBarrier {
        fn heavy_barrier(&self) {
            match init() {
                BarrierMode::Membarrier => {
                    if let Err(e) = membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) {
                        // Registration succeeded, so the kernel promised this command. Going
                        // on would let readers (which use compiler fences only) race.
                        eprintln!(
                            "klp-sync: membarrier(PRIVATE_EXPEDITED) failed after registration (errno {e})"
                        );
                        std::process::abort();
                    }
                }
                BarrierMode::Fences(_) => fence(Ordering::SeqCst),
            }
        }
    }

    /// The light half, run by readers right after their entry store.
    #[inline(always)]
    pub(crate) fn light_barrier() {
        if READER_FENCES.load(Ordering::Relaxed) {
            fence(Ordering::SeqCst);
        } else {
            crate::sync::compiler_fence();
        }
    }

    /// Blocks every signal of the calling thread for the life of the value (and restores
    /// the mask it found when dropped), so that a signal handler cannot run in the middle
    /// of what it covers: a slot's claim, a lock held by the library, a state change of
    /// the thread that a handler must not see half done. Two system calls.
    pub struct SignalsBlocked(libc::sigset_t);

    impl Default for SignalsBlocked {
        fn default() -> Self {
            Self::new()
        }
    }

    impl std::fmt::Debug for SignalsBlocked {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("SignalsBlocked")
        }
    }

    impl SignalsBlocked {
        /// Block every signal until the value is dropped.
        pub fn new() -> Self {
            // SAFETY: sigset_t is a plain bit set; all-zero is a valid (empty) value that
            // sigfillset and pthread_sigmask overwrite.
            let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
            // SAFETY: `all` is a valid, writable sigset_t.
            unsafe { libc::sigfillset(&mut all) };
            // SAFETY: both pointers are valid sigset_t values owned by this frame.
            unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old) };
            SignalsBlocked(old)
        }
    }

    impl Drop for SignalsBlocked {
        fn drop(&mut self) {
            // SAFETY: restores the mask saved by `new`; the pointer is valid.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
        }
    }

    /// Start a thread of the library's own with every signal blocked (it inherits the
    /// mask of its creator): a program's handler never runs on it, and a signal meant for
    /// the process goes to one of the program's threads.
    pub fn spawn_service<F>(name: &str, f: F) -> std::io::Result<std::thread::JoinHandle<()>>
    where
        F: FnOnce() + Send + 'static,
    {
        let _blocked = SignalsBlocked::new();
        std::thread::Builder::new().name(name.to_owned()).spawn(f)
    }

    /// Zeroed, never-freed memory for `len` bytes (async-signal-safe: mmap, not malloc).
    pub(crate) fn alloc_zeroed_forever(len: usize) -> *mut u8 {
        // SAFETY: an anonymous private mapping with no address hint has no preconditions.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            eprintln!("klp-sync: out of memory for reader slots");
            std::process::abort();
        }
        p.cast()
    }
}

#[cfg(klp_loom)]
mod imp {
    use super::*;

    /// The loom model's heavy barrier: a full fence (see the module comment).
    pub(crate) struct ProcessBarrier;

    impl HeavyBarrier for ProcessBarrier {
        fn heavy_barrier(&self) {
            fence(Ordering::SeqCst);
        }
    }

    #[inline(always)]
    pub(crate) fn light_barrier() {
        fence(Ordering::SeqCst);
    }

    /// The mode of the loom build.
    pub fn barrier_mode() -> BarrierMode {
        BarrierMode::Fences(FenceReason::Unsupported)
    }
}

pub use imp::barrier_mode;
pub(crate) use imp::*;
#[cfg(not(klp_loom))]
pub use imp::{SignalsBlocked, spawn_service};

/// The light half of the process's asymmetric barrier, for protocols built beside the
/// flavors (the engine's claim of a running thread): a compiler fence when membarrier is
/// in use, a full fence otherwise. It orders the caller's earlier stores before its later
/// loads against any [`heavy_barrier`] of another thread.
#[inline(always)]
pub fn light_barrier_pub() {
    light_barrier();
}

/// The heavy half: `membarrier(PRIVATE_EXPEDITED)` (or a full fence in the fence mode).
/// After it returns, every thread has executed a full barrier since the call began.
pub fn heavy_barrier() {
    #[cfg(not(klp_loom))]
    init();
    ProcessBarrier.heavy_barrier();
}
