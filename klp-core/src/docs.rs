//! Design notes: how the consistency guarantee survives what real processes do. This
//! module holds documentation only.
//!
//! # The promise
//!
//! Between two of its switch points, a thread runs every patched function from one
//! universe (the kernel's per-task consistency model), and never runs code that was
//! freed or unmapped. A switch point is a moment when no function that a transition
//! replaces is live on the thread: depth 0 (no patchable function on its activation
//! stack), or an explicit switch point (`update_patch_state`) whose stack check passes.
//!
//! # The per-thread state machine
//!
//! [`crate::thread::ThreadState`] is the whole per-thread state, with its states, its
//! movers and its invariants written at the top of `thread.rs`. In short:
//!
//! * an activation is **reserved** (the depth raised, `BUSY` set) before its
//!   implementation is chosen, and **published** after: a switch before the reservation is
//!   seen by the choice; one after it is impossible (the worker's running claim needs the
//!   word at 0, a stack check refuses `BUSY` and live entries);
//! * every other multi-step change of the owner (a return through the slow path,
//!   dropping entries left by `longjmp`, a switch point) is marked `BUSY` too, and runs
//!   with the thread out of PARKED, after any checker holding it let go;
//! * a worker switches a thread only while holding it: parked (CLAIMED, its stack
//!   checked) or running at depth 0 (its claim counted, seen after one heavy barrier);
//!   claims of several engines add up, so one engine ending its claim never releases
//!   another's.
//!
//! `tests/loom_thread.rs` runs the real code under loom, with a worker checking and
//! switching the thread while it enters, returns, parks and reaches switch points, and a
//! signal handler landing at every step.
//!
//! # Signal handlers: the kernel's interrupts
//!
//! An interrupt runs with the state of the task it interrupts and never switches it. A
//! signal handler here:
//!
//! * reserves its activations above the interrupted code's, and runs with the thread's
//!   current state;
//! * finds `BUSY` when it interrupted the thread's own bookkeeping: then it drops,
//!   checks and switches nothing, and leaves every word as it found it;
//! * may switch the thread only where the interrupted code is outside every patchable
//!   function and outside libklp: a point where the transition worker could switch it
//!   too (the running claim), so the handler adds no new switch point;
//! * on a parked thread, takes it out of PARKED for its calls (waiting for a checker that
//!   holds it: the kernel's `rcu_irq_enter`), and parks it again when they return; the
//!   rcu flavor is made to watch the handler's read sections
//!   ([`klp_sync::Flavor::irq_enter`]), which is the seed's case made safe, counted by
//!   [`crate::Klp::not_watching_count`]; preempt never needs it;
//! * can make its thread's first libklp call: task records come from mapped memory, the
//!   task list is locked with signals blocked, the thread's name comes from `prctl`;
//! * wakes the transition worker without a lock (a futex event).
//!
//! The library's own threads (`klp-transition`, `klp-rcu`, `klp-unmap`) block every
//! signal.
//!
//! # Re-entrant callers
//!
//! Log sinks, callbacks, shadow constructors and destructors, and kicks may call back:
//!
//! * queries ([`crate::Klp::patches`], [`crate::Klp::patch`], states) read a view that
//!   each control operation publishes before its log lines and callbacks, never the
//!   control lock, so they work everywhere and see the state the line describes;
//! * a control operation (enable, disable, force, an object's load or unload) from the
//!   thread that holds the engine's control lock (its own callbacks and log lines)
//!   returns [`crate::KlpError::Deadlock`] (`-EDEADLK`), as does a wait for the transition
//!   from there or from the transition worker (kicks, its log lines);
//! * kicks run once the control lock is dropped, with their thread pinned: it cannot
//!   exit while its kick runs;
//! * a shadow constructor or destructor runs under a lock of its store: it may look
//!   variables up ([`crate::shadow::Shadow::get`], lock-free on every thread), and
//!   nothing else of the store.
//!
//! `include/klp.h` opens with the table of what each C export does in each context.
//!
//! # fork
//!
//! The kernel's child copies its parent's patch state and pending flag. Here the child
//! is a copy of the forking thread: the atfork handlers take every lock of the library in
//! its own order before the fork (the fork waits for a control operation running on
//! another thread), and in the child the other threads' task records and reader slots go
//! back, grace periods their threads were running are complete, each engine recounts
//! the threads its transition waits for (this one at most) and starts a new worker
//! when a transition is in progress, which completes it. Lock order, outermost first:
//! the C layer's enable lock, the object loader, each engine's control lock, the shadow
//! stores' stripes, each engine's view, the task list, the site registry, the object
//! table, the logs' sinks, then klp-sync's (preempt grace periods, rcu queues and
//! grace-period state).
//!
//! # Sites and objects
//!
//! An engine takes a site when it pushes the site's first func and gives it back after
//! a grace period of its own flavor once the stack is empty; the handler re-reads the
//! owner inside its read section and starts over when it changed, so a call never reads
//! another engine's func_stack under the wrong flavor. The C layer pins the shared
//! objects that hold the sites a patch uses in the main program's object (a library
//! without `KLP_OBJECT`), so closing one under a patch does not unmap what the engine
//! uses.
//!
//! While no transition touches a site, every thread would make the same choice, so the
//! site holds it (its *resolved target*) and a call runs it with no handler, read
//! section or func-record check: a patched call costs what an unpatched one does. The
//! target is withdrawn before the owner changes the func_stack or starts a transition
//! (before any thread is flagged) and settled when the control lock is dropped with no
//! transition in progress. No grace period separates the two: a call reserves its
//! activation before it loads the target, so a thread that loaded the old one is not
//! switched before its entry is published and checked (`crate::site`; the loom model
//! includes it). The flavors differ only during transitions, where the kernel's handler
//! runs in full.
//!
//! # Several stacks: alternate signal stacks and coroutines
//!
//! Entries left without returning (`longjmp`, an exception, cancellation) are dropped
//! only when provably left: when the entry's frame lies in the memory that the running
//! call occupies at that moment (between the deciding function's own frame and the frame
//! of the call, or the stack pointer of the caller of a switch point). Two live frames
//! never share memory, so such an entry is dead, whatever stack it was on; no bounds of
//! any stack are needed, and an entry anywhere else is kept. A suspended coroutine's
//! calls (`swapcontext`, on a stack from the heap, a mapping, or an array on the thread's
//! own stack), and the code a signal handler on an alternate stack interrupted, are
//! therefore never dropped. A function that returns on one stack while calls of another
//! are live above its entry marks its entry returned (a tombstone, popped when it
//! reaches the top). What holds: never a switch while a patched function is live on any
//! of the thread's stacks. The conservative cost: entries left below every call the
//! thread makes afterwards stay (the thread switches only when a later call covers them,
//! or when forced), and so does a coroutine abandoned inside a patchable function.
