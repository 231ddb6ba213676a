//! Free lists at work: lists and dicts created and dropped in a loop come back from their free
//! lists, and pymalloc hands out no new pool while it runs.
//!
//! Run: `cargo run --release -p pymalloc-objects --example freelists`

use pymalloc_objects::{Dict, Int, List, allocator, free_list_stats, getsizeof};

fn pools() -> usize {
    allocator().stats().classes().iter().map(|c| c.pools).sum()
}

fn main() {
    // Warm up: the first objects fill the free lists and the small-int cache.
    for i in 0..100 {
        let d = Dict::new();
        d.set(Int::new(i), List::new()).unwrap();
    }
    let (before, pools_before) = (free_list_stats(), pools());
    let rounds = 100_000;
    for i in 0..rounds {
        // Each round: a list holding a dict holding an int, all dropped at the end.
        let l = List::new();
        let d = Dict::new();
        d.set(Int::new(i % 200), Int::new(7)).unwrap();
        l.append(d);
    }
    let (after, pools_after) = (free_list_stats(), pools());
    println!("{rounds} rounds of `l = []; d = {{}}; d[i] = 7; l.append(d)`, then dropped:\n");
    println!("free list     hits     misses  kept now");
    for (name, b, a) in [
        ("list", before.list, after.list),
        ("dict", before.dict, after.dict),
        ("dict keys", before.dict_keys, after.dict_keys),
    ] {
        println!(
            "{name:<10} {:>8} {:>8} {:>8}",
            a.hits - b.hits,
            a.misses - b.misses,
            a.len
        );
    }
    println!("\npymalloc pools in use: {pools_before} before, {pools_after} after (no new pool)");
    println!(
        "sizes: getsizeof([]) = {}, getsizeof({{}}) = {}",
        getsizeof(&List::new()),
        getsizeof(&Dict::new())
    );
    assert_eq!(pools_before, pools_after);
    assert_eq!(after.list.misses, before.list.misses);
}
