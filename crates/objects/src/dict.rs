//! `dict`: insertion-ordered, CPython 3.11's compact layout.
//!
//! ```text
//!   dict block: [ gc_next | gc_prev ][ ob_refcnt | ob_type ][ ma_used ][ ma_version ][ ma_keys ][ ma_values ]
//!                 16 B (collector)     16 B                   8 B        8 B           8 B        8 B (null)
//!   keys block: [ dk_refcnt ][ log2_size, log2_index_bytes, kind, _ ][ version ][ usable ][ nentries ]   32 B
//!               [ indices: 2^log2_size of 1, 2, 4 or 8 bytes ]   slot -> entry number, -1 empty, -2 deleted
//!               [ entries: usable_fraction(2^log2_size) of (hash, key, value) ]   24 B each, in insertion order
//! ```
//! An empty dict has no keys block (CPython shares `Py_EMPTY_KEYS`). The first insertion
//! makes a table of 8 slots (5 usable); when no usable entry is left, the table is rebuilt
//! with `calculate_log2_keysize(3 * used)` slots (`GROWTH_RATE`), dropping deleted entries.
//! Lookups probe `i = (5 * i + perturb + 1) & mask` with `perturb >>= 5`, CPython's
//! sequence. `getsizeof` is `16 + 48 + (keys: 32 + index bytes + 24 * usable_fraction)`,
//! `_PyDict_SizeOf` plus the GC header. Dict objects come from the dict free list (80), keys
//! blocks of 8 slots from the keys free list (80), larger ones from `PyMalloc`.
//!
//! Keys are any hashable object (int and str here); CPython uses 16-byte entries when every
//! key is a str, which this layout does not (so a str-keyed dict here is CPython's int-keyed
//! size).

use core::alloc::Layout;
use core::cell::Cell;
use core::ptr::{self, NonNull};

use crate::object::{GC_HEADER_SIZE, Header, Obj, Type, decref};
use crate::runtime::{self, DICT_LAYOUT, KEYS_LAYOUT, Kind};
use crate::{Error, gc, typed_handle};

#[repr(C)]
struct DictObject {
    header: Header,
    used: Cell<usize>,           // CPython: ma_used, live entries
    version: Cell<u64>,          // CPython: ma_version_tag, bumped on every change
    keys: Cell<*mut KeysObject>, // CPython: ma_keys; null: the empty table
    values: *mut u8,             // CPython: ma_values (split tables); always null here
}

#[repr(C)]
struct KeysObject {
    refcnt: usize,        // CPython: dk_refcnt; always 1 (no sharing)
    log2_size: u8,        // CPython: dk_log2_size
    log2_index_bytes: u8, // CPython: dk_log2_index_bytes
    kind: u8,             // CPython: dk_kind; 0 (general) here
    _pad: u8,
    version: u32,          // CPython: dk_version
    usable: Cell<isize>,   // CPython: dk_usable, entries that may still be added
    nentries: Cell<usize>, // CPython: dk_nentries, entries used (deleted ones included)
}

#[repr(C)]
struct Entry {
    hash: isize,
    key: Cell<*mut Header>,   // null: deleted
    value: Cell<*mut Header>, // null: deleted
}

const KEYS_HEADER: usize = size_of::<KeysObject>();
const DKIX_EMPTY: i64 = -1;
const DKIX_DUMMY: i64 = -2;
/// CPython: `PyDict_LOG_MINSIZE`.
const LOG_MINSIZE: u8 = 3;

/// CPython: `USABLE_FRACTION`.
const fn usable_fraction(n: usize) -> usize {
    (n << 1) / 3
}

/// CPython 3.11's `calculate_log2_keysize` (64-bit build): the table size for `minsize`.
fn calculate_log2_keysize(minsize: usize) -> u8 {
    let m = (minsize | 8) - 1;
    (usize::BITS - (m | 7).leading_zeros()) as u8
}

fn log2_index_bytes(log2_size: u8) -> u8 {
    log2_size
        + match log2_size {
            0..8 => 0,
            8..16 => 1,
            16..32 => 2,
            _ => 3,
        }
}

