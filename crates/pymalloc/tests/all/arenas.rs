//! Arena policy: new pools come from the fullest usable arena, wholly free arenas go back to
//! the OS (except the one kept against thrashing), and `owns` tracks it all.

use super::*;
use pymalloc::Py310;

/// Fills whole arenas with blocks of the largest class and returns them grouped per arena.
fn fill_arenas(a: &PyMalloc<RawMalloc, Py310>, n: usize) -> Vec<Vec<*mut u8>> {
    let layout = Layout::from_size_align(512, 16).unwrap();
    let per_arena = Py310::MAX_POOLS_IN_ARENA * Py310::blocks_per_pool(31);
    let blocks: Vec<*mut u8> = (0..n * per_arena)
        .map(|_| alloc_checked(a, layout))
        .collect();
    let mut by_arena: Vec<Vec<*mut u8>> = Vec::new();
    for b in blocks {
        let base = b as usize & !(Py310::ARENA_SIZE - 1);
        match by_arena
            .iter_mut()
            .find(|v| v[0] as usize & !(Py310::ARENA_SIZE - 1) == base)
        {
            Some(v) => v.push(b),
            None => by_arena.push(vec![b]),
        }
    }
    assert_eq!(
        by_arena.len(),
        n,
        "blocks of the largest class fill arenas exactly"
    );
    assert!(by_arena.iter().all(|v| v.len() == per_arena));
    by_arena
}

/// Frees `pools` whole pools' worth of blocks from an arena's list (blocks are grouped by pool
/// in allocation order).
fn free_pools(a: &PyMalloc<RawMalloc, Py310>, blocks: &mut Vec<*mut u8>, pools: usize) {
    let layout = Layout::from_size_align(512, 16).unwrap();
    for _ in 0..pools * Py310::blocks_per_pool(31) {
        let b = blocks.pop().unwrap();
        // SAFETY: live block freed once with its layout.
        unsafe { a.dealloc(b, layout) };
    }
}

fn arena_of(p: *mut u8) -> usize {
    p as usize & !(Py310::ARENA_SIZE - 1)
}

#[test]
fn new_pools_come_from_the_fullest_arena() {
    let a = fresh::<Py310>();
    let mut arenas = fill_arenas(&a, 3);
    assert_eq!(a.stats().arenas_current, 3);
    free_pools(&a, &mut arenas[0], 10);
    free_pools(&a, &mut arenas[1], 5);
    a.check_invariants().unwrap();
    // A request of another class needs a fresh pool: the arena with 5 free pools is fuller
    // than the one with 10.
    let small = Layout::from_size_align(16, 16).unwrap();
    let p = alloc_checked(&*a, small);
    assert_eq!(arena_of(p), arena_of(arenas[1][0]));
    // An arena with a single free pool is fuller still.
    free_pools(&a, &mut arenas[2], 1);
    let q = alloc_checked(&*a, Layout::from_size_align(32, 16).unwrap());
    assert_eq!(arena_of(q), arena_of(arenas[2][0]));
    a.check_invariants().unwrap();
    // SAFETY: live blocks freed once.
    unsafe {
        a.dealloc(p, small);
        a.dealloc(q, Layout::from_size_align(32, 16).unwrap());
    }
    for mut v in arenas {
        let n = v.len() / Py310::blocks_per_pool(31);
        free_pools(&a, &mut v, n);
    }
    a.check_invariants().unwrap();
}

