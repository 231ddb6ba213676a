//! `PyMalloc` as this test binary's `#[global_allocator]`: std collections on 4 threads, with
//! blocks freed on a thread other than the one that allocated them.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::thread;

use pymalloc::PyMalloc;

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc::new();

/// Words per batch, rounds per thread, boxes in the last test: fewer under Miri.
const WORDS: u64 = if cfg!(miri) { 20 } else { 2000 };
const ROUNDS: u64 = if cfg!(miri) { 1 } else { 6 };
const BOXES: u64 = if cfg!(miri) { 200 } else { 10_000 };

/// What one thread builds: strings, vectors and map nodes of many small sizes.
struct Batch {
    words: Vec<String>,
    index: HashMap<String, Vec<u32>>,
    tree: BTreeMap<u64, Box<[u8]>>,
}

fn build(thread: u64, round: u64) -> Batch {
    let mut words = Vec::new();
    let mut index: HashMap<String, Vec<u32>> = HashMap::new();
    let mut tree = BTreeMap::new();
    for i in 0..WORDS {
        let w = format!("t{thread}-r{round}-w{i}");
        index
            .entry(w.clone())
            .or_default()
            .extend((0..(i % 7) as u32).map(|k| k * 3));
        tree.insert(
            i * 31 + thread,
            vec![(i % 251) as u8; (i % 300) as usize + 1].into(),
        );
        words.push(w);
    }
    Batch { words, index, tree }
}

fn check(b: &Batch, thread: u64, round: u64) {
    assert_eq!(b.words.len(), WORDS as usize);
    for (i, w) in b.words.iter().enumerate() {
        assert_eq!(*w, format!("t{thread}-r{round}-w{i}"));
        let v = &b.index[w];
        assert_eq!(v.len(), i % 7);
        assert!(v.iter().enumerate().all(|(k, &x)| x == 3 * k as u32));
    }
    for (&k, v) in &b.tree {
        let i = (k - thread) / 31;
        assert_eq!(v.len(), (i % 300) as usize + 1);
        assert!(v.iter().all(|&x| x == (i % 251) as u8));
    }
}

#[test]
fn std_collections_on_four_threads_with_cross_thread_frees() {
    const THREADS: u64 = 4;
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS)
        .map(|_| mpsc::channel::<(u64, u64, Batch)>())
        .unzip();
    let mut receivers: Vec<_> = receivers.into_iter().map(Some).collect();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let to_next = senders[((t + 1) % THREADS) as usize].clone();
            let from_prev = receivers[t as usize].take().unwrap();
            thread::spawn(move || {
                let mut freed_here = 0;
                for round in 0..ROUNDS {
                    let mine = build(t, round);
                    let other = build(t, round + 100);
                    check(&mine, t, round);
                    // Hand one batch to the next thread, which checks and frees it.
                    to_next.send((t, round + 100, other)).unwrap();
                    drop(mine);
                    let (from, r, theirs) = from_prev.recv().unwrap();
                    assert_ne!(from, t);
                    check(&theirs, from, r);
                    drop(theirs);
                    freed_here += 1;
                }
                freed_here
            })
        })
        .collect();
    drop(senders);
    let freed: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(freed, THREADS * ROUNDS);
    GLOBAL.check_invariants().unwrap();
}

#[test]
fn the_global_allocator_really_is_pymalloc() {
    let before = GLOBAL.stats();
    let boxes: Vec<Box<[u64; 4]>> = (0..BOXES).map(|i| Box::new([i; 4])).collect();
    let during = GLOBAL.stats();
    // 32-byte boxes are class 1. Other tests run concurrently, so compare with a margin that
    // they cannot fill: they never hold 10,000 32-byte blocks.
    assert!(during.classes()[1].blocks_in_use >= BOXES as usize);
    assert!(boxes.iter().all(|b| GLOBAL.owns(b.as_ptr().cast())));
    assert!(
        !GLOBAL.owns(boxes.as_ptr().cast()),
        "the 80 KB vector lives in layer +1"
    );
    assert!(during.arenas_allocated_total >= before.arenas_allocated_total);
    drop(boxes);
    GLOBAL.check_invariants().unwrap();
}
