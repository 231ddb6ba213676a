//! Layer +3 of pymalloc-rs: Python-like objects with reference counts — `int`, `str`, `list`
//! and `dict` — each allocated through its own free list over `PyMalloc`.
//!
//! ```text
//!   Int, Str, List, Dict          typed handles (`Deref<Target = Obj>`)
//!   Obj                           an owned reference: clone = incref, drop = decref
//!   free lists (per type)         pymalloc_freelist::FreeList, one per type and thread
//!   PyMalloc                      one for the process (`allocator()`), CPython's object domain
//! ```
//!
//! What follows CPython (3.11): the object header (`ob_refcnt`, `ob_type`), the collector's
//! 16-byte pre-header on containers, `int` as 30-bit digits with the small ints −5..=256
//! cached, `list`'s over-allocation (`list_resize`), `dict`'s compact layout (an index table
//! and entries in insertion order, `GROWTH_RATE`, `USABLE_FRACTION`), the free-list caps, and
//! `sys.getrefcount` / `id` / `sys.getsizeof`. docs/OBJECTS.md sets our `getsizeof` beside
//! CPython's. What does not: `str` holds UTF-8 (CPython's compact sizes hold for ASCII), dict
//! keys tables always use 24-byte entries (CPython uses 16 for str-only keys), and strings
//! hash with SipHash-1-3 with fixed keys (CPython randomises its hash per process).
//!
//! Handles are `!Send`: one thread is one runtime, as one interpreter under its GIL: its free
//! lists, small ints, interned strings and collector state are the thread's. Memory comes from
//! one `PyMalloc` for the process, [`allocator()`].
//!
//! Beside the built-in types: instances of user classes ([`Class`], [`Instance`]), with
//! finalizers ([`Class::with_finalizer`]); the cycle collector and CPython's `gc` module
//! ([`gc`], with `gc.callbacks`); weak references ([`WeakRef`], [`WeakValueDict`]); and a
//! memory_profiler-style table with pymalloc's blocks in use beside the RSS ([`profile`]).

#![deny(unsafe_op_in_unsafe_fn)]

mod dict;
mod digits;
pub mod gc;
mod instance;
mod int;
mod list;
mod object;
pub mod profile;
mod runtime;
mod str;
mod weakref;

pub use dict::{DICT_TYPE, Dict};
pub use instance::{Class, Instance};
pub use int::{INT_TYPE, Int};
pub use list::{LIST_TYPE, List};
pub use object::{GC_HEADER_SIZE, Obj, Type, getrefcount, getsizeof, id};
pub use runtime::{
    DICT_FREELIST_CAP, DICT_KEYS_FREELIST_CAP, FreeLists, INSTANCE_FREELIST_CAP, INT_FREELIST_CAP,
    LIST_FREELIST_CAP, RECURSION_LIMIT, STR_FREELIST_CAP, allocator, clear_free_lists,
    free_list_stats, set_free_lists,
};
pub use str::{STR_TYPE, Str};
pub use weakref::{WEAKREF_TYPE, WeakRef, WeakValueDict, getweakrefcount};

/// Python's exceptions for what can go wrong here, with CPython's messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// `TypeError: unhashable type: 'list'`.
    Unhashable(&'static str),
    /// `IndexError: list index out of range` (and `pop from empty list`).
    Index(&'static str),
    /// `KeyError`: the key's repr.
    Key(String),
    /// `ValueError: invalid literal for int() with base 10: '...'`.
    Value(String),
    /// `TypeError: ...`, e.g. `cannot create weak reference to 'list' object`.
    Type(String),
    /// `AttributeError: 'A' object has no attribute 'x'`.
    Attribute(String),
    /// `RecursionError: maximum recursion depth exceeded ...` (a repr or a comparison nested
    /// deeper than [`RECURSION_LIMIT`]).
    Recursion(&'static str),
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Unhashable(t) => write!(f, "TypeError: unhashable type: '{t}'"),
            Error::Index(m) => write!(f, "IndexError: {m}"),
            Error::Key(k) => write!(f, "KeyError: {k}"),
            Error::Value(m) => write!(f, "ValueError: {m}"),
            Error::Recursion(m) => write!(f, "RecursionError: {m}"),
            Error::Attribute(m) => write!(f, "AttributeError: {m}"),
            Error::Type(m) => write!(f, "TypeError: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// A typed handle: `#[repr(transparent)]` over `Obj`, so a `&Obj` of the right type can be
/// viewed as one.
macro_rules! typed_handle {
    ($name:ident, $ty:expr) => {
        impl $name {
            /// Views `obj` as this type, if it is one.
            pub fn cast(obj: &$crate::Obj) -> Option<&Self> {
                if core::ptr::eq(obj.type_of(), &$ty) {
                    // SAFETY: `Self` is `#[repr(transparent)]` over `Obj`, and the object is
                    // of this type.
                    Some(unsafe { &*core::ptr::from_ref(obj).cast::<Self>() })
                } else {
                    None
                }
            }

            /// Takes `obj` as this type, if it is one; gives it back otherwise.
            pub fn downcast(obj: $crate::Obj) -> Result<Self, $crate::Obj> {
                if core::ptr::eq(obj.type_of(), &$ty) {
                    Ok(Self(obj))
                } else {
                    Err(obj)
                }
            }

            /// The handle as a plain object handle.
            pub fn into_obj(self) -> $crate::Obj {
                self.0
            }
        }

        impl core::ops::Deref for $name {
            type Target = $crate::Obj;
            fn deref(&self) -> &$crate::Obj {
                &self.0
            }
        }

        impl From<$name> for $crate::Obj {
            fn from(v: $name) -> $crate::Obj {
                v.0
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                core::fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}
pub(crate) use typed_handle;
