//! `realloc` keeps contents growing and shrinking, within a class, across classes and across
//! the threshold in both directions, and stays in place where CPython would.

use super::*;
use pymalloc::{Py37, Py310};

/// Reallocates `p` (holding `id`'s pattern over `old.size()` bytes) to `new_size`, checks the
/// kept prefix, refills, and returns the new block and layout.
fn step<G: Geometry>(
    a: &PyMalloc<RawMalloc, G>,
    p: *mut u8,
    old: Layout,
    new_size: usize,
    id: u64,
) -> (*mut u8, Layout) {
    // SAFETY: `p` is live with layout `old`; `new_size` is non-zero.
    let q = unsafe { a.realloc(p, old, new_size) };
    assert!(!q.is_null(), "realloc {} -> {new_size}", old.size());
    assert_eq!(q as usize % old.align(), 0);
    let kept = old.size().min(new_size);
    // SAFETY: `q` holds at least `kept` bytes carried over.
    unsafe { verify(q, kept, id) }
        .unwrap_or_else(|off| panic!("realloc {} -> {new_size} lost byte {off}", old.size()));
    // SAFETY: `q` has `new_size` bytes.
    unsafe { fill(q, new_size, id) };
    let small = G::class_for(new_size, old.align()).is_some();
    assert_eq!(a.owns(q), small, "block of {new_size} in the wrong layer");
    a.check_invariants().unwrap();
    (q, Layout::from_size_align(new_size, old.align()).unwrap())
}

fn walk<G: Geometry>(align: usize) {
    let a = fresh::<G>();
    let t = G::SMALL_REQUEST_THRESHOLD;
    let path = [
        1,
        G::ALIGNMENT - 1, // within class 0
        G::ALIGNMENT + 1, // class 1
        t / 2,            // across classes
        t,                // the last class
        t + 1,            // over the threshold: into layer +1
        10 * t,           // grows inside layer +1
        t,                // back under the threshold: into a pool
        3,                // shrinks across classes
        70_000,           // straight to a large block
        1,                // and straight back
    ];
    let id = 42;
    let mut layout = Layout::from_size_align(path[0], align).unwrap();
    let mut p = alloc_checked(&*a, layout);
    // SAFETY: fresh block.
    unsafe { fill(p, layout.size(), id) };
    for &n in &path[1..] {
        (p, layout) = step(&a, p, layout, n, id);
    }
    // SAFETY: live, freed once.
    unsafe { a.dealloc(p, layout) };
    let s = a.stats();
    assert_eq!((s.blocks_in_use(), s.large_blocks), (0, 0));
}

#[test]
fn contents_survive_every_kind_of_move() {
    for align in [1, 8, 16, 64, 4096] {
        walk::<Py310>(align);
        walk::<Py37>(align);
    }
}

#[test]
fn in_place_rules_follow_cpython() {
    let a = fresh::<Py310>();
    let l = |n| Layout::from_size_align(n, 8).unwrap();
    let p = alloc_checked(&*a, l(112));
    // SAFETY: every pointer is live with the layout passed; each is given up once.
    unsafe {
        // CPython 3.11-3.13 keep a 112-byte block in place when shrunk to 85, move it at 84.
        let q = a.realloc(p, l(112), 85);
        assert_eq!(q, p, "112 -> 85 stays");
        let r = a.realloc(q, l(85), 84);
        assert_ne!(r, q, "85 (in a 112 block) -> 84 moves to the 96 class");
        // Growing within the class stays.
        let s = a.realloc(r, l(84), 96);
        assert_eq!(s, r);
        // Growing out of the class moves.
        let t = a.realloc(s, l(96), 97);
        assert_ne!(t, s);
        a.dealloc(t, l(97));
    }
    assert_eq!(a.stats().blocks_in_use(), 0);
}