#[test]
fn wholly_free_arenas_go_back_to_the_os() {
    let a = fresh::<Py310>();
    let mut arenas = fill_arenas(&a, 4);
    let first = arena_of(arenas[0][0]);
    assert!(a.owns(first as *const u8));
    let per_arena = arenas[0].len() / Py310::blocks_per_pool(31);
    // The emptiest arena, once wholly free, is kept (CPython bpo-37257) ...
    free_pools(&a, &mut arenas[3], per_arena);
    let s = a.stats();
    assert_eq!((s.arenas_current, s.arenas_reclaimed), (4, 0));
    // ... but a second wholly free arena goes back to the OS at once.
    free_pools(&a, &mut arenas[0], per_arena);
    let s = a.stats();
    assert_eq!(
        (s.arenas_current, s.arenas_reclaimed, s.arenas_highwater),
        (3, 1, 4)
    );
    assert!(
        !a.owns(first as *const u8),
        "a released arena is no longer ours"
    );
    a.check_invariants().unwrap();
    for v in arenas.iter_mut().take(3).skip(1) {
        let n = v.len() / Py310::blocks_per_pool(31);
        free_pools(&a, v, n);
    }
    let s = a.stats();
    assert_eq!(
        s.arenas_current, 1,
        "the last free arena is kept (CPython bpo-37257)"
    );
    assert_eq!(s.unused_pools, Py310::MAX_POOLS_IN_ARENA);
    // Reusing it maps nothing new.
    let p = alloc_checked(&*a, Layout::from_size_align(8, 8).unwrap());
    assert_eq!(a.stats().arenas_allocated_total, 4);
    // SAFETY: live block freed once.
    unsafe { a.dealloc(p, Layout::from_size_align(8, 8).unwrap()) };
    assert_eq!(a.trim(), 1);
    let s = a.stats();
    assert_eq!((s.arenas_current, s.total_arena_bytes), (0, 0));
    a.check_invariants().unwrap();
}

#[test]
fn an_emptied_pool_is_reused_for_its_class_without_reinitialising() {
    let a = fresh::<Py310>();
    let l = Layout::from_size_align(48, 16).unwrap();
    let keep = alloc_checked(&*a, Layout::from_size_align(16, 16).unwrap()); // keeps the arena
    let p = alloc_checked(&*a, l);
    // SAFETY: live block freed once; the pool is now empty and back on its arena.
    unsafe { a.dealloc(p, l) };
    assert_eq!(a.stats().classes()[2].pools, 0);
    let q = alloc_checked(&*a, l);
    assert_eq!(q, p, "same pool, same first free block");
    // SAFETY: live blocks freed once.
    unsafe {
        a.dealloc(q, l);
        a.dealloc(keep, Layout::from_size_align(16, 16).unwrap());
    }
    a.check_invariants().unwrap();
}

#[test]
fn dropping_the_allocator_unmaps_its_arenas() {
    let before = pymalloc_vmm::stats();
    let a = fresh::<Py310>();
    let _leaked = fill_arenas(&a, 2);
    drop(a);
    let after = pymalloc_vmm::stats();
    // Other tests map concurrently, so compare call counts rather than levels: every arena,
    // the arena table, the map root and its leaf were unmapped.
    assert!(after.unmap_calls >= before.unmap_calls + 5);
}

#[test]
fn the_arena_table_grows_past_its_first_sixteen_entries() {
    // CPython's INITIAL_ARENA_OBJECTS is 16; 40 arenas make the table double twice.
    let a = fresh::<Py310>();
    let mut arenas = fill_arenas(&a, 40);
    a.check_invariants().unwrap();
    let s = a.stats();
    assert_eq!(
        (s.arenas_current, s.classes()[31].blocks_in_use),
        (40, 40 * 64 * 31)
    );
    // Empty every other arena, then refill: released slots are recycled for new arenas.
    let per_arena = Py310::MAX_POOLS_IN_ARENA;
    for v in arenas.iter_mut().step_by(2) {
        free_pools(&a, v, per_arena);
    }
    a.check_invariants().unwrap();
    assert!(a.stats().arenas_current <= 21);
    let again = fill_arenas(&a, 19);
    a.check_invariants().unwrap();
    assert!(a.stats().arenas_allocated_total > 40);
    for mut v in arenas.into_iter().chain(again) {
        let n = v.len() / Py310::blocks_per_pool(31);
        free_pools(&a, &mut v, n);
    }
    a.trim();
    assert_eq!(a.stats().arenas_current, 0);
    a.check_invariants().unwrap();
}
