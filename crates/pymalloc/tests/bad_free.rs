//! In debug builds a bad free is reported with the address and the reason, and the process
//! aborts (the allocator must not unwind). Each case runs in a child process: this binary
//! re-executed with `PYMALLOC_CHILD` naming the case.

use std::alloc::{GlobalAlloc, Layout};
use std::process::Command;

use pymalloc::PyMalloc;

static A: PyMalloc = PyMalloc::new();

mod common;

fn child(case: &str) {
    let l = |n| Layout::from_size_align(n, 8).unwrap();
    if case.ends_with("-after-fallback") {
        after_fallback(case);
    }
    // SAFETY: deliberately wrong, to be caught before anything is damaged.
    unsafe {
        let keep = A.alloc(l(64));
        match case {
            "foreign" => {
                let mut local = [0u64; 8];
                A.dealloc(local.as_mut_ptr().cast(), l(64));
            }
            "wrong-layout" => A.dealloc(keep, l(400)),
            "interior" => A.dealloc(keep.add(16), l(64)),
            "double" => {
                let p = A.alloc(l(300));
                A.dealloc(p, l(300));
                A.dealloc(p, l(300));
            }
            "routes-to-backend" => {
                // A pool block freed with an over-aligned layout: without the check it goes
                // to free(), which reads a fake chunk size from the block before it (here
                // 0x51, an 80-byte chunk) and later hands the block out as malloc memory.
                let b = A.alloc(l(64));
                keep.add(56).cast::<u64>().write_unaligned(0x51);
                A.dealloc(b, Layout::from_size_align(64, 32).unwrap());
                assert_ne!(libc::malloc(72).cast(), b, "malloc handed out a pool block");
            }
            "realloc-routes-to-backend" => {
                let b = A.alloc(l(64));
                A.realloc(b, l(600), 700);
            }
            _ => unreachable!(),
        }
    }
    // Not reached when the check works: exit cleanly so the parent sees the miss.
    std::process::exit(0);
}

/// Cases run once a small request has been served by the backend because no arena could be
/// mapped: the allocator must still tell its fallback blocks from foreign pointers.
fn after_fallback(case: &str) {
    let l = |n| Layout::from_size_align(n, 8).unwrap();
    common::leave_room_for_malloc_only();
    // SAFETY: valid layouts; the fallback block is freed once with its layout (except where
    // the case frees it twice on purpose), foreign pointers deliberately.
    unsafe {
        let fb = A.alloc(l(64));
        assert!(!fb.is_null() && !A.owns(fb), "expected a fallback block");
        // A genuine fallback block, resized in place of its class and freed, is not reported.
        let fb = A.realloc(fb, l(64), 200);
        assert!(!fb.is_null());
        A.dealloc(fb, l(200));
        let fb = A.alloc(l(64));
        match case {
            "foreign-after-fallback" => {
                let mut local = [0u64; 8];
                A.dealloc(local.as_mut_ptr().cast(), l(64));
            }
            "realloc-foreign-after-fallback" => {
                let mut local = [0u64; 8];
                A.realloc(local.as_mut_ptr().cast(), l(64), 128);
            }
            "double-after-fallback" => {
                A.dealloc(fb, l(64));
                A.dealloc(fb, l(64));
            }
            "wrong-layout-after-fallback" => A.dealloc(fb, l(400)),
            "routes-to-backend-after-fallback" => A.dealloc(fb, l(600)),
            _ => unreachable!(),
        }
    }
    std::process::exit(0);
}

fn run(case: &str) -> (Option<i32>, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "report_bad_frees",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PYMALLOC_CHILD", case)
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    (
        out.status.signal(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
#[cfg_attr(
    miri,
    ignore = "runs each case in a child process, which Miri cannot spawn"
)]
fn report_bad_frees() {
    if let Ok(case) = std::env::var("PYMALLOC_CHILD") {
        child(&case);
        return;
    }
    if !cfg!(debug_assertions) {
        eprintln!("bad-free checks are a debug-build feature; nothing to test in release");
        return;
    }
    let backend = "layout routes to layer +1 but the block is a pool block";
    let not_fallback = "not inside any arena of this allocator, nor a live block it passed";
    for (case, reason) in [
        ("foreign", "not inside any arena"),
        ("wrong-layout", "size class of the layout differs"),
        ("interior", "not the start of a block"),
        ("double", "no live block (double free?)"),
        ("routes-to-backend", backend),
        ("realloc-routes-to-backend", backend),
        ("foreign-after-fallback", not_fallback),
        ("realloc-foreign-after-fallback", not_fallback),
        ("double-after-fallback", not_fallback),
        (
            "wrong-layout-after-fallback",
            "size class of the layout differs from the fallback block's",
        ),
        (
            "routes-to-backend-after-fallback",
            "layout routes to layer +1 but the block is a fallback block",
        ),
    ] {
        let (signal, stderr) = run(case);
        assert_eq!(signal, Some(libc::SIGABRT), "{case}: {stderr}");
        assert!(
            stderr.contains("pymalloc: bad free or realloc of 0x"),
            "{case}: {stderr}"
        );
        assert!(stderr.contains(reason), "{case}: {stderr}");
    }
}
