//! The memory of one shadow variable: a header and the data, in one block.
//!
//! ```text
//! offset 0   next  AtomicPtr<Header>   the bucket chain; the only field written after
//!                                      publication (by unlinking writers, under the lock)
//!        8   obj   *const c_void       the key; written once, before publication
//!       16   id    u64
//!       24   size  usize               of the data, to rebuild the layout when freeing
//!       32   data  [u8; size]          aligned to DATA_ALIGN, zeroed at allocation
//! ```
//!
//! A block goes through three states: *fresh* (allocated, owned by the allocating thread
//! through [`Fresh`], invisible to everyone else), *linked* (published in a bucket, owned by
//! the table) and *retired* (unlinked, waiting for a grace period in a [`Retired`] batch,
//! then poisoned and returned to the allocator). The outstanding-allocation counter counts
//! blocks in all three states.

use std::alloc::Layout;
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// The alignment of every shadow variable's data: enough for any scalar or SIMD type of
/// the common ABIs (`max_align_t` is 16 on x86-64 and aarch64).
pub const DATA_ALIGN: usize = 16;

/// The byte written over a variable's data just before its memory goes back to the
/// allocator (the kernel's `POISON_FREE`). A reader that finds it has read freed memory.
pub const POISON: u8 = 0x6b;

/// The header in front of the data. Its size is a multiple of [`DATA_ALIGN`], so the data
/// right behind it is aligned.
#[repr(C, align(16))]
pub(super) struct Header {
    pub(super) next: AtomicPtr<Header>,
    pub(super) obj: *const c_void,
    pub(super) id: u64,
    size: usize,
}

const DATA_OFFSET: usize = size_of::<Header>();
const _: () = assert!(DATA_OFFSET.is_multiple_of(DATA_ALIGN) && align_of::<Header>() == DATA_ALIGN);

fn layout(size: usize) -> Option<Layout> {
    Layout::from_size_align(DATA_OFFSET.checked_add(size)?, DATA_ALIGN).ok()
}

/// Blocks allocated and not yet given back, shared by a store and its pending reclaims.
/// Aligned to a cache line so that it does not share one with the store's hot fields.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(super) struct Counter(AtomicUsize);

impl Counter {
    pub(super) fn get(&self) -> usize {
        // Acquire pairs with the Release decrement in `free_block`: whoever reads 0 also
        // sees every reclaim as done.
        self.0.load(Ordering::Acquire)
    }
}

/// The data of a block.
///
/// # Safety
///
/// 1. `node` points to a live block (fresh, linked or retired but not yet reclaimed).
pub(super) unsafe fn data(node: NonNull<Header>) -> NonNull<u8> {
    // SAFETY: the block is DATA_OFFSET + size bytes long (clause 1), so the data offset is
    // in bounds (one past the end when size is 0, which `add` allows).
    unsafe { node.cast::<u8>().add(DATA_OFFSET) }
}

/// Give a block back: poison its data, free it, count it.
///
/// # Safety
///
/// 1. `node` was allocated by [`Fresh::new`] and is not reachable by any thread any more:
///    never published, or unlinked and a grace period has passed since.
/// 2. Nothing uses the block after this call.
unsafe fn free_block(node: NonNull<Header>, counter: &Counter) {
    // SAFETY: the block is live and exclusively ours (clause 1).
    let size = unsafe { node.as_ref() }.size;
    // SAFETY: as above; the data is `size` bytes.
    let data = unsafe { data(node) };
    // SAFETY: `data` is valid for `size` writes of u8 and no one else accesses it
    // (clause 1).
    unsafe { data.as_ptr().write_bytes(POISON, size) };
    let layout = layout(size).expect("the layout was valid at allocation");
    // SAFETY: the block was allocated with this very layout by `Fresh::new` (clause 1,
    // `size` is the one stored there) and is not used again (clause 2).
    unsafe { std::alloc::dealloc(node.as_ptr().cast(), layout) };
    // Release: the poisoning and the free happen-before an Acquire load that sees the
    // decrement (`Counter::get`).
    counter.0.fetch_sub(1, Ordering::Release);
}

/// A block that only the allocating thread knows about. Dropping it frees it at once,
/// which is how every failure path (a duplicate, a failed or panicking constructor) gets
/// rid of it.
pub(super) struct Fresh<'a> {
    node: NonNull<Header>,
    counter: &'a Counter,
}

impl<'a> Fresh<'a> {
    /// A zeroed block for `size` bytes of data keyed by `(obj, id)`; `None` when the size
    /// does not fit a layout or the allocator fails (the kernel's `kzalloc` returning
    /// NULL).
    pub(super) fn new(
        obj: *const c_void,
        id: u64,
        size: usize,
        counter: &'a Counter,
    ) -> Option<Self> {
        let layout = layout(size)?;
        // SAFETY: the layout is at least DATA_OFFSET (32) bytes, never zero-sized.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let node = NonNull::new(raw.cast::<Header>())?;
        // Relaxed: the counter is a statistic; reclaims order themselves with Release.
        counter.0.fetch_add(1, Ordering::Relaxed);
        let header = Header {
            next: AtomicPtr::new(std::ptr::null_mut()),
            obj,
            id,
            size,
        };
        // SAFETY: `node` is a fresh allocation of at least size_of::<Header>() bytes,
        // aligned for Header (DATA_ALIGN).
        unsafe { node.as_ptr().write(header) };
        Some(Fresh { node, counter })
    }

    /// The data, zeroed until a constructor writes to it.
    pub(super) fn data(&self) -> NonNull<u8> {
        // SAFETY: the block lives as long as `self`.
        unsafe { data(self.node) }
    }

    /// The header, to set `next` before publication.
    pub(super) fn header(&self) -> &Header {
        // SAFETY: the block lives as long as `self` and its header was written in `new`.
        unsafe { self.node.as_ref() }
    }

    /// Hand the block over to the table: the caller is about to publish it.
    pub(super) fn into_linked(self) -> NonNull<Header> {
        let node = self.node;
        std::mem::forget(self);
        node
    }
}

impl Drop for Fresh<'_> {
    fn drop(&mut self) {
        // SAFETY: a fresh block was never published (clause 1) and `self` is its only
        // handle, gone after this (clause 2).
        unsafe { free_block(self.node, self.counter) };
    }
}

/// Unlinked blocks on their way back to the allocator.
pub(super) struct Retired {
    nodes: Vec<NonNull<Header>>,
    counter: Arc<Counter>,
}

// SAFETY: the blocks are unlinked and owned by this batch alone (`push` clause 1); the
// batch frees them on whichever thread runs it, which the global allocator allows.
unsafe impl Send for Retired {}

impl Retired {
    pub(super) fn new(counter: Arc<Counter>) -> Self {
        Retired {
            nodes: Vec::new(),
            counter,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Add an unlinked block.
    ///
    /// # Safety
    ///
    /// 1. `node` is a block of the table that the caller has just unlinked (under its
    ///    lock), so no new reader can find it and no writer will touch it again; it is in
    ///    no other batch.
    pub(super) unsafe fn push(&mut self, node: NonNull<Header>) {
        self.nodes.push(node);
    }

    /// Free every block.
    ///
    /// # Safety
    ///
    /// 1. A grace period of the table's flavor has passed since the last `push`, so no
    ///    reader can still be looking at any of the blocks.
    pub(super) unsafe fn reclaim(self) {
        for &node in &self.nodes {
            // SAFETY: unlinked and exclusively ours (`push` clause 1), unreachable by
            // readers after the grace period (clause 1); `self` is consumed, so each block
            // is freed once.
            unsafe { free_block(node, &self.counter) };
        }
    }
}
