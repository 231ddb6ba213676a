//! The arena map: an O(1), lock-free answer to "is this address inside one of our arenas?".
//!
//! Rust's `GlobalAlloc::dealloc` passes the `Layout`, so the Rust path knows a block's size
//! class without asking. A C `free(p)` does not, and must decide whether `p` is ours without
//! touching memory that may not be mapped. CPython answers with a radix tree over the address
//! (`arena_map_is_used`); because our arenas are mapped `ARENA_SIZE`-aligned, each arena
//! covers exactly one slot of a two-level table indexed by `addr >> ARENA_BITS`:
//!
//! ```text
//!  47                ARENA_BITS+LEAF_BITS      ARENA_BITS            0
//!  +------------------------+------------------------+---------------+
//!  |      root index        |      leaf index        | offset in arena|
//!  +------------------------+------------------------+---------------+
//!  root: [AtomicPtr<leaf>; 2^ROOT_BITS]   leaf: [AtomicU32; 2^LEAF_BITS] = arena index + 1
//! ```
//!
//! With 1 MiB arenas the root has 2^14 entries (128 KiB) and each leaf 2^14 (64 KiB, covering
//! 16 GiB of address space). Both are mapped from layer −1 on first need and are zero-filled,
//! which reads as "not ours". Addresses above 2^48 are never ours (an arena mapped there is
//! refused).
//!
//! # Concurrency
//! Writers (`insert`, `remove`) run with the arenas lock held; readers (`lookup`) take no lock.
//! A leaf pointer is published with `Release` after its zero-filled mapping exists and read
//! with `Acquire`, so a reader that sees the pointer sees a valid leaf. Entries are read with
//! `Acquire` to pair with the `Release` store made when an arena is registered, before any of
//! its blocks is handed out. Root and leaves are never unmapped while the map is in use, so a
//! reader racing with `remove` reads a stale but valid entry; deciding about an address whose
//! arena is being released concurrently is the caller's race, as with any use-after-free.
//!
//! The loom models at the end of this file check this protocol: a reader that learns of a
//! block through any synchronisation finds its arena, a concurrent reader finds the entry or
//! nothing but never an unpublished table, and writers serialised by the arenas lock build one
//! map between them. Under loom the tables are boxed loom atomics and the map covers only
//! 16 arenas' worth of address space, so each table is 4 entries.

use core::marker::PhantomData;
use core::ptr::{self, NonNull};

use crate::geometry::Geometry;
use crate::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

/// Virtual-address bits covered. x86-64 and aarch64 user space is 47 or 48 bits unless a
/// program opts into 5-level paging with high mmap hints, which nothing here does.
const VA_BITS: u32 = 48;

pub(crate) struct ArenaMap<G: Geometry> {
    root: AtomicPtr<AtomicPtr<AtomicU32>>, // 2^ROOT_BITS leaf pointers, or null
    leaves: AtomicUsize,                   // leaves mapped (for statistics)
    registered: AtomicUsize,               // arenas registered now
    _geometry: PhantomData<G>,
}

impl<G: Geometry> ArenaMap<G> {
    const INDEX_BITS: u32 = if cfg!(loom) {
        4
    } else {
        VA_BITS - G::ARENA_BITS
    };
    const ROOT_BITS: u32 = Self::INDEX_BITS / 2;
    const LEAF_BITS: u32 = Self::INDEX_BITS - Self::ROOT_BITS;
    const ROOT_LEN: usize = 1 << Self::ROOT_BITS;
    const LEAF_LEN: usize = 1 << Self::LEAF_BITS;
    pub(crate) const ROOT_BYTES: usize = Self::ROOT_LEN * size_of::<AtomicPtr<AtomicU32>>();
    pub(crate) const LEAF_BYTES: usize = Self::LEAF_LEN * size_of::<AtomicU32>();

    crate::sync::const_unless_loom! {
        pub(crate) fn new() -> Self {
            Self {
                root: AtomicPtr::new(ptr::null_mut()),
                leaves: AtomicUsize::new(0),
                registered: AtomicUsize::new(0),
                _geometry: PhantomData,
            }
        }
    }

