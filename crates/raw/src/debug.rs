//! Debug hooks: CPython's `PYTHONMALLOC=debug` for any `GlobalAlloc`.
//!
//! [`Debug<A>`] wraps an allocator and surrounds every block with guard bytes, records its
//! size, the API that made it and a serial number, fills new memory with `CLEANBYTE` and freed
//! memory with `DEADBYTE`, and checks all of it on every free and realloc. A damaged or foreign
//! block is reported on standard error, written from a stack buffer without allocating, in the
//! shape of CPython's `_PyObject_DebugDumpAddress`, and the process aborts. [`Debug::check`]
//! returns the same finding as a value instead.
//!
//! ```text
//!           |<------------- lead = max(16, align) ------------->|
//!  base ... | 0xFD padding (align > 16) | size (8, BE) | id | 7 × 0xFD | data (n bytes) | 8 × 0xFD | serial (8, BE) |
//!                                                                     ^ p (returned)    ^ tail = p + n
//! ```
//!
//! The layout is CPython's with `SST = 8` and `PYMEM_DEBUG_SERIALNO` on (so a report can name
//! the call that made the block): 16 bytes before `p`, 16 after. CPython has no alignment
//! parameter; here a block aligned to more than 16 bytes gets a longer lead, padded with
//! `FORBIDDENBYTE`, so that `p` keeps its alignment.
//!
//! What it catches: writes just before the block (underrun) or just past it (overrun), a free
//! through the wrong API or of a pointer it never handed out (its header is not ours), a second
//! free of the same block (its header is `DEADBYTE`), and a free or realloc with a `Layout`
//! whose size differs from the block's. What it cannot catch: writes far outside the guards,
//! and a double free after the memory was reused or unmapped by the allocator underneath.

use core::alloc::{GlobalAlloc, Layout};
use core::fmt::{self, Write};
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use pymalloc_vmm::diag::{StackWriter, write_stderr};

/// Fills new memory (except from `alloc_zeroed`). CPython: `PYMEM_CLEANBYTE`.
pub const CLEANBYTE: u8 = 0xCD;
/// Fills freed memory. CPython: `PYMEM_DEADBYTE`.
pub const DEADBYTE: u8 = 0xDD;
/// Fills the guards around a block. CPython: `PYMEM_FORBIDDENBYTE`.
pub const FORBIDDENBYTE: u8 = 0xFD;
/// Bytes of one header or trailer field. CPython: `SST` (`sizeof(size_t)`).
const SST: usize = 8;
/// Bytes after the data: the trailing guard and the serial number.
const TRAILER: usize = 2 * SST;

/// API ids CPython uses: `'r'` raw (`PyMem_RawMalloc`), `'m'` mem (`PyMem_Malloc`), `'o'`
/// object (`PyObject_Malloc`).
pub mod api {
    /// `PyMem_RawMalloc` and friends.
    pub const RAW: u8 = b'r';
    /// `PyMem_Malloc` and friends.
    pub const MEM: u8 = b'm';
    /// `PyObject_Malloc` and friends.
    pub const OBJECT: u8 = b'o';
}

/// What a check found wrong with a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The API id byte is not this wrapper's: the block was made through another API, or the
    /// pointer was never handed out by this wrapper.
    BadId {
        /// The id this wrapper writes.
        expected: u8,
        /// The byte found.
        found: u8,
    },
    /// The header reads as freed memory: the block was already freed.
    DoubleFree,
    /// A guard byte before the block was overwritten.
    BadLeadingPad,
    /// A guard byte after the block was overwritten.
    BadTrailingPad,
    /// The size recorded at allocation differs from the `Layout` passed to free or realloc.
    WrongSize {
        /// Bytes recorded when the block was made.
        recorded: usize,
        /// Bytes in the layout given now.
        given: usize,
    },
}

impl Problem {
    /// CPython's words for it, where it has any.
    pub fn message(&self) -> &'static str {
        match self {
            Problem::BadId { .. } => "bad ID",
            Problem::DoubleFree => "double free (the block is already filled with DEADBYTE)",
            Problem::BadLeadingPad => "bad leading pad byte",
            Problem::BadTrailingPad => "bad trailing pad byte",
            Problem::WrongSize { .. } => "size passed to free differs from the size allocated",
        }
    }
}

