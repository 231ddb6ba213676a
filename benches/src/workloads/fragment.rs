//! fragment: several threads each build a live set of small objects (16-256 B), then free it in
//! allocation order except one object in every `KEEP` (about two per MiB allocated), and mark
//! that point: the program reads RSS there, while those few survivors are scattered over every
//! region the live set used. An allocator that returns memory only when a whole region is free
//! keeps almost everything; one that gives back the pages of free runs inside a live region
//! does not. Then the survivors are freed.

use std::sync::Mutex;

use super::{Params, live_set, parallel};
use crate::measure::{Outcome, Probe};

/// One survivor per this many objects: with sizes averaging 136 B, about two per MiB.
const KEEP: u64 = 4096;

pub(crate) fn run(p: &Params, probe: &mut Probe) -> Outcome {
    let target = p.scaled(128 << 20, 64 << 10) / p.threads; // bytes per thread
    let sets = parallel(p.threads, |t| live_set(t, t as u64 + 4242, target, 16, 256));
    let live: u64 = sets.iter().map(|s| s.1).sum();
    let objects: u64 = sets.iter().map(|s| s.0.len() as u64).sum();
    probe.live(Some(live));
    // Each thread frees its own objects, oldest first, keeping every KEEP-th.
    let sets = Mutex::new(sets.into_iter().map(|s| Some(s.0)).collect::<Vec<_>>());
    let survivors = parallel(p.threads, |t| {
        let set = sets.lock().unwrap()[t].take().unwrap();
        let mut kept = Vec::new();
        let mut checksum = 0u64;
        for (i, (b, tag)) in set.into_iter().enumerate() {
            if i as u64 % KEEP == KEEP - 1 {
                kept.push((b, tag));
            } else {
                checksum = checksum.wrapping_add(b.take(tag));
            }
        }
        (kept, checksum)
    });
    probe.freed();
    let mut checksum = 0u64;
    for (kept, partial) in survivors {
        checksum = checksum.wrapping_add(partial);
        for (b, tag) in kept {
            checksum = checksum.wrapping_add(b.take(tag));
        }
    }
    Outcome {
        ops: objects,
        checksum,
    }
}
