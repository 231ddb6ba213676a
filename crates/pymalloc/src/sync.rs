//! The lock that guards the arenas (and the shared heap): a futex-based mutex that never allocates.
//!
//! `parking_lot` allocates its parking table on first contention, and an allocator must not
//! allocate through itself, so the heap uses this small lock instead: one `AtomicU32`, an
//! uncontended acquire and release of one atomic operation each, a short spin, then the
//! `futex(2)` wait/wake protocol (three states: unlocked, locked, locked with waiters), the
//! same design as std's Linux mutex.
//!
//! In debug builds the lock remembers which thread holds it (by the address of a thread-local
//! byte, which costs no system call and no allocation) and reports re-entry, an allocator
//! calling itself while it holds its own lock, with a message and an abort instead of a
//! silent deadlock.

//!
//! # loom
//! Under `--cfg loom` the lock word is a `loom` atomic and `futex(2)` is modelled with a loom
//! mutex and condition variable (the kernel serialises a futex's check-and-sleep against its
//! wake in the same way), so `tests/loom.rs` explores every interleaving of the protocol,
//! including lost wake-ups, which would show as a deadlock.

// `RawLock` is `pub` so that the loom models can reach it; in normal builds the module is
// private and the item unreachable, which is fine.
#![cfg_attr(not(loom), allow(unreachable_pub))]

use atomic::{AtomicU32, Ordering};
#[cfg(not(loom))]
use core::cell::UnsafeCell;
#[cfg(not(loom))]
use core::ops::{Deref, DerefMut};

/// The atomics of every structure threads share: `core`'s, or loom's under `--cfg loom`, so
/// that the models see every access to them.
pub(crate) mod atomic {
    #[cfg(not(loom))]
    pub(crate) use core::sync::atomic::{
        AtomicBool, AtomicIsize, AtomicPtr, AtomicU8, AtomicU16, AtomicU32, AtomicUsize, Ordering,
    };
    #[cfg(loom)]
    pub(crate) use loom::sync::atomic::{
        AtomicBool, AtomicIsize, AtomicPtr, AtomicU8, AtomicU16, AtomicU32, AtomicUsize, Ordering,
    };
}

/// Declares a constructor that is `const` in normal builds (so that allocators can initialise
/// `static`s) and an ordinary function under loom, whose atomics cannot be built at compile
/// time.
macro_rules! const_unless_loom {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        $(#[$attr])*
        #[cfg(not(loom))]
        $vis const fn $name($($arg: $ty),*) -> $ret $body

        $(#[$attr])*
        #[cfg(loom)]
        $vis fn $name($($arg: $ty),*) -> $ret $body
    };
}
pub(crate) use const_unless_loom;

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
const CONTENDED: u32 = 2;

/// Spins before sleeping: long enough to cover a typical critical section of the heap (tens
/// of nanoseconds), short enough not to burn a time slice on a 2-core machine.
const SPIN_LIMIT: u32 = if cfg!(loom) { 1 } else { 100 };

/// The lock word and its protocol, without the data it guards: what `fork` handlers hold and
/// reset (see `fork.rs`).
pub struct RawLock {
    state: AtomicU32, // UNLOCKED, LOCKED or CONTENDED
    #[cfg(loom)]
    futex: (loom::sync::Mutex<()>, loom::sync::Condvar), // the kernel's side of futex(2)
}

impl RawLock {
    /// An unlocked lock.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            state: AtomicU32::new(UNLOCKED),
        }
    }

    /// An unlocked lock.
    #[cfg(loom)]
    #[allow(clippy::new_without_default)] // a model builder, not an API
    pub fn new() -> Self {
        Self {
            state: AtomicU32::new(UNLOCKED),
            futex: (loom::sync::Mutex::new(()), loom::sync::Condvar::new()),
        }
    }

    /// One attempt to take the lock.
    #[inline(always)]
    fn try_lock(&self) -> bool {
        // Acquire: pairs with the Release in `unlock`, so the previous holder's writes to the
        // guarded data are visible to us.
        self.state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes the lock, waiting as long as needed.
    #[inline(always)]
    pub fn lock(&self) {
        if !self.try_lock() {
            self.lock_contended();
        }
    }

    #[cold]
    #[inline(never)]
    fn lock_contended(&self) {
        let mut spins = 0;
        while spins < SPIN_LIMIT {
            if self.state.load(Ordering::Relaxed) == UNLOCKED && self.try_lock() {
                return;
            }
            #[cfg(loom)]
            loom::thread::yield_now();
            core::hint::spin_loop();
            spins += 1;
        }
        // Announce a waiter. Whoever swaps UNLOCKED out owns the lock; CONTENDED (rather than
        // LOCKED) is conservative: the eventual unlock may make one needless wake call.
        while self.state.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
            self.futex_wait(CONTENDED);
        }
    }

    /// Releases the lock.
    #[inline(always)]
    pub fn unlock(&self) {
        // Release: publishes our writes to the guarded data to the next holder.
        if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            self.futex_wake_one();
        }
    }

    /// Sleeps while the lock word equals `expected` (returns at once if it does not).
    #[cfg(not(loom))]
    fn futex_wait(&self, expected: u32) {
        // SAFETY: FUTEX_WAIT reads the u32 at a valid address; it returns on wake, on a value
        // mismatch (EAGAIN) or on a signal (EINTR), all of which the caller's loop handles.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.state.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                expected,
                core::ptr::null::<libc::timespec>(),
            );
        }
    }

    /// Wakes one sleeper, if any.
    #[cfg(not(loom))]
    fn futex_wake_one(&self) {
        // SAFETY: FUTEX_WAKE only uses the address as a key.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.state.as_ptr(),
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                1,
            );
        }
    }

    #[cfg(loom)]
    fn futex_wait(&self, expected: u32) {
        let guard = self.futex.0.lock().unwrap();
        // Relaxed as the kernel's read is: ordering comes from the swap that follows.
        if self.state.load(Ordering::Relaxed) == expected {
            drop(self.futex.1.wait(guard).unwrap());
        }
    }

    #[cfg(loom)]
    fn futex_wake_one(&self) {
        let _guard = self.futex.0.lock().unwrap();
        self.futex.1.notify_one();
    }

    /// Marks the lock free without waking anyone.
    ///
    /// # Safety
    /// Only in a child process right after `fork`, for a lock the forking thread held across
    /// the fork: no other thread exists to own it or wait for it.
    pub(crate) unsafe fn reset_after_fork(&self) {
        self.state.store(UNLOCKED, Ordering::Relaxed);
    }

    /// Whether some thread holds the lock (a snapshot, for the models).
    #[cfg(all(test, loom))]
    pub(crate) fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) != UNLOCKED
    }
}