/// A check's result for one block: where, what, and what the header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The address the caller holds (`p`).
    pub address: usize,
    /// The problem.
    pub problem: Problem,
    /// Bytes the header records (may be garbage when the header itself is damaged).
    pub recorded_size: usize,
    /// Serial number of the call that made the block, when the trailer could be read.
    pub serial: Option<u64>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at p={:#x}", self.problem.message(), self.address)?;
        match self.problem {
            Problem::BadId { expected, found } => write!(
                f,
                ": allocated using API '{}', verified using API '{}'",
                printable(found),
                printable(expected)
            ),
            Problem::WrongSize { recorded, given } => {
                write!(f, ": {recorded} bytes allocated, {given} bytes freed")
            }
            _ => Ok(()),
        }
    }
}

fn printable(b: u8) -> char {
    if b.is_ascii_graphic() { b as char } else { '?' }
}

/// CPython's debug hooks over any allocator: guard bytes, fill patterns, size, API id and
/// serial number around every block, checked on free and realloc.
///
/// ```
/// use std::alloc::{GlobalAlloc, Layout};
/// use pymalloc_raw::{RawMalloc, debug::{Debug, api, CLEANBYTE}};
///
/// static A: Debug<RawMalloc> = Debug::new(RawMalloc, api::RAW);
/// let l = Layout::from_size_align(10, 1).unwrap();
/// // SAFETY: a valid layout; freed with the same layout.
/// unsafe {
///     let p = A.alloc(l);
///     assert_eq!(*p, CLEANBYTE);
///     assert_eq!(A.check(p, l), Ok(()));
///     p.add(10).write(0x41); // one byte past the end
///     assert!(A.check(p, l).is_err());
///     p.add(10).write(0xFD); // repaired, so that the free below passes
///     A.dealloc(p, l);
/// }
/// ```
#[derive(Debug)]
pub struct Debug<A: GlobalAlloc> {
    inner: A,
    api: u8,
    serial: AtomicU64, // calls to alloc/realloc so far
}

impl<A: GlobalAlloc> Debug<A> {
    /// Wraps `inner`; blocks are stamped with API id `api` (see [`api`]).
    pub const fn new(inner: A, api: u8) -> Self {
        Self {
            inner,
            api,
            serial: AtomicU64::new(0),
        }
    }

    /// The wrapped allocator.
    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// Calls to alloc and realloc so far (the last serial number handed out). CPython:
    /// `serialno`.
    pub fn serial(&self) -> u64 {
        self.serial.load(Ordering::Relaxed)
    }

    /// Bytes between the start of the inner block and `p`.
    #[inline]
    fn lead(align: usize) -> usize {
        align.max(2 * SST)
    }

    /// The inner layout for a block of `layout`, or `None` on overflow.
    #[inline]
    fn inner_layout(layout: Layout) -> Option<Layout> {
        let size = Self::lead(layout.align())
            .checked_add(layout.size())?
            .checked_add(TRAILER)?;
        Layout::from_size_align(size, layout.align()).ok()
    }

    /// Writes header and trailer around `p` for `n` bytes and returns `p`.
    ///
    /// # Safety
    /// `base` is an inner block of `inner_layout(n, align)`.
    unsafe fn stamp(&self, base: *mut u8, n: usize, align: usize) -> *mut u8 {
        let lead = Self::lead(align);
        let serial = self.serial.fetch_add(1, Ordering::Relaxed) + 1;
        // SAFETY: the inner block spans lead + n + TRAILER bytes from `base`.
        unsafe {
            let p = base.add(lead);
            base.write_bytes(FORBIDDENBYTE, lead - 2 * SST);
            ptr::copy_nonoverlapping((n as u64).to_be_bytes().as_ptr(), p.sub(2 * SST), SST);
            p.sub(SST).write(self.api);
            p.sub(SST - 1).write_bytes(FORBIDDENBYTE, SST - 1);
            let tail = p.add(n);
            tail.write_bytes(FORBIDDENBYTE, SST);
            ptr::copy_nonoverlapping(serial.to_be_bytes().as_ptr(), tail.add(SST), SST);
            p
        }
    }

    /// A new block for `layout` with its data filled with `fill`.
    fn alloc_filled(&self, layout: Layout, fill: u8) -> *mut u8 {
        let Some(inner) = Self::inner_layout(layout) else {
            return ptr::null_mut();
        };
        // SAFETY: a valid non-zero layout.
        let base = unsafe { self.inner.alloc(inner) };
        if base.is_null() {
            return base;
        }
        // SAFETY: `base` is a fresh inner block of `inner`, which has room for the data.
        unsafe {
            let p = self.stamp(base, layout.size(), layout.align());
            p.write_bytes(fill, layout.size());
            p
        }
    }

