//! The fuzz targets of `fuzz/` as property tests of the stable suite: proptest feeds the
//! same functions the bytes that libFuzzer would, so `cargo test` keeps covering the C
//! patch-description validator (`klp_enable_patch` on arbitrary `struct klp_patch`
//! graphs) and the C shadow API sequences, each checked against its model
//! (`fuzz/README.md`). `PROPTEST_CASES` sets the number of cases (default 256).
//!
//! libklp's C engine is one per process: the two tests take turns.

#[path = "../../fuzz/src/bytes.rs"]
mod bytes;
#[path = "../../fuzz/src/log.rs"]
mod log;
#[path = "../../fuzz/src/patch_graph.rs"]
mod patch_graph;
#[path = "../../fuzz/src/shadow_ops.rs"]
mod shadow_ops;

use proptest::prelude::*;
use std::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());

/// Inputs that found something (`fuzz/README.md`, "Runs and findings"), kept as
/// regression cases.
const KNOWN_ENABLE_PATCH: &[&[u8]] = &[
    // Finding 1: an atomic replace with `old_sympos` 0 where a patch in use said 1.
    b"G\x02(fz_a\xca\xca\xca\xca\xcaa\xd1\xe0\x01R\x17\xa6\x00\x00\xca\x97\xcay$y/yA$y/\x01R\x17Gaa\x10-G+GG",
];

#[test]
fn known_inputs() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for input in KNOWN_ENABLE_PATCH {
        patch_graph::run(input);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn enable_patch_on_arbitrary_graphs(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        patch_graph::run(&data);
    }

    #[test]
    fn shadow_api_sequences(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        shadow_ops::run(&data);
    }
}
