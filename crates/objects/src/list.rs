//! `list`: the object through the list free list, its item array through `PyMalloc`.
//!
//! ```text
//!   block:  [ gc_next | gc_prev ][ ob_refcnt | ob_type ][ ob_size ][ ob_item ][ allocated ]
//!             16 B (collector)     16 B                   8 B        8 B        8 B
//!   ob_item -> [ item 0 | item 1 | ... | (allocated - ob_size spare slots) ]   8 B each
//! ```
//! `getsizeof` is `16 + 40 + 8 * allocated`, CPython's `list.__sizeof__` plus its GC header.
//! Growth follows CPython 3.11's `list_resize`: no reallocation while
//! `allocated / 2 <= newsize <= allocated`, else `allocated = (newsize + newsize / 8 + 6) & !3`
//! (or `(newsize + 3) & !3` when that would leave less room than the growth asked for); a list
//! built from known items ([`List::from_objs`]) gets exactly as many slots, as
//! `BUILD_LIST` does.

use core::alloc::Layout;
use core::cell::Cell;
use core::ptr::{self, NonNull};

use crate::object::{GC_HEADER_SIZE, Header, Obj, Type, decref};
use crate::runtime::{self, Kind, LIST_LAYOUT};
use crate::{Error, gc, typed_handle};

#[repr(C)]
struct ListObject {
    header: Header,
    size: Cell<usize>,                 // CPython: ob_size, items in use
    items: Cell<*mut NonNull<Header>>, // CPython: ob_item; null when allocated == 0
    allocated: Cell<usize>,            // slots in `items`
}

/// The type object. CPython: `PyList_Type`.
pub static LIST_TYPE: Type = Type {
    name: "list",
    gc: true,
    pre_header: GC_HEADER_SIZE,
    weaklist_offset: 0,
    dealloc: list_dealloc,
    sizeof: list_sizeof,
    hash: None,
    eq: list_eq,
    repr: list_repr,
    traverse: Some(list_traverse),
    clear: Some(list_clear),
    finalize: None,
    is_class: false,
};

unsafe fn list_traverse(p: NonNull<Header>, visit: &mut dyn FnMut(NonNull<Header>)) {
    // SAFETY: a live list; the visitor does not change it.
    for &item in unsafe { slots(obj(p)) } {
        visit(item);
    }
}

unsafe fn list_clear(p: NonNull<Header>) {
    // SAFETY: a live list (the collector holds it).
    List::clear_raw(unsafe { obj(p) });
}

/// A `list` object.
#[repr(transparent)]
#[derive(Clone)]
pub struct List(Obj);

typed_handle!(List, LIST_TYPE);

fn items_layout(n: usize) -> Option<Layout> {
    Layout::array::<NonNull<Header>>(n).ok()
}

/// # Safety
/// `p` is a live list.
unsafe fn obj<'a>(p: NonNull<Header>) -> &'a ListObject {
    // SAFETY: guaranteed by the caller.
    unsafe { &*p.as_ptr().cast::<ListObject>() }
}

/// The item slots in use.
///
/// # Safety
/// `l` is a live list; the slice must not be held across a change of the list.
unsafe fn slots<'a>(l: &ListObject) -> &'a [NonNull<Header>] {
    let n = l.size.get();
    if n == 0 {
        return &[];
    }
    // SAFETY: `items` holds `size` initialised slots.
    unsafe { core::slice::from_raw_parts(l.items.get(), n) }
}

unsafe fn list_dealloc(p: NonNull<Header>) {
    gc::on_dealloc(p);
    // SAFETY: a live list whose count reached zero.
    let l = unsafe { obj(p) };
    // SAFETY: as above; its references are dropped (queued: deallocation is iterative).
    for &item in unsafe { slots(l) } {
        // SAFETY: the list owned one reference to each item.
        unsafe { decref(item) };
    }
    free_items(l);
    // SAFETY: the block starts GC_HEADER_SIZE before the object; it came from LIST_LAYOUT.
    unsafe {
        let block = NonNull::new_unchecked(p.as_ptr().cast::<u8>().sub(GC_HEADER_SIZE));
        runtime::free_block(Kind::List, block, LIST_LAYOUT);
    }
}

fn free_items(l: &ListObject) {
    let a = l.allocated.get();
    if a != 0 {
        if let Some(layout) = items_layout(a) {
            // SAFETY: `items` came from the allocator with this layout.
            unsafe {
                core::alloc::GlobalAlloc::dealloc(
                    runtime::allocator(),
                    l.items.get().cast(),
                    layout,
                )
            };
        }
        l.items.set(ptr::null_mut());
        l.allocated.set(0);
    }
}

