//! Task records: the threads of the process, as the kernel's livepatch sees its tasks.
//!
//! A record holds a thread's [`ThreadState`], its patch state and pending flag per engine
//! (the kernel's `patch_state` and `TIF_PATCH_PENDING`), and its kick. Records live in a
//! never-freed arena of memory mapped from the system (not from the allocator): a thread
//! may become a task inside a signal handler, where allocating could deadlock. A record
//! is reused by a later thread once its thread has exited.
//!
//! The set of tasks changes (a thread registers or exits) only under the task-list lock,
//! and transitions walk the set under it; the lock is always held with every signal
//! blocked, so a handler never finds its own thread holding it.

use std::sync::atomic::{
    AtomicBool, AtomicI8, AtomicI32, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Ordering,
};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::thread::ThreadState;

/// The kernel's per-task states.
pub const KLP_TRANSITION_IDLE: i8 = -1;
/// The task runs the code from before the transition's patch (or after its removal).
pub const KLP_TRANSITION_UNPATCHED: i8 = 0;
/// The task runs the transition patch's code.
pub const KLP_TRANSITION_PATCHED: i8 = 1;

/// How many engines one process may create (each has a slot in every task).
pub const MAX_ENGINES: usize = 64;

/// A kick: wakes a thread that a transition waits for (the kernel's fake signal).
pub(crate) type Kick = Arc<dyn Fn() + Send + Sync>;

/// A thread, as livepatch sees it.
pub struct Task {
    /// Its progress through patchable functions: the consistency model's state.
    pub(crate) thread: ThreadState,
    /// A small process-unique number (the kernel's pid in messages).
    id: AtomicU64,
    /// The system's thread id.
    tid: AtomicI32,
    /// The thread's name when it registered (the kernel's comm), NUL-padded.
    name: [AtomicU8; 16],
    /// Per engine slot: the task's patch state.
    pub(crate) states: [AtomicI8; MAX_ENGINES],
    /// Bit per engine slot: the task must still switch to that engine's target.
    pub(crate) pending: AtomicU64,
    /// Bit per engine slot: the thread registered with that engine's flavor.
    pub(crate) flavor_registered: AtomicU64,
    /// What wakes this thread when a transition waits for it.
    kick: Mutex<Option<Kick>>,
    /// Kicks being called: the thread's exit waits for them.
    kick_pins: AtomicU32,
    exiting: AtomicBool,
    in_use: AtomicBool,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("id", &self.id())
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

impl Task {
    fn new() -> Self {
        Task {
            thread: ThreadState::new(),
            id: AtomicU64::new(0),
            tid: AtomicI32::new(0),
            name: [const { AtomicU8::new(0) }; 16],
            states: [const { AtomicI8::new(KLP_TRANSITION_IDLE) }; MAX_ENGINES],
            pending: AtomicU64::new(0),
            flavor_registered: AtomicU64::new(0),
            kick: Mutex::new(None),
            kick_pins: AtomicU32::new(0),
            exiting: AtomicBool::new(false),
            in_use: AtomicBool::new(false),
        }
    }

    /// The process-unique number.
    pub fn id(&self) -> u64 {
        self.id.load(Ordering::Relaxed)
    }

    /// The system's thread id (`gettid`).
    pub fn tid(&self) -> i32 {
        self.tid.load(Ordering::Relaxed)
    }

