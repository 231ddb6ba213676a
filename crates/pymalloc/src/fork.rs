//! Surviving `fork()` from a multi-threaded process.
//!
//! Only the forking thread exists in the child. If another thread held a heap lock at the
//! moment of the fork, the child would inherit the lock held by nobody, and the heap perhaps
//! half-updated, and its first allocation would deadlock. The remedy is the one dlmalloc-rs
//! and snmalloc use: `pthread_atfork` handlers that take every registered heap lock before the
//! fork (so no operation is in flight), release them in the parent after it, and reset them in
//! the child.
//!
//! Registration takes `&'static`: the handlers hold the lock's address for the rest of the
//! process, so the allocator must never move or be dropped, which is what a `static` used as
//! `#[global_allocator]` is. Up to [`MAX_REGISTERED`] allocators can be registered.
//!
//! Lock order: the handlers take the registered locks in registration order. No other code
//! holds two heap locks at once (a heap never calls into another allocator while locked), so
//! this order cannot deadlock. The C library's own `fork` handling protects `malloc` (layer
//! +1).

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use crate::sync::RawLock;

/// How many allocators can be registered for fork safety.
pub const MAX_REGISTERED: usize = 16;

static LOCKS: [AtomicPtr<RawLock>; MAX_REGISTERED] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_REGISTERED];
static COUNT: AtomicUsize = AtomicUsize::new(0);
static HANDLERS_INSTALLED: AtomicBool = AtomicBool::new(false);
/// Serialises registrations (not the handlers: `fork` runs them on one thread).
static REGISTERING: RawLock = RawLock::new();

/// Registers `lock` with the fork handlers, installing them on first use. Returns `false` if
/// the table is full or `pthread_atfork` failed. Registering the same lock twice is a no-op.
pub(crate) fn register(lock: &'static RawLock) -> bool {
    REGISTERING.lock();
    let ok = register_locked(lock);
    REGISTERING.unlock();
    ok
}

fn register_locked(lock: &'static RawLock) -> bool {
    let n = COUNT.load(Ordering::Relaxed);
    let ptr = lock as *const RawLock as *mut RawLock;
    if LOCKS[..n].iter().any(|l| l.load(Ordering::Relaxed) == ptr) {
        return true;
    }
    if n == MAX_REGISTERED {
        return false;
    }
    if !HANDLERS_INSTALLED.load(Ordering::Relaxed) {
        // SAFETY: the handlers are `extern "C"` functions valid for the whole process.
        let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        if rc != 0 {
            return false;
        }
        HANDLERS_INSTALLED.store(true, Ordering::Relaxed);
    }
    LOCKS[n].store(ptr, Ordering::Relaxed);
    // Release: a fork handler that sees the new count sees the slot filled.
    COUNT.store(n + 1, Ordering::Release);
    true
}

fn registered() -> impl Iterator<Item = &'static RawLock> {
    // Acquire: pairs with the Release in `register_locked`.
    let n = COUNT.load(Ordering::Acquire);
    LOCKS[..n].iter().map(|l| {
        // SAFETY: registered pointers come from `&'static RawLock`s.
        unsafe { &*l.load(Ordering::Relaxed) }
    })
}

extern "C" fn prepare() {
    // Hold off registrations too, so the set of locks is the same in all three handlers.
    REGISTERING.lock();
    for l in registered() {
        l.lock();
    }
}

extern "C" fn parent() {
    for l in registered() {
        l.unlock();
    }
    REGISTERING.unlock();
}

extern "C" fn child() {
    for l in registered() {
        // SAFETY: we are the child's only thread and we took this lock in `prepare`.
        unsafe { l.reset_after_fork() };
    }
    // SAFETY: as above.
    unsafe { REGISTERING.reset_after_fork() };
}
