//! After everything built is dropped (and the free lists cleared), pymalloc's blocks in use
//! return to where they were: every reference count reached zero and every block went back.
//! One test in this binary, so no other thread allocates objects beside it.

use pymalloc_objects::{Dict, Int, List, Obj, Str, allocator, clear_free_lists};

fn in_use() -> usize {
    clear_free_lists();
    let s = allocator().stats();
    s.blocks_in_use() + s.large_blocks
}

/// A tangle of every type: lists of dicts of lists, big ints, strings, shared references.
fn build(n: i64) -> List {
    let root = List::new();
    let shared = Str::new("shared between many containers");
    for i in 0..n {
        let d = Dict::new();
        d.set(Int::new(i), Int::from_i128(i128::from(i) << 90))
            .unwrap();
        d.set(Str::new(&format!("key{i}")), shared.clone()).unwrap();
        d.set(
            shared.clone(),
            List::from_objs((0..i % 7).map(|k| Int::new(k * 1000).into_obj())),
        )
        .unwrap();
        if i % 3 == 0 {
            d.remove(&Int::new(i).into_obj()).unwrap();
        }
        let inner = List::new();
        inner.append(d);
        inner.append(Int::new(i).mul(&Int::new(i)));
        root.append(inner);
        if i % 5 == 0 {
            root.pop().unwrap();
        }
    }
    root
}

#[test]
fn every_block_comes_back() {
    // Create the small ints (cached for good, as in CPython) and anything lazily made once,
    // then take the baseline.
    for i in -5..=256 {
        drop(Int::new(i));
    }
    drop(build(10));
    let base = in_use();
    for round in 0..3 {
        let r = build(2000);
        assert!(in_use() > base + 2000, "round {round}");
        let copy: Obj = r.clone().into();
        drop(r);
        drop(copy);
        assert_eq!(in_use(), base, "round {round}: blocks left behind");
    }
    // A dict grown large and cleared, a list grown and popped empty.
    let d = Dict::new();
    for i in 0..5000 {
        d.set(Int::new(i), Str::new("v")).unwrap();
    }
    d.clear();
    let l = List::new();
    for i in 0..5000 {
        l.append(Int::new(i));
    }
    while l.pop().is_ok() {}
    drop((d, l));
    assert_eq!(in_use(), base);
    allocator().check_invariants().unwrap();
}
