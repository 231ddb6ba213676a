//! The cycle collector: CPython 3.11's generational design over the tracked containers of the
//! calling thread's runtime.
//!
//! # Tracking
//! A container (list, dict, instance) carries a `GcHead` of two links in the 16 bytes just
//! before its header (CPython's `PyGC_Head`). A tracked object is on the circular list of one of
//! three generations; `next` is null while it is untracked. Lists and instances are tracked when
//! created; a dict, as in CPython, only once a container is stored in it (`MAINTAIN_TRACKING`),
//! so a dict of ints and strs is never a candidate.
//!
//! # Counting and triggering
//! Generation 0's count is the allocations minus the deallocations of container objects
//! (tracked or not, as CPython counts in `_PyObject_GC_Link` / `PyObject_GC_Del`). When a new
//! container is allocated and that count exceeds threshold 0 (700), the collector is enabled
//! and no collection runs, the oldest generation whose count exceeds its threshold (700, 10,
//! 10) is collected; generation 2 only if `long_lived_pending > long_lived_total / 4` (the 25 %
//! rule). Collecting generation `g` zeroes the counts of 0..=g and adds one to `g + 1`'s.
//!
//! # A collection (`gc_collect_main`)
//! 1. The lists of generations 0..=g are spliced onto g's (each in O(1)). Until step 4 the
//!    list is walked through `next` only, and `prev` holds each candidate's state instead of
//!    a link: its `gc_refs` and two flags, "collecting" and "reachable" (CPython keeps them in
//!    `_gc_prev` the same way). A link is an aligned address, so no tracked object outside
//!    the collection looks like a candidate. No memory is allocated per candidate.
//! 2. `gc_refs` = reference count; every reference from one candidate to another (found by the
//!    type's `traverse`) is subtracted. What is left counts references from outside: roots.
//! 3. Everything reachable from a root is marked, with a work list (no recursion: a million-
//!    object chain does not grow the stack).
//! 4. The list is relinked in one walk; survivors move to generation `g + 1` (a splice, or
//!    they stay in 2). The rest is garbage, which the
//!    collector holds (one reference each) off every list. Weak references to it are cleared
//!    and their callbacks run (`handle_weakrefs`).
//! 5. Finalizers run, once per object (`finalize_garbage`). If one ran, the references from
//!    outside the garbage are counted again: what a finalizer resurrected, and everything it
//!    reaches, survives in generation `g + 1` (`handle_resurrected_objects`). The rest is the
//!    count `collect` returns.
//! 6. With `DEBUG_SAVEALL` it goes to `garbage()`; otherwise each object is cleared (it drops
//!    the references it holds: the type's `clear`), then the collector drops its own
//!    references, so objects are freed by their counts reaching zero, never from under a live
//!    reference.
//! 7. A collection of generation 2 clears the free lists, as CPython's does.
//!
//! The [`callbacks`] run before and after, with the collector held: a `collect` from inside
//! a callback, a finalizer or a weak-reference callback returns 0.

use core::cell::Cell;
use core::ptr::{self, NonNull};
use std::rc::Rc;

use crate::object::{Header, Obj};
use crate::runtime;

/// The collector's two links before a container's header. CPython: `PyGC_Head`.
#[repr(C)]
pub(crate) struct GcHead {
    next: Cell<*mut GcHead>, // null: untracked
    prev: Cell<*mut GcHead>, // during a collection: the candidate's index
}

/// `next` of a candidate during a collection.
const COLLECTING: *mut GcHead = ptr::without_provenance_mut(1);

/// Generations. CPython: `NUM_GENERATIONS`.
pub const NUM_GENERATIONS: usize = 3;

/// `DEBUG_SAVEALL`: garbage goes to [`garbage`] instead of being freed. CPython's value.
pub const DEBUG_SAVEALL: u32 = 32;

/// Where a container's links are.
pub(crate) fn head_of(p: NonNull<Header>) -> &'static GcHead {
    // SAFETY: callers pass containers, which have the 16-byte head just before the header,
    // alive as long as the object.
    unsafe {
        &*p.as_ptr()
            .cast::<u8>()
            .sub(size_of::<GcHead>())
            .cast::<GcHead>()
    }
}

fn object_of(h: *mut GcHead) -> NonNull<Header> {
    // SAFETY: a head on a generation list belongs to a live container, whose header follows.
    unsafe { NonNull::new_unchecked(h.cast::<u8>().add(size_of::<GcHead>()).cast::<Header>()) }
}