    /// The thread's name when it registered.
    pub fn name(&self) -> String {
        let bytes: Vec<u8> = self
            .name
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .take_while(|&b| b != 0)
            .collect();
        if bytes.is_empty() {
            "<unnamed>".to_owned()
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }

    /// The task as the kernel prints one (`comm:pid`).
    pub fn describe(&self) -> String {
        format!("{}:{}", self.name(), self.id())
    }

    /// The task's state in engine `slot`.
    #[inline]
    pub(crate) fn state(&self, slot: usize) -> i8 {
        self.states[slot].load(Ordering::Acquire)
    }

    /// Whether this is the calling thread's task.
    pub(crate) fn is_current(&self) -> bool {
        std::ptr::eq(CurrentTask::get(), self)
    }

    /// Set the kick (the owner).
    pub(crate) fn set_kick(&self, kick: Option<Kick>) {
        let old = std::mem::replace(
            &mut *self.kick.lock().unwrap_or_else(|e| e.into_inner()),
            kick,
        );
        drop(old);
    }
}

/// Whether an activation whose wrapper frame is `entry_frame` was provably left by the
/// calling thread, which runs a call whose frame (or whose caller's stack pointer) is
/// `frame`: the entry lies in the memory that the running call itself occupies now,
/// between this function's own frame and `frame`. Two live frames never share memory, so
/// a frame there is dead, whichever stack it was on; a frame anywhere else may belong to
/// a stack the thread will come back to (a coroutine's, the interrupted code's under a
/// signal handler on an alternate stack) and is never dropped.
///
/// This function's frame holds a scratch area of [`LEFT_REACH`] bytes, so that the
/// occupied memory reaches that far below the slow path that asks: the calls a `longjmp`
/// or an exception left, nested a few deep below the function that caught it, are
/// covered at its next patchable call or switch point. Entries left deeper than that stay
/// until a later, deeper call covers them: the thread then switches later, never wrongly.
#[inline(never)]
pub(crate) fn left(entry_frame: usize, frame: usize) -> bool {
    // Never read or written: its place in this frame is all that matters.
    let scratch = std::mem::MaybeUninit::<[u8; LEFT_REACH]>::uninit();
    let here = std::hint::black_box(scratch.as_ptr()) as usize;
    here <= entry_frame && entry_frame <= frame
}

/// How far below the deciding slow path the occupied memory reaches (see [`left`]).
pub(crate) const LEFT_REACH: usize = 2048;

// ---------------------------------------------------------------------------------------
// The arena.

const CHUNK: usize = 16;

struct Chunk {
    tasks: [Task; CHUNK],
    next: AtomicPtr<Chunk>,
}

/// Every chunk ever mapped (never freed), newest first.
static CHUNKS: AtomicPtr<Chunk> = AtomicPtr::new(std::ptr::null_mut());

/// Serializes changes of the set of tasks against transitions that walk it.
static LOCK: Mutex<()> = Mutex::new(());

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Every record, in use or not.
fn records() -> impl Iterator<Item = &'static Task> {
    // Acquire pairs with the Release that published a chunk.
    let mut p = CHUNKS.load(Ordering::Acquire);
    std::iter::from_fn(move || {
        // SAFETY: chunks are never unmapped.
        let c: &'static Chunk = unsafe { p.as_ref() }?;
        p = c.next.load(Ordering::Acquire);
        Some(c)
    })
    .flat_map(|c| c.tasks.iter())
}

/// Map and publish a new chunk (under the lock).
fn grow() -> &'static Chunk {
    let size = std::mem::size_of::<Chunk>();
    // SAFETY: an anonymous private mapping with no hint has no preconditions.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        eprintln!("klp-core: out of memory for task records");
        std::process::abort();
    }
    let c = p.cast::<Chunk>();
    for i in 0..CHUNK {
        // SAFETY: the mapping is page aligned and large enough for a Chunk; each record is
        // written once, in place, before the chunk is published.
        unsafe { std::ptr::addr_of_mut!((*c).tasks[i]).write(Task::new()) };
    }
    // SAFETY: as above.
    unsafe {
        std::ptr::addr_of_mut!((*c).next).write(AtomicPtr::new(CHUNKS.load(Ordering::Relaxed)))
    };
    // Release: the records' initialization before the chunk is visible.
    CHUNKS.store(c, Ordering::Release);
    // SAFETY: initialized above; never unmapped.
    unsafe { &*c }
}

/// The task-list lock, held with every signal blocked.
pub(crate) struct TasksGuard {
    _lock: MutexGuard<'static, ()>,
    _blocked: klp_sync::SignalsBlocked,
}

/// Take the task-list lock (signals first: a handler must not find its thread holding
/// it).
pub(crate) fn lock() -> TasksGuard {
    let blocked = klp_sync::SignalsBlocked::new();
    TasksGuard {
        _lock: LOCK.lock().unwrap_or_else(|e| e.into_inner()),
        _blocked: blocked,
    }
}

