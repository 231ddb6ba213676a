//! Every type against a model: Int against i128 and big-number identities, Str hashing and
//! interning, List against `Vec`, Dict against an insertion-ordered map; free-list caps and
//! `clear_free_lists()`.

use proptest::prelude::*;
use pymalloc_objects::{
    Dict, Error, INT_FREELIST_CAP, Int, LIST_FREELIST_CAP, List, Obj, Str, clear_free_lists,
    free_list_stats, getrefcount,
};

fn int_of(o: &Obj) -> i128 {
    Int::cast(o).expect("an int").to_i128().expect("fits")
}

proptest! {
    #[test]
    fn int_arithmetic_matches_i128(a in any::<i64>(), b in any::<i64>()) {
        let (x, y) = (Int::new(a), Int::new(b));
        let (a, b) = (i128::from(a), i128::from(b));
        prop_assert_eq!(x.add(&y).to_i128(), Some(a + b));
        prop_assert_eq!(x.sub(&y).to_i128(), Some(a - b));
        prop_assert_eq!(x.mul(&y).to_i128(), Some(a * b));
        prop_assert_eq!(x.neg().to_i128(), Some(-a));
        prop_assert_eq!(x.compare(&y), a.cmp(&b));
        prop_assert_eq!(x.to_string(), a.to_string());
        prop_assert_eq!(Int::parse(&a.to_string()).unwrap().to_i128(), Some(a));
        prop_assert_eq!(x.equals(&Int::from_i128(a)), Ok(true));
    }

    #[test]
    fn big_ints_obey_the_identities(a in any::<i128>(), b in any::<i128>(), c in any::<i64>()) {
        // (a*b)*c == a*(b*c), (a+b)*c == a*c + b*c, (a*b) - (a*b) == 0, all far beyond i128.
        let (x, y, z) = (Int::from_i128(a), Int::from_i128(b), Int::new(c));
        prop_assert!(x.mul(&y).mul(&z).eq_value(&x.mul(&y.mul(&z))));
        prop_assert!(x.add(&y).mul(&z).eq_value(&x.mul(&z).add(&y.mul(&z))));
        prop_assert_eq!(x.mul(&y).sub(&x.mul(&y)).to_i128(), Some(0));
        let p = x.mul(&y);
        prop_assert_eq!(Int::parse(&p.to_string()).unwrap().compare(&p), core::cmp::Ordering::Equal);
    }

    #[test]
    fn list_matches_vec(ops in prop::collection::vec((0u8..5, any::<i32>(), 0usize..40), 0..200)) {
        let l = List::new();
        let mut v: Vec<i128> = Vec::new();
        for (op, x, i) in ops {
            match op {
                0 | 1 => { l.append(Int::new(x.into())); v.push(x.into()); }
                2 => {
                    let got = l.pop().ok().map(|o| int_of(&o));
                    prop_assert_eq!(got, v.pop());
                }
                3 => {
                    let i = i.min(v.len());
                    l.insert(i, Int::new(x.into()));
                    v.insert(i, x.into());
                }
                _ => {
                    let r = l.set(i, Int::new(x.into()));
                    if i < v.len() { v[i] = x.into(); prop_assert!(r.is_ok()); }
                    else { prop_assert_eq!(r, Err(Error::Index("list assignment index out of range"))); }
                }
            }
            prop_assert_eq!(l.len(), v.len());
            prop_assert!(l.allocated() >= l.len());
        }
        let got: Vec<i128> = l.to_vec().iter().map(int_of).collect();
        prop_assert_eq!(got, v);
    }

    #[test]
    fn dict_matches_an_ordered_map(ops in prop::collection::vec((0u8..4, 0i64..60), 0..300)) {
        let d = Dict::new();
        let mut m: Vec<(i64, i64)> = Vec::new(); // insertion-ordered model
        for (n, (op, k)) in ops.into_iter().enumerate() {
            let key: Obj = if k % 2 == 0 { Int::new(k).into() } else { Str::new(&format!("k{k}")).into() };
            match op {
                0 | 1 => {
                    d.set(key, Int::new(n as i64)).unwrap();
                    match m.iter_mut().find(|(mk, _)| *mk == k) {
                        Some(e) => e.1 = n as i64,
                        None => m.push((k, n as i64)),
                    }
                }
                2 => {
                    let got = d.remove(&key).ok().map(|o| int_of(&o) as i64);
                    let pos = m.iter().position(|(mk, _)| *mk == k);
                    prop_assert_eq!(got, pos.map(|p| m.remove(p).1));
                }
                _ => {
                    let got = d.get(&key).unwrap().map(|o| int_of(&o) as i64);
                    prop_assert_eq!(got, m.iter().find(|(mk, _)| *mk == k).map(|e| e.1));
                }
            }
            prop_assert_eq!(d.len(), m.len());
        }
        let order: Vec<String> = d.keys().iter().map(|k| k.repr().unwrap()).collect();
        let want: Vec<String> = m.iter().map(|(k, _)| if k % 2 == 0 { k.to_string() } else { format!("'k{k}'") }).collect();
        prop_assert_eq!(order, want);
    }
}