    /// Checks the block at `p`, which the caller believes was allocated here with `layout`,
    /// without freeing it or aborting.
    ///
    /// # Errors
    /// The first problem found, in CPython's order: API id (or double free), leading pad,
    /// trailing pad; then the size against `layout`.
    ///
    /// # Safety
    /// The 16 bytes before `p` and `min(8, layout.size())` bytes from `p` must be readable;
    /// if the header is ours and records `layout.size()`, so must the `layout.size() + 16`
    /// bytes from `p`. (True of any block this wrapper handed out and that the allocator
    /// underneath has not unmapped.)
    pub unsafe fn check(&self, p: *const u8, layout: Layout) -> Result<(), Finding> {
        // SAFETY: the header is readable per the contract.
        let (recorded, id, lead_ok) = unsafe {
            let mut size = [0u8; SST];
            ptr::copy_nonoverlapping(p.sub(2 * SST), size.as_mut_ptr(), SST);
            let lead = core::slice::from_raw_parts(p.sub(SST - 1), SST - 1);
            (
                u64::from_be_bytes(size) as usize,
                p.sub(SST).read(),
                lead.iter().all(|&b| b == FORBIDDENBYTE),
            )
        };
        let finding = |problem, serial| Finding {
            address: p as usize,
            problem,
            recorded_size: recorded,
            serial,
        };
        if id != self.api {
            // A freed block was filled with DEADBYTE; the allocator underneath may since have
            // written its free-list links over the header, but not over the data.
            let n = layout.size().min(SST);
            // SAFETY: the caller's layout claims `layout.size()` readable bytes at `p`.
            let data = unsafe { core::slice::from_raw_parts(p, n) };
            let dead = n > 0 && data.iter().all(|&b| b == DEADBYTE);
            let problem = if dead {
                Problem::DoubleFree
            } else {
                Problem::BadId {
                    expected: self.api,
                    found: id,
                }
            };
            return Err(finding(problem, None));
        }
        if !lead_ok {
            return Err(finding(Problem::BadLeadingPad, None));
        }
        // The recorded size may be damaged; only trust it as far as the layout agrees.
        if recorded != layout.size() {
            return Err(finding(
                Problem::WrongSize {
                    recorded,
                    given: layout.size(),
                },
                None,
            ));
        }
        // SAFETY: the header is intact and matches the layout, so the trailer is ours.
        let (tail_ok, serial) = unsafe {
            let tail = p.add(recorded);
            let guard = core::slice::from_raw_parts(tail, SST);
            let mut s = [0u8; SST];
            ptr::copy_nonoverlapping(tail.add(SST), s.as_mut_ptr(), SST);
            (
                guard.iter().all(|&b| b == FORBIDDENBYTE),
                u64::from_be_bytes(s),
            )
        };
        if !tail_ok {
            return Err(finding(Problem::BadTrailingPad, Some(serial)));
        }
        Ok(())
    }

    /// Checks `p` and aborts with a report if anything is wrong.
    ///
    /// # Safety
    /// As for [`Debug::check`].
    unsafe fn check_or_die(&self, p: *const u8, layout: Layout, caller: &str) {
        // SAFETY: forwarded.
        if let Err(f) = unsafe { self.check(p, layout) } {
            // SAFETY: forwarded; the report reads only what `check` validated as readable.
            unsafe { self.report(&f, caller) };
        }
    }