    #[inline(always)]
    fn split(addr: usize) -> Option<(usize, usize)> {
        let index = addr >> G::ARENA_BITS;
        if index >> Self::INDEX_BITS != 0 {
            return None;
        }
        Some((index >> Self::LEAF_BITS, index & (Self::LEAF_LEN - 1)))
    }

    /// The index of the arena containing `addr`, if it is one of ours. Lock-free, O(1).
    #[inline]
    pub(crate) fn lookup(&self, addr: usize) -> Option<u32> {
        let (r, l) = Self::split(addr)?;
        let root = self.root.load(Ordering::Acquire);
        if root.is_null() {
            return None;
        }
        // SAFETY: a non-null root points to ROOT_LEN initialised slots, and `r < ROOT_LEN`.
        let leaf = unsafe { (*root.add(r)).load(Ordering::Acquire) };
        if leaf.is_null() {
            return None;
        }
        // SAFETY: a non-null leaf points to LEAF_LEN initialised entries, and `l < LEAF_LEN`.
        let entry = unsafe { (*leaf.add(l)).load(Ordering::Acquire) };
        entry.checked_sub(1)
    }

    /// Records that the arena at `base` (`ARENA_SIZE`-aligned) has index `index`. Returns
    /// `false` if the address is out of range or a table could not be mapped.
    ///
    /// # Safety
    /// The caller holds the arenas lock (the only writer) and owns the arena at `base`.
    pub(crate) unsafe fn insert(&self, base: usize, index: u32) -> bool {
        let Some((r, l)) = Self::split(base) else {
            return false;
        };
        let mut root = self.root.load(Ordering::Relaxed);
        if root.is_null() {
            let Some(fresh) = new_table(Self::ROOT_LEN) else {
                return false;
            };
            root = fresh.as_ptr();
            // Release: publishes the (zero-filled) root to lock-free readers.
            self.root.store(root, Ordering::Release);
        }
        // SAFETY: `r < ROOT_LEN` and the root is mapped.
        let slot = unsafe { &*root.add(r) };
        let mut leaf = slot.load(Ordering::Relaxed);
        if leaf.is_null() {
            let Some(fresh) = new_table(Self::LEAF_LEN) else {
                return false;
            };
            leaf = fresh.as_ptr();
            // Release: publishes the zero-filled leaf before anyone can find it.
            slot.store(leaf, Ordering::Release);
            self.leaves.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: `l < LEAF_LEN` and the leaf is mapped.
        // Release: the arena's registration happens before any block from it is handed out.
        unsafe { (*leaf.add(l)).store(index + 1, Ordering::Release) };
        // Written only by the lock holder: a load and a store, read by others as a hint.
        let n = self.registered.load(Ordering::Relaxed);
        self.registered.store(n + 1, Ordering::Relaxed);
        true
    }

    /// Arenas registered now. Exact under the arenas lock; without it, a value it had lately
    /// (heaps use it to decide whether an empty pool kept as "the only arena's" may stay).
    #[inline(always)]
    pub(crate) fn registered(&self) -> usize {
        self.registered.load(Ordering::Relaxed)
    }

    /// Forgets the arena at `base`.
    ///
    /// # Safety
    /// The caller holds the arenas lock and `base` was inserted.
    pub(crate) unsafe fn remove(&self, base: usize) {
        let Some((r, l)) = Self::split(base) else {
            return;
        };
        let root = self.root.load(Ordering::Relaxed);
        if root.is_null() {
            return;
        }
        // SAFETY: indices are in range and the tables are mapped (checked for null).
        unsafe {
            let leaf = (*root.add(r)).load(Ordering::Relaxed);
            if !leaf.is_null() && (*leaf.add(l)).load(Ordering::Relaxed) != 0 {
                (*leaf.add(l)).store(0, Ordering::Release);
                let n = self.registered.load(Ordering::Relaxed);
                self.registered.store(n - 1, Ordering::Relaxed);
            }
        }
    }

    /// Leaves mapped so far.
    pub(crate) fn leaves(&self) -> usize {
        self.leaves.load(Ordering::Relaxed)
    }

    /// Bytes of address space the map occupies.
    pub(crate) fn bytes(&self) -> usize {
        let root = if self.root.load(Ordering::Relaxed).is_null() {
            0
        } else {
            Self::ROOT_BYTES
        };
        root + self.leaves() * Self::LEAF_BYTES
    }

    /// Unmaps every table. Only for the allocator's `Drop`.
    ///
    /// # Safety
    /// No other thread can use the map any more.
    pub(crate) unsafe fn release(&mut self) {
        let root = self.root.load(Ordering::Relaxed);
        let Some(root_nn) = NonNull::new(root) else {
            return;
        };
        for r in 0..Self::ROOT_LEN {
            // SAFETY: the root is mapped with ROOT_LEN slots and we have exclusive access.
            let leaf = unsafe { (*root.add(r)).load(Ordering::Relaxed) };
            if let Some(leaf) = NonNull::new(leaf) {
                // SAFETY: each leaf came from `new_table(LEAF_LEN)` and is unreachable now.
                unsafe { free_table(leaf, Self::LEAF_LEN) };
            }
        }
        // SAFETY: from `new_table(ROOT_LEN)`; unreachable from now on.
        unsafe { free_table(root_nn, Self::ROOT_LEN) };
        self.root.store(ptr::null_mut(), Ordering::Relaxed);
        self.leaves.store(0, Ordering::Relaxed);
    }
}

/// An atomic whose all-zero bits are its initial value (null, 0), so that a zero-filled
/// mapping is a table of them.
trait ZeroIsInit {
    #[cfg(loom)]
    fn zero() -> Self;
}

impl ZeroIsInit for AtomicU32 {
    #[cfg(loom)]
    fn zero() -> Self {
        AtomicU32::new(0)
    }
}

impl<T> ZeroIsInit for AtomicPtr<T> {
    #[cfg(loom)]
    fn zero() -> Self {
        AtomicPtr::new(ptr::null_mut())
    }
}

/// A table of `len` initial (zero) atomics: a zero-filled mapping from layer −1, or, under
/// loom, a box of loom atomics (which are not plain memory).
fn new_table<T: ZeroIsInit>(len: usize) -> Option<NonNull<T>> {
    #[cfg(not(loom))]
    return pymalloc_vmm::map(len * size_of::<T>()).map(NonNull::cast);
    #[cfg(loom)]
    {
        let table: Box<[T]> = (0..len).map(|_| T::zero()).collect();
        NonNull::new(Box::into_raw(table).cast())
    }
}

/// Gives back a table from [`new_table`].
///
/// # Safety
/// `table` came from `new_table(len)` and nothing refers to it any more.
unsafe fn free_table<T: ZeroIsInit>(table: NonNull<T>, len: usize) {
    // SAFETY: the mapping is `len * size_of::<T>()` bytes and unused (the caller's promise).
    #[cfg(not(loom))]
    unsafe {
        pymalloc_vmm::unmap(table.cast(), len * size_of::<T>());
    }
    // SAFETY: the box was made by `new_table` with `len` elements (the caller's promise).
    #[cfg(loom)]
    drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(table.as_ptr(), len)) });
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::geometry::{GeometryExt, Py37, Py310};

    fn round_trip<G: Geometry>() {
        let mut map = ArenaMap::<G>::new();
        let a = 0x7f12_3450_0000usize & !(G::ARENA_SIZE - 1);
        let b = 0x0000_5555_0000_0000usize;
        assert_eq!(map.lookup(a), None);
        // SAFETY: single-threaded test; the "arenas" are only addresses, never dereferenced.
        unsafe {
            assert!(map.insert(a, 7));
            assert!(map.insert(b, 0));
        }
        assert_eq!(map.lookup(a), Some(7));
        assert_eq!(map.lookup(a + G::ARENA_SIZE - 1), Some(7));
        assert_eq!(map.lookup(a + G::ARENA_SIZE), None);
        assert_eq!(map.lookup(a - 1), None);
        assert_eq!(map.lookup(b + 12345), Some(0));
        assert_eq!(map.lookup(usize::MAX), None);
        assert_eq!(map.lookup(0), None);
        assert_eq!(map.leaves(), 2);
        // SAFETY: as above.
        unsafe {
            assert!(!map.insert(1 << 50, 1), "beyond 48-bit addresses");
            map.remove(a);
        }
        assert_eq!(map.lookup(a), None);
        assert_eq!(map.lookup(b), Some(0));
        // SAFETY: nobody else uses the map.
        unsafe { map.release() };
        assert_eq!(map.lookup(b), None);
    }

    #[test]
    fn insert_lookup_remove() {
        round_trip::<Py310>();
        round_trip::<Py37>();
    }
}

