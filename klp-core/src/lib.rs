//! The livepatch engine of libklp.
//!
//! Not written yet: this crate will hold the patch/object/func model, the site registry,
//! the func_stack handler, transitions with the per-thread consistency model, callbacks,
//! system states and shadow variables, generic over the [`klp_sync::Flavor`]s.