struct Generation {
    list: Cell<*mut GcHead>, // sentinel of the circular list; null until first used
    count: Cell<isize>,
    threshold: Cell<isize>,
}

impl Generation {
    const fn new(threshold: isize) -> Self {
        Self {
            list: Cell::new(ptr::null_mut()),
            count: Cell::new(0),
            threshold: Cell::new(threshold),
        }
    }

    fn sentinel(&self) -> *mut GcHead {
        let s = self.list.get();
        if !s.is_null() {
            return s;
        }
        let s = Box::into_raw(Box::new(GcHead {
            next: Cell::new(ptr::null_mut()),
            prev: Cell::new(ptr::null_mut()),
        }));
        // SAFETY: just allocated.
        unsafe {
            (*s).next.set(s);
            (*s).prev.set(s);
        }
        self.list.set(s);
        s
    }

    /// Appends `h` (untracked, or unlinked) at the end.
    fn push(&self, h: &GcHead) {
        let s = self.sentinel();
        let hp = ptr::from_ref(h).cast_mut();
        // SAFETY: the sentinel and its last element are live heads.
        unsafe {
            let last = (*s).prev.get();
            h.prev.set(last);
            h.next.set(s);
            (*last).next.set(hp);
            (*s).prev.set(hp);
        }
    }

    /// The objects on the list, in order.
    fn members(&self) -> Vec<NonNull<Header>> {
        let s = self.list.get();
        let mut v = Vec::new();
        if s.is_null() {
            return v;
        }
        // SAFETY: a well-formed circular list of live heads.
        let mut h = unsafe { (*s).next.get() };
        while h != s {
            v.push(object_of(h));
            // SAFETY: as above.
            h = unsafe { (*h).next.get() };
        }
        v
    }

    fn len(&self) -> usize {
        self.members().len()
    }
}

/// The collector's state in a runtime.
pub(crate) struct GcState {
    generations: [Generation; NUM_GENERATIONS],
    permanent: Generation, // CPython: `permanent_generation`, filled by `freeze`
    enabled: Cell<bool>,
    collecting: Cell<bool>,
    debug: Cell<u32>,
    long_lived_total: Cell<usize>,
    long_lived_pending: Cell<usize>,
    garbage: core::cell::RefCell<Vec<Obj>>,
    collections: [Cell<u64>; NUM_GENERATIONS],
    collected: [Cell<u64>; NUM_GENERATIONS],
    callbacks: core::cell::RefCell<Vec<(u64, Rc<CallbackFn>)>>,
    next_callback: Cell<u64>,
}

type CallbackFn = dyn Fn(Phase, &Info);

impl GcState {
    pub(crate) const fn new() -> Self {
        Self {
            // CPython 3.11: 700, 10, 10.
            generations: [
                Generation::new(700),
                Generation::new(10),
                Generation::new(10),
            ],
            permanent: Generation::new(0),
            enabled: Cell::new(true),
            collecting: Cell::new(false),
            debug: Cell::new(0),
            long_lived_total: Cell::new(0),
            long_lived_pending: Cell::new(0),
            garbage: core::cell::RefCell::new(Vec::new()),
            collections: [const { Cell::new(0) }; NUM_GENERATIONS],
            collected: [const { Cell::new(0) }; NUM_GENERATIONS],
            callbacks: core::cell::RefCell::new(Vec::new()),
            next_callback: Cell::new(0),
        }
    }

    /// The runtime is going away: `gc.garbage` is dropped, every object still tracked becomes
    /// untracked (objects other thread-locals hold are freed later, without the lists), and
    /// the sentinels are freed.
    pub(crate) fn release(&self) {
        drop(core::mem::take(&mut *self.garbage.borrow_mut()));
        let callbacks = core::mem::take(&mut *self.callbacks.borrow_mut());
        runtime::run_user_code(&"the drop of the gc callbacks", || drop(callbacks));
        for g in self.generations.iter().chain([&self.permanent]) {
            for p in g.members() {
                let h = head_of(p);
                h.next.set(ptr::null_mut());
                h.prev.set(ptr::null_mut());
            }
            let s = g.list.replace(ptr::null_mut());
            if !s.is_null() {
                // SAFETY: allocated by `sentinel` with `Box`.
                drop(unsafe { Box::from_raw(s) });
            }
        }
    }
}

fn with_gc<R>(f: impl FnOnce(&GcState) -> R) -> Option<R> {
    runtime::with(|rt| rt.map(|rt| f(&rt.gc)))
}

