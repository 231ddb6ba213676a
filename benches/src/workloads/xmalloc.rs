//! xmalloc: producer/consumer (after Lever and Boreham's xmalloc-test). Producer threads
//! allocate blocks and send them in batches to consumer threads, which check and free them:
//! every free is a remote free.

use std::sync::mpsc;

use super::{Block, Params};
use crate::Rng;
use crate::measure::{Outcome, Probe};

const BATCH: usize = 128;

pub(crate) fn run(p: &Params, probe: &mut Probe) -> Outcome {
    let producers = p.threads.div_ceil(2);
    let consumers = (p.threads / 2).max(1);
    let batches_each = p.scaled(16_000, 4) / producers;
    let (tx, rx) = mpsc::sync_channel::<Vec<(Block, u64)>>(4 * consumers);
    let rx = std::sync::Mutex::new(rx);
    let checksum = std::thread::scope(|s| {
        for t in 0..producers {
            let tx = tx.clone();
            s.spawn(move || {
                let mut rng = Rng::new(t as u64 + 77);
                for b in 0..batches_each {
                    let batch = (0..BATCH)
                        .map(|k| {
                            let tag = ((t as u64) << 40) | ((b * BATCH + k) as u64);
                            (Block::new(rng.range(16, 256), tag), tag)
                        })
                        .collect();
                    tx.send(batch).expect("consumers alive");
                }
            });
        }
        drop(tx);
        let handles: Vec<_> = (0..consumers)
            .map(|_| {
                let rx = &rx;
                s.spawn(move || {
                    let mut sum = 0u64;
                    loop {
                        let next = rx.lock().unwrap().recv();
                        let Ok(batch) = next else { break };
                        for (block, tag) in batch {
                            sum = sum.wrapping_add(block.take(tag));
                        }
                    }
                    sum
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold(0, u64::wrapping_add)
    });
    probe.live(Some(0));
    Outcome {
        ops: (producers * batches_each * BATCH) as u64,
        checksum,
    }
}
