//! Pools: `POOL_SIZE`-aligned runs of equal-sized blocks with a header at the front.
//!
//! ```text
//!  pool (POOL_SIZE-aligned)
//!  |<- POOL_OVERHEAD ->|<- size ->|<- size ->|<- size ->| ... |<- size ->|   |
//!  +-------------------+----------+----------+----------+-----+----------+---+
//!  |    PoolHeader     |  block 0 |  block 1 |  block 2 | ... |  block n |pad|
//!  +-------------------+----------+----------+----------+-----+----------+---+
//!                                             ^ nextoffset: first virgin block
//! ```
//!
//! A fresh pool is carved lazily, as CPython does: initialisation hands out block 0, puts
//! block 1 on the free list and leaves the rest *virgin*. When the free list runs dry, one more
//! virgin block is carved at `nextoffset`; only when `nextoffset > maxnextoffset` is the pool
//! full. Touching pages only as blocks are needed keeps the resident size of a new pool small.
//!
//! Freed blocks are pushed on a singly linked list threaded through their first word
//! (`freeblock`), so the most recently freed block is reused first (hot in cache).
//!
//! # Invariant
//! For a pool of class `i` with `cap = blocks_per_pool(i)`:
//! `count + |free list| + (maxnextoffset + size - nextoffset) / size == cap`, and
//! `freeblock` is null exactly when the pool is full (`count == cap`).
//!
//! # Owners and remote frees
//! Every pool in use belongs to one heap (`owner`: a thread heap's slot, or [`SHARED`] for the
//! locked shared heap), set when the heap takes the pool from its arena and stable while the pool
//! holds a live block. Only the owner touches `freeblock`, `nextoffset` and the list links, with
//! plain accesses; `count` is an atomic written only by the owner (relaxed loads and stores,
//! plain moves on every target we build for) so that statistics may read it from any thread.
//!
//! Another thread frees a block into the pool with [`remote_push`]: a CAS pushes it on
//! `remote`, a Treiber stack whose two low bits (blocks are 16-byte aligned) hold a tag:
//!
//! - `LISTED`: the pool is in its owner's class list (or the owner is working on it). The owner
//!   takes the whole stack with one swap ([`collect`]) when the pool's free list and virgin
//!   blocks are exhausted, before it declares the pool full.
//! - `FULL`: the owner found the pool full, unlinked it, and set the tag ([`mark_full`], which
//!   succeeds only if no remote block is pending). A full pool is in no list, so the next remote
//!   free must tell the owner: it swings the tag to `QUEUED` and, instead of pushing its block
//!   on the pool, pushes it on the owner heap's *delayed* list. The owner frees delayed blocks
//!   as its own on its slow path; that free finds the pool full and re-lists it.
//! - `QUEUED`: a delayed block of this pool is on (or on its way to) the owner's delayed list, so
//!   the pool will be re-listed; further remote frees just push on the pool.
//!
//! The owner sets `LISTED` again when it re-lists the pool ([`mark_listed`]), whatever the tag
//! was. Memory orderings: a push is a `Release` CAS and the owner's swap is `Acquire`, so the
//! owner sees the link written into the block and every write the freeing thread made to it
//! before freeing. Tag changes carry no data (they are read-modify-writes of the one word, so
//! they are totally ordered with every push), and are `Relaxed`.

use core::ptr;

use crate::geometry::{Geometry, GeometryExt};
use crate::sync::atomic::{AtomicU16, AtomicUsize, Ordering::*};

/// `owner` of a pool on its arena's free list (or never used).
pub(crate) const NO_OWNER: u32 = u32::MAX;
/// `owner` of a pool of the locked shared heap (threads with no heap of their own).
pub(crate) const SHARED: u32 = u32::MAX - 1;

const TAG_MASK: usize = 0b11;
const LISTED: usize = 0;
const FULL: usize = 1;
const QUEUED: usize = 2;

/// The class index of a pool that has never held blocks. CPython: `DUMMY_SIZE_IDX`.
pub(crate) const DUMMY_SIZE_IDX: u16 = 0xffff;

