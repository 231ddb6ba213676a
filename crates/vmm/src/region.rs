//! [`Region`]: an owned anonymous mapping, unmapped when dropped.

use core::mem::ManuallyDrop;
use core::ptr::NonNull;
use std::io;

use crate::{COUNTERS, page_size, round_to_pages};

/// An anonymous read-write mapping owned like any other Rust value: its `Drop` unmaps it.
///
/// Built on [`memmap2::MmapMut`]. Use it for scratch memory outside allocation paths (tests,
/// tools, one-off tables); the allocator layers hold their arenas with [`crate::map`] instead,
/// because those must never be unmapped by a destructor (see the crate docs).
///
/// ```
/// let mut r = pymalloc_vmm::Region::new(10_000).unwrap();
/// assert_eq!(r.len() % pymalloc_vmm::page_size(), 0);
/// r.as_mut_slice()[9_999] = 1;
/// ```
#[derive(Debug)]
pub struct Region {
    map: ManuallyDrop<memmap2::MmapMut>, // owns the mapping; len is a whole number of pages
}

impl Region {
    /// Maps `len` bytes, rounded up to whole pages, zero-filled.
    ///
    /// # Errors
    /// The OS error if the kernel refuses, or `InvalidInput` if `len` is zero or overflows.
    pub fn new(len: usize) -> io::Result<Self> {
        let len = round_to_pages(len)
            .filter(|&l| l != 0)
            .ok_or(io::ErrorKind::InvalidInput)?;
        let map = memmap2::MmapOptions::new().len(len).map_anon()?;
        COUNTERS.record_map(len);
        Ok(Self {
            map: ManuallyDrop::new(map),
        })
    }

    /// Length in bytes (a multiple of [`page_size`]).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Always `false`: a region holds at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The start of the region, page aligned.
    pub fn as_ptr(&self) -> NonNull<u8> {
        debug_assert_eq!(self.map.as_ptr() as usize % page_size(), 0);
        // SAFETY: a successful mapping never starts at address 0.
        unsafe { NonNull::new_unchecked(self.map.as_ptr().cast_mut()) }
    }

    /// The region's bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.map
    }

    /// Drops the physical pages (they read back as zero) but keeps the region mapped.
    pub fn decommit(&mut self) -> bool {
        let len = self.len();
        // A pointer derived from `&mut`: decommitting changes the bytes (found by Miri: one
        // derived from `as_ptr`, a shared borrow, may not be used to change them).
        let ptr = NonNull::from(self.as_mut_slice()).cast::<u8>();
        // SAFETY: the whole region is ours, and `&mut self` proves no borrow of its bytes is
        // live, so discarding the contents is fine.
        unsafe { crate::decommit(ptr, len) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // Unmapped here rather than by memmap2's Drop, which ignores a refusal: a refused
        // unmap is counted and the range stays counted as mapped. The `MmapMut` itself is then
        // forgotten (it owns nothing else). `munmap` itself, not `sys::unmap`: memmap2 mapped
        // the region with `mmap` even under Miri, where `sys` emulates mappings.
        let len = self.map.len();
        let ptr = NonNull::from(&mut **self.map).cast::<libc::c_void>();
        // SAFETY: the region is a whole mapping of `len` bytes made by memmap2 with `mmap`,
        // nothing borrows it (`&mut self`), and the `MmapMut` is never used or dropped again.
        if unsafe { libc::munmap(ptr.as_ptr(), len) } == 0 {
            COUNTERS.record_unmap(len);
        } else {
            COUNTERS.record_refused(1, len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_is_zeroed_writable_and_decommits() {
        let mut r = Region::new(1).unwrap();
        assert_eq!(r.len(), page_size());
        assert!(!r.is_empty());
        assert!(r.as_mut_slice().iter().all(|&b| b == 0));
        r.as_mut_slice().fill(9);
        assert!(r.decommit());
        assert!(r.as_mut_slice().iter().all(|&b| b == 0));
    }

    #[test]
    fn zero_length_is_an_error() {
        assert_eq!(
            Region::new(0).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
