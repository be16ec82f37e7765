//! Design notes: the two algorithms, why every memory ordering holds, and the trade-off
//! of the kernel's 2017 change. Documentation only; there is no code here.
//!
//! # What is protected
//!
//! The livepatch handler reads a function's `func_stack` and a thread's patch state in a
//! read section that covers only the *choice* of implementation, never the call. The
//! control side unlinks a func (or a whole patch) and must wait until no thread can still
//! be looking at it before it frees it or flips a transition flag. A grace period is that
//! wait. Safety of code that is already *running* is the consistency model's job, not the
//! flavor's.
//!
//! # The read side (shared by `preempt` and `rcu`)
//!
//! Every thread owns one word in a never-freed, cache-line-padded slot. Low 32 bits: read
//! nesting depth. High 32 bits: a generation that grows at every outermost entry.
//!
//! ```text
//! enter:  w = word (own value)            exit:  w = word (own value)
//!         word = w + (gen+1 if outermost)        word = w - 1          (Release)
//!              (Release)
//!         light barrier
//! ```
//!
//! No locked instruction, no fence instruction in the default mode. The light barrier is a
//! compiler fence when the process registered for `membarrier(PRIVATE_EXPEDITED)`, and a
//! real `fence(SeqCst)` otherwise (`BarrierMode::Fences`, about 4x slower on our machines).
//!
//! # A grace period
//!
//! ```text
//! 1. heavy barrier (membarrier, or fence(SeqCst) in the fence mode)
//! 2. for every slot in use (and, for rcu, registered and not parked):
//!        snapshot its word (Acquire); keep it if depth > 0
//! 3. for every kept slot: wait (Acquire loads) until depth == 0 or the generation moved
//! ```
//!
//! ## Why the orderings hold
//!
//! * **Entry store vs. the updater's earlier writes (store buffering).** The updater wrote
//!   (unpublished a pointer) before step 1; the reader stores its word, then reads data.
//!   membarrier acts as a full barrier on every running thread at some point during the
//!   call (and a thread not running passed through the scheduler's barrier). If that point
//!   falls after the reader's entry store, the updater's later scan sees the store and
//!   waits. If it falls before the reader's data loads, those loads see the updater's
//!   writes, so the reader cannot find what was unpublished. The compiler fence keeps the
//!   compiler from moving the data loads above the entry store. In the fence mode, both
//!   sides run `fence(SeqCst)` between their store and their load: the classic
//!   store-buffering argument, within the language's model.
//! * **Exit vs. freeing.** The exit store is Release and every updater load of a word is
//!   Acquire: when the updater sees the depth drop (or the generation move), every load of
//!   that section happens-before the updater's return and what it frees next. liburcu
//!   instead issues a second membarrier at the end of a grace period; on x86 a Release store
//!   is a plain `mov`, so ours costs the reader nothing and saves the updater a barrier.
//! * **A generation that moved.** An updater may stop waiting because it sees the *next*
//!   section's entry rather than the exit. A later plain store does not extend the exit's
//!   release sequence (C++20 rules), so the entry store is Release too: seeing it carries
//!   the previous exit and every load before it. On x86 both are plain `mov`s. The loom
//!   model `preempt_grace_period_waits_for_readers` found this when the entry was Relaxed.
//! * **Nesting and signal handlers.** Only the owner writes the word, by load-then-store.
//!   A signal handler that runs a whole section in between restores the word's depth, so
//!   the interrupted store still leaves a balanced count; at worst the generation repeats,
//!   and a repeated generation can only make an updater wait longer.
//! * **Becoming watched.** Claiming a slot is a SeqCst compare-and-swap followed by the
//!   entry's own barrier; registering (rcu) or unparking is a SeqCst store followed by a
//!   full fence. Either the updater's scan sees the new state, or the thread's next data
//!   loads come after the updater's barrier. Going unwatched needs no fence: the thread
//!   is outside every section (checked) and its last exit was Release.
//! * **Slot reuse.** A thread that exits gives its slot back with depth 0; the next owner
//!   keeps the word, so an updater that snapshotted the old owner's section sees the depth
//!   drop, or the new owner's new generation.
//!
//! The loom models (`tests/loom.rs`) run this algorithm with both barriers replaced by
//! `fence(SeqCst)`; the substitution of a compiler fence plus membarrier for the reader's
//! fence is the pairing that membarrier(2) documents, and it is what liburcu-memb, seize and
//! the .NET and Julia runtimes rely on. The stress tests exercise it on hardware.
//!
//! # preempt: the 2017 scheme
//!
//! The kernel's livepatch handler ran under `rcu_read_lock()`. RCU does not watch idle CPUs
//! or parts of the entry code, and a livepatched function may run there; detecting it
//! (`rcu_is_watching()`) lets you warn, not choose correctly. The 2017 fix ("livepatch: Fix
//! stacking of patches with respect to RCU") copied ftrace: `preempt_disable_notrace()` in
//! the handler and `schedule_on_each_cpu()` of an empty function as the grace period. Every
//! task is protected, wherever it runs; the price is a grace period that wakes every CPU,
//! that each caller pays for separately, and that cannot be batched.
//!
//! Userspace has no preemption control and cannot force another thread through the
//! scheduler, so the faithful analogue is: every thread that ever reads gets a slot
//! automatically (there is no "unregistered" or "offline" thread), and a grace period is one
//! membarrier plus the scan, serialized by a mutex, one per caller. `defer` is
//! synchronize-then-run in the caller; there is nothing for `barrier` to wait for.
//!
//! # rcu: liburcu-memb
//!
//! Threads register explicitly and go offline while parked (blocked). `synchronize` skips
//! unregistered and offline threads, so their read sections are not protected, and
//! `is_watching()` says so: this is the kernel's hazard, kept visible on purpose. The
//! kernel's answer for an interrupt on an idle CPU, `rcu_irq_enter()`, is
//! `Flavor::irq_enter`: the thread is watched for one read section (a flag store and a
//! fence, restored exactly afterwards, so a signal handler may use it anywhere). The
//! engine makes every handler read section watched this way and counts how often rcu
//! needed it; preempt never does. In exchange, grace periods are shared: a sequence number is odd
//! while a grace period runs; a caller needs the grace period that *begins* after its call,
//! leads one if none runs, and otherwise sleeps until one that began after it ends. Every
//! caller that arrives during a grace period rides the next single one, so K simultaneous
//! callers cost about two grace periods where preempt pays K. `defer` queues to a worker
//! thread that runs one grace period per batch; `barrier` waits for the batches; polled
//! grace periods (`start_poll`/`poll`) and an expedited, spinning grace period exist too.
//!
//! # The trade-off, measured
//!
//! Both flavors share the read side, so a patched call costs the same. They differ in who is
//! protected (preempt: everyone; rcu: registered, running threads) and in what concurrent
//! grace periods cost (preempt grows with the number of callers; rcu stays near two). The
//! benchmarks in `benches/` show both; `benches/README.md` has the figures.
