//! Out of memory: in a child process with `RLIMIT_AS` lowered, allocations return null (no
//! panic, no abort), the statistics stay consistent, and after memory is freed and the limit
//! lifted, allocation succeeds again. And when no arena can be mapped but malloc still has
//! room, small requests are served by the fallback and freed back to it.

use std::alloc::{GlobalAlloc, Layout};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use pymalloc::PyMalloc;

mod common;
use common::{leave_room_for_malloc_only, set_limit};

static A: PyMalloc = PyMalloc::new();

fn child() {
    let small = Layout::from_size_align(64, 8).unwrap();
    let mut blocks: Vec<*mut u8> = Vec::with_capacity(2_000_000);
    leave_room_for_malloc_only();

    // 1. No arena can be mapped (it needs 2 MiB of address space), but malloc has room.
    // SAFETY: valid layouts; every block is freed once with its layout.
    unsafe {
        let p = A.alloc(small);
        assert!(
            !p.is_null(),
            "the fallback should have served a small request"
        );
        assert!(!A.owns(p), "it came from malloc");
        p.write_bytes(0xAB, 64);
        let s = A.stats();
        assert_eq!(
            (s.arenas_current, s.large_blocks, s.blocks_in_use()),
            (0, 1, 0)
        );
        let q = A.realloc(p, small, 100);
        assert!(!q.is_null() && *q.add(63) == 0xAB);
        A.dealloc(q, Layout::from_size_align(100, 8).unwrap());
        assert_eq!(A.stats().large_blocks, 0);
    }
    eprintln!("fallback: ok");

    // 2. Exhaust everything: allocation returns null, nothing panics or aborts.
    loop {
        // SAFETY: valid layout.
        let p = unsafe { A.alloc(small) };
        if p.is_null() {
            break;
        }
        blocks.push(p);
        assert!(blocks.len() < blocks.capacity(), "the limit did not bite");
    }
    // SAFETY: valid layouts; results are checked.
    unsafe {
        assert!(
            A.alloc(Layout::from_size_align(10 << 20, 8).unwrap())
                .is_null()
        );
        assert!(
            A.alloc_zeroed(Layout::from_size_align(4096, 4096).unwrap())
                .is_null()
        );
    }
    let s = A.stats();
    assert_eq!(
        s.large_blocks + s.blocks_in_use(),
        blocks.len(),
        "every block is accounted for"
    );
    A.check_invariants().unwrap();
    eprintln!("exhausted after {} blocks: ok", blocks.len());

    // 3. Free everything; lift the limit; allocation works again, from an arena.
    for p in blocks.drain(..) {
        // SAFETY: each block is live and freed once with its layout.
        unsafe { A.dealloc(p, small) };
    }
    let s = A.stats();
    assert_eq!((s.large_blocks, s.blocks_in_use()), (0, 0));
    set_limit(libc::RLIM_INFINITY);
    // SAFETY: valid layout; freed once.
    unsafe {
        let p = A.alloc(small);
        assert!(
            !p.is_null() && A.owns(p),
            "a new arena after the limit was lifted"
        );
        A.dealloc(p, small);
    }
    A.check_invariants().unwrap();
    eprintln!("recovered: ok");
    // SAFETY: leave without running the test harness's teardown.
    unsafe { libc::_exit(0) };
}

#[test]
#[cfg_attr(
    miri,
    ignore = "needs a child process and RLIMIT_AS, which Miri cannot provide"
)]
fn out_of_memory_returns_null_and_recovers() {
    if std::env::var_os("PYMALLOC_OOM_CHILD").is_some() {
        child();
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "out_of_memory_returns_null_and_recovers",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PYMALLOC_OOM_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "child failed ({:?}):\n{stderr}",
        out.status.signal()
    );
    for step in ["fallback: ok", "exhausted after", "recovered: ok"] {
        assert!(stderr.contains(step), "missing {step:?}:\n{stderr}");
    }
}
