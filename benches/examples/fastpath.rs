//! The cost of the allocation fast path in instructions: `fastpath <alloc> <size> <pairs>`
//! performs that many alloc+free pairs of `size` bytes through `GlobalAlloc`. Run it under
//! `valgrind --tool=callgrind` twice (with `pairs` = 0 and N) and divide the difference by N:
//! `benches/fastpath.sh` does exactly that for every allocator. Instruction counts are
//! repeatable on a noisy machine where times are not; they do not show the cost of atomic
//! operations or cache misses, which the timed benchmarks do.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;

static PYMALLOC: pymalloc::PyMalloc = pymalloc::PyMalloc::new();
static MIMALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
static JEMALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[inline(never)]
fn pairs<A: GlobalAlloc>(a: &A, size: usize, n: usize) {
    let l = Layout::from_size_align(size, 8).expect("valid layout");
    for _ in 0..n {
        // SAFETY: non-zero layout; freed at once with the same layout.
        unsafe {
            let p = a.alloc(black_box(l));
            black_box(p);
            a.dealloc(p, l);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = || -> ! {
        eprintln!("usage: fastpath <glibc|pymalloc|mimalloc|jemalloc|freelist> <size> <pairs>");
        std::process::exit(2)
    };
    if args.len() != 4 {
        usage();
    }
    let size: usize = args[2].parse().unwrap_or_else(|_| usage());
    let n: usize = args[3].parse().unwrap_or_else(|_| usage());
    // One warm-up pair each, so that n = 0 and n = N differ only by the N measured pairs.
    match args[1].as_str() {
        "glibc" => {
            pairs(&System, size, 1);
            pairs(&System, size, n)
        }
        "pymalloc" => {
            pairs(&PYMALLOC, size, 1);
            pairs(&PYMALLOC, size, n)
        }
        "mimalloc" => {
            pairs(&MIMALLOC, size, 1);
            pairs(&MIMALLOC, size, n)
        }
        "jemalloc" => {
            pairs(&JEMALLOC, size, 1);
            pairs(&JEMALLOC, size, n)
        }
        // A free-list hit: the warm-up pair leaves one block on the list.
        "freelist" => {
            let l = Layout::from_size_align(size, 8).expect("valid layout");
            let list = pymalloc_freelist::FreeList::new(l, 80, &PYMALLOC);
            pairs(&list, size, 1);
            pairs(&list, size, n)
        }
        _ => usage(),
    }
}
