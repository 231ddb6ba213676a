//! Weak references to instances: `weakref.ref(obj[, callback])`.
//!
//! An instance keeps the weak references to it on a doubly linked list from its `weaklist`
//! slot (CPython: `tp_weaklistoffset`). A reference without a callback is kept at the head and
//! handed out again to the next `ref(obj)` without one; a reference with a callback goes just
//! after it, so the list runs newest callback first. When the instance dies
//! (`PyObject_ClearWeakRefs`): every reference to it is cleared first (`upgrade()` gives
//! `None` from then on), then the callbacks run, newest first, each with its reference, for the
//! references that are still alive themselves. In a collection, the references to garbage are
//! cleared before any garbage is cleared, and a reference that is itself garbage (held only by
//! garbage) gets no callback.
//!
//! Only instances of user classes can be referred to weakly, as in CPython: for int, str, list
//! and dict, [`WeakRef::new`] gives CPython's `TypeError: cannot create weak reference to
//! 'list' object`.
//!
//! A weak reference is not tracked by the collector here (CPython's is): a callback is a Rust
//! closure, whose captures the collector cannot see anyway.

use core::cell::Cell;
use core::ptr::{self, NonNull};

use crate::object::{Header, Obj, Type};
use crate::{Error, runtime};

type Callback = Box<dyn Fn(&WeakRef)>;

thread_local! {
    /// Weak-reference objects alive on this thread: a collection skips the weak-reference
    /// pass when there are none. No destructor: usable at any time.
    static LIVE: Cell<usize> = const { Cell::new(0) };
}

/// Whether this thread has any weak-reference object alive.
pub(crate) fn any_alive() -> bool {
    LIVE.with(Cell::get) != 0
}

#[repr(C)]
struct WeakRefObject {
    header: Header,
    referent: Cell<*mut Header>, // null once the referent died. CPython: wr_object
    callback: Cell<Option<NonNull<Callback>>>, // CPython: wr_callback
    prev: Cell<*mut Header>,     // neighbours on the referent's list. CPython: wr_prev
    next: Cell<*mut Header>,     // CPython: wr_next
}

/// The type object. CPython: `_PyWeakref_RefType`.
pub static WEAKREF_TYPE: Type = Type {
    name: "weakref.ReferenceType",
    gc: false,
    pre_header: 0,
    weaklist_offset: 0,
    dealloc: weakref_dealloc,
    sizeof: weakref_sizeof,
    hash: None,
    eq: weakref_eq,
    repr: weakref_repr,
    traverse: None,
    clear: None,
    finalize: None,
    is_class: false,
};

fn wr<'a>(p: NonNull<Header>) -> &'a WeakRefObject {
    // SAFETY: callers pass live weak references.
    unsafe { &*p.as_ptr().cast::<WeakRefObject>() }
}

/// The weaklist slot of `obj`, if its type has one.
fn weaklist_of(obj: NonNull<Header>) -> Option<&'static Cell<*mut Header>> {
    // SAFETY: a live object.
    let t = unsafe { obj.as_ref() }.ty;
    (t.weaklist_offset != 0).then(|| {
        // SAFETY: the type's objects hold a `Cell<*mut Header>` at this offset, alive as long
        // as the object.
        unsafe {
            &*obj
                .as_ptr()
                .cast::<u8>()
                .add(t.weaklist_offset)
                .cast::<Cell<*mut Header>>()
        }
    })
}

/// A weak reference. Cloning adds a (strong) reference to the weak-reference object itself.
#[repr(transparent)]
#[derive(Clone)]
pub struct WeakRef(Obj);

impl WeakRef {
    /// `weakref.ref(obj)`: the existing callback-less reference if there is one, else a new one.
    pub fn new(obj: &Obj) -> Result<WeakRef, Error> {
        Self::make(obj, None)
    }

