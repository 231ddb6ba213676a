//! Per-thread heaps seen from outside: blocks of a thread that has exited, freed here and
//! reused by the next thread (which adopts the exited thread's heap); frees by another thread
//! into full pools of a live thread, which that thread reuses without taking new pools; remote
//! frees taken in before a new arena is mapped (a producer whose consumer frees its blocks); a
//! thread allocating after its heap is torn down; more threads than heap slots; several
//! allocators used by several threads.
//!
//! One `#[test]`, its scenarios in sequence, every thread joined (thread-exit destructors
//! included) before the next scenario: "the next thread adopts the heap" needs that no other
//! thread takes or frees the slot in between, and the test harness runs separate tests in
//! parallel.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashSet;
use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use pymalloc::{MAX_SLOTS, PyMalloc};

const L64: Layout = match Layout::from_size_align(64, 8) {
    Ok(l) => l,
    Err(_) => panic!(),
};

/// Blocks of 64 bytes in one Py310 pool: (16 KiB - 48) / 64.
const PER_POOL: usize = 255;
/// Pools in one arena.
const POOLS: usize = 64;

fn alloc_n(a: &PyMalloc, n: usize) -> Vec<usize> {
    (0..n)
        .map(|i| {
            // SAFETY: a valid layout; every block is freed by the scenario.
            let p = unsafe { a.alloc(L64) };
            assert!(!p.is_null());
            // SAFETY: 64 bytes are ours.
            unsafe { p.cast::<u64>().write(i as u64) };
            p as usize
        })
        .collect()
}

fn free_all(a: &PyMalloc, blocks: &[usize]) {
    for &p in blocks {
        // SAFETY: each block came from `a.alloc(L64)` and is freed once.
        unsafe { a.dealloc(p as *mut u8, L64) };
    }
}

/// A thread fills a whole arena and exits; this thread frees every other block (into the
/// exited thread's heap); the next thread allocates as many blocks as were freed and gets
/// exactly those addresses back, with no arena mapped: it adopted the heap.
fn exited_threads_blocks_are_freed_here_and_its_pools_adopted() {
    static A: PyMalloc = PyMalloc::new();
    let n = PER_POOL * POOLS;
    let blocks = std::thread::spawn(|| alloc_n(&A, PER_POOL * POOLS))
        .join()
        .unwrap();
    let s = A.stats();
    assert_eq!((s.arenas_current, s.blocks_in_use()), (1, n));
    let (freed, kept): (Vec<usize>, Vec<usize>) = blocks.iter().partition(|&&p| p % 128 == 0);
    free_all(&A, &freed);
    assert_eq!(A.stats().blocks_in_use(), kept.len());
    A.check_invariants().unwrap();
    let again = std::thread::spawn(move || alloc_n(&A, freed.len()))
        .join()
        .unwrap();
    let s = A.stats();
    assert_eq!(s.arenas_allocated_total, 1, "a new arena was mapped");
    let freed: HashSet<usize> = blocks.iter().copied().filter(|p| p % 128 == 0).collect();
    assert_eq!(
        again.iter().copied().collect::<HashSet<_>>(),
        freed,
        "the next thread did not reuse the freed blocks"
    );
    free_all(&A, &again);
    free_all(&A, &kept);
    assert_eq!(A.stats().blocks_in_use(), 0);
    A.check_invariants().unwrap();
}

/// A live thread fills pools; another thread frees all their blocks while the first one waits;
/// the first one then allocates as many again and gets the same addresses: the remote frees
/// into its full pools reached it (through the delayed list) and no pool was taken anew.
fn remote_frees_into_full_pools_are_reused_by_their_owner() {
    static A: PyMalloc = PyMalloc::new();
    let n = PER_POOL * 8;
    std::thread::scope(|s| {
        let (to_freer, from_owner) = std::sync::mpsc::channel::<Vec<usize>>();
        let (to_owner, from_freer) = std::sync::mpsc::channel::<()>();
        let freer = s.spawn(move || {
            let blocks = from_owner.recv().unwrap();
            free_all(&A, &blocks);
            to_owner.send(()).unwrap();
        });
        let owner = s.spawn(move || {
            let first = alloc_n(&A, n);
            let pools_before = A.stats().classes()[3].pools;
            to_freer.send(first.clone()).unwrap();
            from_freer.recv().unwrap();
            let second = alloc_n(&A, n);
            assert_eq!(
                second.iter().collect::<HashSet<_>>(),
                first.iter().collect::<HashSet<_>>(),
                "blocks freed by another thread were not reused"
            );
            assert_eq!(A.stats().classes()[3].pools, pools_before);
            free_all(&A, &second);
        });
        join_all(vec![freer, owner]);
    });
    assert_eq!(A.stats().blocks_in_use(), 0);
    A.check_invariants().unwrap();
}

