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
//! class `(n - 1) >> ALIGNMENT_SHIFT`. Every pool starts with a [`crate::pool::PoolHeader`]
//! padded to `POOL_OVERHEAD` bytes, and holds `(POOL_SIZE - POOL_OVERHEAD) / size` blocks.
//!
//! A block of class `i` sits at `pool + POOL_OVERHEAD + k * size`. Pools are `POOL_SIZE`-aligned
//! and `POOL_OVERHEAD` and `size` are multiples of `ALIGNMENT`, so every block is aligned to
//! `ALIGNMENT` and to nothing more in general: that is the largest alignment the classes give.

use crate::pool::PoolHeader;

/// Upper bound on the number of size classes any geometry may have (fixed-size tables).
pub const MAX_CLASSES: usize = 64;
/// Upper bound on pools per arena any geometry may have (fixed-size tables).
pub const MAX_POOLS_PER_ARENA: usize = 256;

/// A compile-time configuration of the small-object allocator.
///
/// Implementors set the four CPython knobs; everything else is derived. The derived values are
/// checked when a [`crate::PyMalloc`] using the geometry is instantiated
/// ([`Geometry::VALID`]), so an impossible geometry fails to compile.
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

    /// Block alignment and class spacing in bytes. CPython: `ALIGNMENT`.
    const ALIGNMENT: usize = 1 << Self::ALIGNMENT_SHIFT;
    /// Number of size classes. CPython: `NB_SMALL_SIZE_CLASSES`.
    const NB_SMALL_SIZE_CLASSES: usize = Self::SMALL_REQUEST_THRESHOLD >> Self::ALIGNMENT_SHIFT;
    /// Pool size in bytes. CPython: `POOL_SIZE`.
    const POOL_SIZE: usize = 1 << Self::POOL_BITS;
    /// Arena size in bytes. CPython: `ARENA_SIZE`.
    const ARENA_SIZE: usize = 1 << Self::ARENA_BITS;
    /// Pools per arena. Arenas are mapped `ARENA_SIZE`-aligned, so none is lost to alignment.
    /// CPython: `MAX_POOLS_IN_ARENA`.
    const MAX_POOLS_IN_ARENA: usize = Self::ARENA_SIZE / Self::POOL_SIZE;
    /// Bytes at the start of each pool taken by its header. CPython: `POOL_OVERHEAD`.
    const POOL_OVERHEAD: usize = round_up(size_of::<PoolHeader>(), Self::ALIGNMENT);

    /// Compile-time validation of the derived geometry; evaluated by `PyMalloc::with_backend`.
    const VALID: () = {
        assert!(
            Self::ALIGNMENT >= size_of::<usize>(),
            "a free block must hold a pointer"
        );
        assert!(Self::SMALL_REQUEST_THRESHOLD % Self::ALIGNMENT == 0);
        assert!(Self::NB_SMALL_SIZE_CLASSES >= 1 && Self::NB_SMALL_SIZE_CLASSES <= MAX_CLASSES);
        // Pool offsets are stored in 16 bits.
        assert!(Self::POOL_SIZE <= 1 << 15, "pool offsets must fit in u16");
        assert!(Self::POOL_SIZE >= 4096);
        assert!(Self::ARENA_BITS > Self::POOL_BITS);
        assert!(Self::MAX_POOLS_IN_ARENA <= MAX_POOLS_PER_ARENA);
        // A pool of the largest class must hold at least two blocks: freeing one block of a
        // full pool then never empties it (the free path relies on this, as CPython's does).
        assert!((Self::POOL_SIZE - Self::POOL_OVERHEAD) / Self::SMALL_REQUEST_THRESHOLD >= 2);
    };

    /// The size class of a request of `size` bytes (`1 <= size <= SMALL_REQUEST_THRESHOLD`).
    #[inline(always)]
    fn size_class(size: usize) -> usize {
        (size - 1) >> Self::ALIGNMENT_SHIFT
    }

    /// Block size of class `class`. CPython: `INDEX2SIZE`.
    #[inline(always)]
    fn class_size(class: usize) -> usize {
        (class + 1) << Self::ALIGNMENT_SHIFT
    }

    /// Blocks in one pool of class `class`. CPython: `NUMBLOCKS`.
    #[inline(always)]
    fn blocks_per_pool(class: usize) -> usize {
        (Self::POOL_SIZE - Self::POOL_OVERHEAD) / Self::class_size(class)
    }

    /// The class serving `size` bytes at `align`, or `None` if the request must fall through
    /// to layer +1 (too large, or aligned beyond what the classes give). Size 0 is served as 1.
    #[inline(always)]
    fn class_for(size: usize, align: usize) -> Option<usize> {
        if size <= Self::SMALL_REQUEST_THRESHOLD && align <= Self::ALIGNMENT {
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
