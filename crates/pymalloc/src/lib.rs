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
//! `size <= 512` and `align <= 16`. A class request pops the first free block of the first pool
//! in that class's list of the calling thread's heap (the fast path: no lock, no atomic
//! read-modify-write); when the class has no pool with room, the heap takes a pool from the
//! fullest arena that has one, under the arenas lock, and when no arena has one, a new 1 MiB
//! arena is mapped from layer −1. Other requests go to the backend `B` (layer +1, [`RawMalloc`]
//! by default) untouched.
//!
//! # Threads
//! Each thread has its own heap in every `PyMalloc` (up to [`MAX_SLOTS`]` - 1` threads at once;
//! the others share a locked heap). A free by the thread that owns the block's pool is a plain
//! push; a free by another thread is one CAS on the pool's remote list, which the owner takes in
//! when the pool runs dry. When a thread exits its heap stays, with its blocks, and the next
//! thread adopts it; meanwhile other threads free into it as its owner. `docs/ARCHITECTURE.md`
//! ("Threads") describes the protocol and its memory orderings.
//!
//! `dealloc(ptr, layout)` routes by the same rule, so a block always goes back to the layer
//! that made it: the size class comes from the `Layout`, the pool from masking the address.
//! `realloc` keeps a block in place while it stays in its class (or shrinks by at most a
//! quarter, CPython's rule), and otherwise moves it, across the threshold in either direction.
//!
//! # Without the layout: a C `malloc`
//! A caller that keeps no layout (the C API, `crates/preload`) uses [`PyMalloc::alloc_pooled`]
//! (a pool block or null, never the backend), [`PyMalloc::dealloc_pooled`] and
//! [`PyMalloc::block_size`], which find the block's arena in the arena map and its class in
//! its pool header, and tell the caller when an address is not ours. The `initial-exec-tls`
//! feature (x86_64 Linux) moves the per-thread words to initial-exec TLS, which such a shared
//! object needs (see `tls`).
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
//! - A heap is touched only by the holder of its slot (see `tls`); the arenas are guarded by one
//!   lock (a futex mutex that never allocates, see `sync`), taken after the shared heap's lock
//!   when both are needed. The arena map is read without a lock.
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

// Under `--cfg loom` the structures that threads share without a lock (the lock
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
#[cfg(not(loom))]
pub mod thread;
mod tls;
mod util;

#[cfg(not(loom))]
use core::alloc::{GlobalAlloc, Layout};
#[cfg(not(loom))]
use core::cell::UnsafeCell;
#[cfg(not(loom))]
use core::ptr;
#[cfg(not(loom))]
use core::sync::atomic::{
    AtomicBool, AtomicPtr,
    Ordering::{Acquire, Relaxed, Release},
};

#[cfg(not(loom))]
pub use geometry::{Geometry, GeometryExt, Py37, Py310};
#[cfg(not(loom))]
pub use pymalloc_raw::RawMalloc;
#[cfg(not(loom))]
pub use stats::{ClassStats, Corruption, Stats};

#[cfg(not(loom))]
use counters::{LargeCounters, SlotCounters};
#[cfg(not(loom))]
use heap::{Heap, Shared};
#[cfg(not(loom))]
use pool::{PoolHeader, SHARED};
#[cfg(not(loom))]
use sync::Lock;
#[cfg(not(loom))]
pub use tls::{MAX_EXIT_HOOKS, MAX_SLOTS};

/// The `owner` given to validation when the caller owns no heap of the pool (so that fields
/// only the owner writes are not read).
#[cfg(not(loom))]
const NOBODY: u32 = u32::MAX - 2;

#[cfg(not(loom))]
/// CPython's small-object allocator, usable as `#[global_allocator]`.
///
/// `B` is the layer below, which serves requests the size classes do not (larger than
/// [`Geometry::SMALL_REQUEST_THRESHOLD`] or aligned beyond [`GeometryExt::ALIGNMENT`]). `G` is the
/// geometry preset: [`Py310`] (512 B / 16 KiB pools / 1 MiB arenas) or [`Py37`]
/// (256 B / 4 KiB / 256 KiB).
///
/// Dropping a `PyMalloc` unmaps all its arenas: blocks still allocated from it dangle.
pub struct PyMalloc<B: GlobalAlloc = RawMalloc, G: Geometry = Py310> {
    slots: [Slot<G>; MAX_SLOTS], // heap t belongs to the thread in slot t (see `tls`)
    shared_heap: Lock<Heap<G>>,  // for threads without a slot
    shared: Shared<G>,           // the arenas (locked) and the arena map
    backend: B,                  // layer +1
    large: LargeCounters,        // live blocks passed to the backend, and their bytes
    fallback: AtomicBool,        // set for good once a small block came from the backend
}