/// A producer fills two arenas with 64-byte blocks, a consumer frees them all (remote frees,
/// which wait on the pools' remote lists), and the producer then allocates as many bytes in
/// 128-byte blocks (120 pools' worth): before it maps a new arena it takes in what was freed into its own pools
/// and gives back the pools that emptied, so the 128-byte blocks reuse them.
fn remote_frees_are_collected_before_a_new_arena() {
    static A: PyMalloc = PyMalloc::new();
    const L128: Layout = match Layout::from_size_align(128, 8) {
        Ok(l) => l,
        Err(_) => panic!(),
    };
    let n = PER_POOL * POOLS * 2;
    std::thread::scope(|s| {
        let (to_consumer, from_producer) = std::sync::mpsc::channel::<Vec<usize>>();
        let (to_producer, from_consumer) = std::sync::mpsc::channel::<()>();
        let consumer = s.spawn(move || {
            free_all(&A, &from_producer.recv().unwrap());
            to_producer.send(()).unwrap();
        });
        let producer = s.spawn(move || {
            to_consumer.send(alloc_n(&A, n)).unwrap();
            from_consumer.recv().unwrap();
            // No `stats()` before this point: it would collect the heap itself.
            let big: Vec<usize> = (0..127 * 120)
                .map(|_| {
                    // SAFETY: a valid layout; freed below.
                    let p = unsafe { A.alloc(L128) };
                    assert!(!p.is_null());
                    p as usize
                })
                .collect();
            // 120 pools of 128-byte blocks fit in the two arenas the 64-byte blocks emptied.
            let s = A.stats();
            assert!(
                s.arenas_highwater <= 3,
                "{} arenas at once: the 128-byte blocks did not reuse the freed pools",
                s.arenas_highwater
            );
            for p in big {
                // SAFETY: allocated above with L128, freed once.
                unsafe { A.dealloc(p as *mut u8, L128) };
            }
        });
        join_all(vec![consumer, producer]);
    });
    assert_eq!(A.stats().blocks_in_use(), 0);
    A.check_invariants().unwrap();
}

/// The collection before a new arena is bounded: a heap with 4 096 half-free pools of one
/// class, growing in another class while another thread frees one block into one of those
/// pools before each new arena, visits at most `Heap::WALK_CREDIT` (1 024) pools per arena it
/// maps, plus one whole walk, instead of every listed pool at every arena.
fn collecting_before_a_new_arena_is_bounded() {
    static A: PyMalloc = PyMalloc::new();
    const L32: Layout = match Layout::from_size_align(32, 8) {
        Ok(l) => l,
        Err(_) => panic!(),
    };
    const PER_POOL_32: usize = (16 * 1024 - 48) / 32;
    const ARENAS: usize = 12;
    std::thread::scope(|s| {
        let (to_freer, from_owner) = std::sync::mpsc::channel::<usize>();
        let (to_owner, from_freer) = std::sync::mpsc::channel::<()>();
        let freer = s.spawn(move || {
            for p in from_owner {
                // SAFETY: a live L32 block the owner handed over.
                unsafe { A.dealloc(p as *mut u8, L32) };
                to_owner.send(()).unwrap();
            }
        });
        let owner = s.spawn(move || {
            let small: Vec<usize> = (0..PER_POOL_32 * POOLS * 64)
                .map(|_| {
                    // SAFETY: a valid layout; freed below.
                    let p = unsafe { A.alloc(L32) };
                    assert!(!p.is_null());
                    p as usize
                })
                .collect();
            // Every other block of each pool (block offsets in a pool are 48 + 32k).
            let (gone, mut kept): (Vec<usize>, Vec<usize>) =
                small.iter().partition(|&&p| p % 64 == 16);
            for &p in &gone {
                // SAFETY: allocated above with L32, freed once.
                unsafe { A.dealloc(p as *mut u8, L32) };
            }
            let before = A.stats();
            let listed = before.classes()[1].pools;
            let mut big = Vec::new();
            for _ in 0..ARENAS {
                to_freer.send(kept.pop().unwrap()).unwrap();
                from_freer.recv().unwrap();
                big.extend(alloc_n(&A, PER_POOL * POOLS));
            }
            let after = A.stats();
            let mapped = after.arenas_allocated_total - before.arenas_allocated_total;
            assert!(mapped >= ARENAS, "{mapped}");
            assert!(
                after.remote_walk_visits <= listed + 4 + mapped * 16 * POOLS,
                "{} pools visited for {mapped} arenas mapped with {listed} pools listed",
                after.remote_walk_visits
            );
            assert!(
                after.remote_walk_visits >= listed,
                "no collection ran at all: {} {listed} {mapped}",
                after.remote_walk_visits
            );
            free_all(&A, &big);
            for &p in &kept {
                // SAFETY: allocated above with L32, freed once.
                unsafe { A.dealloc(p as *mut u8, L32) };
            }
            drop(to_freer);
        });
        join_all(vec![owner, freer]);
    });
    assert_eq!(A.stats().blocks_in_use(), 0);
    A.check_invariants().unwrap();
}

