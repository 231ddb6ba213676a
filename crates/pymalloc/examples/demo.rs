//! A realistic program on `PyMalloc`: four threads build and drop collections of many small
//! objects (strings, vectors, map nodes, boxed tree nodes), handing some of them to another
//! thread, which frees them. The allocator's report (shaped like CPython's
//! `sys._debugmallocstats()`) and the process RSS are printed while everything is live, after
//! it is all dropped, and after `trim()`.
//!
//! Run with `cargo run --release --example demo`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;

use pymalloc::PyMalloc;

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc::new();

const THREADS: usize = 4;
const RECORDS_PER_THREAD: usize = 60_000;

/// A Python-like object: a small header plus a few fields, linked into a tree. Children are
/// boxed on purpose: each node is its own small heap object, as each Python object is.
#[allow(dead_code, clippy::vec_box)]
struct Node {
    refcount: usize,
    value: i64,
    children: Vec<Box<Node>>,
}

fn tree(depth: u32, value: i64) -> Box<Node> {
    let children = if depth == 0 {
        Vec::new()
    } else {
        (0..3).map(|k| tree(depth - 1, value * 3 + k)).collect()
    };
    Box::new(Node {
        refcount: 1,
        value,
        children,
    })
}

/// Everything one thread keeps alive.
#[derive(Default)]
#[allow(clippy::vec_box)]
struct World {
    names: Vec<String>,
    index: HashMap<String, Vec<u32>>,
    ordered: BTreeMap<u64, String>,
    trees: Vec<Box<Node>>,
    received: Vec<Vec<String>>,
}

impl World {
    /// Heap objects the program holds: string buffers, non-empty vector buffers and tree
    /// nodes (the hash table and B-tree nodes themselves are not counted).
    fn objects(&self) -> usize {
        self.names.len()
            + self
                .index
                .values()
                .map(|v| 1 + usize::from(!v.is_empty()))
                .sum::<usize>()
            + self.ordered.len()
            + self.trees.iter().map(|t| nodes(t)).sum::<usize>()
            + self.received.iter().map(|v| v.len() + 1).sum::<usize>()
    }
}

/// Tree nodes plus their non-empty child vectors.
fn nodes(n: &Node) -> usize {
    1 + usize::from(!n.children.is_empty()) + n.children.iter().map(|c| nodes(c)).sum::<usize>()
}

fn build(t: usize, to_next: &mpsc::Sender<Vec<String>>) -> World {
    let mut w = World::default();
    for i in 0..RECORDS_PER_THREAD {
        let name = format!("thread{t}/record{i:06}");
        let tags: Vec<u32> = (0..(i % 9) as u32).collect();
        w.index.insert(name.clone(), tags);
        w.ordered
            .insert((i as u64) << 8 | t as u64, format!("value-{}", i * 7));
        w.names.push(name);
        if i % 1000 == 0 {
            w.trees.push(tree(5, i as i64));
            // A batch of short strings for the next thread to keep and later free.
            let batch: Vec<String> = (0..500).map(|k| format!("gift {t}->{k}")).collect();
            to_next.send(batch).expect("neighbour alive");
        }
        // Churn: short-lived temporaries of assorted sizes.
        let tmp: Vec<Box<[u8]>> = (0..4)
            .map(|k| vec![k as u8; (i + k) % 200 + 1].into())
            .collect();
        std::hint::black_box(tmp);
    }
    w
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn report(title: &str, live_objects: Option<usize>) {
    let s = GLOBAL.stats();
    let rss = pymalloc_vmm::resident_bytes().unwrap_or(0);
    println!("==== {title} ====");
    if let Some(n) = live_objects {
        println!("heap objects held by the program: {n}");
    }
    println!(
        "small blocks in use: {} ({:.1} MiB in blocks), arenas mapped: {}, blocks in layer +1: {}",
        s.blocks_in_use(),
        mib(s.bytes_in_allocated_blocks),
        s.arenas_current,
        s.large_blocks,
    );
    println!("process RSS (/proc/self/statm): {:.1} MiB", mib(rss));
    println!();
    print!("{s}");
    println!();
}

fn main() {
    // Threads collect their heaps as they exit: what others freed into them goes back then.
    GLOBAL.collect_at_thread_exit();
    let s = GLOBAL.stats();
    println!(
        "pymalloc-rs demo: {THREADS} threads on PyMalloc ({}: {} B threshold, {} KiB pools, {} KiB arenas)\n",
        s.geometry,
        s.threshold,
        s.pool_size / 1024,
        s.arena_size / 1024,
    );
    report("at start", None);

    let live_point = Arc::new(Barrier::new(THREADS + 1));
    let drop_point = Arc::new(Barrier::new(THREADS + 1));
    let done_point = Arc::new(Barrier::new(THREADS + 1));
    let (totals_tx, totals_rx) = mpsc::channel::<usize>();
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..THREADS).map(|_| mpsc::channel::<Vec<String>>()).unzip();
    let mut receivers: Vec<_> = receivers.into_iter().map(Some).collect();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let to_next = senders[(t + 1) % THREADS].clone();
            let inbox = receivers[t].take().expect("one inbox per thread");
            let (live_point, drop_point, done_point) =
                (live_point.clone(), drop_point.clone(), done_point.clone());
            let totals = totals_tx.clone();
            thread::spawn(move || {
                let mut world = build(t, &to_next);
                drop(to_next);
                // Keep what the previous thread handed over; we will free it here.
                world.received.extend(inbox.iter());
                totals.send(world.objects()).expect("main alive");
                live_point.wait(); // main prints the live report
                drop_point.wait();
                drop(world); // frees this thread's objects and the neighbour's gifts
                done_point.wait();
            })
        })
        .collect();
    drop(senders);
    drop(totals_tx);
    let live: usize = totals_rx.iter().take(THREADS).sum();
    live_point.wait();
    report("all objects live", Some(live));
    drop_point.wait();
    done_point.wait();
    for h in handles {
        h.join().expect("worker thread");
    }
    report("after every thread dropped its objects", Some(0));
    let released = GLOBAL.trim();
    println!("trim() returned {released} more arena(s) to the OS\n");
    report("after trim()", Some(0));
    let s = GLOBAL.stats();
    println!(
        "summary: {} arenas mapped over the run (peak {} at once), {} returned to the OS, {} still mapped",
        s.arenas_allocated_total, s.arenas_highwater, s.arenas_reclaimed, s.arenas_current
    );
    if let Err(e) = GLOBAL.check_invariants() {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
