//! collections and intern: real std containers doing real work.

use std::collections::{BTreeMap, HashMap};

use super::{Params, parallel};
use crate::Rng;
use crate::measure::{Outcome, Probe};

/// Builds `HashMap<String, Vec<u64>>` and `BTreeMap<u64, String>` of many entries, queries
/// them, and drops them, for a few rounds per thread.
pub(crate) fn maps(p: &Params, probe: &mut Probe) -> Outcome {
    const ROUNDS: usize = 3;
    let entries = p.scaled(200_000, 50) / p.threads;
    let results = parallel(p.threads, |t| {
        let mut rng = Rng::new(t as u64 + 300);
        let mut sum = 0u64;
        let mut kept = None;
        for round in 0..ROUNDS {
            let mut hash: HashMap<String, Vec<u64>> = HashMap::new();
            let mut tree: BTreeMap<u64, String> = BTreeMap::new();
            for i in 0..entries {
                let key = format!("key-{t}-{round}-{}", rng.below(entries * 2));
                let n = rng.below(16);
                hash.entry(key)
                    .or_default()
                    .extend((0..n as u64).map(|k| k + i as u64));
                tree.insert(rng.bits() >> 16, format!("value {i}"));
            }
            for i in 0..entries {
                let key = format!("key-{t}-{round}-{}", i * 2);
                if let Some(v) = hash.get(&key) {
                    sum = sum.wrapping_add(v.iter().sum::<u64>());
                }
            }
            sum = sum.wrapping_add(
                tree.range(..u64::MAX / 2)
                    .map(|(k, v)| k ^ v.len() as u64)
                    .fold(0, u64::wrapping_add),
            );
            if round == ROUNDS - 1 {
                kept = Some((hash, tree));
            }
        }
        (sum, kept)
    });
    probe.live(None);
    let checksum = results.iter().fold(0u64, |a, r| a.wrapping_add(r.0));
    drop(results);
    Outcome {
        ops: (ROUNDS * entries * p.threads) as u64,
        checksum,
    }
}

/// Interns a stream of freshly built strings drawn from a skewed vocabulary: most lookups hit,
/// each token is a short-lived `String`, the table of unique strings grows.
pub(crate) fn intern(p: &Params, probe: &mut Probe) -> Outcome {
    let tokens = p.scaled(3_000_000, 200) / p.threads;
    let vocabulary = p.scaled(200_000, 20);
    let results = parallel(p.threads, |t| {
        let mut rng = Rng::new(t as u64 + 900);
        let mut ids: HashMap<Box<str>, u32> = HashMap::new();
        let mut names: Vec<Box<str>> = Vec::new();
        let mut sum = 0u64;
        for _ in 0..tokens {
            // Skewed: a few words are very common (the square of a uniform draw).
            let r = rng.below(vocabulary);
            let w = r * r / vocabulary;
            let token = format!("identifier_{w}");
            let id = match ids.get(token.as_str()) {
                Some(&id) => id,
                None => {
                    let id = names.len() as u32;
                    let boxed: Box<str> = token.into_boxed_str();
                    names.push(boxed.clone());
                    ids.insert(boxed, id);
                    id
                }
            };
            debug_assert_eq!(&*names[id as usize], format!("identifier_{w}"));
            sum = sum.wrapping_add(w as u64);
        }
        (sum, names.len() as u64, (ids, names))
    });
    probe.live(None);
    let checksum = results
        .iter()
        .fold(0u64, |a, r| a.wrapping_add(r.0).wrapping_add(r.1 << 32));
    drop(results);
    Outcome {
        ops: (tokens * p.threads) as u64,
        checksum,
    }
}