unsafe fn list_sizeof(p: NonNull<Header>) -> usize {
    // SAFETY: a live list.
    size_of::<ListObject>() + 8 * unsafe { obj(p) }.allocated.get()
}

unsafe fn list_eq(a: NonNull<Header>, b: NonNull<Header>) -> Result<bool, Error> {
    // SAFETY: both live lists; the handles built here keep the items alive while compared.
    let (x, y) = unsafe { (List::snapshot(obj(a)), List::snapshot(obj(b))) };
    if x.len() != y.len() {
        return Ok(false);
    }
    for (i, j) in x.iter().zip(&y) {
        if !i.equals(j)? {
            return Ok(false);
        }
    }
    Ok(true)
}

unsafe fn list_repr(p: NonNull<Header>, out: &mut String) -> Result<(), Error> {
    let printed = runtime::repr_guard(p, || {
        // SAFETY: a live list.
        let items = unsafe { List::snapshot(obj(p)) };
        out.push('[');
        for (i, o) in items.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&o.repr()?);
        }
        out.push(']');
        Ok(())
    })?;
    if !printed {
        out.push_str("[...]");
    }
    Ok(())
}

impl List {
    /// `[]`.
    pub fn new() -> List {
        Self::with_slots(0)
    }

    fn with_slots(n: usize) -> List {
        gc::on_alloc();
        let block = runtime::alloc_block(Kind::List, LIST_LAYOUT);
        // SAFETY: a fresh block of LIST_LAYOUT: the GC pre-header, then the object.
        unsafe {
            block.as_ptr().cast::<[u64; 2]>().write([0, 0]);
            let o = block.as_ptr().add(GC_HEADER_SIZE).cast::<ListObject>();
            o.write(ListObject {
                header: Header {
                    refcnt: Cell::new(1),
                    ty: &LIST_TYPE,
                },
                size: Cell::new(0),
                items: Cell::new(ptr::null_mut()),
                allocated: Cell::new(0),
            });
            let l = List(Obj::from_owned(NonNull::new_unchecked(o.cast())));
            l.set_allocated(n);
            gc::track(l.0.ptr());
            l
        }
    }

    /// A list of exactly these items, with as many slots (CPython: `BUILD_LIST`).
    pub fn from_objs(items: impl IntoIterator<Item = Obj>) -> List {
        let items: Vec<Obj> = items.into_iter().collect();
        let n = items.len();
        let l = Self::with_slots(n);
        let lo = l.obj();
        for (i, o) in items.into_iter().enumerate() {
            // SAFETY: `n` slots were allocated; the list takes over each reference.
            unsafe { lo.items.get().add(i).write(o.into_raw()) };
        }
        lo.size.set(n);
        l
    }

    fn obj(&self) -> &ListObject {
        // SAFETY: the handle keeps a live list.
        unsafe { obj(self.0.ptr()) }
    }

    /// New references to the items, in order (a snapshot: the list may change after).
    fn snapshot(l: &ListObject) -> Vec<Obj> {
        // SAFETY: a live list; each item is live while the list holds it.
        unsafe { slots(l).iter().map(|&p| Obj::from_borrowed(p)).collect() }
    }

    /// Reallocates the item array to exactly `n` slots (`n >= size`).
    fn set_allocated(&self, n: usize) {
        let l = self.obj();
        debug_assert!(n >= l.size.get());
        let old = l.allocated.get();
        if n == old {
            return;
        }
        let a = runtime::allocator();
        let p = if n == 0 {
            free_items(l);
            return;
        } else {
            let Some(layout) = items_layout(n) else {
                std::alloc::handle_alloc_error(Layout::new::<u8>())
            };
            // SAFETY: a valid layout; the old array (if any) was allocated with `old` slots
            // and its first `size` slots are copied by realloc.
            let p = unsafe {
                if old == 0 {
                    core::alloc::GlobalAlloc::alloc(a, layout)
                } else {
                    core::alloc::GlobalAlloc::realloc(
                        a,
                        l.items.get().cast(),
                        items_layout(old).unwrap_or(layout),
                        layout.size(),
                    )
                }
            };
            if p.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            p
        };
        l.items.set(p.cast());
        l.allocated.set(n);
    }

