//! Helpers shared by the klp-sync integration tests.
#![allow(dead_code)]

use std::sync::mpsc;
use std::time::Duration;

/// Run `f` on its own thread and fail the test if it has not finished within `limit`.
pub fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => {
            h.join().unwrap();
            v
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The closure panicked: surface its panic.
            match h.join() {
                Err(p) => std::panic::resume_unwind(p),
                Ok(()) => unreachable!(),
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: did not finish within {limit:?}"),
    }
}

/// A one-shot gate: `open` once, `wait` any number of times.
#[derive(Clone, Default)]
pub struct Gate(std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);

impl Gate {
    /// Open the gate and wake every waiter.
    pub fn open(&self) {
        *self.0.0.lock().unwrap() = true;
        self.0.1.notify_all();
    }
    /// Wait until the gate is open.
    pub fn wait(&self) {
        let mut g = self.0.0.lock().unwrap();
        while !*g {
            g = self.0.1.wait(g).unwrap();
        }
    }
    /// Whether the gate is open.
    pub fn is_open(&self) -> bool {
        *self.0.0.lock().unwrap()
    }
}

/// How long a test waits to see that something does *not* happen.
pub const HOLD: Duration = Duration::from_millis(150);
/// How long a test waits for something that must happen.
pub const LIMIT: Duration = Duration::from_secs(20);

/// Seconds for a stress run: `default` unless `KLP_STRESS_SECS` says otherwise.
pub fn stress_secs(default: f64) -> Duration {
    let s = std::env::var("KLP_STRESS_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(default);
    Duration::from_secs_f64(s)
}