#[test]
fn int_hash_is_cpythons() {
    // python3.11: hash(2**100) == 549755813888, hash(-1) == -2, hash(2**61 - 1) == 0.
    assert_eq!(Int::from_i128(1 << 100).hash(), Ok(549_755_813_888));
    assert_eq!(Int::new(-1).hash(), Ok(-2));
    assert_eq!(Int::new((1 << 61) - 1).hash(), Ok(0));
    assert_eq!(Int::new(12345).hash(), Ok(12345));
}

#[test]
fn unhashable_types_give_cpythons_error() {
    let d = Dict::new();
    let e = d.set(List::new(), Int::new(1)).unwrap_err();
    assert_eq!(e.to_string(), "TypeError: unhashable type: 'list'");
    assert_eq!(
        Dict::new().hash().unwrap_err().to_string(),
        "TypeError: unhashable type: 'dict'"
    );
    assert_eq!(
        List::new().pop().unwrap_err().to_string(),
        "IndexError: pop from empty list"
    );
    assert_eq!(
        Int::parse("12a").unwrap_err().to_string(),
        "ValueError: invalid literal for int() with base 10: '12a'"
    );
}

#[test]
fn str_hash_is_cached_and_equal_strings_hash_equal() {
    let a = Str::new("hello");
    let b = Str::new("hello");
    assert!(!a.is(&b));
    assert_eq!(a.hash(), b.hash());
    assert_eq!(a.equals(&b), Ok(true));
    assert_ne!(a.hash(), Str::new("hellp").hash());
    assert_eq!(Str::new("é").len(), 1);
    assert_eq!(a.repr().unwrap(), "'hello'");
    assert_eq!(Str::new("it's").repr().unwrap(), "\"it's\"");
}

#[test]
fn interned_strings_are_one_object() {
    let a = Str::intern("identifier");
    let b = Str::intern(&String::from("identifier"));
    assert!(a.is(&b) && a.is_interned());
    assert!(!Str::new("identifier").is_interned());
    // The table holds one reference, plus a, b and the argument.
    assert_eq!(getrefcount(&a), 4);
}

