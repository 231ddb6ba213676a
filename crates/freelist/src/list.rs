//! [`FreeList`]: one thread's list, plain cells.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::ptr::{self, NonNull};

use allocator_api2::alloc::{AllocError, Allocator};

use crate::{FreeListStats, PyMalloc, block_layout, next_of, set_next};

/// A bounded LIFO cache of free blocks of one layout over the allocator `A`, for one thread
/// (it is `!Sync`: share it by ownership, like CPython's free lists under the GIL).
///
/// Requests of exactly its layout (size and alignment) are served from the list; every other
/// request goes to `A`. A capacity of 0 turns the list off (every request goes down).
///
/// ```
/// use core::alloc::Layout;
/// use pymalloc_freelist::{FreeList, PyMalloc};
///
/// static PY: PyMalloc = PyMalloc::new();
/// let list = FreeList::new(Layout::new::<[u64; 5]>(), 80, &PY);
/// let a = list.alloc();          // a miss: from PyMalloc
/// unsafe { list.free(a) };       // kept on the list
/// let b = list.alloc();          // a hit: the same block, PyMalloc not called
/// assert_eq!(a, b);
/// assert_eq!((list.stats().hits, list.stats().misses), (1, 1));
/// unsafe { list.free(b) };
/// ```
// `repr(C)`, in this order: `len` and `hits`, both written by a hit, must not be neighbours.
// When they were, the compiler wrote both with one 16-byte vector store, and the next free's
// 8-byte load of `len` waited on it (a store-to-load forwarding stall): a hit took 9.4 ns
// against 6.3 ns for a PyMalloc pair, with half the instructions.
#[repr(C)]
pub struct FreeList<'a, A: GlobalAlloc + ?Sized = PyMalloc> {
    head: Cell<*mut u8>, // first free block, linked through its first word; null if empty
    len: Cell<usize>,    // blocks on the list
    cap: usize,          // most blocks kept
    below: &'a A,        // the layer below
    layout: Layout,      // what callers ask for
    block: Layout,       // what is asked of `below`: `layout`, at least a pointer's size
    hits: Cell<u64>,     // see `FreeListStats`
    misses: Cell<u64>,   //
    frees_down: Cell<u64>, //
    cleared: Cell<u64>,  //
}

impl<'a, A: GlobalAlloc + ?Sized> FreeList<'a, A> {
    /// An empty list for blocks of `layout`, keeping at most `cap` of them, over `below`.
    pub const fn new(layout: Layout, cap: usize, below: &'a A) -> Self {
        Self {
            layout,
            block: block_layout(layout),
            cap,
            below,
            head: Cell::new(ptr::null_mut()),
            len: Cell::new(0),
            hits: Cell::new(0),
            misses: Cell::new(0),
            frees_down: Cell::new(0),
            cleared: Cell::new(0),
        }
    }

    /// The layout this list serves.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Most blocks kept.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Blocks on the list now.
    pub fn len(&self) -> usize {
        self.len.get()
    }

    /// Whether the list holds no block.
    pub fn is_empty(&self) -> bool {
        self.len.get() == 0
    }

