//! Arena policy: new pools come from the fullest usable arena, wholly free arenas go back to
//! the OS (except the one kept against thrashing), and `owns` tracks it all.

use super::*;
use pymalloc::Py310;

/// The largest class of `G`, and a layout of its block size.
fn last_class<G: Geometry>() -> (usize, Layout) {
    let layout = Layout::from_size_align(G::SMALL_REQUEST_THRESHOLD, G::ALIGNMENT).unwrap();
    (G::NB_SMALL_SIZE_CLASSES - 1, layout)
}

/// Fills whole arenas with blocks of the largest class and returns them grouped per arena.
fn fill_arenas<G: Geometry>(a: &PyMalloc<RawMalloc, G>, n: usize) -> Vec<Vec<*mut u8>> {
    let (class, layout) = last_class::<G>();
    let per_arena = G::MAX_POOLS_IN_ARENA * G::blocks_per_pool(class);
    let blocks: Vec<*mut u8> = (0..n * per_arena)
        .map(|_| alloc_checked(a, layout))
        .collect();
    let mut by_arena: Vec<Vec<*mut u8>> = Vec::new();
    for b in blocks {
        match by_arena
            .iter_mut()
            .find(|v| arena_of::<G>(v[0]) == arena_of::<G>(b))
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
fn free_pools<G: Geometry>(a: &PyMalloc<RawMalloc, G>, blocks: &mut Vec<*mut u8>, pools: usize) {
    let (class, layout) = last_class::<G>();
    for _ in 0..pools * G::blocks_per_pool(class) {
        let b = blocks.pop().unwrap();
        // SAFETY: live block freed once with its layout.
        unsafe { a.dealloc(b, layout) };
    }
}

fn arena_of<G: Geometry>(p: *mut u8) -> usize {
    p as usize & !(G::ARENA_SIZE - 1)
}

#[test]
fn new_pools_come_from_the_fullest_arena() {
    let a = fresh::<Py310>();
    let mut arenas = fill_arenas(&a, 3);
    assert_eq!(a.stats().arenas_current, 3);
    free_pools(&a, &mut arenas[0], 10);
    free_pools(&a, &mut arenas[1], 5);
    free_pools(&a, &mut arenas[2], 1);
    // Hand back the class's kept empty pool, so the arenas hold exactly 10, 5 and 1 free pools.
    assert_eq!(a.trim(), 0);
    a.check_invariants().unwrap();
    // Requests of other classes each need a fresh pool: they come from the arena with the
    // fewest free pools, which empties it of free pools ...
    let l = |n| Layout::from_size_align(n, 16).unwrap();
    let p = alloc_checked(&*a, l(16));
    assert_eq!(
        arena_of::<Py310>(p),
        arena_of::<Py310>(arenas[2][0]),
        "1 free pool beats 5 and 10"
    );
    // ... so the next come from the arena with 5, then 4, ... before the one with 10.
    let more: Vec<_> = (1..=5)
        .map(|k| alloc_checked(&*a, l(16 * (k + 1))))
        .collect();
    assert!(
        more.iter()
            .all(|&q| arena_of::<Py310>(q) == arena_of::<Py310>(arenas[1][0]))
    );
    let r = alloc_checked(&*a, l(16 * 7));
    assert_eq!(arena_of::<Py310>(r), arena_of::<Py310>(arenas[0][0]));
    a.check_invariants().unwrap();
    // SAFETY: live blocks freed once with their layouts.
    unsafe {
        a.dealloc(p, l(16));
        for (k, q) in more.into_iter().enumerate() {
            a.dealloc(q, l(16 * (k + 2)));
        }
        a.dealloc(r, l(16 * 7));
    }
    for mut v in arenas {
        let n = v.len() / Py310::blocks_per_pool(31);
        free_pools(&a, &mut v, n);
    }
    a.trim();
    assert_eq!(a.stats().arenas_current, 0);
    a.check_invariants().unwrap();
}

#[test]
fn wholly_free_arenas_go_back_to_the_os() {
    let a = fresh::<Py310>();
    let mut arenas = fill_arenas(&a, 4);
    let first = arena_of::<Py310>(arenas[0][0]);
    assert!(a.owns(std::ptr::without_provenance(first)));
    let per_arena = arenas[0].len() / Py310::blocks_per_pool(31);
    // The emptiest arena, once wholly free, is kept (CPython bpo-37257) ...
    free_pools(&a, &mut arenas[3], per_arena);
    let s = a.stats();
    assert_eq!((s.arenas_current, s.arenas_reclaimed), (4, 0));
    // ... but a second wholly free arena goes back to the OS at once. Arena 0's last pool is
    // its class's only pool when it empties, yet it is not kept: that would pin the arena.
    free_pools(&a, &mut arenas[0], per_arena);
    let s = a.stats();
    assert_eq!(
        (s.arenas_current, s.arenas_reclaimed, s.arenas_highwater),
        (3, 1, 4)
    );
    assert!(
        !a.owns(std::ptr::without_provenance(first)),
        "a released arena is no longer ours"
    );
    a.check_invariants().unwrap();
    for v in arenas.iter_mut().take(3).skip(1) {
        let layout = Layout::from_size_align(512, 16).unwrap();
        for b in v.drain(..) {
            // SAFETY: live block freed once with its layout.
            unsafe { a.dealloc(b, layout) };
        }
    }
    let s = a.stats();
    assert_eq!(s.blocks_in_use(), 0);
    // Kept: only the emptiest free arena (CPython bpo-37257).
    assert_eq!(s.arenas_current, 1);
    // Reusing them maps nothing new.
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
fn a_lone_alloc_free_pair_keeps_its_pool() {
    let a = fresh::<Py310>();
    let l = Layout::from_size_align(48, 16).unwrap();
    let keep = alloc_checked(&*a, Layout::from_size_align(16, 16).unwrap()); // keeps the arena
    let p = alloc_checked(&*a, l);
    // SAFETY: live block freed once.
    unsafe { a.dealloc(p, l) };
    let c = a.stats().classes()[2];
    assert_eq!(
        (c.pools, c.blocks_in_use),
        (1, 0),
        "the class keeps its only pool, empty"
    );
    let q = alloc_checked(&*a, l);
    assert_eq!(q, p, "same pool, same first free block");
    // SAFETY: live block freed once.
    unsafe { a.dealloc(q, l) };
    // trim() hands the kept pool back to its arena ...
    a.trim();
    assert_eq!(a.stats().classes()[2].pools, 0);
    a.check_invariants().unwrap();
    // ... and gives its pages back; the class gets the same pool again, re-initialised.
    let r = alloc_checked(&*a, l);
    assert_eq!(r, p);
    // SAFETY: live blocks freed once.
    unsafe {
        a.dealloc(r, l);
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

/// CPython's INITIAL_ARENA_OBJECTS is 16; 40 arenas make the table double twice.
fn table_growth<G: Geometry>() {
    let a = fresh::<G>();
    let (class, _) = last_class::<G>();
    let mut arenas = fill_arenas(&a, 40);
    a.check_invariants().unwrap();
    let s = a.stats();
    assert_eq!(
        (s.arenas_current, s.classes()[class].blocks_in_use),
        (40, 40 * G::MAX_POOLS_IN_ARENA * G::blocks_per_pool(class))
    );
    // Empty every other arena, then refill: released slots are recycled for new arenas.
    for v in arenas.iter_mut().step_by(2) {
        free_pools(&a, v, G::MAX_POOLS_IN_ARENA);
    }
    a.check_invariants().unwrap();
    // 20 full arenas, the kept wholly free arena, and the arena of the kept empty pool.
    assert!(a.stats().arenas_current <= 22);
    let again = fill_arenas(&a, 19);
    a.check_invariants().unwrap();
    assert!(a.stats().arenas_allocated_total > 40);
    for mut v in arenas.into_iter().chain(again) {
        let n = v.len() / G::blocks_per_pool(class);
        free_pools(&a, &mut v, n);
    }
    a.trim();
    assert_eq!(a.stats().arenas_current, 0);
    a.check_invariants().unwrap();
}

#[test]
#[cfg_attr(
    miri,
    ignore = "fills 40 MiB block by block: hours under Miri, where the Tiny version runs"
)]
fn the_arena_table_grows_past_its_first_sixteen_entries() {
    table_growth::<Py310>();
}

#[test]
fn the_arena_table_grows_past_its_first_sixteen_entries_tiny() {
    table_growth::<Tiny>();
}

/// One arena's worth of pools for each class, then a free-all.
fn one_arena_per_class_then_free_all<G: Geometry>() -> Box<PyMalloc<RawMalloc, G>> {
    let a = fresh::<G>();
    let mut live = Vec::new();
    for class in 0..G::NB_SMALL_SIZE_CLASSES {
        let l = Layout::from_size_align(G::class_size(class), G::ALIGNMENT).unwrap();
        for _ in 0..G::MAX_POOLS_IN_ARENA * G::blocks_per_pool(class) {
            live.push((alloc_checked(&*a, l), l));
        }
    }
    assert!(a.stats().arenas_current >= G::NB_SMALL_SIZE_CLASSES);
    for (p, l) in live.drain(..) {
        // SAFETY: live blocks freed once with their layouts.
        unsafe { a.dealloc(p, l) };
    }
    a.check_invariants().unwrap();
    assert_eq!(a.stats().blocks_in_use(), 0);
    a
}

/// No class's kept empty pool pins its arena: every arena but one goes back to the OS without
/// `trim()`.
#[test]
fn a_free_all_leaves_at_most_one_arena() {
    fn check<G: Geometry>() {
        let n = one_arena_per_class_then_free_all::<G>()
            .stats()
            .arenas_current;
        assert!(
            n <= 1,
            "{}: {n} arenas stay mapped with no block in use",
            G::NAME
        );
    }
    check::<Tiny>();
    if !cfg!(miri) {
        check::<Py310>();
    }
}

/// `trim()` returns exactly the number of arenas it released.
#[test]
fn trim_counts_what_it_releases() {
    fn check<G: Geometry>() {
        let a = one_arena_per_class_then_free_all::<G>();
        let before = a.stats().arenas_current;
        let released = a.trim();
        let after = a.stats().arenas_current;
        assert_eq!((released, after), (before - after, 0), "{}", G::NAME);
        a.check_invariants().unwrap();
    }
    check::<Tiny>();
    if !cfg!(miri) {
        check::<Py310>();
    }
}

/// Kept empty pools of several classes share an arena with one busy pool: when that pool
/// empties, they all go back with it and the arena can be released.
#[test]
fn kept_pools_go_back_with_the_last_busy_pool_of_their_arena() {
    let a = fresh::<Py310>();
    let l = |class: usize| Layout::from_size_align(Py310::class_size(class), 16).unwrap();
    // A first arena full of class-31 blocks, so that the next one is not the only arena.
    let mut full: Vec<_> = fill_arenas(&a, 1).pop().unwrap();
    let anchor = alloc_checked(&*a, l(30));
    // Classes 0..8 each get a pool in the anchor's arena, then empty it: kept, since the
    // anchor's pool is in use.
    for class in 0..8 {
        let p = alloc_checked(&*a, l(class));
        assert_eq!(arena_of::<Py310>(p), arena_of::<Py310>(anchor));
        // SAFETY: live block freed once with its layout.
        unsafe { a.dealloc(p, l(class)) };
        assert_eq!(
            a.stats().classes()[class].pools,
            1,
            "class {class} keeps its pool"
        );
    }
    a.check_invariants().unwrap();
    // SAFETY: live block freed once with its layout.
    unsafe { a.dealloc(anchor, l(30)) };
    let s = a.stats();
    assert!(
        s.classes()[..8].iter().all(|c| c.pools == 0),
        "the kept pools went back with the anchor's"
    );
    assert_eq!(
        s.unused_pools,
        Py310::MAX_POOLS_IN_ARENA,
        "the anchor's arena is wholly free"
    );
    a.check_invariants().unwrap();
    let n = full.len() / Py310::blocks_per_pool(31);
    free_pools(&a, &mut full, n);
    let s = a.stats();
    assert_eq!((s.blocks_in_use(), s.arenas_current), (0, 1));
}

/// Two kept pools must not vouch for each other. Pools K and W of one arena (not the only
/// one) each become keepable while the other is in use; then both empty. Whatever the order,
/// once neither holds a block neither may stay kept: the arena holds nothing of this heap, and
/// kept pools there would keep it mapped. (A class's approval once skipped the check of the
/// pool it relied on, and both stayed.)
#[test]
fn two_kept_pools_do_not_vouch_for_each_other() {
    let a = fresh::<Py310>();
    let mut first = fill_arenas(&a, 1); // a full arena, then a second for K and W
    let (lk, lw) = (
        Layout::from_size_align(16, 16).unwrap(),
        Layout::from_size_align(32, 16).unwrap(),
    );
    let k = alloc_checked(&*a, lk);
    let w = alloc_checked(&*a, lw);
    assert_eq!(arena_of::<Py310>(k), arena_of::<Py310>(w));
    assert_ne!(arena_of::<Py310>(k), arena_of::<Py310>(first[0][0]));
    // SAFETY: each block below is a live block freed once with its layout.
    unsafe {
        a.dealloc(k, lk); // K kept: W is in use
        let k = alloc_checked(&*a, lk);
        a.dealloc(w, lw); // W kept: K is in use
        let w = alloc_checked(&*a, lw);
        a.dealloc(k, lk);
        a.dealloc(w, lw);
    }
    a.check_invariants().unwrap();
    let s = a.stats();
    assert_eq!((s.classes()[0].pools, s.classes()[1].pools), (0, 0));
    free_pools(&a, &mut first[0], Py310::MAX_POOLS_IN_ARENA);
    a.check_invariants().unwrap();
}

/// Builds `n` arenas' worth of blocks of the largest class and frees them all, `cycles` times.
fn build_and_free<G: Geometry>(a: &PyMalloc<RawMalloc, G>, n: usize, cycles: usize) {
    let (_, layout) = last_class::<G>();
    for _ in 0..cycles {
        for v in fill_arenas(a, n) {
            for b in v {
                // SAFETY: live block freed once with its layout.
                unsafe { a.dealloc(b, layout) };
            }
        }
        a.check_invariants().unwrap();
    }
}

#[test]
fn a_build_and_free_cycle_stops_mapping_arenas() {
    // Four arenas built and freed over and over. CPython's rule alone unmaps three arenas at
    // every free-all and maps them again at the next build; the retention policy sees the
    // memory wanted back at once and keeps them.
    let a = fresh::<Py310>();
    build_and_free(&*a, 4, 4);
    let s = a.stats();
    assert!(s.retention_level >= 2, "level {}", s.retention_level);
    assert_eq!((s.arenas_current, s.arenas_wholly_free), (4, 4));
    let mapped = s.arenas_allocated_total;
    build_and_free(&*a, 4, 8);
    let s = a.stats();
    assert_eq!(
        s.arenas_allocated_total, mapped,
        "no arena mapped again once the level is high enough"
    );
    assert_eq!(s.arenas_reclaimed, mapped - 4);
    // trim() gives every wholly free arena back and starts the policy over.
    assert_eq!(a.trim(), 4);
    let s = a.stats();
    assert_eq!((s.arenas_current, s.retention_level), (0, 0));
    a.check_invariants().unwrap();
}

#[test]
fn a_single_free_all_keeps_one_arena_and_a_calm_lowers_the_level() {
    let a = fresh::<Py310>();
    // Built once and freed: nothing was wanted back, so CPython's rule holds exactly.
    build_and_free(&*a, 6, 1);
    let s = a.stats();
    assert_eq!((s.retention_level, s.arenas_current), (0, 1));
    // Small cycles raise the level ...
    build_and_free(&*a, 3, 3);
    let raised = a.stats().retention_level;
    assert!(raised > 0);
    // ... and a long calm (a live set growing over 40 arenas: nothing given back is wanted
    // again for more than 32 arenas' worth of pool takes) steps it down by one; the arenas it
    // no longer allows go back to the OS.
    build_and_free(&*a, 40, 1);
    let s = a.stats();
    assert_eq!(s.retention_level, raised - 1);
    assert!(s.arenas_wholly_free <= 1 << s.retention_level);
    a.check_invariants().unwrap();
}

#[test]
fn a_raised_level_still_decommits_past_its_budget() {
    // At the top level the arenas may hold 7 arenas' worth of dirty free pools. A live set of
    // 28 arenas freed but for one pool in each (no arena can go back) leaves 28 * 63 dirty
    // pools: all but the budget (and a batch per arena) must be decommitted.
    let a = fresh::<Py310>();
    build_and_free(&*a, 5, 5);
    assert_eq!(a.stats().retention_level, 3);
    let before = a.stats().pools_decommitted;
    let mut arenas = fill_arenas(&*a, 28);
    let per_arena = Py310::MAX_POOLS_IN_ARENA;
    for v in &mut arenas {
        free_pools(&*a, v, per_arena - 1);
    }
    let s = a.stats();
    let dirty = 28 * (per_arena - 1) - (s.pools_decommitted - before);
    assert!(
        dirty <= 7 * per_arena + 28 * 16,
        "{dirty} dirty free pools stay committed (level {})",
        s.retention_level
    );
    a.check_invariants().unwrap();
    let (_, layout) = last_class::<Py310>();
    for v in arenas {
        for b in v {
            // SAFETY: live block freed once with its layout.
            unsafe { a.dealloc(b, layout) };
        }
    }
    a.check_invariants().unwrap();
}

#[test]
fn retention_never_keeps_more_than_eight_wholly_free_arenas() {
    // Cycles of 12 arenas: the level goes to its top (3), which keeps 7 arenas besides
    // CPython's one; the other four are unmapped at every free-all.
    let a = fresh::<Py310>();
    build_and_free(&*a, 12, 6);
    let s = a.stats();
    assert_eq!(s.retention_level, 3);
    assert_eq!((s.arenas_current, s.arenas_wholly_free), (8, 8));
    a.check_invariants().unwrap();
}
