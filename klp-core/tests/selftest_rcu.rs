//! The kernel's livepatch selftests (test-livepatch.sh, test-callbacks.sh, test-state.sh,
//! test-sysfs.sh) on the `rcu` flavor: the same steps and the same expected log, line by
//! line (see `selftests/mod.rs`).

mod selftests;

selftests::selftest_cases!(klp_sync::Rcu::new());
