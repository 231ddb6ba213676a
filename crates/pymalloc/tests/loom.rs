//! loom models of the heap lock (`sync::RawLock`): mutual exclusion, the visibility of the
//! guarded data to the next holder, and no lost wake-up in the futex protocol (a lost wake-up
//! leaves a thread asleep forever, which loom reports as a deadlock).
//!
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p pymalloc --release --test loom`
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use pymalloc::sync::RawLock;

struct Guarded {
    lock: RawLock,
    value: UnsafeCell<u64>,
}

// SAFETY: `value` is only touched while `lock` is held.
unsafe impl Sync for Guarded {}

fn increment(g: &Guarded) {
    g.lock.lock();
    // loom's UnsafeCell reports any access that is not ordered by the lock as a data race.
    g.value.with_mut(|v| {
        // SAFETY: we hold the lock.
        unsafe { *v += 1 }
    });
    g.lock.unlock();
}

#[test]
fn two_threads_exclude_each_other_and_see_each_others_writes() {
    loom::model(|| {
        let g = Arc::new(Guarded {
            lock: RawLock::new(),
            value: UnsafeCell::new(0),
        });
        let other = {
            let g = g.clone();
            thread::spawn(move || increment(&g))
        };
        increment(&g);
        other.join().unwrap();
        g.lock.lock();
        // SAFETY: we hold the lock.
        assert_eq!(g.value.with(|v| unsafe { *v }), 2);
        g.lock.unlock();
    });
}

#[test]
fn three_threads_never_lose_a_wake_up() {
    loom::model(|| {
        let g = Arc::new(Guarded {
            lock: RawLock::new(),
            value: UnsafeCell::new(0),
        });
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let g = g.clone();
                thread::spawn(move || {
                    increment(&g);
                    increment(&g);
                })
            })
            .collect();
        increment(&g);
        for t in threads {
            t.join().unwrap();
        }
        g.lock.lock();
        // SAFETY: we hold the lock.
        assert_eq!(g.value.with(|v| unsafe { *v }), 5);
        g.lock.unlock();
    });
}
