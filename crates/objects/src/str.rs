//! `str`: immutable, its length and cached hash in the header, its bytes inline (one block).
//!
//! ```text
//!   [ ob_refcnt | ob_type ][ length ][ hash ][ state ][ bytes ... | NUL ]
//!     16 B                   8 B       8 B     8 B      length + 1
//! ```
//! `getsizeof` is `40 + length + 1`. CPython 3.11's compact ASCII string is `48 + length + 1`
//! (its header also has a `wstr` pointer, gone in 3.12, where it is `40 + length + 1` as here).
//! Text is UTF-8; `length` counts bytes. Strings of at most 7 bytes come from the str free
//! list (one 48-byte block); longer ones from `PyMalloc`.
//!
//! The hash is computed on first use and kept (`-1`: not yet; CPython's convention). Interned
//! strings ([`Str::intern`]) are unique per content in the runtime; the intern table holds a
//! reference to each until the thread exits (CPython 3.11's interned strings are mortal;
//! 3.12 made literals immortal).

use core::alloc::Layout;
use core::cell::Cell;
use core::hash::Hasher;
use core::ptr::NonNull;
use std::collections::HashMap;

use crate::object::{Header, Obj, Type};
use crate::runtime::{self, Kind, STR_LAYOUT};
use crate::{Error, typed_handle};

#[repr(C)]
struct StrObject {
    header: Header,
    length: usize,     // bytes
    hash: Cell<isize>, // -1 until computed
    state: Cell<u64>,  // 1 if interned
    data: [u8; 0],
}

const DATA_OFFSET: usize = core::mem::offset_of!(StrObject, data);

/// The type object. CPython: `PyUnicode_Type`.
pub static STR_TYPE: Type = Type {
    name: "str",
    gc: false,
    pre_header: 0,
    weaklist_offset: 0,
    dealloc: str_dealloc,
    sizeof: str_sizeof,
    hash: Some(str_hash),
    eq: str_eq,
    repr: str_repr,
    traverse: None,
    clear: None,
    finalize: None,
    is_class: false,
};

/// A `str` object.
#[repr(transparent)]
#[derive(Clone)]
pub struct Str(Obj);

typed_handle!(Str, STR_TYPE);

fn layout_for(len: usize) -> Layout {
    let size = DATA_OFFSET + len + 1;
    if size <= STR_LAYOUT.size() {
        STR_LAYOUT
    } else {
        Layout::from_size_align(size, 8).unwrap_or(STR_LAYOUT)
    }
}

/// # Safety
/// `p` is a live str.
unsafe fn bytes<'a>(p: NonNull<Header>) -> &'a [u8] {
    let o = p.as_ptr().cast::<StrObject>();
    // SAFETY: a live str holds `length` bytes after its header.
    unsafe { core::slice::from_raw_parts(o.cast::<u8>().add(DATA_OFFSET), (*o).length) }
}

unsafe fn str_dealloc(p: NonNull<Header>) {
    // SAFETY: a live str whose count reached zero.
    let len = unsafe { bytes(p) }.len();
    // SAFETY: allocated by `Str::new` with this layout.
    unsafe { runtime::free_block(Kind::Str, p.cast(), layout_for(len)) };
}

unsafe fn str_sizeof(p: NonNull<Header>) -> usize {
    // SAFETY: a live str.
    DATA_OFFSET + unsafe { bytes(p) }.len() + 1
}

unsafe fn str_hash(p: NonNull<Header>) -> isize {
    let o = p.as_ptr().cast::<StrObject>();
    // SAFETY: a live str.
    let cached = unsafe { &(*o).hash };
    if cached.get() != -1 {
        return cached.get();
    }
    let mut h = std::hash::DefaultHasher::new();
    // SAFETY: a live str.
    h.write(unsafe { bytes(p) });
    let v = h.finish() as i64 as isize;
    let v = if v == -1 { -2 } else { v };
    cached.set(v);
    v
}

