//! Free lists over their own `PyMalloc`: hits and misses, the cap, `clear()`, layouts passed
//! through, `Allocator` use, and the shared lists across threads (exit, adoption, remote frees).

use core::alloc::{GlobalAlloc, Layout};
use std::sync::{Arc, Barrier};

use allocator_api2::boxed::Box as ABox;
use allocator_api2::vec::Vec as AVec;
use pymalloc_freelist::{FreeList, PyMalloc, SharedFreeList};

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
fn shared_lists_across_threads() {
    static PY: PyMalloc = PyMalloc::new();
    static LISTS: SharedFreeList = SharedFreeList::new(Layout::new::<[u64; 6]>(), 32, &PY);
    assert!(LISTS.flush_at_thread_exit());
    let threads = 4;
    let barrier = Arc::new(Barrier::new(threads));
    // Each thread allocates 64 blocks and hands them to the next thread, which frees them:
    // blocks freed on another thread go onto that thread's list (or down past its cap).
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..threads)
        .map(|_| std::sync::mpsc::channel::<Vec<usize>>())
        .unzip();
    let mut rxs: Vec<_> = rxs.into_iter().map(Some).collect();
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let tx = txs[(i + 1) % threads].clone();
            let rx = rxs[i].take().unwrap();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                for round in 0..20 {
                    let mine: Vec<usize> = (0..64).map(|_| LISTS.alloc() as usize).collect();
                    for (k, &b) in mine.iter().enumerate() {
                        // SAFETY: a live block of 48 bytes.
                        unsafe { (b as *mut u64).write(k as u64 + round) };
                    }
                    tx.send(mine).unwrap();
                    let theirs = rx.recv().unwrap();
                    for (k, &b) in theirs.iter().enumerate() {
                        // SAFETY: a live block handed over by its owner; freed once.
                        unsafe {
                            assert_eq!((b as *mut u64).read(), k as u64 + round);
                            LISTS.free(b as *mut u8);
                        }
                    }
                    barrier.wait();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let s = LISTS.stats();
    assert!(s.hits > 0, "{s:?}");
    assert_eq!(s.hits + s.misses, threads as u64 * 20 * 64);
    assert_eq!(s.frees_kept + s.frees_down, threads as u64 * 20 * 64);
    // Every thread's list went back at its exit.
    assert_eq!(s.len, 0, "{s:?}");
    assert_eq!(PY.stats().blocks_in_use(), 0);
    PY.check_invariants().unwrap();
}

/// Runs `f` on a new thread and waits until the thread has wholly exited (`JoinHandle::join`
/// joins the OS thread, after its exit destructors).
fn on_a_thread(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(f).join().unwrap();
}

/// 30 blocks allocated and freed onto the calling thread's list.
fn fill(lists: &'static SharedFreeList<'static>) {
    let v: Vec<*mut u8> = (0..30).map(|_| lists.alloc()).collect();
    for b in v {
        // SAFETY: live blocks, freed once.
        unsafe { lists.free(b) };
    }
}

#[test]
fn exited_threads_lists_go_back_on_clear_or_to_the_next_holder() {
    let py: &'static PyMalloc = Box::leak(Box::new(PyMalloc::new()));
    // No exit hook: an exited thread's list stays until clear() or the slot's next holder.
    let lists: &'static SharedFreeList<'static> = Box::leak(Box::new(SharedFreeList::new(
        Layout::new::<[u64; 2]>(),
        80,
        py,
    )));
    on_a_thread(move || fill(lists));
    assert_eq!(lists.stats().len, 30);
    assert_eq!(py.stats().blocks_in_use(), 30);
    assert_eq!(lists.clear(), 30);
    assert_eq!(lists.stats().len, 0);
    assert_eq!(py.stats().blocks_in_use(), 0);

    // Again, one thread after the other: each takes the slot the previous one freed (the
    // lowest free slot) and gives back what it found there before using the list.
    for _ in 0..3 {
        on_a_thread(move || fill(lists));
    }
    let s = lists.stats();
    assert_eq!((s.len, s.cleared), (30, 90));
    assert_eq!(lists.clear(), 30);
    assert_eq!(py.stats().blocks_in_use(), 0);
    py.check_invariants().unwrap();
}

#[test]
fn dropping_shared_lists_gives_everything_back() {
    let py: &'static PyMalloc = Box::leak(Box::new(PyMalloc::new()));
    let lists = Arc::new(SharedFreeList::new(Layout::new::<[u8; 33]>(), 10, py));
    let barrier = Arc::new(Barrier::new(3));
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let (lists, barrier) = (lists.clone(), barrier.clone());
            std::thread::spawn(move || {
                let v: Vec<*mut u8> = (0..20).map(|_| lists.alloc()).collect();
                for b in v {
                    // SAFETY: live blocks, freed once.
                    unsafe { lists.free(b) };
                }
                // All three hold their slots at once: three lists.
                barrier.wait();
            })
        })
        .collect();
    // `join` waits for each OS thread to exit, so their pools are collectable below.
    for h in handles {
        h.join().unwrap();
    }
    let s = lists.stats();
    assert_eq!((s.len, s.frees_down), (30, 30));
    drop(lists);
    assert_eq!(py.stats().blocks_in_use(), 0);
    py.check_invariants().unwrap();
}
