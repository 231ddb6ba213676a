//! pymalloc-rs as the process's C `malloc`: a shared object that `LD_PRELOAD` puts in front of
//! the C library, so that programs written in C, and the interpreters built on them (python3
//! among them), allocate from PyMalloc's arenas without being rebuilt.
//!
//! ```text
//! cargo build --release -p pymalloc-preload
//! LD_PRELOAD=target/release/libpymalloc_preload.so PYTHONMALLOC=malloc python3 script.py
//! ```
//!
//! (`PYTHONMALLOC=malloc` has CPython send its objects to `malloc`, that is here, instead of to
//! its own copy of pymalloc; without it only CPython's larger requests arrive.)
//!
//! # What goes where
//! - `malloc`, `calloc`, `realloc` and the aligned family: a request of at most 512 bytes
//!   (`SMALL_REQUEST_THRESHOLD`) whose alignment is at most 16 (`ALIGNMENT`) gets a block of
//!   PyMalloc's pools. Everything else, and a small request when no arena can be mapped, goes
//!   to glibc's own allocator through its `__libc_malloc` family: the layer below for this
//!   shared object (`RawMalloc` calls `malloc`, which here is ourselves).
//! - `free`, `realloc` and `malloc_usable_size` get a pointer without its size. The arena map
//!   says in O(1), without touching the block, whether it is in one of our arenas
//!   (`PyMalloc::owns`): if so its pool header gives its size class, otherwise it is glibc's.
//! - The thread's heap is found through initial-exec TLS (pymalloc's `initial-exec-tls`
//!   feature), which never calls `__tls_get_addr`: with the general-dynamic model Rust gives
//!   a shared object, that call can grow the thread's TLS vector with `malloc`, re-entering us.
//!
//! # What C programs rely on (glibc's behaviour, kept)
//! - Every result is 16-aligned (`alignof(max_align_t)`); `malloc(0)` returns a unique
//!   pointer; `free(NULL)` does nothing.
//! - Failure returns null and sets `errno` to `ENOMEM`, also when `calloc` or `reallocarray`
//!   would overflow `size_t`. Nothing aborts on a failed allocation.
//! - `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)` frees `p` and returns null; a failed
//!   `realloc` leaves `p` as it was. A block shrunk to more than three quarters of its size
//!   stays where it is (CPython's `pymalloc_realloc` rule); otherwise it moves to a smaller
//!   class, or between the pools and glibc, by copying.
//! - `posix_memalign` returns `EINVAL` for an alignment that is not a power of two multiple of
//!   `sizeof(void *)` and leaves `*memptr` alone; `memalign` rounds such an alignment up;
//!   `valloc` and `pvalloc` align to the page.
//! - One difference: `aligned_alloc` fails with `EINVAL` for an alignment that is not a power
//!   of two, as C17 has it (DR 460); glibc 2.36, Debian 12's, rounds it up as `memalign` does.
//! - `calloc` clears the whole block, all of what `malloc_usable_size` reports.
//!
//! # Start-up, threads and fork
//! - Nothing has to run before the first `malloc` (the allocator is a `const` static; each
//!   thread registers on its first allocation), so allocations made while the dynamic linker is
//!   still loading libraries are served too.
//! - A constructor (`.init_array`) makes the allocator fork-safe (`enable_fork_safety`), has
//!   each exiting thread collect its heap (`collect_at_thread_exit`), and makes glibc's first
//!   allocation call (see `glibc_ready`).
//! - glibc sets its allocator up on its first call, without a lock. Since the small requests
//!   are served here, that first call could come from many threads at once; the constructor
//!   makes it while the process normally has one thread, and until it has been made, the
//!   first `__libc_*` call of ours is made by one thread while the others wait. Not covered:
//!   threads that a library's constructor starts before ours runs, calling glibc functions
//!   this library does not replace (`mallinfo2`, `mallopt`, ...) at the same time as their
//!   first large request. `PYMALLOC_LAZY_GLIBC=1` skips the constructor's call (for tests).
//! - glibc frees (and sometimes allocates) after a thread's key destructors have run; such a
//!   thread uses the shared locked heap (see pymalloc's `tls` module).
//!
//! # Introspection
//! - `pymalloc_owns(p)`: 1 if `p` is in one of our arenas.
//! - `pymalloc_print_stats(fd)`: the `sys._debugmallocstats()`-style report, written to `fd`
//!   without allocating.
//! - `PYMALLOC_SHOW_STATS=1` in the environment prints that report to standard error at exit.
//!
//! # Limits
//! x86_64 Linux with glibc only (the `__libc_*` entry points and the TLS access are theirs).
//! `mallinfo`, `malloc_stats` and `mallopt` are not replaced: they describe and tune glibc's
//! part alone. `malloc_trim` trims both.
#![deny(unsafe_op_in_unsafe_fn)]

