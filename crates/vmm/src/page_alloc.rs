//! [`PageAlloc`]: every request is its own mapping.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};

use crate::{map_aligned, page_size, remap, round_to_pages, unmap};

/// A [`GlobalAlloc`] that gives every request its own anonymous mapping, rounded up to whole
/// OS pages, at any power-of-two alignment.
///
/// It wastes most of a page on small requests and costs a system call per operation, so it is
/// meant for large blocks, as the bottom layer of a stack of allocators, and as a simple
/// reference allocator in tests. `alloc_zeroed` is free (fresh mappings are zero-filled) and
/// `realloc` uses `mremap`, which moves page tables instead of copying bytes.
///
/// ```
/// use std::alloc::{GlobalAlloc, Layout};
/// use pymalloc_vmm::PageAlloc;
///
/// let layout = Layout::from_size_align(10_000, 64).unwrap();
/// // SAFETY: the layout has a non-zero size; the block is freed with the same layout.
/// unsafe {
///     let p = PageAlloc.alloc_zeroed(layout);
///     assert!(!p.is_null() && p as usize % 64 == 0 && *p.add(9_999) == 0);
///     PageAlloc.dealloc(p, layout);
/// }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct PageAlloc;

// SAFETY: every block is a distinct mapping of at least `size` bytes at the requested
// alignment, and is released only by `dealloc`/`realloc` with the layout it was made with.
unsafe impl GlobalAlloc for PageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // A zero-size request (a caller error under `GlobalAlloc`) gets one page rather than UB.
        map_aligned(layout.size().max(1), layout.align()).map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract; fresh anonymous mappings are zero-filled by the kernel.
        unsafe { self.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: the caller passes a block from `alloc` with its layout, i.e. a whole
            // mapping of `round_to_pages(size)` bytes, and never uses it again.
            unsafe { unmap(p, layout.size().max(1)) };
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (Some(old_len), Some(new_len)) = (
            round_to_pages(layout.size().max(1)),
            round_to_pages(new_size.max(1)),
        ) else {
            return ptr::null_mut();
        };
        let Some(old) = NonNull::new(ptr) else {
            return ptr::null_mut();
        };
        if new_len == old_len {
            return ptr;
        }
        if new_len < old_len {
            // Shrinking: drop the tail pages in place; the start (and its alignment) stays.
            // SAFETY: `[ptr + new_len, ptr + old_len)` is the tail of this block's mapping,
            // beyond the `new_size` bytes the caller keeps.
            unsafe { unmap(NonNull::new_unchecked(ptr.add(new_len)), old_len - new_len) };
            return ptr;
        }
        // Growing. mremap keeps page alignment, so with MAYMOVE it serves any alignment up to
        // a page; larger alignments may only grow in place.
        let may_move = layout.align() <= page_size();
        // SAFETY: `ptr` is a whole mapping of `old_len` bytes; on success the old range is
        // dead, which the `realloc` contract already says of `ptr`.
        if let Some(new) = unsafe { remap(old, old_len, new_len, may_move) } {
            return new.as_ptr();
        }
        if may_move {
            return ptr::null_mut();
        }
        // SAFETY: `new_size` is non-zero and `Layout`-valid per the realloc contract.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a valid layout.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live and distinct; `layout.size()` bytes of the old one
            // are initialised as far as the caller is concerned.
            unsafe {
                ptr::copy_nonoverlapping(ptr, new, layout.size());
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(size: usize, align: usize) {
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: non-zero layout; freed below with the same layout.
        unsafe {
            let p = PageAlloc.alloc(layout);
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0);
            p.write_bytes(0xC3, size);
            let q = PageAlloc.realloc(p, layout, size * 3);
            assert!(!q.is_null());
            assert_eq!(q as usize % align, 0);
            for i in 0..size {
                assert_eq!(*q.add(i), 0xC3);
            }
            q.add(size * 3 - 1).write(1);
            let grown = Layout::from_size_align(size * 3, align).unwrap();
            let r = PageAlloc.realloc(q, grown, size / 2 + 1);
            assert_eq!(r, q, "shrinking stays in place");
            assert_eq!(*r, 0xC3);
            PageAlloc.dealloc(r, Layout::from_size_align(size / 2 + 1, align).unwrap());
        }
    }

    #[test]
    fn sizes_and_alignments() {
        // Miri emulates mappings with zeroed allocations: keep them small there.
        let (aligns, sizes): (&[usize], &[usize]) = if cfg!(miri) {
            (&[1, 4096, 1 << 16], &[1, 4097, 20_000])
        } else {
            (
                &[1, 16, 4096, 1 << 16, 1 << 21],
                &[1, 100, 4095, 4096, 4097, 100_000],
            )
        };
        for &align in aligns {
            for &size in sizes {
                check(size, align);
            }
        }
    }

    #[test]
    fn zeroed_is_zero() {
        let layout = Layout::from_size_align(50_000, 8).unwrap();
        // SAFETY: non-zero layout, freed with the same layout.
        unsafe {
            let p = PageAlloc.alloc_zeroed(layout);
            assert!(
                core::slice::from_raw_parts(p, 50_000)
                    .iter()
                    .all(|&b| b == 0)
            );
            PageAlloc.dealloc(p, layout);
        }
    }
}
