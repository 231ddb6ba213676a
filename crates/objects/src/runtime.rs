//! The runtime of the calling thread: its free lists, its small ints, its interned strings,
//! and the queue that makes deallocation iterative.
//!
//! One thread is one runtime, as one interpreter under its GIL: objects are `!Send`, and every
//! object is created and freed on the thread whose runtime made it. Memory comes from one
//! `PyMalloc` for the whole process ([`allocator`]), CPython's object domain; the free lists
//! in front of it are the thread's (plain cells, no atomics), with CPython's caps.

use core::alloc::Layout;
use core::cell::{Cell, RefCell};
use core::ptr::{self, NonNull};
use std::collections::HashMap;

use pymalloc::PyMalloc;
use pymalloc_freelist::{FreeList, FreeListStats};

use crate::Error;
use crate::object::Header;

/// The allocator behind every object: CPython's object domain (`PyObject_Malloc`).
static ALLOC: PyMalloc = PyMalloc::new();

/// The `PyMalloc` that every object's memory comes from (free lists included: a block on a
/// free list is a block in use for it).
pub fn allocator() -> &'static PyMalloc {
    &ALLOC
}

/// Free-list caps. CPython 3.11: `PyList_MAXFREELIST` 80, `PyDict_MAXFREELIST` 80 (dicts and
/// keys objects); `Py_ints_MAXFREELIST` 100 in newer CPython (3.11 has none for int).
pub const LIST_FREELIST_CAP: usize = 80;
/// See [`LIST_FREELIST_CAP`].
pub const DICT_FREELIST_CAP: usize = 80;
/// See [`LIST_FREELIST_CAP`].
pub const DICT_KEYS_FREELIST_CAP: usize = 80;
/// See [`LIST_FREELIST_CAP`].
pub const INT_FREELIST_CAP: usize = 100;
/// Instances of user classes (CPython has no such list; the issue asks instances to come
/// through one like the built-in types).
pub const INSTANCE_FREELIST_CAP: usize = 80;
/// Strings of at most 7 bytes (one 48-byte block) are cached, 80 of them; CPython keeps no
/// str free list. Short strings are the ones created and dropped most (keys, identifiers,
/// digits of numbers being formatted); the block they take is the one `PyMalloc` would give
/// them anyway (41 to 48 bytes round to the 48-byte class), so the list costs no memory
/// beyond its 80 blocks. The measured effect is in docs/OBJECTS.md.
pub const STR_FREELIST_CAP: usize = 80;

/// Block layouts served by the free lists.
pub(crate) const INT_LAYOUT: Layout = layout(28); // one digit: 24 + 4
pub(crate) const STR_LAYOUT: Layout = layout(48); // 40 + up to 7 bytes + NUL
pub(crate) const LIST_LAYOUT: Layout = layout(56); // GC 16 + 40
pub(crate) const DICT_LAYOUT: Layout = layout(64); // GC 16 + 48
pub(crate) const KEYS_LAYOUT: Layout = layout(160); // 32 + 8 indices + 5 entries of 24
pub(crate) const INSTANCE_LAYOUT: Layout = layout(56); // dict 16 + GC 16 + 24

const fn layout(size: usize) -> Layout {
    match Layout::from_size_align(size, 8) {
        Ok(l) => l,
        Err(_) => panic!("bad layout"),
    }
}

/// Number of small ints cached: -5 ..= 256. CPython: `_PY_NSMALLNEGINTS`, `_PY_NSMALLPOSINTS`.
pub(crate) const NSMALLNEGINTS: i64 = 5;
pub(crate) const NSMALLPOSINTS: i64 = 257;
const NSMALL: usize = (NSMALLNEGINTS + NSMALLPOSINTS) as usize;

/// Interned strings by content; each entry holds one reference.
pub(crate) type InternTable = HashMap<Box<[u8]>, NonNull<Header>>;

pub(crate) struct Runtime {
    pub(crate) ints: FreeList<'static>,
    pub(crate) strs: FreeList<'static>,
    pub(crate) lists: FreeList<'static>,
    pub(crate) dicts: FreeList<'static>,
    pub(crate) keys: FreeList<'static>,
    pub(crate) instances: FreeList<'static>,
    lists_on: Cell<bool>,
    small_ints: [Cell<Option<NonNull<Header>>>; NSMALL],
    pub(crate) interned: RefCell<Option<InternTable>>,
    pub(crate) gc: crate::gc::GcState,
}

