//! The livepatch engine of libklp: the Linux kernel's livepatch core for the threads of a
//! process, generic over the read-side [`klp_sync::Flavor`]s.
//!
//! * [`patchable!`] defines patchable functions ([`Site`]s, the kernel's kallsyms and
//!   ftrace locations); [`load_object`] / [`unload_object`] are module coming and going.
//! * [`Patch`], [`Object`], [`Func`] and [`State`] are `struct klp_patch` and friends.
//! * [`Klp`] is the engine: enable, disable, reverse, force, atomic replace, callbacks,
//!   system states, the control surface (`/sys/kernel/livepatch`), and the per-thread
//!   consistency model with its transition worker.
//! * [`park`] / [`unpark`] bracket blocking calls; [`update_patch_state`] is an explicit
//!   switch point.
//! * [`log`] is the kernel's log; [`shadow`] the kernel's shadow variables.
//!
//! The behaviour follows the kernel's (`reference/kernel-livepatch.md`): every check,
//! errno and log line. [`docs`] explains the design: the per-thread state machine,
//! signal handlers, `fork`, re-entrant callers and what each context may call.
//!
//! # Example
//!
//! A program that patches one of its own functions:
//!
//! ```
//! use std::time::Duration;
//!
//! use klp_core::{Func, Klp, KlpError, Object, Patch, patchable};
//! use klp_sync::Preempt;
//!
//! patchable! {
//!     fn greeting(n: u32) -> String { format!("hello {n}") }
//! }
//! fn fixed_greeting(n: u32) -> String { format!("hello, {n}") }
//!
//! let klp = Klp::new(Preempt::new()); // the livepatch core of this process
//! assert_eq!(greeting(1), "hello 1");
//! klp.enable(Patch::new("fix").object(
//!     Object::vmlinux().func(Func::new("greeting", fixed_greeting as fn(u32) -> String)),
//! ))?; // livepatch: enabling patch 'fix' (on standard error)
//! assert!(klp.wait_transition(Duration::from_secs(10)));
//! assert_eq!(greeting(1), "hello, 1");
//! klp.set_enabled("fix", false)?;
//! assert!(klp.wait_transition(Duration::from_secs(10)));
//! assert_eq!(greeting(1), "hello 1");
//! # Ok::<(), KlpError>(())
//! ```
//!
//! Where to go from here: [`Klp`] (the engine and its control surface), [`Patch`]
//! (objects, funcs, callbacks, system states, atomic replace), [`patchable!`], the
//! flavors of [`klp_sync`] ([`Preempt`](klp_sync::Preempt), [`Rcu`](klp_sync::Rcu),
//! [`Lock`](klp_sync::Lock)) and [`shadow::Shadow`]. The program `examples/patch_self.rs`
//! (`cargo run --release -p klp-core --example patch_self`) patches itself while its
//! threads run and shows each of them switching at its own safe point.
//!
//! # Files
//!
//! As the kernel splits `kernel/livepatch/`: `core.rs` (the engine and its patch list),
//! `patch.rs` (func stacks and the handler), `transition.rs` (transitions and the
//! worker), `state.rs`, `module.rs` (objects coming and going in an engine), `control.rs`
//! (the read-only view); below them `thread.rs` (the per-thread state machine), `task.rs`
//! (task records), `registry.rs` (engines by slot), `site.rs`, `call.rs` (the call path),
//! `object.rs` (loading objects), `fork.rs`. No module imports one above it.

pub mod docs;
mod sync;
pub mod thread;

#[cfg(not(klp_loom))]
pub mod log;
#[cfg(not(klp_loom))]
pub mod shadow;

#[cfg(not(klp_loom))]
mod call;
#[cfg(not(klp_loom))]
mod control;
#[cfg(not(klp_loom))]
mod core;
#[cfg(not(klp_loom))]
pub mod entry;
#[cfg(not(klp_loom))]
mod error;
#[cfg(not(klp_loom))]
mod fork;
#[cfg(not(klp_loom))]
mod func;
#[cfg(not(klp_loom))]
mod macros;
#[cfg(not(klp_loom))]
mod model;
#[cfg(not(klp_loom))]
mod module;
#[cfg(not(klp_loom))]
mod object;
#[cfg(not(klp_loom))]
mod patch;
#[cfg(not(klp_loom))]
mod registry;
#[cfg(not(klp_loom))]
mod site;
#[cfg(not(klp_loom))]
mod state;
#[cfg(not(klp_loom))]
mod task;
#[cfg(not(klp_loom))]
mod transition;

#[cfg(not(klp_loom))]
pub use crate::call::{
    LeaveGuard, enter, enter_guarded, enter_split, enter_task, forget_frames_below, leave,
    leave_split, leave_task, park, set_thread_kick, unpark, update_patch_state,
    update_patch_state_at,
};
#[cfg(not(klp_loom))]
pub use crate::control::{PatchInfo, TaskInfo};
#[cfg(not(klp_loom))]
pub use crate::core::{KSYM_NAME_LEN, Klp, MODULE_NAME_LEN};
#[cfg(not(klp_loom))]
pub use crate::error::{KlpError, libc_errno};
#[cfg(not(klp_loom))]
pub use crate::fork::install as install_fork_handlers;
#[cfg(not(klp_loom))]
pub use crate::func::FuncNode;
#[cfg(not(klp_loom))]
pub use crate::model::{
    Callback, Callbacks, Func, Object, ObjectCtx, Patch, PatchFn, PrePatch, State,
};
#[cfg(not(klp_loom))]
pub use crate::object::{
    ModuleState, ObjectError, begin_load_object, begin_unload_object, finish_load_object,
    finish_unload_object, load_object, object_state, unload_object,
};
#[cfg(not(klp_loom))]
pub use crate::site::{Code, Site, lookup};
#[cfg(not(klp_loom))]
pub use crate::task::{
    KLP_TRANSITION_IDLE, KLP_TRANSITION_PATCHED, KLP_TRANSITION_UNPATCHED, MAX_ENGINES, Task,
};
#[cfg(not(klp_loom))]
pub use crate::thread::STACK_DEPTH;
#[cfg(not(klp_loom))]
pub use crate::transition::{SIGNALS_TIMEOUT, on_worker_thread};

/// Whether the calling thread runs inside a control operation of an engine (an enable, a
/// disable, a force, an object coming or going: their log lines and callbacks), which
/// holds that engine's control lock: another control operation from here returns
/// [`KlpError::Deadlock`].
#[cfg(not(klp_loom))]
pub fn in_control_operation() -> bool {
    crate::core::holds_any_control() || crate::object::loading()
}
