//! Integration tests of layer +2 through its public API, run for both geometry presets.

mod arenas;
mod backend;
mod model;
mod pooled;
mod realloc;
mod report;
mod sweep;

use core::alloc::{GlobalAlloc, Layout};
use pymalloc::{Geometry, GeometryExt, PyMalloc, RawMalloc};

/// The smallest geometry the allocator accepts: 4 KiB pools, arenas of 4 pools. Tests that
/// need many arenas use it to stay quick, under Miri above all.
#[derive(Clone, Copy, Debug)]
pub struct Tiny;

impl Geometry for Tiny {
    const NAME: &'static str = "tiny (tests)";
    const ALIGNMENT_SHIFT: u32 = 4;
    const SMALL_REQUEST_THRESHOLD: usize = 512;
    const POOL_BITS: u32 = 12;
    const ARENA_BITS: u32 = 14;
}

/// A fresh allocator of geometry `G` over malloc, on the heap so tests can hold several.
///
/// The calling thread gets a slot first. Tests run on threads of their own, in parallel, and a
/// new thread finds no free slot while another test's `check_invariants()` holds every free
/// slot claimed: it then allocates from the shared heap until its next slow path (by design),
/// and tests that count pools or expect the block just freed back would see that.
pub fn fresh<G: Geometry>() -> Box<PyMalloc<RawMalloc, G>> {
    while pymalloc::thread::register() == 0 {
        std::thread::yield_now();
    }
    Box::new(PyMalloc::with_backend(RawMalloc))
}

/// A byte pattern derived from an id, so that two blocks rarely hold the same bytes.
pub fn pattern(id: u64, i: usize) -> u8 {
    (id.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(i as u32 % 64) as u8)
        ^ (i as u8)
}

/// Fills `len` bytes at `p` with `id`'s pattern.
///
/// # Safety
/// `p` is valid for `len` bytes of writes.
pub unsafe fn fill(p: *mut u8, len: usize, id: u64) {
    for i in 0..len {
        // SAFETY: within the caller's block.
        unsafe { p.add(i).write(pattern(id, i)) };
    }
}

/// Checks `len` bytes at `p` hold `id`'s pattern; returns the first bad offset.
///
/// # Safety
/// `p` is valid for `len` bytes of reads.
pub unsafe fn verify(p: *const u8, len: usize, id: u64) -> Result<(), usize> {
    for i in 0..len {
        // SAFETY: within the caller's block.
        if unsafe { p.add(i).read() } != pattern(id, i) {
            return Err(i);
        }
    }
    Ok(())
}

/// A small deterministic PRNG (xorshift64*), so failures replay from their seed.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1)
    }
    /// The next 64 random bits.
    pub fn bits(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.bits() % n as u64) as usize
    }
}

/// Allocates through `GlobalAlloc` and checks the basic contract.
pub fn alloc_checked<A: GlobalAlloc>(a: &A, layout: Layout) -> *mut u8 {
    // SAFETY: every test layout has a non-zero size.
    let p = unsafe { a.alloc(layout) };
    assert!(!p.is_null(), "alloc({layout:?}) failed");
    assert_eq!(
        p as usize % layout.align(),
        0,
        "misaligned {layout:?}: {p:p}"
    );
    p
}
