//! Sequences of the C shadow-variable API (`klp_fuzz::shadow_ops`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| klp_fuzz::shadow_ops::run(data));
