//! Named objects (the kernel's modules): their states, and their loading and unloading,
//! which run module coming and going in every engine.
//!
//! An object other than the main program is *live* only between [`load_object`] and
//! [`unload_object`]. Loads and unloads are serialized (the module loader's lock).

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::error::libc_errno;
use crate::registry;

/// The kernel's module states, as a callback sees its object's module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModuleState {
    /// `MODULE_STATE_LIVE`: loaded and running.
    Live,
    /// `MODULE_STATE_COMING`: being loaded; its init has not run yet.
    Coming,
    /// `MODULE_STATE_GOING`: being unloaded; its exit has run.
    Going,
}

impl ModuleState {
    /// The text the kernel's callback selftest modules print for the state.
    pub fn describe(self) -> &'static str {
        match self {
            ModuleState::Live => "[MODULE_STATE_LIVE] Normal state",
            ModuleState::Coming => "[MODULE_STATE_COMING] Full formed, running module_init",
            ModuleState::Going => "[MODULE_STATE_GOING] Going away",
        }
    }

    /// The C value (`KLP_MODULE_STATE_*`, the kernel's numbering).
    pub fn as_raw(self) -> i32 {
        match self {
            ModuleState::Live => 0,
            ModuleState::Coming => 1,
            ModuleState::Going => 2,
        }
    }
}

static OBJECTS: Mutex<Option<HashMap<String, ModuleState>>> = Mutex::new(None);

fn objects() -> MutexGuard<'static, Option<HashMap<String, ModuleState>>> {
    OBJECTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The state of a named object's module, `None` when it is not loaded.
pub fn object_state(name: &str) -> Option<ModuleState> {
    objects().as_ref().and_then(|m| m.get(name).copied())
}

fn set_object_state(name: &str, st: Option<ModuleState>) {
    let mut g = objects();
    let m = g.get_or_insert_with(HashMap::new);
    match st {
        Some(s) => {
            m.insert(name.to_owned(), s);
        }
        None => {
            m.remove(name);
        }
    }
}

/// Why an object could not be loaded or unloaded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ObjectError {
    /// The name `vmlinux` is the main program's (`-EINVAL`).
    #[error("vmlinux.ko: invalid module name")]
    InvalidName,
    /// The object is already loaded (`-EEXIST`).
    #[error("module {0} is already loaded")]
    AlreadyLoaded(String),
    /// The object is not loaded (`-ENOENT`).
    #[error("module {0} is not loaded")]
    NotLoaded(String),
    /// An enabled patch failed to patch it; the load is refused with that errno.
    #[error("a livepatch refused module {name} ({errno})")]
    Refused {
        /// The object.
        name: String,
        /// The negative errno from the failing step.
        errno: i32,
    },
    /// Called while the calling thread loads or unloads an object, or runs a callback
    /// of an engine (which holds what loading needs): `-EDEADLK`.
    #[error("loading or unloading an object from here would deadlock")]
    Deadlock,
}

impl ObjectError {
    /// The negative Linux errno of the error.
    pub fn errno(&self) -> i32 {
        match self {
            ObjectError::InvalidName => -libc_errno::EINVAL,
            ObjectError::AlreadyLoaded(_) => -libc_errno::EEXIST,
            ObjectError::NotLoaded(_) => -libc_errno::ENOENT,
            ObjectError::Refused { errno, .. } => *errno,
            ObjectError::Deadlock => -libc_errno::EDEADLK,
        }
    }
}

static LOADER: Mutex<()> = Mutex::new(());

thread_local! {
    /// The calling thread holds the loader lock (a callback of a load is running).
    static LOADING: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling thread loads or unloads an object (runs its callbacks).
pub(crate) fn loading() -> bool {
    LOADING.with(Cell::get)
}

/// The loader lock, held.
pub(crate) struct LoaderGuard {
    _lock: MutexGuard<'static, ()>,
}

impl Drop for LoaderGuard {
    fn drop(&mut self) {
        LOADING.with(|l| l.set(false));
    }
}

/// Object loads and unloads happen one at a time (the module loader's lock). `None` when
/// the calling thread holds it already, or holds an engine's control lock.
pub(crate) fn loader_lock() -> Option<LoaderGuard> {
    if LOADING.with(Cell::get) || crate::core::holds_any_control() {
        return None;
    }
    // Locked across a fork from now on (see `crate::fork`).
    crate::fork::install();
    let g = LOADER.lock().unwrap_or_else(|e| e.into_inner());
    LOADING.with(|l| l.set(true));
    Some(LoaderGuard { _lock: g })
}

/// `fork` prepare: the loader lock, unless the forking thread holds it.
pub(crate) fn fork_lock() -> Option<MutexGuard<'static, ()>> {
    if LOADING.with(Cell::get) {
        return None;
    }
    Some(LOADER.lock().unwrap_or_else(|e| e.into_inner()))
}