    /// `weakref.ref(obj, callback)`: always a new reference.
    pub fn with_callback(
        obj: &Obj,
        callback: impl Fn(&WeakRef) + 'static,
    ) -> Result<WeakRef, Error> {
        Self::make(obj, Some(Box::new(callback)))
    }

    fn make(obj: &Obj, callback: Option<Callback>) -> Result<WeakRef, Error> {
        let Some(list) = weaklist_of(obj.ptr()) else {
            return Err(Error::Type(format!(
                "cannot create weak reference to '{}' object",
                obj.type_name()
            )));
        };
        let head = list.get();
        // Reused only while it lives: a reference whose count is zero waits in the
        // deallocation queue, still on the list.
        if callback.is_none()
            && let Some(h) = NonNull::new(head)
            && wr(h).callback.get().is_none()
            && wr(h).header.refcnt.get() != 0
        {
            // SAFETY: a live weak reference on the list.
            return Ok(WeakRef(unsafe { Obj::from_borrowed(h) }));
        }
        let layout = core::alloc::Layout::new::<WeakRefObject>();
        let block = runtime::alloc_plain(layout).cast::<WeakRefObject>();
        let has_cb = callback.is_some();
        // SAFETY: a fresh block for a WeakRefObject.
        unsafe {
            block.as_ptr().write(WeakRefObject {
                header: Header {
                    refcnt: Cell::new(1),
                    ty: &WEAKREF_TYPE,
                },
                referent: Cell::new(obj.ptr().as_ptr()),
                callback: Cell::new(callback.map(|c| NonNull::from(Box::leak(Box::new(c))))),
                prev: Cell::new(ptr::null_mut()),
                next: Cell::new(ptr::null_mut()),
            });
        }
        LIVE.with(|c| c.set(c.get() + 1));
        let me = block.cast::<Header>();
        let w = wr(me);
        // A callback-less reference at the head; one with a callback after the head's
        // callback-less reference (if any), so that the newest callback runs first.
        let after = NonNull::new(head).filter(|h| has_cb && wr(*h).callback.get().is_none());
        match after {
            Some(a) => {
                let next = wr(a).next.get();
                w.prev.set(a.as_ptr());
                w.next.set(next);
                wr(a).next.set(me.as_ptr());
                if let Some(n) = NonNull::new(next) {
                    wr(n).prev.set(me.as_ptr());
                }
            }
            None => {
                w.next.set(head);
                if let Some(h) = NonNull::new(head) {
                    wr(h).prev.set(me.as_ptr());
                }
                list.set(me.as_ptr());
            }
        }
        // SAFETY: a new object with its one reference.
        Ok(WeakRef(unsafe { Obj::from_owned(me) }))
    }

    /// `r()`: the referent while it lives, `None` after. A referent whose count is zero (it
    /// waits in the deallocation queue) is dead already: a handle would revive a block about
    /// to be freed (CPython's `PyWeakref_GET_OBJECT` checks the count the same way).
    pub fn upgrade(&self) -> Option<Obj> {
        let p = NonNull::new(wr(self.0.ptr()).referent.get())?;
        // SAFETY: a referent still on record has not been freed (it clears its references as
        // it is deallocated).
        if unsafe { p.as_ref() }.refcnt.get() == 0 {
            return None;
        }
        // SAFETY: as above, and its count is not zero.
        Some(unsafe { Obj::from_borrowed(p) })
    }

    /// Whether the referent is dead (freed, or waiting in the deallocation queue).
    pub fn is_dead(&self) -> bool {
        self.upgrade().is_none()
    }

    /// The weak-reference object as a plain handle.
    pub fn into_obj(self) -> Obj {
        self.0
    }
}

impl core::ops::Deref for WeakRef {
    type Target = Obj;
    fn deref(&self) -> &Obj {
        &self.0
    }
}

impl From<WeakRef> for Obj {
    fn from(v: WeakRef) -> Obj {
        v.0
    }
}

