//! Arenas: `ARENA_SIZE`-aligned mappings from layer −1, cut into `MAX_POOLS_IN_ARENA` pools.
//!
//! The arena's bookkeeping does not live inside the arena: as in CPython, each mapped arena is
//! described by an [`ArenaObject`] in a side table (CPython's `arenas` vector), and pools refer
//! to their arena by index. The table grows by doubling (CPython: `INITIAL_ARENA_OBJECTS` = 16
//! then doubling); it is mapped from layer −1, never from the allocator itself, and moving it is
//! safe because everything refers to entries by index.
//!
//! Pools are carved from the arena in address order on first need (`pool_address` is the next
//! never-used pool); pools that have been used and emptied go on the arena's `freepools` list,
//! with their pages still committed ("dirty"). When the heap decides so, every pool on that list
//! is decommitted whole (header included) and moves to the arena's `decommitted` bitmap, one bit
//! per pool: its header is gone, so the bitmap, not a link in the pool, says it is free.
//! `take_pool` prefers a dirty pool (no page faults, and one that last held the same class
//! skips initialisation), then a decommitted one, then a virgin one.
//!
//! # Invariant
//! For a live arena (`address != null`):
//! `nfreepools == |freepools| + popcount(decommitted) + (address + ARENA_SIZE - pool_address) /
//! POOL_SIZE`, `ndirty == |freepools|`, `ntotalpools == MAX_POOLS_IN_ARENA` (no pool is lost to
//! alignment: arenas are mapped `ARENA_SIZE`-aligned), every pool on `freepools` has
//! `count == 0`, and every decommitted pool is carved and on no list.

use core::ptr::{self, NonNull};

use crate::geometry::{Geometry, GeometryExt, MAX_POOLS_PER_ARENA};
use crate::pool::{DUMMY_SIZE_IDX, NO_OWNER, PoolHeader};

/// "No arena" in index-linked lists.
pub(crate) const NONE: u32 = u32::MAX;

/// Bookkeeping for one arena. CPython: `struct arena_object`.
pub(crate) struct ArenaObject {
    pub(crate) address: *mut u8, // arena base; null when this slot holds no arena
    pub(crate) pool_address: *mut u8, // next never-used pool
    pub(crate) freepools: *mut PoolHeader, // emptied pools, linked through `nextpool`
    pub(crate) nfreepools: u32,  // pools: |freepools| + never-used pools
    pub(crate) ntotalpools: u32, // pools in the arena
    pub(crate) ndirty: u32,      // pools on `freepools` (pages committed)
    pub(crate) decommitted: [u64; MAX_POOLS_PER_ARENA / 64], // bit k: pool k is free, decommitted
    pub(crate) nextarena: u32,   // index: next in usable_arenas / unused slots list
    pub(crate) prevarena: u32,   // index: previous in usable_arenas
}

impl ArenaObject {
    const EMPTY: Self = Self {
        address: ptr::null_mut(),
        pool_address: ptr::null_mut(),
        freepools: ptr::null_mut(),
        nfreepools: 0,
        ntotalpools: 0,
        ndirty: 0,
        decommitted: [0; MAX_POOLS_PER_ARENA / 64],
        nextarena: NONE,
        prevarena: NONE,
    };

    /// Takes a pool from this arena: an emptied one if any (its `szidx` and free list are kept,
    /// so reuse for the same class skips initialisation), else the next never-used one.
    ///
    /// # Safety
    /// The arena is live and `nfreepools > 0`; `index` is its slot in the table.
    pub(crate) unsafe fn take_pool<G: Geometry>(&mut self, index: u32) -> *mut PoolHeader {
        debug_assert!(self.nfreepools > 0);
        self.nfreepools -= 1;
        let pool = self.freepools;
        if !pool.is_null() {
            // SAFETY: pools on `freepools` are initialised headers inside this arena.
            self.freepools = unsafe { (*pool).nextpool };
            self.ndirty -= 1;
            return pool;
        }
        let pool: *mut PoolHeader = if let Some(k) = self.first_decommitted() {
            self.decommitted[k / 64] &= !(1 << (k % 64));
            self.address.wrapping_add(k * G::POOL_SIZE).cast()
        } else {
            let p = self.pool_address;
            self.pool_address = self.pool_address.wrapping_add(G::POOL_SIZE);
            p.cast()
        };
        // SAFETY: `pool` is a carved-and-decommitted pool or, nfreepools being > 0 with no
        // other free pool, the next never-used one: a pool-aligned pool inside the arena that
        // nobody uses. Either way its header is written from scratch (a decommitted pool's reads
        // as zero).
        unsafe {
            (*pool).arenaindex = index;
            (*pool).szidx = DUMMY_SIZE_IDX;
            (*pool).owner = NO_OWNER;
            crate::pool::reset_remote(pool);
        }
        pool
    }

