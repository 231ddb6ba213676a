//! Instances of user classes: enough for `class A: pass; a1 = A(); a1.child = a2`.
//!
//! ```text
//!   block:  [ dict | flags ][ gc_next | gc_prev ][ ob_refcnt | ob_type ][ weaklist ]
//!             16 B            16 B                 16 B                   8 B
//!             managed dict    CPython: PyGC_Head    header                tp_weaklistoffset
//! ```
//! CPython 3.11 lays out an instance of a plain class the same way: a 24-byte object (header
//! and weak-reference list) after the GC head and, before that, the two pointers of its
//! "managed dict" (the attribute dict and split values; this crate keeps no split values and
//! uses that word for the finalized flag). `getsizeof` is 56, as in CPython 3.11. The attribute dict is made on the first attribute set. Instances are tracked
//! by the collector from creation and come from the instance free list (cap 80).
//!
//! A [`Class`] is a type: its name and the operations of its instances. Classes live for the
//! rest of the program (their type objects are leaked on purpose: CPython's heap types are
//! objects with counts, which this crate does not model). A class may have a finalizer
//! ([`Class::with_finalizer`], `__del__`), run once per instance with PEP 442's rules: it may
//! resurrect the instance.

use core::cell::Cell;
use core::ptr::{self, NonNull};

use crate::object::{GC_HEADER_SIZE, Header, Obj, Type, decref};
use crate::runtime::{self, INSTANCE_LAYOUT, Kind};
use crate::{Dict, Error, Str, gc};

/// Bytes of the managed-dict slots before the GC head. CPython 3.11: `MANAGED_DICT` pre-header.
const MANAGED_DICT_SIZE: usize = 16;

#[repr(C)]
struct InstanceObject {
    header: Header,
    weaklist: Cell<*mut Header>, // CPython: tp_weaklistoffset; the first weak reference
}

/// The attribute-dict slot of the instance at `p`.
fn dict_slot(p: NonNull<Header>) -> &'static Cell<*mut Header> {
    // SAFETY: an instance's managed-dict slots precede its GC head; they live as long as it.
    unsafe {
        &*p.as_ptr()
            .cast::<u8>()
            .sub(GC_HEADER_SIZE + MANAGED_DICT_SIZE)
            .cast::<Cell<*mut Header>>()
    }
}

/// Whether the instance's finalizer has run: the second managed-dict slot (CPython keeps its
/// split values there, which this crate does not model; CPython keeps the flag in the GC
/// head, `_PyGC_PREV_MASK_FINALIZED`).
fn finalized_slot(p: NonNull<Header>) -> &'static Cell<usize> {
    // SAFETY: as for `dict_slot`: the slot after it, zeroed when the instance is made.
    unsafe {
        &*p.as_ptr()
            .cast::<u8>()
            .sub(GC_HEADER_SIZE + MANAGED_DICT_SIZE - 8)
            .cast::<Cell<usize>>()
    }
}

/// A class object: its type and its finalizer. `ty` comes first: an instance's type pointer
/// is also a pointer to its class object.
#[repr(C)]
struct ClassObject {
    ty: Type,
    finalizer: Option<Finalizer>,
}

type Finalizer = Box<dyn Fn(&Instance)>;

/// A user class. CPython: a heap type.
#[derive(Clone, Copy)]
pub struct Class {
    cls: &'static ClassObject,
}

impl Class {
    /// `class <name>: pass`. The class lives for the rest of the program.
    pub fn new(name: &str) -> Class {
        Self::make(name, None)
    }

    /// A class with a finalizer, `def __del__(self): ...` (PEP 442). It runs once per
    /// instance: when the last reference goes, or when the collector finds the instance
    /// unreachable, whichever comes first. It may resurrect the instance by storing a new
    /// reference to it somewhere; the instance then lives on, and its finalizer does not run
    /// again when it dies later.
    pub fn with_finalizer(name: &str, finalizer: impl Fn(&Instance) + 'static) -> Class {
        Self::make(name, Some(Box::new(finalizer)))
    }