/// A container was allocated: counts it and, past threshold 0, collects (before the caller
/// tracks the new object, which is therefore never a candidate).
pub(crate) fn on_alloc() {
    let due = with_gc(|gc| {
        let g0 = &gc.generations[0];
        g0.count.set(g0.count.get() + 1);
        gc.enabled.get()
            && !gc.collecting.get()
            && g0.threshold.get() != 0
            && g0.count.get() > g0.threshold.get()
    });
    if due == Some(true) {
        collect_generations();
    }
}

/// A container is being freed: uncounts it and untracks it.
pub(crate) fn on_dealloc(p: NonNull<Header>) {
    untrack(p);
    with_gc(|gc| {
        let g0 = &gc.generations[0];
        if g0.count.get() > 0 {
            g0.count.set(g0.count.get() - 1);
        }
    });
}

/// Starts tracking container `p` (in generation 0) if it is not tracked.
pub(crate) fn track(p: NonNull<Header>) {
    let h = head_of(p);
    if !h.next.get().is_null() {
        return;
    }
    if with_gc(|gc| gc.generations[0].push(h)).is_none() {
        // No runtime (the thread is exiting): the object stays untracked.
    }
}

/// Stops tracking container `p` if it is tracked.
pub(crate) fn untrack(p: NonNull<Header>) {
    let h = head_of(p);
    let next = h.next.get();
    if next.is_null() {
        return;
    }
    debug_assert_ne!(
        next, COLLECTING,
        "untracking a candidate during a collection"
    );
    let prev = h.prev.get();
    // SAFETY: a tracked head sits on a circular list of live heads.
    unsafe {
        (*prev).next.set(next);
        (*next).prev.set(prev);
    }
    h.next.set(ptr::null_mut());
    h.prev.set(ptr::null_mut());
}

/// `gc.is_tracked(obj)`.
pub fn is_tracked(obj: &Obj) -> bool {
    obj.type_of().gc && !head_of(obj.ptr()).next.get().is_null()
}

/// The references `obj` holds, through its type's `traverse`.
fn referents_of(p: NonNull<Header>, out: &mut dyn FnMut(NonNull<Header>)) {
    // SAFETY: a live object.
    let t = unsafe { p.as_ref() }.ty;
    if let Some(tr) = t.traverse {
        // SAFETY: the object is live and of the type whose function this is.
        unsafe { tr(p, out) };
    }
}

// During a collection a candidate's `prev` holds its state instead of a link: its gc_refs
// shifted left by two, and two flags. A link is an aligned address, whose low bits are clear,
// so a tracked object that is no candidate never shows `FLAG_COLLECTING`.
// CPython: `_gc_prev` with `PREV_MASK_COLLECTING` and `_PyGC_PREV_SHIFT`.
const FLAG_COLLECTING: usize = 1;
const FLAG_REACHABLE: usize = 2;
const FLAGS: usize = FLAG_COLLECTING | FLAG_REACHABLE;
const REFS_SHIFT: u32 = 2;

fn state(h: &GcHead) -> usize {
    h.prev.get().addr()
}

fn refs(h: &GcHead) -> usize {
    state(h) >> REFS_SHIFT
}

fn set_state(h: &GcHead, refs: usize, flags: usize) {
    h.prev
        .set(ptr::without_provenance_mut((refs << REFS_SHIFT) | flags));
}

/// The head of `p` if it is a candidate of the running collection.
fn candidate(p: NonNull<Header>) -> Option<&'static GcHead> {
    // SAFETY: a live object.
    if !unsafe { p.as_ref() }.ty.gc {
        return None;
    }
    let h = head_of(p);
    (!h.next.get().is_null() && state(h) & FLAG_COLLECTING != 0).then_some(h)
}

/// Marks candidate `h` reachable, and every candidate reachable from it, with the work list
/// `work` (empty on entry and on return): no recursion. Returns how many it marked (0 if `h`
/// was marked already).
fn mark_reachable(h: &'static GcHead, work: &mut Vec<&'static GcHead>) -> usize {
    if state(h) & FLAG_REACHABLE != 0 {
        return 0;
    }
    set_state(h, refs(h), state(h) | FLAG_REACHABLE);
    let mut marked = 1;
    work.push(h);
    while let Some(x) = work.pop() {
        referents_of(object_of(ptr::from_ref(x).cast_mut()), &mut |r| {
            if let Some(rh) = candidate(r)
                && state(rh) & FLAG_REACHABLE == 0
            {
                set_state(rh, refs(rh), state(rh) | FLAG_REACHABLE);
                marked += 1;
                work.push(rh);
            }
        });
    }
    marked
}