/// loom models of the map's publication protocol (see the module documentation).
/// `RUSTFLAGS="--cfg loom" cargo test -p pymalloc --release --lib`
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use crate::geometry::Py310;
    use crate::sync::RawLock;
    use loom::sync::Arc;
    use loom::thread;

    /// Two arenas in different leaves of the loom-sized map (root slots 0 and 2).
    const A: usize = 3 << 20;
    const B: usize = 9 << 20;

    struct Shared {
        map: ArenaMap<Py310>,
        heap_lock: RawLock,       // what serialises writers in the allocator
        handed_over: AtomicUsize, // a block address passed from thread to thread
    }

    impl Shared {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                map: ArenaMap::new(),
                heap_lock: RawLock::new(),
                handed_over: AtomicUsize::new(0),
            })
        }

        fn register(&self, base: usize, index: u32) {
            self.heap_lock.lock();
            // SAFETY: we hold the writers' lock; the "arenas" are addresses, never touched.
            assert!(unsafe { self.map.insert(base, index) });
            self.heap_lock.unlock();
        }

        fn forget(&self, base: usize) {
            self.heap_lock.lock();
            // SAFETY: as in `register`, and `base` was registered.
            unsafe { self.map.remove(base) };
            self.heap_lock.unlock();
        }

        fn release(this: Arc<Self>) {
            let mut shared = Arc::try_unwrap(this).ok().expect("all threads joined");
            // SAFETY: no other thread exists.
            unsafe { shared.map.release() };
        }
    }

    /// A thread that is handed a block finds its arena; one that is not finds the arena or
    /// nothing, and never reads a table before its creation is published (loom reports such a
    /// load as a causality violation).
    #[test]
    fn a_block_handed_over_is_found_in_its_arena() {
        loom::model(|| {
            let s = Shared::new();
            let writer = {
                let s = s.clone();
                thread::spawn(move || {
                    s.register(A, 5);
                    // The allocator hands the block out; the caller passes it on.
                    s.handed_over.store(A + 64, Ordering::Release);
                })
            };
            let block = s.handed_over.load(Ordering::Acquire);
            let found = s.map.lookup(A + 64);
            if block != 0 {
                assert_eq!(found, Some(5), "a block we were given is not in any arena");
            } else {
                assert!(matches!(found, None | Some(5)), "found {found:?}");
            }
            assert_eq!(s.map.lookup(B), None);
            writer.join().unwrap();
            assert_eq!(s.map.lookup(A + 64), Some(5));
            Shared::release(s);
        });
    }

    /// Writers take turns under the arenas lock, each perhaps creating the root or a leaf; the
    /// map they build holds both arenas, and a concurrent reader sees each arena or nothing.
    #[test]
    fn writers_under_the_lock_build_one_map() {
        loom::model(|| {
            let s = Shared::new();
            let writers: Vec<_> = [(A, 1), (B, 2)]
                .into_iter()
                .map(|(base, index)| {
                    let s = s.clone();
                    thread::spawn(move || s.register(base, index))
                })
                .collect();
            let (a, b) = (s.map.lookup(A), s.map.lookup(B + 1));
            assert!(matches!(a, None | Some(1)), "A: {a:?}");
            assert!(matches!(b, None | Some(2)), "B: {b:?}");
            for w in writers {
                w.join().unwrap();
            }
            assert_eq!((s.map.lookup(A), s.map.lookup(B)), (Some(1), Some(2)));
            assert_eq!(s.map.leaves(), 2);
            let remover = {
                let s = s.clone();
                thread::spawn(move || s.forget(A))
            };
            let a = s.map.lookup(A);
            assert!(matches!(a, None | Some(1)), "A while removed: {a:?}");
            remover.join().unwrap();
            assert_eq!((s.map.lookup(A), s.map.lookup(B)), (None, Some(2)));
            Shared::release(s);
        });
    }
}
