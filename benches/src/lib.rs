//! The benchmark instrument of pymalloc-rs: workload programs run side by side under glibc,
//! PyMalloc, mimalloc and jemalloc, and the runner that compares them.
//!
//! - [`workloads`]: the programs, written once; each `examples/workload-<alloc>.rs` binary is the
//!   same code with a different `#[global_allocator]`.
//! - [`measure`]: wall and CPU time, peak RSS (`getrusage`), RSS at the live point and after
//!   the free phase (`/proc/self/statm`), and the one machine-readable line a run prints.
//! - `src/bin/compare.rs`: builds the per-allocator binaries, runs them interleaved, and prints
//!   (or writes to `docs/BENCHMARKS.md`) medians, spreads and PyMalloc's ratios to each peer.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod measure;
pub mod workloads;

/// A small deterministic PRNG (xorshift64*): workloads replay exactly from their seed, so every
/// allocator sees the same sequence of requests.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value, zero included).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03 | 1)
    }

    /// The next 64 random bits.
    pub fn bits(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.bits() >> 32) * n as u64) >> 32) as usize
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
}
