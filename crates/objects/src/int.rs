//! `int`: arbitrary size, 30-bit digits inline, the small ints −5..=256 shared.
//!
//! ```text
//!   [ ob_refcnt | ob_type ][ ob_size ][ digit 0 | digit 1 | ... ]   CPython: PyLongObject
//!     16 B                   8 B        4 B each, at least one
//! ```
//! `ob_size` is the number of digits with the value's sign (0 for zero); `getsizeof` is
//! `24 + 4 * max(1, |ob_size|)`, CPython 3.11's `int.__sizeof__`. One-digit ints (|v| < 2^30)
//! take 28 bytes and come from the int free list (cap 100); larger ones from `PyMalloc`.

use core::alloc::Layout;
use core::cmp::Ordering;
use core::ptr::NonNull;

use crate::digits;
use crate::object::{Header, Obj, Type};
use crate::runtime::{self, INT_LAYOUT, Kind};
use crate::{Error, typed_handle};

#[repr(C)]
struct IntObject {
    header: Header,
    size: isize, // CPython: ob_size (digits, signed)
    digits: [u32; 0],
}

const DIGITS_OFFSET: usize = core::mem::offset_of!(IntObject, digits);

/// The type object. CPython: `PyLong_Type`.
pub static INT_TYPE: Type = Type {
    name: "int",
    gc: false,
    pre_header: 0,
    weaklist_offset: 0,
    dealloc: int_dealloc,
    sizeof: int_sizeof,
    hash: Some(int_hash),
    eq: int_eq,
    repr: int_repr,
    traverse: None,
    clear: None,
    finalize: None,
    is_class: false,
};

/// An `int` object.
#[repr(transparent)]
#[derive(Clone)]
pub struct Int(Obj);

typed_handle!(Int, INT_TYPE);

fn layout_for(ndigits: usize) -> Layout {
    let size = DIGITS_OFFSET + 4 * ndigits.max(1);
    if size == INT_LAYOUT.size() {
        INT_LAYOUT
    } else {
        Layout::from_size_align(size, 8).unwrap_or(INT_LAYOUT)
    }
}

/// # Safety
/// `p` is a live int.
unsafe fn parts<'a>(p: NonNull<Header>) -> (bool, &'a [u32]) {
    let o = p.as_ptr().cast::<IntObject>();
    // SAFETY: a live int has |size| digits after its header.
    unsafe {
        let size = (*o).size;
        let d = core::slice::from_raw_parts(
            o.cast::<u8>().add(DIGITS_OFFSET).cast::<u32>(),
            size.unsigned_abs(),
        );
        (size < 0, d)
    }
}

/// A new int object (not cached) holding `(neg, mag)`; one reference.
fn alloc_int(neg: bool, mag: &[u32]) -> NonNull<Header> {
    let layout = layout_for(mag.len());
    let block = runtime::alloc_block(Kind::Int, layout);
    let o = block.as_ptr().cast::<IntObject>();
    // SAFETY: a fresh block of `layout`: room for the header, size and max(1, n) digits.
    unsafe {
        o.write(IntObject {
            header: Header {
                refcnt: core::cell::Cell::new(1),
                ty: &INT_TYPE,
            },
            size: if neg {
                -(mag.len() as isize)
            } else {
                mag.len() as isize
            },
            digits: [],
        });
        let d = block.as_ptr().add(DIGITS_OFFSET).cast::<u32>();
        core::ptr::copy_nonoverlapping(mag.as_ptr(), d, mag.len());
        if mag.is_empty() {
            d.write(0);
        }
    }
    block.cast()
}

unsafe fn int_dealloc(p: NonNull<Header>) {
    // SAFETY: a live int whose count reached zero.
    let n = unsafe { parts(p) }.1.len();
    // SAFETY: allocated by `alloc_int` with this layout.
    unsafe { runtime::free_block(Kind::Int, p.cast(), layout_for(n)) };
}

unsafe fn int_sizeof(p: NonNull<Header>) -> usize {
    // SAFETY: a live int.
    DIGITS_OFFSET + 4 * unsafe { parts(p) }.1.len().max(1)
}

/// CPython's `long_hash`: the value modulo the Mersenne prime 2^61 - 1, with its sign; -1
/// becomes -2. So `hash(n)` here equals `hash(n)` in CPython for every int.
unsafe fn int_hash(p: NonNull<Header>) -> isize {
    const BITS: u32 = 61; // CPython: _PyHASH_BITS
    const MODULUS: u64 = (1 << BITS) - 1; // CPython: _PyHASH_MODULUS
    // SAFETY: a live int.
    let (neg, d) = unsafe { parts(p) };
    let mut x: u64 = 0;
    for &digit in d.iter().rev() {
        x = ((x << digits::SHIFT) & MODULUS) | (x >> (BITS - digits::SHIFT));
        x += u64::from(digit);
        if x >= MODULUS {
            x -= MODULUS;
        }
    }
    let h = if neg { -(x as i64) } else { x as i64 };
    (if h == -1 { -2 } else { h }) as isize
}

