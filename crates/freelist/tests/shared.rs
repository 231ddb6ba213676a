//! The shared lists across threads: remote frees, thread exit with and without the exit hook,
//! adoption by the slot's next holder, `clear()`, drop. One `#[test]` runs the scenarios in
//! turn: which slot a thread takes, and whether a slot is free when `clear()` looks, depend on
//! no other test's threads running beside them.

use core::alloc::Layout;
use std::sync::{Arc, Barrier};

use pymalloc_freelist::{PyMalloc, SharedFreeList};

#[test]
fn shared_lists() {
    shared_lists_across_threads();
    exited_threads_lists_go_back_on_clear_or_to_the_next_holder();
    dropping_shared_lists_gives_everything_back();
}

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
