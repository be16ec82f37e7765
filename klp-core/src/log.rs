//! The kernel's log, for a process: every core message with the kernel's text and level,
//! delivered to a pluggable sink.
//!
//! Lines are whole kernel lines without the trailing newline, starting with `livepatch: `
//! as the kernel's `pr_fmt` makes them (`livepatch: enabling patch 'p'`). Levels are the
//! kernel's console levels.

use std::fmt;
use std::sync::{Arc, Mutex, RwLock, Weak};

/// A message level, numbered as the kernel's console levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(i32)]
pub enum Level {
    /// `pr_err`.
    Err = 3,
    /// `pr_warn` and `WARN`.
    Warning = 4,
    /// `pr_notice`.
    Notice = 5,
    /// `pr_info`.
    Info = 6,
    /// `pr_debug` (the selftests switch these on).
    Debug = 7,
}

impl Level {
    /// The kernel's name of the level (`err`, `warning`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Err => "err",
            Level::Warning => "warning",
            Level::Notice => "notice",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

/// Where log lines go.
pub trait Sink: Send + Sync {
    /// Receive one line (no trailing newline).
    fn line(&self, level: Level, line: &str);
}

impl<F: Fn(Level, &str) + Send + Sync> Sink for F {
    fn line(&self, level: Level, line: &str) {
        self(level, line)
    }
}

/// The default sink: notice and above to standard error; debug lines too when the
/// environment variable `KLP_DEBUG` is `1`.
#[derive(Debug, Default)]
pub struct Stderr;

impl Sink for Stderr {
    fn line(&self, level: Level, line: &str) {
        if level <= Level::Notice || debug_enabled() {
            write_stderr(line);
        }
    }
}

/// Whether `KLP_DEBUG=1` (read once; 0 unknown, 1 no, 2 yes).
fn debug_enabled() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    static DEBUG: AtomicU8 = AtomicU8::new(0);
    match DEBUG.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var_os("KLP_DEBUG").is_some_and(|v| v == "1");
            DEBUG.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
        d => d == 2,
    }
}

/// One line and its newline to standard error in one `write` (lines of several threads
/// or processes never interleave), without the standard library's lock of standard error
/// (a fork while another thread held it would leave the child unable to log).
fn write_stderr(line: &str) {
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    let mut rest: &[u8] = &buf;
    while !rest.is_empty() {
        // SAFETY: `rest` is valid for reads of its length.
        let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
        if n > 0 {
            rest = &rest[n as usize..];
        } else if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
        {
            continue;
        } else {
            return;
        }
    }
}

/// A sink that keeps every line, for tests that compare logs line by line.
#[derive(Debug, Default)]
pub struct Capture {
    lines: Mutex<Vec<(Level, String)>>,
}

impl Capture {
    /// An empty capture.
    pub fn new() -> Arc<Self> {
        Arc::new(Capture::default())
    }

    /// Every line so far, without levels, and forget them.
    pub fn take(&self) -> Vec<String> {
        self.take_with_levels()
            .into_iter()
            .map(|(_, l)| l)
            .collect()
    }

    /// Every line so far with its level, and forget them.
    pub fn take_with_levels(&self) -> Vec<(Level, String)> {
        std::mem::take(&mut *self.lines.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Record a line that did not come from the core (a test's own `% insmod` echo).
    pub fn push(&self, line: impl Into<String>) {
        self.line(Level::Info, &line.into());
    }
}

impl Sink for Capture {
    fn line(&self, level: Level, line: &str) {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((level, line.to_owned()));
    }
}

/// A replaceable sink; cheap to clone (every clone shares the sink).
#[derive(Clone)]
pub struct Log {
    sink: Arc<RwLock<Arc<dyn Sink>>>,
}

impl Default for Log {
    fn default() -> Self {
        Log::new(Arc::new(Stderr))
    }
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log").finish_non_exhaustive()
    }
}

/// The prefix of every core line (the kernel's `pr_fmt` for `kernel/livepatch/`).
pub const PREFIX: &str = "livepatch: ";

impl Log {
    /// A log that writes to `sink`.
    pub fn new(sink: Arc<dyn Sink>) -> Self {
        let sink = Arc::new(RwLock::new(sink));
        crate::fork::install();
        let mut all = LOGS.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&sink));
        Log { sink }
    }

    /// Send later lines to `sink`.
    pub fn set_sink(&self, sink: Arc<dyn Sink>) {
        *self.sink.write().unwrap_or_else(|e| e.into_inner()) = sink;
    }

    /// Emit one core line: the prefix, then the formatted message.
    pub fn emit(&self, level: Level, args: fmt::Arguments<'_>) {
        let line = format!("{PREFIX}{args}");
        self.raw(level, &line);
    }

    /// Emit a line exactly as given (callback output of a patch, say). The sink is
    /// called without any lock of the log held: it may log, or replace the sink.
    pub fn raw(&self, level: Level, line: &str) {
        let sink = Arc::clone(&self.sink.read().unwrap_or_else(|e| e.into_inner()));
        sink.line(level, line);
    }
}

type SinkCell = RwLock<Arc<dyn Sink>>;

/// Every log's sink, for `fork` (see `crate::fork`).
static LOGS: Mutex<Vec<Weak<SinkCell>>> = Mutex::new(Vec::new());

/// A log's sink held across a fork; the guard goes before the cell.
struct ForkHeld {
    _guard: std::sync::RwLockWriteGuard<'static, Arc<dyn Sink>>,
    _cell: Arc<SinkCell>,
}

/// `fork` prepare: every log's sink (no reader is half way through cloning it).
pub(crate) fn fork_prepare() {
    let cells: Vec<Arc<SinkCell>> = LOGS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for cell in cells {
        let g = cell.write().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the guard borrows from `cell`, which `ForkHeld` keeps alive and drops
        // after it (field order); the lifetime is only widened to be stored.
        let g: std::sync::RwLockWriteGuard<'static, Arc<dyn Sink>> =
            unsafe { std::mem::transmute(g) };
        crate::fork::hold(ForkHeld {
            _guard: g,
            _cell: cell,
        });
    }
}

/// `klp_log!(log, Level::Notice, "enabling patch '{}'", name)`.
#[macro_export]
macro_rules! klp_log {
    ($log:expr, $level:expr, $($arg:tt)+) => {
        $log.emit($level, format_args!($($arg)+))
    };
}

/// A sink that forwards every line to the [`log`](https://docs.rs/log) facade, target
/// `livepatch`: `Err` → error, `Warning` → warn, `Notice` and `Info` → info, `Debug` →
/// debug. Lines keep their `livepatch: ` prefix.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogFacade;

impl Sink for LogFacade {
    fn line(&self, level: Level, line: &str) {
        let l = match level {
            Level::Err => ::log::Level::Error,
            Level::Warning => ::log::Level::Warn,
            Level::Notice | Level::Info => ::log::Level::Info,
            Level::Debug => ::log::Level::Debug,
        };
        ::log::log!(target: "livepatch", l, "{line}");
    }
}