/// Appends every head on `from`'s list to `to`'s, leaving `from` empty. CPython:
/// `gc_list_merge`.
fn splice(from: *mut GcHead, to: *mut GcHead) {
    // SAFETY: both are live sentinels of well-formed circular lists.
    unsafe {
        let first = (*from).next.get();
        if first == from {
            return;
        }
        let last = (*from).prev.get();
        let tail = (*to).prev.get();
        (*tail).next.set(first);
        (*first).prev.set(tail);
        (*last).next.set(to);
        (*to).prev.set(last);
        (*from).next.set(from);
        (*from).prev.set(from);
    }
}

/// CPython's `collect_generations`: the oldest generation over its threshold.
fn collect_generations() {
    let g = with_gc(|gc| {
        (0..NUM_GENERATIONS).rev().find(|&i| {
            let gen_ = &gc.generations[i];
            if gen_.count.get() <= gen_.threshold.get() {
                return false;
            }
            // The 25 % rule for the oldest generation.
            i != NUM_GENERATIONS - 1 || gc.long_lived_pending.get() >= gc.long_lived_total.get() / 4
        })
    })
    .flatten();
    if let Some(g) = g {
        collect(g);
    }
}

/// `gc.collect(generation)`: collects generations 0..=`generation` (2 for a full collection)
/// and returns the number of unreachable objects found (and not resurrected by a finalizer).
/// 0 if a collection is running already (a finalizer, callback or allocation inside one
/// asked) or the thread's runtime is gone. The [`callbacks`] are called before and after.
pub fn collect(generation: usize) -> usize {
    let generation = generation.min(NUM_GENERATIONS - 1);
    let Some(started) = with_gc(|gc| !gc.collecting.replace(true)) else {
        return 0;
    };
    if !started {
        return 0;
    }
    /// Lets go of the collector however the collection ends (also if it unwinds).
    struct Running;
    impl Drop for Running {
        fn drop(&mut self) {
            with_gc(|gc| gc.collecting.set(false));
        }
    }
    let running = Running;
    let mut info = Info {
        generation,
        collected: 0,
        uncollectable: 0,
    };
    callbacks::invoke(Phase::Start, &info);
    let n = collect_main(generation);
    with_gc(|gc| {
        gc.collections[generation].set(gc.collections[generation].get() + 1);
        gc.collected[generation].set(gc.collected[generation].get() + n as u64);
    });
    if generation == NUM_GENERATIONS - 1 {
        runtime::clear_free_lists();
    }
    info.collected = n;
    callbacks::invoke(Phase::Stop, &info);
    drop(running);
    n
}

/// When a [`callbacks`] callback is called. CPython passes the strings `"start"` and `"stop"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Before the collection.
    Start,
    /// After it.
    Stop,
}

impl Phase {
    /// `"start"` or `"stop"`, as CPython passes them.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Start => "start",
            Phase::Stop => "stop",
        }
    }
}

/// What a [`callbacks`] callback is told. CPython: the `info` dict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    /// The oldest generation collected.
    pub generation: usize,
    /// Objects found unreachable; 0 at [`Phase::Start`].
    pub collected: usize,
    /// Unreachable objects that could not be freed. Always 0 here: CPython counts objects with
    /// a legacy `tp_del`, which this crate has no equivalent of.
    pub uncollectable: usize,
}

/// `gc.callbacks`: functions called before and after every collection of this thread's
/// runtime, automatic or not, with the phase and an [`Info`]. They run while the collection
/// holds the collector, so a `collect()` inside one returns 0.
pub mod callbacks {
    use super::{CallbackFn, Info, Phase, Rc, with_gc};

    /// Names a callback, to remove it.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Id(u64);

    /// `gc.callbacks.append(f)`. `None` if the thread's runtime is gone.
    pub fn append(f: impl Fn(Phase, &Info) + 'static) -> Option<Id> {
        let f: Rc<CallbackFn> = Rc::new(f);
        with_gc(|gc| {
            let id = gc.next_callback.get();
            gc.next_callback.set(id + 1);
            gc.callbacks.borrow_mut().push((id, f));
            Id(id)
        })
    }

    /// `gc.callbacks.remove(f)`: whether it was there.
    pub fn remove(id: Id) -> bool {
        let removed = with_gc(|gc| {
            let mut v = gc.callbacks.borrow_mut();
            let i = v.iter().position(|(k, _)| *k == id.0)?;
            Some(v.remove(i))
        })
        .flatten();
        // Dropped outside the borrow: the callback may hold objects whose release runs code.
        removed.is_some()
    }

