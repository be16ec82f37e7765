//! The `log` facade sink: every core line reaches the process's logger with the kernel's
//! level mapped, target `livepatch`.

use klp_core::log::{Log, LogFacade};
use klp_core::{Func, Klp, Object, Patch, patchable};
use klp_sync::Preempt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Recorder(Mutex<Vec<(log::Level, String, String)>>);

impl log::Log for Recorder {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        self.0
            .lock()
            .unwrap()
            .push((r.level(), r.target().to_owned(), r.args().to_string()));
    }
    fn flush(&self) {}
}

static RECORDER: Recorder = Recorder(Mutex::new(Vec::new()));

patchable! {
    fn lf_value() -> u32 { 1 }
}
fn lf_value_fixed() -> u32 {
    2
}

#[test]
fn lines_reach_the_log_facade_with_their_levels() {
    log::set_logger(&RECORDER).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let klp = Klp::with_log(Preempt::new(), Log::new(Arc::new(LogFacade)));
    klp.enable(
        Patch::new("lf")
            .object(Object::vmlinux().func(Func::new("lf_value", lf_value_fixed as fn() -> u32))),
    )
    .unwrap();
    assert!(klp.wait_transition(Duration::from_secs(20)));
    assert_eq!(lf_value(), 2);
    let got = RECORDER.0.lock().unwrap().clone();
    use log::Level::*;
    let want = [
        (Info, "livepatch: enabling patch 'lf'"),
        (Debug, "livepatch: 'lf': initializing patching transition"),
        (Info, "livepatch: 'lf': starting patching transition"),
        (Debug, "livepatch: 'lf': completing patching transition"),
        (Info, "livepatch: 'lf': patching complete"),
    ];
    let got: Vec<(log::Level, &str)> = got
        .iter()
        .filter(|(_, t, _)| t == "livepatch")
        .map(|(l, _, m)| (*l, m.as_str()))
        .collect();
    assert_eq!(got, want);
}
