//! [`SharedFreeList`]: one list per thread, found by the thread's slot.
//!
//! # Per-thread lists
//! Every thread that allocates through a `PyMalloc` holds a slot number
//! ([`pymalloc::thread::slot`]); the same number indexes `locals` here. A thread works on its
//! own list only, with plain loads and stores: no lock, no atomic read-modify-write. The
//! counters are atomics written only by the list's holder (a relaxed load and a store), so
//! that `stats()` may read them from any thread.
//!
//! A thread with no slot (every slot taken, or the thread is being torn down) has no list: its
//! requests and frees go to the layer below.
//!
//! # Thread exit
//! A slot outlives its thread: the next thread to take it would find the old list. Each list
//! remembers which *taking* of the slot filled it ([`pymalloc::thread::taking`]); a new holder
//! that finds another taking's blocks gives them all back to the layer below before it uses
//! the list. [`SharedFreeList::flush_at_thread_exit`] (for a list in a `static`) gives them
//! back at once, from the exiting thread. [`SharedFreeList::clear`] gives back the calling
//! thread's list and those of exited threads (claiming each free slot for the time it takes);
//! a list of a live thread is that thread's alone.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use pymalloc::thread::{self, MAX_SLOTS};

use crate::{FreeListStats, PyMalloc, block_layout, next_of, set_next};

/// One thread's list. Aligned to a cache line so that two threads' lists never share one.
#[repr(align(64))]
struct Local {
    head: UnsafeCell<*mut u8>, // first free block; null if empty (holder only)
    taking: UnsafeCell<u64>,   // the slot's taking that owns the blocks on the list (holder only)
    len: AtomicUsize,          // blocks on the list; written by the holder only
    hits: AtomicU64,           // counters as in `FreeListStats`; written by the holder only
    misses: AtomicU64,         //
    frees_down: AtomicU64,     //
    cleared: AtomicU64,        //
}

impl Local {
    const fn new() -> Self {
        Self {
            head: UnsafeCell::new(ptr::null_mut()),
            taking: UnsafeCell::new(0),
            len: AtomicUsize::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            frees_down: AtomicU64::new(0),
            cleared: AtomicU64::new(0),
        }
    }
}

/// Adds one to a counter written only by the list's holder: a load and a store, no
/// read-modify-write.
#[inline(always)]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed) + n, Relaxed);
}

/// A bounded LIFO cache of free blocks of one layout over `A`, with one list per thread, for
/// use from many threads (for example in a `static`).
///
/// A hit costs a thread-local load, a pop and two plain stores. A block freed on a thread goes
/// onto that thread's list (whichever thread allocated it) or, if that list is full, down.
/// The capacity is per thread.
///
/// ```
/// use core::alloc::Layout;
/// use pymalloc_freelist::{PyMalloc, SharedFreeList};
///
/// static PY: PyMalloc = PyMalloc::new();
/// static LISTS: SharedFreeList = SharedFreeList::new(Layout::new::<[u64; 4]>(), 80, &PY);
///
/// LISTS.flush_at_thread_exit();
/// std::thread::spawn(|| {
///     let a = LISTS.alloc();
///     unsafe { LISTS.free(a) };
///     assert_eq!(LISTS.alloc(), a); // a hit on this thread's list
///     unsafe { LISTS.free(a) };
/// })
/// .join()
/// .unwrap();
/// // The thread's list went back to PyMalloc when it exited.
/// assert_eq!(LISTS.stats().len, 0);
/// ```
pub struct SharedFreeList<'a, A: GlobalAlloc + ?Sized = PyMalloc> {
    layout: Layout,             // what callers ask for
    block: Layout,              // what is asked of `below`
    cap: usize,                 // most blocks kept per thread
    below: &'a A,               // the layer below
    locals: [Local; MAX_SLOTS], // by slot; slot 0 (no slot) is never used
}