    /// `gc.callbacks.clear()`.
    pub fn clear() {
        let v = with_gc(|gc| core::mem::take(&mut *gc.callbacks.borrow_mut()));
        drop(v);
    }

    /// `len(gc.callbacks)`.
    pub fn count() -> usize {
        with_gc(|gc| gc.callbacks.borrow().len()).unwrap_or(0)
    }

    /// Calls every callback, in order, from a snapshot of the list (a callback may add or
    /// remove callbacks; that takes effect at the next collection).
    pub(super) fn invoke(phase: Phase, info: &Info) {
        let fs: Vec<Rc<CallbackFn>> = with_gc(|gc| {
            gc.callbacks
                .borrow()
                .iter()
                .map(|(_, f)| f.clone())
                .collect()
        })
        .unwrap_or_default();
        for f in fs {
            // `f` is moved in: if the callback removed itself, its captures drop in there.
            crate::runtime::run_user_code(
                &format_args!("the gc callback for \"{}\"", phase.as_str()),
                move || {
                    f(phase, info);
                    drop(f);
                },
            );
        }
    }
}

fn collect_main(generation: usize) -> usize {
    // 1. The candidates: generations 0..=g, spliced onto g's list (CPython's
    //    `gc_list_merge`). From here to step 4 the list is walked through `next` only; `prev`
    //    holds each candidate's state. An object whose count is already zero is waiting in
    //    the deallocation queue (a collection started from a weak-reference callback or an
    //    allocation during a deallocation): it is no candidate, its references count as
    //    outside ones, and it stays on the list.
    let Some(young) = with_gc(|gc| {
        let young = gc.generations[generation].sentinel();
        for g in &gc.generations[..generation] {
            splice(g.sentinel(), young);
        }
        for (i, g) in gc.generations.iter().enumerate() {
            if i <= generation {
                g.count.set(0);
            } else if i == generation + 1 {
                g.count.set(g.count.get() + 1);
            }
        }
        young
    }) else {
        return 0;
    };
    // SAFETY (for the walks below): `young` is a live sentinel and the list a well-formed
    // circle of live heads through `next`; no code outside this function runs before step 4
    // relinks it (traverse functions only read).
    let walk = |f: &mut dyn FnMut(&'static GcHead)| {
        // SAFETY: as above.
        let mut h = unsafe { (*young).next.get() };
        while h != young {
            // SAFETY: as above.
            let head = unsafe { &*h };
            h = head.next.get();
            f(head);
        }
    };
    // 2. gc_refs = reference count, minus every reference from a candidate to a candidate:
    //    what is left counts references from outside.
    let mut ncands = 0usize;
    walk(&mut |h| {
        // SAFETY: tracked objects are live (freed ones were untracked).
        let rc = unsafe { object_of(ptr::from_ref(h).cast_mut()).as_ref() }
            .refcnt
            .get();
        if rc != 0 {
            set_state(h, rc, FLAG_COLLECTING);
            ncands += 1;
        }
    });
    walk(&mut |h| {
        if state(h) & FLAG_COLLECTING != 0 {
            referents_of(object_of(ptr::from_ref(h).cast_mut()), &mut |r| {
                if let Some(rh) = candidate(r) {
                    set_state(rh, refs(rh).saturating_sub(1), state(rh) & FLAGS);
                }
            });
        }
    });
    // 3. Reachable from the roots (a count left above zero), with a work list: no recursion.
    let mut work: Vec<&'static GcHead> = Vec::new();
    let mut nreachable = 0usize;
    walk(&mut |h| {
        if state(h) & FLAG_COLLECTING != 0 && refs(h) > 0 {
            nreachable += mark_reachable(h, &mut work);
        }
    });
    // 4. The list is relinked: survivors (and queued objects) stay, in order, and move to
    //    generation g + 1 (or stay in 2). The garbage leaves every list (untracked:
    //    `get_objects` and `get_referrers` in a weak-reference callback cannot hand it out)
    //    while the collector holds it, clears its weak references and then clears it.
    let dest = (generation + 1).min(NUM_GENERATIONS - 1);
    let mut garbage: Vec<Obj> = Vec::with_capacity(ncands - nreachable);
    let mut survivors = 0usize;
    let mut kept = 0usize;
    let mut last = young;
    walk(&mut |h| {
        let st = state(h);
        let hp = ptr::from_ref(h).cast_mut();
        if st & FLAG_COLLECTING != 0 && st & FLAG_REACHABLE == 0 {
            h.next.set(ptr::null_mut());
            h.prev.set(ptr::null_mut());
            // SAFETY: a live candidate; the collector's own reference.
            garbage.push(unsafe { Obj::from_borrowed(object_of(hp)) });
        } else {
            survivors += usize::from(st & FLAG_COLLECTING != 0);
            kept += 1;
            h.prev.set(last);
            // SAFETY: `last` is the sentinel or a head kept just before.
            unsafe { (*last).next.set(hp) };
            last = hp;
        }
    });
    // SAFETY: as above.
    unsafe {
        (*last).next.set(young);
        (*young).prev.set(last);
    }
    let save_all = with_gc(|gc| {
        if dest != generation {
            splice(young, gc.generations[dest].sentinel());
        }
        if generation == NUM_GENERATIONS - 1 {
            gc.long_lived_pending.set(0);
            gc.long_lived_total.set(kept);
        } else if dest == NUM_GENERATIONS - 1 {
            gc.long_lived_pending
                .set(gc.long_lived_pending.get() + survivors);
        }
        gc.debug.get() & DEBUG_SAVEALL != 0
    })
    .unwrap_or(false);
    let (freed_refs, deferred) = handle_weakrefs(&garbage);
    // 5. Finalizers, once each. CPython holds a reference to a garbage object only while its
    //    finalizer runs, so what a finalizer leaves with no other reference is freed by its
    //    count there and then, and is not counted; here the collector holds them all, so it
    //    lets go of those only it holds, then of those that this left alone, and so on. What
    //    a finalizer resurrected (and what that reaches) survives.
    if finalize_garbage(&garbage) {
        release_orphans(&mut garbage);
        let alive = resurrected(&garbage);
        let mut i = 0;
        garbage.retain(|o| {
            let keep = !alive[i];
            i += 1;
            if !keep {
                with_gc(|gc| retrack(gc, dest, o.ptr()));
            }
            keep
        });
    }
    // CPython 3.11 also counts the weak references its callbacks freed (`handle_weakrefs`).
    let n = garbage.len() + freed_refs;
    if save_all {
        // Saved: tracked again, in the oldest generation reached, and kept by `garbage()`.
        with_gc(|gc| {
            for o in &garbage {
                retrack(gc, dest, o.ptr());
            }
            gc.garbage.borrow_mut().extend(garbage.drain(..));
        });
        return n;
    }
    for o in &garbage {
        if let Some(clear) = o.type_of().clear {
            // SAFETY: a live object (the collector holds it), of the type whose function
            // this is.
            unsafe { clear(o.ptr()) };
        }
    }
    // The collector lets go, one object at a time: what something still refers to (a callback
    // kept it, or code run by an earlier object's release resurrected it) is tracked again;
    // the rest is freed. CPython: `delete_garbage`.
    for o in garbage {
        if o.header().refcnt.get() > 1 {
            with_gc(|gc| retrack(gc, dest, o.ptr()));
        }
        drop(o);
    }
    drop(deferred);
    n
}