use core::alloc::Layout;
use core::ffi::{c_char, c_int, c_void};
use core::fmt;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::*};

use pymalloc::{Geometry, GeometryExt, Py310, PyMalloc};

#[cfg(not(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu")))]
compile_error!("pymalloc-preload supports x86_64 Linux with glibc only");

/// The allocator behind every C entry point. Its backend (`RawMalloc`) is never called: large
/// requests go to glibc's `__libc_*` functions directly, and the pools are asked with
/// `alloc_pooled`, which never falls back.
static ALLOC: PyMalloc = PyMalloc::new();

/// `SMALL_REQUEST_THRESHOLD`: the largest request the pools serve.
const SMALL: usize = Py310::SMALL_REQUEST_THRESHOLD;
/// `ALIGNMENT`: what every result is aligned to (also glibc's `MALLOC_ALIGNMENT`).
const ALIGN: usize = Py310::ALIGNMENT;

// glibc's allocator under names that interposition does not reach (exported by libc.so.6
// since GLIBC_2.2.5).
unsafe extern "C" {
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_calloc(n: usize, size: usize) -> *mut c_void;
    fn __libc_realloc(p: *mut c_void, size: usize) -> *mut c_void;
    fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
    fn __libc_free(p: *mut c_void);
}

/// Whether glibc's allocator has been initialised: [`GLIBC_READY`], or the `pthread_self` of
/// the one thread initialising it, or 0 before that.
static GLIBC_INIT: AtomicUsize = AtomicUsize::new(0);
const GLIBC_READY: usize = 1;

/// Call before any `__libc_*` allocation. glibc sets its allocator up lazily, on its first
/// call, and without a lock: normally that first call comes from the dynamic linker or the
/// C library's start-up, before a second thread exists. With the small requests served here,
/// glibc's first call can be the first large request of a program already running many
/// threads; several at once corrupt its main arena. So the first call is made by one thread
/// while the others wait (only ever at start-up, and after this one load each time).
#[inline(always)]
fn glibc_ready() {
    if GLIBC_INIT.load(Acquire) != GLIBC_READY {
        init_glibc();
    }
}

