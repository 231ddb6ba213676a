//! Layer −1 of pymalloc-rs: anonymous virtual memory straight from the OS.
//!
//! ```text
//! +2  pymalloc   arenas (1 MiB) > pools (16 KiB) > blocks      crate `pymalloc`
//! +1  raw        the C library's malloc                        crate `pymalloc-raw`
//! -1  vmm        mmap / munmap / madvise / mremap, page size   this crate
//! ```
//!
//! Everything the layers above take from the kernel comes through here, so this is the one place
//! that counts how much address space the process has mapped for us (see [`stats`]).
//!
//! # Glossary
//! - **OS page**: the kernel's unit of mapping, [`page_size`] bytes (4 KiB on x86-64 Linux, 16 or
//!   64 KiB on some aarch64 systems: it is queried at run time, never assumed).
//! - **mapping**: a run of whole OS pages obtained from [`map`] or [`map_aligned`].
//! - **decommit**: give the physical pages back ([`decommit`]) while keeping the addresses
//!   reserved; the next touch faults in zero-filled pages.
//!
//! # Invariants
//! - Every address handed out is page aligned, and aligned to the requested alignment when one
//!   was given ([`map_aligned`] over-maps by `align - page` bytes and trims both ends).
//! - Lengths are rounded up to whole pages on the way in and on the way out, so callers may pass
//!   the same unrounded length to [`map`] and [`unmap`].
//! - Nothing in this crate allocates from the global allocator, takes a lock, or panics on the
//!   paths used by an allocator: every function is safe to call from inside `GlobalAlloc`.
//!   Failures are reported as `None`/`false`, never by unwinding.
//!
//! # Raw mappings and owned mappings
//! The allocator layers hold their arenas through raw pointers ([`map`] / [`unmap`], straight
//! `libc` calls): an arena outlives every Rust value that could own it, is released only when the
//! allocator decides so, and must never be unmapped by a destructor running at an unexpected
//! moment. Code that wants a mapping as an ordinary owned value (scratch buffers in tests and
//! tools, tables built outside an allocation path) uses [`Region`], a thin wrapper over
//! [`memmap2::MmapMut`] whose `Drop` unmaps it. Both are counted in [`stats`].
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod diag;
mod page_alloc;
mod region;
mod sys;

pub use page_alloc::PageAlloc;
pub use region::Region;

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Size of an OS page in bytes, queried from the kernel once and cached.
///
/// Always a power of two. Never allocates.
#[inline]
pub fn page_size() -> usize {
    // Relaxed is enough: every thread that races here computes and stores the same value.
    let cached = PAGE_SIZE.load(Relaxed);
    if cached != 0 {
        return cached;
    }
    let queried = sys::query_page_size();
    PAGE_SIZE.store(queried, Relaxed);
    queried
}

static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// Rounds `len` up to a whole number of OS pages; `None` if that overflows `usize`.
#[inline]
pub fn round_to_pages(len: usize) -> Option<usize> {
    let mask = page_size() - 1;
    Some(len.checked_add(mask)? & !mask)
}

/// Maps `len` bytes (rounded up to whole pages) of zero-filled, read-write, private anonymous
/// memory. `None` if `len` is zero, overflows, or the kernel refuses.
pub fn map(len: usize) -> Option<NonNull<u8>> {
    if len == 0 {
        return None;
    }
    let len = round_to_pages(len)?;
    let ptr = sys::map(len)?;
    COUNTERS.record_map(len);
    Some(ptr)
}

/// Maps `len` bytes (rounded up to whole pages) whose start is aligned to `align`.
///
/// `align` must be a power of two; alignments up to the page size cost nothing extra. Larger
/// ones over-map by `align - page_size()` bytes and unmap the unaligned head and the tail, so the
/// result occupies exactly `round_to_pages(len)` bytes of address space.
pub fn map_aligned(len: usize, align: usize) -> Option<NonNull<u8>> {
    if !align.is_power_of_two() {
        return None;
    }
    let page = page_size();
    if align <= page {
        return map(len);
    }
    if len == 0 {
        return None;
    }
    let len = round_to_pages(len)?;
    let (start, refused) = sys::map_aligned(len, align)?;
    COUNTERS.record_map(len);
    if refused.calls != 0 {
        // Trims the kernel refused stay mapped: count them as mapped, and as refused unmaps.
        COUNTERS.record_grow(refused.bytes);
        COUNTERS.record_refused(refused.calls, refused.bytes);
    }
    Some(start)
}

