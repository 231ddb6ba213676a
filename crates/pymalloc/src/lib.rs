//! Layer +2 of pymalloc-rs: CPython's small-object allocator ("pymalloc", `Objects/obmalloc.c`)
//! as a Rust [`GlobalAlloc`].
//!
//! ```text
//! +3  object-specific allocators (free lists)        later crates
//! +2  PyMalloc: arenas > pools > blocks              this crate
//!       request <= 512 B and align <= 16 -> a block of its size class
//!       anything else                     -> falls through to layer +1
//! +1  RawMalloc: the C library's malloc              crate pymalloc-raw
//! -1  the OS: mmap / munmap                          crate pymalloc-vmm (arenas come from here)
//! ```
//!
//! ```
//! use pymalloc::PyMalloc;
//!
//! #[global_allocator]
//! static GLOBAL: PyMalloc = PyMalloc::new();
//!
//! let words: Vec<String> = (0..1000).map(|i| format!("word{i}")).collect();
//! assert_eq!(words[999], "word999");
//! assert!(GLOBAL.stats().blocks_in_use() >= 1000);
//! ```
//!
//! # How a request flows
//! `alloc(layout)` asks the [`Geometry`] for a size class: `(size - 1) >> 4` when
//! `size <= 512` and `align <= 16`. A class request takes the heap lock and pops the first free
//! block of the first pool in that class's list (the fast path); when the class
//! has no pool with room, a pool is taken from the fullest arena that has one, and when no
//! arena has one, a new 1 MiB arena is mapped from layer −1. Other requests go to the backend
//! `B` (layer +1, [`RawMalloc`] by default) untouched.
//!
//! `dealloc(ptr, layout)` routes by the same rule, so a block always goes back to the layer
//! that made it: the size class comes from the `Layout`, the pool from masking the address.
//! `realloc` keeps a block in place while it stays in its class (or shrinks by at most a
//! quarter, CPython's rule), and otherwise moves it, across the threshold in either direction.
//!
//! # Invariants
//! - Blocks of class `i` are `(i + 1) * ALIGNMENT` bytes, `ALIGNMENT`-aligned, inside a pool
//!   whose header is at `ptr & !(POOL_SIZE - 1)`, inside an `ARENA_SIZE`-aligned arena.
//! - A block belongs to the `PyMalloc` that allocated it and must be freed there with its
//!   layout (the `GlobalAlloc` contract). Debug builds verify this on every free and realloc
//!   and report a bad one with the address and the reason, then abort: with a small layout,
//!   the address must be a block of this allocator of the layout's class (a pool block, or a
//!   recorded fallback block, see "Departures"); with a layout that routes to layer +1, it must
//!   be neither. A foreign address freed with such a layout goes to the backend unchecked.
//! - One lock (a futex mutex that never allocates, see `sync`) guards the heap; it is the only
//!   lock, so there is no lock order to respect. The arena map is read without it.
//! - Nothing on these paths allocates, formats into a `String` or panics; failure to map an
//!   arena returns null.
//!
//! # Departures from CPython
//! - Arenas are mapped `ARENA_SIZE`-aligned (over-map and trim in layer −1): no pool is lost to
//!   alignment and the "is this address ours" map needs one entry per arena.
//! - Requests aligned beyond `ALIGNMENT` fall through to layer +1 (CPython has no alignment
//!   parameter).
//! - A request that needs a new arena when none can be mapped falls back to the backend, as
//!   CPython falls back to `malloc`; from then on `dealloc` of a small layout asks the arena
//!   map whether the block is ours (until then, one flag test per free).
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
// Under loom only the shared structures are modelled; the rest of their modules goes unused.
#![cfg_attr(loom, allow(dead_code))]

// Under `--cfg loom` the structures that threads share without the heap lock (the lock
// itself, the arena map, the fork registry and the counters) are built on loom's atomics for
// the models in `tests/loom.rs` and in their own files; the allocator proper, whose state lives
// in `static`s, is left out.
#[cfg(not(loom))]
mod arena;
mod counters;
#[cfg(not(loom))]
mod fallback;
pub mod fork;
pub mod geometry;
#[cfg(not(loom))]
mod heap;
mod map;
mod pool;
#[cfg(not(loom))]
pub mod stats;
#[cfg(loom)]
pub mod sync;
#[cfg(not(loom))]
mod sync;
mod util;

