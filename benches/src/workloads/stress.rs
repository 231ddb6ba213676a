//! stress: a random live set of random sizes (mostly small, some up to 4 KiB, above the
//! 512-byte threshold), with objects handed between threads through a shared exchange (in the
//! spirit of mimalloc's test-stress and mstress).

use std::sync::Mutex;

use super::{Block, Params, parallel};
use crate::Rng;
use crate::measure::{Outcome, Probe};

const EXCHANGE_SLOTS: usize = 1024;

fn size(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=79 => rng.range(8, 256),
        80..=94 => rng.range(257, 1024),
        _ => rng.range(1025, 4096),
    }
}

pub(crate) fn run(p: &Params, probe: &mut Probe) -> Outcome {
    let steps = p.scaled(1_200_000, 100) / p.threads;
    let exchange: Vec<Mutex<Option<(Block, u64)>>> =
        (0..EXCHANGE_SLOTS).map(|_| Mutex::new(None)).collect();
    let results = parallel(p.threads, |t| {
        let mut rng = Rng::new(1000 + t as u64);
        let mut live: Vec<(Block, u64)> = Vec::new();
        let mut sum = 0u64;
        for k in 0..steps {
            // A fixed number of draws per step, whatever the state: the requests (and so the
            // checksum, the sum of every tag allocated) do not depend on thread interleaving.
            let op = rng.below(100);
            let pick = rng.bits() as usize;
            let size = size(&mut rng);
            let tag = ((t as u64) << 40) | k as u64;
            if op < 46 || live.is_empty() && op < 90 {
                if op < 46 {
                    live.push((Block::new(size, tag), tag));
                }
            } else if op < 90 {
                let (b, tag) = live.swap_remove(pick % live.len());
                sum = sum.wrapping_add(b.take(tag));
            } else if !live.is_empty() {
                // Swap one of ours with whatever sits in a random exchange slot.
                let mine = live.swap_remove(pick % live.len());
                let slot = &exchange[(pick >> 32) % EXCHANGE_SLOTS];
                let theirs = slot.lock().unwrap().replace(mine);
                if let Some(obj) = theirs {
                    live.push(obj);
                }
            }
        }
        let bytes: u64 = live.iter().map(|(b, _)| b.len() as u64).sum();
        (live, sum, bytes)
    });
    let exchanged: Vec<(Block, u64)> = exchange
        .into_iter()
        .filter_map(|m| m.into_inner().unwrap())
        .collect();
    let live_bytes = results.iter().map(|r| r.2).sum::<u64>()
        + exchanged.iter().map(|(b, _)| b.len() as u64).sum::<u64>();
    probe.live(Some(live_bytes));
    // The checksum must not depend on which thread freed what: add every tag exactly once.
    let mut checksum = 0u64;
    for (live, sum, _) in results {
        checksum = checksum.wrapping_add(sum);
        for (b, tag) in live {
            checksum = checksum.wrapping_add(b.take(tag));
        }
    }
    for (b, tag) in exchanged {
        checksum = checksum.wrapping_add(b.take(tag));
    }
    Outcome {
        ops: (steps * p.threads) as u64,
        checksum,
    }
}
