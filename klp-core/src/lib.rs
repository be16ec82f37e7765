//! The livepatch engine of libklp.
//!
//! Written so far: the kernel's log ([`log`]). Still to come: the patch/object/func model,
//! the site registry, the func_stack handler, transitions with the per-thread consistency
//! model, callbacks and system states, generic over the [`klp_sync::Flavor`]s.

pub mod log;