/// The header at the start of every pool. 48 bytes on 64-bit targets, like CPython's
/// `pool_header`; the layout differs (narrower counters) to leave room for what per-thread
/// heaps need: an owner and a remote-free list head.
#[repr(C)]
pub(crate) struct PoolHeader {
    pub(crate) count: AtomicU16, // blocks in use (owner writes, anyone may read)
    pub(crate) szidx: u16,       // size class, or DUMMY_SIZE_IDX before first use
    pub(crate) nextoffset: u16,  // bytes from pool start to the first virgin block
    pub(crate) maxnextoffset: u16, // largest nextoffset that still fits a block
    pub(crate) arenaindex: u32,  // owning arena's index in the arena table
    pub(crate) owner: u32,       // owning heap's slot, SHARED or NO_OWNER
    pub(crate) freeblock: *mut u8, // free list head; null iff the pool is full
    pub(crate) nextpool: *mut PoolHeader, // next pool in the class list / arena free list
    pub(crate) prevpool: *mut PoolHeader, // previous pool in the class list (null at head)
    pub(crate) remote: AtomicUsize, // blocks freed by other threads | tag
}

/// Blocks in use in `pool`, read from any thread: only the `count` field is borrowed, never the
/// whole header (whose plain fields the owner may be writing).
///
/// # Safety
/// `pool` is an initialised pool header.
#[inline(always)]
pub(crate) unsafe fn count_of(pool: *const PoolHeader) -> usize {
    // SAFETY: per the contract; `count` is atomic.
    unsafe { (*pool).count.load(Relaxed) as usize }
}

impl PoolHeader {
    /// Blocks in use (including those freed by other threads and not yet collected). Takes
    /// `&self`: for the owner (or a holder of the arenas lock reading a free pool); other
    /// threads use [`count_of`].
    #[inline(always)]
    pub(crate) fn count(&self) -> usize {
        self.count.load(Relaxed) as usize
    }

    /// Sets the blocks in use; only the owner calls it.
    #[inline(always)]
    pub(crate) fn set_count(&self, n: usize) {
        self.count.store(n as u16, Relaxed);
    }
}

#[cfg(not(loom))]
const _: () = assert!(size_of::<PoolHeader>() == 48 || size_of::<usize>() != 8);

/// The pool holding address `p`, with the provenance of its arena.
///
/// Not derived from `p`'s own provenance: a block handed back by a caller may carry provenance
/// over only the bytes the caller used (a `Box<T>` or `&mut T` covers `size_of::<T>()`), and
/// the header is not among them. Every arena's provenance is exposed when it is mapped
/// (`Heap::new_arena`), so the header's address recovers it. This compiles to the same mask.
#[inline(always)]
pub(crate) fn pool_of<G: Geometry>(p: *mut u8) -> *mut PoolHeader {
    core::ptr::with_exposed_provenance_mut(p.addr() & !(G::POOL_SIZE - 1))
}

/// The size class of the pool holding live block `p`.
///
/// # Safety
/// `p` is a live block of an initialised pool. `szidx` changes only while a pool holds no
/// live block, so this read cannot race with a write even without the arenas lock.
#[inline(always)]
pub(crate) unsafe fn class_of_block<G: Geometry>(p: *mut u8) -> usize {
    // SAFETY: per the contract, the header is initialised and its `szidx` is stable.
    unsafe { (*pool_of::<G>(p)).szidx as usize }
}

/// Reads the free-list link stored in the first word of a free block.
///
/// # Safety
/// `block` is a free block of a live pool.
#[inline(always)]
pub(crate) unsafe fn next_free(block: *mut u8) -> *mut u8 {
    // SAFETY: a free block is at least ALIGNMENT >= 8 bytes, aligned, and holds its link.
    unsafe { block.cast::<*mut u8>().read() }
}

/// Initialises a pool for class `class` and returns its first block (lazy carving: block 0 is
/// handed out, block 1 goes on the free list, the rest stays virgin).
///
/// # Safety
/// `pool` is a `POOL_SIZE`-aligned pool of a mapped arena that holds no live blocks.
pub(crate) unsafe fn init<G: Geometry>(pool: *mut PoolHeader, class: usize) -> *mut u8 {
    let size = G::class_size(class);
    // SAFETY: the caller owns this whole pool; header and the first two blocks lie inside it
    // because every pool holds at least two blocks (`Geometry::VALID`).
    unsafe {
        (*pool).szidx = class as u16;
        (*pool).set_count(1);
        (*pool).nextoffset = (G::POOL_OVERHEAD + 2 * size) as u16;
        (*pool).maxnextoffset = (G::POOL_SIZE - size) as u16;
        let bp = pool.cast::<u8>().add(G::POOL_OVERHEAD);
        let second = bp.add(size);
        second.cast::<*mut u8>().write(ptr::null_mut());
        (*pool).freeblock = second;
        bp
    }
}

