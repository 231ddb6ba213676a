//! The seed text's leak and its fixes: reference cycles (`a1.child = a2; a2.child = a1`) that
//! counts alone never free, the collector finding them, a weak back-reference that needs no
//! collector, and the gc module's counters; with pymalloc's view of the memory at each step.
//! The gc module itself, and what a collection costs beside python3, are in the `gcmodule`
//! example.
//!
//! Run: `cargo run --release -p pymalloc-objects --example cycles`

use std::time::Instant;

use pymalloc_objects::{Class, Dict, List, WeakRef, allocator, clear_free_lists, gc};

fn blocks() -> usize {
    clear_free_lists();
    allocator().stats().blocks_in_use()
}

fn rss_mib() -> f64 {
    pymalloc_vmm_rss() as f64 / (1 << 20) as f64
}

/// The resident set from /proc/self/statm (pages * 4 KiB), 0 where there is none.
fn pymalloc_vmm_rss() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn main() {
    let class = Class::new("A");
    let cycle_ref = || {
        let (a1, a2) = (class.instantiate(), class.instantiate());
        a1.setattr("child", a2.clone());
        a2.setattr("child", a1.clone());
    };

    println!("1. The leak: cycle_ref() in a loop with the collector off");
    gc::disable();
    let base = blocks();
    for round in 1..=5 {
        for _ in 0..100_000 {
            cycle_ref();
        }
        println!(
            "   after {:>6} calls: {:>7} blocks in use (+{}), RSS {:.1} MiB",
            round * 100_000,
            blocks(),
            blocks() - base,
            rss_mib()
        );
    }
    let (c0, c1, c2) = gc::get_count();
    println!("   gc.get_count() = ({c0}, {c1}, {c2})");
    let t = Instant::now();
    let n = gc::collect(2);
    println!(
        "   gc.collect() = {n} (2 instances and their 2 attribute dicts per call), {:.1} ms; blocks in use now +{}",
        t.elapsed().as_secs_f64() * 1e3,
        blocks() - base
    );

    println!(
        "\n2. The same loop with the collector on (thresholds {:?})",
        gc::get_threshold()
    );
    gc::enable();
    for round in 1..=5 {
        for _ in 0..100_000 {
            cycle_ref();
        }
        println!(
            "   after {:>6} calls: +{} blocks in use, RSS {:.1} MiB",
            round * 100_000,
            blocks() - base,
            rss_mib()
        );
    }
    let stats = gc::get_stats();
    println!("   collections per generation (runs, objects found): {stats:?}");
    println!("   a last gc.collect() = {}", gc::collect(2));

    println!("\n3. The fix: a2.child = weakref.ref(a1)");
    gc::disable();
    let base = blocks();
    let freed = std::rc::Rc::new(std::cell::Cell::new(0));
    for _ in 0..100_000 {
        let (a1, a2) = (class.instantiate(), class.instantiate());
        a1.setattr("child", a2.clone());
        let f = freed.clone();
        a2.setattr(
            "child",
            WeakRef::with_callback(&a1, move |_| f.set(f.get() + 1)).expect("an instance"),
        );
    }
    println!(
        "   100000 calls: callbacks fired {}, blocks in use +{}, gc.collect() = {}",
        freed.get(),
        blocks() - base,
        gc::collect(2)
    );
    for (what, obj) in [
        ("[]", List::new().into_obj()),
        ("{}", Dict::new().into_obj()),
    ] {
        match WeakRef::new(&obj) {
            Ok(_) => println!("   weakref.ref({what}): accepted?"),
            Err(e) => println!("   weakref.ref({what}): {e}"),
        }
    }
    gc::enable();
}