#[cfg(not(loom))]
use core::alloc::{GlobalAlloc, Layout};
#[cfg(not(loom))]
use core::ptr;
#[cfg(not(loom))]
use core::sync::atomic::{AtomicBool, Ordering::Relaxed};

#[cfg(not(loom))]
pub use geometry::{Geometry, GeometryExt, Py37, Py310};
#[cfg(not(loom))]
pub use pymalloc_raw::RawMalloc;
#[cfg(not(loom))]
pub use stats::{ClassStats, Corruption, Stats};

#[cfg(not(loom))]
use counters::LargeCounters;
#[cfg(not(loom))]
use heap::Heap;
#[cfg(not(loom))]
use map::ArenaMap;
#[cfg(not(loom))]
use sync::Lock;

#[cfg(not(loom))]
/// CPython's small-object allocator, usable as `#[global_allocator]`.
///
/// `B` is the layer below, which serves requests the size classes do not (larger than
/// [`Geometry::SMALL_REQUEST_THRESHOLD`] or aligned beyond [`Geometry::ALIGNMENT`]). `G` is the
/// geometry preset: [`Py310`] (512 B / 16 KiB pools / 1 MiB arenas) or [`Py37`]
/// (256 B / 4 KiB / 256 KiB).
///
/// Dropping a `PyMalloc` unmaps all its arenas: blocks still allocated from it dangle.
pub struct PyMalloc<B: GlobalAlloc = RawMalloc, G: Geometry = Py310> {
    heap: Lock<Heap<G>>,  // the pools and arenas, one thread at a time
    map: ArenaMap<G>,     // address -> arena, read without the lock
    backend: B,           // layer +1
    large: LargeCounters, // live blocks passed to the backend, and their bytes
    fallback: AtomicBool, // set for good once a small block came from the backend
}

#[cfg(not(loom))]
impl PyMalloc {
    /// A `PyMalloc` with CPython 3.10+'s geometry over the C library's malloc.
    ///
    /// `const`, so it can initialise a `static` used as `#[global_allocator]`. Nothing is
    /// mapped until the first small allocation.
    pub const fn new() -> Self {
        Self::with_backend(RawMalloc)
    }
}

#[cfg(not(loom))]
impl Default for PyMalloc {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(not(loom))]
impl<B: GlobalAlloc, G: Geometry> PyMalloc<B, G> {
    /// A `PyMalloc` over `backend` with geometry `G`.
    ///
    /// ```
    /// use pymalloc::{PyMalloc, Py37, RawMalloc};
    /// static OLD_STYLE: PyMalloc<RawMalloc, Py37> = PyMalloc::with_backend(RawMalloc);
    /// assert_eq!(OLD_STYLE.stats().threshold, 256);
    /// ```
    pub const fn with_backend(backend: B) -> Self {
        let () = G::VALID;
        Self {
            heap: Lock::new(Heap::new()),
            map: ArenaMap::new(),
            backend,
            large: LargeCounters::new(),
            fallback: AtomicBool::new(false),
        }
    }

    /// The layer below.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// A snapshot of the allocator's figures; print it with `{}` for a report shaped like
    /// CPython's `sys._debugmallocstats()`. Walks every pool under the heap lock; never
    /// allocates.
    pub fn stats(&self) -> Stats {
        let mut s = self.heap.lock().stats(&self.map);
        (s.large_blocks, s.large_bytes) = self.large.read();
        s
    }

    /// Whether `ptr` points into one of this allocator's arenas. O(1) and lock-free: two
    /// table lookups, never touching the memory at `ptr`. Blocks passed to the backend are not
    /// "in an arena" and give `false`.
    pub fn owns(&self, ptr: *const u8) -> bool {
        self.map.lookup(ptr as usize).is_some()
    }

    /// Gives back what the allocator keeps in reserve: each size class's last empty pool
    /// (kept so that allocating and freeing one block at a time does not move a pool to its
    /// arena and back on every pair; only ever kept in an arena that also holds live blocks)
    /// and the one wholly free arena kept against mapping and unmapping an arena in a loop.
    /// Wholly free arenas go back to the OS, and the free pools of the arenas that stay give
    /// their pages back (`madvise`). Returns how many arenas were released.
    ///
    /// Without it, a program that frees everything keeps at most that one arena mapped.
    pub fn trim(&self) -> usize {
        self.heap.lock().trim(&self.map)
    }