    /// CPython 3.11's `list_resize`: makes room for `newsize` items.
    fn resize(&self, newsize: usize) {
        let l = self.obj();
        let allocated = l.allocated.get();
        if allocated >= newsize && newsize >= (allocated >> 1) {
            return;
        }
        let mut new_allocated = (newsize + (newsize >> 3) + 6) & !3;
        if newsize - l.size.get().min(newsize) > new_allocated - newsize {
            new_allocated = (newsize + 3) & !3;
        }
        if newsize == 0 {
            new_allocated = 0;
        }
        self.set_allocated(new_allocated.max(l.size.get()));
    }

    /// `len(l)`.
    pub fn len(&self) -> usize {
        self.obj().size.get()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slots allocated for items.
    pub fn allocated(&self) -> usize {
        self.obj().allocated.get()
    }

    /// `l.append(o)`.
    pub fn append(&self, o: impl Into<Obj>) {
        let o = o.into();
        let n = self.len();
        self.resize(n + 1);
        let l = self.obj();
        // SAFETY: there is room for n + 1 items; the list takes over `o`'s reference.
        unsafe { l.items.get().add(n).write(o.into_raw()) };
        l.size.set(n + 1);
    }

    /// `l.insert(i, o)` (an index past the end appends; negative indices are not taken).
    pub fn insert(&self, i: usize, o: impl Into<Obj>) {
        let o = o.into();
        let n = self.len();
        let i = i.min(n);
        self.resize(n + 1);
        let l = self.obj();
        // SAFETY: room for n + 1 items; slots i..n move up by one.
        unsafe {
            let base = l.items.get();
            ptr::copy(base.add(i), base.add(i + 1), n - i);
            base.add(i).write(o.into_raw());
        }
        l.size.set(n + 1);
    }

    /// `l.pop()`: the last item, or CPython's `IndexError`.
    pub fn pop(&self) -> Result<Obj, Error> {
        self.pop_at(self.len().wrapping_sub(1))
            .map_err(|_| Error::Index("pop from empty list"))
    }

    /// `l.pop(i)`.
    pub fn pop_at(&self, i: usize) -> Result<Obj, Error> {
        let n = self.len();
        if i >= n {
            return Err(Error::Index(if n == 0 {
                "pop from empty list"
            } else {
                "pop index out of range"
            }));
        }
        let l = self.obj();
        // SAFETY: slot i holds a reference, which moves to the returned handle; slots after
        // it move down.
        let o = unsafe {
            let base = l.items.get();
            let o = base.add(i).read();
            ptr::copy(base.add(i + 1), base.add(i), n - i - 1);
            Obj::from_owned(o)
        };
        l.size.set(n - 1);
        self.resize(n - 1);
        Ok(o)
    }

    /// `l[i]`.
    pub fn get(&self, i: usize) -> Result<Obj, Error> {
        let l = self.obj();
        // SAFETY: a live list; the item is live while the list holds it.
        unsafe { slots(l) }
            .get(i)
            .map(|&p| unsafe { Obj::from_borrowed(p) })
            .ok_or(Error::Index("list index out of range"))
    }

    /// `l[i] = o`.
    pub fn set(&self, i: usize, o: impl Into<Obj>) -> Result<(), Error> {
        let o = o.into();
        if i >= self.len() {
            return Err(Error::Index("list assignment index out of range"));
        }
        let l = self.obj();
        // SAFETY: slot i holds a reference; it is replaced first and dropped after, so the
        // list is whole if dropping the old item frees other objects.
        let old = unsafe { l.items.get().add(i).replace(o.into_raw()) };
        // SAFETY: the list's reference to the old item.
        unsafe { decref(old) };
        Ok(())
    }

    /// `l.clear()`.
    pub fn clear(&self) {
        Self::clear_raw(self.obj());
    }

    /// Empties the list, then drops its references (so the list is whole, and empty, if
    /// dropping them frees objects that look at it). The item array is detached first and
    /// freed last, as CPython's `list_clear` does: nothing is copied.
    fn clear_raw(l: &ListObject) {
        let items = l.items.replace(ptr::null_mut());
        let n = l.size.replace(0);
        let a = l.allocated.replace(0);
        for i in 0..n {
            // SAFETY: the detached array holds `n` initialised slots, each the list's
            // reference to an item; no one else can reach the array any more.
            unsafe { decref(*items.add(i)) };
        }
        if a != 0
            && let Some(layout) = items_layout(a)
        {
            // SAFETY: `items` came from the allocator with this layout.
            unsafe {
                core::alloc::GlobalAlloc::dealloc(runtime::allocator(), items.cast(), layout)
            };
        }
    }

    /// New references to the items, in order.
    pub fn to_vec(&self) -> Vec<Obj> {
        Self::snapshot(self.obj())
    }
}

impl Default for List {
    fn default() -> Self {
        Self::new()
    }
}
