//! The heaps: CPython's obmalloc algorithm over arenas, pools and blocks, split in two.
//!
//! - [`Arenas`]: what every heap of an allocator shares, behind one lock (`Shared::arenas`):
//!   the arena table, `usable_arenas` (the arenas that still have free pools, sorted by
//!   ascending free-pool count, so new pools come from the fullest arena and nearly empty
//!   arenas get the chance to empty completely; `nfp2lasta[n]` remembers the last arena in the
//!   list with `n` free pools, which makes keeping the order O(1), CPython bpo-37029), and the
//!   counters behind [`Stats`]. A heap takes the lock only to take a pool or give one back.
//! - [`Heap`]: one per thread (and one locked shared heap for threads without one, see `tls`).
//!   It owns `usedpools[class]`: a doubly linked list of its pools of each class that have both
//!   live and free blocks. Allocation takes the first pool's first free block (the fast path).
//!   A pool that fills up leaves the list; one that gets a block back re-enters at the front;
//!   one that empties goes back to its arena. (CPython threads the same lists through a table
//!   of fake headers, `usedpools[2*i]`; plain head pointers with null ends do the same job.)
//!   A heap is manipulated through `&mut self` only and knows nothing of threads: the caller
//!   proves it owns it (its slot, a claim on a free slot, or the shared heap's lock).
//!
//! Blocks freed by a thread that does not own their pool go through the pool's remote list
//! (see [`crate::pool`]); the owner collects them when the pool runs dry, and frees the blocks
//! of its *delayed* list (first remote frees into full pools) on its slow path.
//!
//! # Pool states
//! ```text
//!            alloc fills it                      free empties it
//!   used  ---------------->  full        used  ----------------->  empty (on arena.freepools)
//!   used  <----------------  full        used  <-----------------  empty  (new pool for class)
//!         free of one block
//!         (or a remote free, through the delayed list)
//! ```
//!
//! # Keeping one empty pool per class
//! CPython moves a pool back to its arena the moment it empties, so a program that allocates
//! and frees one block of a class at a time pays for that move, and for taking a pool again, on
//! every pair. Here a pool that empties while it is its class's only pool stays in the class
//! list, provided its arena has another pool holding live blocks or is the only arena (which
//! would stay mapped anyway, as the one spare arena of the next section). The decision needs
//! the arena lock once; the heap then remembers the pool in use it found (the *witness*) until
//! its next pool goes back to an arena, and keeps the pool without a lock each time it empties
//! while the witness is still in use, so the pair itself stays lock-free (see `may_keep` for
//! why checking the witness every time keeps two kept pools from vouching for each other).
//! The pool goes back to its arena as soon as another pool of the class re-enters the list,
//! when the last pool in use of its heap in its arena empties (then every kept pool of that
//! heap in that arena goes back with it), before the heap maps a second arena if its arena
//! holds nothing else, or when the heap is collected without keeping (`trim()`, the exit of its
//! thread under `collect_at_thread_exit`, the collection of an exited thread's heap). At most
//! one pool per class per heap is held this way, and a kept pool never keeps an arena mapped
//! that holds no pool of its heap in use, with one exception: a pool kept because its arena was
//! the only one stays when another heap maps a second arena, until its class next empties or
//! its heap is collected. With one heap, after a free-all at most one arena stays mapped.
//!
//! # Releasing arenas
//! When the last pool of an arena becomes empty the arena goes back to the OS, except when it
//! is the last arena of `usable_arenas` (CPython bpo-37257): keeping one wholly free arena stops
//! a program that repeatedly allocates and frees a few blocks from mapping and unmapping an
//! arena each time. [`Arenas::trim`] releases such a kept arena on request.
//!
//! # Giving pages back inside live arenas
//! An arena goes back to the OS only when all its pools are free; a program that frees most of
//! what it built but keeps a few blocks in each arena would otherwise keep every page resident.
//! So each arena counts its *dirty* free pools (on its free list, pages still committed). When
//! a quarter of the arena's pools (16 pools, 256 KiB, at `Py310`) are dirty, all of them are
//! decommitted at once, whole, with `madvise(MADV_DONTNEED)` through layer −1, and recorded in
//! the arena's bitmap of decommitted pools (see `arena`). Taking one again re-initialises it;
//! its pages fault in as zero-filled pages, like a virgin pool's. `trim()` decommits every dirty
//! free pool.
//!
//! Why a batch and not every pool as it empties: a program that frees and refills a few pools
//! of an arena over and over would otherwise pay a system call and page faults per pool each
//! time. With the batch, a pool is decommitted at most once per quarter of an arena's worth of
//! pools freed into that arena, and the pools most recently freed are reused first (the free
//! list is LIFO), so a short free/refill cycle reuses dirty pools without touching the kernel.
//! The cost when it does happen is one `madvise` per pool and, on reuse, the zero-fill faults
//! of its pages: the same as a virgin pool's. On a kernel whose pages are larger than a pool
//! (64 KiB pages under 16 KiB pools, say) nothing is decommitted: `madvise` works in whole
//! pages and would take live neighbouring pools with it.
//!
//! # Retention: when giving back thrashes
//! Both rules above give memory back as soon as it is free. A program that builds a large
//! structure, frees it and builds it again (a request loop, the trees of the binary-trees
//! benchmark) then pays, at every round, the `munmap`/`madvise` and the zero-fill faults of
//! every page it wants back. So the arenas carry a small policy, counted in pools taken from
//! the arenas (no clock is read):
//! - *Thrash*: memory is wanted back (an arena mapped, or a decommitted pool taken) within
//!   `2^(level+1)` arenas' worth of pool takes after pages were given back. The level (0 to 3)
//!   steps up by one, once per giving back.
//! - At level `l`, `2^l - 1` wholly free arenas stay mapped besides CPython's last one (at
//!   most 7, 7 MiB at `Py310`), and the arenas together may hold as many dirty free pools
//!   (`(2^l - 1)` arenas' worth) before an arena's batch is decommitted again. Past that
//!   budget, batches are decommitted as at level 0. So a raised level keeps at most 14 arenas'
//!   worth of free memory committed (14 MiB at `Py310`), whatever the size of the heap.
//! - *Calm*: when nothing was wanted back for 32 arenas' worth of pool takes, the level steps
//!   down by one (checked when a pool is given back), and the wholly free arenas it no longer
//!   allows are released; the next step down needs another calm.
//! - [`Arenas::trim`] releases every wholly free arena and sets the level back to 0.
//!
//! At level 0 the two rules above hold exactly; a program that frees everything once keeps
//! one arena. What this does not do: calm down while the program takes no pools (an idle
//! program keeps what its level allows until it allocates again or calls `trim()`), or help a
//! loop that builds more than about 8 arenas' worth (at 40 arenas the calm is reached within
//! each round, and the level falls back). The retained memory shows in `Stats`
//! (`arenas_wholly_free`, `retention_level`; dirty free pools in `unused_pools`).
//!
//! # Invariants (checked by `PyMalloc::check_invariants`)
//! - Every pool in a heap's `usedpools[i]` has `szidx == i`, `owner ==` the heap and
//!   `count < capacity`; `count == 0` only for the list's sole pool (the kept empty pool).
//! - Every pool obeys `count + |free list| + |remote list| + virgin == capacity`, counting the
//!   blocks on its owner's delayed list in `count` (see [`crate::pool`]).
//! - A carved pool with no live block is on its arena's free list (`owner == NO_OWNER`),
//!   decommitted, or its class's kept pool in its owner heap.
//! - An arena holding a kept empty pool of a heap also holds a pool of that heap with live
//!   blocks, or a pool of that heap kept because its arena was the only one, or is the only
//!   arena.
//! - `usable_arenas` holds exactly the live arenas with `0 < nfreepools`, sorted ascending,
//!   and `nfp2lasta[n]` is the last of them with `n` free pools (or `NONE`).
//! - At most `2^level` arenas are wholly free (unless the kernel refused an unmap), and
//!   `ndirty_total` is the sum of the live arenas' `ndirty`.
//! - Every live arena is registered in the arena map under its index.
//! - An arena's `nfreepools` counts its dirty free pools (`ndirty`, on `freepools`), its
//!   decommitted ones and its virgin ones.

use core::ptr::{self, NonNull};

use crate::arena::{ArenaObject, ArenaTable, NONE};
use crate::fallback::FallbackSet;
use crate::geometry::{Geometry, GeometryExt, MAX_CLASSES, MAX_POOLS_PER_ARENA};
use crate::map::ArenaMap;
use crate::pool::{self, NO_OWNER, PoolHeader};
use crate::stats::{ClassStats, Corruption, Stats};
use crate::sync::Lock;
use crate::sync::atomic::{AtomicPtr, Ordering::*};
use crate::util::{likely, unlikely};

