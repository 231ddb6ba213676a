//! Free lists over their own `PyMalloc`: hits and misses, the cap, `clear()`, layouts passed
//! through, `Allocator` use. The shared lists are tested in `shared.rs`.

use core::alloc::{GlobalAlloc, Layout};

use allocator_api2::boxed::Box as ABox;
use allocator_api2::vec::Vec as AVec;
use pymalloc_freelist::{FreeList, PyMalloc};

fn in_use(py: &PyMalloc) -> usize {
    py.stats().blocks_in_use()
}

#[test]
fn hits_misses_cap_and_clear() {
    let py = PyMalloc::new();
    let base = in_use(&py);
    let list = FreeList::new(Layout::new::<[u64; 7]>(), 3, &py);
    let blocks: Vec<*mut u8> = (0..5).map(|_| list.alloc()).collect();
    assert!(blocks.iter().all(|b| !b.is_null()));
    assert_eq!(in_use(&py), base + 5);
    for &b in &blocks {
        // SAFETY: live blocks of this list, freed once.
        unsafe { list.free(b) };
    }
    let s = list.stats();
    assert_eq!(
        (s.misses, s.hits, s.frees_kept, s.frees_down, s.len),
        (5, 0, 3, 2, 3)
    );
    // The three cached blocks are still blocks in use for pymalloc.
    assert_eq!(in_use(&py), base + 3);
    // LIFO: the last block kept comes back first, pymalloc is not called.
    let again = list.alloc();
    assert_eq!(again, blocks[2]);
    assert_eq!(list.stats().hits, 1);
    assert_eq!(in_use(&py), base + 3);
    // SAFETY: live block of this list.
    unsafe { list.free(again) };
    assert_eq!(list.clear(), 3);
    assert_eq!((list.len(), list.stats().cleared), (0, 3));
    assert_eq!(in_use(&py), base, "clear() gives every cached block back");
    py.check_invariants().unwrap();
}

#[test]
fn a_zero_cap_list_is_off() {
    let py = PyMalloc::new();
    let list = FreeList::new(Layout::new::<[u8; 40]>(), 0, &py);
    for _ in 0..10 {
        let b = list.alloc();
        // SAFETY: live block of this list.
        unsafe { list.free(b) };
    }
    let s = list.stats();
    assert_eq!((s.hits, s.misses, s.frees_down, s.len), (0, 10, 10, 0));
    assert_eq!(in_use(&py), 0);
}

#[test]
fn dropping_a_list_gives_its_blocks_back() {
    let py = PyMalloc::new();
    {
        let list = FreeList::new(Layout::new::<[u64; 3]>(), 80, &py);
        let v: Vec<*mut u8> = (0..50).map(|_| list.alloc()).collect();
        for b in v {
            // SAFETY: live blocks, freed once.
            unsafe { list.free(b) };
        }
        assert_eq!(in_use(&py), 50);
    }
    assert_eq!(in_use(&py), 0);
}

#[test]
fn tiny_and_odd_layouts() {
    let py = PyMalloc::new();
    // Smaller than a link, and byte-aligned: the blocks are asked for with 8 bytes.
    for layout in [
        Layout::from_size_align(1, 1).unwrap(),
        Layout::from_size_align(3, 1).unwrap(),
        Layout::from_size_align(24, 8).unwrap(),
        Layout::from_size_align(100, 4).unwrap(),
        Layout::from_size_align(64, 64).unwrap(),
        Layout::from_size_align(4096, 16).unwrap(),
    ] {
        let list = FreeList::new(layout, 4, &py);
        let a: Vec<*mut u8> = (0..6).map(|_| list.alloc()).collect();
        for (i, &p) in a.iter().enumerate() {
            assert_eq!(p as usize % layout.align(), 0, "{layout:?}");
            // SAFETY: the block has layout.size() bytes.
            unsafe { p.write_bytes(i as u8, layout.size()) };
        }
        for &p in &a {
            // SAFETY: live blocks, freed once.
            unsafe { list.free(p) };
        }
        let b = list.alloc();
        assert!(a.contains(&b));
        // SAFETY: live block.
        unsafe { list.free(b) };
        drop(list);
        assert_eq!(in_use(&py), 0, "{layout:?}");
        assert_eq!(py.stats().large_blocks, 0, "{layout:?}");
    }
    py.check_invariants().unwrap();
}

#[test]
fn other_layouts_pass_through() {
    let py = PyMalloc::new();
    let list = FreeList::new(Layout::new::<[u64; 4]>(), 8, &py);
    let other = Layout::from_size_align(100, 8).unwrap();
    // SAFETY: valid layouts; every block freed once with its layout.
    unsafe {
        let p = GlobalAlloc::alloc(&list, other);
        GlobalAlloc::dealloc(&list, p, other);
        let q = GlobalAlloc::alloc(&list, list.layout());
        GlobalAlloc::dealloc(&list, q, list.layout());
        // realloc from the list's layout to another and back.
        let r = GlobalAlloc::alloc(&list, list.layout());
        r.write_bytes(7, 32);
        let r = GlobalAlloc::realloc(&list, r, list.layout(), 200);
        assert_eq!(*r.add(31), 7);
        let r = GlobalAlloc::realloc(&list, r, Layout::from_size_align(200, 8).unwrap(), 32);
        assert_eq!(*r.add(31), 7);
        GlobalAlloc::dealloc(&list, r, list.layout());
    }
    let s = list.stats();
    // q is a miss; r gets q's block back, and the realloc into the list's layout gets r's.
    assert_eq!((s.misses, s.hits), (1, 2));
    drop(list);
    assert_eq!(in_use(&py), 0);
}

#[test]
fn allocator_api_vec_and_box() {
    let py = PyMalloc::new();
    let list = FreeList::new(Layout::new::<[u64; 4]>(), 16, &py);
    for round in 0..3 {
        let mut boxes = AVec::new();
        for i in 0..10u64 {
            boxes.push(ABox::new_in([i, i + 1, i + 2, i + 3], &list));
        }
        let mut v: AVec<u64, _> = AVec::new_in(&list);
        v.extend(0..1000);
        assert_eq!(v.iter().sum::<u64>(), 499_500);
        assert!(boxes.iter().enumerate().all(|(i, b)| b[3] == i as u64 + 3));
        drop(boxes);
        drop(v);
        if round > 0 {
            assert!(list.stats().hits >= 10 * round as u64);
        }
    }
    drop(list);
    assert_eq!((in_use(&py), py.stats().large_blocks), (0, 0));
}

#[test]
fn hashbrown_runs_on_a_list() {
    let py = PyMalloc::new();
    // hashbrown's table allocation for 3 entries (4 buckets of 16 bytes + control bytes) is one
    // layout; whatever it is, the list serves it when it matches and passes it down otherwise.
    let list = FreeList::new(Layout::from_size_align(84, 16).unwrap(), 8, &py);
    let n: u64 = if cfg!(miri) { 200 } else { 10_000 };
    for round in 0..3u64 {
        let mut m: hashbrown::HashMap<u64, u64, _, _> =
            hashbrown::HashMap::with_hasher_in(hashbrown::DefaultHashBuilder::default(), &list);
        for i in 0..n {
            m.insert(i, i * round);
        }
        for i in (0..n).step_by(2) {
            m.remove(&i);
        }
        assert_eq!(m.len() as u64, n / 2);
        assert!(m.iter().all(|(k, v)| k % 2 == 1 && *v == k * round));
    }
    drop(list);
    assert_eq!((in_use(&py), py.stats().large_blocks), (0, 0));
}
