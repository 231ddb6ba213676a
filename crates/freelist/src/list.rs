//! [`FreeList`]: one thread's list, plain cells.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::ptr;

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

crate::route::route_by_layout!(FreeList);
