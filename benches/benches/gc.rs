//! The cycle collector against CPython 3.11's, per object: freeing N garbage 2-cycles of lists,
//! and a full collection over N live lists (tracked, all reachable). python3 runs the same two
//! measurements first (at N = 100 000), in the same process tree, and its figures are printed
//! beside the group (fastest of its rounds; criterion's estimate for ours).
//! `cargo bench -p pymalloc-benches --bench gc`.

use std::hint::black_box;
use std::process::Command;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pymalloc_objects::{List, gc};

/// Objects per measured collection.
const SIZES: [usize; 2] = [10_000, 100_000];

/// N objects in N/2 garbage 2-cycles (the collector is off while they are made).
fn garbage_cycles(n: usize) {
    for _ in 0..n / 2 {
        let (a, b) = (List::new(), List::new());
        a.append(b.clone());
        b.append(a);
    }
}

/// ns per object for python3 doing the same, fastest of 7 rounds: (freeing, live).
fn python(n: usize) -> Option<(f64, f64)> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(include_str!(
            "../../crates/objects/examples/common/gc_cost.py"
        ))
        .arg(n.to_string())
        .arg("7")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v = text.lines().filter_map(|l| l.trim().parse::<f64>().ok());
    Some((v.next()?, v.next()?))
}

fn collector(c: &mut Criterion) {
    // python3 at the larger size only: its figures have the time of an empty collection taken
    // off (the interpreter's own objects), which at 10 000 objects is most of what it measures.
    for n in [SIZES[1]] {
        match python(n) {
            Some((free, live)) => println!(
                "python3 (same machine, this run), N = {n}: freeing 2-cycles {free:.1} ns/object, full collection over live lists {live:.1} ns/object"
            ),
            None => println!("python3 did not run: no figures to set beside ours"),
        }
    }
    let mut g = c.benchmark_group("gc");
    g.measurement_time(Duration::from_secs(3));
    gc::disable();
    for n in SIZES {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("free-2-cycles", n), |b| {
            b.iter_batched(
                || garbage_cycles(n),
                |()| black_box(gc::collect(2)),
                BatchSize::PerIteration,
            )
        });
        let live: Vec<List> = (0..n).map(|_| List::new()).collect();
        gc::collect(2);
        g.bench_function(BenchmarkId::new("full-collection-live", n), |b| {
            b.iter(|| black_box(gc::collect(2)))
        });
        drop(live);
    }
    gc::enable();
    g.finish();
}

criterion_group!(benches, collector);
criterion_main!(benches);
