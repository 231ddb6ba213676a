//! The workload programs, written once and built once per allocator.
//!
//! Every workload is deterministic: given the same [`Params`] it makes the same requests and
//! computes the same checksum under every allocator, whatever the thread interleaving. Each
//! verifies the data it wrote before freeing it and panics on a mismatch, so a corrupting
//! allocator fails loudly instead of winning a race.

mod cache;
mod churn;
mod collections;
mod fragment;
mod json;
mod larson;
mod memory;
mod stress;
mod trees;
mod xmalloc;

use std::mem::MaybeUninit;

use crate::measure::{Outcome, Probe};

/// How big and how parallel a run is.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Worker threads.
    pub threads: usize,
    /// Scale factor: 1 is the full run used for the published figures, tiny values for tests.
    pub scale: f64,
}

impl Params {
    /// `base * scale`, at least `min`.
    pub fn scaled(&self, base: usize, min: usize) -> usize {
        ((base as f64 * self.scale) as usize).max(min)
    }
}

/// A workload: its name, what it stresses, and its entry point.
pub struct Workload {
    /// Name used on the command line.
    pub name: &'static str,
    /// One line on what it stresses.
    pub stresses: &'static str,
    /// Runs it.
    pub run: fn(&Params, &mut Probe) -> Outcome,
}

/// Every workload, in the order the runner reports them.
pub const ALL: &[Workload] = &[
    Workload {
        name: "larson",
        stresses: "server simulation: threads replace random entries of a table of live blocks; tables move between threads (remote frees)",
        run: larson::run,
    },
    Workload {
        name: "cache-scratch",
        stresses: "passive false sharing: objects first allocated by one thread, then reused by others",
        run: cache::scratch,
    },
    Workload {
        name: "cache-thrash",
        stresses: "active false sharing: each thread allocates, writes and frees its own small objects",
        run: cache::thrash,
    },
    Workload {
        name: "xmalloc",
        stresses: "producer/consumer: blocks allocated on one thread are freed on another",
        run: xmalloc::run,
    },
    Workload {
        name: "stress",
        stresses: "random live set of random sizes up to 4 KiB, objects handed between threads",
        run: stress::run,
    },
    Workload {
        name: "binary-trees",
        stresses: "the benchmarks-game program: many short-lived and some long-lived tree nodes",
        run: trees::run,
    },
    Workload {
        name: "json",
        stresses: "serde_json printing and parsing a generated document of tens of MB",
        run: json::run,
    },
    Workload {
        name: "collections",
        stresses: "HashMap<String, Vec<u64>> and BTreeMap<u64, String> built, queried and dropped",
        run: collections::maps,
    },
    Workload {
        name: "intern",
        stresses: "string interning: many short-lived strings, a growing table of unique ones",
        run: collections::intern,
    },
    Workload {
        name: "py-churn",
        stresses: "Python-like objects: 16-64 B boxed nodes with random lifetimes",
        run: churn::run,
    },
    Workload {
        name: "fragment",
        stresses: "RSS: threads build a live set, free it oldest first but one object in 4096; RSS read with those few left in every region",
        run: fragment::run,
    },
    Workload {
        name: "memory",
        stresses: "RSS: a live set of known size of small objects, then RSS after freeing it all",
        run: memory::run,
    },
];

/// The checksum a workload must produce, where it can be computed without running it.
pub fn expected_checksum(name: &str, p: &Params) -> Option<u64> {
    match name {
        "binary-trees" => Some(trees::expected(p.scale)),
        _ => None,
    }
}

/// The workload called `name`.
pub fn find(name: &str) -> Option<&'static Workload> {
    ALL.iter().find(|w| w.name == name)
}

/// A heap block of a given size whose first and last bytes carry a tag, verified on drop by
/// [`Block::take`]. Only the tag bytes are written: the workloads measure the allocator, not
/// `memset`.
pub(crate) struct Block(Box<[MaybeUninit<u8>]>);

impl Block {
    pub(crate) fn new(size: usize, tag: u64) -> Self {
        let mut b = Box::<[u8]>::new_uninit_slice(size.max(1));
        let bytes = tag.to_le_bytes();
        // The tag's low bytes go first, the marker last; they never overlap.
        let head = (b.len() - 1).min(8);
        for (dst, src) in b[..head].iter_mut().zip(bytes) {
            dst.write(src);
        }
        let last = b.len() - 1;
        b[last].write(bytes[0] ^ 0x5A);
        Block(b)
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Checks that the block still holds `tag` (panicking if not), frees it, returns `tag`.
    pub(crate) fn take(self, tag: u64) -> u64 {
        let b = &self.0;
        let head = (b.len() - 1).min(8);
        let expect = tag.to_le_bytes();
        for (i, byte) in b[..head].iter().enumerate() {
            // SAFETY: the first `head` bytes were written in `new`.
            let got = unsafe { byte.assume_init() };
            assert_eq!(
                got,
                expect[i],
                "block of {} bytes damaged at byte {i}",
                b.len()
            );
        }
        // SAFETY: the last byte was written in `new`.
        let last = unsafe { b[b.len() - 1].assume_init() };
        assert_eq!(
            last,
            expect[0] ^ 0x5A,
            "block of {} bytes damaged at its end",
            b.len()
        );
        tag
    }
}

/// Thread `t`'s share of a live set: tagged blocks of random sizes in `lo..=hi` (the `Rng`'s
/// range) from a generator seeded with `seed`, until their sizes reach `target` bytes. Returns
/// the blocks with their tags, and the bytes requested.
pub(crate) fn live_set(
    t: usize,
    seed: u64,
    target: usize,
    lo: usize,
    hi: usize,
) -> (Vec<(Block, u64)>, u64) {
    let mut rng = crate::Rng::new(seed);
    let (mut bytes, mut set) = (0u64, Vec::new());
    let mut k = 0u64;
    while bytes < target as u64 {
        let size = rng.range(lo, hi);
        bytes += size as u64;
        let tag = ((t as u64) << 40) | k;
        k += 1;
        set.push((Block::new(size, tag), tag));
    }
    (set, bytes)
}

/// Runs `f(t)` on `threads` scoped threads and collects the results in thread order.
pub(crate) fn parallel<R: Send>(threads: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let f = &f;
                s.spawn(move || f(t))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker panicked"))
            .collect()
    })
}

/// FNV-1a over bytes, for checksums of text.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}
