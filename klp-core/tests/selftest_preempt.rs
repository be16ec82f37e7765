//! The kernel's livepatch selftests (test-livepatch.sh, test-callbacks.sh, test-state.sh,
//! test-sysfs.sh) on the `preempt` flavor: the same steps and the same expected log, line by
//! line (see `selftests/mod.rs`).

mod selftests;

selftests::selftest_cases!(klp_sync::Preempt::new());
