//! Platform calls, one module per platform family chosen by `cfg`.
//!
//! Only Linux is implemented: it is the platform the allocator is measured and tested on, and
//! `mremap` and `/proc/self/statm` are Linux interfaces. A port adds a sibling module with the
//! same functions.

#[cfg(all(target_os = "linux", not(miri)))]
mod linux;
#[cfg(all(target_os = "linux", not(miri)))]
pub(crate) use linux::*;

// Under Miri: an emulation of mappings over the system allocator (see `miri.rs`).
#[cfg(miri)]
mod miri;
#[cfg(miri)]
pub(crate) use miri::*;

#[cfg(not(any(target_os = "linux", miri)))]
compile_error!("pymalloc-vmm supports Linux only for now: add a `sys` module for this platform");

/// Pieces of an over-mapping that `map_aligned` failed to trim: still mapped, never used.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Trims {
    pub(crate) calls: usize, // refused unmaps
    pub(crate) bytes: usize, // bytes they left mapped
}

impl Trims {
    #[cfg_attr(miri, allow(dead_code))]
    pub(crate) fn add(&mut self, bytes: usize) {
        self.calls += 1;
        self.bytes += bytes;
    }
}