/// Takes a block from a pool that is not full. If that empties the free list, carves the next
/// virgin block onto it; returns `true` as the second value when the pool became full.
///
/// # Safety
/// `pool` is an initialised, non-full pool of class `class` owned by the caller.
#[inline(always)]
pub(crate) unsafe fn pop<G: Geometry>(pool: *mut PoolHeader, class: usize) -> (*mut u8, bool) {
    // SAFETY: the pool is initialised and not full, so `freeblock` is a free block of it.
    unsafe {
        let bp = (*pool).freeblock;
        debug_assert!(!bp.is_null(), "pop from a full pool {pool:p}");
        (*pool).set_count((*pool).count() + 1);
        let next = next_free(bp);
        (*pool).freeblock = next;
        if crate::util::likely(!next.is_null()) {
            return (bp, false);
        }
        (bp, extend::<G>(pool, class))
    }
}

/// Carves one virgin block onto the empty free list; returns `true` if none was left (the pool
/// is now full and `freeblock` stays null). CPython: `pymalloc_pool_extend`.
///
/// # Safety
/// `pool` is an initialised pool of class `class` whose free list is empty.
#[inline(never)]
unsafe fn extend<G: Geometry>(pool: *mut PoolHeader, class: usize) -> bool {
    // SAFETY: offsets below maxnextoffset leave room for a whole block inside the pool.
    unsafe {
        if (*pool).nextoffset <= (*pool).maxnextoffset {
            let block = pool.cast::<u8>().add((*pool).nextoffset as usize);
            (*pool).nextoffset += G::class_size(class) as u16;
            block.cast::<*mut u8>().write(ptr::null_mut());
            (*pool).freeblock = block;
            false
        } else {
            true
        }
    }
}

/// Pushes `p` on its pool's free list. Returns the pool, whether it was full before, and
/// whether it is empty now.
///
/// # Safety
/// `p` is a live block of an initialised pool owned by the caller, and is dead from now on.
#[inline(always)]
pub(crate) unsafe fn push<G: Geometry>(p: *mut u8) -> (*mut PoolHeader, bool, bool) {
    let pool = pool_of::<G>(p);
    // SAFETY: `p` is a block of `pool`, large and aligned enough to hold the link.
    unsafe {
        let lastfree = (*pool).freeblock;
        p.cast::<*mut u8>().write(lastfree);
        (*pool).freeblock = p;
        let count = (*pool).count();
        debug_assert!(count > 0, "free into an empty pool {pool:p}");
        (*pool).set_count(count - 1);
        (pool, lastfree.is_null(), count == 1)
    }
}

/// What [`remote_push`] did with a block.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum RemotePush {
    /// The pool was marked full: its tag is now `QUEUED` and the caller must push the block on
    /// the owner's delayed list (see the module docs) instead.
    Queued,
    /// On the pool's remote list, which was empty.
    First,
    /// On the pool's remote list, behind others.
    Added,
}

/// Frees `block` into `pool` from a thread that does not own it (see [`RemotePush`]).
///
/// # Safety
/// `block` is a live block of `pool`, dead from now on; `pool` is an initialised pool.
#[inline]
pub(crate) unsafe fn remote_push(pool: *mut PoolHeader, block: *mut u8) -> RemotePush {
    // SAFETY: the header is initialised; `remote` is only ever accessed atomically.
    let word = unsafe { &(*pool).remote };
    let mut old = word.load(Relaxed);
    loop {
        let tag = old & TAG_MASK;
        if tag == FULL {
            // The owner must hear of it: take over the notification (only one thread wins).
            match word.compare_exchange_weak(old, (old & !TAG_MASK) | QUEUED, Relaxed, Relaxed) {
                Ok(_) => return RemotePush::Queued,
                Err(now) => old = now,
            }
            continue;
        }
        let next: *mut u8 = ptr::with_exposed_provenance_mut(old & !TAG_MASK);
        // SAFETY: the block is dead and ours to write; it is at least ALIGNMENT >= 8 bytes.
        unsafe { block.cast::<*mut u8>().write(next) };
        // Release: the owner's Acquire swap sees the link and our earlier writes to the block.
        match word.compare_exchange_weak(old, block.expose_provenance() | tag, Release, Relaxed) {
            Ok(_) if next.is_null() => return RemotePush::First,
            Ok(_) => return RemotePush::Added,
            Err(now) => old = now,
        }
    }
}