/// Unmaps `len` bytes (rounded up to whole pages) at `ptr`. Returns `false` if the kernel
/// refused: the range then stays mapped and counted in `mapped_bytes`, and the refusal is
/// counted in [`VmStats::failed_unmap_calls`] and [`VmStats::failed_unmap_bytes`]. (Linux
/// refuses when unmapping would split a mapping while the process is at `vm.max_map_count`.)
///
/// # Safety
/// - `ptr` is page aligned and `[ptr, ptr + len)` lies within mappings obtained from this crate.
/// - Nothing will touch that range again.
pub unsafe fn unmap(ptr: NonNull<u8>, len: usize) -> bool {
    let Some(len) = round_to_pages(len) else {
        return false;
    };
    // SAFETY: the caller guarantees the range is ours and dead.
    let ok = unsafe { sys::unmap(ptr.as_ptr(), len) };
    if ok {
        COUNTERS.record_unmap(len);
    } else {
        COUNTERS.record_refused(1, len);
    }
    ok
}

/// Gives the physical pages of `[ptr, ptr + len)` back to the kernel while keeping the address
/// range mapped (`madvise(MADV_DONTNEED)`). The next read of any byte in the range sees zero.
///
/// `ptr` must be page aligned; `len` is rounded up to whole pages. Returns `false` if the
/// kernel refused.
///
/// # Safety
/// - The range lies within a mapping obtained from this crate.
/// - The caller holds no data it still needs in the range: its contents are lost.
pub unsafe fn decommit(ptr: NonNull<u8>, len: usize) -> bool {
    let Some(len) = round_to_pages(len) else {
        return false;
    };
    // SAFETY: the caller guarantees the range is ours and its contents are disposable.
    let ok = unsafe { sys::decommit(ptr.as_ptr(), len) };
    if ok {
        COUNTERS.decommit_calls.fetch_add(1, Relaxed);
        COUNTERS.decommitted_bytes.fetch_add(len, Relaxed);
    }
    ok
}

/// Makes a decommitted range usable again.
///
/// On Linux a decommitted private anonymous range is still mapped read-write and faults zero
/// pages back in on first touch, so no system call is needed; the call is counted so that
/// commit/decommit traffic stays visible in [`stats`], and so that callers are already written
/// for systems whose decommit revokes access.
///
/// # Safety
/// The range lies within a mapping obtained from this crate.
pub unsafe fn recommit(ptr: NonNull<u8>, len: usize) -> bool {
    let _ = ptr;
    if round_to_pages(len).is_none() {
        return false;
    }
    COUNTERS.recommit_calls.fetch_add(1, Relaxed);
    true
}

/// Resizes the mapping at `ptr` from `old_len` to `new_len` bytes (both rounded up to pages)
/// with `mremap`. With `may_move` the kernel may relocate it (keeping page alignment only);
/// without, it grows or shrinks in place or fails. Returns the (possibly new) start.
///
/// # Safety
/// - `[ptr, ptr + old_len)` is a whole mapping, or the start of one, obtained from this crate.
/// - If the result differs from `ptr`, the old addresses are dead.
pub unsafe fn remap(
    ptr: NonNull<u8>,
    old_len: usize,
    new_len: usize,
    may_move: bool,
) -> Option<NonNull<u8>> {
    let old_len = round_to_pages(old_len)?;
    let new_len = round_to_pages(new_len)?;
    if new_len == 0 {
        return None;
    }
    // SAFETY: the caller guarantees that the old range is one of our mappings.
    let new = unsafe { sys::remap(ptr.as_ptr(), old_len, new_len, may_move) }?;
    COUNTERS.remap_calls.fetch_add(1, Relaxed);
    if new_len >= old_len {
        COUNTERS.record_grow(new_len - old_len);
    } else {
        COUNTERS.mapped.fetch_sub(old_len - new_len, Relaxed);
    }
    Some(new)
}

/// Bytes of this process currently resident in RAM, from `/proc/self/statm`.
///
/// Reads the file with raw system calls into a stack buffer, so it never allocates and may be
/// called from anywhere, including inside an allocator. `None` where `/proc` is unavailable.
pub fn resident_bytes() -> Option<usize> {
    sys::statm_resident_pages().map(|pages| pages * page_size())
}

