//! Layer +1 of pymalloc-rs: the raw allocator, CPython's `PyMem_RawMalloc` family, over the C
//! library's `malloc`.
//!
//! ```text
//! +2  pymalloc   small requests (<= 512 B) from arenas; larger ones fall through to ...
//! +1  raw        this crate: malloc / calloc / realloc / free / posix_memalign
//! -1  vmm        the OS, which malloc itself calls (brk / mmap)
//! ```
//!
//! # Invariants
//! - A block from [`RawMalloc`] is a block of the C library's allocator and is released with
//!   `free`: it may also be freed by C code that received it, which is what a preloaded C
//!   `malloc` built on these layers will need.
//! - `malloc` returns memory aligned to [`MIN_ALIGN`] (`alignof(max_align_t)`, 16 on x86-64
//!   glibc) for any request at least that large. A request whose alignment exceeds that, or
//!   exceeds its own size (small `malloc` results may only be size-aligned on some C
//!   libraries), goes through `posix_memalign`; `realloc` of such a block allocates, copies and
//!   frees, since C `realloc` does not preserve over-alignment.
//! - Zero-size requests (a caller error under `GlobalAlloc`) are served as one byte, never UB.
//! - Failure is a null pointer; nothing here panics or allocates through Rust's allocator.
//!
//! The [`debug`] module holds CPython's debug hooks (`PYTHONMALLOC=debug`) as a wrapper,
//! [`debug::Debug`], usable over any layer.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod debug;

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;

/// The alignment every `malloc` result has when the request is at least this large.
///
/// CPython leans on the same guarantee: its `ALIGNMENT` of 16 on 64-bit builds was chosen to
/// match `malloc` (bpo-27987).
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
))]
pub const MIN_ALIGN: usize = 16;
/// The alignment every `malloc` result has when the request is at least this large.
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
)))]
pub const MIN_ALIGN: usize = 8;

/// A [`GlobalAlloc`] over the C library's `malloc`, `calloc`, `realloc`, `free` and
/// `posix_memalign`.
///
/// ```
/// use pymalloc_raw::RawMalloc;
///
/// #[global_allocator]
/// static GLOBAL: RawMalloc = RawMalloc;
///
/// let v: Vec<u64> = (0..1000).collect();
/// assert_eq!(v.iter().sum::<u64>(), 499_500);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct RawMalloc;

impl RawMalloc {
    /// Whether `layout` can be served by plain `malloc` (and so resized by `realloc`).
    #[inline(always)]
    fn plain(align: usize, size: usize) -> bool {
        align <= MIN_ALIGN && align <= size
    }

    #[cold]
    fn aligned_alloc(layout: Layout) -> *mut u8 {
        let mut out = ptr::null_mut();
        // posix_memalign wants a power of two that is also a multiple of sizeof(void*).
        let align = layout.align().max(size_of::<usize>());
        // SAFETY: `out` is a valid place for the result; `align` is a power of two multiple
        // of the pointer size, as POSIX requires.
        let rc = unsafe { libc::posix_memalign(&mut out, align, layout.size().max(1)) };
        if rc == 0 { out.cast() } else { ptr::null_mut() }
    }
}

// SAFETY: blocks come from the C allocator with at least the layout's size and alignment and
// are released exactly once with `free` (or handed to `realloc`).
unsafe impl GlobalAlloc for RawMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let size = layout.size().max(1);
        if Self::plain(layout.align(), size) {
            // SAFETY: malloc has no preconditions.
            unsafe { libc::malloc(size).cast() }
        } else {
            Self::aligned_alloc(layout)
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let size = layout.size().max(1);
        if Self::plain(layout.align(), size) {
            // SAFETY: calloc has no preconditions.
            unsafe { libc::calloc(1, size).cast() }
        } else {
            let p = Self::aligned_alloc(layout);
            if !p.is_null() {
                // SAFETY: `p` is a fresh block of at least `size` bytes.
                unsafe { p.write_bytes(0, size) };
            }
            p
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: the caller passes a live block from this allocator, which came from
        // malloc, calloc, realloc or posix_memalign, all of which `free` accepts.
        unsafe { libc::free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_size = new_size.max(1);
        if Self::plain(layout.align(), new_size) && Self::plain(layout.align(), layout.size()) {
            // SAFETY: `ptr` is a live malloc block; on failure it is left untouched.
            return unsafe { libc::realloc(ptr.cast(), new_size).cast() };
        }
        // SAFETY: `realloc`'s contract makes (new_size, align) a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a valid layout.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live and distinct, and each holds at least the bytes
            // copied.
            unsafe {
                ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                libc::free(ptr.cast());
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alignment_and_a_spread_of_sizes() {
        // Miri is slow: a sample of the sizes there, and no block past glibc's mmap threshold
        // (Miri's allocations do not go through glibc anyway).
        let step = if cfg!(miri) { 37 } else { 1 };
        let large: &[usize] = if cfg!(miri) {
            &[1000, 4095, 4096]
        } else {
            &[1000, 4095, 4096, 70_000]
        };
        for shift in 0..=12 {
            let align = 1usize << shift;
            for size in (1..=300).step_by(step).chain(large.iter().copied()) {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero size; every block is freed once with its layout.
                unsafe {
                    let p = RawMalloc.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write_bytes(0xA5, size);
                    let q = RawMalloc.realloc(p, layout, size * 2 + 7);
                    assert!(!q.is_null());
                    assert_eq!(q as usize % align, 0, "realloc size {size} align {align}");
                    assert!((0..size).all(|i| *q.add(i) == 0xA5));
                    q.add(size * 2 + 6).write(0);
                    let grown = Layout::from_size_align(size * 2 + 7, align).unwrap();
                    let r = RawMalloc.realloc(q, grown, 1);
                    assert_eq!(*r, 0xA5);
                    assert_eq!(r as usize % align, 0);
                    RawMalloc.dealloc(r, Layout::from_size_align(1, align).unwrap());
                }
            }
        }
    }

    #[test]
    fn zeroed_blocks_are_zero_at_every_alignment() {
        for shift in 0..=12 {
            let layout = Layout::from_size_align(777, 1 << shift).unwrap();
            // SAFETY: non-zero size; freed with its layout.
            unsafe {
                let p = RawMalloc.alloc(layout);
                p.write_bytes(0xFF, 777);
                RawMalloc.dealloc(p, layout);
                let z = RawMalloc.alloc_zeroed(layout);
                assert!(core::slice::from_raw_parts(z, 777).iter().all(|&b| b == 0));
                RawMalloc.dealloc(z, layout);
            }
        }
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "Miri stops the program on a huge allocation instead of returning null"
    )]
    fn an_impossible_request_returns_null() {
        // black_box keeps the optimiser from eliding the allocation (LLVM may assume an
        // unused malloc succeeds).
        let layout = Layout::from_size_align(isize::MAX as usize - 4096, 8).unwrap();
        // SAFETY: a valid layout; the result is checked before any use.
        let p = core::hint::black_box(unsafe { RawMalloc.alloc(core::hint::black_box(layout)) });
        assert!(p.is_null());
        let layout = Layout::from_size_align(isize::MAX as usize - 8192, 4096).unwrap();
        // SAFETY: as above.
        let p =
            core::hint::black_box(unsafe { RawMalloc.alloc_zeroed(core::hint::black_box(layout)) });
        assert!(p.is_null());
    }
}