/// What all the heaps of one allocator share: the arenas behind their lock, and the arena map
/// (read without it; written with it held).
pub(crate) struct Shared<G: Geometry> {
    pub(crate) arenas: Lock<Arenas<G>>,
    pub(crate) map: ArenaMap<G>,
}

impl<G: Geometry> Shared<G> {
    pub(crate) const fn new() -> Self {
        Self {
            arenas: Lock::new(Arenas::new()),
            map: ArenaMap::new(),
        }
    }
}

pub(crate) struct Arenas<G: Geometry> {
    arenas: ArenaTable,                        // every arena slot, live or not
    usable_arenas: u32,                        // head of the sorted list; index or NONE
    unused_arena_objects: u32,                 // empty slots, linked through nextarena
    nfp2lasta: [u32; MAX_POOLS_PER_ARENA + 1], // last usable arena with n free pools
    narenas_currently_allocated: usize,        // arenas mapped now
    ntimes_arena_allocated: usize,             // arenas ever mapped
    narenas_highwater: usize,                  // most arenas mapped at once
    arena_unmap_failures: usize,               // unmaps the kernel refused (arena kept)
    pools_decommitted: usize,                  // free pools whose pages were given back
    retention: Retention,                      // how much free memory stays committed
    ndirty_total: usize,                       // sum of the live arenas' `ndirty`
    pub(crate) remote_walk_visits: usize,      // pools visited collecting before a new arena
    pub(crate) fallbacks: FallbackSet,         // debug builds: live fallback blocks
    _geometry: core::marker::PhantomData<G>,
}

// The arenas are only ever reached through a lock that gives one thread at a time `&mut`;
// their raw pointers point into arenas and tables that they own.
// SAFETY: nothing in them is tied to the thread that created them.
unsafe impl<G: Geometry> Send for Arenas<G> {}

pub(crate) struct Heap<G: Geometry> {
    usedpools: [*mut PoolHeader; MAX_CLASSES], // head of each class's list of used pools
    // For class c whose sole pool may stay when empty (see "Keeping one empty pool per
    // class"): a pool of this heap in use in the same arena (its witness), or ONLY_ARENA;
    // null when the question must be asked again.
    witness: [*mut PoolHeader; MAX_CLASSES],
    approved_alone: u64, // bit c: class c's kept pool was kept because its arena was the only one
    pub(crate) holder: u64, // the taking of the slot (`tls::holding`) that last looked after it
    // Pool visits the heap may still spend collecting remote frees before mapping an arena:
    // each time it gets to mapping one adds WALK_CREDIT (up to that much), each walk spends
    // the pools it visited. So these walks cost at most WALK_CREDIT pool visits per arena
    // mapped, plus one walk.
    pub(crate) walk_budget: isize,
    id: u32, // the `owner` of this heap's pools
    _geometry: core::marker::PhantomData<G>,
}

// A heap is reached only by whoever owns it (a slot, a claim, or the shared heap's lock);
// its raw pointers point into arenas.
// SAFETY: nothing in a heap is tied to the thread that created it.
unsafe impl<G: Geometry> Send for Heap<G> {}

impl<G: Geometry> Heap<G> {
    /// Pool visits a heap may spend, per arena it maps, collecting remote frees before mapping
    /// the next one: sixteen arenas' worth of pools. A walk of F listed pools then comes at
    /// most every F / 1024 arenas (Py310), and costs at most about as many pool visits as an
    /// arena has pages to fault in, four times over.
    pub(crate) const WALK_CREDIT: isize = 16 * G::MAX_POOLS_IN_ARENA as isize;

    pub(crate) const fn new(id: u32) -> Self {
        Self {
            usedpools: [ptr::null_mut(); MAX_CLASSES],
            witness: [ptr::null_mut(); MAX_CLASSES],
            approved_alone: 0,
            holder: 0,
            walk_budget: Self::WALK_CREDIT,
            id,
            _geometry: core::marker::PhantomData,
        }
    }

    /// The fast path: a block of class `class` from the class's first pool, or null if the
    /// heap has no pool of that class. One load of the class's first pool, a pop from its free
    /// list and a test; `class` is not checked (the caller derived it from a `Layout`).
    ///
    /// # Safety
    /// `this` is a heap the caller owns, or a heap whose lists are all empty and that nobody
    /// writes (the sentinel): then it is only read.
    #[inline(always)]
    pub(crate) unsafe fn try_alloc(this: *mut Self, class: usize) -> *mut u8 {
        debug_assert!(class < G::NB_SMALL_SIZE_CLASSES);
        // SAFETY: a read of the heap, which the caller may read.
        let pool = unsafe { (*this).usedpools[class] };
        if unlikely(pool.is_null()) {
            return ptr::null_mut();
        }
        // SAFETY: a heap with a pool is one the caller owns; pools in usedpools are
        // initialised, of this class, and not full, so `freeblock` is a free block.
        unsafe {
            let bp = (*pool).freeblock;
            let next = pool::next_free(bp);
            if likely(!next.is_null()) {
                (*pool).set_count((*pool).count() + 1);
                (*pool).freeblock = next;
                return bp;
            }
            Self::pop_last_free(this, pool, class).as_ptr()
        }
    }

    /// The pool's free list holds one block: take it, carve the next virgin block, and if
    /// there is none, the pool is full. Out of line, so that the fast path above makes no call
    /// (and needs no saved registers).
    ///
    /// # Safety
    /// As for `try_alloc`, with `pool` the class's first pool.
    #[cold]
    #[inline(never)]
    unsafe fn pop_last_free(this: *mut Self, pool: *mut PoolHeader, class: usize) -> NonNull<u8> {
        // SAFETY: forwarded from the caller.
        unsafe {
            let (bp, full) = pool::pop::<G>(pool, class);
            if unlikely(full) {
                (*this).pool_filled(pool, class);
            }
            // Non-null (the caller saw the block), which lets callers drop their null test
            // after this call and jump to it as a tail call.
            NonNull::new_unchecked(bp)
        }
    }

    /// Allocates one block of class `class`, or returns null if a new arena was needed and
    /// could not be mapped. (The shared heap's path; thread heaps go through `try_alloc` and
    /// the allocator's slow path.)
    #[inline]
    pub(crate) fn alloc(&mut self, class: usize, sh: &Shared<G>) -> *mut u8 {
        // SAFETY: `&mut self`.
        let p = unsafe { Self::try_alloc(self, class) };
        if likely(!p.is_null()) {
            return p;
        }
        self.alloc_from_new_pool(class, sh, true)
            .unwrap_or(ptr::null_mut())
    }

    /// A pool of the class list just gave its last free block. Unless other threads have freed
    /// blocks into it (which are collected instead), it is marked full and leaves the list.
    ///
    /// # Safety
    /// `pool` is in `usedpools[class]`, with no free and no virgin block.
    #[cold]
    #[inline(never)]
    unsafe fn pool_filled(&mut self, pool: *mut PoolHeader, class: usize) {
        // SAFETY: we own the listed pool.
        if unsafe { pool::mark_full(pool) } {
            // SAFETY: as above.
            unsafe { self.unlink_used(pool, class) };
        }
    }

    /// Returns block `p` to its pool. With `keep` false, a pool that empties always goes back
    /// to its arena (used for heaps with no thread, whose kept pools would help nobody).
    ///
    /// # Safety
    /// `p` is a live block of a pool this heap owns, and dead from now on.
    #[inline(always)]
    pub(crate) unsafe fn free(&mut self, p: *mut u8, sh: &Shared<G>, keep: bool) {
        // SAFETY: `p` is a live block of one of our pools.
        let (pool, was_full, empty) = unsafe { pool::push::<G>(p) };
        if unlikely(was_full) {
            // A full pool is in no list; it has free space again, so it goes to the front of
            // its class list (CPython: insert_to_usedpool). Pools hold >= 2 blocks, so it
            // cannot have become empty.
            // SAFETY: the pool is initialised and in no list.
            unsafe { self.reenter_used(pool, sh) };
            return;
        }
        if unlikely(empty) {
            // The kept pool of a one-block-at-a-time loop: settled without a call, while the
            // pool that made it keepable (its witness) is still in use.
            // SAFETY: the pool is initialised, and in use until this free: its class is below
            // NB_SMALL_SIZE_CLASSES <= MAX_CLASSES, so both lookups are in bounds.
            let (next, w, head) = unsafe {
                let class = (*pool).szidx as usize;
                (
                    (*pool).nextpool,
                    *self.witness.get_unchecked(class),
                    *self.usedpools.get_unchecked(class),
                )
            };
            if keep && !w.is_null() && head == pool && next.is_null() {
                let still = if w == Self::ONLY_ARENA {
                    sh.map.registered() == 1
                } else {
                    // SAFETY: a witness is a pool of this heap (see `may_keep`).
                    (unsafe { pool::count_of(w) }) != 0
                };
                if still {
                    return;
                }
            }
            // SAFETY: an empty pool that was not full is in its class's used list.
            unsafe { self.pool_emptied(pool, sh, keep) };
        }
    }

