//! Which heap is the current thread's: the only module that knows how a thread finds its heap.
//!
//! Every thread that allocates gets a small number, its *slot* (1 to [`MAX_SLOTS`] − 1), held
//! in a `thread_local!` with a `const` initialiser and no destructor: a bare thread-local
//! variable, read with one instruction, never allocating, never registering anything. Slot 0
//! is the *sentinel*: every allocator keeps an array of heaps indexed by slot
//! (`PyMalloc::slots`), and heap 0 stays empty for good, so a thread that has no slot yet (or
//! no longer has one) finds no pool on its fast path and falls into the slow path, which calls
//! [`register`]. The fast path has no "is this thread initialised" test.
//!
//! One slot serves every allocator instance: thread `t` uses heap `t` of each `PyMalloc`.
//!
//! # Slot states (one word per slot, [`SLOTS`])
//! ```text
//!            register (CAS, Acquire)              try_claim (CAS, Acquire)
//!   FREE  ------------------------->  OWNED    FREE ---------------------> CLAIMED
//!   FREE  <-------------------------  OWNED    FREE <--------------------- CLAIMED
//!         thread exit (store, Release)               release_claim (store, Release)
//! ```
//! A slot's heaps belong to whoever holds the slot. When a thread exits, its heaps stay as they
//! are (pools, blocks, lists): the next thread to take the slot adopts them all. Meanwhile any
//! thread may *claim* the free slot for a moment to work on one of its heaps as its owner
//! (free a block into it, collect what other threads freed into it, give its empty pools back)
//! and then release it. The `Acquire`/`Release` pairs hand the heaps' plain memory from one
//! holder to the next.
//!
//! # Thread exit
//! Detected by a `pthread_key_create` destructor: the key is created once, at the first
//! registration (glibc keeps the first 32 keys inline, so `pthread_setspecific` does not
//! allocate for it), and set to a non-null value when a thread takes a slot. The destructor
//! sets the thread's slot to 0 and its phase to `TORN_DOWN`, then frees the slot. glibc calls
//! `free` (and sometimes `malloc`) after the key destructors (`__libc_thread_freeres`); such a
//! thread has slot 0 and a torn-down phase, and [`register`] sends it to the allocator's locked
//! shared heap, without taking a slot again.
//!
//! More threads than slots: a thread that finds no free slot uses the shared heap and tries
//! again on its next slow path.
//!
//! # fork
//! In the child only the forking thread runs. The other threads' slots stay `OWNED` (or
//! `CLAIMED`) for good: one of them may have been halfway through changing its heap when the
//! process forked, so nothing in the child ever adopts or claims those heaps. Blocks of their
//! pools can still be freed (a remote free touches only atomic words); their free space is not
//! reused.
//!
//! # Two ways to reach the per-thread words
//! By default the slot, the phase and the holding number are `thread_local!`s. With the
//! `initial-exec-tls` feature (x86_64 Linux; used by the preloadable C `malloc`,
//! `pymalloc-preload`) they are three words of a static TLS block of our own, reached with the
//! initial-exec model, which never calls `__tls_get_addr` (see `vars`). Only `vars` differs
//! between the two.

#[cfg(not(loom))]
use crate::sync::atomic::AtomicU32;
use crate::sync::atomic::{AtomicU8, Ordering::*};

/// Slots, the sentinel included: at most `MAX_SLOTS - 1` threads have heaps of their own at a
/// time; the others share the locked shared heap.
#[cfg_attr(loom, allow(unreachable_pub))]
pub const MAX_SLOTS: usize = 64;

const FREE: u8 = 0;
const OWNED: u8 = 1;
const CLAIMED: u8 = 2;

/// One slot's state, on a cache line of its own: claims by one thread must not slow down the
/// slot checks of another.
#[repr(align(64))]
struct SlotState(AtomicU8);

/// The states of all slots, and the protocol on them (modelled under loom at the end of this
/// file).
pub(crate) struct SlotStates {
    states: [SlotState; MAX_SLOTS],
}

impl SlotStates {
    #[cfg(not(loom))]
    const fn new() -> Self {
        Self {
            states: [const { SlotState(AtomicU8::new(FREE)) }; MAX_SLOTS],
        }
    }