impl Runtime {
    const fn new() -> Self {
        Self {
            ints: FreeList::new(INT_LAYOUT, INT_FREELIST_CAP, &ALLOC),
            strs: FreeList::new(STR_LAYOUT, STR_FREELIST_CAP, &ALLOC),
            lists: FreeList::new(LIST_LAYOUT, LIST_FREELIST_CAP, &ALLOC),
            dicts: FreeList::new(DICT_LAYOUT, DICT_FREELIST_CAP, &ALLOC),
            keys: FreeList::new(KEYS_LAYOUT, DICT_KEYS_FREELIST_CAP, &ALLOC),
            instances: FreeList::new(INSTANCE_LAYOUT, INSTANCE_FREELIST_CAP, &ALLOC),
            lists_on: Cell::new(true),
            small_ints: [const { Cell::new(None) }; NSMALL],
            interned: RefCell::new(None),
            gc: crate::gc::GcState::new(),
        }
    }

    /// The free list of `kind`, if the lists are on and it serves `layout` (an int of more
    /// than one digit, a longer str or a larger keys table has none).
    fn list_for(&self, kind: Kind, layout: Layout) -> Option<&FreeList<'static>> {
        if !self.lists_on.get() {
            return None;
        }
        let list = match kind {
            Kind::Int => &self.ints,
            Kind::Str => &self.strs,
            Kind::List => &self.lists,
            Kind::Dict => &self.dicts,
            Kind::Keys => &self.keys,
            Kind::Instance => &self.instances,
        };
        (list.layout() == layout).then_some(list)
    }
}

/// Which free list an object's block belongs to (two kinds may share a layout: a list and an
/// instance are both 56 bytes).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Int,
    Str,
    List,
    Dict,
    Keys,
    Instance,
}

impl Drop for Runtime {
    /// The thread exits: the references the runtime holds (its small ints, its interned
    /// strings) are dropped, so objects nobody else holds go back to the allocator; then the
    /// free lists give their blocks back (their own drops).
    fn drop(&mut self) {
        let smalls: Vec<NonNull<Header>> = self.small_ints.iter().filter_map(Cell::take).collect();
        let interned: Vec<NonNull<Header>> = self
            .interned
            .get_mut()
            .take()
            .map(|t| t.into_values().collect())
            .unwrap_or_default();
        for p in smalls.into_iter().chain(interned) {
            // SAFETY: the cache and the table each held one reference.
            unsafe { crate::object::decref(p) };
        }
        self.gc.release();
    }
}

thread_local! {
    static RT: Runtime = const { Runtime::new() };
}

/// Runs `f` with the calling thread's runtime, or with `None` once it has been torn down
/// (objects dropped by other thread-locals' destructors at thread exit).
pub(crate) fn with<R>(f: impl FnOnce(Option<&Runtime>) -> R) -> R {
    let mut f = Some(f);
    match RT.try_with(|rt| (f.take().expect("called once"))(Some(rt))) {
        Ok(r) => r,
        Err(_) => (f.take().expect("not called"))(None),
    }
}

/// A block of `layout` for an object of `kind`: from its free list, else from [`allocator`].
/// Aborts (`handle_alloc_error`) if memory is exhausted, as CPython raises `MemoryError`.
pub(crate) fn alloc_block(kind: Kind, layout: Layout) -> NonNull<u8> {
    let p = with(|rt| match rt.and_then(|rt| rt.list_for(kind, layout)) {
        Some(list) => list.alloc(),
        // SAFETY: object layouts have a non-zero size.
        None => unsafe { core::alloc::GlobalAlloc::alloc(&ALLOC, layout) },
    });
    NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
}

/// A block of `layout` straight from [`allocator`], whatever free list serves that layout
/// (for objects with no free list of their own, such as weak references).
pub(crate) fn alloc_plain(layout: Layout) -> NonNull<u8> {
    // SAFETY: object layouts have a non-zero size.
    let p = unsafe { core::alloc::GlobalAlloc::alloc(&ALLOC, layout) };
    NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
}

/// Gives back a block from [`alloc_plain`].
///
/// # Safety
/// `p` came from `alloc_plain(layout)` and is no longer used.
pub(crate) unsafe fn free_plain(p: NonNull<u8>, layout: Layout) {
    // SAFETY: allocated from ALLOC with `layout`.
    unsafe { core::alloc::GlobalAlloc::dealloc(&ALLOC, p.as_ptr(), layout) }
}

