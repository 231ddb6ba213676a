//! When the kernel refuses `munmap` (Linux does at `vm.max_map_count` when unmapping would split
//! a mapping), nothing is lost silently: a wholly free arena stays mapped, usable and counted,
//! and layer −1 counts every refused unmap.
//!
//! Layer −1 counts every refusal, including the trims of an aligned mapping and the unmap of
//! a dropped `Region`, and keeps the refused ranges in `mapped_bytes`.
//!
//! A free pool the kernel refuses to decommit stays a dirty free pool.
//!
//! This binary defines its own `munmap` and `madvise`, which the static linker prefers to the
//! C library's for every call made from the binary. They refuse while the calling thread's flag
//! is set (`REFUSE`, `REFUSE_MADVISE`) and otherwise pass the call to the kernel.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;

use pymalloc::{Geometry, GeometryExt, Py310, PyMalloc};
use pymalloc_vmm::PageAlloc;

thread_local! {
    // `const`, no destructor: reading it never allocates, so `munmap` may consult it anywhere.
    static REFUSE: Cell<bool> = const { Cell::new(false) };
}

/// The process's `munmap`: refuses while this thread's `REFUSE` is set.
///
/// # Safety
/// As `munmap(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn munmap(addr: *mut libc::c_void, len: libc::size_t) -> libc::c_int {
    if REFUSE.with(Cell::get) {
        // SAFETY: errno is this thread's.
        unsafe { *libc::__errno_location() = libc::ENOMEM };
        return -1;
    }
    // SAFETY: forwarded unchanged from our caller, who upholds munmap's contract.
    unsafe { libc::syscall(libc::SYS_munmap, addr, len) as libc::c_int }
}

thread_local! {
    static REFUSE_MADVISE: Cell<bool> = const { Cell::new(false) };
}

/// The process's `madvise`: refuses with `EINVAL` while this thread's `REFUSE_MADVISE` is set.
///
/// # Safety
/// As `madvise(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn madvise(
    addr: *mut libc::c_void,
    len: libc::size_t,
    advice: libc::c_int,
) -> libc::c_int {
    if REFUSE_MADVISE.with(Cell::get) {
        // SAFETY: errno is this thread's.
        unsafe { *libc::__errno_location() = libc::EINVAL };
        return -1;
    }
    // SAFETY: forwarded unchanged from our caller, who upholds madvise's contract.
    unsafe { libc::syscall(libc::SYS_madvise, addr, len, advice) as libc::c_int }
}

fn refusing<T>(f: impl FnOnce() -> T) -> T {
    REFUSE.with(|r| r.set(true));
    let t = f();
    REFUSE.with(|r| r.set(false));
    t
}

const BIG: usize = Py310::SMALL_REQUEST_THRESHOLD; // class 31: 31 blocks per pool

fn fill_one_arena(a: &PyMalloc) -> Vec<*mut u8> {
    let l = Layout::from_size_align(BIG, 16).unwrap();
    (0..Py310::MAX_POOLS_IN_ARENA * Py310::blocks_per_pool(Py310::NB_SMALL_SIZE_CLASSES - 1))
        .map(|_| {
            // SAFETY: a valid layout.
            let p = unsafe { a.alloc(l) };
            assert!(!p.is_null());
            p
        })
        .collect()
}

fn free_all(a: &PyMalloc, blocks: Vec<*mut u8>) {
    let l = Layout::from_size_align(BIG, 16).unwrap();
    for p in blocks {
        // SAFETY: each block is live and freed once with its layout.
        unsafe { a.dealloc(p, l) };
    }
}

// One test, so that no other thread changes layer -1's process-wide counters meanwhile.
#[test]
#[cfg_attr(miri, ignore = "interposes the C library's munmap")]
fn refused_unmaps_lose_nothing() {
    a_refused_arena_unmap_keeps_the_arena();
    a_refused_unmap_in_page_alloc_is_counted();
    refused_trims_of_an_aligned_mapping_are_counted();
    a_refused_unmap_of_a_region_is_counted();
    a_refused_decommit_keeps_the_pools_dirty();
}

/// `trim()` decommits the free pools of the arenas that stay; a pool the kernel refuses to
/// decommit stays a usable free pool and is not counted as decommitted.
fn a_refused_decommit_keeps_the_pools_dirty() {
    let a = PyMalloc::new();
    let keep = fill_one_arena(&a);
    let mut blocks = fill_one_arena(&a);
    // Free all but the first pool's worth of the second arena: 63 free pools, arena pinned.
    let per_pool = Py310::blocks_per_pool(Py310::NB_SMALL_SIZE_CLASSES - 1);
    let rest = blocks.split_off(per_pool);
    REFUSE_MADVISE.with(|r| r.set(true));
    free_all(&a, rest);
    a.trim();
    REFUSE_MADVISE.with(|r| r.set(false));
    let s = a.stats();
    assert_eq!(s.pools_decommitted, 0, "nothing was decommitted");
    a.check_invariants().unwrap();
    // The pools are still there to use, and the kernel is willing again.
    let again = fill_one_arena(&a);
    a.check_invariants().unwrap();
    free_all(&a, again);
    a.trim();
    assert!(a.stats().pools_decommitted > 0);
    a.check_invariants().unwrap();
    free_all(&a, blocks);
    free_all(&a, keep);
    assert_eq!(a.stats().blocks_in_use(), 0);
}

