//! Every size 1..=1024 and a spread of larger ones, at every power-of-two alignment up to 4096.

use super::*;
use pymalloc::{Py37, Py310};

const LARGER: [usize; 9] = [1500, 2048, 4000, 4096, 5000, 8192, 65_536, 100_000, 1 << 20];

/// Under Miri, every 13th size (still every class, both sides of the threshold) and the
/// larger sizes up to 8 KiB.
fn sizes() -> impl Iterator<Item = usize> {
    let (step, larger) = if cfg!(miri) {
        (13, 6)
    } else {
        (1, LARGER.len())
    };
    (1..=1024)
        .step_by(step)
        .chain(LARGER[..larger].iter().copied())
}

fn aligns() -> impl Iterator<Item = usize> {
    (0..=12).map(|s| 1usize << s)
}

fn sweep<G: Geometry>() {
    let a = fresh::<G>();
    let mut live: Vec<(*mut u8, Layout, u64)> = Vec::new();
    for size in sizes() {
        for align in aligns() {
            let layout = Layout::from_size_align(size, align).unwrap();
            let p = alloc_checked(&*a, layout);
            let id = live.len() as u64;
            // SAFETY: a fresh block of `size` bytes.
            unsafe { fill(p, size, id) };
            live.push((p, layout, id));
        }
    }
    // Every block still holds its own pattern: no block was handed out twice or overlaps.
    for &(p, layout, id) in &live {
        // SAFETY: live block of `layout.size()` bytes.
        unsafe { verify(p, layout.size(), id) }
            .unwrap_or_else(|off| panic!("block {p:p} {layout:?} damaged at {off}"));
    }
    let mut spans: Vec<(usize, usize)> = live
        .iter()
        .map(|&(p, l, _)| (p as usize, p as usize + l.size()))
        .collect();
    spans.sort_unstable();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlap: {:#x?} and {:#x?}", w[0], w[1]);
    }
    let small = live
        .iter()
        .filter(|(_, l, _)| G::class_for(l.size(), l.align()).is_some())
        .count();
    let s = a.stats();
    assert_eq!(s.blocks_in_use(), small);
    assert_eq!(s.large_blocks, live.len() - small);
    a.check_invariants().unwrap();
    for &(p, layout, _) in &live {
        assert_eq!(
            a.owns(p),
            G::class_for(layout.size(), layout.align()).is_some()
        );
        // SAFETY: live block freed once with its layout.
        unsafe { a.dealloc(p, layout) };
    }
    let s = a.stats();
    assert_eq!(
        (s.blocks_in_use(), s.large_blocks, s.large_bytes),
        (0, 0, 0)
    );
    a.check_invariants().unwrap();
}

#[test]
fn every_size_and_alignment_py310() {
    sweep::<Py310>();
}

#[test]
fn every_size_and_alignment_py37() {
    sweep::<Py37>();
}

fn zeroed_reuse<G: Geometry>() {
    let a = fresh::<G>();
    for size in sizes() {
        for align in [1, 8, G::ALIGNMENT, 64, 4096] {
            let layout = Layout::from_size_align(size, align).unwrap();
            let p = alloc_checked(&*a, layout);
            // SAFETY: `size` bytes are ours; freed once.
            unsafe {
                p.write_bytes(0xFF, size);
                a.dealloc(p, layout);
            }
            // SAFETY: valid layout.
            let z = unsafe { a.alloc_zeroed(layout) };
            assert!(!z.is_null());
            if G::class_for(size, align).is_some() {
                assert_eq!(z, p, "a small block is reused last-freed-first");
            }
            // SAFETY: `size` bytes are ours.
            let bytes = unsafe { core::slice::from_raw_parts(z, size) };
            assert!(
                bytes.iter().all(|&b| b == 0),
                "alloc_zeroed({layout:?}) not zero"
            );
            // SAFETY: freed once with its layout.
            unsafe { a.dealloc(z, layout) };
        }
    }
}

#[test]
fn alloc_zeroed_zeroes_reused_blocks_py310() {
    zeroed_reuse::<Py310>();
}

#[test]
fn alloc_zeroed_zeroes_reused_blocks_py37() {
    zeroed_reuse::<Py37>();
}

#[test]
fn zero_size_requests_get_a_real_block() {
    let a = fresh::<Py310>();
    let layout = Layout::from_size_align(0, 1).unwrap();
    let p = alloc_checked(&*a, layout);
    assert!(a.owns(p));
    // SAFETY: the block has at least one (class 0: 16) bytes; freed once.
    unsafe {
        p.write(1);
        a.dealloc(p, layout);
    }
    assert_eq!(a.stats().blocks_in_use(), 0);
}