unsafe fn str_eq(a: NonNull<Header>, b: NonNull<Header>) -> Result<bool, Error> {
    // SAFETY: both live strs.
    Ok(unsafe { bytes(a) == bytes(b) })
}

/// Whether `repr` shows `c` as it is. CPython escapes what `str.isprintable()` rejects: the
/// categories Cc, Cf, Cs, Co, Cn, Zl, Zp and Zs other than the space. Without Unicode tables
/// this covers Cc, Zl, Zp and Zs exactly and the common format characters (Cf) by list;
/// private-use and unassigned characters are shown as they are.
fn printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(c as u32,
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E | 0x200B..=0x200F
        | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB
        | 0x110BD | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F)
}

unsafe fn str_repr(p: NonNull<Header>, out: &mut String) -> Result<(), Error> {
    use core::fmt::Write;
    // SAFETY: a live str (its bytes are UTF-8: made from a `&str`).
    let s = unsafe { core::str::from_utf8_unchecked(bytes(p)) };
    let q = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(q);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c if printable(c) => out.push(c),
            c if (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push(q);
    Ok(())
}

impl Str {
    /// A new string holding `s`.
    pub fn new(s: &str) -> Str {
        let layout = layout_for(s.len());
        let block = runtime::alloc_block(Kind::Str, layout);
        let o = block.as_ptr().cast::<StrObject>();
        // SAFETY: a fresh block with room for the header, the bytes and the NUL.
        unsafe {
            o.write(StrObject {
                header: Header {
                    refcnt: Cell::new(1),
                    ty: &STR_TYPE,
                },
                length: s.len(),
                hash: Cell::new(-1),
                state: Cell::new(0),
                data: [],
            });
            let d = block.as_ptr().add(DATA_OFFSET);
            core::ptr::copy_nonoverlapping(s.as_ptr(), d, s.len());
            d.add(s.len()).write(0);
            Str(Obj::from_owned(block.cast()))
        }
    }

    /// The interned string equal to `s`: the same object for the same content, for the life
    /// of the thread's runtime. CPython: `sys.intern`.
    pub fn intern(s: &str) -> Str {
        if let Some(p) = runtime::with(|rt| {
            let rt = rt?;
            let t = rt.interned.borrow();
            t.as_ref()?.get(s.as_bytes()).copied()
        }) {
            // SAFETY: the table's reference keeps the object alive.
            return Str(unsafe { Obj::from_borrowed(p) });
        }
        let new = Str::new(s);
        let kept = runtime::with(|rt| {
            let Some(rt) = rt else { return false };
            let mut t = rt.interned.borrow_mut();
            // The table's reference.
            let p = new.clone().0.into_raw();
            // SAFETY: a live str.
            unsafe { (*p.as_ptr().cast::<StrObject>()).state.set(1) };
            t.get_or_insert_with(HashMap::new)
                .insert(s.as_bytes().into(), p);
            true
        });
        let _ = kept;
        new
    }

    /// Whether this string is interned.
    pub fn is_interned(&self) -> bool {
        // SAFETY: the handle keeps a live str.
        unsafe { (*self.0.ptr().as_ptr().cast::<StrObject>()).state.get() == 1 }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // SAFETY: a live str made from a `&str`.
        unsafe { core::str::from_utf8_unchecked(bytes(self.0.ptr())) }
    }

    /// Length in bytes (equal to Python's `len()` for ASCII text).
    pub fn byte_len(&self) -> usize {
        self.as_str().len()
    }

    /// `len(s)`: the number of characters.
    pub fn len(&self) -> usize {
        self.as_str().chars().count()
    }

    /// Whether the string is empty.
    pub fn is_empty(&self) -> bool {
        self.byte_len() == 0
    }

    /// `a + b`.
    pub fn concat(&self, other: &Str) -> Str {
        let mut s = String::with_capacity(self.byte_len() + other.byte_len());
        s.push_str(self.as_str());
        s.push_str(other.as_str());
        Str::new(&s)
    }
}

impl core::fmt::Display for Str {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}
