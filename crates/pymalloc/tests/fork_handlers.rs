//! Fork handlers of other code, registered before the allocator's, that allocate. Prepare
//! handlers run in the reverse order of registration and parent and child handlers in order,
//! so such handlers run while the allocator's own handlers hold its locks: their allocations
//! must not wait for those locks (glibc's `malloc` allows allocating in fork handlers, so a C
//! `malloc` built on this allocator must too).
//!
//! The scenario runs in a fresh process of this test binary (started with `posix_spawn`, which
//! runs no fork handlers), so that a deadlock is seen as a timeout, not a hung test run.

use std::alloc::{GlobalAlloc, Layout};
use std::process::Command;
use std::time::{Duration, Instant};

use pymalloc::PyMalloc;

static A: PyMalloc = PyMalloc::new();

const L512: Layout = match Layout::from_size_align(512, 16) {
    Ok(l) => l,
    Err(_) => panic!(),
};

/// Allocates and frees 100 blocks of 512 bytes (31 per pool): takes new pools from the arenas
/// and gives emptied ones back, under the arenas lock.
extern "C" fn churn() {
    let mut blocks = [core::ptr::null_mut::<u8>(); 100];
    for b in &mut blocks {
        // SAFETY: a valid layout.
        *b = unsafe { A.alloc(L512) };
        if b.is_null() {
            // SAFETY: _exit is async-signal-safe and ends the process at once.
            unsafe { libc::_exit(3) };
        }
    }
    for &b in &blocks {
        // SAFETY: allocated above with L512, freed once.
        unsafe { A.dealloc(b, L512) };
    }
}

fn scenario() {
    // SAFETY: handlers valid for the whole process.
    let r = unsafe { libc::pthread_atfork(Some(churn), Some(churn), Some(churn)) };
    assert_eq!(r, 0);
    assert!(A.enable_fork_safety());
    churn();
    for _ in 0..20 {
        // SAFETY: the child only allocates, frees and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            churn();
            let ok = A.check_invariants().is_ok();
            // SAFETY: _exit ends the child without the parent's cleanup.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: our child; a valid out-parameter.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
    A.check_invariants().unwrap();
    assert_eq!(A.stats().blocks_in_use(), 0);
}

#[test]
#[cfg_attr(miri, ignore = "Miri cannot fork")]
fn fork_handlers_registered_before_ours_may_allocate() {
    const NAME: &str = "fork_handlers_registered_before_ours_may_allocate";
    if std::env::var_os("PYMALLOC_FORK_HANDLERS_SCENARIO").is_some() {
        scenario();
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--test-threads=1"])
        .env("PYMALLOC_FORK_HANDLERS_SCENARIO", "1")
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "the scenario failed: {status}");
            return;
        }
        if start.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the scenario deadlocked in fork");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