    /// Makes this allocator safe across `fork()` from a multi-threaded process: its heap lock
    /// is taken before every fork, released after it in the parent and reset in the child, so
    /// the child can allocate and free at once (see [`fork`]). Call it once, early, on the
    /// `static` used as `#[global_allocator]`. Returns `false` if it could not be registered
    /// (more than [`fork::MAX_REGISTERED`] allocators, or `pthread_atfork` failed).
    ///
    /// ```
    /// use pymalloc::PyMalloc;
    ///
    /// #[global_allocator]
    /// static GLOBAL: PyMalloc = PyMalloc::new();
    ///
    /// assert!(GLOBAL.enable_fork_safety());
    /// ```
    pub fn enable_fork_safety(&'static self) -> bool {
        fork::register(self.heap.raw())
    }

    /// Walks the whole heap and checks every invariant of pools, arenas and lists (listed in
    /// `docs/ARCHITECTURE.md`). O(heap size): for tests and debugging, not for hot paths.
    ///
    /// # Errors
    /// The first broken invariant found, with the address concerned.
    pub fn check_invariants(&self) -> Result<(), Corruption> {
        self.heap.lock().check_invariants(&self.map)
    }

    /// A block of class `class` for `layout`: from the pools, or, if no arena can be mapped,
    /// from the backend (a smaller request that may still succeed there, e.g. from free space
    /// malloc already holds). From then on `dealloc` and `realloc` of small layouts ask the
    /// arena map whether a block is ours, so such blocks go back to the backend.
    #[inline(always)]
    fn alloc_small(&self, class: usize, layout: Layout, zeroed: bool) -> *mut u8 {
        let p = self.heap.lock().alloc(class, &self.map);
        if util::unlikely(p.is_null()) {
            return self.alloc_small_fallback(layout, zeroed);
        }
        if zeroed {
            // A reused block holds old data and its free-list link: clear what the caller
            // asked for, outside the lock.
            // SAFETY: the block has at least `layout.size()` bytes.
            unsafe { p.write_bytes(0, layout.size()) };
        }
        p
    }

    #[cold]
    #[inline(never)]
    fn alloc_small_fallback(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        // Relaxed: whoever frees the block learns of it through some synchronisation with
        // this thread, which also carries this earlier store.
        self.fallback.store(true, Relaxed);
        let p = self.alloc_large(layout, zeroed);
        if cfg!(debug_assertions) && !p.is_null() {
            self.heap.lock().fallbacks.insert(p as usize, layout.size());
        }
        p
    }

    /// Whether a block with a small layout is one of the backend's fallback blocks.
    #[inline(always)]
    fn is_fallback_block(&self, ptr: *mut u8) -> bool {
        util::unlikely(self.fallback.load(Relaxed)) && !self.owns(ptr)
    }

    #[inline(never)]
    fn alloc_large(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        // SAFETY: the caller's layout is valid (non-zero size per the GlobalAlloc contract;
        // the backends we ship also accept zero).
        let p = unsafe {
            if zeroed {
                self.backend.alloc_zeroed(layout)
            } else {
                self.backend.alloc(layout)
            }
        };
        if !p.is_null() {
            self.large.allocated(layout.size());
        }
        p
    }

    /// # Safety
    /// `ptr` came from `alloc_large` with `layout`.
    #[inline(never)]
    unsafe fn dealloc_large(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded from the caller.
        unsafe { self.backend.dealloc(ptr, layout) };
        self.large.freed(layout.size());
    }

    /// In debug builds, checks that `ptr`, freed (or reallocated) with a small layout and not in
    /// any of our arenas, is a live fallback block allocated with a layout of the same class,
    /// and forgets it; otherwise reports the bad free and aborts. An unrecorded address is let
    /// through only if the record of fallback blocks could not be kept (see `fallback`).
    #[inline(never)]
    fn debug_forget_fallback(&self, ptr: *mut u8, layout: Layout) {
        if !cfg!(debug_assertions) {
            return;
        }
        let mut heap = self.heap.lock();
        let (what, expected, found) = match heap.fallbacks.remove(ptr as usize) {
            Some(size) => {
                let (was, now) = (
                    G::size_class(size.max(1)),
                    G::size_class(layout.size().max(1)),
                );
                if was == now {
                    return;
                }
                (
                    "size class of the layout differs from the fallback block's",
                    now,
                    was,
                )
            }
            None if !heap.fallbacks.is_complete() => return,
            None => (
                "pointer is not inside any arena of this allocator, nor a live block it passed \
                 to layer +1 when no arena could be mapped",
                0,
                0,
            ),
        };
        let c = Corruption {
            what,
            address: ptr as usize,
            expected,
            found,
        };
        bad_free(ptr, layout, &c);
    }