    /// A full pool got a block back: link it at the front of its class list (CPython:
    /// `insert_to_usedpool`) and tell remote freers it is listed again. If the list's head is
    /// the class's kept empty pool, that one goes back to its arena first: an empty pool is
    /// kept only while it is its class's sole pool.
    ///
    /// # Safety
    /// `pool` is an initialised, non-empty pool of this heap in no list.
    #[cold]
    #[inline(never)]
    unsafe fn reenter_used(&mut self, pool: *mut PoolHeader, sh: &Shared<G>) {
        // SAFETY: we own the pool.
        unsafe { pool::mark_listed(pool) };
        // SAFETY: the pool header is initialised.
        let class = unsafe { (*pool).szidx as usize };
        let head = self.usedpools[class];
        // SAFETY: `head`, if any, is an initialised pool in the list.
        if !head.is_null() && unsafe { (*head).count() } == 0 {
            let mut ar = sh.arenas.lock();
            // SAFETY: an empty pool in its class list.
            unsafe { self.insert_to_freepool(head, &mut ar, &sh.map) };
        }
        // SAFETY: `pool` is in no list.
        unsafe { self.push_used(pool, class) };
    }

    /// A pool in its class list has just become empty. If it is the class's only pool, and its
    /// arena has another pool of this heap in use or is the only arena, it stays in the class
    /// list, empty (see "Keeping one empty pool per class"). Otherwise it goes back to its
    /// arena.
    ///
    /// # Safety
    /// `pool` is an empty pool in its class's used list.
    #[cold]
    #[inline(never)]
    unsafe fn pool_emptied(&mut self, pool: *mut PoolHeader, sh: &Shared<G>, keep: bool) {
        // SAFETY: the pool header is initialised.
        let (class, next, ai) =
            unsafe { ((*pool).szidx as usize, (*pool).nextpool, (*pool).arenaindex) };
        let alone = self.usedpools[class] == pool && next.is_null();
        let mut ar = sh.arenas.lock();
        if keep && alone && self.may_keep(&ar, pool, class, ai) {
            return;
        }
        // SAFETY: guaranteed by the caller.
        unsafe { self.insert_to_freepool(pool, &mut ar, &sh.map) };
    }

    /// The witness of a pool kept because its arena is the only one: no pool, and never
    /// dereferenced.
    const ONLY_ARENA: *mut PoolHeader = ptr::dangling_mut();

    /// Whether `pool`, empty and alone in its class list, may stay there: its arena (`ai`) has
    /// another pool of this heap in use, or is the only arena. Records the pool in use found
    /// (the *witness*, or `ONLY_ARENA`), so that the next time the pool empties no lock is
    /// needed as long as the witness is still in use (or the arena the only one).
    ///
    /// Why the witness is checked every time: two pools of one arena could otherwise approve
    /// each other while each was in use, and both stay kept once both are empty, keeping an
    /// arena mapped that holds nothing. A busy pool stops being busy only by emptying: then it
    /// goes back to its arena (which clears every approval) or is kept, which needs its own
    /// witness busy at that moment; so whenever a kept pool exists, some pool of its heap in
    /// its arena is in use. A witness cannot change hands unnoticed: it would have to go back
    /// to its arena first, clearing the approvals.
    fn may_keep(&mut self, ar: &Arenas<G>, pool: *mut PoolHeader, class: usize, ai: u32) -> bool {
        if let Some(w) = ar.busy_pool_of(ai, self.id, pool) {
            self.witness[class] = w;
            self.approved_alone &= !(1 << class);
            return true;
        }
        if ar.narenas_currently_allocated == 1 {
            self.witness[class] = Self::ONLY_ARENA;
            self.approved_alone |= 1 << class;
            return true;
        }
        false
    }

    /// Gives back every kept empty pool whose arena holds no pool of this heap with live
    /// blocks.
    #[cold]
    fn give_back_idle_kept_pools(&mut self, ar: &mut Arenas<G>, map: &ArenaMap<G>) {
        for class in 0..G::NB_SMALL_SIZE_CLASSES {
            let head = self.usedpools[class];
            // SAFETY: a non-null head is an initialised pool header; one with no live block is
            // its class's kept pool.
            if head.is_null() || unsafe { (*head).count() } != 0 {
                continue;
            }
            // SAFETY: as above.
            let ai = unsafe { (*head).arenaindex };
            if !self.arena_has_busy_pool(ar, ai, head) {
                // SAFETY: a kept pool is an empty pool in its class's used list. Its arena's
                // other kept pools go back with it.
                unsafe { self.insert_to_freepool(head, ar, map) };
            }
        }
    }

    /// Whether arena `ai` has a pool of this heap holding live blocks, other than `except`.
    fn arena_has_busy_pool(&self, ar: &Arenas<G>, ai: u32, except: *mut PoolHeader) -> bool {
        ar.busy_pool_of(ai, self.id, except).is_some()
    }

    /// If this heap has kept empty pools in arena `ai` (other than `except`) and no pool there
    /// holding live blocks (other than `except`), collects the kept pools into `out` and returns
    /// how many; otherwise `None`.
    ///
    /// The class heads are looked at first (at most one kept pool per class, in this heap's
    /// own lists); only if one of them is in the arena are the arena's pools walked.
    fn idle_kept_pools(
        &self,
        ar: &Arenas<G>,
        ai: u32,
        except: *mut PoolHeader,
        out: &mut [*mut PoolHeader; MAX_CLASSES],
    ) -> Option<usize> {
        let n = self.kept_pools_in(ai, except, out);
        if n == 0 || self.arena_has_busy_pool(ar, ai, except) {
            return None;
        }
        Some(n)
    }

    /// Collects into `out` this heap's kept empty pools in arena `ai`, other than `except`, and
    /// returns how many there are.
    fn kept_pools_in(
        &self,
        ai: u32,
        except: *mut PoolHeader,
        out: &mut [*mut PoolHeader; MAX_CLASSES],
    ) -> usize {
        let mut n = 0;
        for &head in &self.usedpools[..G::NB_SMALL_SIZE_CLASSES] {
            if head.is_null() || head == except {
                continue;
            }
            // SAFETY: a non-null head is an initialised pool header; one with no live block
            // is its class's kept pool.
            if unsafe { (*head).count() == 0 && (*head).arenaindex == ai } {
                out[n] = head;
                n += 1;
            }
        }
        n
    }

    /// Links `pool` at the front of `usedpools[class]`.
    ///
    /// # Safety
    /// `pool` is an initialised pool of class `class` in no list.
    #[inline]
    unsafe fn push_used(&mut self, pool: *mut PoolHeader, class: usize) {
        let head = self.usedpools[class];
        // SAFETY: `pool` and `head` (if any) are initialised pool headers we own.
        unsafe {
            (*pool).nextpool = head;
            (*pool).prevpool = ptr::null_mut();
            if !head.is_null() {
                (*head).prevpool = pool;
            }
        }
        self.usedpools[class] = pool;
        self.witness[class] = ptr::null_mut();
        self.approved_alone &= !(1 << class);
    }

    /// Unlinks `pool` from `usedpools[class]`.
    ///
    /// # Safety
    /// `pool` is in `usedpools[class]`.
    #[inline]
    unsafe fn unlink_used(&mut self, pool: *mut PoolHeader, class: usize) {
        // SAFETY: `pool` and its neighbours are initialised pool headers in the list.
        unsafe {
            let next = (*pool).nextpool;
            let prev = (*pool).prevpool;
            if prev.is_null() {
                self.usedpools[class] = next;
                self.witness[class] = ptr::null_mut();
                self.approved_alone &= !(1 << class);
            } else {
                (*prev).nextpool = next;
            }
            if !next.is_null() {
                (*next).prevpool = prev;
            }
        }
    }

    /// The heap's slow path: no used pool of this class exists, so take a pool from the first
    /// usable arena (CPython: `allocate_from_new_pool`). If no arena has a free pool, maps a new
    /// one when `may_map`, and otherwise returns `None` without mapping (the caller may first
    /// look for free pools elsewhere); `None` too if the arena could not be mapped.
    #[cold]
    #[inline(never)]
    pub(crate) fn alloc_from_new_pool(
        &mut self,
        class: usize,
        sh: &Shared<G>,
        may_map: bool,
    ) -> Option<*mut u8> {
        let mut ar = sh.arenas.lock();
        if ar.usable_arenas == NONE && ar.narenas_currently_allocated == 1 {
            // About to map a second arena: kept pools of the only one, if it holds nothing
            // else, must not outlive its being the only one. Giving them back may also leave
            // it with free pools, and no new arena is needed.
            self.give_back_idle_kept_pools(&mut ar, &sh.map);
        }
        if ar.usable_arenas == NONE && !may_map {
            return None;
        }
        let (pool, bp) = ar.take_pool(class, self.id, &sh.map)?;
        drop(ar);
        // SAFETY: `pool` is now ours and in no list.
        unsafe { self.push_used(pool, class) };
        Some(bp)
    }