/// After the finalizers: lets go of every garbage object that only the collector still holds
/// (a finalizer dropped the other references), which frees it by its count, and so on for
/// what that leaves alone, with a work list of the freed objects' referents (a chain
/// orphaned by a finalizer is freed in one pass, not one link per pass). Inside a running
/// deallocation loop, what a release queues is freed at once too, so that its references do
/// not look like outside ones. CPython frees such objects as the finalizers run; here they go
/// after all the finalizers have run.
fn release_orphans(garbage: &mut Vec<Obj>) {
    use std::collections::HashMap;
    let only_ours = |o: &Obj| o.header().refcnt.get() == 1;
    let index: HashMap<usize, usize> = garbage
        .iter()
        .enumerate()
        .map(|(i, o)| (o.ptr().as_ptr().addr(), i))
        .collect();
    let mut held: Vec<Option<Obj>> = garbage.drain(..).map(Some).collect();
    let mut work: Vec<usize> = Vec::new();
    loop {
        // Orphans reached only through objects outside the garbage (freed along with it)
        // are found by this scan; the work list finds the rest.
        work.extend((0..held.len()).filter(|&i| held[i].as_ref().is_some_and(only_ours)));
        if work.is_empty() {
            break;
        }
        while let Some(i) = work.pop() {
            let Some(o) = held[i].take_if(|o| only_ours(o)) else {
                continue;
            };
            let mut next: Vec<usize> = Vec::new();
            referents_of(o.ptr(), &mut |r| {
                if let Some(&j) = index.get(&r.as_ptr().addr()) {
                    next.push(j);
                }
            });
            drop(o);
            runtime::drain_dealloc_queue();
            work.extend(
                next.into_iter()
                    .filter(|&j| held[j].as_ref().is_some_and(only_ours)),
            );
        }
    }
    garbage.extend(held.into_iter().flatten());
}