unsafe fn int_eq(a: NonNull<Header>, b: NonNull<Header>) -> Result<bool, Error> {
    // SAFETY: both live ints.
    Ok(unsafe { parts(a) == parts(b) })
}

unsafe fn int_repr(p: NonNull<Header>, out: &mut String) -> Result<(), Error> {
    // SAFETY: a live int.
    let (neg, d) = unsafe { parts(p) };
    if neg {
        out.push('-');
    }
    out.push_str(&digits::to_decimal(d));
    Ok(())
}

impl Int {
    /// The int `(neg, mag)`: the shared object for −5..=256, else a new one.
    fn from_parts(neg: bool, mag: &[u32]) -> Int {
        if mag.len() <= 1 {
            let v = mag.first().map_or(0, |&d| i64::from(d));
            let v = if neg { -v } else { v };
            if let Some(p) = runtime::small_int(v, || alloc_int(neg, mag)) {
                // SAFETY: the cache's object is live; this is a new reference.
                return Int(unsafe { Obj::from_borrowed(p) });
            }
        }
        // SAFETY: a new object with its one reference.
        Int(unsafe { Obj::from_owned(alloc_int(neg, mag)) })
    }

    /// `int(v)`.
    pub fn new(v: i64) -> Int {
        Self::from_i128(i128::from(v))
    }

    /// `int(v)`.
    pub fn from_i128(v: i128) -> Int {
        let (neg, mag) = digits::from_i128(v);
        Self::from_parts(neg, &mag)
    }

    /// `int(s)` for a decimal literal with an optional sign, surrounding whitespace and `_`
    /// between digits, as Python allows; CPython's `ValueError` otherwise. Digits are ASCII
    /// only: Python also takes other Unicode decimal digits (`int("١٢")` is 12), which give
    /// the `ValueError` here.
    pub fn parse(s: &str) -> Result<Int, Error> {
        let bad = || Error::Value(format!("invalid literal for int() with base 10: '{s}'"));
        let t = s.trim();
        let (neg, body) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        if body.starts_with('_') || body.ends_with('_') || body.contains("__") {
            return Err(bad());
        }
        let digits_only: String = body.chars().filter(|&c| c != '_').collect();
        let mag = digits::parse_decimal(&digits_only).ok_or_else(bad)?;
        Ok(Self::from_parts(neg && !mag.is_empty(), &mag))
    }

    fn parts(&self) -> (bool, &[u32]) {
        // SAFETY: the handle keeps a live int.
        unsafe { parts(self.0.ptr()) }
    }

    /// The value, if it fits an `i128`.
    pub fn to_i128(&self) -> Option<i128> {
        let (neg, d) = self.parts();
        digits::to_i128(neg, d)
    }

    /// `a + b`.
    pub fn add(&self, other: &Int) -> Int {
        let ((an, a), (bn, b)) = (self.parts(), other.parts());
        let (n, m) = digits::signed_add(an, a, bn, b);
        Self::from_parts(n, &m)
    }

    /// `a - b`.
    pub fn sub(&self, other: &Int) -> Int {
        let ((an, a), (bn, b)) = (self.parts(), other.parts());
        let (n, m) = digits::signed_sub(an, a, bn, b);
        Self::from_parts(n, &m)
    }

    /// `a * b`.
    pub fn mul(&self, other: &Int) -> Int {
        let ((an, a), (bn, b)) = (self.parts(), other.parts());
        let (n, m) = digits::signed_mul(an, a, bn, b);
        Self::from_parts(n, &m)
    }

    /// `-a`.
    pub fn neg(&self) -> Int {
        let (n, d) = self.parts();
        Self::from_parts(!n && !d.is_empty(), d)
    }

    /// Whether the values are equal.
    pub fn eq_value(&self, other: &Int) -> bool {
        self.parts() == other.parts()
    }

    /// Compares the values.
    pub fn compare(&self, other: &Int) -> Ordering {
        let ((an, a), (bn, b)) = (self.parts(), other.parts());
        digits::signed_cmp(an, a, bn, b)
    }

    /// `int.bit_length()`.
    pub fn bit_length(&self) -> u64 {
        digits::bit_length(self.parts().1)
    }

    /// Digits in use (`|ob_size|`).
    pub fn ndigits(&self) -> usize {
        self.parts().1.len()
    }
}

impl core::fmt::Display for Int {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (neg, d) = self.parts();
        if neg {
            f.write_str("-")?;
        }
        f.write_str(&digits::to_decimal(d))
    }
}
