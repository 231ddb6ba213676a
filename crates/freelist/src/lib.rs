//! Layer +3 of pymalloc-rs: bounded free lists of blocks of one layout, CPython's
//! object-specific allocators.
//!
//! CPython keeps a short list of freed objects for some types (80 lists, 80 dicts, 100 floats;
//! see `Objects/listobject.c`'s `free_list`) and hands them out again without calling the
//! allocator below. A free list here does the same for any one [`Layout`], over any
//! [`GlobalAlloc`](core::alloc::GlobalAlloc) (a [`PyMalloc`] by default):
//!
//! ```text
//!   alloc:  list not empty -> pop (a hit: the layer below is not called)
//!           list empty     -> the layer below (a miss)
//!   free:   len < cap      -> push
//!           len == cap     -> the layer below (a free passed down)
//! ```
//!
//! Invariant of each list: `len == |list| <= cap`; every block on it came from the layer below
//! with the list's block layout and is free. A cached block is still a block in use for the
//! layer below (it keeps its pool, as in CPython); [`FreeList::clear`] gives them all back
//! (CPython clears its free lists at a full collection, `clear_freelists`).
//!
//! Two ways to share a list:
//! - [`FreeList`]: owned by one thread, like CPython's lists under the GIL. Plain cells, no
//!   atomics; `!Sync`.
//! - [`SharedFreeList`]: usable from many threads (in a `static`), one list per thread as in
//!   CPython 3.13's free-threaded build. A thread finds its list by the slot number that also
//!   finds its heap in every `PyMalloc` ([`pymalloc::thread`]): a hit is a thread-local load,
//!   a pop and two plain stores, no lock and no atomic read-modify-write. A block freed on
//!   another thread goes to that thread's list (blocks of one layout are interchangeable) or
//!   down. See its docs for thread exit.
//!
//! Both implement [`GlobalAlloc`](core::alloc::GlobalAlloc) (their own layout is served from the list, every other layout
//! is passed to the layer below) and, by reference, [`allocator_api2::alloc::Allocator`], so
//! `allocator_api2`'s `Box::new_in` and `Vec::new_in`, and hashbrown, run on them.

#![deny(unsafe_op_in_unsafe_fn)]

mod list;
mod route;
mod shared;

pub use list::FreeList;
pub use shared::SharedFreeList;

use core::alloc::Layout;

pub use pymalloc::PyMalloc;

/// Counters of a free list (or the sum over a shared list's threads).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FreeListStats {
    /// Requests of the list's layout served from the list.
    pub hits: u64,
    /// Requests of the list's layout passed to the layer below (the list was empty).
    pub misses: u64,
    /// Blocks freed onto the list (counted as `hits + cleared + len`: every block kept has left
    /// by a hit or a clear, or is still there; no counter on the free path).
    pub frees_kept: u64,
    /// Blocks of the list's layout freed to the layer below (the list was full), not counting
    /// those given back by `clear()` or at thread exit.
    pub frees_down: u64,
    /// Blocks given back to the layer below by `clear()`, at thread exit or on drop.
    pub cleared: u64,
    /// Blocks on the list now.
    pub len: usize,
}

/// The layout of the blocks a list obtains for requests of `layout`: at least a pointer's
/// size, so that a free block can hold the link to the next one. Its alignment is the
/// caller's: links are read and written unaligned.
const fn block_layout(layout: Layout) -> Layout {
    let size = if layout.size() < size_of::<*mut u8>() {
        size_of::<*mut u8>()
    } else {
        layout.size()
    };
    match Layout::from_size_align(size, layout.align()) {
        Ok(l) => l,
        // Cannot fail: `size` is at most `layout.size()` rounded up to 8, which stays below
        // isize::MAX rounded to `align` for any valid layout whose size is at least 8, and
        // is 8 otherwise.
        Err(_) => layout,
    }
}

/// The link stored in the first word of a free block.
///
/// # Safety
/// `block` is a free block of at least a pointer's size, owned by the list.
#[inline(always)]
unsafe fn next_of(block: *mut u8) -> *mut u8 {
    // SAFETY: guaranteed by the caller; the block may be less aligned than a pointer.
    unsafe { block.cast::<*mut u8>().read_unaligned() }
}

/// # Safety
/// As for [`next_of`].
#[inline(always)]
unsafe fn set_next(block: *mut u8, next: *mut u8) {
    // SAFETY: guaranteed by the caller.
    unsafe { block.cast::<*mut u8>().write_unaligned(next) }
}
