//! The per-thread machinery, for the layers above: the slot number that finds a thread's heap
//! in every `PyMalloc`, the claims that let another thread work on an exited thread's slot, and
//! the hooks run at thread exit. A per-thread structure of another crate (the free lists of
//! layer +3) indexes its own array by [`slot`] and so needs no thread-local of its own.
//!
//! Nothing here allocates. Slots are shared by every user: thread `t` is slot `t` in each
//! allocator and each free list.

use crate::tls;

pub use crate::tls::{MAX_EXIT_HOOKS, MAX_SLOTS};

/// The current thread's slot, 1 to [`MAX_SLOTS`] − 1, or 0 if it has none (it never allocated
/// through a `PyMalloc`, has exited, or found every slot taken). One thread-local load.
#[inline(always)]
pub fn slot() -> usize {
    tls::current()
}

/// Gives the current thread a slot if it has none and one is free; returns it, or 0 (every slot
/// taken, or the thread is exiting). Never allocates.
#[inline]
pub fn register() -> usize {
    tls::register()
}

/// Which taking of its slot the current thread is (a number unique to this thread's holding of
/// the slot, from 1), or 0 if it holds none. A per-slot structure remembers it to tell whether
/// its slot changed hands since it last looked (the previous holder exited).
#[inline]
pub fn taking() -> u64 {
    tls::holding()
}

/// Takes the free slot `t` for a moment, so as to work on what is kept for it as its owner;
/// `false` if the slot is not free (held by a live thread, or claimed by another). Release it
/// with [`release_claim`].
pub fn try_claim(t: usize) -> bool {
    t != 0 && t < MAX_SLOTS && tls::try_claim(t)
}

/// Gives back a slot taken with [`try_claim`].
pub fn release_claim(t: usize) {
    tls::release_claim(t);
}

/// What runs when a thread holding slot `t` exits: `hook(data, t)`, on that thread, before its
/// slot is freed.
pub type ExitHook = unsafe fn(*const (), usize);

/// Registers `hook(data, slot)` to run at every thread exit from now on (see [`ExitHook`]).
/// Returns `false` if the table of [`MAX_EXIT_HOOKS`] entries (shared with
/// `PyMalloc::collect_at_thread_exit`) is full; registering the same `data` again is a no-op.
///
/// # Safety
/// `data` stays valid for the rest of the process, and `hook` may be called with it on any
/// exiting thread, from a pthread key destructor: it must not unwind, and must not rely on
/// thread-locals with destructors.
pub unsafe fn add_exit_hook(data: *const (), hook: ExitHook) -> bool {
    tls::add_exit_hook(data, hook)
}
