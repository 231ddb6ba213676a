//! The object header, types, and [`Obj`], the owned handle.
//!
//! # Layout
//! Every object starts with CPython's `PyObject` header: a reference count and a type.
//! Containers (list, dict, instances) carry a 16-byte pre-header before it, CPython's
//! `PyGC_Head`: the cycle collector's two links (`gc.rs`); `getsizeof` counts it as CPython's
//! does. A block looks like this:
//!
//! ```text
//!   block ->  [ gc_next | gc_prev ]     16 B, containers only (an instance has 16 B more
//!                                       before it: its managed-dict slots)
//!   object -> [ ob_refcnt | ob_type ]   16 B, every object
//!             [ type-specific fields and items ... ]
//! ```
//! An `Obj` points at the object (the header), never at the block: the pre-header is at
//! `object - 16`. A type that supports weak references will keep its list at
//! `Type::weaklist_offset` (none of the four built-in types does, as in CPython).
//!
//! # Reference counts
//! `Obj::clone` increments, `drop` decrements; the last drop calls the type's `dealloc`, which
//! drops the references the object holds and gives its memory back (to its free list or to
//! pymalloc). Deallocation is iterative: an object whose count reaches zero while another is
//! being deallocated is queued, not freed recursively (CPython's "trashcan" has the same
//! purpose), so freeing a million nested lists does not grow the stack.
//!
//! Handles are `!Send` and `!Sync`: the counts are plain cells and the free lists are per
//! thread. A thread is one runtime, as an interpreter under its GIL. When the thread exits,
//! its runtime drops the references it holds (small ints, interned strings) and gives its free
//! lists back; objects other thread-locals still hold are freed when those drop, through
//! `PyMalloc` directly, still iteratively.
//!
//! `repr` and `equals` of containers nested deeper than Python's default recursion limit
//! (1000) return CPython's `RecursionError` rather than overflow the stack; a container that
//! holds itself prints as `[...]` or `{...}` inside.

use core::cell::Cell;
use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::runtime;

/// The header every object starts with. CPython: `PyObject`.
#[repr(C)]
pub(crate) struct Header {
    pub(crate) refcnt: Cell<usize>, // CPython: ob_refcnt
    pub(crate) ty: &'static Type,   // CPython: ob_type
}

/// Bytes of the collector's pre-header before a container's header. CPython: `sizeof(PyGC_Head)`.
pub const GC_HEADER_SIZE: usize = 16;

/// A type's `tp_traverse`: calls the visitor on each object the given one refers to.
pub(crate) type Traverse = unsafe fn(NonNull<Header>, &mut dyn FnMut(NonNull<Header>));

/// A type: its name and the operations the runtime needs. CPython: `PyTypeObject`.
pub struct Type {
    /// The type's name, as in error messages. CPython: `tp_name`.
    pub name: &'static str,
    /// Whether its objects carry the collector's pre-header. CPython: `Py_TPFLAGS_HAVE_GC`.
    pub gc: bool,
    /// Bytes before the header that belong to the object (the GC head, and an instance's
    /// managed-dict slots), counted by `getsizeof`. CPython: `_PyType_PreHeaderSize`.
    pub pre_header: usize,
    /// Where a weak-reference list would be, from the header; 0 if the type has none.
    /// CPython: `tp_weaklistoffset`.
    pub weaklist_offset: usize,
    /// Drops what the object holds and frees it. CPython: `tp_dealloc`.
    pub(crate) dealloc: unsafe fn(NonNull<Header>),
    /// The object's size in bytes, pre-header excluded. CPython: `__sizeof__`.
    pub(crate) sizeof: unsafe fn(NonNull<Header>) -> usize,
    /// Its hash, or `None` if the type is unhashable. CPython: `tp_hash`.
    pub(crate) hash: Option<unsafe fn(NonNull<Header>) -> isize>,
    /// Equality with an object of the same type. CPython: `tp_richcompare` with `Py_EQ`.
    pub(crate) eq: unsafe fn(NonNull<Header>, NonNull<Header>) -> Result<bool, crate::Error>,
    /// `repr()`. CPython: `tp_repr`.
    pub(crate) repr: unsafe fn(NonNull<Header>, &mut String) -> Result<(), crate::Error>,
    /// Calls the visitor on every object this one holds a reference to. CPython: `tp_traverse`.
    pub(crate) traverse: Option<Traverse>,
    /// Drops the references this object holds (the collector breaks cycles with it).
    /// CPython: `tp_clear`.
    pub(crate) clear: Option<unsafe fn(NonNull<Header>)>,
    /// Runs the object's finalizer if it has not run yet and says whether it ran; the
    /// finalizer may resurrect the object (store a new reference to it). Called by the last
    /// `decref` before `dealloc`, and by the collector before garbage is cleared.
    /// CPython: `tp_finalize` (`__del__`), called through `PyObject_CallFinalizer`.
    pub(crate) finalize: Option<unsafe fn(NonNull<Header>) -> bool>,
    /// Whether this is a user class (its objects are `Instance`s).
    pub(crate) is_class: bool,
}

