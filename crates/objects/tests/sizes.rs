//! `getsizeof`, `getrefcount` and growth against the figures python3.11 gives for the same
//! values (measured on the project's machine, recorded in docs/OBJECTS.md).

use pymalloc_objects::{Dict, Int, List, Obj, Str, getrefcount, getsizeof, id};

fn ints(n: i64) -> impl Iterator<Item = Obj> {
    (0..n).map(|i| Int::new(i).into_obj())
}

#[test]
fn int_sizes_follow_cpython_3_11() {
    for (v, size) in [
        (0i128, 28),
        (1, 28),
        (-1, 28),
        (1 << 30, 32),
        (1 << 100, 40),
    ] {
        assert_eq!(getsizeof(&Int::from_i128(v)), size, "{v}");
    }
    let big = Int::parse("1267650600228229401496703205376").unwrap();
    assert_eq!(big.to_i128(), Some(1 << 100));
    assert_eq!(getsizeof(&big), 40);
}

#[test]
fn str_sizes_are_cpython_3_12s() {
    // CPython 3.11 adds 8 (its `wstr` pointer): 49, 52, 149.
    assert_eq!(getsizeof(&Str::new("")), 41);
    assert_eq!(getsizeof(&Str::new("abc")), 44);
    assert_eq!(getsizeof(&Str::new(&"a".repeat(100))), 141);
}

#[test]
fn list_sizes_follow_cpython_3_11() {
    assert_eq!(getsizeof(&List::new()), 56);
    let l = List::from_objs(ints(2));
    assert_eq!(getsizeof(&l), 72);
    l.append(Int::new(3));
    assert_eq!(getsizeof(&l), 120);
    // Appending to [] one at a time (python3.11: 88 for 1-4 items, 120 for 5-8, 184 for
    // 9-16, 248 for 17-24).
    let l = List::new();
    let mut seen = Vec::new();
    for i in 0..21 {
        l.append(Int::new(i));
        seen.push(getsizeof(&l));
    }
    let want: Vec<usize> = (1..=21)
        .map(|n| match n {
            1..=4 => 88,
            5..=8 => 120,
            9..=16 => 184,
            _ => 248,
        })
        .collect();
    assert_eq!(seen, want);
}

#[test]
fn dict_sizes_follow_cpython_3_11_for_int_keys() {
    let d = Dict::new();
    assert_eq!(getsizeof(&d), 64);
    let mut seen = Vec::new();
    for i in 0..21 {
        d.set(Int::new(i), Int::new(i)).unwrap();
        seen.push(getsizeof(&d));
    }
    // python3.11, int keys inserted one at a time: 224 for 1-5 items, 352 for 6-10, 632 for
    // 11-21.
    let want: Vec<usize> = (1..=21)
        .map(|n| match n {
            1..=5 => 224,
            6..=10 => 352,
            _ => 632,
        })
        .collect();
    assert_eq!(seen, want);
    let ten = Dict::new();
    for i in 0..10 {
        ten.set(Int::new(i), Int::new(i)).unwrap();
    }
    assert_eq!(getsizeof(&ten), 352);
}

#[test]
fn refcounts_follow_sys_getrefcount() {
    // `x = []; sys.getrefcount(x)` is 2; after `y = x`, 3.
    let x = List::new();
    assert_eq!(getrefcount(&x), 2);
    let y = x.clone();
    assert_eq!(getrefcount(&x), 3);
    assert_eq!(id(&x), id(&y));
    drop(y);
    assert_eq!(getrefcount(&x), 2);
    // The small int 1 is one shared object.
    let a = Int::new(1);
    let before = getrefcount(&a);
    let b = Int::new(1);
    assert_eq!(id(&a), id(&b));
    assert_eq!(getrefcount(&a), before + 1);
    // 257 is not cached: two objects.
    assert_ne!(id(&Int::new(257)), id(&Int::new(257)));
}
