//! py-churn: Python-like object churn. Every tick each thread creates objects of 16-64 bytes
//! (two to eight words, like small ints, tuples and list shells) with random lifetimes: most
//! die within a few ticks, some live long. Objects are kept in a timing wheel keyed by their
//! death tick, so frees come in a different order from allocations.

use super::{Params, parallel};
use crate::Rng;
use crate::measure::{Outcome, Probe};

const WHEEL: usize = 256;
const PER_TICK: usize = 64;

fn lifetime(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=69 => 1 + rng.below(4),
        70..=94 => 1 + rng.below(64),
        _ => 1 + rng.below(WHEEL - 1),
    }
}

pub(crate) fn run(p: &Params, probe: &mut Probe) -> Outcome {
    let ticks = p.scaled(40_000, 50) / p.threads;
    let results = parallel(p.threads, |t| {
        let mut rng = Rng::new(t as u64 + 4242);
        let mut wheel: Vec<Vec<Box<[u64]>>> = (0..WHEEL).map(|_| Vec::new()).collect();
        let mut sum = 0u64;
        let mut made = 0u64;
        for tick in 0..ticks {
            for obj in wheel[tick % WHEEL].drain(..) {
                assert_eq!(
                    obj[obj.len() - 1],
                    obj[0] ^ obj.len() as u64,
                    "object damaged"
                );
                sum = sum.wrapping_add(obj[0]);
            }
            for _ in 0..PER_TICK {
                let words = rng.range(2, 8);
                let id = made;
                made += 1;
                let mut obj = vec![id; words].into_boxed_slice();
                obj[words - 1] = id ^ words as u64;
                let dies = (tick + lifetime(&mut rng)) % WHEEL;
                wheel[dies].push(obj);
            }
        }
        let live: u64 = wheel.iter().flatten().map(|o| 8 * o.len() as u64).sum();
        (sum, made, live, wheel)
    });
    probe.live(Some(results.iter().map(|r| r.2).sum()));
    let mut checksum = 0u64;
    for (sum, _, _, wheel) in results {
        checksum = checksum.wrapping_add(sum);
        for obj in wheel.into_iter().flatten() {
            checksum = checksum.wrapping_add(obj[0]);
        }
    }
    Outcome {
        ops: (ticks * PER_TICK * p.threads) as u64,
        checksum,
    }
}
