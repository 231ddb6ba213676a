//! The lock that guards a heap: a futex-based mutex that never allocates.
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

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering};

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
const CONTENDED: u32 = 2;

/// Spins before sleeping: long enough to cover a typical critical section of the heap (tens
/// of nanoseconds), short enough not to burn a time slice on a 2-core machine.
const SPIN_LIMIT: u32 = 100;

/// The lock word and its protocol, without the data it guards: what `fork` handlers hold and
/// reset (see `fork.rs`).
pub(crate) struct RawLock {
    state: AtomicU32, // UNLOCKED, LOCKED or CONTENDED
}

impl RawLock {
    pub(crate) const fn new() -> Self {
        Self {
            state: AtomicU32::new(UNLOCKED),
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
    pub(crate) fn lock(&self) {
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
            core::hint::spin_loop();
            spins += 1;
        }
        // Announce a waiter. Whoever swaps UNLOCKED out owns the lock; CONTENDED (rather than
        // LOCKED) is conservative: the eventual unlock may make one needless wake call.
        while self.state.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
            futex_wait(&self.state, CONTENDED);
        }
    }

    /// Releases the lock.
    #[inline(always)]
    pub(crate) fn unlock(&self) {
        // Release: publishes our writes to the guarded data to the next holder.
        if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            futex_wake_one(&self.state);
        }
    }

    /// Marks the lock free without waking anyone.
    ///
    /// # Safety
    /// Only in a child process right after `fork`, for a lock the forking thread held across
    /// the fork: no other thread exists to own it or wait for it.
    pub(crate) unsafe fn reset_after_fork(&self) {
        self.state.store(UNLOCKED, Ordering::Relaxed);
    }
}

pub(crate) struct Lock<T> {
    raw: RawLock,
    #[cfg(debug_assertions)]
    owner: core::sync::atomic::AtomicUsize, // holder's thread marker, 0 when unlocked
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands out `&mut T` to one thread at a time, so sharing the lock shares `T`
// only as `Send` allows.
unsafe impl<T: Send> Sync for Lock<T> {}
// SAFETY: moving the lock moves the `T` it owns.
unsafe impl<T: Send> Send for Lock<T> {}

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
        if !self.raw.try_lock() {
            self.lock_contended();
        }
        #[cfg(debug_assertions)]
        self.owner.store(thread_marker(), Ordering::Relaxed);
        Guard { lock: self }
    }

    #[cold]
    #[inline(never)]
    fn lock_contended(&self) {
        #[cfg(debug_assertions)]
        if self.owner.load(Ordering::Relaxed) == thread_marker() {
            pymalloc_vmm::diag::fatal(format_args!(
                "pymalloc: re-entrant call: this thread already holds the heap lock at {:p} \
                 (did the allocator allocate through itself?)",
                self
            ));
        }
        self.raw.lock_contended();
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

pub(crate) struct Guard<'a, T> {
    lock: &'a Lock<T>,
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: the guard proves we hold the lock.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for Guard<'_, T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves we hold the lock, so no other reference to `T` exists.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    #[inline(always)]
    fn drop(&mut self) {
        self.lock.unlock();
    }
}

/// A per-thread marker: the address of a thread-local byte. `const`-initialised and without a
/// destructor, so it needs no registration and no allocation.
#[cfg(debug_assertions)]
fn thread_marker() -> usize {
    std::thread_local! {
        static MARKER: u8 = const { 0 };
    }
    MARKER.with(|m| m as *const u8 as usize)
}

fn futex_wait(state: &AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT reads the u32 at a valid address; it returns on wake, on a value
    // mismatch (EAGAIN) or on a signal (EINTR), all of which the caller's loop handles.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            state.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            core::ptr::null::<libc::timespec>(),
        );
    }
}

fn futex_wake_one(state: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            state.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_under_contention() {
        let lock = Arc::new(Lock::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        *lock.lock() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock.lock(), 80_000);
    }
}
