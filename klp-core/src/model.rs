//! The patch model as an author writes it (the kernel's `struct klp_patch`,
//! `klp_object`, `klp_func`, `klp_callbacks`, `klp_state`), with a typed builder.
//!
//! ```
//! use klp_core::{Func, Object, Patch};
//!
//! fn fixed(x: u32) -> u32 { x + 1 }
//!
//! let patch = Patch::new("fix_1")
//!     .object(Object::vmlinux().func(Func::new("compute", fixed as fn(u32) -> u32)))
//!     .state(1, 1);
//! assert_eq!(patch.name(), "fix_1");
//! ```

use std::any::TypeId;
use std::ffi::c_void;
use std::sync::Arc;
use std::sync::atomic::{AtomicPtr, Ordering};

use crate::object::ModuleState;
use crate::site::Code;

/// A function pointer type usable as a replacement: `fn(A, ..) -> R`, also `unsafe` and
/// `extern "C"`, with up to eight arguments.
pub trait PatchFn: Copy + 'static {
    /// The code address.
    fn addr(self) -> *const ();
}

macro_rules! impl_patch_fn {
    ($($a:ident),*) => {
        impl<R: 'static, $($a: 'static),*> PatchFn for fn($($a),*) -> R {
            fn addr(self) -> *const () { self as *const () }
        }
        impl<R: 'static, $($a: 'static),*> PatchFn for unsafe fn($($a),*) -> R {
            fn addr(self) -> *const () { self as *const () }
        }
        impl<R: 'static, $($a: 'static),*> PatchFn for extern "C" fn($($a),*) -> R {
            fn addr(self) -> *const () { self as *const () }
        }
        impl<R: 'static, $($a: 'static),*> PatchFn for unsafe extern "C" fn($($a),*) -> R {
            fn addr(self) -> *const () { self as *const () }
        }
    };
}

impl_patch_fn!();
impl_patch_fn!(A1);
impl_patch_fn!(A1, A2);
impl_patch_fn!(A1, A2, A3);
impl_patch_fn!(A1, A2, A3, A4);
impl_patch_fn!(A1, A2, A3, A4, A5);
impl_patch_fn!(A1, A2, A3, A4, A5, A6);
impl_patch_fn!(A1, A2, A3, A4, A5, A6, A7);
impl_patch_fn!(A1, A2, A3, A4, A5, A6, A7, A8);

/// One replaced function (`struct klp_func`).
#[derive(Clone, Debug)]
pub struct Func {
    pub(crate) old_name: String,
    pub(crate) new_func: Option<Code>,
    pub(crate) sig: Option<TypeId>,
    pub(crate) old_sympos: u64,
}

impl Func {
    /// Replace the function named `old_name` by `new_func`. The replacement's type must be
    /// the original's: checked when the patch is enabled.
    pub fn new<T: PatchFn>(old_name: &str, new_func: T) -> Self {
        Func {
            old_name: old_name.to_owned(),
            new_func: Some(Code(new_func.addr())),
            sig: Some(TypeId::of::<T>()),
            old_sympos: 0,
        }
    }

    /// Replace `old_name` by the code at `new_func`, with no type check (C functions).
    /// A null `new_func` is refused at enable time (`-EINVAL`), as the kernel does.
    pub fn raw(old_name: &str, new_func: *const ()) -> Self {
        Func {
            old_name: old_name.to_owned(),
            new_func: (!new_func.is_null()).then_some(Code(new_func)),
            sig: None,
            old_sympos: 0,
        }
    }

    /// Select the `pos`-th function of that name in its object (`old_sympos`; 0, the
    /// default, means the name must be unique).
    pub fn sympos(mut self, pos: u64) -> Self {
        self.old_sympos = pos;
        self
    }
}