/// Pushes `block` on a heap's delayed list (blocks of full pools freed by other threads).
///
/// # Safety
/// `block` is a dead block whose pool's tag this thread just moved from `FULL` to `QUEUED`.
pub(crate) unsafe fn push_delayed(list: &crate::sync::atomic::AtomicPtr<u8>, block: *mut u8) {
    let mut old = list.load(Relaxed);
    loop {
        // SAFETY: as in `remote_push`.
        unsafe { block.cast::<*mut u8>().write(old) };
        match list.compare_exchange_weak(old, block, Release, Relaxed) {
            Ok(_) => return,
            Err(now) => old = now,
        }
    }
}

/// Takes the blocks other threads freed into `pool` and puts them on its free list; returns how
/// many.
///
/// # Safety
/// The caller owns `pool`, an initialised pool in its class list (tag `LISTED`).
#[inline]
pub(crate) unsafe fn collect(pool: *mut PoolHeader) -> usize {
    // SAFETY: the header is initialised.
    let word = unsafe { &(*pool).remote };
    if word.load(Relaxed) == 0 {
        return 0;
    }
    // Acquire: pairs with the Release of every push in the stack.
    let head = word.swap(LISTED, Acquire) & !TAG_MASK;
    let first: *mut u8 = ptr::with_exposed_provenance_mut(head);
    let mut last = first;
    let mut n = 1;
    // SAFETY: every block on the stack is a dead block of this pool holding its link; the last
    // one's link takes the pool's free list, which the owner (us) alone touches.
    unsafe {
        loop {
            let next = next_free(last);
            if next.is_null() {
                break;
            }
            last = next;
            n += 1;
        }
        last.cast::<*mut u8>().write((*pool).freeblock);
        (*pool).freeblock = first;
        (*pool).set_count((*pool).count() - n);
    }
    n
}

/// The owner found `pool` full (no free nor virgin block). Returns `true` if it is now tagged
/// `FULL` (the caller unlinks it; the next remote free will tell the owner), `false` if other
/// threads had freed blocks into it: those were collected and the pool is not full any more.
///
/// # Safety
/// The caller owns `pool`, an initialised pool in its class list (tag `LISTED`).
#[inline(never)]
pub(crate) unsafe fn mark_full(pool: *mut PoolHeader) -> bool {
    // SAFETY: the header is initialised.
    let word = unsafe { &(*pool).remote };
    if word
        .compare_exchange(LISTED, FULL, Relaxed, Relaxed)
        .is_ok()
    {
        return true;
    }
    // SAFETY: the tag is LISTED (the pool is listed), and the stack is not empty.
    unsafe { collect(pool) };
    false
}

/// The owner re-lists a pool that was full: back to `LISTED`, keeping pending remote blocks.
///
/// # Safety
/// The caller owns `pool`, an initialised pool.
#[inline]
pub(crate) unsafe fn mark_listed(pool: *mut PoolHeader) {
    // SAFETY: the header is initialised.
    unsafe { (*pool).remote.fetch_and(!TAG_MASK, Relaxed) };
}

/// Resets the remote word of a pool that holds no live block (being taken or given back).
///
/// # Safety
/// `pool` holds no live block, so no other thread can free into it.
pub(crate) unsafe fn reset_remote(pool: *mut PoolHeader) {
    // SAFETY: the header is ours.
    unsafe { (*pool).remote.store(0, Relaxed) };
}

