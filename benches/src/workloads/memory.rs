//! memory: builds a live set of a known number of bytes of small objects (16-128 B, requested
//! sizes summing to the target), marks the live point (the program reads RSS there), then frees
//! everything in random order (the program reads RSS again after it returns). RSS at the live
//! point over the live bytes is the allocator's space overhead; RSS after the free phase is
//! what it keeps from the OS.

use super::{Params, live_set, parallel};
use crate::Rng;
use crate::measure::{Outcome, Probe};

pub(crate) fn run(p: &Params, probe: &mut Probe) -> Outcome {
    let target = p.scaled(192 << 20, 64 << 10) / p.threads; // bytes per thread
    let mut sets = parallel(p.threads, |t| {
        live_set(t, t as u64 + 31337, target, 16, 128)
    });
    let live: u64 = sets.iter().map(|s| s.1).sum();
    probe.live(Some(live));
    let mut checksum = 0u64;
    let mut rng = Rng::new(99);
    let mut objects = 0u64;
    for (set, _) in &mut sets {
        objects += set.len() as u64;
        while !set.is_empty() {
            let (b, tag) = set.swap_remove(rng.below(set.len()));
            checksum = checksum.wrapping_add(b.take(tag));
        }
    }
    Outcome {
        ops: objects,
        checksum,
    }
}
