//! The geometry of the small-object allocator: alignment, size classes, pools and arenas.
//!
//! Two presets exist, chosen at compile time by a type parameter of [`crate::PyMalloc`]:
//!
//! | preset   | `ALIGNMENT` | `SMALL_REQUEST_THRESHOLD` | classes | `POOL_SIZE` | `ARENA_SIZE` |
//! |----------|-------------|---------------------------|---------|-------------|--------------|
//! | [`Py310`] (default) | 16 B | 512 B | 32 | 16 KiB | 1 MiB |
//! | [`Py37`] | 8 B | 256 B | 32 | 4 KiB | 256 KiB |
//!
//! [`Py310`] is CPython 3.10 and later on 64-bit builds (`USE_LARGE_ARENAS`, `USE_LARGE_POOLS`,
//! 16-byte `ALIGNMENT` since 3.8). [`Py37`] is CPython 3.7 and earlier, the figures most texts
//! about pymalloc quote ("256 bytes", "4K pools", "256K arenas"), including its 8-byte alignment:
//! under that preset any request aligned to more than 8 bytes falls through to layer +1.
//!
//! Size class `i` holds blocks of `(i + 1) * ALIGNMENT` bytes; a request of `n` bytes goes to
//! class `(n - 1) >> ALIGNMENT_SHIFT`. Every pool starts with a `PoolHeader`
//! padded to `POOL_OVERHEAD` bytes, and holds `(POOL_SIZE - POOL_OVERHEAD) / size` blocks.
//!
//! A block of class `i` sits at `pool + POOL_OVERHEAD + k * size`. Pools are `POOL_SIZE`-aligned
//! and `POOL_OVERHEAD` and `size` are multiples of `ALIGNMENT`, so every block is aligned to
//! `ALIGNMENT` and to nothing more in general: that is the largest alignment the classes give.
//!
//! # Who may say what
//! [`Geometry`] holds only the knobs; everything the allocator's `unsafe` code relies on is
//! derived from them in [`GeometryExt`], which has one blanket implementation and cannot be
//! implemented or overridden elsewhere, and the knobs are validated at compile time. So a safe
//! `impl Geometry` can choose a geometry but cannot lie about one.

use crate::pool::PoolHeader;

/// Upper bound on the number of size classes any geometry may have (fixed-size tables).
pub const MAX_CLASSES: usize = 64;
/// Upper bound on pools per arena any geometry may have (fixed-size tables).
pub const MAX_POOLS_PER_ARENA: usize = 256;

/// A compile-time configuration of the small-object allocator: CPython's five knobs.
///
/// An implementation sets these and nothing else; every derived value (pool overhead, class
/// sizes, the request-to-class rule) lives in [`GeometryExt`], which is implemented for every
/// `Geometry` by a blanket impl and so cannot be overridden. The knobs are checked when a
/// [`crate::PyMalloc`] using the geometry is instantiated ([`GeometryExt::VALID`]): a geometry
/// the allocator cannot serve fails to compile. That is why this trait is safe to implement:
/// nothing a safe implementation can say makes the allocator hand out a block that overlaps a
/// pool header or is smaller or less aligned than the request.
///
/// ```
/// use pymalloc::{Geometry, PyMalloc, RawMalloc};
///
/// #[derive(Clone, Copy)]
/// struct Small;
/// impl Geometry for Small {
///     const NAME: &'static str = "8 KiB pools";
///     const ALIGNMENT_SHIFT: u32 = 4;
///     const SMALL_REQUEST_THRESHOLD: usize = 256;
///     const POOL_BITS: u32 = 13;
///     const ARENA_BITS: u32 = 18;
/// }
/// static A: PyMalloc<RawMalloc, Small> = PyMalloc::with_backend(RawMalloc);
/// assert_eq!(A.stats().pool_size, 8192);
/// ```
///
/// A derived item cannot be overridden, so a pool header cannot be declared smaller than it is:
///
/// ```compile_fail,E0407
/// use pymalloc::Geometry;
///
/// #[derive(Clone, Copy)]
/// struct Evil;
/// impl Geometry for Evil {
///     const NAME: &'static str = "evil";
///     const ALIGNMENT_SHIFT: u32 = 4;
///     const SMALL_REQUEST_THRESHOLD: usize = 512;
///     const POOL_BITS: u32 = 14;
///     const ARENA_BITS: u32 = 20;
///     const POOL_OVERHEAD: usize = 0; // error[E0407]: not a member of trait `Geometry`
/// }
/// ```
///
/// nor can the request-to-class rule be replaced through [`GeometryExt`] (it conflicts with the
/// blanket impl):
///
/// ```compile_fail,E0119
/// use pymalloc::{Geometry, GeometryExt};
///
/// #[derive(Clone, Copy)]
/// struct Evil;
/// impl Geometry for Evil {
///     const NAME: &'static str = "evil";
///     const ALIGNMENT_SHIFT: u32 = 4;
///     const SMALL_REQUEST_THRESHOLD: usize = 512;
///     const POOL_BITS: u32 = 14;
///     const ARENA_BITS: u32 = 20;
/// }
/// impl GeometryExt for Evil {} // error[E0119]: conflicting implementations
/// ```
///
/// and knobs the allocator cannot serve stop the build (here: a 512-byte class in a 1 KiB pool):
///
/// ```compile_fail,E0080
/// use pymalloc::{Geometry, PyMalloc, RawMalloc};
///
/// #[derive(Clone, Copy)]
/// struct Cramped;
/// impl Geometry for Cramped {
///     const NAME: &'static str = "cramped";
///     const ALIGNMENT_SHIFT: u32 = 4;
///     const SMALL_REQUEST_THRESHOLD: usize = 512;
///     const POOL_BITS: u32 = 10;
///     const ARENA_BITS: u32 = 16;
/// }
/// static A: PyMalloc<RawMalloc, Cramped> = PyMalloc::with_backend(RawMalloc);
/// ```
pub trait Geometry: Copy + Send + Sync + 'static {
    /// A short name for reports, e.g. `"CPython 3.10+"`.
    const NAME: &'static str;
    /// log2 of the block alignment and size-class spacing. CPython: `ALIGNMENT_SHIFT`.
    const ALIGNMENT_SHIFT: u32;
    /// Largest request served from pools, in bytes. CPython: `SMALL_REQUEST_THRESHOLD`.
    const SMALL_REQUEST_THRESHOLD: usize;
    /// log2 of the pool size. CPython: `POOL_BITS`.
    const POOL_BITS: u32;
    /// log2 of the arena size. CPython: `ARENA_BITS`.
    const ARENA_BITS: u32;
}

