//! What reaches layer +1: only requests the classes cannot serve; and a failing layer +1
//! makes exactly those return null.

use super::*;
use core::sync::atomic::{AtomicUsize, Ordering};
use pymalloc::{Py37, Py310};

/// Counts the calls that reach it, then forwards to malloc.
#[derive(Default)]
struct Counting {
    calls: AtomicUsize,
}

// SAFETY: forwards to RawMalloc, which upholds the contract.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.calls.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe { RawMalloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe { RawMalloc.dealloc(ptr, layout) }
    }
}

/// Refuses every request.
struct Failing;

// SAFETY: never hands out memory, so there is nothing to uphold.
unsafe impl GlobalAlloc for Failing {
    unsafe fn alloc(&self, _: Layout) -> *mut u8 {
        core::ptr::null_mut()
    }
    unsafe fn dealloc(&self, _: *mut u8, _: Layout) {
        unreachable!("nothing was allocated")
    }
}

fn routing<G: Geometry>() {
    let a: PyMalloc<Counting, G> = PyMalloc::with_backend(Counting::default());
    for size in 1..=2 * G::SMALL_REQUEST_THRESHOLD {
        for align in [1, 2, 4, 8, 16, 32, 64] {
            let layout = Layout::from_size_align(size, align).unwrap();
            let before = a.backend().calls.load(Ordering::Relaxed);
            let p = alloc_checked(&a, layout);
            // SAFETY: freed once with its layout.
            unsafe { a.dealloc(p, layout) };
            let calls = a.backend().calls.load(Ordering::Relaxed) - before;
            let small = size <= G::SMALL_REQUEST_THRESHOLD && align <= G::ALIGNMENT;
            assert_eq!(
                calls,
                if small { 0 } else { 2 },
                "size {size} align {align}"
            );
            assert_eq!(a.owns(p), small);
        }
    }
}

#[test]
fn only_what_the_classes_cannot_serve_reaches_layer_1() {
    routing::<Py310>();
    routing::<Py37>();
}

#[test]
fn a_failing_layer_1_fails_only_large_requests() {
    let a: PyMalloc<Failing> = PyMalloc::with_backend(Failing);
    let small = Layout::from_size_align(100, 8).unwrap();
    let p = alloc_checked(&a, small);
    // SAFETY: `p` is live; each call's result is checked before use.
    unsafe {
        p.write_bytes(7, 100);
        assert!(a.alloc(Layout::from_size_align(513, 8).unwrap()).is_null());
        assert!(
            a.alloc_zeroed(Layout::from_size_align(100, 64).unwrap())
                .is_null()
        );
        // Growing past the threshold fails and leaves the old block intact and owned.
        assert!(a.realloc(p, small, 10_000).is_null());
        assert!(core::slice::from_raw_parts(p, 100).iter().all(|&b| b == 7));
        a.dealloc(p, small);
    }
    let s = a.stats();
    assert_eq!((s.blocks_in_use(), s.large_blocks), (0, 0));
    a.check_invariants().unwrap();
}

#[test]
fn the_allocator_is_a_page_allocator_client_too() {
    // Any GlobalAlloc can sit underneath, including layer -1 directly.
    let a: PyMalloc<pymalloc_vmm::PageAlloc> = PyMalloc::with_backend(pymalloc_vmm::PageAlloc);
    let big = Layout::from_size_align(100_000, 4096).unwrap();
    let p = alloc_checked(&a, big);
    // SAFETY: live, then reallocated and freed once.
    unsafe {
        p.write_bytes(1, 100_000);
        let q = a.realloc(p, big, 300_000);
        assert_eq!(*q.add(99_999), 1);
        a.dealloc(q, Layout::from_size_align(300_000, 4096).unwrap());
    }
    assert_eq!(a.stats().large_blocks, 0);
}
