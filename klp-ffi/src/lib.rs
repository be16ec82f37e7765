//! The C ABI of libklp (`libklp.so`, `libklp.a`, `include/klp.h`).
//!
//! Not written yet: the exports come with the engine. This crate will convert, check
//! pointers, catch panics and map errors, and hold no livepatch logic.