    fn make(name: &str, finalizer: Option<Finalizer>) -> Class {
        let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
        let finalize = finalizer.is_some().then_some(instance_finalize as _);
        let cls = Box::leak(Box::new(ClassObject {
            ty: Type {
                name,
                gc: true,
                pre_header: GC_HEADER_SIZE + MANAGED_DICT_SIZE,
                weaklist_offset: core::mem::offset_of!(InstanceObject, weaklist),
                dealloc: instance_dealloc,
                sizeof: instance_sizeof,
                hash: Some(instance_hash),
                eq: instance_eq,
                repr: instance_repr,
                traverse: Some(instance_traverse),
                clear: Some(instance_clear),
                finalize,
                is_class: true,
            },
            finalizer,
        }));
        Class { cls }
    }

    /// The class's name.
    pub fn name(&self) -> &'static str {
        self.cls.ty.name
    }

    /// `A()`: a new instance with no attributes.
    pub fn instantiate(&self) -> Instance {
        gc::on_alloc();
        let block = runtime::alloc_block(Kind::Instance, INSTANCE_LAYOUT);
        // SAFETY: a fresh block of INSTANCE_LAYOUT: the managed-dict slots (the dict, and the
        // finalized flag), the GC head, then the object.
        unsafe {
            block.as_ptr().cast::<[u64; 4]>().write([0; 4]);
            let o = block
                .as_ptr()
                .add(MANAGED_DICT_SIZE + GC_HEADER_SIZE)
                .cast::<InstanceObject>();
            o.write(InstanceObject {
                header: Header {
                    refcnt: Cell::new(1),
                    ty: &self.cls.ty,
                },
                weaklist: Cell::new(ptr::null_mut()),
            });
            let p = NonNull::new_unchecked(o.cast::<Header>());
            gc::track(p);
            Instance(Obj::from_owned(p))
        }
    }

    /// Whether `obj` is an instance of this class.
    pub fn is_instance(&self, obj: &Obj) -> bool {
        core::ptr::eq(obj.type_of(), &self.cls.ty)
    }
}

/// An instance of a [`Class`].
#[repr(transparent)]
#[derive(Clone)]
pub struct Instance(Obj);

impl Instance {
    /// Views `obj` as an instance, if it is one of some class.
    pub fn cast(obj: &Obj) -> Option<&Self> {
        if is_instance(obj) {
            // SAFETY: `Self` is `#[repr(transparent)]` over `Obj`, and the object is an
            // instance.
            Some(unsafe { &*core::ptr::from_ref(obj).cast::<Self>() })
        } else {
            None
        }
    }

    /// The handle as a plain object handle.
    pub fn into_obj(self) -> Obj {
        self.0
    }

    /// The attribute dict, made on first use (`obj.__dict__`).
    pub fn dict(&self) -> Dict {
        let slot = dict_slot(self.0.ptr());
        let d = slot.get();
        if let Some(d) = NonNull::new(d) {
            // SAFETY: the slot holds a reference to a live dict.
            return Dict::downcast(unsafe { Obj::from_borrowed(d) }).expect("a dict");
        }
        let d = Dict::new();
        // Making the dict may have run a collection, and with it code of the caller's (a
        // finalizer, a callback) that gave this instance its dict first: that one stays.
        if let Some(first) = NonNull::new(slot.get()) {
            // SAFETY: the slot holds a reference to a live dict.
            return Dict::downcast(unsafe { Obj::from_borrowed(first) }).expect("a dict");
        }
        slot.set(d.clone().into_obj().into_raw().as_ptr());
        d
    }

    /// `obj.name = value`.
    pub fn setattr(&self, name: &str, value: impl Into<Obj>) {
        self.dict()
            .set(Str::intern(name), value)
            .expect("a str key is hashable");
    }

    /// `obj.name`, or CPython's `AttributeError` text in the error.
    pub fn getattr(&self, name: &str) -> Result<Obj, Error> {
        self.dict()
            .get(&Str::intern(name).into_obj())?
            .ok_or_else(|| {
                Error::Attribute(format!(
                    "'{}' object has no attribute '{name}'",
                    self.type_name()
                ))
            })
    }

    /// `del obj.name`.
    pub fn delattr(&self, name: &str) -> Result<(), Error> {
        self.dict()
            .remove(&Str::intern(name).into_obj())
            .map(drop)
            .map_err(|_| {
                Error::Attribute(format!(
                    "'{}' object has no attribute '{name}'",
                    self.type_name()
                ))
            })
    }
}