impl TasksGuard {
    /// Every task.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &'static Task> {
        records().filter(|t| t.in_use.load(Ordering::Relaxed))
    }

    /// A record for the calling thread, initialized by `init` (its states) and in use.
    pub(crate) fn claim(&self, init: impl FnOnce(&Task)) -> &'static Task {
        let t = match records().find(|t| !t.in_use.load(Ordering::Relaxed)) {
            Some(t) => t,
            None => &grow().tasks[0],
        };
        t.thread.reset();
        t.id.store(NEXT_ID.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        // SAFETY: no arguments.
        t.tid.store(unsafe { libc::gettid() }, Ordering::Relaxed);
        let name = thread_name();
        for (slot, b) in t.name.iter().zip(name.iter()) {
            slot.store(*b, Ordering::Relaxed);
        }
        for s in &t.states {
            s.store(KLP_TRANSITION_IDLE, Ordering::Relaxed);
        }
        t.pending.store(0, Ordering::Relaxed);
        t.flavor_registered.store(0, Ordering::Relaxed);
        t.kick_pins.store(0, Ordering::Relaxed);
        t.exiting.store(false, Ordering::Relaxed);
        init(t);
        t.in_use.store(true, Ordering::Release);
        t
    }

    /// Take `t` out of the set (its thread exits); returns its kick, to be dropped after
    /// the lock.
    pub(crate) fn release(&self, t: &Task) -> Option<Kick> {
        t.in_use.store(false, Ordering::Release);
        t.kick.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The kick of `t`, pinned (the thread's exit waits until [`unpin_kick`]), unless it
    /// has none or is exiting.
    pub(crate) fn pin_kick(&self, t: &'static Task) -> Option<Kick> {
        let kick = t.kick.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
        // SeqCst pairs with the exit's: either the exit sees the pin and waits, or we see
        // it exiting and leave it alone.
        t.kick_pins.fetch_add(1, Ordering::SeqCst);
        if t.exiting.load(Ordering::SeqCst) {
            t.kick_pins.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(kick)
    }

    /// `fork` child: every record but the calling thread's goes back (their threads do
    /// not exist here).
    pub(crate) fn fork_child_release_others(&self) {
        let me = CurrentTask::get();
        for t in self.iter() {
            if std::ptr::eq(t, me) {
                // A kick of this thread that a worker of the parent was calling does not
                // run here: nothing holds the thread's exit any more.
                t.kick_pins.store(0, Ordering::SeqCst);
            } else {
                t.pending.store(0, Ordering::Relaxed);
                // The kick belongs to a thread of the parent: forget it (its data may be
                // anything), without running its destructor here.
                if let Some(k) = self.release(t) {
                    std::mem::forget(k);
                }
            }
        }
    }
}

/// End a pin of [`TasksGuard::pin_kick`].
pub(crate) fn unpin_kick(t: &Task) {
    t.kick_pins.fetch_sub(1, Ordering::SeqCst);
}

/// The exiting thread's side of the kick pins: no new pins, and the current ones ended.
pub(crate) fn exit_wait_kicks(t: &Task) {
    t.exiting.store(true, Ordering::SeqCst);
    let mut spins = 0u32;
    while t.kick_pins.load(Ordering::SeqCst) != 0 {
        spins = spins.saturating_add(1);
        if spins < 100 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// The calling thread's name as the system knows it (`prctl`, safe in a signal
/// handler; no loader lock, unlike `std::thread::current()` on a foreign thread).
fn thread_name() -> [u8; 16] {
    let mut buf = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes, NUL-terminated, into `buf`.
    let r = unsafe { libc::prctl(libc::PR_GET_NAME, buf.as_mut_ptr()) };
    if r != 0 {
        buf = [0; 16];
    }
    buf
}

// The calling thread's task: initial-exec TLS (two instructions, also in libklp.so).
klp_sync::fast_thread_ptr!(pub(crate) CurrentTask: Task, "klp_core_tls_task");

/// The calling thread's task if it has one.
#[inline(always)]
pub(crate) fn existing() -> Option<&'static Task> {
    // SAFETY: a non-null current task points into the never-unmapped arena.
    unsafe { CurrentTask::get().as_ref() }
}