    /// Frees the blocks of `delayed` (first remote frees into this heap's full pools), which
    /// re-lists their pools. Returns whether there were any.
    ///
    /// # Safety
    /// `delayed` is this heap's delayed list.
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn drain_delayed(&mut self, delayed: &AtomicPtr<u8>, sh: &Shared<G>) -> bool {
        if delayed.load(Relaxed).is_null() {
            return false;
        }
        // Acquire: pairs with the Release push of each block.
        let mut b = delayed.swap(ptr::null_mut(), Acquire);
        while !b.is_null() {
            // SAFETY: a delayed block is a dead block of one of our pools, holding its link;
            // its pool's owner cannot have changed (it still counts the block as live).
            unsafe {
                let next = b.cast::<*mut u8>().read();
                self.free(b, sh, true);
                b = next;
            }
        }
        true
    }

    /// Collects every remote free of every listed pool and gives back the pools that are then
    /// empty; with `keep` false, the kept empty pools go back too. Drain the delayed list first,
    /// so that full pools with remote frees are listed. Returns how many pools it visited.
    pub(crate) fn collect_all(&mut self, sh: &Shared<G>, keep: bool) -> usize {
        if self.is_empty() {
            return 0;
        }
        let mut visited = 0;
        let mut ar = sh.arenas.lock();
        for class in 0..G::NB_SMALL_SIZE_CLASSES {
            let mut pool = self.usedpools[class];
            while !pool.is_null() {
                visited += 1;
                // SAFETY: a listed pool of ours.
                let next = unsafe {
                    pool::collect(pool);
                    (*pool).nextpool
                };
                // SAFETY: as above.
                let (empty, ai) = unsafe { ((*pool).count() == 0, (*pool).arenaindex) };
                let alone = self.usedpools[class] == pool && next.is_null();
                if empty && !(keep && alone && self.may_keep(&ar, pool, class, ai)) {
                    // SAFETY: an empty pool in its class list; any kept pools this returns
                    // with it are heads of other classes' lists, or of this one (then it is
                    // `pool` itself, or an empty head, which the invariant rules out with
                    // `pool` in the list behind it).
                    unsafe { self.insert_to_freepool(pool, &mut ar, &sh.map) };
                }
                pool = next;
            }
        }
        visited
    }

    /// Whether the heap has no pool in any class list.
    pub(crate) fn is_empty(&self) -> bool {
        self.usedpools.iter().all(|p| p.is_null())
    }

    /// Whether `pool` is this heap's kept empty pool of its class.
    pub(crate) fn is_kept(&self, pool: *mut PoolHeader, szidx: usize) -> bool {
        szidx < G::NB_SMALL_SIZE_CLASSES && self.usedpools[szidx] == pool
    }

    /// Whether this heap's kept pool of class `szidx` was kept because its arena was the only
    /// one (and may have stayed while another heap mapped a second).
    pub(crate) fn kept_as_only_arena(&self, szidx: usize) -> bool {
        szidx < G::NB_SMALL_SIZE_CLASSES && self.approved_alone & (1 << szidx) != 0
    }

    /// A pool has just become empty, or is a kept pool being given up: give it back to its
    /// arena. If that leaves the arena with no pool of this heap in use and no pool of another
    /// heap, but some kept empty pools of other classes, those go back too, so that the arena
    /// can become wholly free (and go back to the OS) at once. CPython: `insert_to_freepool`.
    ///
    /// # Safety
    /// `pool` is an empty pool currently in its class's used list.
    #[cold]
    #[inline(never)]
    unsafe fn insert_to_freepool(
        &mut self,
        pool: *mut PoolHeader,
        ar: &mut Arenas<G>,
        map: &ArenaMap<G>,
    ) {
        // SAFETY: `pool` is an initialised header.
        let ai = unsafe { (*pool).arenaindex };
        let mut kept = [ptr::null_mut(); MAX_CLASSES];
        if let Some(n) = self.idle_kept_pools(ar, ai, pool, &mut kept) {
            for &k in &kept[..n] {
                // SAFETY: a kept pool is an empty pool in its class's used list. `pool` is not
                // yet back, so none of these calls finds the arena wholly free.
                unsafe { self.return_pool(k, ar, map) };
            }
        }
        // SAFETY: guaranteed by the caller.
        unsafe { self.return_pool(pool, ar, map) };
        ar.maybe_decommit(ai, map);
        // An arena's pools just went back: every kept pool is asked about again when it next
        // empties.
        self.witness = [ptr::null_mut(); MAX_CLASSES];
    }

    /// Unlinks `pool` and gives it back to its arena.
    ///
    /// # Safety
    /// `pool` is an empty pool currently in its class's used list.
    unsafe fn return_pool(&mut self, pool: *mut PoolHeader, ar: &mut Arenas<G>, map: &ArenaMap<G>) {
        // SAFETY: `pool` is an initialised header in usedpools[szidx].
        let class = unsafe { (*pool).szidx as usize };
        // SAFETY: as above.
        unsafe { self.unlink_used(pool, class) };
        // SAFETY: the pool is empty and now in no list.
        unsafe { ar.give_back(pool, map) };
    }

    /// Checks this heap's lists: links, classes, owners, fullness.
    pub(crate) fn check_lists(&self) -> Result<(), Corruption> {
        let fail = |what, address: usize, expected, found| {
            Err(Corruption {
                what,
                address,
                expected,
                found,
            })
        };
        for class in 0..G::NB_SMALL_SIZE_CLASSES {
            let mut prev: *mut PoolHeader = ptr::null_mut();
            let mut pool = self.usedpools[class];
            let mut n = 0;
            while !pool.is_null() {
                // SAFETY: pools in the lists are initialised headers (that is what we check).
                let h = unsafe { &*pool };
                let at = pool as usize;
                if h.prevpool != prev {
                    return fail(
                        "usedpools back link",
                        at,
                        prev as usize,
                        h.prevpool as usize,
                    );
                }
                if h.szidx as usize != class {
                    return fail("pool in the wrong class list", at, class, h.szidx as usize);
                }
                if h.owner != self.id {
                    return fail(
                        "pool in another heap's list",
                        at,
                        self.id as usize,
                        h.owner as usize,
                    );
                }
                let cap = G::blocks_per_pool(class);
                if h.count() >= cap {
                    return fail("full pool in a class list", at, cap, h.count());
                }
                if h.count() == 0 && !(prev.is_null() && h.nextpool.is_null()) {
                    return fail("empty pool in a class list with other pools", at, 1, 0);
                }
                n += 1;
                if n > 1 << 24 {
                    return fail("class list has a cycle", at, 0, n);
                }
                prev = pool;
                pool = h.nextpool;
            }
        }
        Ok(())
    }
}

/// How much free memory stays committed: the retention policy (see "Retention" above). All
/// times are counted in pools taken from the arenas, not in seconds: no clock is read.
#[derive(Clone, Copy, Debug)]
struct Retention {
    level: u32,       // 0 ..= MAX_LEVEL
    pools_taken: u64, // pools ever taken from the arenas (never reset)
    last_purge: u64,  // `pools_taken` when pages were last given back; 0: not since a step up
    last_change: u64, // `pools_taken` at the last thrash or step down
    window: u64,      // pools per arena, the unit of "soon", "calm" and of the dirty budget
}

impl Retention {
    /// The highest level: 2^3 - 1 = 7 extra wholly free arenas, 7 arenas' worth of dirty pools.
    const MAX_LEVEL: u32 = 3;
    /// A long calm, in arenas' worth of pool takes: twice the longest "soon".
    const CALM: u64 = 2 << (Self::MAX_LEVEL + 1);

    const fn new(pools_per_arena: usize) -> Self {
        Self {
            level: 0,
            pools_taken: 0,
            last_purge: 0, // a purge follows at least one take, so 0 is never a real time
            last_change: 0,
            window: pools_per_arena as u64,
        }
    }

    /// Back to level 0, keeping the count of pools taken (so that 0 stays "never").
    fn reset(&mut self) {
        self.level = 0;
        self.last_purge = 0;
        self.last_change = self.pools_taken;
    }

    /// Wholly free arenas kept besides CPython's last one.
    fn extra_free_arenas(&self) -> usize {
        (1 << self.level) - 1
    }

    /// Dirty free pools the arenas may hold, all together, before full batches are
    /// decommitted: as many as the extra arenas hold pools.
    fn dirty_budget(&self) -> usize {
        self.extra_free_arenas() * self.window as usize
    }

    /// Pages were given back: a decommit batch, or an arena unmapped.
    fn purged(&mut self) {
        self.last_purge = self.pools_taken;
    }

