//! `fork()` while other threads allocate: with `enable_fork_safety`, the child can allocate
//! and free at once, every time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pymalloc::PyMalloc;

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc::new();

/// Waits for `pid` for up to 20 s; `None` if it did not exit (a deadlocked child), which is
/// then killed.
fn wait_exit(pid: libc::pid_t) -> Option<i32> {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is a valid out-parameter.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                -1
            });
        }
        if start.elapsed() > Duration::from_secs(20) {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// What the child does: allocate, free, check, and leave with `_exit` (no destructors, no
/// atexit handlers of the parent's test harness).
fn in_child() -> ! {
    let ok = std::panic::catch_unwind(|| {
        let v: Vec<String> = (0..10_000).map(|i| format!("child {i}")).collect();
        let total: usize = v.iter().map(String::len).sum();
        drop(v);
        let boxes: Vec<Box<[u8; 100]>> = (0..1000).map(|_| Box::new([1; 100])).collect();
        total > 0 && boxes.len() == 1000 && GLOBAL.check_invariants().is_ok()
    })
    .unwrap_or(false);
    // SAFETY: _exit ends the child without running the parent's cleanup.
    unsafe { libc::_exit(if ok { 0 } else { 1 }) }
}

#[test]
#[cfg_attr(miri, ignore = "Miri cannot fork")]
fn the_child_of_a_busy_process_can_allocate() {
    assert!(GLOBAL.enable_fork_safety());
    assert!(GLOBAL.enable_fork_safety(), "registering twice is harmless");
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut live: Vec<Vec<u64>> = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    live.push(vec![i; (i % 40) as usize + 1]);
                    if live.len() > 500 {
                        live.drain(..250);
                    }
                    i = i.wrapping_add(t + 1);
                }
            })
        })
        .collect();
    for round in 0..30 {
        // SAFETY: fork has no preconditions; the child only runs `in_child`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            in_child();
        }
        assert_eq!(
            wait_exit(pid),
            Some(0),
            "child of round {round} failed or deadlocked"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    GLOBAL.check_invariants().unwrap();
}