#[cfg(not(loom))]
pub(crate) struct Lock<T> {
    raw: RawLock,
    #[cfg(debug_assertions)]
    owner: core::sync::atomic::AtomicUsize, // holder's thread marker, 0 when unlocked
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands out `&mut T` to one thread at a time, so sharing the lock shares `T`
// only as `Send` allows.
#[cfg(not(loom))]
unsafe impl<T: Send> Sync for Lock<T> {}
// SAFETY: moving the lock moves the `T` it owns.
#[cfg(not(loom))]
unsafe impl<T: Send> Send for Lock<T> {}

#[cfg(not(loom))]
impl<T> Lock<T> {
    pub(crate) const fn new(data: T) -> Self {
        Self {
            raw: RawLock::new(),
            #[cfg(debug_assertions)]
            owner: core::sync::atomic::AtomicUsize::new(0),
            data: UnsafeCell::new(data),
        }
    }

    #[inline(always)]
    pub(crate) fn lock(&self) -> Guard<'_, T> {
        if !self.raw.try_lock() && self.lock_contended() {
            return Guard {
                lock: self,
                held_for_fork: true,
            };
        }
        #[cfg(debug_assertions)]
        self.owner.store(thread_marker(), Ordering::Relaxed);
        Guard {
            lock: self,
            held_for_fork: false,
        }
    }

    /// Takes the lock after a failed first attempt; returns `true`, without taking it, if the
    /// calling thread already holds it because it is forking (another library's fork handler
    /// allocating; see `fork::held_for_fork_by_me`).
    #[cold]
    #[inline(never)]
    fn lock_contended(&self) -> bool {
        if crate::fork::held_for_fork_by_me(&self.raw) {
            return true;
        }
        #[cfg(debug_assertions)]
        if self.owner.load(Ordering::Relaxed) == thread_marker() {
            pymalloc_vmm::diag::fatal(format_args!(
                "pymalloc: re-entrant call: this thread already holds the allocator lock at {:p} \
                 (did the allocator allocate through itself?)",
                self
            ));
        }
        self.raw.lock_contended();
        false
    }

    #[inline(always)]
    fn unlock(&self) {
        #[cfg(debug_assertions)]
        self.owner.store(0, Ordering::Relaxed);
        self.raw.unlock();
    }

    /// The lock word, for the fork handlers.
    pub(crate) fn raw(&self) -> &RawLock {
        &self.raw
    }

    /// Exclusive access without locking, through `&mut self`.
    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

#[cfg(not(loom))]
pub(crate) struct Guard<'a, T> {
    lock: &'a Lock<T>,
    held_for_fork: bool, // the lock is held by this thread's fork: not ours to release
}

#[cfg(not(loom))]
impl<T> Deref for Guard<'_, T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: the guard proves we hold the lock.
        unsafe { &*self.lock.data.get() }
    }
}

#[cfg(not(loom))]
impl<T> DerefMut for Guard<'_, T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves we hold the lock, so no other reference to `T` exists.
        unsafe { &mut *self.lock.data.get() }
    }
}

#[cfg(not(loom))]
impl<T> Drop for Guard<'_, T> {
    #[inline(always)]
    fn drop(&mut self) {
        if !self.held_for_fork {
            self.lock.unlock();
        }
    }
}

/// A per-thread marker, unique among live threads (see `tls::thread_marker`).
#[cfg(all(debug_assertions, not(loom)))]
fn thread_marker() -> usize {
    crate::tls::thread_marker()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_under_contention() {
        const ROUNDS: u64 = if cfg!(miri) { 200 } else { 20_000 };
        let lock = Arc::new(Lock::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        *lock.lock() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock.lock(), 4 * ROUNDS);
    }
}