    /// The lowest-numbered decommitted pool, if any.
    fn first_decommitted(&self) -> Option<usize> {
        let w = self.decommitted.iter().position(|&w| w != 0)?;
        Some(w * 64 + self.decommitted[w].trailing_zeros() as usize)
    }

    /// Whether the pool at `pool` is decommitted (its header is not to be read as one).
    pub(crate) fn is_decommitted<G: Geometry>(&self, pool: *const PoolHeader) -> bool {
        let k = (pool as usize - self.address as usize) / G::POOL_SIZE;
        self.decommitted[k / 64] & (1 << (k % 64)) != 0
    }

    /// Decommitted pools.
    pub(crate) fn decommitted_pools(&self) -> usize {
        self.decommitted
            .iter()
            .map(|w| w.count_ones() as usize)
            .sum()
    }

    /// Gives every pool on the free list back to the OS, whole (`madvise(MADV_DONTNEED)`
    /// through layer −1), and records it in the `decommitted` bitmap. Returns how many.
    ///
    /// `page` is the OS page size. Pools smaller than a page are never decommitted: the kernel
    /// works in whole pages, so the call would take the neighbouring pools' pages too (or be
    /// refused). A pool the kernel refuses to decommit stays on the free list, dirty.
    ///
    /// # Safety
    /// The arena is live.
    pub(crate) unsafe fn decommit_free_pools<G: Geometry>(&mut self, page: usize) -> usize {
        if G::POOL_SIZE < page {
            return 0;
        }
        let (mut n, mut kept, mut nkept) = (0, ptr::null_mut::<PoolHeader>(), 0);
        let mut pool = self.freepools;
        while !pool.is_null() {
            // SAFETY: pools on `freepools` are initialised headers of this arena holding no live
            // block; the link is read before the pool's pages go.
            let next = unsafe { (*pool).nextpool };
            let k = (pool as usize - self.address as usize) / G::POOL_SIZE;
            // SAFETY: the pool is whole pages (POOL_SIZE is a multiple of the page size, both
            // powers of two, and pools are POOL_SIZE-aligned) inside this mapped arena, and
            // nothing in it is needed any more: from now on only the bitmap says it exists.
            if unsafe { pymalloc_vmm::decommit(NonNull::new_unchecked(pool.cast()), G::POOL_SIZE) }
            {
                self.decommitted[k / 64] |= 1 << (k % 64);
                n += 1;
            } else {
                // SAFETY: refused, the pool is untouched; it goes back on the (new) free list.
                unsafe { (*pool).nextpool = kept };
                kept = pool;
                nkept += 1;
            }
            pool = next;
        }
        self.freepools = kept;
        self.ndirty = nkept;
        n
    }

    #[cfg(test)]
    pub(crate) fn for_tests(address: *mut u8) -> Self {
        Self {
            address,
            pool_address: address,
            ..Self::EMPTY
        }
    }

    /// Puts an emptied pool back on this arena's free list.
    ///
    /// # Safety
    /// `pool` belongs to this live arena, holds no live block and is in no other list.
    pub(crate) unsafe fn give_pool(&mut self, pool: *mut PoolHeader) {
        // SAFETY: the pool header is ours.
        unsafe {
            (*pool).nextpool = self.freepools;
            (*pool).owner = NO_OWNER;
            crate::pool::reset_remote(pool);
        }
        self.freepools = pool;
        self.nfreepools += 1;
        self.ndirty += 1;
    }

    /// Pools never carved yet.
    pub(crate) fn virgin_pools<G: Geometry>(&self) -> usize {
        (self.address as usize + G::ARENA_SIZE - self.pool_address as usize) / G::POOL_SIZE
    }
}

/// The growable table of [`ArenaObject`]s, mapped from layer −1.
pub(crate) struct ArenaTable {
    ptr: *mut ArenaObject, // start of the mapping; null until the first arena
    cap: u32,              // entries
}

impl ArenaTable {
    /// CPython: `INITIAL_ARENA_OBJECTS`.
    const INITIAL_ARENA_OBJECTS: u32 = 16;

    pub(crate) const fn new() -> Self {
        Self {
            ptr: ptr::null_mut(),
            cap: 0,
        }
    }

    pub(crate) fn capacity(&self) -> u32 {
        self.cap
    }

    /// Bytes of address space the table occupies.
    pub(crate) fn bytes(&self) -> usize {
        if self.ptr.is_null() {
            0
        } else {
            pymalloc_vmm::round_to_pages(self.cap as usize * size_of::<ArenaObject>()).unwrap_or(0)
        }
    }