#[test]
fn reprs() {
    let l = List::from_objs([
        Int::new(1).into_obj(),
        Str::new("a").into_obj(),
        List::new().into_obj(),
    ]);
    assert_eq!(l.repr().unwrap(), "[1, 'a', []]");
    l.append(l.clone());
    assert_eq!(l.repr().unwrap(), "[1, 'a', [], [...]]");
    l.clear(); // break the cycle (no collector yet)
    let d = Dict::new();
    d.set(Str::new("x"), Int::from_i128(-(1 << 100))).unwrap();
    assert_eq!(d.repr().unwrap(), "{'x': -1267650600228229401496703205376}");
    // A list and a dict holding each other (python3.11: [{1: [...]}] and {1: [{...}]}).
    let (l, d) = (List::new(), Dict::new());
    l.append(d.clone());
    d.set(Int::new(1), l.clone()).unwrap();
    assert_eq!(l.repr().unwrap(), "[{1: [...]}]");
    assert_eq!(d.repr().unwrap(), "{1: [{...}]}");
    l.clear();
}

#[test]
fn str_repr_escapes_what_python_escapes() {
    // python3.11: repr of each.
    for (s, want) in [
        ("\0", "'\\x00'"),
        ("\x7f", "'\\x7f'"),
        ("\u{85}", "'\\x85'"),
        ("\u{200b}", "'\\u200b'"),
        ("\x1b[31m", "'\\x1b[31m'"),
        ("é€😀", "'é€😀'"),
        ("a\\b\n", "'a\\\\b\\n'"),
        ("\u{3000}", "'\\u3000'"),
        ("\u{e0001}", "'\\U000e0001'"),
    ] {
        assert_eq!(Str::new(s).repr().unwrap(), want, "{s:?}");
    }
}

#[test]
fn nesting_past_the_recursion_limit_is_a_recursion_error() {
    // python3.11: RecursionError for both, no crash.
    let mut l = List::new();
    for _ in 0..100_000 {
        let outer = List::new();
        outer.append(l);
        l = outer;
    }
    assert_eq!(
        l.repr().unwrap_err().to_string(),
        "RecursionError: maximum recursion depth exceeded while getting the repr of an object"
    );
    // a = [a]; b = [b]; a == b
    let (a, b) = (List::new(), List::new());
    a.append(a.clone());
    b.append(b.clone());
    assert_eq!(
        a.equals(&b).unwrap_err().to_string(),
        "RecursionError: maximum recursion depth exceeded in comparison"
    );
    a.clear();
    b.clear();
    // Within the limit, nested reprs and comparisons work.
    let (mut x, mut y) = (List::new(), List::new());
    for _ in 0..500 {
        let (ox, oy) = (List::new(), List::new());
        ox.append(x);
        oy.append(y);
        (x, y) = (ox, oy);
    }
    assert_eq!(x.equals(&y), Ok(true));
    assert_eq!(x.repr().unwrap().len(), 1002);
}

#[test]
fn free_list_caps_and_clear() {
    clear_free_lists();
    let before = free_list_stats();
    let lists: Vec<List> = (0..LIST_FREELIST_CAP + 20).map(|_| List::new()).collect();
    drop(lists);
    let s = free_list_stats();
    assert_eq!(s.list.len, LIST_FREELIST_CAP);
    assert_eq!(s.list.frees_down - before.list.frees_down, 20);
    // The next lists come from the free list.
    let again: Vec<List> = (0..10).map(|_| List::new()).collect();
    assert_eq!(free_list_stats().list.hits - s.list.hits, 10);
    drop(again);
    let ints: Vec<Int> = (0..(INT_FREELIST_CAP as i64 + 5))
        .map(|i| Int::new(1000 + i))
        .collect();
    drop(ints);
    assert_eq!(free_list_stats().int.len, INT_FREELIST_CAP);
    assert!(clear_free_lists() >= LIST_FREELIST_CAP + INT_FREELIST_CAP);
    let s = free_list_stats();
    assert_eq!((s.list.len, s.int.len, s.dict.len, s.str.len), (0, 0, 0, 0));
}

#[test]
fn deep_nesting_frees_without_recursion() {
    // A million nested lists: dropping the outermost frees them all, iteratively.
    let mut l = List::new();
    for _ in 0..1_000_000 {
        let outer = List::new();
        outer.append(l);
        l = outer;
    }
    drop(l);
}