/// A snapshot of this crate's counters, summed over every user in the process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmStats {
    /// Bytes mapped through this crate and not yet unmapped.
    pub mapped_bytes: usize,
    /// Highest value `mapped_bytes` has had.
    pub peak_mapped_bytes: usize,
    /// Successful [`map`] / [`map_aligned`] calls (and [`Region`]s created).
    pub map_calls: usize,
    /// Successful [`unmap`] calls (and [`Region`]s dropped).
    pub unmap_calls: usize,
    /// Successful [`decommit`] calls.
    pub decommit_calls: usize,
    /// Bytes passed to successful [`decommit`] calls (a running total, not a level).
    pub decommitted_bytes: usize,
    /// [`recommit`] calls.
    pub recommit_calls: usize,
    /// Successful [`remap`] calls.
    pub remap_calls: usize,
    /// Unmaps the kernel refused: [`unmap`] calls, the trims of [`map_aligned`]'s over-mapping
    /// and [`Region`]s dropped. Their ranges are still mapped (and counted in `mapped_bytes`).
    pub failed_unmap_calls: usize,
    /// Bytes those refused unmaps left mapped (a running total).
    pub failed_unmap_bytes: usize,
}

/// Reads the process-wide counters. Each field is read atomically; the set is not a single
/// atomic snapshot when other threads are mapping concurrently, except that
/// `peak_mapped_bytes >= mapped_bytes` always holds.
pub fn stats() -> VmStats {
    let c = &COUNTERS;
    let mapped = c.mapped.load(Relaxed);
    VmStats {
        mapped_bytes: mapped,
        // A mapping raises `mapped` before `peak`, so a reader between the two would see the
        // level above its own high-water mark; the peak is at least the level it passed.
        peak_mapped_bytes: c.peak.load(Relaxed).max(mapped),
        map_calls: c.map_calls.load(Relaxed),
        unmap_calls: c.unmap_calls.load(Relaxed),
        decommit_calls: c.decommit_calls.load(Relaxed),
        decommitted_bytes: c.decommitted_bytes.load(Relaxed),
        recommit_calls: c.recommit_calls.load(Relaxed),
        remap_calls: c.remap_calls.load(Relaxed),
        failed_unmap_calls: c.failed_unmap_calls.load(Relaxed),
        failed_unmap_bytes: c.failed_unmap_bytes.load(Relaxed),
    }
}

/// Process-wide counters. All are statistics only (no decision depends on them), so every
/// access is `Relaxed`: there is nothing to order them with.
struct Counters {
    mapped: AtomicUsize,             // bytes, level
    peak: AtomicUsize,               // bytes, high-water mark of `mapped`
    map_calls: AtomicUsize,          // calls
    unmap_calls: AtomicUsize,        // calls
    decommit_calls: AtomicUsize,     // calls
    decommitted_bytes: AtomicUsize,  // bytes, running total
    recommit_calls: AtomicUsize,     // calls
    remap_calls: AtomicUsize,        // calls
    failed_unmap_calls: AtomicUsize, // calls the kernel refused
    failed_unmap_bytes: AtomicUsize, // bytes, running total
}

static COUNTERS: Counters = Counters {
    mapped: AtomicUsize::new(0),
    peak: AtomicUsize::new(0),
    map_calls: AtomicUsize::new(0),
    unmap_calls: AtomicUsize::new(0),
    decommit_calls: AtomicUsize::new(0),
    decommitted_bytes: AtomicUsize::new(0),
    recommit_calls: AtomicUsize::new(0),
    remap_calls: AtomicUsize::new(0),
    failed_unmap_calls: AtomicUsize::new(0),
    failed_unmap_bytes: AtomicUsize::new(0),
};

impl Counters {
    fn record_map(&self, len: usize) {
        self.map_calls.fetch_add(1, Relaxed);
        self.record_grow(len);
    }

    fn record_grow(&self, len: usize) {
        let now = self.mapped.fetch_add(len, Relaxed) + len;
        self.peak.fetch_max(now, Relaxed);
    }

    fn record_unmap(&self, len: usize) {
        self.unmap_calls.fetch_add(1, Relaxed);
        self.mapped.fetch_sub(len, Relaxed);
    }