/// `fork` prepare: the object table.
pub(crate) fn fork_lock_table() -> MutexGuard<'static, Option<HashMap<String, ModuleState>>> {
    objects()
}

/// Load the named object (the kernel's module load): every engine applies its enabled
/// patches to it (module coming, with callbacks and the kernel's lines), then `init`
/// runs (the module's init). If a patch refuses the object, nothing of it stays applied,
/// `init` does not run and the error carries the errno.
pub fn load_object(name: &str, init: impl FnOnce()) -> Result<(), ObjectError> {
    let Some(_serial) = loader_lock() else {
        return Err(ObjectError::Deadlock);
    };
    if name == "vmlinux" {
        registry::log_everywhere(crate::log::Level::Err, "vmlinux.ko: invalid module name");
        return Err(ObjectError::InvalidName);
    }
    if object_state(name).is_some() {
        return Err(ObjectError::AlreadyLoaded(name.to_owned()));
    }
    set_object_state(name, Some(ModuleState::Coming));
    if let Err(errno) = registry::module_coming_all(name) {
        set_object_state(name, None);
        return Err(ObjectError::Refused {
            name: name.to_owned(),
            errno,
        });
    }
    init();
    set_object_state(name, Some(ModuleState::Live));
    Ok(())
}

/// Unload the named object: `exit` runs (the module's exit), then every engine reverts
/// its patches from it (module going, with callbacks and the kernel's lines).
pub fn unload_object(name: &str, exit: impl FnOnce()) -> Result<(), ObjectError> {
    let Some(_serial) = loader_lock() else {
        return Err(ObjectError::Deadlock);
    };
    if object_state(name) != Some(ModuleState::Live) {
        return Err(ObjectError::NotLoaded(name.to_owned()));
    }
    exit();
    set_object_state(name, Some(ModuleState::Going));
    registry::module_going_all(name);
    set_object_state(name, None);
    Ok(())
}

/// The first half of a load, for a loader that runs the module's init itself, outside the
/// loader lock (a kernel livepatch module's init enables its patch, which the loader lock
/// would refuse): module coming in every engine, and the object stays in
/// [`ModuleState::Coming`] (its init runs) until [`finish_load_object`], or
/// [`finish_unload_object`] when the init fails. Meanwhile a second load of the name is
/// refused (`AlreadyLoaded`) and an unload finds nothing (`NotLoaded`). On a refusal
/// nothing stays applied and the object is not loaded.
pub fn begin_load_object(name: &str) -> Result<(), ObjectError> {
    let Some(_serial) = loader_lock() else {
        return Err(ObjectError::Deadlock);
    };
    if name == "vmlinux" {
        registry::log_everywhere(crate::log::Level::Err, "vmlinux.ko: invalid module name");
        return Err(ObjectError::InvalidName);
    }
    if object_state(name).is_some() {
        return Err(ObjectError::AlreadyLoaded(name.to_owned()));
    }
    set_object_state(name, Some(ModuleState::Coming));
    if let Err(errno) = registry::module_coming_all(name) {
        set_object_state(name, None);
        return Err(ObjectError::Refused {
            name: name.to_owned(),
            errno,
        });
    }
    Ok(())
}

/// The module's init succeeded: [`ModuleState::Coming`] becomes [`ModuleState::Live`].
/// `NotLoaded` when the object is not coming.
pub fn finish_load_object(name: &str) -> Result<(), ObjectError> {
    move_state(name, ModuleState::Coming, ModuleState::Live)
}

/// The first half of an unload, for a loader that runs the module's exit itself, outside
/// the loader lock: a live object becomes [`ModuleState::Going`] (the kernel marks a
/// module going before its exit runs). `NotLoaded` when it is not live.
pub fn begin_unload_object(name: &str) -> Result<(), ObjectError> {
    move_state(name, ModuleState::Live, ModuleState::Going)
}

/// Under the loader lock: the object in state `from` moves to `to`; `NotLoaded` when it
/// is in another state.
fn move_state(name: &str, from: ModuleState, to: ModuleState) -> Result<(), ObjectError> {
    let Some(_serial) = loader_lock() else {
        return Err(ObjectError::Deadlock);
    };
    if object_state(name) != Some(from) {
        return Err(ObjectError::NotLoaded(name.to_owned()));
    }
    set_object_state(name, Some(to));
    Ok(())
}

/// The second half of an unload (after the module's exit), or the end of a load whose
/// init failed: module going in every engine (the patches applied to the object are
/// reverted), then the object is gone. `NotLoaded` unless the object is going or coming.
pub fn finish_unload_object(name: &str) -> Result<(), ObjectError> {
    let Some(_serial) = loader_lock() else {
        return Err(ObjectError::Deadlock);
    };
    match object_state(name) {
        Some(ModuleState::Going | ModuleState::Coming) => {}
        _ => return Err(ObjectError::NotLoaded(name.to_owned())),
    }
    set_object_state(name, Some(ModuleState::Going));
    registry::module_going_all(name);
    set_object_state(name, None);
    Ok(())
}
