//! Objects coming and going, in one engine: the kernel's `klp_module_coming` and
//! `klp_module_going` (§1.4).

use klp_sync::Flavor;

use crate::core::{Control, Core};
use crate::log::Level;

impl<F: Flavor + 'static> Core<F> {
    pub(crate) fn module_coming(&'static self, name: &str) -> Result<(), i32> {
        let mut ctl = self.lock().map_err(|e| e.errno())?;
        let mut done: Vec<u64> = Vec::new();
        for pi in 0..ctl.patches.len() {
            let Some(oi) = ctl.patches[pi]
                .objects
                .iter()
                .position(|o| o.name.as_deref() == Some(name))
            else {
                continue;
            };
            if let Err(e) = self.object_coming(&mut ctl, pi, oi, name) {
                let pname = ctl.patches[pi].name.clone();
                self.say(
                    &ctl,
                    Level::Warning,
                    format_args!(
                        "patch '{pname}' failed for module '{name}', refusing to load module '{name}'"
                    ),
                );
                let o = &mut ctl.patches[pi].objects[oi];
                o.loaded = false;
                for f in &mut o.funcs {
                    f.site = None;
                }
                // Undo the earlier patches for this module.
                for id in done {
                    if let Some(pj) = ctl.patches.iter().position(|p| p.id == id) {
                        self.object_going(&mut ctl, pj, name);
                    }
                }
                return Err(e);
            }
            done.push(ctl.patches[pi].id);
        }
        Ok(())
    }

    /// One patch's object of the coming module: resolve, pre-patch, patch, post-patch.
    fn object_coming(
        &self,
        ctl: &mut Control,
        pi: usize,
        oi: usize,
        name: &str,
    ) -> Result<(), i32> {
        let pname = ctl.patches[pi].name.clone();
        ctl.patches[pi].objects[oi].loaded = true;
        if let Err((e, line)) = crate::core::resolve_object(&mut ctl.patches[pi].objects[oi]) {
            self.say(ctl, Level::Err, format_args!("{line}"));
            self.say(
                ctl,
                Level::Warning,
                format_args!(
                    "failed to initialize patch '{pname}' for module '{name}' ({})",
                    e.errno()
                ),
            );
            return Err(e.errno());
        }
        self.say(
            ctl,
            Level::Notice,
            format_args!("applying patch '{pname}' to loading module '{name}'"),
        );
        if let Err(e) = self.pre_patch(ctl, pi, oi) {
            self.say(
                ctl,
                Level::Warning,
                format_args!("pre-patch callback failed for object '{name}'"),
            );
            return Err(e);
        }
        if let Err(e) = self.patch_object(ctl, pi, oi) {
            self.say(
                ctl,
                Level::Warning,
                format_args!(
                    "failed to apply patch '{pname}' to module '{name}' ({})",
                    e.errno()
                ),
            );
            self.post_unpatch(ctl, pi, oi);
            return Err(e.errno());
        }
        if ctl.transition != Some(pi) {
            self.post_patch(ctl, pi, oi);
        }
        Ok(())
    }

    pub(crate) fn module_going(&'static self, name: &str) {
        let Ok(mut ctl) = self.lock() else {
            // Only a thread that holds the lock gets here (the loader lock refuses such
            // callers before); nothing of this engine was applied by it.
            return;
        };
        for pi in 0..ctl.patches.len() {
            self.object_going(&mut ctl, pi, name);
        }
    }

    pub(crate) fn object_going(&self, ctl: &mut Control, pi: usize, name: &str) {
        let Some(oi) = ctl.patches[pi]
            .objects
            .iter()
            .position(|o| o.name.as_deref() == Some(name))
        else {
            return;
        };
        if !ctl.patches[pi].objects[oi].loaded {
            return;
        }
        if ctl.transition != Some(pi) {
            self.pre_unpatch(ctl, pi, oi);
        }
        let pname = ctl.patches[pi].name.clone();
        self.say(
            ctl,
            Level::Notice,
            format_args!("reverting patch '{pname}' on unloading module '{name}'"),
        );
        {
            let Control { patches, sites, .. } = &mut *ctl;
            self.unpatch_object(sites, &mut patches[pi].objects[oi], false);
        }
        // The module's code is going away: no handler may still return into it.
        self.synchronize(ctl);
        self.post_unpatch(ctl, pi, oi);
        let Control { patches, sites, .. } = &mut *ctl;
        let o = &mut patches[pi].objects[oi];
        o.loaded = false;
        for f in &mut o.funcs {
            // Its memory goes with the module: never settled (it stays withdrawn, and its
            // calls, if any still come, take the full decision and find no owner).
            if let Some(gone) = f.site {
                sites.unsettled.retain(|s| !std::ptr::eq(*s, gone));
            }
            f.site = None;
            if f.nop {
                f.new_func = None;
            }
        }
    }
}