/// A callback's view of its object and patch.
pub struct ObjectCtx<'a> {
    pub(crate) patch: &'a str,
    pub(crate) object: Option<&'a str>,
    pub(crate) states: &'a [Arc<State>],
    pub(crate) prev_state: &'a dyn Fn(u64) -> Option<Arc<State>>,
    pub(crate) log: &'a crate::log::Log,
}

impl ObjectCtx<'_> {
    /// The patch's name.
    pub fn patch(&self) -> &str {
        self.patch
    }

    /// The object's name (`None`: the main program).
    pub fn object(&self) -> Option<&str> {
        self.object
    }

    /// The object's module state (`None` for the main program), what
    /// `obj->mod->state` tells a kernel callback.
    pub fn module_state(&self) -> Option<ModuleState> {
        self.object.and_then(crate::object::object_state)
    }

    /// How the kernel's callback selftest modules name the object: `vmlinux`, or
    /// `<module> -> <state>`.
    pub fn describe(&self) -> String {
        match (self.object, self.module_state()) {
            (Some(name), Some(st)) => format!("{name} -> {}", st.describe()),
            (Some(name), None) => name.to_owned(),
            (None, _) => "vmlinux".to_owned(),
        }
    }

    /// `klp_get_state(patch, id)` for this callback's patch.
    pub fn get_state(&self, id: u64) -> Option<Arc<State>> {
        self.states.iter().find(|s| s.id == id).cloned()
    }

    /// `klp_get_prev_state(id)`: the state from the newest patch before the one in
    /// transition.
    pub fn get_prev_state(&self, id: u64) -> Option<Arc<State>> {
        (self.prev_state)(id)
    }

    /// Write a line to the engine's log as the patch module would (`pr_info` with its
    /// own prefix): `line` is written as given.
    pub fn log(&self, line: &str) {
        self.log.raw(crate::log::Level::Info, line);
    }
}

/// `pre_patch`: may refuse the object with a negative errno.
pub type PrePatch = Arc<dyn Fn(&ObjectCtx<'_>) -> Result<(), i32> + Send + Sync>;
/// `post_patch`, `pre_unpatch`, `post_unpatch`.
pub type Callback = Arc<dyn Fn(&ObjectCtx<'_>) + Send + Sync>;

/// The four callbacks of an object (`struct klp_callbacks`).
#[derive(Clone, Default)]
pub struct Callbacks {
    pub(crate) pre_patch: Option<PrePatch>,
    pub(crate) post_patch: Option<Callback>,
    pub(crate) pre_unpatch: Option<Callback>,
    pub(crate) post_unpatch: Option<Callback>,
}

impl std::fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callbacks")
            .field("pre_patch", &self.pre_patch.is_some())
            .field("post_patch", &self.post_patch.is_some())
            .field("pre_unpatch", &self.pre_unpatch.is_some())
            .field("post_unpatch", &self.post_unpatch.is_some())
            .finish()
    }
}

/// One patched object (`struct klp_object`): the main program or a named object.
#[derive(Clone, Debug)]
pub struct Object {
    pub(crate) name: Option<String>,
    pub(crate) funcs: Vec<Func>,
    pub(crate) callbacks: Callbacks,
}

impl Object {
    /// The main program (`vmlinux`).
    pub fn vmlinux() -> Self {
        Object {
            name: None,
            funcs: Vec::new(),
            callbacks: Callbacks::default(),
        }
    }

    /// The named object (a module: a shared object, or one registered by hand).
    pub fn named(name: &str) -> Self {
        Object {
            name: Some(name.to_owned()),
            funcs: Vec::new(),
            callbacks: Callbacks::default(),
        }
    }

    /// Add a replaced function.
    pub fn func(mut self, f: Func) -> Self {
        self.funcs.push(f);
        self
    }