static LATE: PyMalloc = PyMalloc::new();
static LATE_DONE: AtomicUsize = AtomicUsize::new(0);
static LATE_BLOCK: AtomicUsize = AtomicUsize::new(0);

/// A pthread key destructor created after the allocator's: it runs once the thread's slot is
/// gone (glibc runs destructors in key order), and allocates and frees there.
extern "C" fn late_destructor(_: *mut libc::c_void) {
    let mine = alloc_n(&LATE, 100);
    free_all(&LATE, &mine);
    free_all(&LATE, &[LATE_BLOCK.load(SeqCst)]);
    LATE_DONE.fetch_add(1, SeqCst);
}

/// After its exit destructor ran, a thread still allocates and frees (through the shared
/// heap), including a block from its own torn-down heap.
fn a_thread_allocates_after_its_heap_is_torn_down() {
    std::thread::spawn(|| {
        LATE_BLOCK.store(alloc_n(&LATE, 1)[0], SeqCst);
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: valid out-pointer and destructor; the value just has to be non-null.
        unsafe {
            assert_eq!(libc::pthread_key_create(&mut key, Some(late_destructor)), 0);
            assert_eq!(
                libc::pthread_setspecific(key, std::ptr::dangling::<libc::c_void>()),
                0
            );
        }
    })
    .join()
    .unwrap();
    assert_eq!(LATE_DONE.load(SeqCst), 1);
    assert_eq!(LATE.stats().blocks_in_use(), 0);
    LATE.check_invariants().unwrap();
}

/// More threads at once than there are slots: the ones without a slot share the locked heap.
fn more_threads_than_slots() {
    static A: PyMalloc = PyMalloc::new();
    let threads = MAX_SLOTS + 16;
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let blocks = alloc_n(&A, 300);
                    barrier.wait(); // every thread alive at once, holding its blocks
                    for (i, &p) in blocks.iter().enumerate() {
                        // SAFETY: still live, written by `alloc_n`.
                        assert_eq!(unsafe { (p as *const u64).read() }, i as u64);
                    }
                    free_all(&A, &blocks);
                })
            })
            .collect();
        join_all(handles);
    });
    assert_eq!(A.stats().blocks_in_use(), 0);
    A.check_invariants().unwrap();
}

/// Three allocators, four threads, each thread freeing blocks the others allocated from all
/// three.
fn several_allocators_several_threads() {
    let all: Vec<PyMalloc> = (0..3).map(|_| PyMalloc::new()).collect();
    let slots: Vec<std::sync::Mutex<Vec<(usize, usize)>>> =
        (0..4).map(|_| std::sync::Mutex::new(Vec::new())).collect();
    let barrier = Barrier::new(4);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (all, slots, barrier) = (&all, &slots, &barrier);
                s.spawn(move || {
                    for (k, a) in all.iter().enumerate() {
                        let blocks = alloc_n(a, 2000 + 100 * t);
                        slots[(t + 1) % 4]
                            .lock()
                            .unwrap()
                            .extend(blocks.into_iter().map(|p| (k, p)));
                    }
                    barrier.wait();
                    for (k, p) in slots[t].lock().unwrap().drain(..) {
                        free_all(&all[k], &[p]);
                    }
                })
            })
            .collect();
        join_all(handles);
    });
    for a in &all {
        assert_eq!(a.stats().blocks_in_use(), 0);
        a.check_invariants().unwrap();
        a.trim();
        assert!(a.stats().arenas_current <= 1);
    }
}