    /// In debug builds, checks that `ptr`, whose layout routes to the backend, is not a block
    /// of a small layout: a pool block (handed to `free()`, it would end up in malloc's free
    /// lists, and malloc would later hand out memory inside our arena) or a recorded fallback
    /// block. Otherwise reports the bad free and aborts.
    #[inline(always)]
    fn debug_check_backend_block(&self, ptr: *mut u8, layout: Layout) {
        if !cfg!(debug_assertions) {
            return;
        }
        let what = if self.owns(ptr) {
            "layout routes to layer +1 but the block is a pool block"
        } else if self.fallback.load(Relaxed)
            && self
                .heap
                .lock()
                .fallbacks
                .recorded_size(ptr as usize)
                .is_some()
        {
            "layout routes to layer +1 but the block is a fallback block of a small layout"
        } else {
            return;
        };
        let c = Corruption {
            what,
            address: ptr as usize,
            expected: 0,
            found: 0,
        };
        bad_free(ptr, layout, &c);
    }

    /// In debug builds, verifies that `ptr` is a live-looking block of class `class` of this
    /// allocator, and otherwise reports the bad free and aborts.
    #[inline(always)]
    fn debug_check_block(&self, heap: &Heap<G>, ptr: *mut u8, class: usize, layout: Layout) {
        if cfg!(debug_assertions)
            && let Err(c) = heap.validate_block(ptr, class, layout.size(), &self.map)
        {
            bad_free(ptr, layout, &c);
        }
    }
}

#[cfg(not(loom))]
#[cold]
#[inline(never)]
fn bad_free(ptr: *mut u8, layout: Layout, c: &Corruption) -> ! {
    let (expected, found) = (c.expected, c.found);
    let mut detail = pymalloc_vmm::diag::StackWriter::<64>::new();
    if expected != 0 || found != 0 {
        let _ = core::fmt::Write::write_fmt(
            &mut detail,
            format_args!(" (expected {expected}, found {found})"),
        );
    }
    pymalloc_vmm::diag::fatal(format_args!(
        "pymalloc: bad free or realloc of {:p} (layout size {}, align {}): {}{}",
        ptr,
        layout.size(),
        layout.align(),
        c.what,
        detail.as_str()
    ))
}