    /// The `pre_patch` callback.
    pub fn pre_patch(
        mut self,
        f: impl Fn(&ObjectCtx<'_>) -> Result<(), i32> + Send + Sync + 'static,
    ) -> Self {
        self.callbacks.pre_patch = Some(Arc::new(f));
        self
    }

    /// The `post_patch` callback.
    pub fn post_patch(mut self, f: impl Fn(&ObjectCtx<'_>) + Send + Sync + 'static) -> Self {
        self.callbacks.post_patch = Some(Arc::new(f));
        self
    }

    /// The `pre_unpatch` callback.
    pub fn pre_unpatch(mut self, f: impl Fn(&ObjectCtx<'_>) + Send + Sync + 'static) -> Self {
        self.callbacks.pre_unpatch = Some(Arc::new(f));
        self
    }

    /// The `post_unpatch` callback.
    pub fn post_unpatch(mut self, f: impl Fn(&ObjectCtx<'_>) + Send + Sync + 'static) -> Self {
        self.callbacks.post_unpatch = Some(Arc::new(f));
        self
    }

    /// All four callbacks at once.
    pub fn callbacks(mut self, cb: Callbacks) -> Self {
        self.callbacks = cb;
        self
    }
}

impl Callbacks {
    /// No callbacks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set `pre_patch`.
    pub fn pre_patch(
        mut self,
        f: impl Fn(&ObjectCtx<'_>) -> Result<(), i32> + Send + Sync + 'static,
    ) -> Self {
        self.pre_patch = Some(Arc::new(f));
        self
    }

    /// Set `post_patch`.
    pub fn post_patch(mut self, f: impl Fn(&ObjectCtx<'_>) + Send + Sync + 'static) -> Self {
        self.post_patch = Some(Arc::new(f));
        self
    }

    /// Set `pre_unpatch`.
    pub fn pre_unpatch(mut self, f: impl Fn(&ObjectCtx<'_>) + Send + Sync + 'static) -> Self {
        self.pre_unpatch = Some(Arc::new(f));
        self
    }

    /// Set `post_unpatch`.
    pub fn post_unpatch(mut self, f: impl Fn(&ObjectCtx<'_>) + Send + Sync + 'static) -> Self {
        self.post_unpatch = Some(Arc::new(f));
        self
    }
}

/// A system state (`struct klp_state`): an id, a version, and data the patch manages.
#[derive(Debug)]
pub struct State {
    /// Non-zero identifier.
    pub id: u64,
    /// Compatibility version: a later patch may take the state over at the same or a
    /// higher version.
    pub version: u32,
    data: AtomicPtr<c_void>,
}

impl State {
    /// A state with no data.
    pub fn new(id: u64, version: u32) -> Self {
        State {
            id,
            version,
            data: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// The patch's data pointer (the core never touches it).
    pub fn data(&self) -> *mut c_void {
        self.data.load(Ordering::Acquire)
    }

    /// Set the data pointer.
    pub fn set_data(&self, p: *mut c_void) {
        self.data.store(p, Ordering::Release);
    }
}

/// A livepatch (`struct klp_patch`), ready to be enabled.
///
/// A patch is built, then handed to [`Klp::enable`](crate::Klp::enable): a name, the
/// [`Object`]s it patches (the main program, [`Object::vmlinux`], or named objects, the
/// kernel's modules), in each the replaced functions ([`Func`]) and the [`Callbacks`],
/// the system [`State`]s it sets up, and whether it is cumulative ([`Patch::replace`]).
/// A replacement must have exactly the type of the function it replaces; that and every
/// other rule are checked when the patch is enabled, and nothing changes when one fails.
///
/// # Example
///
/// A fix, then a cumulative patch that carries it with one more fix and takes its system
/// state over.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::time::Duration;
///
/// use klp_core::{Func, Klp, KlpError, Object, Patch, patchable};
/// use klp_sync::Preempt;
///
/// patchable! {
///     fn price(qty: u32) -> u32 { qty * 10 }
/// }
/// patchable! {
///     fn tax(amount: u32) -> u32 { amount / 10 }
/// }
/// fn price_v2(qty: u32) -> u32 { qty * 9 }
/// fn tax_v3(amount: u32) -> u32 { amount / 5 }
///
/// let klp = Klp::new(Preempt::new());
/// let post_patch_calls = Arc::new(AtomicUsize::new(0));
/// let calls = Arc::clone(&post_patch_calls);
///
/// let v2 = Patch::new("shop_v2")
///     .object(
///         Object::vmlinux()
///             .func(Func::new("price", price_v2 as fn(u32) -> u32))
///             // Runs once every thread runs the new code.
///             .post_patch(move |ctx| {
///                 assert_eq!(ctx.describe(), "vmlinux");
///                 calls.fetch_add(1, Ordering::SeqCst);
///             }),
///     )
///     .state(1, 1); // system state 1, version 1: something this patch set up
/// assert_eq!(v2.name(), "shop_v2");
/// klp.enable(v2)?;
/// klp.wait(Duration::from_secs(10))?;
/// assert_eq!((price(2), tax(100)), (18, 10));
/// assert_eq!(post_patch_calls.load(Ordering::SeqCst), 1);
/// assert_eq!(klp.get_state("shop_v2", 1).map(|s| s.version), Some(1));
///
/// // Atomic replace: the new patch holds every fix still wanted and every state still
/// // set up (at the same or a higher version); the patches before it are replaced.
/// let v3 = Patch::new("shop_v3")
///     .object(
///         Object::vmlinux()
///             .func(Func::new("price", price_v2 as fn(u32) -> u32))
///             .func(Func::new("tax", tax_v3 as fn(u32) -> u32))
///             // Runs before the transition: may take state 1 over, or refuse.
///             .pre_patch(|ctx| match ctx.get_prev_state(1) {
///                 Some(prev) if prev.version <= 2 => Ok(()),
///                 _ => Err(-klp_core::libc_errno::EINVAL),
///             }),
///     )
///     .state(1, 2)
///     .replace(true);
/// klp.enable(v3)?;
/// klp.wait(Duration::from_secs(10))?;
/// assert_eq!((price(2), tax(100)), (18, 20));
/// let names: Vec<String> = klp.patches().into_iter().map(|p| p.name).collect();
/// assert_eq!(names, ["shop_v3"]);
///
/// klp.set_enabled("shop_v3", false)?;
/// klp.wait(Duration::from_secs(10))?;
/// assert_eq!((price(2), tax(100)), (20, 10));
/// # Ok::<(), KlpError>(())
/// ```
#[derive(Clone)]
pub struct Patch {
    pub(crate) name: String,
    pub(crate) objects: Vec<Object>,
    pub(crate) states: Vec<Arc<State>>,
    pub(crate) replace: bool,
    pub(crate) on_release: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Patch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Patch")
            .field("name", &self.name)
            .field("objects", &self.objects)
            .field("states", &self.states)
            .field("replace", &self.replace)
            .finish_non_exhaustive()
    }
}

impl Patch {
    /// A patch named `name` (the kernel takes the livepatch module's name).
    pub fn new(name: &str) -> Self {
        Patch {
            name: name.to_owned(),
            objects: Vec::new(),
            states: Vec::new(),
            replace: false,
            on_release: None,
        }
    }

    /// The patch's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Add an object.
    pub fn object(mut self, o: Object) -> Self {
        self.objects.push(o);
        self
    }

    /// Add a system state (id 0 is the kernel's terminator and is ignored).
    pub fn state(mut self, id: u64, version: u32) -> Self {
        if id != 0 {
            self.states.push(Arc::new(State::new(id, version)));
        }
        self
    }

    /// Atomic replace: a cumulative patch that replaces every patch before it.
    pub fn replace(mut self, replace: bool) -> Self {
        self.replace = replace;
        self
    }

    /// Run `f` once the patch has been released: disabled (or replaced) and no thread
    /// can run its code any more. Never runs for a patch involved in a forced
    /// transition (the kernel's `forced` keeps the module reference forever).
    pub fn on_release(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_release = Some(Arc::new(f));
        self
    }
}