    /// Writes the report for `f` to standard error and aborts.
    ///
    /// # Safety
    /// As for [`Debug::check`] on `f.address`.
    #[cold]
    #[inline(never)]
    unsafe fn report(&self, f: &Finding, caller: &str) -> ! {
        let p = f.address as *const u8;
        let mut w = StackWriter::<4096>::new();
        // SAFETY: the header bytes were readable for `check`.
        let id = unsafe { p.sub(SST).read() };
        let _ = writeln!(
            w,
            "Debug memory block at address p={p:p}: API '{}'",
            printable(id)
        );
        let _ = writeln!(w, "    {} bytes originally requested", f.recorded_size);
        // SAFETY: as above.
        let lead = unsafe { core::slice::from_raw_parts(p.sub(SST - 1), SST - 1) };
        if lead.iter().all(|&b| b == FORBIDDENBYTE) {
            let _ = writeln!(
                w,
                "    The {} pad bytes at p-{} are FORBIDDENBYTE, as expected.",
                SST - 1,
                SST - 1
            );
        } else {
            let _ = writeln!(
                w,
                "    The {} pad bytes at p-{} are not all FORBIDDENBYTE (0x{FORBIDDENBYTE:02x}):",
                SST - 1,
                SST - 1
            );
            for (i, &b) in lead.iter().enumerate() {
                let ouch = if b == FORBIDDENBYTE { "" } else { " *** OUCH" };
                let _ = writeln!(w, "        at p-{}: 0x{b:02x}{ouch}", SST - 1 - i);
            }
        }
        // The trailer and data can be read only when the size in the header is trusted.
        let trusted = matches!(f.problem, Problem::BadTrailingPad);
        if trusted {
            // SAFETY: `check` validated the header and layout, so data and trailer are ours.
            unsafe {
                let tail = p.add(f.recorded_size);
                let guard = core::slice::from_raw_parts(tail, SST);
                let _ = writeln!(
                    w,
                    "    The {SST} pad bytes at tail={tail:p} are not all FORBIDDENBYTE (0x{FORBIDDENBYTE:02x}):"
                );
                for (i, &b) in guard.iter().enumerate() {
                    let ouch = if b == FORBIDDENBYTE { "" } else { " *** OUCH" };
                    let _ = writeln!(w, "        at tail+{i}: 0x{b:02x}{ouch}");
                }
                if let Some(serial) = f.serial {
                    let _ = writeln!(
                        w,
                        "    The block was made by call #{serial} to debug malloc/realloc."
                    );
                }
                let data = core::slice::from_raw_parts(p, f.recorded_size);
                let _ = write!(w, "    Data at p:");
                dump(&mut w, data);
                let _ = writeln!(w);
            }
        }
        let _ = writeln!(w, "\nFatal error: {caller}: {}", f);
        w.flush_to_stderr();
        if w.truncated() {
            write_stderr(b"(report truncated)\n");
        }
        // SAFETY: abort has no preconditions and never returns.
        unsafe { libc::abort() }
    }
}

/// Hex bytes of `data`, eliding the middle of long blocks as CPython does.
fn dump<const N: usize>(w: &mut StackWriter<N>, data: &[u8]) {
    const SHOW: usize = 8;
    if data.len() <= 2 * SHOW {
        for b in data {
            let _ = write!(w, " {b:02x}");
        }
    } else {
        for b in &data[..SHOW] {
            let _ = write!(w, " {b:02x}");
        }
        let _ = write!(w, " ...");
        for b in &data[data.len() - SHOW..] {
            let _ = write!(w, " {b:02x}");
        }
    }
}

