//! The C-style API, for callers that keep no layout: `alloc_pooled`, `dealloc_pooled`,
//! `block_size`.

use super::*;
use pymalloc::Py37;

fn pooled_blocks_without_their_layout<G: Geometry>() {
    let a = fresh::<G>();
    let base = a.stats().blocks_in_use();
    let t = G::SMALL_REQUEST_THRESHOLD;
    let mut blocks = Vec::new();
    for size in 0..=t {
        let p = a.alloc_pooled(Layout::from_size_align(size, 1).unwrap(), size % 2 == 0);
        assert!(!p.is_null());
        assert_eq!(p as usize % G::ALIGNMENT, 0);
        // SAFETY: a live block of `a`.
        let n = unsafe { a.block_size(p) }.unwrap();
        assert!(
            n >= size.max(1) && n < size.max(1) + G::ALIGNMENT,
            "{size} -> {n}"
        );
        if size % 2 == 0 {
            // SAFETY: `size` bytes were asked for, zeroed.
            let bytes = unsafe { core::slice::from_raw_parts(p, size) };
            assert!(bytes.iter().all(|&b| b == 0));
        }
        // SAFETY: `n` bytes are usable.
        unsafe { p.write_bytes(0xA5, n) };
        blocks.push(p);
    }
    assert_eq!(a.stats().blocks_in_use(), base + t + 1);
    // Not pooled: larger than the threshold, or aligned beyond ALIGNMENT.
    assert!(
        a.alloc_pooled(Layout::from_size_align(t + 1, 1).unwrap(), false)
            .is_null()
    );
    let over = Layout::from_size_align(16, 2 * G::ALIGNMENT).unwrap();
    assert!(a.alloc_pooled(over, false).is_null());
    for p in blocks {
        // SAFETY: a live block of `a`, freed once.
        assert!(unsafe { a.dealloc_pooled(p) });
    }
    assert_eq!(a.stats().blocks_in_use(), base);
    a.check_invariants().unwrap();
}

#[test]
fn pooled_blocks_without_their_layout_py310() {
    pooled_blocks_without_their_layout::<pymalloc::Py310>();
}

#[test]
fn pooled_blocks_without_their_layout_py37() {
    pooled_blocks_without_their_layout::<Py37>();
}

#[test]
fn pooled_blocks_without_their_layout_tiny() {
    pooled_blocks_without_their_layout::<Tiny>();
}

#[test]
fn someone_elses_pointer_is_left_alone() {
    let a = fresh::<pymalloc::Py310>();
    let b = fresh::<pymalloc::Py310>();
    let layout = Layout::from_size_align(64, 8).unwrap();
    // SAFETY: a valid layout.
    let theirs = unsafe { RawMalloc.alloc(layout) };
    let others = b.alloc_pooled(layout, false);
    for p in [theirs, others] {
        // SAFETY: not in `a`'s arenas, so neither call touches the block.
        unsafe {
            assert_eq!(a.block_size(p), None);
            assert!(!a.dealloc_pooled(p));
        }
    }
    // SAFETY: each block freed where it came from.
    unsafe {
        RawMalloc.dealloc(theirs, layout);
        assert!(b.dealloc_pooled(others));
    }
    assert_eq!(b.stats().blocks_in_use(), 0);
}

#[test]
fn the_two_apis_mix_and_threads_free_each_others_blocks() {
    let a: &'static PyMalloc = Box::leak(fresh::<pymalloc::Py310>());
    let layout = Layout::from_size_align(40, 8).unwrap();
    // GlobalAlloc's block freed without its layout, and a pooled block freed with one.
    // SAFETY: a valid layout; each block freed once.
    unsafe {
        let p = a.alloc(layout);
        assert_eq!(a.block_size(p), Some(48));
        assert!(a.dealloc_pooled(p));
        let q = a.alloc_pooled(layout, false);
        a.dealloc(q, layout);
    }
    // Blocks made on one thread, freed without their layout on another.
    let blocks: Vec<usize> = std::thread::spawn(move || {
        (0..10_000)
            .map(|i| {
                a.alloc_pooled(Layout::from_size_align(1 + i % 512, 1).unwrap(), false) as usize
            })
            .collect()
    })
    .join()
    .unwrap();
    std::thread::spawn(move || {
        for p in blocks {
            // SAFETY: live blocks of `a`, each freed once.
            assert!(unsafe { a.dealloc_pooled(p as *mut u8) });
        }
    })
    .join()
    .unwrap();
    assert_eq!(a.stats().blocks_in_use(), 0);
    a.check_invariants().unwrap();
}