    /// Memory was wanted again: a decommitted pool taken, or an arena mapped. If pages were
    /// given back soon before (within `2^(level+1)` arenas' worth of pool takes, the kept
    /// arenas being used up first), that was thrash: the level steps up, once per giving back.
    fn wanted_back(&mut self) {
        let soon = self.window << (self.level + 1);
        if self.last_purge != 0 && self.pools_taken - self.last_purge <= soon {
            self.level = (self.level + 1).min(Self::MAX_LEVEL);
            self.last_change = self.pools_taken;
            self.last_purge = 0;
        }
    }

    /// After a long calm (no thrash for `CALM` arenas' worth of pool takes) the level steps
    /// down by one; the next step down needs another calm. Returns whether it stepped.
    fn settle(&mut self) -> bool {
        if self.level > 0 && self.pools_taken - self.last_change > Self::CALM * self.window {
            self.level -= 1;
            self.last_change = self.pools_taken;
            return true;
        }
        false
    }
}

impl<G: Geometry> Arenas<G> {
    pub(crate) const fn new() -> Self {
        Self {
            arenas: ArenaTable::new(),
            usable_arenas: NONE,
            unused_arena_objects: NONE,
            nfp2lasta: [NONE; MAX_POOLS_PER_ARENA + 1],
            narenas_currently_allocated: 0,
            ntimes_arena_allocated: 0,
            narenas_highwater: 0,
            arena_unmap_failures: 0,
            pools_decommitted: 0,
            retention: Retention::new(G::MAX_POOLS_IN_ARENA),
            ndirty_total: 0,
            remote_walk_visits: 0,
            fallbacks: FallbackSet::new(),
            _geometry: core::marker::PhantomData,
        }
    }

    /// Takes a pool for class `class` and heap `owner` from the first usable arena (mapping a
    /// new arena if there is none) and hands out its first block. Returns `None` if an arena
    /// was needed and could not be mapped. The header is written here, under the lock, so that
    /// statistics walking the arenas see either a free pool or a complete header.
    pub(crate) fn take_pool(
        &mut self,
        class: usize,
        owner: u32,
        map: &ArenaMap<G>,
    ) -> Option<(*mut PoolHeader, *mut u8)> {
        if self.usable_arenas == NONE {
            let ai = self.new_arena(map)?;
            let a = self.arenas.get_mut(ai);
            a.nextarena = NONE;
            a.prevarena = NONE;
            let nf = a.nfreepools as usize;
            self.usable_arenas = ai;
            debug_assert_eq!(self.nfp2lasta[nf], NONE);
            self.nfp2lasta[nf] = ai;
        }
        let ai = self.usable_arenas;
        self.retention.pools_taken += 1;
        let nf = {
            let a = self.arenas.get(ai);
            if a.freepools.is_null() {
                if a.decommitted_pools() != 0 {
                    // The pool comes from the decommitted ones: its pages fault in again.
                    self.retention.wanted_back();
                }
            } else {
                self.ndirty_total -= 1; // a dirty pool is taken
            }
            a.nfreepools as usize
        };
        // The head arena has the fewest free pools; taking one keeps it at the head, so only
        // nfp2lasta needs fixing.
        if self.nfp2lasta[nf] == ai {
            self.nfp2lasta[nf] = NONE;
        }
        if nf > 1 {
            debug_assert_eq!(self.nfp2lasta[nf - 1], NONE);
            self.nfp2lasta[nf - 1] = ai;
        }
        let arena = self.arenas.get_mut(ai);
        // SAFETY: the arena is live and usable, so it has a free pool.
        let pool = unsafe { arena.take_pool::<G>(ai) };
        if arena.nfreepools == 0 {
            // Wholly allocated: it leaves the list of usable arenas.
            let next = arena.nextarena;
            self.usable_arenas = next;
            if next != NONE {
                self.arenas.get_mut(next).prevarena = NONE;
            }
        }
        // SAFETY: `pool` is now ours, in no list, and holds no live block.
        unsafe {
            (*pool).owner = owner;
            let bp = if (*pool).szidx as usize == class {
                // It last held this class: header and free list are ready (it holds >= 2
                // carved blocks, all free).
                (*pool).set_count(0);
                pool::pop::<G>(pool, class).0
            } else {
                pool::init::<G>(pool, class)
            };
            Some((pool, bp))
        }
    }

    /// A pool of arena `ai` owned by `owner` holding live blocks, other than `except`, if any.
    /// Walks the arena's carved pools: `owner` is written under this lock, `count` is atomic.
    fn busy_pool_of(
        &self,
        ai: u32,
        owner: u32,
        except: *mut PoolHeader,
    ) -> Option<*mut PoolHeader> {
        Self::carved_pools(self.arenas.get(ai)).find(|&p| {
            // SAFETY: carved pools have initialised headers.
            p != except && unsafe { (*p).owner == owner && pool::count_of(p) != 0 }
        })
    }

    /// Maps a new arena and registers it; returns its index. CPython: `new_arena`.
    #[cold]
    fn new_arena(&mut self, map: &ArenaMap<G>) -> Option<u32> {
        self.retention.wanted_back();
        if self.unused_arena_objects == NONE {
            let fresh = self.arenas.grow()?;
            // Chain the new slots, lowest index first.
            for i in fresh.clone() {
                let next = if i + 1 < fresh.end { i + 1 } else { NONE };
                self.arenas.get_mut(i).nextarena = next;
            }
            self.unused_arena_objects = fresh.start;
        }
        let ai = self.unused_arena_objects;
        let base = pymalloc_vmm::map_aligned(G::ARENA_SIZE, G::ARENA_SIZE)?;
        // Exposed, so that a block handed back with narrower provenance than the arena's can
        // reach its pool header again (see `pool::pool_of`).
        let addr = base.as_ptr().expose_provenance();
        // SAFETY: we hold the arenas lock (the map's writers' lock) and own the new arena.
        if !unsafe { map.insert(addr, ai) } {
            // SAFETY: mapped just above and never handed out.
            unsafe { pymalloc_vmm::unmap(base, G::ARENA_SIZE) };
            return None;
        }
        let a = self.arenas.get_mut(ai);
        self.unused_arena_objects = a.nextarena;
        a.address = base.as_ptr();
        a.pool_address = base.as_ptr();
        a.freepools = ptr::null_mut();
        a.nfreepools = G::MAX_POOLS_IN_ARENA as u32;
        a.ntotalpools = G::MAX_POOLS_IN_ARENA as u32;
        a.ndirty = 0;
        a.decommitted = [0; MAX_POOLS_PER_ARENA / 64];
        a.nextarena = NONE;
        a.prevarena = NONE;
        self.narenas_currently_allocated += 1;
        self.ntimes_arena_allocated += 1;
        self.narenas_highwater = self.narenas_highwater.max(self.narenas_currently_allocated);
        Some(ai)
    }

    /// Unmaps arena `ai`, which is wholly free and in no list, and recycles its slot. Returns
    /// `false` if the kernel refused the unmap (possible at `vm.max_map_count`: unmapping an
    /// arena whose mapping merged with a neighbour splits it, which needs one more map entry).
    /// The arena is then kept, relinked as a wholly free usable arena, and the refusal counted
    /// (`Stats::arena_unmap_failures`, and vmm's `failed_unmap_calls`): it is neither lost nor
    /// left mapped out of our sight.
    fn release_arena(&mut self, ai: u32, map: &ArenaMap<G>) -> bool {
        if !self.unmap_arena(ai, map) {
            self.arena_unmap_failures += 1;
            self.link_usable_last(ai);
            return false;
        }
        let unused = self.unused_arena_objects;
        let a = self.arenas.get_mut(ai);
        self.ndirty_total -= a.ndirty as usize;
        a.address = ptr::null_mut();
        a.freepools = ptr::null_mut();
        a.nfreepools = 0;
        a.ndirty = 0;
        a.decommitted = [0; MAX_POOLS_PER_ARENA / 64];
        a.prevarena = NONE;
        a.nextarena = unused;
        self.unused_arena_objects = ai;
        self.narenas_currently_allocated -= 1;
        true
    }

    /// Removes arena `ai` from the map and unmaps it; if the kernel refuses, puts it back in
    /// the map and returns `false`. Touches no list.
    fn unmap_arena(&mut self, ai: u32, map: &ArenaMap<G>) -> bool {
        let base = self.arenas.get(ai).address;
        // The entry goes first: once the range is unmapped the kernel may hand the addresses
        // to someone else, and a lock-free `owns` must not call their blocks ours.
        // SAFETY: we hold the arenas lock and the arena was registered under this base.
        unsafe { map.remove(base as usize) };
        // SAFETY: every pool of the arena is free, so no block in it is live; the arena was
        // mapped with ARENA_SIZE bytes and nothing refers to it any more.
        if unsafe { pymalloc_vmm::unmap(ptr::NonNull::new_unchecked(base), G::ARENA_SIZE) } {
            return true;
        }
        // SAFETY: as for `remove`; the leaf covering `base` exists, so this cannot fail for
        // want of memory.
        let back = unsafe { map.insert(base as usize, ai) };
        debug_assert!(back, "re-registering arena {base:p}");
        false
    }