fn keys_layout(log2_size: u8) -> Layout {
    let size = KEYS_HEADER
        + (1usize << log2_index_bytes(log2_size))
        + usable_fraction(1 << log2_size) * size_of::<Entry>();
    if size == KEYS_LAYOUT.size() {
        KEYS_LAYOUT
    } else {
        Layout::from_size_align(size, 8).unwrap_or(KEYS_LAYOUT)
    }
}

/// The type object. CPython: `PyDict_Type`.
pub static DICT_TYPE: Type = Type {
    name: "dict",
    gc: true,
    pre_header: GC_HEADER_SIZE,
    weaklist_offset: 0,
    dealloc: dict_dealloc,
    sizeof: dict_sizeof,
    hash: None,
    eq: dict_eq,
    repr: dict_repr,
    traverse: Some(dict_traverse),
    clear: Some(dict_clear),
    finalize: None,
    is_class: false,
};

unsafe fn dict_traverse(p: NonNull<Header>, visit: &mut dyn FnMut(NonNull<Header>)) {
    // SAFETY: a live dict; the visitor does not change it.
    for (k, v) in live_entries(unsafe { obj(p) }) {
        visit(k);
        visit(v);
    }
}

unsafe fn dict_clear(p: NonNull<Header>) {
    // SAFETY: a live dict (the collector holds it).
    Dict::clear_raw(unsafe { obj(p) });
}

/// A `dict` object.
#[repr(transparent)]
#[derive(Clone)]
pub struct Dict(Obj);

typed_handle!(Dict, DICT_TYPE);

/// A keys table, viewed through its pointer.
struct Keys(NonNull<KeysObject>);

impl Keys {
    fn new(log2_size: u8) -> Keys {
        let layout = keys_layout(log2_size);
        let block = runtime::alloc_block(Kind::Keys, layout).cast::<KeysObject>();
        let size = 1usize << log2_size;
        // SAFETY: a fresh block of `layout`: the header, the indices (all set to empty) and
        // the entries (left uninitialised until used).
        unsafe {
            block.as_ptr().write(KeysObject {
                refcnt: 1,
                log2_size,
                log2_index_bytes: log2_index_bytes(log2_size),
                kind: 0,
                _pad: 0,
                version: 0,
                usable: Cell::new(usable_fraction(size) as isize),
                nentries: Cell::new(0),
            });
            let k = Keys(block);
            for i in 0..size {
                k.set_index(i, DKIX_EMPTY);
            }
            k
        }
    }

    fn h(&self) -> &KeysObject {
        // SAFETY: a live keys block owned by one dict, used by one thread; what changes is in
        // cells.
        unsafe { self.0.as_ref() }
    }

    fn size(&self) -> usize {
        1 << self.h().log2_size
    }

    fn index_width(&self) -> usize {
        1 << (self.h().log2_index_bytes - self.h().log2_size)
    }

    fn indices(&self) -> *mut u8 {
        // SAFETY: the indices follow the header.
        unsafe { self.0.as_ptr().cast::<u8>().add(KEYS_HEADER) }
    }

    fn index(&self, i: usize) -> i64 {
        let p = self.indices();
        // SAFETY: `i < size`; the index table holds `size` entries of `index_width` bytes.
        unsafe {
            match self.index_width() {
                1 => i64::from(p.cast::<i8>().add(i).read()),
                2 => i64::from(p.cast::<i16>().add(i).read_unaligned()),
                4 => i64::from(p.cast::<i32>().add(i).read_unaligned()),
                _ => p.cast::<i64>().add(i).read_unaligned(),
            }
        }
    }

    fn set_index(&self, i: usize, ix: i64) {
        let p = self.indices();
        // SAFETY: as in `index`; `ix` fits the width (entries < usable_fraction(size)).
        unsafe {
            match self.index_width() {
                1 => p.cast::<i8>().add(i).write(ix as i8),
                2 => p.cast::<i16>().add(i).write_unaligned(ix as i16),
                4 => p.cast::<i32>().add(i).write_unaligned(ix as i32),
                _ => p.cast::<i64>().add(i).write_unaligned(ix),
            }
        }
    }

    fn entries(&self) -> *mut Entry {
        // SAFETY: the entries follow the indices.
        unsafe {
            self.indices()
                .add(1 << self.h().log2_index_bytes)
                .cast::<Entry>()
        }
    }