/// `weakref.getweakrefcount(obj)`.
pub fn getweakrefcount(obj: &Obj) -> usize {
    let mut n = 0;
    let mut p = weaklist_of(obj.ptr()).map_or(ptr::null_mut(), Cell::get);
    while let Some(w) = NonNull::new(p) {
        n += 1;
        p = wr(w).next.get();
    }
    n
}

/// Unlinks `w` from its referent's list and forgets the referent.
fn unlink(w: NonNull<Header>) {
    let o = wr(w);
    let (prev, next) = (
        o.prev.replace(ptr::null_mut()),
        o.next.replace(ptr::null_mut()),
    );
    if let Some(p) = NonNull::new(prev) {
        wr(p).next.set(next);
    } else if let Some(r) = NonNull::new(o.referent.get())
        && let Some(list) = weaklist_of(r)
    {
        list.set(next);
    }
    if let Some(n) = NonNull::new(next) {
        wr(n).prev.set(prev);
    }
    o.referent.set(ptr::null_mut());
}

/// Clears every weak reference to `obj` and returns those with a callback (new references),
/// in list order (newest callback first). CPython: the first half of
/// `PyObject_ClearWeakRefs`.
pub(crate) fn clear_refs(obj: NonNull<Header>) -> Vec<WeakRef> {
    let Some(list) = weaklist_of(obj) else {
        return Vec::new();
    };
    let mut with_cb = Vec::new();
    while let Some(w) = NonNull::new(list.get()) {
        if wr(w).callback.get().is_some() && wr(w).header.refcnt.get() > 0 {
            // SAFETY: a live weak reference.
            with_cb.push(WeakRef(unsafe { Obj::from_borrowed(w) }));
        }
        unlink(w);
    }
    with_cb
}

/// A callback taken from a weak reference, to be dropped later: dropping it runs the drop code
/// of what it captured, which must not run in the middle of a collection.
pub(crate) struct DeferredCallback(NonNull<Callback>);

impl Drop for DeferredCallback {
    fn drop(&mut self) {
        // SAFETY: boxed by `make`; taken from its reference, so owned here alone.
        let cb = unsafe { Box::from_raw(self.0.as_ptr()) };
        runtime::run_user_code(&"the drop of a weak-reference callback", || drop(cb));
    }
}

/// Clears weak reference `w` without running its callback (it is garbage itself: held only by
/// garbage) and hands the callback back, for the caller to drop once no code of the caller's
/// can disturb it (CPython leaves `wr_callback` in place until the reference is freed).
/// CPython: the first loop of `handle_weakrefs`.
pub(crate) fn clear_garbage_ref(w: NonNull<Header>) -> Option<DeferredCallback> {
    unlink(w);
    wr(w).callback.take().map(DeferredCallback)
}

/// Runs the callbacks of the given (cleared) references, in order, and says how many of the
/// references were freed as this let go of them (a callback that removed the last other
/// reference, as a `WeakValueDict` entry's does). CPython: the second half of
/// `PyObject_ClearWeakRefs`, and the count `handle_weakrefs` adds to a collection's.
pub(crate) fn run_callbacks(refs: Vec<WeakRef>) -> usize {
    let mut freed = 0;
    for r in refs {
        if let Some(cb) = wr(r.0.ptr()).callback.take() {
            // SAFETY: the callback was boxed by `make` and is owned by the reference.
            let cb = unsafe { Box::from_raw(cb.as_ptr()) };
            runtime::run_user_code(&"a weak-reference callback", || {
                cb(&r);
                drop(cb);
            });
        }
        freed += usize::from(r.0.header().refcnt.get() == 1);
    }
    freed
}

unsafe fn weakref_dealloc(p: NonNull<Header>) {
    LIVE.with(|c| c.set(c.get().saturating_sub(1)));
    unlink(p);
    drop(wr(p).callback.take().map(DeferredCallback));
    // SAFETY: allocated by `make` with this layout.
    unsafe {
        runtime::free_plain(p.cast(), core::alloc::Layout::new::<WeakRefObject>());
    }
}

