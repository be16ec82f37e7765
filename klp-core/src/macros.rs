//! `patchable!`: define a patchable Rust function.

/// Define a patchable function: the function, its site, and the site's registration when
/// the program (or shared object) is loaded.
///
/// ```
/// klp_core::patchable! {
///     /// Adds one.
///     pub fn add_one(x: u32) -> u32 { x + 1 }
/// }
/// assert_eq!(add_one(1), 2);
/// ```
///
/// Functions of a named object (a module) say so first; the object is live between
/// [`crate::load_object`] and [`crate::unload_object`]:
///
/// ```
/// klp_core::patchable! {
///     object = "my_module";
///     pub fn handler(n: u64) -> u64 { n }
/// }
/// ```
///
/// Free, non-generic functions only; arguments are plain identifiers. A replacement must
/// have exactly the function's type (`fn(u32) -> u32` above), which is checked when a
/// patch is enabled:
///
/// ```
/// use klp_core::{Func, Klp, KlpError, Object, Patch, patchable};
/// use klp_sync::Preempt;
///
/// patchable! {
///     fn scale(x: u32) -> u32 { x * 2 }
/// }
/// fn scale_wide(x: u64) -> u64 { x * 3 }
///
/// let klp = Klp::new(Preempt::new());
/// let patch = Patch::new("bad_scale")
///     .object(Object::vmlinux().func(Func::new("scale", scale_wide as fn(u64) -> u64)));
/// assert!(matches!(klp.enable(patch), Err(KlpError::Invalid(_))));
/// assert_eq!(scale(2), 4); // nothing changed
/// ```
///
/// A call of a patchable function runs the implementation of the calling thread's patch
/// state: the original, or the newest replacement of the patches the thread has switched
/// to ([`Klp`](crate::Klp) describes when threads switch).
#[macro_export]
macro_rules! patchable {
    (object = $obj:literal; $($rest:tt)*) => {
        $crate::patchable!(@site ::core::option::Option::Some($obj); $($rest)*);
    };
    (@site $obj:expr; $(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[inline]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            type __KlpSig = fn($($ty),*) $(-> $ret)?;
            fn __klp_original($($arg: $ty),*) $(-> $ret)? $body
            fn __klp_sig() -> ::core::any::TypeId {
                ::core::any::TypeId::of::<__KlpSig>()
            }
            static __KLP_SITE: $crate::Site = $crate::Site::new(
                $obj,
                ::core::stringify!($name),
                __klp_original as __KlpSig as *const (),
                ::core::option::Option::Some(__klp_sig),
            );
            #[used]
            #[unsafe(link_section = ".init_array")]
            static __KLP_REGISTER: extern "C" fn() = {
                extern "C" fn __klp_register() {
                    __KLP_SITE.register();
                }
                __klp_register
            };
            let __klp_marker = 0u8;
            let __klp_frame = ::core::ptr::addr_of!(__klp_marker) as usize;
            let (__klp_imp, __klp_leave) = $crate::enter_guarded(&__KLP_SITE, __klp_frame);
            // SAFETY: every implementation a site hands out is the original or a
            // replacement whose type was checked against `__KlpSig` when it was enabled.
            let __klp_fn = unsafe { ::core::mem::transmute::<*const (), __KlpSig>(__klp_imp) };
            let __klp_ret = __klp_fn($($arg),*);
            ::core::mem::drop(__klp_leave);
            ::core::hint::black_box(&__klp_marker);
            __klp_ret
        }
    };
    ($($rest:tt)*) => {
        $crate::patchable!(@site ::core::option::Option::None; $($rest)*);
    };
}