// SAFETY: `locals[t]`'s cells are touched only by the holder of slot `t` (the thread that holds
// it, or a thread that claimed it while free, `pymalloc::thread::try_claim`, whose Acquire /
// Release hand the cells from one holder to the next); the rest is atomics or read-only.
// Blocks are plain memory of `below`, which may be freed from any thread (`A: Sync`).
unsafe impl<A: GlobalAlloc + Sync + ?Sized> Sync for SharedFreeList<'_, A> {}
// SAFETY: as above; the lists hold only raw blocks, which any thread may give back.
unsafe impl<A: GlobalAlloc + Sync + ?Sized> Send for SharedFreeList<'_, A> {}

impl<'a, A: GlobalAlloc + ?Sized> SharedFreeList<'a, A> {
    /// Empty lists for blocks of `layout`, each thread keeping at most `cap`, over `below`.
    pub const fn new(layout: Layout, cap: usize, below: &'a A) -> Self {
        Self {
            layout,
            block: block_layout(layout),
            cap,
            below,
            locals: [const { Local::new() }; MAX_SLOTS],
        }
    }

    /// The layout these lists serve.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Most blocks kept per thread.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// The calling thread's list, ready for use (blocks of a previous holder of the slot given
    /// back first), or `None` if the thread has no slot.
    #[inline(always)]
    fn local(&self) -> Option<&Local> {
        let t = thread::slot();
        if t == 0 {
            return self.local_slow();
        }
        let l = &self.locals[t];
        // SAFETY: we hold slot `t`, so its cells are ours.
        if unsafe { *l.taking.get() } != thread::taking() {
            self.adopt(l);
        }
        Some(l)
    }

    #[cold]
    #[inline(never)]
    fn local_slow(&self) -> Option<&Local> {
        let t = thread::register();
        if t == 0 {
            return None;
        }
        let l = &self.locals[t];
        // SAFETY: as in `local`.
        if unsafe { *l.taking.get() } != thread::taking() {
            self.adopt(l);
        }
        Some(l)
    }

    /// The calling thread has just taken the slot of `l`: what a previous holder left goes
    /// down, and the list is the caller's.
    #[cold]
    #[inline(never)]
    fn adopt(&self, l: &Local) {
        // SAFETY: the caller holds the slot.
        unsafe {
            self.drain(l);
            *l.taking.get() = thread::taking();
        }
    }

    /// Gives every block of `l` back to the layer below; returns how many.
    ///
    /// # Safety
    /// The caller holds `l`'s slot (as its thread, or by a claim).
    unsafe fn drain(&self, l: &Local) -> usize {
        let mut n = 0;
        // SAFETY: the caller holds the slot, so the cells are its own.
        let mut b = unsafe { l.head.get().replace(ptr::null_mut()) };
        while !b.is_null() {
            // SAFETY: a block on the list is free and holds its link; it came from `below`
            // with `self.block`.
            unsafe {
                let next = next_of(b);
                self.below.dealloc(b, self.block);
                b = next;
            }
            n += 1;
        }
        l.len.store(0, Relaxed);
        bump(&l.cleared, n as u64);
        n
    }

    /// A block of the lists' layout: from the calling thread's list if it holds one, else from
    /// the layer below. Null if the layer below fails.
    #[inline]
    pub fn alloc(&self) -> *mut u8 {
        if let Some(l) = self.local() {
            // SAFETY: the calling thread holds the slot: the cells are its own.
            let b = unsafe { *l.head.get() };
            if !b.is_null() {
                // SAFETY: as above; a block on the list is free and holds its link.
                unsafe { *l.head.get() = next_of(b) };
                l.len.store(l.len.load(Relaxed) - 1, Relaxed);
                bump(&l.hits, 1);
                return b;
            }
            bump(&l.misses, 1);
        }
        // SAFETY: `block` has a non-zero size.
        unsafe { self.below.alloc(self.block) }
    }

