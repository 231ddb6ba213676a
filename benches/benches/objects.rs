//! Layer +3: a free-list hit against an alloc+free pair of each allocator, for list-sized
//! (56 B) and dict-sized (64 B) blocks; creating and dropping lists and dicts with the free
//! lists on and off. `cargo bench -p pymalloc-benches --bench objects`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use pymalloc::PyMalloc;
use pymalloc_freelist::FreeList;
use pymalloc_objects::{Dict, Int, List, Str, set_free_lists};

static PYMALLOC: PyMalloc = PyMalloc::new();
static MIMALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
static JEMALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// One alloc+free pair of `a` for `l`.
fn pair(a: &dyn GlobalAlloc, l: Layout) {
    // SAFETY: a valid non-zero layout; the block is freed at once with it.
    unsafe {
        let p = a.alloc(l);
        black_box(p);
        a.dealloc(p, l);
    }
}

fn hit_vs_pair(c: &mut Criterion) {
    let mut g = c.benchmark_group("freelist-hit-vs-pair");
    for (what, size) in [("list", 56usize), ("dict", 64)] {
        let l = Layout::from_size_align(size, 8).expect("valid layout");
        let list = FreeList::new(l, 80, &PYMALLOC);
        // Prime the list with one block: every alloc below is a hit.
        let b = list.alloc();
        // SAFETY: a live block of the list.
        unsafe { list.free(b) };
        g.bench_function(BenchmarkId::new("freelist-hit", what), |bn| {
            bn.iter(|| {
                let p = list.alloc();
                black_box(p);
                // SAFETY: a live block of the list, freed once.
                unsafe { list.free(p) };
            })
        });
        for (name, a) in [
            ("glibc", &System as &dyn GlobalAlloc),
            ("pymalloc", &PYMALLOC),
            ("mimalloc", &MIMALLOC),
            ("jemalloc", &JEMALLOC),
        ] {
            g.bench_function(BenchmarkId::new(name, what), |bn| bn.iter(|| pair(a, l)));
        }
    }
    g.finish();
}

fn objects(c: &mut Criterion) {
    let mut g = c.benchmark_group("objects");
    for on in [true, false] {
        let tag = if on { "freelists-on" } else { "freelists-off" };
        set_free_lists(on);
        g.bench_function(BenchmarkId::new("list-new-drop", tag), |b| {
            b.iter(|| black_box(List::new()))
        });
        g.bench_function(BenchmarkId::new("str5-new-drop", tag), |b| {
            b.iter(|| black_box(Str::new(black_box("hello"))))
        });
        g.bench_function(BenchmarkId::new("dict-new-set-drop", tag), |b| {
            b.iter(|| {
                let d = Dict::new();
                d.set(Int::new(1), Int::new(2)).expect("hashable");
                black_box(d)
            })
        });
    }
    set_free_lists(true);
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = hit_vs_pair, objects
}
criterion_main!(benches);