/// Everything derived from a [`Geometry`]'s knobs: sizes, counts, the request-to-class rule and
/// the compile-time validation.
///
/// Implemented for every `Geometry` by a blanket impl, and for nothing else (`Geometry` is its
/// supertrait): the allocator's `unsafe` code relies on these items, so no implementation can
/// supply its own.
pub trait GeometryExt: Geometry {
    /// Block alignment and class spacing in bytes. CPython: `ALIGNMENT`.
    const ALIGNMENT: usize;
    /// Number of size classes. CPython: `NB_SMALL_SIZE_CLASSES`.
    const NB_SMALL_SIZE_CLASSES: usize;
    /// Pool size in bytes. CPython: `POOL_SIZE`.
    const POOL_SIZE: usize;
    /// Arena size in bytes. CPython: `ARENA_SIZE`.
    const ARENA_SIZE: usize;
    /// Pools per arena. Arenas are mapped `ARENA_SIZE`-aligned, so none is lost to alignment.
    /// CPython: `MAX_POOLS_IN_ARENA`.
    const MAX_POOLS_IN_ARENA: usize;
    /// Bytes at the start of each pool taken by its header. CPython: `POOL_OVERHEAD`.
    const POOL_OVERHEAD: usize;
    /// Compile-time validation of the knobs; evaluated by `PyMalloc::with_backend`, so an
    /// allocator over an impossible geometry does not build.
    const VALID: ();

    /// The size class of a request of `size` bytes (`1 <= size <= SMALL_REQUEST_THRESHOLD`).
    fn size_class(size: usize) -> usize;
    /// Block size of class `class`. CPython: `INDEX2SIZE`.
    fn class_size(class: usize) -> usize;
    /// Blocks in one pool of class `class`. CPython: `NUMBLOCKS`.
    fn blocks_per_pool(class: usize) -> usize;
    /// The class serving `size` bytes at `align`, or `None` if the request must fall through
    /// to layer +1 (too large, or aligned beyond what the classes give). Size 0 is served as 1.
    fn class_for(size: usize, align: usize) -> Option<usize>;
}

impl<G: Geometry> GeometryExt for G {
    const ALIGNMENT: usize = 1 << G::ALIGNMENT_SHIFT;
    const NB_SMALL_SIZE_CLASSES: usize = G::SMALL_REQUEST_THRESHOLD >> G::ALIGNMENT_SHIFT;
    const POOL_SIZE: usize = 1 << G::POOL_BITS;
    const ARENA_SIZE: usize = 1 << G::ARENA_BITS;
    const MAX_POOLS_IN_ARENA: usize = Self::ARENA_SIZE / Self::POOL_SIZE;
    const POOL_OVERHEAD: usize = round_up(size_of::<PoolHeader>(), Self::ALIGNMENT);