/// Puts `p` back on generation `dest` unless something (a callback, a finalizer) tracked it
/// again already.
fn retrack(gc: &GcState, dest: usize, p: NonNull<Header>) {
    let h = head_of(p);
    if h.next.get().is_null() {
        gc.generations[dest].push(h);
    }
}

/// CPython's `finalize_garbage`: runs the finalizer of each garbage object that has one and
/// has not run it yet. Whether any ran.
fn finalize_garbage(garbage: &[Obj]) -> bool {
    let mut ran = false;
    for o in garbage {
        if let Some(fin) = o.type_of().finalize {
            // SAFETY: a live object (the collector holds a reference), of the type whose
            // function this is.
            ran |= unsafe { fin(o.ptr()) };
        }
    }
    ran
}

/// CPython's `handle_resurrected_objects`: after the finalizers, which garbage objects are
/// referred to from outside the garbage (beyond the collector's own reference), or reachable
/// from one that is. Those are alive again.
fn resurrected(garbage: &[Obj]) -> Vec<bool> {
    // Marked as candidates again (a finalizer may have tracked one: untracked first), with
    // the collector's own reference left out of the count.
    for o in garbage {
        untrack(o.ptr());
        let h = head_of(o.ptr());
        h.next.set(COLLECTING);
        set_state(h, o.header().refcnt.get() - 1, FLAG_COLLECTING);
    }
    for o in garbage {
        referents_of(o.ptr(), &mut |r| {
            if let Some(rh) = candidate(r) {
                set_state(rh, refs(rh).saturating_sub(1), state(rh) & FLAGS);
            }
        });
    }
    let mut work: Vec<&'static GcHead> = Vec::new();
    for o in garbage {
        let h = head_of(o.ptr());
        if refs(h) > 0 {
            mark_reachable(h, &mut work);
        }
    }
    garbage
        .iter()
        .map(|o| {
            let h = head_of(o.ptr());
            let alive = state(h) & FLAG_REACHABLE != 0;
            h.next.set(ptr::null_mut());
            h.prev.set(ptr::null_mut());
            alive
        })
        .collect()
}

/// CPython's `handle_weakrefs`. First, a weak reference held only by garbage is garbage too:
/// it is cleared without its callback (it must not fire when its referent dies later, during
/// the clearing). Then every weak reference to garbage is cleared before anything is cleared,
/// and the callbacks run, newest first per referent, for the references that are not
/// themselves garbage. Returns how many of those references their callbacks freed, and the
/// callbacks of the garbage references, to be dropped when the collection ends.
fn handle_weakrefs(garbage: &[Obj]) -> (usize, Vec<crate::weakref::DeferredCallback>) {
    use std::collections::HashMap;
    if !crate::weakref::any_alive() {
        return (0, Vec::new());
    }
    // References from garbage to weak-reference objects.
    let mut from_garbage: HashMap<usize, usize> = HashMap::new();
    for o in garbage {
        referents_of(o.ptr(), &mut |r| {
            // SAFETY: a referent of a live object is live.
            if core::ptr::eq(unsafe { r.as_ref() }.ty, &crate::WEAKREF_TYPE) {
                *from_garbage.entry(r.as_ptr().addr()).or_insert(0) += 1;
            }
        });
    }
    // Their callbacks are dropped by the caller, at the end of the collection: the drop runs
    // code of the caller's, which must not run inside a traverse or before the references to
    // the garbage are cleared.
    let mut deferred = Vec::new();
    for o in garbage {
        referents_of(o.ptr(), &mut |r| {
            // SAFETY: as above.
            let count = unsafe { r.as_ref() }.refcnt.get();
            if from_garbage.get(&r.as_ptr().addr()) == Some(&count) {
                deferred.extend(crate::weakref::clear_garbage_ref(r));
            }
        });
    }
    let mut refs: Vec<crate::WeakRef> = Vec::new();
    for o in garbage {
        refs.extend(crate::weakref::clear_refs(o.ptr()));
    }
    (crate::weakref::run_callbacks(refs), deferred)
}

/// `gc.enable()`.
pub fn enable() {
    with_gc(|gc| gc.enabled.set(true));
}

/// `gc.disable()`.
pub fn disable() {
    with_gc(|gc| gc.enabled.set(false));
}