    /// Links arena `ai`, wholly free and in no list, at the end of `usable_arenas` (where the
    /// arenas with the most free pools are).
    #[cold]
    fn link_usable_last(&mut self, ai: u32) {
        let nf = self.arenas.get(ai).nfreepools as usize;
        debug_assert_eq!(nf, self.arenas.get(ai).ntotalpools as usize);
        let mut last = self.usable_arenas;
        while last != NONE && self.arenas.get(last).nextarena != NONE {
            last = self.arenas.get(last).nextarena;
        }
        {
            let a = self.arenas.get_mut(ai);
            a.prevarena = last;
            a.nextarena = NONE;
        }
        if last == NONE {
            self.usable_arenas = ai;
        } else {
            self.arenas.get_mut(last).nextarena = ai;
        }
        self.nfp2lasta[nf] = ai;
    }

    /// Unlinks arena `ai` from `usable_arenas`.
    fn unlink_usable(&mut self, ai: u32) {
        let (prev, next) = {
            let a = self.arenas.get(ai);
            (a.prevarena, a.nextarena)
        };
        if prev == NONE {
            self.usable_arenas = next;
        } else {
            self.arenas.get_mut(prev).nextarena = next;
        }
        if next != NONE {
            self.arenas.get_mut(next).prevarena = prev;
        }
    }

    /// Free pools an arena accumulates with their pages committed before they are decommitted
    /// together: a quarter of the arena (16 pools, 256 KiB, at `Py310`). See "Giving pages
    /// back inside live arenas".
    const DECOMMIT_BATCH: usize = if G::MAX_POOLS_IN_ARENA / 4 > 1 {
        G::MAX_POOLS_IN_ARENA / 4
    } else {
        1
    };

    /// Decommits arena `ai`'s dirty free pools if there are a batch of them (and it is live)
    /// and the arenas hold more dirty pools than the retention level allows. First, if the
    /// retention policy steps down, releases the wholly free arenas it no longer allows.
    fn maybe_decommit(&mut self, ai: u32, map: &ArenaMap<G>) {
        if self.retention.settle() {
            self.shed_free_arenas(map);
        }
        let a = self.arenas.get(ai);
        if !a.address.is_null()
            && a.ndirty as usize >= Self::DECOMMIT_BATCH
            && self.ndirty_total > self.retention.dirty_budget()
        {
            self.decommit(ai);
        }
    }

    /// Decommits every dirty free pool of live arena `ai`.
    fn decommit(&mut self, ai: u32) {
        let a = self.arenas.get_mut(ai);
        let before = a.ndirty as usize;
        // SAFETY: the arena is live (callers check).
        let n = unsafe { a.decommit_free_pools::<G>(pymalloc_vmm::page_size()) };
        self.ndirty_total -= before - a.ndirty as usize;
        self.pools_decommitted += n;
        if n != 0 {
            self.retention.purged();
        }
    }

    /// Gives `pool` back to its arena and keeps `usable_arenas` sorted, releasing the arena if
    /// it is wholly free (and not the last usable one).
    ///
    /// # Safety
    /// `pool` is an empty pool in no list.
    unsafe fn give_back(&mut self, pool: *mut PoolHeader, map: &ArenaMap<G>) {
        // SAFETY: `pool` is an initialised header.
        let ai = unsafe { (*pool).arenaindex };
        let ao = self.arenas.get_mut(ai);
        // SAFETY: the pool belongs to this arena and is in no list.
        unsafe { ao.give_pool(pool) };
        self.ndirty_total += 1;
        let nf = ao.nfreepools as usize; // after the increment
        let old_nf = nf - 1;

        // If ao was the last arena with old_nf free pools, its predecessor may take that role.
        let lastnf = self.nfp2lasta[old_nf];
        if lastnf == ai {
            let p = self.arenas.get(ai).prevarena;
            self.nfp2lasta[old_nf] =
                if p != NONE && self.arenas.get(p).nfreepools as usize == old_nf {
                    p
                } else {
                    NONE
                };
        }

        let (ntotal, next) = {
            let a = self.arenas.get(ai);
            (a.ntotalpools as usize, a.nextarena)
        };
        // Case 1: wholly free and not the last usable arena -> back to the OS, unless the
        // retention policy keeps a few more (see "Retention").
        if nf == ntotal && next != NONE && !self.keeps_free_arena(next) {
            self.unlink_usable(ai);
            if self.release_arena(ai, map) {
                self.retention.purged();
            }
            return;
        }
        // Case 2: it was full (in no list); it now has the fewest free pools: goes first.
        if nf == 1 {
            let head = self.usable_arenas;
            let a = self.arenas.get_mut(ai);
            a.nextarena = head;
            a.prevarena = NONE;
            if head != NONE {
                self.arenas.get_mut(head).prevarena = ai;
            }
            self.usable_arenas = ai;
            if self.nfp2lasta[1] == NONE {
                self.nfp2lasta[1] = ai;
            }
            return;
        }
        // ao now has nf free pools. If no other arena has nf, it is the last with nf.
        if self.nfp2lasta[nf] == NONE {
            self.nfp2lasta[nf] = ai;
        }
        // Case 3: ao was the last with old_nf, so everything after it already has >= nf:
        // the order holds.
        if lastnf == ai {
            return;
        }
        // Case 4: move ao to just after lastnf, the last arena with old_nf free pools (it
        // cannot be NONE: ao itself had old_nf, so some arena is last with it).
        debug_assert_ne!(lastnf, NONE);
        self.unlink_usable(ai);
        let after = self.arenas.get(lastnf).nextarena;
        {
            let a = self.arenas.get_mut(ai);
            a.prevarena = lastnf;
            a.nextarena = after;
        }
        if after != NONE {
            self.arenas.get_mut(after).prevarena = ai;
        }
        self.arenas.get_mut(lastnf).nextarena = ai;
    }

    /// Whether the arena just freed wholly may stay mapped, `next` being the arena after it in
    /// `usable_arenas` (not yet re-sorted: the arenas after it have at least one pool fewer
    /// free than it now has, so the wholly free ones among them are at the end).
    fn keeps_free_arena(&self, next: u32) -> bool {
        let extra = self.retention.extra_free_arenas();
        // Wholly free arenas after it, counted up to one past the allowance.
        let mut after = 0;
        let mut ai = next;
        while ai != NONE && after <= extra {
            let a = self.arenas.get(ai);
            after += usize::from(a.nfreepools == a.ntotalpools);
            ai = a.nextarena;
        }
        after <= extra
    }

    /// Releases the wholly free arenas the retention policy no longer allows (after it settled
    /// back to level 0), from the end of `usable_arenas`.
    fn shed_free_arenas(&mut self, map: &ArenaMap<G>) {
        let ntotal = G::MAX_POOLS_IN_ARENA;
        let allowed = 1 + self.retention.extra_free_arenas();
        loop {
            let last = self.nfp2lasta[ntotal];
            let mut n = 0;
            let mut ai = last;
            while ai != NONE && self.arenas.get(ai).nfreepools as usize == ntotal {
                n += 1;
                ai = self.arenas.get(ai).prevarena;
            }
            if n <= allowed || !self.release_wholly_free(last, map) {
                return;
            }
        }
    }

    /// Unlinks wholly free arena `ai` from `usable_arenas` and releases it; `false` if the
    /// kernel refused (it is then back at the end of the list).
    fn release_wholly_free(&mut self, ai: u32, map: &ArenaMap<G>) -> bool {
        let a = self.arenas.get(ai);
        let nf = a.nfreepools as usize;
        if self.nfp2lasta[nf] == ai {
            let p = a.prevarena;
            self.nfp2lasta[nf] = if p != NONE && self.arenas.get(p).nfreepools as usize == nf {
                p
            } else {
                NONE
            };
        }
        self.unlink_usable(ai);
        self.release_arena(ai, map)
    }

    /// Releases every wholly free arena (the one kept by the bpo-37257 rule, any the retention
    /// policy kept, and any that the heaps' trims freed), then decommits the free pools of the
    /// arenas that stay, and resets the retention policy.
    pub(crate) fn trim(&mut self, map: &ArenaMap<G>) {
        self.retention.reset();
        let mut ai = self.usable_arenas;
        while ai != NONE {
            let a = self.arenas.get(ai);
            let next = a.nextarena;
            // A refused unmap puts the arena back at the end of the list; the kernel would
            // most likely refuse the next one too.
            if a.nfreepools == a.ntotalpools && !self.release_wholly_free(ai, map) {
                break;
            }
            ai = next;
        }
        // The arenas that stay give back the pages of their free pools.
        for ai in 0..self.arenas.capacity() {
            let a = self.arenas.get(ai);
            if !a.address.is_null() && a.ndirty != 0 {
                self.decommit(ai);
            }
        }
    }