    #[cfg(loom)]
    fn new() -> Self {
        Self {
            states: core::array::from_fn(|_| SlotState(AtomicU8::new(FREE))),
        }
    }

    /// Takes the lowest free slot for good (until `release`), or `None`.
    fn take_free(&self) -> Option<usize> {
        // Acquire: pairs with the Release of the previous holder, so its heaps are ours as it
        // left them.
        (1..MAX_SLOTS).find(|&t| {
            let s = &self.states[t].0;
            s.load(Relaxed) == FREE && s.compare_exchange(FREE, OWNED, Acquire, Relaxed).is_ok()
        })
    }

    /// Takes free slot `t` for a moment; `false` if it is not free.
    fn try_claim(&self, t: usize) -> bool {
        let s = &self.states[t].0;
        s.load(Relaxed) == FREE && s.compare_exchange(FREE, CLAIMED, Acquire, Relaxed).is_ok()
    }

    /// Frees slot `t` (its thread exits, or a claim ends).
    fn release(&self, t: usize) {
        // Release: the next holder sees the heaps as we left them.
        self.states[t].0.store(FREE, Release);
    }
}

#[cfg(not(loom))]
static SLOTS: SlotStates = SlotStates::new();

/// The thread has not registered yet.
const FRESH: u8 = 0;
/// The thread holds a slot.
const LIVE: u8 = 1;
/// The thread's exit has begun: it holds no slot and must not take one again.
const TORN_DOWN: u8 = 2;

/// The three per-thread words: the slot, the phase and the holding. The only code that knows
/// where they live.
#[cfg(not(all(feature = "initial-exec-tls", not(miri), not(loom))))]
mod vars {
    use super::*;
    use core::cell::Cell;

    std::thread_local! {
        static SLOT: Cell<usize> = const { Cell::new(0) };
        static PHASE: Cell<u8> = const { Cell::new(FRESH) };
        static HOLDING: Cell<u64> = const { Cell::new(0) };
    }

    #[inline(always)]
    pub(super) fn slot() -> usize {
        SLOT.with(Cell::get)
    }
    #[inline]
    pub(super) fn phase() -> u8 {
        PHASE.with(Cell::get)
    }
    #[inline]
    pub(super) fn holding() -> u64 {
        HOLDING.with(Cell::get)
    }
    /// The address of this thread's slot word: unique among live threads.
    #[inline]
    pub(super) fn marker() -> usize {
        SLOT.with(|c| core::ptr::from_ref(c) as usize)
    }
    #[inline]
    pub(super) fn set(slot: usize, phase: u8, holding: u64) {
        SLOT.with(|c| c.set(slot));
        PHASE.with(|c| c.set(phase));
        HOLDING.with(|c| c.set(holding));
    }
}

/// The same three words in a static TLS block of our own, reached with the initial-exec
/// model (`x@gottpoff(%rip)`, then `%fs`), which never calls `__tls_get_addr`: for a shared
/// object loaded with `LD_PRELOAD` as the process's C `malloc`. With Rust's general-dynamic
/// model, the first access after a `dlopen` of another module with TLS goes through
/// `__tls_get_addr`, which may grow the thread's DTV with `malloc`, that is, with ourselves.
/// glibc reserves static TLS for every module loaded at start-up, so the block exists in every
/// thread from its creation, zeroed (slot 0, `FRESH`, holding 0).
#[cfg(all(feature = "initial-exec-tls", not(miri), not(loom)))]
mod vars {
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    compile_error!("the initial-exec-tls feature supports x86_64 Linux only");

    // `.tbss`: zero-initialised thread-local data. Global but hidden, so that every codegen
    // unit (and every crate this is inlined into) of one shared object finds the same block,
    // and no other object sees it.
    core::arch::global_asm!(
        ".pushsection .tbss,\"awT\",@nobits",
        ".p2align 3",
        ".globl __pymalloc_tls_block_v1",
        ".hidden __pymalloc_tls_block_v1",
        ".type __pymalloc_tls_block_v1, @object",
        ".size __pymalloc_tls_block_v1, 24",
        "__pymalloc_tls_block_v1:",
        ".zero 24",
        ".popsection",
    );

    const SLOT: usize = 0;
    const PHASE: usize = 8;
    const HOLDING: usize = 16;