/// Virgin (never carved) blocks left in a pool.
///
/// # Safety
/// `pool` is an initialised pool.
pub(crate) unsafe fn virgin_blocks<G: Geometry>(pool: *const PoolHeader) -> usize {
    // SAFETY: the caller guarantees an initialised header.
    let (next, max, class) = unsafe {
        (
            (*pool).nextoffset as usize,
            (*pool).maxnextoffset as usize,
            (*pool).szidx as usize,
        )
    };
    let size = G::class_size(class);
    (max + size).saturating_sub(next) / size
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::geometry::{Py37, Py310};

    /// A page-aligned scratch pool from the OS.
    fn with_pool<G: Geometry>(f: impl FnOnce(*mut PoolHeader)) {
        let p = pymalloc_vmm::map_aligned(G::POOL_SIZE, G::POOL_SIZE).unwrap();
        f(p.as_ptr().cast());
        // SAFETY: mapped just above, no longer used.
        unsafe { pymalloc_vmm::unmap(p, G::POOL_SIZE) };
    }

    fn fill_and_drain<G: Geometry>(class: usize) {
        with_pool::<G>(|pool| {
            let cap = G::blocks_per_pool(class);
            let size = G::class_size(class);
            let mut blocks = Vec::new();
            // SAFETY: the scratch pool is ours; every block popped is pushed back once.
            unsafe {
                blocks.push(init::<G>(pool, class));
                let mut full = false;
                while !full {
                    let (b, f) = pop::<G>(pool, class);
                    blocks.push(b);
                    full = f;
                }
                assert_eq!(blocks.len(), cap, "class {class}");
                assert_eq!((*pool).count(), cap);
                assert!((*pool).freeblock.is_null());
                assert_eq!(virgin_blocks::<G>(pool), 0);
                for (k, b) in blocks.iter().enumerate() {
                    let off = *b as usize - pool as usize;
                    assert_eq!(off, G::POOL_OVERHEAD + k * size, "lazy carving is in order");
                    assert_eq!(*b as usize % G::ALIGNMENT, 0);
                    assert!(off + size <= G::POOL_SIZE);
                }
                let (_, was_full, _) = push::<G>(blocks[3]);
                assert!(was_full);
                let (again, _) = pop::<G>(pool, class);
                assert_eq!(again, blocks[3], "last freed, first reused");
                for b in blocks.iter().rev() {
                    push::<G>(*b);
                }
                assert_eq!((*pool).count(), 0);
            }
        });
    }

    #[test]
    fn every_class_fills_and_drains() {
        for class in 0..Py310::NB_SMALL_SIZE_CLASSES {
            fill_and_drain::<Py310>(class);
        }
        for class in 0..Py37::NB_SMALL_SIZE_CLASSES {
            fill_and_drain::<Py37>(class);
        }
    }

    #[test]
    fn init_is_lazy() {
        with_pool::<Py310>(|pool| {
            // SAFETY: the scratch pool is ours.
            unsafe {
                let b = init::<Py310>(pool, 0);
                assert_eq!(b as usize - pool as usize, 48);
                assert_eq!((*pool).count(), 1);
                assert_eq!(virgin_blocks::<Py310>(pool), 1021 - 2);
            }
        });
    }
}

