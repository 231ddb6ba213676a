//! larson: a server simulation (after Larson and Krishnan's benchmark, as in mimalloc-bench).
//! Each thread owns a table of live blocks and replaces random entries with new blocks of
//! random size; between rounds the tables rotate to the next thread, so most frees hit blocks
//! another thread allocated.

use std::sync::Mutex;

use super::{Block, Params, parallel};
use crate::Rng;
use crate::measure::{Outcome, Probe};

const MIN_SIZE: usize = 8;
const MAX_SIZE: usize = 1000;
const ROUNDS: usize = 4;

/// A thread's table of live blocks with their tags.
type Table = Vec<(Block, u64)>;

pub(crate) fn run(p: &Params, probe: &mut Probe) -> Outcome {
    let slots = p.scaled(4000, 16);
    let per_round = p.scaled(1_500_000, 50) / p.threads;
    // Table t starts with blocks tagged by (t, slot).
    let mut tables: Vec<Table> = (0..p.threads)
        .map(|t| {
            let mut rng = Rng::new(t as u64);
            (0..slots)
                .map(|i| {
                    let tag = ((t as u64) << 32) | i as u64;
                    (Block::new(rng.range(MIN_SIZE, MAX_SIZE), tag), tag)
                })
                .collect()
        })
        .collect();
    let mut checksum = 0u64;
    for round in 0..ROUNDS {
        // Rotate: thread t works on the table thread t-1 filled last round.
        tables.rotate_right(1);
        // Hand table t to thread t (each thread takes exactly its own slot).
        let slots_ref: Vec<Mutex<Option<Table>>> =
            tables.drain(..).map(|w| Mutex::new(Some(w))).collect();
        let sums = parallel(p.threads, |t| {
            let mut table = slots_ref[t].lock().unwrap().take().unwrap();
            let mut rng = Rng::new(((round as u64) << 20) ^ t as u64 ^ 0xABCD);
            let mut sum = 0u64;
            for k in 0..per_round {
                let i = rng.below(table.len());
                let tag = ((round as u64) << 48) | ((t as u64) << 32) | k as u64;
                let fresh = (Block::new(rng.range(MIN_SIZE, MAX_SIZE), tag), tag);
                let (old, old_tag) = std::mem::replace(&mut table[i], fresh);
                sum = sum.wrapping_add(old.take(old_tag));
            }
            *slots_ref[t].lock().unwrap() = Some(table);
            sum
        });
        tables = slots_ref
            .into_iter()
            .map(|m| m.into_inner().unwrap().unwrap())
            .collect();
        checksum = sums.into_iter().fold(checksum, u64::wrapping_add);
    }
    let live: u64 = tables.iter().flatten().map(|(b, _)| b.len() as u64).sum();
    probe.live(Some(live));
    for (b, tag) in tables.into_iter().flatten() {
        checksum = checksum.wrapping_add(b.take(tag));
    }
    Outcome {
        ops: (ROUNDS * per_round * p.threads) as u64,
        checksum,
    }
}