    /// The word at byte `OFF` of this thread's block.
    #[inline(always)]
    fn read<const OFF: usize>() -> u64 {
        let v: u64;
        // SAFETY: the block is this thread's own static TLS (24 bytes, 8-aligned), which
        // exists from the thread's creation on; the GOT entry holds its offset from the
        // thread pointer. Reads only; no stack, no flags.
        unsafe {
            core::arch::asm!(
                "movq __pymalloc_tls_block_v1@GOTTPOFF(%rip), {v}",
                "movq %fs:{off}({v}), {v}",
                v = out(reg) v,
                off = const OFF,
                options(att_syntax, nostack, preserves_flags, readonly, pure),
            );
        }
        v
    }

    /// Writes the word at byte `OFF` of this thread's block.
    #[inline(always)]
    fn write<const OFF: usize>(value: u64) {
        // SAFETY: as in `read`; the block is only ever touched by its own thread.
        unsafe {
            core::arch::asm!(
                "movq __pymalloc_tls_block_v1@GOTTPOFF(%rip), {t}",
                "movq {v}, %fs:{off}({t})",
                t = out(reg) _,
                v = in(reg) value,
                off = const OFF,
                options(att_syntax, nostack, preserves_flags),
            );
        }
    }

    #[inline(always)]
    pub(super) fn slot() -> usize {
        read::<SLOT>() as usize
    }
    #[inline]
    pub(super) fn phase() -> u8 {
        read::<PHASE>() as u8
    }
    #[inline]
    pub(super) fn holding() -> u64 {
        read::<HOLDING>()
    }
    /// The thread pointer (`%fs:0` holds its own address on x86_64): unique among live
    /// threads.
    #[inline]
    pub(super) fn marker() -> usize {
        let v: usize;
        // SAFETY: the first word of the thread control block, always mapped, is its address.
        unsafe {
            core::arch::asm!(
                "movq %fs:0, {v}",
                v = out(reg) v,
                options(att_syntax, nostack, preserves_flags, readonly, pure),
            );
        }
        v
    }
    #[inline]
    pub(super) fn set(slot: usize, phase: u8, holding: u64) {
        write::<SLOT>(slot as u64);
        write::<PHASE>(u64::from(phase));
        write::<HOLDING>(holding);
    }
}

/// Numbers each taking of a slot (from 1), so that a heap can tell whether its slot changed
/// hands since it was last looked after (see `Heap::holder`).
#[cfg(not(loom))]
static TAKINGS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Which taking of its slot the current thread is: 0 if it holds none.
#[cfg(not(loom))]
#[inline]
pub(crate) fn holding() -> u64 {
    vars::holding()
}

/// A number unique to the calling thread among live threads, for the lock's re-entry check in
/// debug builds and the fork handlers' holder. Never allocates.
#[cfg(not(loom))]
#[inline]
pub(crate) fn thread_marker() -> usize {
    vars::marker()
}

/// The current thread's slot: 0 until it registers, and again from its exit on. Always below
/// [`MAX_SLOTS`] (callers index with it unchecked).
#[inline(always)]
pub(crate) fn current() -> usize {
    let t = vars::slot();
    debug_assert!(t < MAX_SLOTS);
    t
}

/// Gives the current thread a slot if it has none and may take one; returns its slot, or 0 if
/// it must use the shared heap (no free slot, the thread is exiting, or its exit could not be
/// watched). Never allocates.
#[cfg(not(loom))]
#[cold]
#[inline(never)]
pub(crate) fn register() -> usize {
    let slot = current();
    if slot != 0 || vars::phase() != FRESH {
        return slot;
    }
    let Some(key) = exit_key() else {
        return 0;
    };
    let Some(t) = SLOTS.take_free() else {
        return 0;
    };
    vars::set(t, LIVE, TAKINGS.fetch_add(1, Relaxed) + 1);
    // SAFETY: `key` is a key we created; a key below PTHREAD_KEY_2NDLEVEL_SIZE needs no
    // allocation. The value only has to be non-null for the destructor to run.
    unsafe { libc::pthread_setspecific(key, core::ptr::dangling::<u8>().cast()) };
    t
}

/// Takes free slot `t` for a moment, so as to work on its heaps; `false` if it is not free.
#[cfg(not(loom))]
#[inline]
pub(crate) fn try_claim(t: usize) -> bool {
    SLOTS.try_claim(t)
}