/// loom models of the remote-free protocol (see the module documentation): a pool whose
/// blocks another thread frees while the owner fills, marks and re-lists it. The pool header
/// lives in a `Box` and its blocks are separate 16-byte-aligned boxes: the functions under test
/// touch only the header and the blocks' first words.
/// `RUSTFLAGS="--cfg loom" cargo test -p pymalloc --release --lib`
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use crate::sync::atomic::AtomicPtr;
    use loom::sync::Arc;
    use loom::thread;

    #[repr(align(16))]
    struct Block([usize; 2]);

    struct Pool {
        header: *mut PoolHeader, // from `Box::into_raw`, freed on drop
        blocks: Vec<*mut Block>, // from `Box::into_raw`, freed on drop
        delayed: AtomicPtr<u8>,  // the owner heap's delayed list
    }

    // SAFETY: the owner alone touches the header's plain fields; the model hands blocks over
    // as the allocator's users would.
    unsafe impl Sync for Pool {}
    // SAFETY: as above.
    unsafe impl Send for Pool {}

    impl Drop for Pool {
        fn drop(&mut self) {
            for &b in &self.blocks {
                // SAFETY: from `Box::into_raw`, freed once.
                drop(unsafe { Box::from_raw(b) });
            }
            // SAFETY: as above.
            drop(unsafe { Box::from_raw(self.header) });
        }
    }

    impl Pool {
        /// A pool with `n` live blocks, no free one, listed.
        fn full(n: usize) -> Arc<Self> {
            let header = Box::into_raw(Box::new(PoolHeader {
                count: AtomicU16::new(n as u16),
                szidx: 0,
                nextoffset: 0,
                maxnextoffset: 0,
                arenaindex: 0,
                owner: 1,
                freeblock: ptr::null_mut(),
                nextpool: ptr::null_mut(),
                prevpool: ptr::null_mut(),
                remote: AtomicUsize::new(LISTED),
            }));
            let blocks = (0..n)
                .map(|_| Box::into_raw(Box::new(Block([0; 2]))))
                .collect();
            Arc::new(Self {
                header,
                blocks,
                delayed: AtomicPtr::new(ptr::null_mut()),
            })
        }

        fn pool(&self) -> *mut PoolHeader {
            self.header
        }

        /// The words the model reads after the threads are joined: `(count, remote)`.
        fn words(&self) -> (usize, usize) {
            // SAFETY: the header lives until drop; both fields are atomic.
            unsafe { (count_of(self.header), (*self.header).remote.load(Relaxed)) }
        }

        fn block(&self, i: usize) -> *mut u8 {
            self.blocks[i].cast()
        }

        /// A free by another thread, as `PyMalloc::dealloc_remote` does it.
        fn remote_free(&self, i: usize) {
            let b = self.block(i);
            // SAFETY: block `i` is live and ours to free.
            unsafe {
                if remote_push(self.pool(), b) == RemotePush::Queued {
                    push_delayed(&self.delayed, b);
                }
            }
        }
    }

    /// The owner's side: its heap's view of whether the pool is listed.
    struct Owner {
        listed: bool,
    }

    impl Owner {
        /// The pool ran dry (`Heap::pool_filled`).
        fn filled(&mut self, p: &Pool) {
            // SAFETY: the owner's pool, listed.
            if unsafe { mark_full(p.pool()) } {
                self.listed = false;
            }
        }

        /// The slow path: free the delayed blocks as the owner (`Heap::drain_delayed` and
        /// `Heap::free`), re-listing a full pool.
        fn drain(&mut self, p: &Pool) {
            let mut b = p.delayed.swap(ptr::null_mut(), Acquire);
            while !b.is_null() {
                // SAFETY: delayed blocks are dead blocks of our pool holding their link.
                unsafe {
                    let next = b.cast::<*mut u8>().read();
                    let pool = p.pool();
                    let was_full = (*pool).freeblock.is_null();
                    b.cast::<*mut u8>().write((*pool).freeblock);
                    (*pool).freeblock = b;
                    (*pool).set_count((*pool).count() - 1);
                    if was_full {
                        assert!(!self.listed, "a pool with no free block was listed");
                        mark_listed(pool);
                        self.listed = true;
                    }
                    b = next;
                }
            }
        }

        /// Blocks on the pool's free list.
        fn free_blocks(&self, p: &Pool) -> usize {
            let mut n = 0;
            // SAFETY: the owner's pool; free blocks hold their links.
            unsafe {
                let mut b = (*p.pool()).freeblock;
                while !b.is_null() {
                    n += 1;
                    b = b.cast::<*mut u8>().read();
                }
            }
            n
        }
    }

    /// The owner finds the pool full while another thread frees two of its blocks; the owner
    /// then runs its slow path once more. Whatever the interleaving, both blocks end up on the
    /// free list of a listed pool (none on a remote list of an unlisted pool, which the owner
    /// would never look at again), and `count` says one block lives.
    #[test]
    fn remote_frees_into_a_pool_going_full_reach_its_owner() {
        loom::model(|| {
            let p = Pool::full(3);
            let freer = {
                let p = p.clone();
                thread::spawn(move || {
                    p.remote_free(1);
                    p.remote_free(2);
                })
            };
            let mut owner = Owner { listed: true };
            owner.filled(&p);
            owner.drain(&p);
            freer.join().unwrap();
            // The owner's later slow paths: the delayed list, then (once listed) the pool's
            // remote list when it runs dry.
            owner.drain(&p);
            if owner.listed {
                // SAFETY: our listed pool.
                unsafe { collect(p.pool()) };
            }
            assert!(
                owner.listed,
                "the pool stayed unlisted with blocks freed into it: {:#x}",
                p.words().1
            );
            assert_eq!(owner.free_blocks(&p), 2, "a freed block is lost");
            assert_eq!(p.words(), (1, LISTED));
        });
    }

    /// Two threads free into a full pool at once: exactly one of them notifies the owner, the
    /// other's block goes on the pool's remote list, and nothing is lost.
    #[test]
    fn two_remote_freers_notify_once() {
        loom::model(|| {
            let p = Pool::full(2);
            let mut owner = Owner { listed: true };
            owner.filled(&p);
            assert!(!owner.listed);
            let a = {
                let p = p.clone();
                thread::spawn(move || p.remote_free(0))
            };
            p.remote_free(1);
            a.join().unwrap();
            let mut delayed = 0;
            let mut b = p.delayed.load(Acquire);
            while !b.is_null() {
                delayed += 1;
                // SAFETY: a dead block holding its link.
                b = unsafe { b.cast::<*mut u8>().read() };
            }
            assert_eq!(delayed, 1, "the owner must be told exactly once");
            owner.drain(&p);
            // SAFETY: our listed pool.
            unsafe { collect(p.pool()) };
            assert_eq!(owner.free_blocks(&p), 2);
            assert_eq!(p.words().0, 0);
        });
    }
}
