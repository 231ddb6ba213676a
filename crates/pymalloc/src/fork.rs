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
//! Lock order: the handlers take the registered locks in registration order. An allocator
//! registers its shared heap's lock, then its arenas lock, the order in which its code takes
//! them; no code holds locks of two allocators at once (an allocator never calls into another
//! while locked), so this order cannot deadlock. The C library's own `fork` handling protects `malloc` (layer
//! +1).
//!
//! Other code's fork handlers may allocate. Prepare handlers registered before ours run after
//! ours, and parent and child handlers registered before ours run before ours: in both cases
//! on the forking thread, which then holds every registered lock. So from `prepare` to
//! `parent` or `child` the forking thread is recorded (`FORK_HOLDER`), and a `sync::Lock` it
//! finds taken is, if registered, used as held: no wait, no release (`held_for_fork_by_me`).
//! That is safe because nothing else can be inside the lock's critical section then (the
//! forking thread took it in `prepare`, outside any) and the forking thread only runs handlers
//! until `fork` returns. glibc's `malloc` gets the same freedom by locking inside `fork`
//! itself, after the handlers; an allocator loaded in front of it cannot.
//!
//! # Concurrency
//! The registry is a fixed array filled in order and a count published with `Release` after
//! its slot; registrations are serialised by a lock of their own, which the `prepare` handler
//! also holds until `parent` or `child`, so a fork never sees half a registration and the
//! three handlers see the same set of locks. The loom models at the end of this file check
//! that a fork racing with registrations and with users of the locks takes every registered
//! lock (so no user is inside its critical section) and gives every one back, and that the
//! handlers are installed exactly once.

use crate::sync::RawLock;
use crate::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

/// How many allocators can be registered for fork safety.
pub const MAX_REGISTERED: usize = 16;

/// The locks the fork handlers take, in registration order.
pub(crate) struct Registry {
    locks: [AtomicPtr<RawLock>; MAX_REGISTERED], // the first `count` are set
    count: AtomicUsize,
    installed: AtomicBool, // the handlers are installed
    registering: RawLock,  // serialises registrations; held from `prepare` to the end
}

#[cfg(not(loom))]
static REGISTRY: Registry = Registry::new();

/// Registers `lock` with the fork handlers, installing them on first use. Returns `false` if
/// the table is full or `pthread_atfork` failed. Registering the same lock twice is a no-op.
#[cfg(not(loom))]
pub(crate) fn register(lock: &'static RawLock) -> bool {
    REGISTRY.register(lock, || {
        // SAFETY: the handlers are `extern "C"` functions valid for the whole process.
        unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) == 0 }
    })
}

/// The thread marker (`tls::thread_marker`) of the thread between our `prepare` and its
/// `parent` or `child`, else 0. It holds every registered lock all that time, and other
/// libraries' fork handlers run on it in between (prepare handlers registered before ours run
/// after it; parent and child handlers registered before ours run before theirs). If one of
/// them allocates and needs a lock it already holds, it uses it as held (see
/// [`held_for_fork_by_me`]) instead of waiting for itself.
#[cfg(not(loom))]
static FORK_HOLDER: AtomicUsize = AtomicUsize::new(0);

/// Whether the calling thread holds `lock` because it is forking (between our `prepare` and
/// its `parent` or `child`): then it may use what the lock guards, and must not release it.
/// Only the forking thread itself writes `FORK_HOLDER`, and thread markers are unique among
/// live threads, so no other thread can see its own marker there.
#[cfg(not(loom))]
pub(crate) fn held_for_fork_by_me(lock: &RawLock) -> bool {
    let holder = FORK_HOLDER.load(Ordering::Relaxed);
    holder != 0
        && holder == crate::tls::thread_marker()
        && REGISTRY.registered().any(|l| core::ptr::eq(l, lock))
}

#[cfg(not(loom))]
extern "C" fn prepare() {
    REGISTRY.prepare();
    FORK_HOLDER.store(crate::tls::thread_marker(), Ordering::Relaxed);
}

#[cfg(not(loom))]
extern "C" fn parent() {
    FORK_HOLDER.store(0, Ordering::Relaxed);
    REGISTRY.parent();
}

#[cfg(not(loom))]
extern "C" fn child() {
    FORK_HOLDER.store(0, Ordering::Relaxed);
    // SAFETY: `fork` runs this in the child, where the forking thread is the only thread and
    // holds every registered lock since `prepare`.
    unsafe { REGISTRY.child() };
}

impl Registry {
    #[cfg(not(loom))]
    const fn new() -> Self {
        Self {
            locks: [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_REGISTERED],
            count: AtomicUsize::new(0),
            installed: AtomicBool::new(false),
            registering: RawLock::new(),
        }
    }

    #[cfg(loom)]
    fn new() -> Self {
        Self {
            locks: core::array::from_fn(|_| AtomicPtr::new(core::ptr::null_mut())),
            count: AtomicUsize::new(0),
            installed: AtomicBool::new(false),
            registering: RawLock::new(),
        }
    }

    /// Adds `lock`, first calling `install` (which installs the handlers, and says whether it
    /// could) if no registration has done so yet.
    fn register(&self, lock: &'static RawLock, install: impl FnOnce() -> bool) -> bool {
        self.registering.lock();
        let ok = self.register_locked(lock, install);
        self.registering.unlock();
        ok
    }