/// Gives back a slot taken by [`try_claim`].
#[cfg(not(loom))]
#[inline]
pub(crate) fn release_claim(t: usize) {
    SLOTS.release(t);
}

const KEY_NONE: u32 = u32::MAX;
const KEY_BUSY: u32 = u32::MAX - 1;
const KEY_FAILED: u32 = u32::MAX - 2;
#[cfg(not(loom))]
static EXIT_KEY: AtomicU32 = AtomicU32::new(KEY_NONE);

#[cfg(not(loom))]
/// The pthread key whose destructor frees a thread's slot, created on first use.
fn exit_key() -> Option<libc::pthread_key_t> {
    loop {
        match EXIT_KEY.load(Acquire) {
            KEY_FAILED => return None,
            // Another thread is creating the key. Not waited for: had that thread been copied
            // away by `fork` mid-creation, the child would wait forever. This thread uses the
            // shared heap for now and tries again on its next slow path.
            KEY_BUSY => return None,
            KEY_NONE => {
                if EXIT_KEY
                    .compare_exchange(KEY_NONE, KEY_BUSY, Acquire, Relaxed)
                    .is_err()
                {
                    continue;
                }
                let mut key: libc::pthread_key_t = 0;
                // SAFETY: `key` is a valid out-pointer; the destructor is valid for the whole
                // process. pthread_key_create does not allocate in glibc.
                let ok = unsafe { libc::pthread_key_create(&mut key, Some(thread_exit)) } == 0;
                let v = if ok && key < KEY_FAILED {
                    key
                } else {
                    KEY_FAILED
                };
                EXIT_KEY.store(v, Release);
            }
            key => return Some(key),
        }
    }
}

#[cfg(not(loom))]
/// The key destructor: the thread is exiting. The registered allocators collect its heaps (see
/// [`add_exit_hook`]); then the heaps stay, for the next holder of the slot.
#[cfg(not(loom))]
extern "C" fn thread_exit(_value: *mut libc::c_void) {
    let t = current();
    if t != 0 {
        let n = HOOKS.taken.load(Relaxed).min(MAX_EXIT_HOOKS);
        for i in 0..n {
            // Acquire: pairs with the Release that published the entry.
            let data = HOOKS.data[i].load(Acquire);
            if data.is_null() {
                continue; // claimed, not written yet
            }
            let hook = HOOKS.hook[i].load(Relaxed);
            // SAFETY: a published entry holds a hook of type `ExitHook` for that data, valid
            // for the whole process; we still hold slot `t`.
            unsafe {
                let hook: ExitHook = core::mem::transmute::<*mut (), ExitHook>(hook);
                hook(data, t);
            }
        }
    }
    vars::set(0, TORN_DOWN, 0);
    if t != 0 {
        SLOTS.release(t);
    }
}

/// What an allocator runs when a thread holding slot `t` exits, with the data it registered,
/// before the slot is freed.
///
/// # Safety
/// Called only from the thread exit destructor, on the thread that holds slot `t`.
pub(crate) type ExitHook = unsafe fn(*const (), usize);

/// How many allocators can have their heaps collected at thread exit.
#[cfg_attr(loom, allow(unreachable_pub))]
pub const MAX_EXIT_HOOKS: usize = 16;

#[cfg(not(loom))]
struct Hooks {
    data: [core::sync::atomic::AtomicPtr<()>; MAX_EXIT_HOOKS], // null until the entry is ready
    hook: [core::sync::atomic::AtomicPtr<()>; MAX_EXIT_HOOKS],
    taken: core::sync::atomic::AtomicUsize, // entries handed out (some perhaps not ready yet)
}

#[cfg(not(loom))]
static HOOKS: Hooks = Hooks {
    data: [const { core::sync::atomic::AtomicPtr::new(core::ptr::null_mut()) }; MAX_EXIT_HOOKS],
    hook: [const { core::sync::atomic::AtomicPtr::new(core::ptr::null_mut()) }; MAX_EXIT_HOOKS],
    taken: core::sync::atomic::AtomicUsize::new(0),
};