/// `gc.isenabled()`.
pub fn isenabled() -> bool {
    with_gc(|gc| gc.enabled.get()).unwrap_or(false)
}

/// `gc.get_count()`: the three generations' counts.
pub fn get_count() -> (isize, isize, isize) {
    with_gc(|gc| {
        let c = |i: usize| gc.generations[i].count.get();
        (c(0), c(1), c(2))
    })
    .unwrap_or((0, 0, 0))
}

/// `gc.get_threshold()`.
pub fn get_threshold() -> (isize, isize, isize) {
    with_gc(|gc| {
        let t = |i: usize| gc.generations[i].threshold.get();
        (t(0), t(1), t(2))
    })
    .unwrap_or((0, 0, 0))
}

/// `gc.set_threshold(t0, t1, t2)`; `t0 == 0` turns automatic collection off.
pub fn set_threshold(t0: isize, t1: isize, t2: isize) {
    with_gc(|gc| {
        for (g, t) in gc.generations.iter().zip([t0, t1, t2]) {
            g.threshold.set(t);
        }
    });
}

/// `gc.set_debug(flags)`; only [`DEBUG_SAVEALL`] has an effect here.
pub fn set_debug(flags: u32) {
    with_gc(|gc| gc.debug.set(flags));
}

/// `gc.get_debug()`.
pub fn get_debug() -> u32 {
    with_gc(|gc| gc.debug.get()).unwrap_or(0)
}

/// `gc.garbage`: what collections found unreachable under [`DEBUG_SAVEALL`] (new references).
pub fn garbage() -> Vec<Obj> {
    with_gc(|gc| gc.garbage.borrow().clone()).unwrap_or_default()
}

/// Empties `gc.garbage` (`del gc.garbage[:]`).
pub fn clear_garbage() {
    let g = with_gc(|gc| core::mem::take(&mut *gc.garbage.borrow_mut()));
    drop(g);
}

/// `gc.get_objects(generation)`: the tracked objects of one generation, or of all (`None`).
pub fn get_objects(generation: Option<usize>) -> Vec<Obj> {
    with_gc(|gc| {
        let gens: Vec<&Generation> = match generation {
            Some(g) => gc.generations.get(g).into_iter().collect(),
            None => gc.generations.iter().collect(),
        };
        gens.iter()
            .flat_map(|g| g.members())
            // Not those waiting in the deallocation queue (count zero): a handle would revive
            // them.
            // SAFETY: tracked objects are live.
            .filter(|p| unsafe { p.as_ref() }.refcnt.get() != 0)
            // SAFETY: as above.
            .map(|p| unsafe { Obj::from_borrowed(p) })
            .collect()
    })
    .unwrap_or_default()
}

/// `gc.get_referents(obj)`: the objects `obj` refers to (through its type's traverse).
pub fn get_referents(obj: &Obj) -> Vec<Obj> {
    let mut v = Vec::new();
    // SAFETY: the referents of a live object are live (a referent's count includes this
    // object's reference, so it is not zero).
    referents_of(obj.ptr(), &mut |r| v.push(unsafe { Obj::from_borrowed(r) }));
    v
}

/// `gc.get_referrers(obj)`: the tracked objects that refer to `obj`.
pub fn get_referrers(obj: &Obj) -> Vec<Obj> {
    get_objects(None)
        .into_iter()
        .filter(|o| {
            let mut hit = false;
            referents_of(o.ptr(), &mut |r| hit |= r == obj.ptr());
            hit
        })
        .collect()
}

/// `gc.freeze()`: moves every tracked object to the permanent generation, which collections
/// ignore.
pub fn freeze() {
    with_gc(|gc| {
        for g in &gc.generations {
            for p in g.members() {
                let h = head_of(p);
                untrack(p);
                gc.permanent.push(h);
            }
            g.count.set(0);
        }
    });
}

/// `gc.unfreeze()`: back to the oldest generation.
pub fn unfreeze() {
    with_gc(|gc| {
        for p in gc.permanent.members() {
            untrack(p);
            gc.generations[NUM_GENERATIONS - 1].push(head_of(p));
        }
    });
}

/// `gc.get_freeze_count()`.
pub fn get_freeze_count() -> usize {
    with_gc(|gc| gc.permanent.len()).unwrap_or(0)
}

/// Collections run and objects found unreachable, per generation (`gc.get_stats()`).
pub fn get_stats() -> [(u64, u64); NUM_GENERATIONS] {
    with_gc(|gc| core::array::from_fn(|i| (gc.collections[i].get(), gc.collected[i].get())))
        .unwrap_or_default()
}
