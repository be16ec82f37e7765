//! A func as the call path sees it: one entry of a site's func_stack (the kernel's
//! `struct klp_func` as `klp_ftrace_handler` reads it).

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

/// `FuncNode::magic` of a live node.
const NODE_LIVE: u64 = 0x6b6c_705f_6c69_7665;
/// `FuncNode::magic` of a freed node.
const NODE_DEAD: u64 = 0xdead_dead_dead_dead;

/// One entry of a site's func_stack.
pub struct FuncNode {
    /// `NODE_LIVE` until the node is freed: the handler checks it, so that a use after
    /// free (a grace period that did not wait) is caught rather than jumped through.
    magic: AtomicU64,
    /// The replacement (for a nop: the original).
    pub(crate) new_func: AtomicPtr<()>,
    pub(crate) nop: bool,
    /// The func is being applied or reverted.
    pub(crate) transition: AtomicBool,
    /// The entry below (older), or null.
    pub(crate) next: AtomicPtr<FuncNode>,
}

impl FuncNode {
    /// A live node, not on any stack.
    pub(crate) fn new(new_func: *const (), nop: bool) -> Self {
        FuncNode {
            magic: AtomicU64::new(NODE_LIVE),
            new_func: AtomicPtr::new(new_func.cast_mut()),
            nop,
            transition: AtomicBool::new(false),
            next: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// Abort on a node that was freed: the grace period did not protect this reader.
    #[inline(always)]
    pub(crate) fn check(&self) {
        if self.magic.load(Ordering::Relaxed) != NODE_LIVE {
            poisoned();
        }
    }

    /// Poison the node before its memory goes back.
    pub(crate) fn kill(&self) {
        self.magic.store(NODE_DEAD, Ordering::Relaxed);
        self.new_func.store(std::ptr::null_mut(), Ordering::Relaxed);
    }
}

#[cold]
#[inline(never)]
fn poisoned() -> ! {
    eprintln!("klp-core: the handler read a freed func record (a grace period did not wait)");
    std::process::abort();
}