unsafe fn weakref_sizeof(_: NonNull<Header>) -> usize {
    size_of::<WeakRefObject>()
}

unsafe fn weakref_eq(a: NonNull<Header>, b: NonNull<Header>) -> Result<bool, Error> {
    // Two live references compare their referents; dead ones by identity.
    let (x, y) = (wr(a).referent.get(), wr(b).referent.get());
    Ok(if x.is_null() || y.is_null() {
        a == b
    } else {
        x == y
    })
}

unsafe fn weakref_repr(p: NonNull<Header>, out: &mut String) -> Result<(), Error> {
    let r = wr(p).referent.get();
    if let Some(o) = NonNull::new(r) {
        // SAFETY: a live referent.
        let name = unsafe { o.as_ref() }.ty.name;
        out.push_str(&format!(
            "<weakref at {:#x}; to '{name}' at {:#x}>",
            p.as_ptr().addr(),
            r.addr()
        ));
    } else {
        out.push_str(&format!("<weakref at {:#x}; dead>", p.as_ptr().addr()));
    }
    Ok(())
}

/// `weakref.WeakValueDictionary`: a mapping whose values are held weakly; an entry goes away
/// when its value dies (by counts or by the collector), through a callback on the weak
/// reference the entry holds, as CPython's `KeyedRef` does.
///
/// The entries live in a [`Dict`](crate::Dict) of key to weak reference; keys are held
/// strongly. Values must support weak references (instances): for anything else `insert`
/// gives CPython's `TypeError`.
pub struct WeakValueDict {
    data: std::rc::Rc<crate::Dict>,
}

impl Default for WeakValueDict {
    fn default() -> Self {
        Self::new()
    }
}

impl WeakValueDict {
    /// An empty mapping.
    pub fn new() -> Self {
        Self {
            data: std::rc::Rc::new(crate::Dict::new()),
        }
    }

    /// `d[key] = value`. The entry goes when `value` dies, unless `key` was set again
    /// meanwhile.
    pub fn insert(&self, key: impl Into<Obj>, value: &Obj) -> Result<(), Error> {
        let key: Obj = key.into();
        key.hash()?;
        let data = std::rc::Rc::downgrade(&self.data);
        let k = key.clone();
        let r = WeakRef::with_callback(value, move |me| {
            // The dict may be gone (the mapping was dropped first), or the key may map to a
            // newer reference.
            if let Some(d) = data.upgrade()
                && let Ok(Some(cur)) = d.get(&k)
                && cur.is(me)
            {
                let _ = d.remove(&k);
            }
        })?;
        self.data.set(key, r)
    }

    /// `d.get(key)`: the value while it lives.
    pub fn get(&self, key: &Obj) -> Result<Option<Obj>, Error> {
        Ok(self.data.get(key)?.and_then(|r| Self::referent(&r)))
    }

    /// `d.pop(key, None)`: removes the entry and gives the value if it still lived.
    pub fn remove(&self, key: &Obj) -> Result<Option<Obj>, Error> {
        if !self.data.contains(key)? {
            return Ok(None);
        }
        Ok(Self::referent(&self.data.remove(key)?))
    }

    /// `len(d)`: the entries whose value lives.
    pub fn len(&self) -> usize {
        self.items().len()
    }

    /// Whether no entry's value lives.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `list(d.items())`: the entries whose value lives, in insertion order.
    pub fn items(&self) -> Vec<(Obj, Obj)> {
        self.data
            .items()
            .into_iter()
            .filter_map(|(k, r)| Some((k, Self::referent(&r)?)))
            .collect()
    }

    fn referent(r: &Obj) -> Option<Obj> {
        // SAFETY: the dict's values are all weak-reference objects (only `insert` adds any).
        let w: &WeakRef = unsafe { &*core::ptr::from_ref(r).cast::<WeakRef>() };
        w.upgrade()
    }
}