    /// Arenas mapped now.
    pub(crate) fn live_arenas(&self) -> usize {
        self.narenas_currently_allocated
    }

    /// Unmaps every arena and the arena table, whatever they hold. Only for `Drop`.
    pub(crate) fn release_everything(&mut self, map: &ArenaMap<G>) {
        for ai in 0..self.arenas.capacity() {
            if !self.arenas.get(ai).address.is_null() {
                // A refused unmap leaves the arena mapped for good; vmm counts it.
                self.unmap_arena(ai, map);
            }
        }
        self.arenas.release();
        core::mem::replace(&mut self.fallbacks, FallbackSet::new()).release();
        *self = Self::new();
    }

    /// Iterates over the carved pools of a live arena that have a header (all but the
    /// decommitted ones).
    fn carved_pools(a: &ArenaObject) -> impl Iterator<Item = *mut PoolHeader> {
        let base = a.address;
        let carved = (a.pool_address as usize - base as usize) / G::POOL_SIZE;
        (0..carved)
            .map(move |k| base.wrapping_add(k * G::POOL_SIZE).cast::<PoolHeader>())
            .filter(move |&p| !a.is_decommitted::<G>(p))
    }

    /// A snapshot of the figures, computed by walking every pool (CPython:
    /// `pymalloc_print_stats`). Reads of pools that other threads own are of fields written
    /// under this lock (`owner`, `szidx`) or atomic (`count`). Never allocates.
    pub(crate) fn stats(&self, map: &ArenaMap<G>) -> Stats {
        let mut s = Stats::empty();
        s.geometry = G::NAME;
        s.alignment = G::ALIGNMENT;
        s.threshold = G::SMALL_REQUEST_THRESHOLD;
        s.nclasses = G::NB_SMALL_SIZE_CLASSES;
        s.pool_size = G::POOL_SIZE;
        s.arena_size = G::ARENA_SIZE;
        for (i, c) in s
            .classes
            .iter_mut()
            .enumerate()
            .take(G::NB_SMALL_SIZE_CLASSES)
        {
            c.size = G::class_size(i);
        }
        for ai in 0..self.arenas.capacity() {
            let a = self.arenas.get(ai);
            if a.address.is_null() {
                continue;
            }
            s.unused_pools += a.nfreepools as usize;
            s.arenas_wholly_free += usize::from(a.nfreepools == a.ntotalpools);
            for pool in Self::carved_pools(a) {
                // SAFETY: carved pools have initialised headers; see above for the races.
                let (owner, count, szidx) =
                    unsafe { ((*pool).owner, pool::count_of(pool), (*pool).szidx as usize) };
                // Free pools (counted above) have no owner; a heap's kept empty pool is still
                // that class's pool.
                if owner == NO_OWNER || szidx >= G::NB_SMALL_SIZE_CLASSES {
                    continue;
                }
                let c: &mut ClassStats = &mut s.classes[szidx];
                c.pools += 1;
                c.blocks_in_use += count;
                c.free_blocks += G::blocks_per_pool(szidx) - count;
            }
        }
        for i in 0..G::NB_SMALL_SIZE_CLASSES {
            let c = s.classes[i];
            let (pools, size) = (c.pools, c.size);
            s.bytes_in_allocated_blocks += c.blocks_in_use * size;
            s.bytes_in_available_blocks += c.free_blocks * size;
            s.pool_header_bytes += pools * G::POOL_OVERHEAD;
            s.quantization_bytes += pools * ((G::POOL_SIZE - G::POOL_OVERHEAD) % size);
        }
        s.arenas_allocated_total = self.ntimes_arena_allocated;
        s.arenas_current = self.narenas_currently_allocated;
        s.retention_level = self.retention.level;
        s.arenas_reclaimed = self.ntimes_arena_allocated - self.narenas_currently_allocated;
        s.arenas_highwater = self.narenas_highwater;
        s.arena_unmap_failures = self.arena_unmap_failures;
        s.pools_decommitted = self.pools_decommitted;
        s.total_arena_bytes = self.narenas_currently_allocated * G::ARENA_SIZE;
        s.arena_map_leaves = map.leaves();
        s.metadata_bytes = self.arenas.bytes() + map.bytes() + self.fallbacks.bytes();
        s.remote_walk_visits = self.remote_walk_visits;
        s
    }

    pub(crate) fn validate_block(
        &self,
        p: *mut u8,
        class: usize,
        size: usize,
        me: u32,
        map: &ArenaMap<G>,
    ) -> Result<(), Corruption> {
        let addr = p as usize;
        let bad = |what, expected, found| {
            Err(Corruption {
                what,
                address: addr,
                expected,
                found,
            })
        };
        let Some(ai) = map.lookup(addr) else {
            return bad("pointer is not inside any arena of this allocator", 0, 0);
        };
        let a = self.arenas.get(ai);
        let pool = pool::pool_of::<G>(p);
        if (pool as usize) >= a.pool_address as usize {
            return bad(
                "pointer is in a pool never handed out",
                a.pool_address as usize,
                pool as usize,
            );
        }
        if a.is_decommitted::<G>(pool) {
            return bad(
                "pointer is in a pool with no live block (double free?)",
                0,
                0,
            );
        }
        // SAFETY: a carved pool of a live arena has an initialised header; `owner` and `szidx`
        // are written under the arenas lock, which we hold.
        let (owner, szidx) = unsafe { ((*pool).owner, (*pool).szidx as usize) };
        // The count and the carving mark are the owner's to write: read them only for our own
        // pools (a heap we own, or the shared heap, whose lock the caller holds).
        let (count, nextoffset) = if owner == me {
            // SAFETY: as above; the caller owns the pool when `owner == me`.
            unsafe { ((*pool).count(), (*pool).nextoffset as usize) }
        } else {
            (usize::from(owner != NO_OWNER), G::POOL_SIZE)
        };
        if count == 0 {
            return bad(
                "pointer is in a pool with no live block (double free?)",
                0,
                0,
            );
        }
        // A block shrunk in place by `realloc` keeps its larger class while its layout names
        // a smaller one; that is allowed exactly when CPython's in-place rule allowed it.
        let fits = szidx == class
            || (szidx > class
                && szidx < G::NB_SMALL_SIZE_CLASSES
                && 4 * size.max(1) > 3 * G::class_size(szidx));
        if !fits {
            return bad(
                "size class of the layout differs from the block's",
                class,
                szidx,
            );
        }
        let off = addr - pool as usize;
        let block = G::class_size(szidx);
        if off < G::POOL_OVERHEAD || !(off - G::POOL_OVERHEAD).is_multiple_of(block) {
            return bad("pointer is not the start of a block", G::POOL_OVERHEAD, off);
        }
        if off >= nextoffset {
            return bad(
                "pointer is past the carved blocks of its pool",
                nextoffset,
                off,
            );
        }
        Ok(())
    }