#[cold]
#[inline(never)]
fn init_glibc() {
    // SAFETY: pthread_self has no preconditions; a thread's handle is a non-null address
    // (its thread control block), so never 0 or GLIBC_READY.
    let me = unsafe { libc::pthread_self() } as usize;
    match GLIBC_INIT.compare_exchange(0, me, Acquire, Acquire) {
        Ok(_) => {
            // SAFETY: glibc's own malloc and free of its own block; the first call
            // initialises its allocator.
            unsafe { __libc_free(__libc_malloc(SMALL + 1)) };
            GLIBC_INIT.store(GLIBC_READY, Release);
        }
        // Initialised, or this very thread is initialising it and glibc called us back.
        Err(GLIBC_READY) => {}
        Err(t) if t == me => {}
        Err(_) => {
            while GLIBC_INIT.load(Acquire) != GLIBC_READY {
                // SAFETY: no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
    }
}

/// `pthread_atfork` prepare handler: a child is never forked while another thread is halfway
/// through [`init_glibc`] (the child would wait for it forever). (This also sets glibc up in
/// a parent that had not yet made a large request.)
extern "C" fn glibc_ready_before_fork() {
    if LAZY_GLIBC.load(Relaxed) && GLIBC_INIT.load(Acquire) == 0 {
        // The test knob: leave glibc untouched in parent and child. (A first call starting in
        // another thread during this fork would leave the child waiting; the tests that use
        // the knob fork from one thread.)
        return;
    }
    glibc_ready();
}

/// `PYMALLOC_LAZY_GLIBC=1`: glibc's first call is left to the first large request.
static LAZY_GLIBC: AtomicBool = AtomicBool::new(false);

fn set_errno(e: c_int) {
    // SAFETY: `__errno_location` returns this thread's `errno`, always valid.
    unsafe { *libc::__errno_location() = e };
}

/// A block of the pools for `size` bytes (at most `SMALL`), or null.
#[inline(always)]
fn pooled(size: usize, zeroed: bool) -> *mut c_void {
    // SAFETY: `size <= SMALL` and ALIGN is a power of two: a valid layout.
    let layout = unsafe { Layout::from_size_align_unchecked(size, ALIGN) };
    ALLOC.alloc_pooled(layout, zeroed).cast()
}

/// The usable size of a live block, ours or glibc's.
///
/// # Safety
/// `p` is a live block of this process's `malloc`.
unsafe fn usable_size(p: *mut c_void) -> usize {
    // SAFETY: forwarded from the caller.
    match unsafe { ALLOC.block_size(p.cast()) } {
        Some(n) => n,
        // SAFETY: not ours, so glibc's.
        None => unsafe { glibc_usable_size(p) },
    }
}

/// The next definition of `name` after ours (glibc's), looked up once with
/// `dlsym(RTLD_NEXT)` and kept in `slot`; null if there is none.
#[cold]
fn glibc_fn(slot: &AtomicPtr<c_void>, name: &core::ffi::CStr) -> *mut c_void {
    let mut f = slot.load(Acquire);
    if f.is_null() {
        // SAFETY: a NUL-terminated name; dlsym may allocate (through us), which is no
        // re-entry into the caller.
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
        slot.store(f, Release);
    }
    f
}

/// glibc's `malloc_usable_size`, which ours hides.
///
/// # Safety
/// `p` is a live block of glibc's allocator.
#[cold]
unsafe fn glibc_usable_size(p: *mut c_void) -> usize {
    static NEXT: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());
    let f = glibc_fn(&NEXT, c"malloc_usable_size");
    if f.is_null() {
        return 0;
    }
    // SAFETY: glibc's `size_t malloc_usable_size(void *)`.
    let f: unsafe extern "C" fn(*mut c_void) -> usize = unsafe { core::mem::transmute(f) };
    // SAFETY: forwarded from the caller.
    unsafe { f(p) }
}

/// C `malloc`.
///
/// # Safety
/// None beyond C's: callable from any thread at any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    if size <= SMALL {
        let p = pooled(size, false);
        if !p.is_null() {
            return p;
        }
    }
    glibc_ready();
    // SAFETY: glibc's malloc; it sets errno on failure.
    unsafe { __libc_malloc(size) }
}

/// C `free`.
///
/// # Safety
/// `p` is null or a live block of this process's `malloc`, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    // SAFETY: per the contract, a live block: ours if it is in an arena.
    if !unsafe { ALLOC.dealloc_pooled(p.cast()) } {
        // SAFETY: not in an arena, so glibc's.
        unsafe { __libc_free(p) }
    }
}

/// C `calloc`.
///
/// # Safety
/// None beyond C's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    let Some(total) = n.checked_mul(size) else {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    if total <= SMALL {
        // The whole block is cleared, not only the bytes asked for, as glibc does: a program
        // may use all of `malloc_usable_size`. A class's block size is the request rounded up
        // to ALIGN, so asking for that rounded size clears the whole block.
        let p = pooled(total.max(1).next_multiple_of(ALIGN), true);
        if !p.is_null() {
            return p;
        }
    }
    glibc_ready();
    // SAFETY: glibc's calloc, which clears (or knows the memory is fresh) and checks.
    unsafe { __libc_calloc(n, size) }
}