/// Gives back a block from [`alloc_block`].
///
/// # Safety
/// `p` came from `alloc_block(kind, layout)` and is no longer used.
pub(crate) unsafe fn free_block(kind: Kind, p: NonNull<u8>, layout: Layout) {
    with(|rt| match rt.and_then(|rt| rt.list_for(kind, layout)) {
        // SAFETY: a block of the list's layout from the same allocator.
        Some(list) => unsafe { list.free(p.as_ptr()) },
        // SAFETY: allocated from ALLOC with `layout` (a block taken from a list was too).
        None => unsafe { core::alloc::GlobalAlloc::dealloc(&ALLOC, p.as_ptr(), layout) },
    })
}

// The state of the calling thread's deallocation loop and of its printing and comparing:
// thread-locals with no destructor, usable at any time, also while the thread's runtime is
// being torn down (objects held by other thread-locals are dropped then).
thread_local! {
    /// The queue of the running deallocation loop; null when none runs.
    static DEALLOC_QUEUE: Cell<*mut Vec<NonNull<Header>>> = const { Cell::new(ptr::null_mut()) };
    /// The containers being printed (for `[...]`); null when no repr runs.
    static REPR_STACK: Cell<*mut Vec<usize>> = const { Cell::new(ptr::null_mut()) };
    /// Nesting of repr and comparison calls.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Deallocates an object whose count reached zero. Iterative: while one deallocation loop
/// runs on this thread, the objects it releases are queued and freed by the same loop, so deep
/// structures do not deepen the stack.
pub(crate) fn dealloc(p: NonNull<Header>) {
    let running = DEALLOC_QUEUE.with(Cell::get);
    if !running.is_null() {
        // SAFETY: the running loop's queue, on this thread; no reference to it is held while
        // a deallocation runs.
        unsafe { (*running).push(p) };
        return;
    }
    /// Unpublishes the queue however the loop ends: also if a deallocation unwinds (the
    /// queue is on this frame's stack), so that no later deallocation pushes onto it.
    struct Published;
    impl Drop for Published {
        fn drop(&mut self) {
            DEALLOC_QUEUE.with(|c| c.set(ptr::null_mut()));
        }
    }
    let mut queue: Vec<NonNull<Header>> = Vec::new();
    let q: *mut Vec<NonNull<Header>> = &mut queue;
    DEALLOC_QUEUE.with(|c| c.set(q));
    let _published = Published;
    let mut next = Some(p);
    while let Some(o) = next {
        // SAFETY: `o`'s count reached zero: nobody refers to it any more.
        unsafe { ((*o.as_ptr()).ty.dealloc)(o) };
        // SAFETY: the queue lives until the end of this function; only reached through `q`.
        next = unsafe { (*q).pop() };
    }
}

/// Frees what waits in the running deallocation loop's queue now, rather than when the loop
/// gets back to it (the collector, run from inside a deallocation, needs what it lets go of
/// to be gone before it counts references). Nothing to do when no loop runs.
pub(crate) fn drain_dealloc_queue() {
    let q = DEALLOC_QUEUE.with(Cell::get);
    if q.is_null() {
        return;
    }
    // SAFETY: the running loop's queue, on this thread, published by `dealloc` and alive
    // until that loop ends (which is after this returns: it is further up the stack); no
    // reference to it is held while a deallocation runs.
    while let Some(o) = unsafe { (*q).pop() } {
        // SAFETY: `o`'s count reached zero: nobody refers to it any more.
        unsafe { ((*o.as_ptr()).ty.dealloc)(o) };
    }
}

/// Runs code of the caller's (a finalizer, a weak-reference callback, a `gc.callbacks`
/// callback, or the drop of one) where the runtime cannot let it unwind: in the middle of a
/// deallocation or a collection. A panic is caught and reported on stderr, and the runtime
/// carries on, as CPython prints "Exception ignored in: ..." for an exception raised there.
/// (With `panic = "abort"` a panic aborts before it gets here.)
pub(crate) fn run_user_code(what: &dyn core::fmt::Display, f: impl FnOnce()) {
    if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        let msg = e
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| e.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(a panic payload that is not a string)");
        eprintln!("Exception ignored in: {what}\npanic: {msg}");
    }
}

/// Python's default recursion limit (`sys.getrecursionlimit()`): nested reprs and comparisons
/// deeper than this fail with a `RecursionError` instead of overflowing the stack.
pub const RECURSION_LIMIT: u32 = 1000;