/// Registers `hook(data, slot)` to run on every thread exit from now on, before the thread's
/// slot is freed. `data` must stay valid for the rest of the process. Returns `false` if the
/// table is full; registering the same `data` again is a no-op (two threads registering the same
/// data at the same moment may both add it: its hook then runs twice per exit, which a
/// collection tolerates).
///
/// Lock-free, so that a `fork` in the middle of a registration cannot leave the child waiting:
/// an entry is claimed by incrementing `taken`, written, and published by storing its data
/// (`Release`); exiting threads skip entries whose data is still null.
#[cfg(not(loom))]
pub(crate) fn add_exit_hook(data: *const (), hook: ExitHook) -> bool {
    let n = HOOKS.taken.load(Acquire).min(MAX_EXIT_HOOKS);
    if HOOKS.data[..n]
        .iter()
        .any(|d| d.load(Acquire).cast_const() == data)
    {
        return true;
    }
    let mut i = HOOKS.taken.load(Relaxed);
    loop {
        if i >= MAX_EXIT_HOOKS {
            return false;
        }
        match HOOKS
            .taken
            .compare_exchange_weak(i, i + 1, Relaxed, Relaxed)
        {
            Ok(_) => break,
            Err(now) => i = now,
        }
    }
    HOOKS.hook[i].store(hook as *mut (), Relaxed);
    // Release: a thread exit that sees the data sees the hook.
    HOOKS.data[i].store(data.cast_mut(), Release);
    true
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_thread_takes_a_slot_and_frees_it_at_exit() {
        std::thread::spawn(|| {
            let t = register();
            assert_ne!(t, 0);
            assert_eq!(register(), t, "registering twice keeps the slot");
            assert_eq!(current(), t);
            assert_eq!(SLOTS.states[t].0.load(Relaxed), OWNED);
            assert!(!try_claim(t), "an owned slot cannot be claimed");
            // What the key destructor does at exit (it runs again, harmlessly, after this).
            thread_exit(core::ptr::null_mut());
            assert!(try_claim(t), "a freed slot can be claimed");
            release_claim(t);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_torn_down_thread_does_not_register_again() {
        std::thread::spawn(|| {
            assert_ne!(register(), 0);
            thread_exit(core::ptr::null_mut());
            assert_eq!(current(), 0);
            assert_eq!(register(), 0, "no slot after teardown");
        })
        .join()
        .unwrap();
    }
}

/// loom models of the slot hand-over: a thread's heap (here one `u64`) written by its owner is
/// seen whole by whoever claims the slot after the owner exits, and by the next thread to take
/// the slot; a claim and a registration never hold the slot at once (loom's `UnsafeCell`
/// reports any access that no hand-over orders as a data race).
/// `RUSTFLAGS="--cfg loom" cargo test -p pymalloc --release --lib`
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;

    struct World {
        slots: SlotStates,
        heap: UnsafeCell<u64>, // heap 1 of some allocator
    }

    // SAFETY: `heap` is touched only by the holder of slot 1.
    unsafe impl Sync for World {}

    #[test]
    fn an_exited_threads_heap_passes_whole_to_a_claimer_and_to_the_next_owner() {
        loom::model(|| {
            let w = Arc::new(World {
                slots: SlotStates::new(),
                heap: UnsafeCell::new(0),
            });
            assert_eq!(w.slots.take_free(), Some(1));
            let owner = {
                let w = w.clone();
                thread::spawn(move || {
                    // SAFETY: we hold slot 1.
                    w.heap.with_mut(|h| unsafe { *h = 10 });
                    w.slots.release(1); // thread exit
                })
            };
            let claimer = {
                let w = w.clone();
                thread::spawn(move || {
                    if w.slots.try_claim(1) {
                        // SAFETY: we hold slot 1.
                        w.heap.with_mut(|h| unsafe {
                            assert_eq!(*h, 10, "the claimer sees the heap before its owner left");
                            *h += 1;
                        });
                        w.slots.release(1);
                    }
                })
            };
            // A new thread registering: slot 1 if it is free by then, else slot 2.
            let t = w.slots.take_free().expect("63 slots are free");
            if t == 1 {
                // SAFETY: we hold slot 1.
                let h = w.heap.with(|h| unsafe { *h });
                assert!(h == 10 || h == 11, "the next owner sees a torn heap: {h}");
            }
            w.slots.release(t);
            owner.join().unwrap();
            claimer.join().unwrap();
        });
    }
}