    #[inline(always)]
    pub(crate) fn get(&self, i: u32) -> &ArenaObject {
        debug_assert!(i < self.cap, "arena index {i} out of {}", self.cap);
        // SAFETY: `i < cap` (checked in debug builds; callers only pass indices they read from
        // this table or from pools it owns), and entries are initialised.
        unsafe { &*self.ptr.add(i as usize) }
    }

    #[inline(always)]
    pub(crate) fn get_mut(&mut self, i: u32) -> &mut ArenaObject {
        debug_assert!(i < self.cap, "arena index {i} out of {}", self.cap);
        // SAFETY: as in `get`, with `&mut self` giving exclusive access.
        unsafe { &mut *self.ptr.add(i as usize) }
    }

    /// Doubles the table (or creates it). The new entries are empty slots; returns the range
    /// of new indices, or `None` if the mapping failed (the old table is then untouched).
    pub(crate) fn grow(&mut self) -> Option<core::ops::Range<u32>> {
        let new_cap = if self.cap == 0 {
            Self::INITIAL_ARENA_OBJECTS
        } else {
            self.cap.checked_mul(2)?
        };
        if new_cap == NONE {
            return None;
        }
        let bytes = (new_cap as usize).checked_mul(size_of::<ArenaObject>())?;
        let new: *mut ArenaObject = pymalloc_vmm::map(bytes)?.as_ptr().cast();
        let old_cap = self.cap;
        // SAFETY: `new` has room for `new_cap` entries; the old table has `old_cap`
        // initialised ones and is unmapped only after the copy.
        unsafe {
            if !self.ptr.is_null() {
                ptr::copy_nonoverlapping(self.ptr, new, old_cap as usize);
                self.release();
            }
            for i in old_cap..new_cap {
                new.add(i as usize).write(ArenaObject::EMPTY);
            }
        }
        self.ptr = new;
        self.cap = new_cap;
        Some(old_cap..new_cap)
    }

    /// Unmaps the table itself (not the arenas it describes).
    pub(crate) fn release(&mut self) {
        if let Some(p) = NonNull::new(self.ptr) {
            // SAFETY: the table was mapped with this size and nothing refers to it after this.
            unsafe { pymalloc_vmm::unmap(p.cast(), self.cap as usize * size_of::<ArenaObject>()) };
        }
        self.ptr = ptr::null_mut();
        self.cap = 0;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::geometry::Py310;

    /// A free pool is decommitted only when a pool is at least an OS page: with pages larger
    /// than pools, `madvise` would zero the live pools that share the free pool's page.
    #[test]
    fn pools_smaller_than_a_page_are_not_decommitted() {
        let base = pymalloc_vmm::map_aligned(Py310::ARENA_SIZE, Py310::ARENA_SIZE).unwrap();
        let mut a = ArenaObject::for_tests(base.as_ptr());
        a.nfreepools = Py310::MAX_POOLS_IN_ARENA as u32;
        // SAFETY: the arena is mapped and ours; pools are taken, written and given back as the
        // heap would.
        unsafe {
            let free = a.take_pool::<Py310>(0);
            let live = a.take_pool::<Py310>(0);
            (*free).set_count(0);
            let live_bytes = live.cast::<u8>().add(Py310::POOL_OVERHEAD);
            live_bytes.write_bytes(0xCD, Py310::POOL_SIZE - Py310::POOL_OVERHEAD);
            a.give_pool(free);
            // A 64 KiB page would cover both pools (and two more): nothing happens.
            assert_eq!(a.decommit_free_pools::<Py310>(4 * Py310::POOL_SIZE), 0);
            assert_eq!((a.ndirty, a.freepools, a.decommitted_pools()), (1, free, 0));
            // With the machine's own pages, the free pool goes, and only it.
            assert_eq!(a.decommit_free_pools::<Py310>(pymalloc_vmm::page_size()), 1);
            assert_eq!((a.ndirty, a.decommitted_pools()), (0, 1));
            assert!(a.is_decommitted::<Py310>(free) && !a.is_decommitted::<Py310>(live));
            let n = Py310::POOL_SIZE - Py310::POOL_OVERHEAD;
            assert!(
                core::slice::from_raw_parts(live_bytes, n)
                    .iter()
                    .all(|&b| b == 0xCD)
            );
            // It is taken again before any virgin pool, with a fresh header.
            let again = a.take_pool::<Py310>(0);
            assert_eq!((again, (*again).szidx), (free, DUMMY_SIZE_IDX));
            assert_eq!(a.decommitted_pools(), 0);
            pymalloc_vmm::unmap(base, Py310::ARENA_SIZE);
        }
    }
}