    /// Checks every invariant listed in the module docs; O(size of the heap).
    ///
    /// `heap_of(owner)` gives the heap with that id if the caller may inspect it (it owns it or
    /// has claimed it); pools of other heaps are checked only in what their owners do not
    /// change without this lock. Each inspectable heap's lists are checked by the caller
    /// (`Heap::check_lists`).
    pub(crate) fn check_invariants<'h>(
        &self,
        map: &ArenaMap<G>,
        heap_of: impl Fn(u32) -> Option<&'h Heap<G>>,
    ) -> Result<(), Corruption>
    where
        G: 'h,
    {
        let fail = |what, address: usize, expected, found| {
            Err(Corruption {
                what,
                address,
                expected,
                found,
            })
        };
        // Arenas and their pools.
        let mut live = 0;
        for ai in 0..self.arenas.capacity() {
            let a = self.arenas.get(ai);
            if a.address.is_null() {
                continue;
            }
            live += 1;
            let base = a.address as usize;
            if !base.is_multiple_of(G::ARENA_SIZE) {
                return fail(
                    "arena not ARENA_SIZE-aligned",
                    base,
                    0,
                    base % G::ARENA_SIZE,
                );
            }
            if map.lookup(base) != Some(ai) {
                return fail("arena missing from the arena map", base, ai as usize, 0);
            }
            if a.ntotalpools as usize != G::MAX_POOLS_IN_ARENA {
                return fail(
                    "arena pool count",
                    base,
                    G::MAX_POOLS_IN_ARENA,
                    a.ntotalpools as usize,
                );
            }
            let mut free = 0;
            let mut on_freepools = [0u64; MAX_POOLS_PER_ARENA / 64]; // bit k: pool k
            let mut fp = a.freepools;
            while !fp.is_null() {
                free += 1;
                let k = (fp as usize).wrapping_sub(base) / G::POOL_SIZE;
                if k < MAX_POOLS_PER_ARENA {
                    on_freepools[k / 64] |= 1 << (k % 64);
                }
                // SAFETY: pools on freepools are initialised headers.
                let h = unsafe { &*fp };
                if h.count() != 0 || h.arenaindex != ai {
                    return fail("pool on freepools is in use", fp as usize, 0, h.count());
                }
                if free > G::MAX_POOLS_IN_ARENA {
                    return fail(
                        "freepools list has a cycle",
                        base,
                        G::MAX_POOLS_IN_ARENA,
                        free,
                    );
                }
                fp = h.nextpool;
            }
            if a.ndirty as usize != free {
                return fail("arena ndirty", base, free, a.ndirty as usize);
            }
            let expect = free + a.decommitted_pools() + a.virgin_pools::<G>();
            if a.nfreepools as usize != expect {
                return fail("arena nfreepools", base, expect, a.nfreepools as usize);
            }
            for pool in Self::carved_pools(a) {
                // Fields written only under this lock, read without borrowing the header: its
                // other plain fields may be another thread's to write.
                // SAFETY: carved pools have initialised headers.
                let (owner, arenaindex, szidx) =
                    unsafe { ((*pool).owner, (*pool).arenaindex, (*pool).szidx as usize) };
                let k = (pool as usize - base) / G::POOL_SIZE;
                let on_list = on_freepools[k / 64] & (1 << (k % 64)) != 0;
                if on_list != (owner == NO_OWNER) {
                    return fail(
                        "pool owner disagrees with the arena's free list",
                        pool as usize,
                        usize::from(on_list),
                        owner as usize,
                    );
                }
                if arenaindex != ai {
                    return fail(
                        "pool arena index",
                        pool as usize,
                        ai as usize,
                        arenaindex as usize,
                    );
                }
                if owner == NO_OWNER {
                    continue;
                }
                let Some(heap) = heap_of(owner) else {
                    // Another thread's pool: only what that thread cannot change under us.
                    if szidx >= G::NB_SMALL_SIZE_CLASSES {
                        return fail(
                            "pool size class",
                            pool as usize,
                            G::NB_SMALL_SIZE_CLASSES,
                            szidx,
                        );
                    }
                    continue;
                };
                // SAFETY: the pool is in a heap the caller owns or has claimed.
                let h = unsafe { &*pool };
                let kept = heap.is_kept(pool, h.szidx as usize);
                if h.count() == 0 && !kept {
                    // Lost to every list: nothing would ever hand its blocks out again (or a
                    // full pool's header was overwritten with zeros).
                    return fail("pool with no live block on no list", pool as usize, 0, 0);
                }
                if h.count() == 0
                    && self.narenas_currently_allocated > 1
                    && self.busy_pool_of(ai, h.owner, pool).is_none()
                    && !Self::carved_pools(a).any(|p| {
                        // SAFETY: carved pools have initialised headers; `p` is checked to be a
                        // pool of `heap`, which the caller may inspect, before its count.
                        unsafe {
                            (*p).owner == h.owner
                                && (*p).count() == 0
                                && heap.kept_as_only_arena((*p).szidx as usize)
                                && heap.is_kept(p, (*p).szidx as usize)
                        }
                    })
                {
                    return fail(
                        "a kept empty pool pins an arena with no pool of its heap in use",
                        pool as usize,
                        0,
                        1,
                    );
                }
                if h.arenaindex != ai {
                    return fail(
                        "pool arena index",
                        pool as usize,
                        ai as usize,
                        h.arenaindex as usize,
                    );
                }
                if h.count() == 0 {
                    continue;
                }
                let class = h.szidx as usize;
                if class >= G::NB_SMALL_SIZE_CLASSES {
                    return fail(
                        "pool size class",
                        pool as usize,
                        G::NB_SMALL_SIZE_CLASSES,
                        class,
                    );
                }
                let (cap, size) = (G::blocks_per_pool(class), G::class_size(class));
                let mut nfree = 0;
                let mut b = h.freeblock;
                while !b.is_null() {
                    let off = (b as usize).wrapping_sub(pool as usize);
                    if off < G::POOL_OVERHEAD
                        || off >= h.nextoffset as usize
                        || !(off - G::POOL_OVERHEAD).is_multiple_of(size)
                    {
                        return fail(
                            "free-list entry outside its pool",
                            b as usize,
                            pool as usize,
                            off,
                        );
                    }
                    nfree += 1;
                    if nfree > cap {
                        return fail(
                            "free list has a cycle (double free?)",
                            pool as usize,
                            cap,
                            nfree,
                        );
                    }
                    // SAFETY: `b` is a block of this pool (checked above) holding its link.
                    b = unsafe { b.cast::<*mut u8>().read() };
                }
                // Blocks other threads freed into the pool are still counted in `count`.
                let mut nremote = 0;
                let mut b: *mut u8 =
                    ptr::with_exposed_provenance_mut(h.remote.load(Acquire) & !0b11);
                while !b.is_null() {
                    nremote += 1;
                    if nremote > cap {
                        return fail("remote list has a cycle", pool as usize, cap, nremote);
                    }
                    // SAFETY: blocks on the remote list are dead blocks holding their link.
                    b = unsafe { b.cast::<*mut u8>().read() };
                }
                // SAFETY: `pool` is an initialised header.
                let virgin = unsafe { pool::virgin_blocks::<G>(pool) };
                if nremote > h.count() {
                    return fail(
                        "more remote frees than live blocks",
                        pool as usize,
                        h.count(),
                        nremote,
                    );
                }
                let total = h.count() + nfree + virgin;
                if total != cap {
                    return fail(
                        "count + |free list| + virgin != capacity",
                        pool as usize,
                        cap,
                        total,
                    );
                }
            }
        }
        if live != self.narenas_currently_allocated {
            return fail(
                "live arena count",
                0,
                self.narenas_currently_allocated,
                live,
            );
        }
        // usable_arenas: sorted, back-linked, exactly the live arenas with free pools.
        let mut prev = NONE;
        let mut ai = self.usable_arenas;
        let mut usable = 0;
        while ai != NONE {
            let a = self.arenas.get(ai);
            usable += 1;
            if a.address.is_null() || a.nfreepools == 0 || a.prevarena != prev {
                return fail(
                    "usable_arenas entry",
                    a.address as usize,
                    prev as usize,
                    a.prevarena as usize,
                );
            }
            let nf = a.nfreepools as usize;
            if prev != NONE && (self.arenas.get(prev).nfreepools as usize) > nf {
                return fail(
                    "usable_arenas not sorted",
                    a.address as usize,
                    nf,
                    self.arenas.get(prev).nfreepools as usize,
                );
            }
            let is_last_nf =
                a.nextarena == NONE || self.arenas.get(a.nextarena).nfreepools as usize != nf;
            if is_last_nf != (self.nfp2lasta[nf] == ai) {
                return fail(
                    "nfp2lasta",
                    a.address as usize,
                    ai as usize,
                    self.nfp2lasta[nf] as usize,
                );
            }
            prev = ai;
            ai = a.nextarena;
            if usable > live {
                return fail("usable_arenas has a cycle", 0, live, usable);
            }
        }
        let with_free = (0..self.arenas.capacity())
            .map(|i| self.arenas.get(i))
            .filter(|a| !a.address.is_null() && a.nfreepools > 0)
            .count();
        for (nf, &ai) in self.nfp2lasta.iter().enumerate() {
            if ai != NONE {
                let a = self.arenas.get(ai);
                if a.address.is_null() || a.nfreepools as usize != nf {
                    return fail(
                        "stale nfp2lasta entry",
                        a.address as usize,
                        nf,
                        a.nfreepools as usize,
                    );
                }
            }
        }
        if usable != with_free {
            return fail(
                "usable_arenas misses an arena with free pools",
                0,
                with_free,
                usable,
            );
        }
        // Wholly free arenas: CPython's one and the retention policy's 2^level - 1 more. Once
        // the kernel refused an unmap, `trim()` and the policy stop at the refusal and any
        // number may stay.
        let wholly_free = (0..self.arenas.capacity())
            .map(|i| self.arenas.get(i))
            .filter(|a| !a.address.is_null() && a.nfreepools == a.ntotalpools)
            .count();
        let allowed = 1 + self.retention.extra_free_arenas();
        if wholly_free > allowed && self.arena_unmap_failures == 0 {
            return fail("too many wholly free arenas", 0, allowed, wholly_free);
        }
        let dirty: usize = (0..self.arenas.capacity())
            .map(|i| self.arenas.get(i))
            .filter(|a| !a.address.is_null())
            .map(|a| a.ndirty as usize)
            .sum();
        if dirty != self.ndirty_total {
            return fail("dirty pool total", 0, dirty, self.ndirty_total);
        }
        Ok(())
    }
}