    fn register_locked(&self, lock: &'static RawLock, install: impl FnOnce() -> bool) -> bool {
        let n = self.count.load(Ordering::Relaxed);
        let ptr = lock as *const RawLock as *mut RawLock;
        if self.locks[..n]
            .iter()
            .any(|l| l.load(Ordering::Relaxed) == ptr)
        {
            return true;
        }
        if n == MAX_REGISTERED {
            return false;
        }
        if !self.installed.load(Ordering::Relaxed) {
            if !install() {
                return false;
            }
            self.installed.store(true, Ordering::Relaxed);
        }
        self.locks[n].store(ptr, Ordering::Relaxed);
        // Release, with the Acquire in `registered`: a reader that sees the new count sees the
        // slot filled. Today every reader also holds `registering`, which orders them anyway
        // (the models pass with this store `Relaxed`); the pair keeps `registered` right on
        // its own.
        self.count.store(n + 1, Ordering::Release);
        true
    }

    fn registered(&self) -> impl Iterator<Item = &RawLock> {
        // Acquire: pairs with the Release in `register_locked`.
        let n = self.count.load(Ordering::Acquire);
        self.locks[..n].iter().map(|l| {
            // SAFETY: registered pointers come from `&'static RawLock`s.
            unsafe { &*l.load(Ordering::Relaxed) }
        })
    }

    /// Before `fork`: holds off registrations, so the set of locks is the same in all three
    /// handlers, then takes every registered lock.
    fn prepare(&self) {
        self.registering.lock();
        for l in self.registered() {
            l.lock();
        }
    }

    /// After `fork`, in the parent: gives back everything `prepare` took.
    fn parent(&self) {
        for l in self.registered() {
            l.unlock();
        }
        self.registering.unlock();
    }

    /// After `fork`, in the child: marks every lock free.
    ///
    /// # Safety
    /// The calling thread is the process's only thread and ran `prepare`.
    unsafe fn child(&self) {
        for l in self.registered() {
            // SAFETY: no other thread exists, and we took this lock in `prepare`.
            unsafe { l.reset_after_fork() };
        }
        // SAFETY: as above.
        unsafe { self.registering.reset_after_fork() };
    }
}

/// loom models of the registry racing with a fork.
/// `RUSTFLAGS="--cfg loom" cargo test -p pymalloc --release --lib`
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// A heap lock and a flag its holder raises while inside (what a heap operation is).
    struct Heap {
        lock: RawLock,
        busy: AtomicBool,
    }

    impl Heap {
        fn leak() -> &'static Self {
            Box::leak(Box::new(Self {
                lock: RawLock::new(),
                busy: AtomicBool::new(false),
            }))
        }

        fn operate(&self) {
            self.lock.lock();
            self.busy.store(true, Ordering::Relaxed);
            self.busy.store(false, Ordering::Relaxed);
            self.lock.unlock();
        }
    }

    /// What `fork` does in the parent, checking in between that every registered heap is
    /// idle and locked.
    fn fork_in_parent(r: &Registry, heaps: &[&'static Heap]) -> usize {
        r.prepare();
        let n = r.registered().count();
        for h in heaps {
            if r.registered().any(|l| core::ptr::eq(l, &h.lock)) {
                assert!(h.lock.is_locked(), "a registered lock was not taken");
                assert!(
                    !h.busy.load(Ordering::Relaxed),
                    "fork during a heap operation"
                );
            }
        }
        r.parent();
        n
    }

    /// A fork while one heap is in use and another is being registered: the fork sees one or
    /// both heaps, never a heap mid-operation, and afterwards every lock is free (a lock left
    /// taken would block `operate` below, which loom reports as a deadlock).
    #[test]
    fn a_fork_racing_registration_and_use_takes_and_gives_back_every_lock() {
        loom::model(|| {
            let r = Arc::new(Registry::new());
            let (h1, h2) = (Heap::leak(), Heap::leak());
            assert!(r.register(&h1.lock, || true));
            let registrar = {
                let r = r.clone();
                thread::spawn(move || assert!(r.register(&h2.lock, || true)))
            };
            let user = thread::spawn(move || h1.operate());
            let seen = fork_in_parent(&r, &[h1, h2]);
            assert!(seen == 1 || seen == 2, "saw {seen} locks");
            registrar.join().unwrap();
            user.join().unwrap();
            assert_eq!(r.registered().count(), 2);
            h1.operate();
            h2.operate();
        });
    }

    /// Concurrent first registrations install the handlers once, and both land.
    #[test]
    fn concurrent_registrations_install_once() {
        loom::model(|| {
            let r = Arc::new(Registry::new());
            let installs = Arc::new(AtomicUsize::new(0));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let (r, installs) = (r.clone(), installs.clone());
                    thread::spawn(move || {
                        let heap = Heap::leak();
                        assert!(r.register(&heap.lock, || {
                            installs.fetch_add(1, Ordering::Relaxed);
                            true
                        }));
                        // Registering again changes nothing.
                        assert!(r.register(&heap.lock, || unreachable!()));
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(installs.load(Ordering::Relaxed), 1);
            assert_eq!(r.registered().count(), 2);
        });
    }

    /// In the child the forking thread resets what it took, and the registry and every lock
    /// work again.
    #[test]
    fn the_child_finds_every_lock_free() {
        loom::model(|| {
            let r = Registry::new();
            let h = Heap::leak();
            assert!(r.register(&h.lock, || true));
            r.prepare();
            // SAFETY: this model's only thread ran `prepare`.
            unsafe { r.child() };
            assert!(!h.lock.is_locked());
            h.operate();
            assert!(r.register(&Heap::leak().lock, || true));
        });
    }
}
