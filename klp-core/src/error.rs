//! Errors of the control operations, each carrying the kernel's errno.

use crate::site::libc_errno::*;

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
        }
    }
}