impl core::ops::Deref for Instance {
    type Target = Obj;
    fn deref(&self) -> &Obj {
        &self.0
    }
}

impl From<Instance> for Obj {
    fn from(v: Instance) -> Obj {
        v.0
    }
}

impl core::fmt::Debug for Instance {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(&self.0, f)
    }
}

fn is_instance(obj: &Obj) -> bool {
    obj.type_of().is_class
}

/// The class's finalizer, once per instance (`tp_finalize` of a class with `__del__`).
unsafe fn instance_finalize(p: NonNull<Header>) -> bool {
    let done = finalized_slot(p);
    if done.get() != 0 {
        return false;
    }
    done.set(1);
    // SAFETY: a live instance; its type is the `ty` of a leaked `ClassObject`, its first field.
    let cls = unsafe { &*core::ptr::from_ref(p.as_ref().ty).cast::<ClassObject>() };
    if let Some(f) = &cls.finalizer {
        // SAFETY: the caller holds a reference to the live instance.
        let me = Instance(unsafe { Obj::from_borrowed(p) });
        runtime::run_user_code(
            &format_args!(
                "the finalizer of <{} object at {:#x}>",
                cls.ty.name,
                p.as_ptr().addr()
            ),
            || f(&me),
        );
    }
    true
}

unsafe fn instance_dealloc(p: NonNull<Header>) {
    // CPython's subtype_dealloc: the finalizer first (`PyObject_CallFinalizerFromDealloc`),
    // with the count at one for its duration, and the instance still tracked. If a reference
    // is left after it, the instance was resurrected and stays.
    // SAFETY: a live instance (its count just reached zero).
    let h = unsafe { p.as_ref() };
    if let Some(fin) = h.ty.finalize {
        h.refcnt.set(1);
        // SAFETY: the count of one is this function's reference.
        unsafe { fin(p) };
        let n = h.refcnt.get() - 1;
        h.refcnt.set(n);
        if n != 0 {
            return;
        }
    }
    // Then the weak references are cleared and their callbacks run.
    crate::weakref::run_callbacks(crate::weakref::clear_refs(p));
    gc::on_dealloc(p);
    let d = dict_slot(p).replace(ptr::null_mut());
    if let Some(d) = NonNull::new(d) {
        // SAFETY: the instance's reference to its dict (queued: deallocation is iterative).
        unsafe { decref(d) };
    }
    // SAFETY: the block starts at the managed-dict slots; it came from INSTANCE_LAYOUT.
    unsafe {
        let block = NonNull::new_unchecked(
            p.as_ptr()
                .cast::<u8>()
                .sub(GC_HEADER_SIZE + MANAGED_DICT_SIZE),
        );
        runtime::free_block(Kind::Instance, block, INSTANCE_LAYOUT);
    }
}

unsafe fn instance_sizeof(_: NonNull<Header>) -> usize {
    size_of::<InstanceObject>()
}

/// `object.__hash__`: from the address, as CPython's `_Py_HashPointer` (rotated by 4 bits).
unsafe fn instance_hash(p: NonNull<Header>) -> isize {
    let a = p.as_ptr().addr();
    let h = a.rotate_right(4) as isize;
    if h == -1 { -2 } else { h }
}

/// `object.__eq__`: identity (the caller has already compared the addresses).
unsafe fn instance_eq(a: NonNull<Header>, b: NonNull<Header>) -> Result<bool, Error> {
    Ok(a == b)
}

unsafe fn instance_repr(p: NonNull<Header>, out: &mut String) -> Result<(), Error> {
    // SAFETY: a live instance.
    let name = unsafe { p.as_ref() }.ty.name;
    out.push_str(&format!("<{name} object at {:#x}>", p.as_ptr().addr()));
    Ok(())
}

unsafe fn instance_traverse(p: NonNull<Header>, visit: &mut dyn FnMut(NonNull<Header>)) {
    if let Some(d) = NonNull::new(dict_slot(p).get()) {
        visit(d);
    }
}

unsafe fn instance_clear(p: NonNull<Header>) {
    let d = dict_slot(p).replace(ptr::null_mut());
    if let Some(d) = NonNull::new(d) {
        // SAFETY: the instance's reference to its dict.
        unsafe { decref(d) };
    }
}
