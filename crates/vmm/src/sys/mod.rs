//! Platform calls, one module per platform family chosen by `cfg`.
//!
//! Only Linux is implemented: it is the platform the allocator is measured and tested on, and
//! `mremap` and `/proc/self/statm` are Linux interfaces. A port adds a sibling module with the
//! same functions.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::*;

#[cfg(not(target_os = "linux"))]
compile_error!("pymalloc-vmm supports Linux only for now: add a `sys` module for this platform");
