//! cache-scratch and cache-thrash: false sharing (after Berger et al.'s Hoard benchmarks).
//!
//! Each thread repeatedly allocates a small object, writes it many times and frees it. An
//! allocator that gives two threads objects on one cache line makes the writes fight over the
//! line. *thrash* (active) lets each thread allocate its own objects; *scratch* (passive) first
//! hands each thread an object allocated by the main thread, consecutively, which the thread
//! frees before starting, tempting the allocator to reuse that neighbouring memory.

use super::Params;
use crate::measure::{Outcome, Probe};

const OBJ_WORDS: usize = 1; // one 8-byte word, as in the original
const WRITES: usize = 1000;

fn worker(iterations: usize, t: usize) -> u64 {
    let mut sum = 0u64;
    for i in 0..iterations {
        let mut obj = Box::new([0u64; OBJ_WORDS]);
        for _ in 0..WRITES {
            // Volatile: every write reaches the object's cache line (an ordinary store could
            // be kept in a register until the loop ends, and no line would be shared).
            let word: *mut u64 = &mut obj[0];
            // SAFETY: `word` points into the live box we own.
            unsafe { word.write_volatile(word.read_volatile() + (t + i) as u64) };
        }
        sum = sum.wrapping_add(obj[0]);
    }
    sum
}

fn run(p: &Params, probe: &mut Probe, passive: bool) -> Outcome {
    let iterations = p.scaled(200_000, 10);
    // For scratch: neighbouring objects allocated here, one per thread.
    let mut handed: Vec<Option<Box<[u64; OBJ_WORDS]>>> = (0..p.threads)
        .map(|t| passive.then(|| Box::new([t as u64; OBJ_WORDS])))
        .collect();
    let handed: Vec<_> = handed
        .iter_mut()
        .map(|h| std::sync::Mutex::new(h.take()))
        .collect();
    let sums = super::parallel(p.threads, |t| {
        if let Some(first) = handed[t].lock().unwrap().take() {
            assert_eq!(first[0], t as u64);
            drop(first); // freed by another thread than the one that allocated it
        }
        worker(iterations, t)
    });
    probe.live(Some(0));
    let checksum = sums.into_iter().fold(0, u64::wrapping_add);
    Outcome {
        ops: (p.threads * iterations * WRITES) as u64,
        checksum,
    }
}

pub(crate) fn scratch(p: &Params, probe: &mut Probe) -> Outcome {
    run(p, probe, true)
}

pub(crate) fn thrash(p: &Params, probe: &mut Probe) -> Outcome {
    run(p, probe, false)
}