/// C `realloc`.
///
/// # Safety
/// `p` is null or a live block of this process's `malloc`; after a non-null result (or a zero
/// `size`) it is not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if p.is_null() {
        // SAFETY: C's contract.
        return unsafe { malloc(size) };
    }
    // SAFETY: per the contract, a live block.
    let Some(old) = (unsafe { ALLOC.block_size(p.cast()) }) else {
        // glibc's block stays glibc's (its size is not known here without asking glibc);
        // `__libc_realloc(p, 0)` frees it and returns null, as ours does below.
        // SAFETY: not in an arena, so glibc's.
        return unsafe { __libc_realloc(p, size) };
    };
    if size == 0 {
        // SAFETY: our live block, freed once.
        unsafe { free(p) };
        return ptr::null_mut();
    }
    if size <= old && 4 * size > 3 * old {
        return p; // CPython: not worth moving for a small shrink
    }
    // SAFETY: C's contract.
    let q = unsafe { malloc(size) };
    if !q.is_null() {
        // SAFETY: both blocks are live and distinct, with at least `min(old, size)` bytes.
        unsafe {
            ptr::copy_nonoverlapping(p.cast::<u8>(), q.cast::<u8>(), old.min(size));
            free(p);
        }
    }
    q
}

/// C `reallocarray` (glibc 2.26, OpenBSD): `realloc` with an overflow check.
///
/// # Safety
/// As for [`realloc`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: forwarded from the caller.
        Some(total) => unsafe { realloc(p, total) },
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// A block of `size` bytes aligned to `align` (a power of two), or null with `errno` set.
fn aligned(align: usize, size: usize) -> *mut c_void {
    if align <= ALIGN {
        // SAFETY: every result of ours is ALIGN-aligned.
        return unsafe { malloc(size) };
    }
    glibc_ready();
    // SAFETY: glibc's memalign, with a power-of-two alignment.
    unsafe { __libc_memalign(align, size) }
}

/// POSIX `posix_memalign`.
///
/// # Safety
/// `out` is valid for a pointer write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || !align.is_multiple_of(size_of::<*mut c_void>()) {
        return libc::EINVAL;
    }
    let saved = errno();
    let p = aligned(align, size);
    if p.is_null() {
        set_errno(saved); // posix_memalign reports through its result, not errno
        return libc::ENOMEM;
    }
    // SAFETY: per the contract.
    unsafe { out.write(p) };
    0
}

fn errno() -> c_int {
    // SAFETY: as in `set_errno`.
    unsafe { *libc::__errno_location() }
}

/// C11 `aligned_alloc`.
///
/// # Safety
/// None beyond C's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    aligned(align, size)
}

/// The obsolete `memalign`: a non-power-of-two alignment is rounded up, as glibc does.
///
/// # Safety
/// None beyond C's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    match align.max(1).checked_next_power_of_two() {
        Some(a) => aligned(a, size),
        None => {
            set_errno(libc::EINVAL);
            ptr::null_mut()
        }
    }
}

fn page_size() -> usize {
    pymalloc_vmm::page_size()
}

/// The obsolete `valloc`: page-aligned.
///
/// # Safety
/// None beyond C's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    aligned(page_size(), size)
}

/// The obsolete `pvalloc`: page-aligned, the size rounded up to whole pages.
///
/// # Safety
/// None beyond C's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let page = page_size();
    match size.max(1).checked_next_multiple_of(page) {
        Some(n) => aligned(page, n),
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// glibc's `malloc_usable_size`: how many bytes of the block may be used (at least what was
/// asked for); 0 for null.
///
/// # Safety
/// `p` is null or a live block of this process's `malloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    if p.is_null() {
        return 0;
    }
    // SAFETY: per the contract.
    unsafe { usable_size(p) }
}

/// glibc's `malloc_trim`: gives back what the pools keep in reserve (`PyMalloc::trim`: the
/// calling thread's kept empty pools, the heaps of exited threads, every wholly free arena, the
/// pages of free pools), then has glibc trim its own part with `pad`. Returns 1 if an arena of
/// ours went back to the OS or glibc released memory, else 0.
#[unsafe(no_mangle)]
pub extern "C" fn malloc_trim(pad: usize) -> c_int {
    static NEXT: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());
    let ours = ALLOC.trim() > 0;
    let f = glibc_fn(&NEXT, c"malloc_trim");
    let theirs = if f.is_null() {
        0
    } else {
        glibc_ready();
        // SAFETY: glibc's `int malloc_trim(size_t)`.
        let f: extern "C" fn(usize) -> c_int = unsafe { core::mem::transmute(f) };
        f(pad)
    };
    c_int::from(ours || theirs != 0)
}