    fn entry(&self, ix: usize) -> &Entry {
        // SAFETY: `ix < nentries`: an initialised entry; what changes is in cells.
        unsafe { &*self.entries().add(ix) }
    }

    /// CPython's lookup: the slot and entry number of `key`, or the first empty slot.
    fn lookup(&self, hash: isize, key: &Obj) -> (usize, Option<usize>) {
        let mask = self.size() - 1;
        let mut perturb = hash as usize;
        let mut i = (hash as usize) & mask;
        loop {
            let ix = self.index(i);
            if ix == DKIX_EMPTY {
                return (i, None);
            }
            if ix >= 0 {
                let e = self.entry(ix as usize);
                if e.key.get() == key.ptr().as_ptr() {
                    return (i, Some(ix as usize));
                }
                if e.hash == hash {
                    // SAFETY: a live entry's key is a live object.
                    let k = unsafe { Obj::from_borrowed(NonNull::new_unchecked(e.key.get())) };
                    // Keys are ints and strs, whose comparison cannot fail.
                    if k.equals(key).unwrap_or(false) {
                        return (i, Some(ix as usize));
                    }
                }
            }
            perturb >>= 5;
            i = (i.wrapping_mul(5).wrapping_add(perturb).wrapping_add(1)) & mask;
        }
    }

    /// The first slot whose index is empty or deleted for `hash`. CPython: `find_empty_slot`.
    fn find_empty_slot(&self, hash: isize) -> usize {
        let mask = self.size() - 1;
        let mut perturb = hash as usize;
        let mut i = (hash as usize) & mask;
        while self.index(i) >= 0 {
            perturb >>= 5;
            i = (i.wrapping_mul(5).wrapping_add(perturb).wrapping_add(1)) & mask;
        }
        i
    }

    fn bytes(&self) -> usize {
        keys_layout(self.h().log2_size).size()
    }

    /// # Safety
    /// The keys block is no longer used; its entries' references have been dealt with.
    unsafe fn free(self) {
        let layout = keys_layout(self.h().log2_size);
        // SAFETY: allocated by `Keys::new` with this layout.
        unsafe { runtime::free_block(Kind::Keys, self.0.cast(), layout) };
    }
}

/// # Safety
/// `p` is a live dict.
unsafe fn obj<'a>(p: NonNull<Header>) -> &'a DictObject {
    // SAFETY: guaranteed by the caller.
    unsafe { &*p.as_ptr().cast::<DictObject>() }
}

fn keys_of(d: &DictObject) -> Option<Keys> {
    NonNull::new(d.keys.get()).map(Keys)
}

/// The live entries' (key, value) pointers, in insertion order.
fn live_entries(d: &DictObject) -> Vec<(NonNull<Header>, NonNull<Header>)> {
    let Some(k) = keys_of(d) else {
        return Vec::new();
    };
    (0..k.h().nentries.get())
        .filter_map(|ix| {
            let e = k.entry(ix);
            Some((NonNull::new(e.key.get())?, NonNull::new(e.value.get())?))
        })
        .collect()
}

unsafe fn dict_dealloc(p: NonNull<Header>) {
    gc::on_dealloc(p);
    // SAFETY: a live dict whose count reached zero.
    let d = unsafe { obj(p) };
    for (k, v) in live_entries(d) {
        // SAFETY: the dict owned one reference to each key and value (queued: iterative).
        unsafe {
            decref(k);
            decref(v);
        }
    }
    if let Some(k) = keys_of(d) {
        // SAFETY: the dict is gone; its references were released above.
        unsafe { k.free() };
    }
    // SAFETY: the block starts GC_HEADER_SIZE before the object; it came from DICT_LAYOUT.
    unsafe {
        let block = NonNull::new_unchecked(p.as_ptr().cast::<u8>().sub(GC_HEADER_SIZE));
        runtime::free_block(Kind::Dict, block, DICT_LAYOUT);
    }
}

unsafe fn dict_sizeof(p: NonNull<Header>) -> usize {
    // SAFETY: a live dict.
    let d = unsafe { obj(p) };
    size_of::<DictObject>() + keys_of(d).map_or(0, |k| k.bytes())
}

