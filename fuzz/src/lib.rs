//! Fuzz targets of libklp's outside inputs (`README.md`): each target is a function of
//! the fuzzer's bytes that panics on a finding. The same functions run under proptest in
//! the stable test suite (`benches/tests/fuzz_props.rs`).

pub mod bytes;
pub mod log;
pub mod patch_graph;
pub mod shadow_ops;