    const VALID: () = {
        // Shifts first: every derived constant below is a shift of these.
        assert!(G::ALIGNMENT_SHIFT < 16, "ALIGNMENT_SHIFT out of range");
        assert!(
            G::POOL_BITS >= 12 && G::POOL_BITS <= 15,
            "pools are 4 KiB to 32 KiB (offsets are stored in 16 bits)"
        );
        assert!(
            G::ARENA_BITS > G::POOL_BITS,
            "an arena holds more than one pool"
        );
        assert!(
            Self::MAX_POOLS_IN_ARENA <= MAX_POOLS_PER_ARENA,
            "too many pools per arena"
        );
        assert!(
            Self::ALIGNMENT >= size_of::<usize>(),
            "a free block must hold a pointer"
        );
        assert!(Self::ALIGNMENT >= align_of::<PoolHeader>());
        assert!(
            G::SMALL_REQUEST_THRESHOLD % Self::ALIGNMENT == 0,
            "the threshold is a whole number of classes"
        );
        assert!(
            Self::NB_SMALL_SIZE_CLASSES >= 1 && Self::NB_SMALL_SIZE_CLASSES <= MAX_CLASSES,
            "1 to 64 size classes"
        );
        // A pool of the largest class must hold at least two blocks: freeing one block of a
        // full pool then never empties it (the free path relies on this, as CPython's does).
        assert!(
            Self::POOL_OVERHEAD < Self::POOL_SIZE
                && (Self::POOL_SIZE - Self::POOL_OVERHEAD) / G::SMALL_REQUEST_THRESHOLD >= 2,
            "a pool of the largest class must hold two blocks"
        );
    };

    #[inline(always)]
    fn size_class(size: usize) -> usize {
        (size - 1) >> G::ALIGNMENT_SHIFT
    }

    #[inline(always)]
    fn class_size(class: usize) -> usize {
        (class + 1) << G::ALIGNMENT_SHIFT
    }

    #[inline(always)]
    fn blocks_per_pool(class: usize) -> usize {
        (Self::POOL_SIZE - Self::POOL_OVERHEAD) / Self::class_size(class)
    }

    #[inline(always)]
    fn class_for(size: usize, align: usize) -> Option<usize> {
        if size <= G::SMALL_REQUEST_THRESHOLD && align <= Self::ALIGNMENT {
            Some(Self::size_class(size.max(1)))
        } else {
            None
        }
    }
}

const fn round_up(n: usize, align: usize) -> usize {
    (n + align - 1) & !(align - 1)
}

/// CPython 3.10+ on 64-bit: 16-byte classes up to 512 B, 16 KiB pools, 1 MiB arenas.
#[derive(Clone, Copy, Debug, Default)]
pub struct Py310;

impl Geometry for Py310 {
    const NAME: &'static str = "CPython 3.10+";
    const ALIGNMENT_SHIFT: u32 = 4;
    const SMALL_REQUEST_THRESHOLD: usize = 512;
    const POOL_BITS: u32 = 14;
    const ARENA_BITS: u32 = 20;
}

/// CPython 3.7 and earlier on 64-bit: 8-byte classes up to 256 B, 4 KiB pools, 256 KiB arenas.
#[derive(Clone, Copy, Debug, Default)]
pub struct Py37;

impl Geometry for Py37 {
    const NAME: &'static str = "CPython <=3.7";
    const ALIGNMENT_SHIFT: u32 = 3;
    const SMALL_REQUEST_THRESHOLD: usize = 256;
    const POOL_BITS: u32 = 12;
    const ARENA_BITS: u32 = 18;
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn py310_matches_cpython() {
        assert_eq!(Py310::NB_SMALL_SIZE_CLASSES, 32);
        assert_eq!(Py310::POOL_OVERHEAD, 48);
        assert_eq!(Py310::MAX_POOLS_IN_ARENA, 64);
        // CPython NUMBLOCKS as printed by sys._debugmallocstats().
        assert_eq!(Py310::blocks_per_pool(0), 1021);
        assert_eq!(Py310::blocks_per_pool(1), 510);
        assert_eq!(Py310::blocks_per_pool(31), 31);
        assert_eq!(Py310::size_class(1), 0);
        assert_eq!(Py310::size_class(16), 0);
        assert_eq!(Py310::size_class(17), 1);
        assert_eq!(Py310::size_class(512), 31);
        assert_eq!(Py310::class_size(31), 512);
        assert_eq!(Py310::class_for(0, 1), Some(0));
        assert_eq!(Py310::class_for(512, 16), Some(31));
        assert_eq!(Py310::class_for(513, 1), None);
        assert_eq!(Py310::class_for(16, 32), None);
    }

    #[test]
    fn py37_matches_cpython() {
        assert_eq!(Py37::NB_SMALL_SIZE_CLASSES, 32);
        assert_eq!(Py37::POOL_OVERHEAD, 48);
        assert_eq!(Py37::MAX_POOLS_IN_ARENA, 64);
        assert_eq!(Py37::blocks_per_pool(0), (4096 - 48) / 8);
        assert_eq!(Py37::blocks_per_pool(31), 15);
        assert_eq!(Py37::class_for(256, 8), Some(31));
        assert_eq!(Py37::class_for(8, 16), None);
    }
}