unsafe fn dict_eq(a: NonNull<Header>, b: NonNull<Header>) -> Result<bool, Error> {
    // SAFETY: both live dicts.
    let (x, y) = unsafe { (Dict::snapshot(obj(a)), Dict::snapshot(obj(b))) };
    if x.len() != y.len() {
        return Ok(false);
    }
    // SAFETY: `b` is a live dict.
    let db = Dict(unsafe { Obj::from_borrowed(b) });
    for (k, v) in &x {
        match db.get(k)? {
            Some(w) if w.equals(v)? => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

unsafe fn dict_repr(p: NonNull<Header>, out: &mut String) -> Result<(), Error> {
    let printed = runtime::repr_guard(p, || {
        // SAFETY: a live dict.
        let items = unsafe { Dict::snapshot(obj(p)) };
        out.push('{');
        for (i, (k, v)) in items.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&k.repr()?);
            out.push_str(": ");
            out.push_str(&v.repr()?);
        }
        out.push('}');
        Ok(())
    })?;
    if !printed {
        out.push_str("{...}");
    }
    Ok(())
}

impl Dict {
    /// `{}`.
    pub fn new() -> Dict {
        gc::on_alloc();
        let block = runtime::alloc_block(Kind::Dict, DICT_LAYOUT);
        // SAFETY: a fresh block of DICT_LAYOUT: the GC pre-header, then the object.
        unsafe {
            block.as_ptr().cast::<[u64; 2]>().write([0, 0]);
            let o = block.as_ptr().add(GC_HEADER_SIZE).cast::<DictObject>();
            o.write(DictObject {
                header: Header {
                    refcnt: Cell::new(1),
                    ty: &DICT_TYPE,
                },
                used: Cell::new(0),
                version: Cell::new(0),
                keys: Cell::new(ptr::null_mut()),
                values: ptr::null_mut(),
            });
            Dict(Obj::from_owned(NonNull::new_unchecked(o.cast())))
        }
    }

    fn obj(&self) -> &DictObject {
        // SAFETY: the handle keeps a live dict.
        unsafe { obj(self.0.ptr()) }
    }

    /// New references to the live (key, value) pairs, in insertion order.
    fn snapshot(d: &DictObject) -> Vec<(Obj, Obj)> {
        live_entries(d)
            .into_iter()
            // SAFETY: live entries hold live objects.
            .map(|(k, v)| unsafe { (Obj::from_borrowed(k), Obj::from_borrowed(v)) })
            .collect()
    }

    /// `len(d)`.
    pub fn len(&self) -> usize {
        self.obj().used.get()
    }

    /// Whether the dict is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slots of the index table (0 for the empty table).
    pub fn table_size(&self) -> usize {
        keys_of(self.obj()).map_or(0, |k| k.size())
    }

    /// `d[key] = value`; CPython's `TypeError` for an unhashable key.
    pub fn set(&self, key: impl Into<Obj>, value: impl Into<Obj>) -> Result<(), Error> {
        let (key, value) = (key.into(), value.into());
        let hash = key.hash()?;
        // CPython's MAINTAIN_TRACKING: a dict is tracked once it holds a container.
        if value.type_of().gc || key.type_of().gc {
            gc::track(self.0.ptr());
        }
        let d = self.obj();
        d.version.set(d.version.get() + 1);
        let k = match keys_of(d) {
            Some(k) => k,
            None => {
                // CPython: insert_to_emptydict.
                let k = Keys::new(LOG_MINSIZE);
                d.keys.set(k.0.as_ptr());
                k
            }
        };
        if let (_, Some(ix)) = k.lookup(hash, &key) {
            let old = k.entry(ix).value.replace(value.into_raw().as_ptr());
            // SAFETY: the entry's reference to the old value; dropped after the entry is whole.
            unsafe { decref(NonNull::new_unchecked(old)) };
            return Ok(());
        }
        let k = if k.h().usable.get() <= 0 {
            self.resize(calculate_log2_keysize(3 * d.used.get())); // CPython: GROWTH_RATE
            keys_of(d).expect("a table after a resize")
        } else {
            k
        };
        let slot = k.find_empty_slot(hash);
        let ix = k.h().nentries.get();
        // SAFETY: `ix < usable_fraction(size)` (usable > 0): an entry within the block.
        unsafe {
            k.entries().add(ix).write(Entry {
                hash,
                key: Cell::new(key.into_raw().as_ptr()),
                value: Cell::new(value.into_raw().as_ptr()),
            })
        };
        k.set_index(slot, ix as i64);
        k.h().nentries.set(ix + 1);
        k.h().usable.set(k.h().usable.get() - 1);
        d.used.set(d.used.get() + 1);
        Ok(())
    }

    /// Rebuilds the table with `2^log2` slots, live entries only, in order. CPython:
    /// `dictresize`.
    fn resize(&self, log2: u8) {
        let d = self.obj();
        let new = Keys::new(log2.max(LOG_MINSIZE));
        let old = keys_of(d);
        let mut n = 0;
        if let Some(old) = &old {
            for ix in 0..old.h().nentries.get() {
                let e = old.entry(ix);
                if e.key.get().is_null() {
                    continue;
                }
                let slot = new.find_empty_slot(e.hash);
                // SAFETY: fewer than usable_fraction(new size) live entries (3 * used > used).
                unsafe {
                    new.entries().add(n).write(Entry {
                        hash: e.hash,
                        key: Cell::new(e.key.get()),
                        value: Cell::new(e.value.get()),
                    })
                };
                new.set_index(slot, n as i64);
                n += 1;
            }
        }
        new.h().nentries.set(n);
        new.h().usable.set(new.h().usable.get() - n as isize);
        d.keys.set(new.0.as_ptr());
        if let Some(old) = old {
            // SAFETY: its references moved to the new table.
            unsafe { old.free() };
        }
    }

    /// `d.get(key)`: the value, `None` if absent; `TypeError` for an unhashable key.
    pub fn get(&self, key: &Obj) -> Result<Option<Obj>, Error> {
        let hash = key.hash()?;
        let Some(k) = keys_of(self.obj()) else {
            return Ok(None);
        };
        Ok(k.lookup(hash, key).1.map(|ix| {
            // SAFETY: a live entry's value is a live object.
            unsafe { Obj::from_borrowed(NonNull::new_unchecked(k.entry(ix).value.get())) }
        }))
    }

    /// `key in d`.
    pub fn contains(&self, key: &Obj) -> Result<bool, Error> {
        Ok(self.get(key)?.is_some())
    }

    /// `del d[key]` returning the value; CPython's `KeyError` if absent.
    pub fn remove(&self, key: &Obj) -> Result<Obj, Error> {
        let hash = key.hash()?;
        let d = self.obj();
        let found = keys_of(d).and_then(|k| {
            let (slot, ix) = k.lookup(hash, key);
            ix.map(|ix| (k, slot, ix))
        });
        let Some((k, slot, ix)) = found else {
            return Err(Error::Key(key.repr()?));
        };
        k.set_index(slot, DKIX_DUMMY);
        let e = k.entry(ix);
        let (kp, vp) = (
            e.key.replace(ptr::null_mut()),
            e.value.replace(ptr::null_mut()),
        );
        d.used.set(d.used.get() - 1);
        d.version.set(d.version.get() + 1);
        // SAFETY: the entry's references: the key's is dropped, the value's returned.
        unsafe {
            decref(NonNull::new_unchecked(kp));
            Ok(Obj::from_owned(NonNull::new_unchecked(vp)))
        }
    }

    /// `d.clear()`: back to the empty table.
    pub fn clear(&self) {
        Self::clear_raw(self.obj());
    }

    /// Empties the dict, then drops its references.
    fn clear_raw(d: &DictObject) {
        let items = live_entries(d);
        let old = keys_of(d);
        d.keys.set(ptr::null_mut());
        d.used.set(0);
        d.version.set(d.version.get() + 1);
        if let Some(old) = old {
            // SAFETY: the references are released just below.
            unsafe { old.free() };
        }
        for (k, v) in items {
            // SAFETY: the dict's references.
            unsafe {
                decref(k);
                decref(v);
            }
        }
    }

    /// New references to the (key, value) pairs, in insertion order.
    pub fn items(&self) -> Vec<(Obj, Obj)> {
        Self::snapshot(self.obj())
    }

    /// New references to the keys, in insertion order.
    pub fn keys(&self) -> Vec<Obj> {
        self.items().into_iter().map(|(k, _)| k).collect()
    }
}

impl Default for Dict {
    fn default() -> Self {
        Self::new()
    }
}