    /// The layer below.
    pub fn below(&self) -> &'a A {
        self.below
    }

    /// A block of the list's layout: from the list if it holds one, else from the layer below.
    /// Null if the layer below fails.
    #[inline]
    pub fn alloc(&self) -> *mut u8 {
        let b = self.head.get();
        if !b.is_null() {
            // SAFETY: a block on the list is free, ours and holds its link.
            self.head.set(unsafe { next_of(b) });
            self.len.set(self.len.get() - 1);
            self.hits.set(self.hits.get() + 1);
            return b;
        }
        self.alloc_below()
    }

    #[cold]
    #[inline(never)]
    fn alloc_below(&self) -> *mut u8 {
        self.misses.set(self.misses.get() + 1);
        // SAFETY: `block` has a non-zero size (at least a pointer's).
        unsafe { self.below.alloc(self.block) }
    }

    /// Frees a block: onto the list if it has room, else to the layer below.
    ///
    /// # Safety
    /// `block` came from [`alloc`](Self::alloc) of this list, or of another list of the same
    /// layout over the same allocator (blocks are asked of the layer below with the list's
    /// layout, its size rounded up to a pointer's), is live, and is not used after this call.
    #[inline]
    pub unsafe fn free(&self, block: *mut u8) {
        let n = self.len.get();
        if n < self.cap {
            // SAFETY: the block is free from now on and at least a pointer's size.
            unsafe { set_next(block, self.head.get()) };
            self.head.set(block);
            self.len.set(n + 1);
            return;
        }
        self.frees_down.set(self.frees_down.get() + 1);
        // SAFETY: the block came from `below` with `self.block` (caller's contract).
        unsafe { self.below.dealloc(block, self.block) };
    }

    /// Gives every block on the list back to the layer below; returns how many.
    pub fn clear(&self) -> usize {
        let mut n = 0;
        let mut b = self.head.replace(ptr::null_mut());
        while !b.is_null() {
            // SAFETY: a block on the list is free, ours and holds its link; it came from
            // `below` with `self.block`.
            unsafe {
                let next = next_of(b);
                self.below.dealloc(b, self.block);
                b = next;
            }
            n += 1;
        }
        self.len.set(0);
        self.cleared.set(self.cleared.get() + n as u64);
        n
    }

    /// The list's counters.
    pub fn stats(&self) -> FreeListStats {
        FreeListStats {
            hits: self.hits.get(),
            misses: self.misses.get(),
            frees_kept: self.hits.get() + self.cleared.get() + self.len.get() as u64,
            frees_down: self.frees_down.get(),
            cleared: self.cleared.get(),
            len: self.len.get(),
        }
    }
}

impl<A: GlobalAlloc + ?Sized> Drop for FreeList<'_, A> {
    /// The cached blocks go back to the layer below.
    fn drop(&mut self) {
        self.clear();
    }
}

// SAFETY: blocks of the list's layout are distinct live blocks of `below` obtained with
// `block` (which fits `layout`), handed out once until freed; every other layout is `below`'s
// own. `dealloc` routes by the same layout test as `alloc`. Nothing unwinds.
unsafe impl<A: GlobalAlloc + ?Sized> GlobalAlloc for FreeList<'_, A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout == self.layout {
            self.alloc()
        } else {
            // SAFETY: the caller's layout is valid for `below`.
            unsafe { self.below.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout == self.layout {
            let p = self.alloc();
            if !p.is_null() {
                // SAFETY: the block has `layout.size()` bytes.
                unsafe { p.write_bytes(0, layout.size()) };
            }
            p
        } else {
            // SAFETY: as in `alloc`.
            unsafe { self.below.alloc_zeroed(layout) }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout == self.layout {
            // SAFETY: a block of our layout came from our `alloc` (GlobalAlloc contract).
            unsafe { self.free(ptr) }
        } else {
            // SAFETY: any other layout's block is `below`'s.
            unsafe { self.below.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `new_size` with `layout.align()` is a valid layout (GlobalAlloc contract).
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if layout != self.layout && new != self.layout {
            // SAFETY: the block and both layouts are `below`'s.
            return unsafe { self.below.realloc(ptr, layout, new_size) };
        }
        // SAFETY: `new` is valid; on success the old block is live and `new_size` bytes or
        // more are copied from the smaller of the two.
        unsafe {
            let p = GlobalAlloc::alloc(self, new);
            if !p.is_null() {
                ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                GlobalAlloc::dealloc(self, ptr, layout);
            }
            p
        }
    }
}

// SAFETY: blocks returned by `allocate` stay valid until `deallocate` (or the list's drop,
// which only gives back the blocks on the list, never a block handed out); a `&FreeList` is
// `Copy` and every copy refers to the same list, so a block may be freed through any copy.
unsafe impl<A: GlobalAlloc + ?Sized> Allocator for &FreeList<'_, A> {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(NonNull::slice_from_raw_parts(dangling(layout), 0));
        }
        // SAFETY: a valid layout of non-zero size.
        let p = unsafe { GlobalAlloc::alloc(*self, layout) };
        NonNull::new(p)
            .map(|p| NonNull::slice_from_raw_parts(p, layout.size()))
            .ok_or(AllocError)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            // SAFETY: allocated by `allocate` with this layout.
            unsafe { GlobalAlloc::dealloc(*self, ptr.as_ptr(), layout) }
        }
    }
}

/// A well-aligned dangling pointer for a zero-sized allocation.
pub(crate) fn dangling(layout: Layout) -> NonNull<u8> {
    NonNull::new(ptr::without_provenance_mut(layout.align())).unwrap_or(NonNull::dangling())
}