fn refused_trims_of_an_aligned_mapping_are_counted() {
    let (len, align) = (1 << 20, 1 << 20);
    let before = pymalloc_vmm::stats();
    let p = refusing(|| pymalloc_vmm::map_aligned(len, align)).expect("map_aligned");
    let vm = pymalloc_vmm::stats();
    // The over-mapping is `align - page` bytes, trimmed from the head, the tail or both: all
    // of it stays mapped, counted as mapped and as refused.
    let trimmed = align - pymalloc_vmm::page_size();
    assert!(vm.failed_unmap_calls > before.failed_unmap_calls);
    assert_eq!(vm.failed_unmap_bytes, before.failed_unmap_bytes + trimmed);
    assert_eq!(vm.mapped_bytes, before.mapped_bytes + len + trimmed);
    // SAFETY: mapped just above with this length, never used.
    assert!(unsafe { pymalloc_vmm::unmap(p, len) });
}

fn a_refused_unmap_of_a_region_is_counted() {
    let r = pymalloc_vmm::Region::new(1 << 20).unwrap();
    let before = pymalloc_vmm::stats();
    refusing(|| drop(r));
    let vm = pymalloc_vmm::stats();
    assert_eq!(
        (vm.failed_unmap_calls, vm.failed_unmap_bytes),
        (
            before.failed_unmap_calls + 1,
            before.failed_unmap_bytes + (1 << 20)
        )
    );
    assert_eq!(
        vm.mapped_bytes, before.mapped_bytes,
        "still mapped, still counted"
    );
}

fn a_refused_arena_unmap_keeps_the_arena() {
    let a = PyMalloc::new();
    let first = fill_one_arena(&a);
    let second = fill_one_arena(&a);
    let third = fill_one_arena(&a);
    assert_eq!(a.stats().arenas_current, 3);

    // The third arena empties first: kept as the one spare arena (bpo-37257), nothing is
    // unmapped.
    free_all(&a, third);
    assert_eq!(a.stats().arenas_current, 3);
    let vm_before = pymalloc_vmm::stats();
    // Then the first: a second wholly free arena goes back to the OS, but the kernel
    // refuses. It stays mapped, ours, and counted.
    let probe = first[0];
    refusing(|| free_all(&a, first));
    let s = a.stats();
    let vm = pymalloc_vmm::stats();
    assert_eq!((s.arenas_current, s.arena_unmap_failures), (3, 1));
    assert_eq!(s.arenas_reclaimed, 0);
    assert_eq!(
        (vm.failed_unmap_calls, vm.failed_unmap_bytes),
        (
            vm_before.failed_unmap_calls + 1,
            vm_before.failed_unmap_bytes + Py310::ARENA_SIZE
        )
    );
    assert!(
        a.owns(probe),
        "the arena is still ours, and still in the map"
    );
    a.check_invariants().unwrap();

    // trim() under refusal releases nothing, says so, and does not loop.
    assert_eq!(refusing(|| a.trim()), 0);
    assert_eq!(a.stats().arena_unmap_failures, 2);
    a.check_invariants().unwrap();

    // The kept arena is reused: a whole arena's worth of blocks maps nothing new.
    let total = a.stats().arenas_allocated_total;
    let again = fill_one_arena(&a);
    assert_eq!(a.stats().arenas_allocated_total, total);
    a.check_invariants().unwrap();

    // With the kernel willing again, everything goes back; trim() counts what it released.
    free_all(&a, again);
    free_all(&a, second);
    let before = a.stats().arenas_current;
    let released = a.trim();
    let s = a.stats();
    assert_eq!((released, s.arenas_current), (before, 0));
    a.check_invariants().unwrap();
}

fn a_refused_unmap_in_page_alloc_is_counted() {
    let layout = Layout::from_size_align(64 << 10, 8).unwrap();
    let before = pymalloc_vmm::stats();
    // SAFETY: a valid layout; the block is freed below with the layout it has then.
    unsafe {
        let p = PageAlloc.alloc(layout);
        assert!(!p.is_null());
        p.write_bytes(7, layout.size());
        // Shrinking drops the tail pages; refused, they stay mapped and counted.
        let q = refusing(|| PageAlloc.realloc(p, layout, 4096));
        assert_eq!(q, p);
        assert_eq!(*q.add(4095), 7);
        let vm = pymalloc_vmm::stats();
        assert_eq!(vm.failed_unmap_calls, before.failed_unmap_calls + 1);
        assert_eq!(
            vm.failed_unmap_bytes,
            before.failed_unmap_bytes + (60 << 10)
        );
        PageAlloc.dealloc(q, Layout::from_size_align(4096, 8).unwrap());
    }
}
