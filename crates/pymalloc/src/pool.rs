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
//! Pools carry no lock and know nothing of threads: every function here takes a pool its
//! caller owns exclusively.

use core::ptr;

use crate::geometry::{Geometry, GeometryExt};

/// The class index of a pool that has never held blocks. CPython: `DUMMY_SIZE_IDX`.
pub(crate) const DUMMY_SIZE_IDX: u16 = 0xffff;

/// The header at the start of every pool. 48 bytes on 64-bit targets, like CPython's
/// `pool_header`; the layout differs (narrower counters) to leave room for what per-thread
/// heaps need: an owner id and a remote-free list head.
#[repr(C)]
pub(crate) struct PoolHeader {
    pub(crate) count: u16,                // blocks in use
    pub(crate) szidx: u16,                // size class, or DUMMY_SIZE_IDX before first use
    pub(crate) nextoffset: u16,           // bytes from pool start to the first virgin block
    pub(crate) maxnextoffset: u16,        // largest nextoffset that still fits a block
    pub(crate) arenaindex: u32,           // owning arena's index in the arena table
    pub(crate) owner: u32,                // reserved: owning heap, 0 today
    pub(crate) freeblock: *mut u8,        // free list head; null iff the pool is full
    pub(crate) nextpool: *mut PoolHeader, // next pool in the class list / arena free list
    pub(crate) prevpool: *mut PoolHeader, // previous pool in the class list (null at head)
    pub(crate) remote_free: *mut u8,      // reserved: blocks freed by other threads, null today
}

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
/// live block, so this read cannot race with a write even without the heap lock.
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
unsafe fn next_free(block: *mut u8) -> *mut u8 {
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
        (*pool).count = 1;
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
        (*pool).count += 1;
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

/// Pushes `p` on its pool's free list. Returns the pool and whether it was full before.
///
/// # Safety
/// `p` is a live block of an initialised pool owned by the caller, and is dead from now on.
#[inline(always)]
pub(crate) unsafe fn push<G: Geometry>(p: *mut u8) -> (*mut PoolHeader, bool) {
    let pool = pool_of::<G>(p);
    // SAFETY: `p` is a block of `pool`, large and aligned enough to hold the link.
    unsafe {
        let lastfree = (*pool).freeblock;
        p.cast::<*mut u8>().write(lastfree);
        (*pool).freeblock = p;
        debug_assert!((*pool).count > 0, "free into an empty pool {pool:p}");
        (*pool).count -= 1;
        (pool, lastfree.is_null())
    }
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
                assert_eq!((*pool).count as usize, cap);
                assert!((*pool).freeblock.is_null());
                assert_eq!(virgin_blocks::<G>(pool), 0);
                for (k, b) in blocks.iter().enumerate() {
                    let off = *b as usize - pool as usize;
                    assert_eq!(off, G::POOL_OVERHEAD + k * size, "lazy carving is in order");
                    assert_eq!(*b as usize % G::ALIGNMENT, 0);
                    assert!(off + size <= G::POOL_SIZE);
                }
                let (_, was_full) = push::<G>(blocks[3]);
                assert!(was_full);
                let (again, _) = pop::<G>(pool, class);
                assert_eq!(again, blocks[3], "last freed, first reused");
                for b in blocks.iter().rev() {
                    push::<G>(*b);
                }
                assert_eq!((*pool).count, 0);
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
                assert_eq!((*pool).count, 1);
                assert_eq!(virgin_blocks::<Py310>(pool), 1021 - 2);
            }
        });
    }
}
