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
//! errno and log line.
//!
//! ```
//! use klp_core::{Func, Klp, Object, Patch, patchable};
//! use klp_sync::Preempt;
//!
//! patchable! {
//!     fn greeting(n: u32) -> String { format!("hello {n}") }
//! }
//! fn fixed_greeting(n: u32) -> String { format!("hello, {n}") }
//!
//! let klp = Klp::new(Preempt::new());
//! assert_eq!(greeting(1), "hello 1");
//! klp.enable(Patch::new("fix").object(Object::vmlinux().func(Func::new("greeting", fixed_greeting as fn(u32) -> String)))).unwrap();
//! assert!(klp.wait_transition(std::time::Duration::from_secs(10)));
//! assert_eq!(greeting(1), "hello, 1");
//! klp.set_enabled("fix", false).unwrap();
//! assert!(klp.wait_transition(std::time::Duration::from_secs(10)));
//! assert_eq!(greeting(1), "hello 1");
//! ```

pub mod log;
pub mod shadow;

mod core;
mod error;
mod macros;
#[doc(hidden)]
pub mod park;
mod patch;
mod site;
mod task;

pub use crate::core::{
    FuncNode, KSYM_NAME_LEN, Klp, MODULE_NAME_LEN, PatchInfo, SIGNALS_TIMEOUT, TaskInfo,
    forget_frames_below, park, set_thread_kick, unpark, update_patch_state,
};
pub use error::KlpError;
pub use patch::{Callback, Callbacks, Func, Object, ObjectCtx, Patch, PatchFn, PrePatch, State};
pub use site::{
    Code, LeaveGuard, ModuleState, ObjectError, Site, enter, enter_guarded, enter_split,
    enter_task, leave, leave_split, leave_task, libc_errno, load_object, object_state,
    unload_object,
};
pub use task::{
    KLP_TRANSITION_IDLE, KLP_TRANSITION_PATCHED, KLP_TRANSITION_UNPATCHED, MAX_ENGINES,
    STACK_DEPTH, Task,
};