// SAFETY: a small block is a distinct, ALIGNMENT-aligned block of at least `size` bytes,
// handed out once until freed; everything else is the backend's, which upholds the same
// contract. `dealloc`/`realloc` route by the same `class_for(layout)` rule as `alloc`, so each
// block returns to the layer that made it. No path unwinds.
#[cfg(not(loom))]
unsafe impl<B: GlobalAlloc, G: Geometry> GlobalAlloc for PyMalloc<B, G> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match G::class_for(layout.size(), layout.align()) {
            Some(class) => self.alloc_small(class, layout, false),
            None => self.alloc_large(layout, false),
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match G::class_for(layout.size(), layout.align()) {
            Some(class) => self.alloc_small(class, layout, true),
            None => self.alloc_large(layout, true),
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match G::class_for(layout.size(), layout.align()) {
            Some(_) if self.is_fallback_block(ptr) => {
                self.debug_forget_fallback(ptr, layout);
                // SAFETY: a small layout's block that is not in our arenas came from the
                // backend via `alloc_small_fallback`, with this layout.
                unsafe { self.dealloc_large(ptr, layout) }
            }
            // SAFETY: per the GlobalAlloc contract `ptr` is a live block from `alloc` with
            // this layout, hence (not being a fallback block) of this class and this heap.
            Some(class) => unsafe { self.dealloc_small(ptr, class, layout) },
            None => {
                self.debug_check_backend_block(ptr, layout);
                // SAFETY: by the routing rule, the block came from `alloc_large` with `layout`.
                unsafe { self.dealloc_large(ptr, layout) }
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        // SAFETY: the realloc contract makes (new_size, align) a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, align) };
        let copy = layout.size().min(new_size);
        let (old_class, new_class) = (
            G::class_for(layout.size(), align),
            G::class_for(new_size, align),
        );
        if old_class.is_none() {
            self.debug_check_backend_block(ptr, layout);
        } else if self.is_fallback_block(ptr) {
            // A fallback block stays in the backend whatever its new size: `dealloc` finds it
            // there through the arena map (the fallback flag stays set).
            self.debug_forget_fallback(ptr, layout);
            let q = self.realloc_large(ptr, layout, new_size);
            if cfg!(debug_assertions) {
                // Still a fallback block under a small layout: the old one if the realloc
                // failed, the new one if its layout stays small.
                let (live, size) = if q.is_null() {
                    (ptr, layout.size())
                } else {
                    (q, new_size)
                };
                if q.is_null() || new_class.is_some() {
                    self.heap.lock().fallbacks.insert(live as usize, size);
                }
            }
            return q;
        }
        match (old_class, new_class) {
            (Some(old), Some(new)) => {
                if cfg!(debug_assertions) {
                    self.debug_check_block(&self.heap.lock(), ptr, old, layout);
                }
                // The block's real class may exceed the layout's after an in-place shrink.
                // SAFETY: by the realloc contract `ptr` is live and was allocated with
                // `layout`; a small layout routes to the pools and `ptr` is not a fallback
                // block (tested above), so it is a live block of one of our pools. Debug
                // builds verify this just above; release builds rely on the contract.
                let real = unsafe { pool::class_of_block::<G>(ptr) };
                let real_size = G::class_size(real);
                // In place while the request still fits and either keeps the class or wastes
                // at most a quarter of the block (CPython: `4*nbytes > 3*size`).
                if new_size <= real_size && (new == real || 4 * new_size > 3 * real_size) {
                    return ptr;
                }
                let q = self.alloc_small(new, new_layout, false);
                if q.is_null() {
                    return ptr::null_mut();
                }
                // SAFETY: both are live, distinct blocks of at least `copy` bytes; `ptr` is a
                // pool block with `layout`, given up on success.
                unsafe {
                    ptr::copy_nonoverlapping(ptr, q, copy);
                    self.dealloc_small(ptr, old, layout);
                }
                q
            }
            (Some(old), None) => {
                // Growing past the threshold: into layer +1.
                let q = self.alloc_large(new_layout, false);
                if q.is_null() {
                    return ptr::null_mut();
                }
                // SAFETY: distinct live blocks of at least `copy` bytes; `ptr` is ours.
                unsafe {
                    ptr::copy_nonoverlapping(ptr, q, copy);
                    self.dealloc_small(ptr, old, layout);
                }
                q
            }
            (None, Some(new)) => {
                // Shrinking under the threshold: into a pool (or a fallback block), so that
                // `dealloc` with the new layout finds it where the routing rule says.
                let q = self.alloc_small(new, new_layout, false);
                if q.is_null() {
                    return ptr::null_mut();
                }
                // SAFETY: distinct live blocks of at least `copy` bytes; `ptr` is the
                // backend's with `layout`.
                unsafe {
                    ptr::copy_nonoverlapping(ptr, q, copy);
                    self.dealloc_large(ptr, layout);
                }
                q
            }
            (None, None) => self.realloc_large(ptr, layout, new_size),
        }
    }
}

#[cfg(not(loom))]
impl<B: GlobalAlloc, G: Geometry> PyMalloc<B, G> {
    /// Frees pool block `ptr` of class `class`.
    ///
    /// # Safety
    /// `ptr` is a live block of this heap's pools, allocated with `layout`.
    #[inline(always)]
    unsafe fn dealloc_small(&self, ptr: *mut u8, class: usize, layout: Layout) {
        let mut heap = self.heap.lock();
        self.debug_check_block(&heap, ptr, class, layout);
        // SAFETY: forwarded from the caller.
        unsafe { heap.free(ptr, &self.map) };
    }

    /// `realloc` of a backend block.
    fn realloc_large(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the block is the backend's, with this layout (the caller's routing).
        let q = unsafe { self.backend.realloc(ptr, layout, new_size) };
        if !q.is_null() {
            self.large.resized(layout.size(), new_size);
        }
        q
    }
}

#[cfg(not(loom))]
impl<B: GlobalAlloc, G: Geometry> Drop for PyMalloc<B, G> {
    fn drop(&mut self) {
        self.heap.get_mut().release_everything(&self.map);
        // SAFETY: `&mut self`: no other thread can reach the map.
        unsafe { self.map.release() };
    }
}

#[cfg(not(loom))]
impl<B: GlobalAlloc + core::fmt::Debug, G: Geometry> core::fmt::Debug for PyMalloc<B, G> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PyMalloc")
            .field("geometry", &G::NAME)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

#[cfg(not(loom))]
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
