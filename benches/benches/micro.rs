//! Micro-benchmarks: each allocator called through `GlobalAlloc` in this one binary, so they
//! share the machine state of one run. `cargo bench -p pymalloc-benches`.
//!
//! Groups: alloc+free pairs by size; a batch of N allocations freed in LIFO, FIFO and random
//! order; realloc growth from 16 B to 64 KiB; alloc_zeroed; cross-thread free (one thread
//! allocates, another frees).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use pymalloc::PyMalloc;
use pymalloc_benches::Rng;
use pymalloc_raw::RawMalloc;

static PYMALLOC: PyMalloc = PyMalloc::new();
static MIMALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
static JEMALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
static SYSTEM: System = System;
static RAW: RawMalloc = RawMalloc;

/// Runs `$body` once per allocator with `$a` bound to it and `$name` to its name.
macro_rules! for_each_allocator {
    (|$name:ident, $a:ident| $body:block) => {{
        {
            let ($name, $a) = ("glibc", &SYSTEM);
            $body
        }
        {
            let ($name, $a) = ("raw", &RAW);
            $body
        }
        {
            let ($name, $a) = ("pymalloc", &PYMALLOC);
            $body
        }
        {
            let ($name, $a) = ("mimalloc", &MIMALLOC);
            $body
        }
        {
            let ($name, $a) = ("jemalloc", &JEMALLOC);
            $body
        }
    }};
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).expect("valid layout")
}

fn pairs(c: &mut Criterion) {
    let mut g = c.benchmark_group("alloc-free");
    for size in [16usize, 32, 64, 128, 256, 512, 1024, 8192] {
        for_each_allocator!(|name, a| {
            g.bench_with_input(BenchmarkId::new(name, size), &size, |b, &size| {
                let l = layout(size);
                b.iter(|| {
                    // SAFETY: non-zero layout; freed at once with the same layout.
                    unsafe {
                        let p = a.alloc(black_box(l));
                        black_box(p);
                        a.dealloc(p, l);
                    }
                })
            });
        });
    }
    g.finish();
}

/// Frees `ptrs` (allocated with `sizes`) in the order given by `order`.
///
/// # Safety
/// Each pointer is live and came from `a` with `layout(sizes[i])`.
unsafe fn free_in<A: GlobalAlloc>(a: &A, ptrs: &[*mut u8], sizes: &[usize], order: &[usize]) {
    for &i in order {
        // SAFETY: per the contract, each index appears once.
        unsafe { a.dealloc(ptrs[i], layout(sizes[i])) };
    }
}

fn batches(c: &mut Criterion) {
    const N: usize = 1000;
    let mut rng = Rng::new(7);
    let sizes: Vec<usize> = (0..N).map(|_| rng.range(16, 256)).collect();
    let lifo: Vec<usize> = (0..N).rev().collect();
    let fifo: Vec<usize> = (0..N).collect();
    let mut random = fifo.clone();
    for i in (1..N).rev() {
        random.swap(i, rng.below(i + 1));
    }
    let mut g = c.benchmark_group("batch-1000");
    for (order_name, order) in [("lifo", &lifo), ("fifo", &fifo), ("random", &random)] {
        for_each_allocator!(|name, a| {
            g.bench_function(BenchmarkId::new(name, order_name), |b| {
                let mut ptrs = vec![std::ptr::null_mut(); N];
                b.iter(|| {
                    for (p, &s) in ptrs.iter_mut().zip(&sizes) {
                        // SAFETY: non-zero layout.
                        *p = unsafe { a.alloc(layout(s)) };
                    }
                    // SAFETY: every pointer is live, with its size, freed once.
                    unsafe { free_in(a, &ptrs, &sizes, order) };
                })
            });
        });
    }
    g.finish();
}

fn realloc_growth(c: &mut Criterion) {
    let mut g = c.benchmark_group("realloc-16B-to-64KiB");
    for_each_allocator!(|name, a| {
        g.bench_function(name, |b| {
            b.iter(|| {
                // SAFETY: each realloc gets the live block and its current layout; the last
                // one is freed with its layout.
                unsafe {
                    let mut size = 16;
                    let mut p = a.alloc(layout(size));
                    p.write(1);
                    while size < 64 * 1024 {
                        p = a.realloc(p, layout(size), size * 2);
                        size *= 2;
                        p.add(size - 1).write(1);
                    }
                    a.dealloc(black_box(p), layout(size));
                }
            })
        });
    });
    g.finish();
}

fn zeroed(c: &mut Criterion) {
    let mut g = c.benchmark_group("alloc_zeroed");
    for size in [64usize, 4096] {
        for_each_allocator!(|name, a| {
            g.bench_with_input(BenchmarkId::new(name, size), &size, |b, &size| {
                let l = layout(size);
                b.iter(|| {
                    // SAFETY: non-zero layout; freed at once.
                    unsafe {
                        let p = a.alloc_zeroed(l);
                        black_box(p);
                        a.dealloc(p, l);
                    }
                })
            });
        });
    }
    g.finish();
}

/// One thread allocates a batch, another frees it; the time covers both until the batch is
/// freed.
fn cross_thread(c: &mut Criterion) {
    const N: usize = 1000;
    let mut g = c.benchmark_group("cross-thread-1000x64B");
    for_each_allocator!(|name, a| {
        g.bench_function(name, |b| {
            let (tx, rx) = mpsc::channel::<Vec<usize>>();
            let (done_tx, done_rx) = mpsc::channel::<()>();
            let freer = std::thread::spawn(move || {
                for batch in rx {
                    for p in batch {
                        // SAFETY: allocated by the other thread with this layout, freed once.
                        unsafe { a.dealloc(p as *mut u8, layout(64)) };
                    }
                    done_tx.send(()).expect("bench alive");
                }
            });
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    // SAFETY: non-zero layout.
                    let batch: Vec<usize> = (0..N)
                        .map(|_| unsafe { a.alloc(layout(64)) } as usize)
                        .collect();
                    tx.send(batch).expect("freer alive");
                    done_rx.recv().expect("freer alive");
                    total += start.elapsed();
                }
                total
            });
            drop(tx);
            freer.join().expect("freer thread");
        });
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
}

criterion_group! {
    name = micro;
    config = config();
    targets = pairs, batches, realloc_growth, zeroed, cross_thread
}
criterion_main!(micro);
