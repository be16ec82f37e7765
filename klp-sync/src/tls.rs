//! A thread-local pointer with the initial-exec access model.
//!
//! Rust's `thread_local!` in a shared library (`libklp.so`) uses the general-dynamic
//! model: every access calls `__tls_get_addr`, a few nanoseconds that the call path of a
//! patchable function pays twice or more. [`fast_thread_ptr!`](crate::fast_thread_ptr)
//! defines the variable in assembly in the static TLS block instead and reads it with
//! two instructions (`mov` of its offset from the GOT, `mov` through `%fs`), in an
//! executable and in a shared object alike. The variable takes eight bytes of static TLS
//! (a shared object opened late gets them from the loader's reserve). Elsewhere than
//! x86-64 Linux, and in loom builds, it is a `thread_local!` cell.

/// Define `$name`, a thread-local `*const $ty` starting NULL, with `get()` and
/// `set(p)`. `$sym` is the assembly symbol, unique in the program (hidden: each shared
/// object has its own).
#[doc(hidden)]
#[macro_export]
macro_rules! fast_thread_ptr {
    ($vis:vis $name:ident: $ty:ty, $sym:literal) => {
        $vis struct $name;

        #[cfg(all(target_arch = "x86_64", target_os = "linux", not(klp_loom)))]
        ::std::arch::global_asm!(
            ".pushsection .tbss,\"awT\",@nobits",
            ".p2align 3",
            concat!(".globl ", $sym),
            concat!(".hidden ", $sym),
            concat!(".type ", $sym, ",@object"),
            concat!(".size ", $sym, ",8"),
            concat!($sym, ":"),
            ".zero 8",
            ".popsection",
        );

        #[cfg(all(target_arch = "x86_64", target_os = "linux", not(klp_loom)))]
        impl $name {
            /// The calling thread's value.
            #[inline(always)]
            $vis fn get() -> *const $ty {
                let p: *const $ty;
                // SAFETY: reads the calling thread's 8-byte slot of static TLS defined
                // above: its offset from the thread pointer comes from the GOT.
                unsafe {
                    ::std::arch::asm!(
                        concat!("mov {p}, qword ptr [rip + ", $sym, "@GOTTPOFF]"),
                        "mov {p}, qword ptr fs:[{p}]",
                        p = out(reg) p,
                        options(nostack, readonly, preserves_flags),
                    );
                }
                p
            }

            /// Set the calling thread's value.
            #[inline(always)]
            $vis fn set(p: *const $ty) {
                // SAFETY: writes the calling thread's slot (see `get`).
                unsafe {
                    ::std::arch::asm!(
                        concat!("mov {t}, qword ptr [rip + ", $sym, "@GOTTPOFF]"),
                        "mov qword ptr fs:[{t}], {p}",
                        t = out(reg) _,
                        p = in(reg) p,
                        options(nostack, preserves_flags),
                    );
                }
            }
        }

        #[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(klp_loom))))]
        impl $name {
            #[inline(always)]
            fn cell() -> &'static ::std::thread::LocalKey<::std::cell::Cell<*const $ty>> {
                ::std::thread_local! {
                    static CELL: ::std::cell::Cell<*const $ty> =
                        const { ::std::cell::Cell::new(::std::ptr::null()) };
                }
                &CELL
            }

            /// The calling thread's value.
            #[inline(always)]
            $vis fn get() -> *const $ty {
                Self::cell().with(::std::cell::Cell::get)
            }

            /// Set the calling thread's value.
            #[inline(always)]
            $vis fn set(p: *const $ty) {
                Self::cell().with(|c| c.set(p))
            }
        }
    };
}

/// No key yet (keys are small numbers).
const KEY_NONE: u64 = u64::MAX;

/// A function run when a thread that armed it exits: a POSIX thread-specific key with a
/// destructor. Unlike a Rust thread-local with a destructor (whose registration takes
/// the dynamic loader's lock in glibc, so that a thread's first use would wait for
/// another thread inside `dlopen`, possibly for ever when a shared object's constructor
/// waits for that thread), arming takes no lock that the loader holds.
///
/// The hooks of a thread run after its Rust and C++ thread-local destructors (glibc runs
/// the keys' destructors last), so those may still use what the hook tears down.
pub struct ExitHook {
    /// The key, or `KEY_NONE` before the first arming.
    key: std::sync::atomic::AtomicU64,
    run: fn(),
}

impl ExitHook {
    /// A hook that runs `run` on the exiting thread.
    pub const fn new(run: fn()) -> Self {
        Self {
            key: std::sync::atomic::AtomicU64::new(KEY_NONE),
            run,
        }
    }

    /// Arm the hook for the calling thread (again: no effect). It runs once at the
    /// thread's exit; arming it during the exit of the thread runs it again after.
    pub fn arm(&'static self) {
        let key = match self.key.load(std::sync::atomic::Ordering::Acquire) {
            KEY_NONE => self.create_key(),
            k => k as libc::pthread_key_t,
        };
        // SAFETY: a key created above; the value is this static hook.
        unsafe { libc::pthread_setspecific(key, std::ptr::from_ref(self).cast()) };
    }

    #[cold]
    fn create_key(&'static self) -> libc::pthread_key_t {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is valid for the write; the destructor is a plain function.
        let r = unsafe { libc::pthread_key_create(&mut key, Some(Self::destructor)) };
        assert_eq!(r, 0, "pthread_key_create: {r}");
        // Published by one compare-and-swap (a fork never finds it half made); a key
        // that lost the race goes back.
        match self.key.compare_exchange(
            KEY_NONE,
            u64::from(key),
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
        ) {
            Ok(_) => key,
            Err(theirs) => {
                // SAFETY: our key, never used.
                unsafe { libc::pthread_key_delete(key) };
                theirs as libc::pthread_key_t
            }
        }
    }

    extern "C" fn destructor(hook: *mut libc::c_void) {
        // SAFETY: the value armed: a pointer to a static hook.
        let hook: &'static Self = unsafe { &*hook.cast_const().cast::<Self>() };
        // A panic must not unwind into the C runtime.
        if std::panic::catch_unwind(hook.run).is_err() {
            std::process::abort();
        }
    }
}