/// A thread keeps one empty pool of a class and exits; the next thread, taking its slot,
/// allocates in that class from that pool (it adopted the heap) instead of taking a new pool in
/// front of it, which would leave the kept pool empty behind another: a pool lost to every list.
fn a_new_thread_uses_the_pool_it_adopts() {
    static A: PyMalloc = PyMalloc::new();
    let l400 = Layout::from_size_align(400, 8).unwrap();
    let first = std::thread::spawn(move || {
        // SAFETY: a valid layout; freed at once.
        unsafe {
            let p = A.alloc(l400);
            A.dealloc(p, l400);
            p as usize
        }
    })
    .join()
    .unwrap();
    let again = std::thread::spawn(move || {
        // SAFETY: a valid layout; freed below.
        let p = unsafe { A.alloc(l400) };
        let ok = A.check_invariants();
        // SAFETY: allocated above with this layout.
        unsafe { A.dealloc(p, l400) };
        ok.unwrap();
        p as usize
    })
    .join()
    .unwrap();
    assert_eq!(again, first, "the adopted heap's kept pool was not used");
}

/// Blocks freed by another thread into a live thread's pools wait for that thread; when it
/// exits and a new thread takes its slot, the new owner takes them in at once, and the emptied
/// pools go back, although the new thread allocates nothing of that class.
fn a_new_thread_collects_the_heap_it_adopts() {
    static A: PyMalloc = PyMalloc::new();
    let n = PER_POOL * 40;
    std::thread::scope(|s| {
        let (to_main, from_owner) = std::sync::mpsc::channel::<Vec<usize>>();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let owner = s.spawn(move || {
            to_main.send(alloc_n(&A, n)).unwrap();
            wait.recv().unwrap(); // alive while the blocks are freed
        });
        free_all(&A, &from_owner.recv().unwrap());
        done.send(()).unwrap();
        owner.join().unwrap();
    });
    let l32 = Layout::from_size_align(32, 8).unwrap();
    // The new thread allocates one block and stays alive while this thread reads the figures
    // (so they cannot come from collecting its heap here).
    let in_use = std::thread::scope(|s| {
        let (ready, wait_ready) = std::sync::mpsc::channel::<()>();
        let (done, wait_done) = std::sync::mpsc::channel::<()>();
        let t = s.spawn(move || {
            // SAFETY: a valid layout; freed below.
            let p = unsafe { A.alloc(l32) };
            ready.send(()).unwrap();
            wait_done.recv().unwrap();
            // SAFETY: allocated above with this layout.
            unsafe { A.dealloc(p, l32) };
        });
        wait_ready.recv().unwrap();
        let in_use = A.stats().blocks_in_use();
        done.send(()).unwrap();
        t.join().unwrap();
        in_use
    });
    assert_eq!(
        in_use, 1,
        "blocks freed into the adopted heap still count as in use"
    );
    A.check_invariants().unwrap();
}

/// With `collect_at_thread_exit`, a thread collects its heap as it exits: blocks another
/// thread freed into its pools while it lived go back at once, and so do the arenas they
/// emptied, without any call to `stats()` or `trim()` (which would collect too). Without it
/// the arenas stay mapped until something collects the heap.
fn a_thread_collects_its_heap_as_it_exits() {
    static A: PyMalloc = PyMalloc::new();
    assert!(A.collect_at_thread_exit());
    assert!(A.collect_at_thread_exit(), "registering twice is harmless");
    let n = PER_POOL * POOLS * 3; // three arenas' worth
    let blocks = std::thread::scope(|s| {
        let (to_main, from_owner) = std::sync::mpsc::channel::<Vec<usize>>();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let owner = s.spawn(move || {
            to_main.send(alloc_n(&A, n)).unwrap();
            wait.recv().unwrap(); // alive while its blocks are freed
        });
        let blocks = from_owner.recv().unwrap();
        free_all(&A, &blocks);
        done.send(()).unwrap();
        owner.join().unwrap();
        blocks
    });
    let still_ours = blocks.iter().filter(|&&p| A.owns(p as *const u8)).count();
    assert!(
        still_ours <= PER_POOL * POOLS,
        "{still_ours} freed blocks still in mapped arenas: the heap was not collected at exit"
    );
    assert_eq!(A.stats().blocks_in_use(), 0);
    A.check_invariants().unwrap();
}