    /// Frees a block onto the calling thread's list if it has room, else to the layer below.
    ///
    /// # Safety
    /// `block` came from [`alloc`](Self::alloc) of these lists (on any thread), or of other
    /// lists of the same layout over the same allocator (blocks are asked of the layer below
    /// with the lists' layout, its size rounded up to a pointer's); it is live and not used
    /// after this call.
    #[inline]
    pub unsafe fn free(&self, block: *mut u8) {
        if let Some(l) = self.local() {
            let n = l.len.load(Relaxed);
            if n < self.cap {
                // SAFETY: the calling thread holds the slot; the block is free from now on
                // and at least a pointer's size.
                unsafe {
                    set_next(block, *l.head.get());
                    *l.head.get() = block;
                }
                l.len.store(n + 1, Relaxed);
                return;
            }
            bump(&l.frees_down, 1);
        }
        // SAFETY: the block came from `below` with `self.block` (caller's contract).
        unsafe { self.below.dealloc(block, self.block) };
    }

    /// Gives back to the layer below the calling thread's list and the lists of exited threads
    /// (whose slots are free); returns how many blocks. Lists of other live threads are theirs
    /// and stay.
    pub fn clear(&self) -> usize {
        let mut n = 0;
        let me = thread::slot();
        for (t, l) in self.locals.iter().enumerate().skip(1) {
            if t == me {
                // SAFETY: we hold our own slot.
                n += unsafe { self.drain(l) };
            } else if thread::try_claim(t) {
                // SAFETY: we hold the claim on the free slot `t`.
                n += unsafe { self.drain(l) };
                thread::release_claim(t);
            }
        }
        n
    }

    /// The counters, summed over every thread's list. `len` and the counters of other threads
    /// are read as they are at some moment during the call (they may be moving).
    pub fn stats(&self) -> FreeListStats {
        let mut s = FreeListStats::default();
        for l in &self.locals {
            s.hits += l.hits.load(Relaxed);
            s.misses += l.misses.load(Relaxed);
            s.frees_down += l.frees_down.load(Relaxed);
            s.cleared += l.cleared.load(Relaxed);
            s.len += l.len.load(Relaxed);
        }
        // Every block kept left by a hit or a clear, or is still there.
        s.frees_kept = s.hits + s.cleared + s.len as u64;
        s
    }
}

impl<A: GlobalAlloc + Sync + ?Sized> SharedFreeList<'static, A> {
    /// From now on, each thread's list goes back to the layer below when the thread exits
    /// (a pthread key destructor, run on the exiting thread). Returns `false` if the table of
    /// exit hooks ([`pymalloc::thread::MAX_EXIT_HOOKS`], shared with the allocators) is full;
    /// the lists then go back when the slot's next holder first uses them, or at `clear()`.
    pub fn flush_at_thread_exit(&'static self) -> bool {
        // SAFETY: `self` lives for the rest of the process; `exit_hook` does not unwind and
        // uses no thread-local with a destructor.
        unsafe { thread::add_exit_hook(ptr::from_ref(self).cast(), Self::exit_hook) }
    }

    /// # Safety
    /// `data` is a `&'static Self`; called on the exiting thread, which holds slot `t`.
    unsafe fn exit_hook(data: *const (), t: usize) {
        // SAFETY: registered by `flush_at_thread_exit` from a `&'static Self`.
        let this = unsafe { &*data.cast::<Self>() };
        if let Some(l) = this.locals.get(t) {
            // SAFETY: the exiting thread holds slot `t`.
            unsafe { this.drain(l) };
        }
    }
}

impl<A: GlobalAlloc + ?Sized> Drop for SharedFreeList<'_, A> {
    /// Every list goes back to the layer below (`&mut self`: no thread is using them).
    fn drop(&mut self) {
        for l in &self.locals {
            // SAFETY: with `&mut self` nobody else touches the lists.
            unsafe { self.drain(l) };
        }
    }
}

crate::route::route_by_layout!(SharedFreeList);