// SAFETY: the caller's block is `layout.size()` bytes at an address aligned to
// `layout.align()` inside an inner block of `inner_layout(layout)`, which is released exactly
// once, through the inner allocator, with that layout.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Debug<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.alloc_filled(layout, CLEANBYTE)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.alloc_filled(layout, 0)
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: the caller passes a block of ours (which is what we check).
        unsafe { self.check_or_die(p, layout, "Debug::dealloc") };
        let Some(inner) = Self::inner_layout(layout) else {
            return;
        };
        let lead = Self::lead(layout.align());
        // SAFETY: checked above: `p - lead` is the inner block of `inner`.
        unsafe {
            let base = p.sub(lead);
            base.write_bytes(DEADBYTE, inner.size());
            self.inner.dealloc(base, inner);
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller passes a block of ours (which is what we check).
        unsafe { self.check_or_die(p, layout, "Debug::realloc") };
        // SAFETY: `realloc`'s contract makes (new_size, align) a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // Always move, so that every stale pointer to the old block meets DEADBYTE.
        // SAFETY: a valid layout.
        let q = unsafe { self.alloc(new_layout) };
        if q.is_null() {
            return q;
        }
        // SAFETY: both blocks are live and distinct; the old one is freed once.
        unsafe {
            ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
            self.dealloc(p, layout);
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RawMalloc;

    fn d() -> Debug<RawMalloc> {
        Debug::new(RawMalloc, api::OBJECT)
    }

    #[test]
    fn layout_of_a_block_matches_cpython() {
        let a = d();
        let l = Layout::from_size_align(10, 1).unwrap();
        // SAFETY: valid layout; the 16 bytes before and 16 after `p` are the wrapper's.
        unsafe {
            let p = a.alloc(l);
            let before = core::slice::from_raw_parts(p.sub(16), 16);
            assert_eq!(&before[..8], &10u64.to_be_bytes());
            assert_eq!(before[8], b'o');
            assert!(before[9..].iter().all(|&b| b == FORBIDDENBYTE));
            assert!(
                core::slice::from_raw_parts(p, 10)
                    .iter()
                    .all(|&b| b == CLEANBYTE)
            );
            let after = core::slice::from_raw_parts(p.add(10), 16);
            assert!(after[..8].iter().all(|&b| b == FORBIDDENBYTE));
            assert_eq!(
                &after[8..],
                &1u64.to_be_bytes(),
                "serial number of the first call"
            );
            a.dealloc(p, l);
        }
    }

    #[test]
    fn every_alignment_is_kept() {
        let a = d();
        for shift in 0..=12 {
            let l = Layout::from_size_align(100, 1 << shift).unwrap();
            // SAFETY: valid layout; freed once.
            unsafe {
                let p = a.alloc_zeroed(l);
                assert_eq!(p as usize % l.align(), 0);
                assert!(core::slice::from_raw_parts(p, 100).iter().all(|&b| b == 0));
                assert_eq!(a.check(p, l), Ok(()));
                let q = a.realloc(p, l, 300);
                assert_eq!(q as usize % l.align(), 0);
                assert!(core::slice::from_raw_parts(q, 100).iter().all(|&b| b == 0));
                assert!(
                    core::slice::from_raw_parts(q.add(100), 200)
                        .iter()
                        .all(|&b| b == CLEANBYTE)
                );
                a.dealloc(q, Layout::from_size_align(300, 1 << shift).unwrap());
            }
        }
    }

    #[test]
    fn check_finds_each_kind_of_damage() {
        let a = d();
        let l = Layout::from_size_align(24, 8).unwrap();
        // SAFETY: each block is ours; damage stays within the guards, and each is repaired
        // (or leaked) so that nothing corrupt is freed.
        unsafe {
            let p = a.alloc(l);
            p.add(24).write(0x41);
            let f = a.check(p, l).unwrap_err();
            assert_eq!(f.problem, Problem::BadTrailingPad);
            assert_eq!((f.recorded_size, f.serial), (24, Some(1)));
            p.add(24).write(FORBIDDENBYTE);

            p.sub(1).write(0);
            assert_eq!(a.check(p, l).unwrap_err().problem, Problem::BadLeadingPad);
            p.sub(1).write(FORBIDDENBYTE);

            p.sub(8).write(b'm');
            assert_eq!(
                a.check(p, l).unwrap_err().problem,
                Problem::BadId {
                    expected: b'o',
                    found: b'm'
                }
            );
            p.sub(8).write(b'o');

            let wrong = Layout::from_size_align(32, 8).unwrap();
            assert_eq!(
                a.check(p, wrong).unwrap_err().problem,
                Problem::WrongSize {
                    recorded: 24,
                    given: 32
                }
            );
            assert_eq!(a.check(p, l), Ok(()));
            a.dealloc(p, l);

            // A block of another wrapper (API 'r') is not ours.
            let other = Debug::new(RawMalloc, api::RAW);
            let q = other.alloc(l);
            assert!(matches!(
                a.check(q, l).unwrap_err().problem,
                Problem::BadId { found: b'r', .. }
            ));
            other.dealloc(q, l);

            // A freed block reads as DEADBYTE (checked here on a block whose memory the test
            // still owns: a copy of a freed block's bytes).
            let mut fake = [DEADBYTE; 64];
            let fp = fake.as_mut_ptr().add(16);
            assert_eq!(a.check(fp, l).unwrap_err().problem, Problem::DoubleFree);
        }
    }

    #[test]
    fn findings_print_cpythons_words() {
        let f = Finding {
            address: 0x1000,
            problem: Problem::BadTrailingPad,
            recorded_size: 10,
            serial: Some(3),
        };
        assert_eq!(f.to_string(), "bad trailing pad byte at p=0x1000");
        let g = Finding {
            problem: Problem::BadId {
                expected: b'o',
                found: b'm',
            },
            ..f
        };
        assert_eq!(
            g.to_string(),
            "bad ID at p=0x1000: allocated using API 'm', verified using API 'o'"
        );
    }
}