/// One thread's heap in one allocator, and its delayed list: blocks other threads freed into
/// its full pools (see `pool`). Only the holder of the slot (its thread, or a thread that has
/// claimed it) touches `heap`; anyone may push on `delayed`.
#[cfg(not(loom))]
struct Slot<G: Geometry> {
    heap: UnsafeCell<Heap<G>>,
    delayed: AtomicPtr<u8>,
    // Set by another thread's free that starts a pool's remote list or queues a block on
    // `delayed`; cleared by the holder when it collects its heap before mapping an arena. A
    // hint only: a stale value costs a walk or delays one, never a block.
    remote_pending: AtomicBool,
    large: SlotCounters, // this slot's share of the large-block counters
}

#[cfg(not(loom))]
impl<G: Geometry> Slot<G> {
    const fn new(id: u32) -> Self {
        Self {
            heap: UnsafeCell::new(Heap::new(id)),
            delayed: AtomicPtr::new(ptr::null_mut()),
            remote_pending: AtomicBool::new(false),
            large: SlotCounters::new(),
        }
    }
}

// SAFETY: a slot's heap is reached only by the holder of the slot (`tls`: its thread, or a
// thread that claimed it, with Acquire/Release hand-overs), or read by the sentinel's readers
// when it is all null; the rest is atomic or locked.
#[cfg(not(loom))]
unsafe impl<B: GlobalAlloc + Sync, G: Geometry> Sync for PyMalloc<B, G> {}
// SAFETY: moving the allocator moves the heaps it owns; nothing refers to its address.
#[cfg(not(loom))]
unsafe impl<B: GlobalAlloc + Send, G: Geometry> Send for PyMalloc<B, G> {}

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
        let mut slots = [const { Slot::new(0) }; MAX_SLOTS];
        let mut t = 1;
        while t < MAX_SLOTS {
            slots[t] = Slot::new(t as u32);
            t += 1;
        }
        Self {
            slots,
            shared_heap: Lock::new(Heap::new(SHARED)),
            shared: Shared::new(),
            backend,
            large: LargeCounters::new(),
            fallback: AtomicBool::new(false),
        }
    }

    /// Counts a change in the blocks passed to the backend: in the calling thread's share if
    /// it has a slot (no read-modify-write), else in the shared counters.
    #[inline(always)]
    fn count_large(&self, blocks: isize, bytes: isize) {
        let t = tls::current();
        if util::likely(t != 0) {
            // SAFETY: a slot number is below MAX_SLOTS (`tls`); this thread holds slot `t`, the
            // only writer of its share.
            unsafe { self.slots.get_unchecked(t) }
                .large
                .add(blocks, bytes);
        } else if blocks > 0 {
            self.large.allocated(bytes as usize);
        } else if blocks < 0 {
            self.large.freed(bytes.unsigned_abs());
        } else if bytes >= 0 {
            self.large.resized(0, bytes as usize);
        } else {
            self.large.resized(bytes.unsigned_abs(), 0);
        }
    }

    /// The blocks passed to the backend and their bytes: the shared counters plus every slot's
    /// share. Exact once the threads that allocate or free them are quiescent; a reading taken
    /// while a block moves between threads may be off by that block, and is never below zero.
    fn large_totals(&self) -> (usize, usize) {
        let (b, y) = self.large.read();
        let (mut blocks, mut bytes) = (b as isize, y as isize);
        for slot in &self.slots {
            let (b, y) = slot.large.read();
            blocks = blocks.wrapping_add(b);
            bytes = bytes.wrapping_add(y);
        }
        (blocks.max(0) as usize, bytes.max(0) as usize)
    }

    /// The layer below.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// A snapshot of the allocator's figures; print it with `{}` for a report shaped like
    /// CPython's `sys._debugmallocstats()`. Never allocates.
    ///
    /// First collects what other threads freed into the calling thread's pools and into the
    /// heaps of threads that have exited (whose empty pools then go back to their arenas),
    /// then walks every pool under the arenas lock. Blocks freed into the pools of a heap
    /// whose thread is running count as in use until that thread takes them in, which it does
    /// when a pool of that class runs dry in its hands. A thread that takes the slot of an
    /// exited thread adopts that slot's heap in every allocator, pools included, and collects
    /// each on its first slow path in that allocator; until then (and for a thread that never
    /// uses that allocator, as long as it runs) blocks freed into the adopted pools wait for
    /// it like any other. Heaps that
    /// another thread is collecting at that moment (in its own `stats`, `trim` or
    /// `check_invariants`) are skipped. So the figures are exact once the threads that own
    /// pools have exited (and been joined), or have collected.
    pub fn stats(&self) -> Stats {
        self.collect_own(true);
        self.collect_free_slots(0);
        let mut s = self.shared.arenas.lock().stats(&self.shared.map);
        (s.large_blocks, s.large_bytes) = self.large_totals();
        s
    }

    /// Whether `ptr` points into one of this allocator's arenas. O(1) and lock-free: two
    /// table lookups, never touching the memory at `ptr`. Blocks passed to the backend are not
    /// "in an arena" and give `false`.
    pub fn owns(&self, ptr: *const u8) -> bool {
        self.shared.map.lookup(ptr as usize).is_some()
    }

    /// A block for `layout` from the pools, or null if the layout is not a small one (larger
    /// than [`Geometry::SMALL_REQUEST_THRESHOLD`] or aligned beyond [`GeometryExt::ALIGNMENT`])
    /// or no arena can be mapped. Never from the backend: for a caller that serves everything
    /// else itself, such as a C `malloc`, and frees with [`dealloc_pooled`](Self::dealloc_pooled).
    /// `layout.size()` may be 0 (the smallest class is used). `zeroed` clears the first
    /// `layout.size()` bytes.
    #[inline]
    pub fn alloc_pooled(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        match G::class_for(layout.size().max(1), layout.align()) {
            Some(class) => self.alloc_in_class::<false>(class, layout, zeroed),
            None => ptr::null_mut(),
        }
    }

    /// For a caller that does not keep a block's layout (a C `free`, `realloc`,
    /// `malloc_usable_size`): the usable size of the block at `ptr`, that is the block size of
    /// its size class (at least what was asked for), or `None` if `ptr` is in none of this
    /// allocator's arenas. Lock-free; reads the block's pool header.
    ///
    /// # Safety
    /// If `ptr` is in one of this allocator's arenas, it is a live block this allocator handed
    /// out (and has not freed).
    #[inline]
    pub unsafe fn block_size(&self, ptr: *const u8) -> Option<usize> {
        if !self.owns(ptr) {
            return None;
        }
        // SAFETY: per the contract, a live block of one of our pools.
        let class = unsafe { pool::class_of_block::<G>(ptr.cast_mut()) };
        Some(G::class_size(class))
    }

    /// Frees the block at `ptr` without its layout if `ptr` is in one of this allocator's
    /// arenas, and returns `true`; returns `false` and does nothing otherwise (the block is
    /// someone else's: the caller frees it there). For a C `free`. Debug builds verify the block
    /// as `dealloc` does and report a bad free with its address.
    ///
    /// # Safety
    /// If `ptr` is in one of this allocator's arenas, it is a live block this allocator handed
    /// out (from [`alloc_pooled`](Self::alloc_pooled) or `GlobalAlloc::alloc` with a small
    /// layout), not used after this call.
    #[inline]
    pub unsafe fn dealloc_pooled(&self, ptr: *mut u8) -> bool {
        if !self.owns(ptr) {
            return false;
        }
        // SAFETY: per the contract, a live block of one of our pools.
        let class = unsafe { pool::class_of_block::<G>(ptr) };
        // SAFETY: a class's block size is a multiple of ALIGNMENT, a power of two.
        let layout =
            unsafe { Layout::from_size_align_unchecked(G::class_size(class), G::ALIGNMENT) };
        // SAFETY: per the contract, a live block of ours, of its pool's class.
        unsafe { self.dealloc_small(ptr, class, layout) };
        true
    }

    /// Gives back what the allocator keeps in reserve: each size class's last empty pool
    /// (kept so that allocating and freeing one block at a time does not move a pool to its
    /// arena and back on every pair) in the calling thread's heap, the shared heap and the
    /// heaps of exited threads (after collecting what other threads freed into them), and the
    /// one wholly free arena kept against mapping and unmapping an arena in a loop. Wholly
    /// free arenas go back to the OS, and the free pools of the arenas that stay give their
    /// pages back (`madvise`). Returns how many arenas were released (counted as the change in
    /// live arenas, so arenas other threads map meanwhile count against it).
    ///
    /// Other running threads keep their kept pools. Without it, a single-threaded program that
    /// frees everything keeps at most one arena mapped.
    pub fn trim(&self) -> usize {
        let before = self.shared.arenas.lock().live_arenas();
        self.collect_own(false);
        self.shared_heap.lock().collect_all(&self.shared, false);
        self.collect_free_slots(0);
        let mut ar = self.shared.arenas.lock();
        ar.trim(&self.shared.map);
        before.saturating_sub(ar.live_arenas())
    }

    /// Makes this allocator safe across `fork()` from a multi-threaded process: its two locks
    /// (the shared heap's and the arenas') are taken before every fork, released after it in
    /// the parent and reset in the child, so the child can allocate and free at once (see
    /// [`fork`]; the other threads' heaps are left alone in the child, see
    /// `docs/ARCHITECTURE.md`). Other code's fork handlers may allocate from it, whichever
    /// order they were registered in. Call it once, early, on the `static` used as
    /// `#[global_allocator]`. Returns `false` if it could not be registered
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
        fork::register(self.shared_heap.raw()) && fork::register(self.shared.arenas.raw())
    }

    /// Has every thread collect its heap in this allocator when it exits: what other threads
    /// freed into its pools is taken in, and its empty and kept pools go back to their arenas
    /// (and from there, wholly free arenas to the OS), instead of waiting for another thread to
    /// adopt the heap or for `stats()`, `trim()` or a new arena to collect it. Call it once,
    /// early, on the `static` used as `#[global_allocator]` (it takes `&'static self`: exiting
    /// threads use the allocator's address for the rest of the process). Returns `false` if it
    /// could not be registered (more than [`MAX_EXIT_HOOKS`] allocators).
    ///
    /// ```
    /// use pymalloc::PyMalloc;
    ///
    /// #[global_allocator]
    /// static GLOBAL: PyMalloc = PyMalloc::new();
    ///
    /// assert!(GLOBAL.collect_at_thread_exit());
    /// std::thread::spawn(|| vec![1u8; 100]).join().unwrap();
    /// ```
    pub fn collect_at_thread_exit(&'static self) -> bool {
        tls::add_exit_hook(ptr::from_ref(self).cast(), Self::exit_hook)
    }

    /// The thread holding slot `t` exits: collect its heap here.
    ///
    /// # Safety
    /// `data` is a `&'static Self`; called on the thread that holds slot `t`, from its exit
    /// destructor.
    unsafe fn exit_hook(data: *const (), t: usize) {
        // SAFETY: registered by `collect_at_thread_exit` from a `&'static Self`.
        let this = unsafe { &*data.cast::<Self>() };
        let slot = &this.slots[t];
        // SAFETY: the calling thread holds slot `t`.
        unsafe {
            let heap = &mut *slot.heap.get();
            heap.drain_delayed(&slot.delayed, &this.shared);
            heap.collect_all(&this.shared, false);
        }
    }

    /// Walks the whole heap and checks every invariant of pools, arenas and lists (listed in
    /// `docs/ARCHITECTURE.md`). O(heap size): for tests and debugging, not for hot paths.
    ///
    /// It claims every free thread slot for the time it runs (so that no thread adopts a heap
    /// being checked): a thread taking its first slot meanwhile finds none free and allocates
    /// from the locked shared heap until its next slow path.
    ///
    /// # Errors
    /// The first broken invariant found, with the address concerned.
    pub fn check_invariants(&self) -> Result<(), Corruption> {
        let me = tls::current();
        let mut claimed = [false; MAX_SLOTS];
        for (t, c) in claimed.iter_mut().enumerate().skip(1) {
            *c = t != me && tls::try_claim(t);
        }
        let result = {
            let shared_heap = self.shared_heap.lock();
            let ar = self.shared.arenas.lock();
            let inspectable = |owner: u32| -> Option<&Heap<G>> {
                let t = owner as usize;
                if owner == SHARED {
                    Some(&*shared_heap)
                } else if t < MAX_SLOTS && t != 0 && (t == me || claimed[t]) {
                    // SAFETY: slot `t` is ours or claimed: nobody else touches its heap.
                    Some(unsafe { &*self.slots[t].heap.get() })
                } else {
                    None
                }
            };
            ar.check_invariants(&self.shared.map, inspectable)
                .and_then(|()| {
                    shared_heap.check_lists()?;
                    (1..MAX_SLOTS)
                        .filter_map(|t| inspectable(t as u32))
                        .try_for_each(|h| h.check_lists())
                })
        };
        for (t, &c) in claimed.iter().enumerate() {
            if c {
                tls::release_claim(t);
            }
        }
        result
    }

    /// A block of class `class` for `layout`: from the pools, or, if no arena can be mapped,
    /// from the backend (a smaller request that may still succeed there, e.g. from free space
    /// malloc already holds). From then on `dealloc` and `realloc` of small layouts ask the
    /// arena map whether a block is ours, so such blocks go back to the backend.
    #[inline(always)]
    fn alloc_small(&self, class: usize, layout: Layout, zeroed: bool) -> *mut u8 {
        self.alloc_in_class::<true>(class, layout, zeroed)
    }

    /// A block of class `class` from the pools, its first `layout.size()` bytes cleared if
    /// `zeroed`. If no arena could be mapped: from the backend if `FALLBACK`, else null.
    #[inline(always)]
    fn alloc_in_class<const FALLBACK: bool>(
        &self,
        class: usize,
        layout: Layout,
        zeroed: bool,
    ) -> *mut u8 {
        let t = tls::current();
        // SAFETY: a slot number is below MAX_SLOTS (`tls`). Heap `t` is this thread's (its
        // slot), or the sentinel heap 0, whose lists stay empty and which `try_alloc` then only
        // reads.
        let mut p = unsafe { Heap::try_alloc(self.slots.get_unchecked(t).heap.get(), class) };
        if util::unlikely(p.is_null()) {
            p = self.alloc_slow(class);
            if p.is_null() {
                return if FALLBACK {
                    self.alloc_small_fallback(layout, zeroed)
                } else {
                    p
                };
            }
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
            self.shared
                .arenas
                .lock()
                .fallbacks
                .insert(p as usize, layout.size());
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
            self.count_large(1, layout.size() as isize);
        }
        p
    }

    /// # Safety
    /// `ptr` came from `alloc_large` with `layout`.
    #[inline(never)]
    unsafe fn dealloc_large(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded from the caller.
        unsafe { self.backend.dealloc(ptr, layout) };
        self.count_large(-1, -(layout.size() as isize));
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
        let mut ar = self.shared.arenas.lock();
        let (what, expected, found) = match ar.fallbacks.remove(ptr as usize) {
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
            None if !ar.fallbacks.is_complete() => return,
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
                .shared
                .arenas
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
    /// allocator, and otherwise reports the bad free and aborts. `me` is the heap the caller
    /// owns (only a pool of that heap has its count and carving checked).
    #[inline(always)]
    fn debug_check_block(&self, ptr: *mut u8, class: usize, layout: Layout, me: u32) {
        if cfg!(debug_assertions) {
            let r = self.shared.arenas.lock().validate_block(
                ptr,
                class,
                layout.size(),
                me,
                &self.shared.map,
            );
            if let Err(c) = r {
                bad_free(ptr, layout, &c);
            }
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

    // Always: left to the compiler, `dealloc` stopped being inlined into callers once the
    // slow paths around it grew (six more instructions per pair, a call and its argument
    // moves); its own body is the fast path plus calls to cold functions.
    #[inline(always)]
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
                    self.shared
                        .arenas
                        .lock()
                        .fallbacks
                        .insert(live as usize, size);
                }
            }
            return q;
        }
        match (old_class, new_class) {
            (Some(old), Some(new)) => {
                if cfg!(debug_assertions) {
                    self.debug_check_block(ptr, old, layout, NOBODY);
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
        let t = tls::current();
        self.debug_check_block(ptr, class, layout, t as u32);
        let pool = pool::pool_of::<G>(ptr);
        // SAFETY: `ptr` is a live block of our pools, so its pool's header is initialised and
        // its `owner` stays as it is while the block lives. Slot 0 owns no pool.
        if util::likely(unsafe { (*pool).owner } == t as u32) {
            // SAFETY: the pool is heap `t`'s, and heap `t` is this thread's; `t` is below
            // MAX_SLOTS (`tls`).
            unsafe { (*self.slots.get_unchecked(t).heap.get()).free(ptr, &self.shared, true) };
        } else {
            // SAFETY: forwarded from the caller.
            unsafe { self.dealloc_remote(ptr, pool, class, layout) };
        }
    }

    /// Frees a block of a pool that the calling thread's heap does not own: under the lock
    /// for the shared heap's pools; as the owner after claiming the slot of an exited thread;
    /// otherwise on the pool's remote list (or the owner's delayed list, see `pool`).
    ///
    /// # Safety
    /// `ptr` is a live block of pool `pool` of this allocator, allocated with `layout`.
    #[inline(never)]
    unsafe fn dealloc_remote(
        &self,
        ptr: *mut u8,
        pool: *mut PoolHeader,
        class: usize,
        layout: Layout,
    ) {
        // SAFETY: as in `dealloc_small`.
        let owner = unsafe { (*pool).owner };
        if owner == SHARED {
            let mut heap = self.shared_heap.lock();
            self.debug_check_block(ptr, class, layout, SHARED);
            // SAFETY: the shared heap's pool, and we hold its lock.
            unsafe { heap.free(ptr, &self.shared, true) };
            return;
        }
        let t = owner as usize;
        let Some(slot) = self.slots.get(t).filter(|_| t != 0) else {
            // Not a pool in use: a bad free, which debug builds have reported already.
            return;
        };
        if tls::try_claim(t) {
            // The owner has exited: free as the owner, and give back what empties.
            // SAFETY: we hold slot `t`; the pool is its heap's, listed exactly when it has a
            // free block once the delayed blocks are freed.
            unsafe {
                let heap = &mut *slot.heap.get();
                heap.drain_delayed(&slot.delayed, &self.shared);
                if !(*pool).freeblock.is_null() {
                    pool::collect(pool);
                }
                heap.free(ptr, &self.shared, false);
            }
            tls::release_claim(t);
            return;
        }
        // SAFETY: a live block of an initialised pool, dead from now on.
        let pushed = unsafe { pool::remote_push(pool, ptr) };
        if pushed == pool::RemotePush::Queued {
            // SAFETY: we moved the pool's tag from FULL to QUEUED.
            unsafe { pool::push_delayed(&slot.delayed, ptr) };
        }
        if pushed != pool::RemotePush::Added {
            // The first block on the pool's remote list, or in the delayed list for a pool
            // the owner will re-list: worth a collection before the owner's next arena. A
            // read-modify-write, Release, so that the owner's Acquire swap of the flag makes
            // our push visible to its walk (RMWs continue the release sequence of whichever
            // set it first); once per pool per collection, not per free.
            slot.remote_pending.swap(true, Release);
        }
    }

    /// The slow path of a small allocation: the thread's heap has no pool of this class with a
    /// free block (or the thread has no heap yet). Registers the thread, frees its delayed
    /// blocks, takes a pool from the arenas; before mapping a new arena, collects the heaps of
    /// exited threads and its own (the remote frees into its pools), whose empty pools may
    /// then serve. Threads without a slot use the shared heap under its lock. Null if no arena
    /// could be mapped.
    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, class: usize) -> *mut u8 {
        let t = tls::register();
        if t == 0 {
            return self.shared_heap.lock().alloc(class, &self.shared);
        }
        let slot = &self.slots[t];
        // SAFETY: slot `t` is this thread's, so is its heap; no other reference to it exists
        // while we run (claims only take free slots).
        let heap = unsafe { &mut *slot.heap.get() };
        let holding = tls::holding();
        if heap.holder != holding {
            // The thread took the slot and adopted whatever heap its last holder left here (in
            // this allocator: every allocator has a heap per slot, and this is the thread's first
            // slow path in this one): take in what was freed into it since, give back what is
            // empty, and use the rest.
            heap.holder = holding;
            // SAFETY: `slot.delayed` is this heap's delayed list.
            unsafe { heap.drain_delayed(&slot.delayed, &self.shared) };
            heap.collect_all(&self.shared, false);
            // SAFETY: our own heap.
            let p = unsafe { Heap::try_alloc(heap, class) };
            if !p.is_null() {
                return p;
            }
        }
        // SAFETY: `slot.delayed` is this heap's delayed list.
        if unsafe { heap.drain_delayed(&slot.delayed, &self.shared) } {
            // SAFETY: our own heap.
            let p = unsafe { Heap::try_alloc(heap, class) };
            if !p.is_null() {
                return p;
            }
        }
        if let Some(p) = heap.alloc_from_new_pool(class, &self.shared, false) {
            return p;
        }
        self.collect_free_slots(t);
        // Blocks other threads freed into this heap's listed pools wait on the pools' remote
        // lists until the heap allocates from those pools again, which a thread that moved on
        // to other classes never does (a producer whose blocks a consumer frees): take them in
        // now, and give back the pools that empty, before asking the OS for more. Only if some
        // other thread has freed into a listed pool since the last time, and only as far as
        // the heap's walk budget goes (see `Heap::walk_budget`): a heap of many listed pools
        // that keeps growing must not walk them all at every new arena.
        if heap.walk_budget > 0 && slot.remote_pending.load(Relaxed) {
            // Acquire: pairs with the setters' Release, so that every push that set the flag
            // before this clear is seen by the walk; a later one sets it again.
            slot.remote_pending.swap(false, Acquire);
            let visited = heap.collect_all(&self.shared, true);
            heap.walk_budget -= visited as isize;
            self.shared.arenas.lock().remote_walk_visits += visited;
            // SAFETY: our own heap.
            let p = unsafe { Heap::try_alloc(heap, class) };
            if !p.is_null() {
                return p;
            }
        }
        heap.walk_budget = (heap.walk_budget + Heap::<G>::WALK_CREDIT).min(Heap::<G>::WALK_CREDIT);
        heap.alloc_from_new_pool(class, &self.shared, true)
            .unwrap_or(ptr::null_mut())
    }

    /// Collects the calling thread's heap: frees its delayed blocks, takes in every remote
    /// free, gives back the pools that are then empty (and the kept ones unless `keep`).
    fn collect_own(&self, keep: bool) {
        let t = tls::current() & (MAX_SLOTS - 1);
        if t == 0 {
            return;
        }
        let slot = &self.slots[t];
        // SAFETY: slot `t` is this thread's.
        unsafe {
            let heap = &mut *slot.heap.get();
            heap.drain_delayed(&slot.delayed, &self.shared);
            heap.collect_all(&self.shared, keep);
        }
    }

    /// Claims, one at a time, every free slot other than `except` whose heap holds pools and
    /// collects it (see `collect_own`), giving back its empty and kept pools.
    #[cold]
    fn collect_free_slots(&self, except: usize) {
        for (t, slot) in self.slots.iter().enumerate().skip(1) {
            if t == except || !tls::try_claim(t) {
                continue;
            }
            // SAFETY: we hold slot `t`.
            unsafe {
                let heap = &mut *slot.heap.get();
                heap.drain_delayed(&slot.delayed, &self.shared);
                if !heap.is_empty() {
                    heap.collect_all(&self.shared, false);
                }
            }
            tls::release_claim(t);
        }
    }

    /// `realloc` of a backend block.
    fn realloc_large(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the block is the backend's, with this layout (the caller's routing).
        let q = unsafe { self.backend.realloc(ptr, layout, new_size) };
        if !q.is_null() {
            self.count_large(0, new_size as isize - layout.size() as isize);
        }
        q
    }
}

#[cfg(not(loom))]
impl<B: GlobalAlloc, G: Geometry> Drop for PyMalloc<B, G> {
    fn drop(&mut self) {
        self.shared
            .arenas
            .get_mut()
            .release_everything(&self.shared.map);
        // SAFETY: `&mut self`: no other thread can reach the map.
        unsafe { self.shared.map.release() };
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