    fn record_refused(&self, calls: usize, len: usize) {
        self.failed_unmap_calls.fetch_add(calls, Relaxed);
        self.failed_unmap_bytes.fetch_add(len, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_is_a_power_of_two_and_cached() {
        let p = page_size();
        assert!(p.is_power_of_two() && p >= 4096, "page size {p}");
        assert_eq!(page_size(), p);
        assert_eq!(round_to_pages(1), Some(p));
        assert_eq!(round_to_pages(p), Some(p));
        assert_eq!(round_to_pages(p + 1), Some(2 * p));
        assert_eq!(round_to_pages(usize::MAX), None);
    }

    #[test]
    fn map_gives_zeroed_writable_pages_and_counts_them() {
        let before = stats();
        let len = 3 * page_size() + 1;
        let p = map(len).expect("map");
        assert_eq!(p.as_ptr() as usize % page_size(), 0);
        // SAFETY: the mapping is 4 pages long, readable and writable, and ours.
        let bytes = unsafe { core::slice::from_raw_parts_mut(p.as_ptr(), 4 * page_size()) };
        assert!(bytes.iter().all(|&b| b == 0));
        bytes.fill(0xAB);
        let during = stats();
        assert!(during.map_calls > before.map_calls);
        assert!(during.peak_mapped_bytes >= 4 * page_size());
        // SAFETY: mapped above, no longer used.
        assert!(unsafe { unmap(p, len) });
        assert!(stats().unmap_calls > before.unmap_calls);
    }

    #[test]
    fn the_peak_is_never_below_the_level_while_others_map() {
        let rounds = if cfg!(miri) { 20 } else { 2000 };
        let mapper = std::thread::spawn(move || {
            for _ in 0..rounds {
                let p = map(page_size()).expect("map");
                // SAFETY: mapped just above, never used.
                assert!(unsafe { unmap(p, page_size()) });
            }
        });
        for _ in 0..rounds {
            let s = stats();
            assert!(s.peak_mapped_bytes >= s.mapped_bytes, "{s:?}");
        }
        mapper.join().unwrap();
    }

    #[test]
    fn zero_length_and_bad_alignment_are_refused() {
        assert!(map(0).is_none());
        assert!(map_aligned(4096, 3).is_none());
        assert!(map_aligned(0, 1 << 20).is_none());
        assert!(map(usize::MAX).is_none());
    }

    #[test]
    fn map_aligned_honours_large_alignments() {
        // Miri emulates mappings with zeroed allocations: keep them small there.
        let top = if cfg!(miri) { 16 } else { 24 };
        for shift in 12..=top {
            let align = 1usize << shift;
            let len = page_size() * 3;
            let p = map_aligned(len, align).expect("map_aligned");
            assert_eq!(p.as_ptr() as usize % align, 0, "align {align}");
            // SAFETY: `len` bytes at `p` are ours and writable.
            unsafe { p.as_ptr().add(len - 1).write(7) };
            // SAFETY: mapped above, no longer used.
            assert!(unsafe { unmap(p, len) });
        }
    }

    #[test]
    fn decommit_reads_back_zero() {
        let len = 2 * page_size();
        let p = map(len).unwrap();
        // SAFETY: `len` bytes at `p` are ours.
        unsafe { p.as_ptr().write_bytes(0x5A, len) };
        // SAFETY: ours, and the contents are disposable.
        assert!(unsafe { decommit(p, len) });
        // SAFETY: still mapped and readable after decommit.
        let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), len) };
        assert!(bytes.iter().all(|&b| b == 0));
        // SAFETY: ours.
        assert!(unsafe { recommit(p, len) });
        // SAFETY: ours, writable again.
        unsafe { p.as_ptr().write(1) };
        // SAFETY: mapped above, no longer used.
        assert!(unsafe { unmap(p, len) });
    }

    #[test]
    fn remap_grows_and_keeps_contents() {
        let page = page_size();
        let p = map(page).unwrap();
        // SAFETY: one page at `p` is ours.
        unsafe { p.as_ptr().write_bytes(0x11, page) };
        // SAFETY: `p` is a whole one-page mapping from `map`.
        let q = unsafe { remap(p, page, 64 * page, true) }.expect("mremap");
        // SAFETY: the new mapping is 64 pages; the first keeps the old contents.
        let bytes = unsafe { core::slice::from_raw_parts(q.as_ptr(), 64 * page) };
        assert!(bytes[..page].iter().all(|&b| b == 0x11));
        assert!(bytes[page..].iter().all(|&b| b == 0));
        // SAFETY: `q` is a whole 64-page mapping.
        assert!(unsafe { unmap(q, 64 * page) });
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri's backend has no /proc/self/statm")]
    fn resident_bytes_is_plausible() {
        let rss = resident_bytes().expect("/proc/self/statm");
        assert!(rss > 0);
    }
}
