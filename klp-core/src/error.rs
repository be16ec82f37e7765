//! Errors of the control operations, each carrying the kernel's errno.

/// Linux errno values (the kernel's, on every architecture we run on).
pub mod libc_errno {
    /// No such file or directory.
    pub const ENOENT: i32 = 2;
    /// Out of memory.
    pub const ENOMEM: i32 = 12;
    /// Device or resource busy.
    pub const EBUSY: i32 = 16;
    /// File exists.
    pub const EEXIST: i32 = 17;
    /// No such device.
    pub const ENODEV: i32 = 19;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// Resource deadlock would occur.
    pub const EDEADLK: i32 = 35;
    /// Connection timed out.
    pub const ETIMEDOUT: i32 = 110;
}

use libc_errno::*;

/// Why a control operation failed. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KlpError {
    /// `-EINVAL`: bad input (a bad name, a missing, ambiguous or mistyped symbol, a
    /// write of the value a patch already has, a patch that cannot be enabled again).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// `-EINVAL`: the patch's system states are incompatible with the installed patches.
    #[error("livepatch patch ({0}) is not compatible with the already installed livepatches")]
    Incompatible(String),
    /// `-EEXIST`: a patch of that name exists, or two objects or funcs collide.
    #[error("already exists: {0}")]
    Exists(String),
    /// `-EBUSY`: another transition is in progress.
    #[error("another transition is in progress")]
    Busy,
    /// `-EBUSY`: another engine patches this function.
    #[error("function '{0}' is patched by another engine")]
    SiteBusy(String),
    /// `-ENOENT`: no patch of that name.
    #[error("no patch named '{0}'")]
    NoEnt(String),
    /// A `pre_patch` callback refused the patch with this negative errno.
    #[error("pre-patch callback failed ({0})")]
    Callback(i32),
    /// `-EDEADLK`: called from where it would wait for the calling thread itself (a
    /// callback or log line of a control operation of the same engine, which holds the
    /// control lock; a shadow constructor; a signal handler interrupting the library).
    #[error("called from a context that holds what it needs (it would deadlock)")]
    Deadlock,
    /// `-ETIMEDOUT`: a wait ended before the transition did.
    #[error("timed out")]
    TimedOut,
}

impl KlpError {
    /// The negative Linux errno, as the kernel returns it.
    pub fn errno(&self) -> i32 {
        match self {
            KlpError::Invalid(_) | KlpError::Incompatible(_) => -EINVAL,
            KlpError::Exists(_) => -EEXIST,
            KlpError::Busy | KlpError::SiteBusy(_) => -EBUSY,
            KlpError::NoEnt(_) => -ENOENT,
            KlpError::Callback(e) => *e,
            KlpError::Deadlock => -EDEADLK,
            KlpError::TimedOut => -ETIMEDOUT,
        }
    }
}
