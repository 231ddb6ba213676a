//! In debug builds a bad free is reported with the address and the reason, and the process
//! aborts (the allocator must not unwind). Each case runs in a child process: this binary
//! re-executed with `PYMALLOC_CHILD` naming the case.

use std::alloc::{GlobalAlloc, Layout};
use std::process::Command;

use pymalloc::PyMalloc;

static A: PyMalloc = PyMalloc::new();

fn child(case: &str) {
    let l = |n| Layout::from_size_align(n, 8).unwrap();
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
            _ => unreachable!(),
        }
    }
    // Not reached when the check works: exit cleanly so the parent sees the miss.
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
    for (case, reason) in [
        ("foreign", "not inside any arena"),
        ("wrong-layout", "size class of the layout differs"),
        ("interior", "not the start of a block"),
        ("double", "no live block (double free?)"),
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
