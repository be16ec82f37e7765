//! `klp_enable_patch` on arbitrary `struct klp_patch` graphs (`klp_fuzz::patch_graph`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| klp_fuzz::patch_graph::run(data));