/// Blocks above the threshold go to the backend and are counted in the allocating thread's
/// share; freed on another thread, they are subtracted from that one's. The sum is exact.
fn large_blocks_are_counted_across_threads() {
    static A: PyMalloc = PyMalloc::new();
    let big = Layout::from_size_align(1000, 8).unwrap();
    let blocks: Vec<usize> = std::thread::spawn(move || {
        (0..100)
            // SAFETY: a valid layout; freed below.
            .map(|_| unsafe { A.alloc(big) } as usize)
            .collect()
    })
    .join()
    .unwrap();
    let s = A.stats();
    assert_eq!((s.large_blocks, s.large_bytes), (100, 100_000));
    let (first, rest) = blocks.split_at(50);
    let first = first.to_vec();
    std::thread::spawn(move || {
        for p in first {
            // SAFETY: allocated above with this layout, freed once.
            unsafe { A.dealloc(p as *mut u8, big) };
        }
    })
    .join()
    .unwrap();
    for &p in rest {
        // SAFETY: as above.
        unsafe { A.dealloc(p as *mut u8, big) };
    }
    let s = A.stats();
    assert_eq!((s.large_blocks, s.large_bytes), (0, 0));
}

/// The same as `a_new_thread_collects_the_heap_it_adopts`, in a second allocator: the new thread
/// takes the slot through another allocator first, and collects the heap it adopted in this
/// one on its first slow path here.
fn a_new_thread_collects_the_heap_it_adopts_in_every_allocator() {
    static OTHER: PyMalloc = PyMalloc::new();
    static B: PyMalloc = PyMalloc::new();
    let n = PER_POOL * 40;
    std::thread::scope(|s| {
        let (to_main, from_owner) = std::sync::mpsc::channel::<Vec<usize>>();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let owner = s.spawn(move || {
            to_main.send(alloc_n(&B, n)).unwrap();
            wait.recv().unwrap(); // alive while the blocks are freed
        });
        free_all(&B, &from_owner.recv().unwrap());
        done.send(()).unwrap();
        owner.join().unwrap();
    });
    let l32 = Layout::from_size_align(32, 8).unwrap();
    let in_use = std::thread::scope(|s| {
        let (ready, wait_ready) = std::sync::mpsc::channel::<()>();
        let (done, wait_done) = std::sync::mpsc::channel::<()>();
        let t = s.spawn(move || {
            // SAFETY: valid layouts; freed below.
            let (o, p) = unsafe { (OTHER.alloc(l32), B.alloc(l32)) };
            ready.send(()).unwrap();
            wait_done.recv().unwrap();
            // SAFETY: allocated above with these layouts.
            unsafe {
                OTHER.dealloc(o, l32);
                B.dealloc(p, l32);
            }
        });
        wait_ready.recv().unwrap();
        let in_use = B.stats().blocks_in_use();
        done.send(()).unwrap();
        t.join().unwrap();
        in_use
    });
    assert_eq!(
        in_use, 1,
        "blocks freed into the adopted heap still count as in use"
    );
    B.check_invariants().unwrap();
}

/// Joins scoped threads one by one. The end of a `thread::scope` waits only for the threads'
/// closures; `join` waits for the threads themselves, thread-exit destructors included, after
/// which their heaps can be collected: the statistics are exact once that has happened.
fn join_all(handles: Vec<std::thread::ScopedJoinHandle<'_, ()>>) {
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn per_thread_heaps() {
    exited_threads_blocks_are_freed_here_and_its_pools_adopted();
    remote_frees_into_full_pools_are_reused_by_their_owner();
    remote_frees_are_collected_before_a_new_arena();
    collecting_before_a_new_arena_is_bounded();
    a_new_thread_uses_the_pool_it_adopts();
    a_new_thread_collects_the_heap_it_adopts();
    a_new_thread_collects_the_heap_it_adopts_in_every_allocator();
    a_thread_collects_its_heap_as_it_exits();
    large_blocks_are_counted_across_threads();
    a_thread_allocates_after_its_heap_is_torn_down();
    more_threads_than_slots();
    several_allocators_several_threads();
}