/// An owned reference to an object: cloning adds a reference, dropping removes one.
pub struct Obj {
    ptr: NonNull<Header>,
    _not_send: PhantomData<*const ()>,
}

impl Obj {
    /// Takes over a reference the caller owns (a new object's first, or one just counted).
    ///
    /// # Safety
    /// `ptr` is a live object and the caller gives up one reference it holds.
    #[inline]
    pub(crate) unsafe fn from_owned(ptr: NonNull<Header>) -> Self {
        Self {
            ptr,
            _not_send: PhantomData,
        }
    }

    /// A new reference to the live object `ptr`.
    ///
    /// # Safety
    /// `ptr` is a live object.
    #[inline]
    pub(crate) unsafe fn from_borrowed(ptr: NonNull<Header>) -> Self {
        // SAFETY: the object is live.
        let h = unsafe { ptr.as_ref() };
        h.refcnt.set(h.refcnt.get() + 1);
        Self {
            ptr,
            _not_send: PhantomData,
        }
    }

    /// Gives up the handle without dropping its reference; returns the object.
    #[inline]
    pub(crate) fn into_raw(self) -> NonNull<Header> {
        let p = self.ptr;
        core::mem::forget(self);
        p
    }

    #[inline]
    pub(crate) fn ptr(&self) -> NonNull<Header> {
        self.ptr
    }

    #[inline]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: a handle keeps its object alive.
        unsafe { self.ptr.as_ref() }
    }

    /// The object's type.
    pub fn type_of(&self) -> &'static Type {
        self.header().ty
    }

    /// The type's name (`type(obj).__name__`).
    pub fn type_name(&self) -> &'static str {
        self.header().ty.name
    }

    /// Whether both handles refer to the same object (`a is b`).
    pub fn is(&self, other: &Obj) -> bool {
        self.ptr == other.ptr
    }

    /// The object's hash (`hash(obj)`), or CPython's error for an unhashable type.
    pub fn hash(&self) -> Result<isize, crate::Error> {
        match self.header().ty.hash {
            // SAFETY: the object is live and of the type whose function this is.
            Some(h) => Ok(unsafe { h(self.ptr) }),
            None => Err(crate::Error::Unhashable(self.type_name())),
        }
    }

    /// `a == b`: the same object, or the same type and equal values (objects of different
    /// types are unequal). CPython's `RecursionError` for containers nested deeper than
    /// [`RECURSION_LIMIT`](crate::RECURSION_LIMIT).
    pub fn equals(&self, other: &Obj) -> Result<bool, crate::Error> {
        if self.ptr == other.ptr {
            return Ok(true);
        }
        let t = self.header().ty;
        if !core::ptr::eq(t, other.header().ty) {
            return Ok(false);
        }
        // SAFETY: both live, and of the same type.
        crate::runtime::deeper(crate::runtime::CMP_DEPTH, || unsafe {
            (t.eq)(self.ptr, other.ptr)
        })
    }

    /// `repr(obj)`; a container that holds itself prints as `[...]` or `{...}` inside. CPython's
    /// `RecursionError` for containers nested deeper than [`RECURSION_LIMIT`](crate::RECURSION_LIMIT).
    pub fn repr(&self) -> Result<String, crate::Error> {
        let mut s = String::new();
        // SAFETY: the object is live and of the type whose function this is.
        unsafe { (self.header().ty.repr)(self.ptr, &mut s) }?;
        Ok(s)
    }
}

impl Clone for Obj {
    #[inline]
    fn clone(&self) -> Self {
        // SAFETY: a handle keeps its object alive.
        unsafe { Self::from_borrowed(self.ptr) }
    }
}

impl Drop for Obj {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: this handle owns one reference to the live object.
        unsafe { decref(self.ptr) }
    }
}

impl core::fmt::Debug for Obj {
    /// The repr, or the error that stopped it.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.repr() {
            Ok(s) => f.write_str(&s),
            Err(e) => write!(f, "<{e}>"),
        }
    }
}

/// Drops one reference; the last one deallocates (iteratively, see the module docs).
///
/// # Safety
/// The caller owns one reference to the live object `p`.
#[inline]
pub(crate) unsafe fn decref(p: NonNull<Header>) {
    // SAFETY: the object is live.
    let h = unsafe { p.as_ref() };
    let n = h.refcnt.get() - 1;
    h.refcnt.set(n);
    if n == 0 {
        runtime::dealloc(p);
    }
}

/// `sys.getrefcount(obj)`: the object's reference count, plus one for the argument, as
/// CPython counts the reference its call holds.
pub fn getrefcount(obj: &Obj) -> usize {
    obj.header().refcnt.get() + 1
}

/// `id(obj)`: the object's address (of its header, as in CPython).
pub fn id(obj: &Obj) -> usize {
    obj.ptr.as_ptr().addr()
}

/// `sys.getsizeof(obj)`: the bytes of the object as laid out here, the collector's pre-header
/// included for containers (as CPython adds it); not the memory of the objects it refers to.
pub fn getsizeof(obj: &Obj) -> usize {
    let t = obj.header().ty;
    // SAFETY: the object is live and of the type whose function this is.
    let own = unsafe { (t.sizeof)(obj.ptr) };
    own + t.pre_header
}
