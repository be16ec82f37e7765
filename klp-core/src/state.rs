//! System states: the kernel's `kernel/livepatch/state.c`.

use std::sync::Arc;

use klp_sync::Flavor;

use crate::core::{Control, Core, Klp};
use crate::log::Level;
use crate::model::{Patch, State};

impl<F: Flavor + 'static> Core<F> {
    /// §8.2: every state of the patches in use is kept by `new` at the same or a higher
    /// version, or `new` does not replace them.
    pub(crate) fn is_compatible(ctl: &Control, new: &Patch) -> bool {
        ctl.patches.iter().flat_map(|p| p.states.iter()).all(|old| {
            match new.states.iter().find(|s| s.id == old.id) {
                Some(s) => s.version >= old.version,
                None => !new.replace,
            }
        })
    }

    /// `klp_get_prev_state(id)` under the control lock (from a callback): the state of
    /// the newest patch before the one in transition.
    pub(crate) fn prev_state_of(&self, ctl: &Control, id: u64) -> Option<Arc<State>> {
        let Some(t) = ctl.transition else {
            self.warn_prev_state();
            return None;
        };
        prev_state(ctl.patches[..t].iter().map(|p| p.states.as_slice()), id)
    }

    pub(crate) fn warn_prev_state(&self) {
        self.log.emit(
            Level::Warning,
            format_args!("WARNING: klp_get_prev_state called outside a transition"),
        );
    }
}

/// The newest state `id` among the patches' states, oldest patch first.
pub(crate) fn prev_state<'a>(
    patches: impl Iterator<Item = &'a [Arc<State>]>,
    id: u64,
) -> Option<Arc<State>> {
    let mut found = None;
    for states in patches {
        if let Some(s) = states.iter().find(|s| s.id == id) {
            found = Some(Arc::clone(s));
        }
    }
    found
}

impl<F: Flavor + 'static> Klp<F> {
    /// `klp_get_state(patch, id)`: the state `id` of the patch in use named `patch`.
    pub fn get_state(&self, patch: &str, id: u64) -> Option<Arc<State>> {
        self.core.with_view(|v| {
            v.patches
                .iter()
                .find(|p| p.info.name == patch)
                .and_then(|p| p.states.iter().find(|s| s.id == id).cloned())
        })
    }

    /// `klp_get_prev_state(id)`; `None` (with a warning) outside a transition.
    pub fn get_prev_state(&self, id: u64) -> Option<Arc<State>> {
        let r = self.core.with_view(|v| {
            v.transition
                .map(|t| prev_state(v.patches[..t].iter().map(|p| p.states.as_slice()), id))
        });
        r.unwrap_or_else(|| {
            self.core.warn_prev_state();
            None
        })
    }
}
