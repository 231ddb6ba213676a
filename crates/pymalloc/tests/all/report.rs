//! The statistics report has the shape of CPython's `sys._debugmallocstats()`.

use super::*;
use pymalloc::{Py37, Py310, Stats};

fn live_report<G: Geometry>() -> (Stats, String) {
    let a = fresh::<G>();
    let l16 = Layout::from_size_align(16, 8).unwrap();
    let l32 = Layout::from_size_align(30, 8).unwrap();
    let p: Vec<_> = (0..27).map(|_| alloc_checked(&*a, l16)).collect();
    let q: Vec<_> = (0..492).map(|_| alloc_checked(&*a, l32)).collect();
    let big = alloc_checked(&*a, Layout::from_size_align(1000, 8).unwrap());
    let s = a.stats();
    let text = s.to_string();
    // SAFETY: live blocks freed once with their layouts.
    unsafe {
        for b in p {
            a.dealloc(b, l16);
        }
        for b in q {
            a.dealloc(b, l32);
        }
        a.dealloc(big, Layout::from_size_align(1000, 8).unwrap());
    }
    (s, text)
}

#[test]
fn report_matches_cpython_layout() {
    let (s, text) = live_report::<Py310>();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "Small block threshold = 512, in 32 size classes.");
    assert_eq!(
        lines[2],
        "class   size   num pools   blocks in use  avail blocks"
    );
    // The same figures as the first two rows of CPython 3.12's report in our reference.
    assert_eq!(
        lines[4],
        "    0     16           1              27           994"
    );
    assert_eq!(
        lines[5],
        "    1     32           1             492            18"
    );
    assert!(text.contains("# arenas allocated current         =                    1\n"));
    assert!(text.contains("1 arenas * 1048576 bytes/arena     =            1,048,576\n"));
    assert!(text.contains("62 unused pools * 16384 bytes      =            1,015,808\n"));
    assert!(text.contains("# bytes lost to pool headers       =                   96\n"));
    assert!(text.contains("# bytes lost to arena alignment    =                    0\n"));
    assert!(text.contains("Total                              =            1,048,576\n"));
    assert!(text.contains("# blocks in use                    =                    1\n"));
    assert_eq!(s.bytes_in_allocated_blocks, 27 * 16 + 492 * 32);
    // (16384 - 48) is a multiple of 16 but leaves 16 bytes over in a 32-byte pool.
    assert_eq!(s.quantization_bytes, 16);
}

#[test]
fn old_geometry_reports_its_own_figures() {
    let (s, text) = live_report::<Py37>();
    assert!(text.starts_with("Small block threshold = 256, in 32 size classes."));
    assert_eq!(
        (s.pool_size, s.arena_size, s.alignment),
        (4096, 256 << 10, 8)
    );
    // 16-byte requests are class 1 (16 B) under 8-byte spacing; 27 of them fit one pool.
    assert_eq!(s.classes()[1].blocks_in_use, 27);
}

#[test]
fn snapshots_merge() {
    let (a, _) = live_report::<Py310>();
    let mut sum = a;
    sum.merge(&a);
    assert_eq!(sum.blocks_in_use(), 2 * a.blocks_in_use());
    assert_eq!(sum.total_arena_bytes, 2 * a.total_arena_bytes);
    assert_eq!(sum.classes()[1].free_blocks, 36);
}