/// Runs `f` one level deeper; CPython's `RecursionError` past [`RECURSION_LIMIT`].
pub(crate) fn deeper<R>(
    what: &'static str,
    f: impl FnOnce() -> Result<R, Error>,
) -> Result<R, Error> {
    let d = DEPTH.with(Cell::get);
    if d >= RECURSION_LIMIT {
        return Err(Error::Recursion(what));
    }
    DEPTH.with(|c| c.set(d + 1));
    let r = f();
    DEPTH.with(|c| c.set(d));
    r
}

/// Prints container `p` with `f`, unless it is already being printed (a container that holds
/// itself): then `Ok(false)` and the caller writes `[...]` or `{...}`. CPython:
/// `Py_ReprEnter`, `Py_ReprLeave`.
pub(crate) fn repr_guard(
    p: NonNull<Header>,
    f: impl FnOnce() -> Result<(), Error>,
) -> Result<bool, Error> {
    let addr = p.as_ptr().addr();
    let mut own: Vec<usize> = Vec::new();
    let mut stack = REPR_STACK.with(Cell::get);
    let outermost = stack.is_null();
    if outermost {
        stack = &mut own;
        REPR_STACK.with(|c| c.set(stack));
    }
    // SAFETY: the stack of the outermost repr on this thread, alive until it returns; no
    // reference to it is held across `f`.
    let seen = unsafe { (*stack).contains(&addr) };
    let r = if seen {
        Ok(false)
    } else {
        // SAFETY: as above.
        unsafe { (*stack).push(addr) };
        let r = deeper(REPR_DEPTH, f);
        // SAFETY: as above.
        unsafe { (*stack).pop() };
        r.map(|()| true)
    };
    if outermost {
        REPR_STACK.with(|c| c.set(ptr::null_mut()));
    }
    r
}

/// CPython's message for a repr nested too deep.
pub(crate) const REPR_DEPTH: &str =
    "maximum recursion depth exceeded while getting the repr of an object";
/// CPython's message for a comparison nested too deep.
pub(crate) const CMP_DEPTH: &str = "maximum recursion depth exceeded in comparison";

/// The cached small int `v` (-5 ..= 256), created on first use; `None` outside the range.
pub(crate) fn small_int(v: i64, make: impl FnOnce() -> NonNull<Header>) -> Option<NonNull<Header>> {
    if !(-NSMALLNEGINTS..NSMALLPOSINTS).contains(&v) {
        return None;
    }
    let i = (v + NSMALLNEGINTS) as usize;
    with(|rt| {
        let rt = rt?;
        let cell = &rt.small_ints[i];
        Some(match cell.get() {
            Some(p) => p,
            None => {
                // The cache holds one reference for good.
                let p = make();
                cell.set(Some(p));
                p
            }
        })
    })
}

/// Counters of the calling thread's free lists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FreeLists {
    /// One-digit ints.
    pub int: FreeListStats,
    /// Strings of up to 7 bytes.
    pub str: FreeListStats,
    /// List objects (their item arrays are not cached, as in CPython).
    pub list: FreeListStats,
    /// Dict objects.
    pub dict: FreeListStats,
    /// Dict keys objects of the smallest size (8 slots).
    pub dict_keys: FreeListStats,
    /// Instances of user classes.
    pub instance: FreeListStats,
}

/// The calling thread's free-list counters.
pub fn free_list_stats() -> FreeLists {
    with(|rt| match rt {
        Some(rt) => FreeLists {
            int: rt.ints.stats(),
            str: rt.strs.stats(),
            list: rt.lists.stats(),
            dict: rt.dicts.stats(),
            dict_keys: rt.keys.stats(),
            instance: rt.instances.stats(),
        },
        None => FreeLists::default(),
    })
}

/// Empties the calling thread's free lists down to the allocator, as CPython does at a full
/// collection (`clear_freelists`); returns how many blocks went back.
pub fn clear_free_lists() -> usize {
    with(|rt| match rt {
        Some(rt) => {
            rt.ints.clear()
                + rt.strs.clear()
                + rt.lists.clear()
                + rt.dicts.clear()
                + rt.keys.clear()
                + rt.instances.clear()
        }
        None => 0,
    })
}

/// Turns the calling thread's free lists on or off (off: every object block comes from and
/// goes to the allocator; the blocks already cached are given back). For measurements.
pub fn set_free_lists(on: bool) {
    if !on {
        clear_free_lists();
    }
    with(|rt| {
        if let Some(rt) = rt {
            rt.lists_on.set(on);
        }
    });
}