/// 1 if `p` points into one of the allocator's arenas (a block the pools served), else 0.
/// Never touches the memory at `p`.
#[unsafe(no_mangle)]
pub extern "C" fn pymalloc_owns(p: *const c_void) -> c_int {
    c_int::from(ALLOC.owns(p.cast()))
}

/// Writes the allocator's report (the shape of CPython's `sys._debugmallocstats()`) to file
/// descriptor `fd`, without allocating. Returns 0, or -1 if a write failed.
#[unsafe(no_mangle)]
pub extern "C" fn pymalloc_print_stats(fd: c_int) -> c_int {
    let mut w = FdWriter { fd };
    let report = format_args!(
        "{}(blocks above 512 bytes or over-aligned go to glibc's malloc directly here, and are \
         not counted above)\n",
        ALLOC.stats()
    );
    match fmt::Write::write_fmt(&mut w, report) {
        Ok(()) => 0,
        Err(_) => -1,
    }
}

/// `fmt::Write` straight to a file descriptor with `write(2)`.
struct FdWriter {
    fd: c_int,
}

impl fmt::Write for FdWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut b = s.as_bytes();
        while !b.is_empty() {
            // SAFETY: `b` is a readable slice of the length passed.
            let n = unsafe { libc::write(self.fd, b.as_ptr().cast(), b.len()) };
            if n > 0 {
                b = &b[n as usize..];
            } else if n < 0 && errno() == libc::EINTR {
                continue;
            } else {
                return Err(fmt::Error);
            }
        }
        Ok(())
    }
}

/// Whether to print the report at exit (`PYMALLOC_SHOW_STATS` set to something other than
/// `0` or empty).
static SHOW_STATS: AtomicBool = AtomicBool::new(false);

extern "C" fn init() {
    ALLOC.enable_fork_safety();
    // Registered after the allocator's handlers, so its prepare handler runs before theirs
    // (prepare handlers run in the reverse order of registration): glibc's first call may
    // come back to our pools, which theirs lock.
    // SAFETY: a handler that may run at any fork; null parent and child handlers.
    unsafe { libc::pthread_atfork(Some(glibc_ready_before_fork), None, None) };
    ALLOC.collect_at_thread_exit();
    // Set glibc's allocator up now, while the process normally still has one thread: besides
    // our `__libc_*` calls (which `glibc_ready` guards anyway), glibc functions we do not
    // replace (`mallinfo2`, `mallopt`, `malloc_stats`, `malloc_info`) set it up lazily too,
    // unguarded. `PYMALLOC_LAZY_GLIBC=1` skips this, leaving it to the first large request
    // (the tests use it to exercise the guard).
    // SAFETY: a NUL-terminated name; getenv does not allocate.
    let lazy: *const c_char = unsafe { libc::getenv(c"PYMALLOC_LAZY_GLIBC".as_ptr()) };
    // SAFETY: a non-null getenv result is a NUL-terminated string.
    if lazy.is_null() || unsafe { core::ffi::CStr::from_ptr(lazy) }.to_bytes() != b"1" {
        glibc_ready();
    } else {
        LAZY_GLIBC.store(true, Relaxed);
    }
    // SAFETY: a NUL-terminated name; getenv does not allocate.
    let v: *const c_char = unsafe { libc::getenv(c"PYMALLOC_SHOW_STATS".as_ptr()) };
    // SAFETY: a non-null getenv result is a NUL-terminated string.
    let on = !v.is_null()
        && !matches!(
            unsafe { core::ffi::CStr::from_ptr(v) }.to_bytes(),
            b"" | b"0"
        );
    SHOW_STATS.store(on, Relaxed);
}

extern "C" fn fini() {
    if SHOW_STATS.load(Relaxed) {
        pymalloc_print_stats(2);
    }
}

// The constructor and destructor, run by the dynamic linker when the shared object is loaded
// and when the process exits.
#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn() = init;

#[used]
#[unsafe(link_section = ".fini_array")]
static FINI: extern "C" fn() = fini;
