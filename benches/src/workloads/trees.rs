//! binary-trees, the benchmarks-game program: build one long-lived tree, then for each depth
//! many short-lived trees, each walked to count its nodes. Depths are spread over threads.

use super::{Params, parallel};
use crate::measure::{Outcome, Probe};

struct Node {
    left: Option<Box<Node>>,
    right: Option<Box<Node>>,
}

fn build(depth: u32) -> Box<Node> {
    if depth == 0 {
        Box::new(Node {
            left: None,
            right: None,
        })
    } else {
        Box::new(Node {
            left: Some(build(depth - 1)),
            right: Some(build(depth - 1)),
        })
    }
}

fn check(n: &Node) -> u64 {
    1 + n.left.as_deref().map_or(0, check) + n.right.as_deref().map_or(0, check)
}

/// Nodes in a complete tree of `depth`.
fn nodes(depth: u32) -> u64 {
    (1u64 << (depth + 1)) - 1
}

pub(crate) fn run(p: &Params, probe: &mut Probe) -> Outcome {
    const MIN_DEPTH: u32 = 4;
    // Full scale: depth 18 (the game uses 21, which takes a while on small machines).
    let max_depth = (MIN_DEPTH + 2).max((18.0 + p.scale.log2().min(0.0)).round() as u32);
    let long_lived = build(max_depth);
    let depths: Vec<u32> = (MIN_DEPTH..=max_depth).step_by(2).collect();
    let results = parallel(p.threads, |t| {
        let mut sum = 0u64;
        for &d in depths.iter().skip(t).step_by(p.threads) {
            let iterations = 1u64 << (max_depth - d + MIN_DEPTH);
            for _ in 0..iterations {
                let tree = build(d);
                let c = check(&tree);
                assert_eq!(c, nodes(d), "tree of depth {d} lost nodes");
                sum += c;
            }
        }
        sum
    });
    let long = check(&long_lived);
    assert_eq!(long, nodes(max_depth));
    probe.live(Some(long * std::mem::size_of::<Node>() as u64));
    drop(long_lived);
    let checksum = results.iter().sum::<u64>() + long;
    Outcome {
        ops: checksum,
        checksum,
    }
}

/// The checksum `run` must produce for `scale` (independent of threads and allocator).
pub(crate) fn expected(scale: f64) -> u64 {
    const MIN_DEPTH: u32 = 4;
    let max_depth = (MIN_DEPTH + 2).max((18.0 + scale.log2().min(0.0)).round() as u32);
    let short: u64 = (MIN_DEPTH..=max_depth)
        .step_by(2)
        .map(|d| (1u64 << (max_depth - d + MIN_DEPTH)) * nodes(d))
        .sum();
    short + nodes(max_depth)
}
