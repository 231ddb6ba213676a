//! Statistics: a plain snapshot ([`Stats`]) copied out of the heap without allocating, and a
//! writer ([`fmt::Display`]) in the shape of CPython's `sys._debugmallocstats()`.
//!
//! Counts are gathered as CPython gathers them (`pymalloc_print_stats`): by walking every
//! arena's carved pools under the arenas lock, so the allocation fast path pays nothing for them.
//! A snapshot is a value: snapshots of several heaps can be added ([`Stats::merge`]) once the
//! allocator has more than one.

use core::fmt::{self, Write};

use crate::geometry::MAX_CLASSES;

/// Figures for one size class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Block size in bytes.
    pub size: usize,
    /// Pools currently holding at least one live block of this class (used or full).
    pub pools: usize,
    /// Live blocks.
    pub blocks_in_use: usize,
    /// Free blocks (including never-carved ones) in this class's pools.
    pub free_blocks: usize,
}

/// A snapshot of one allocator's state. See the field docs for units; every "bytes" figure is
/// exact at the moment the snapshot was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Name of the geometry preset, e.g. `"CPython 3.10+"`.
    pub geometry: &'static str,
    /// Block alignment and class spacing. CPython: `ALIGNMENT`.
    pub alignment: usize,
    /// Largest request served from pools. CPython: `SMALL_REQUEST_THRESHOLD`.
    pub threshold: usize,
    /// Number of size classes (valid entries of `classes`). CPython: `NB_SMALL_SIZE_CLASSES`.
    pub nclasses: usize,
    /// Pool size in bytes. CPython: `POOL_SIZE`.
    pub pool_size: usize,
    /// Arena size in bytes. CPython: `ARENA_SIZE`.
    pub arena_size: usize,
    /// Per-class figures; only `classes[..nclasses]` is meaningful.
    pub classes: [ClassStats; MAX_CLASSES],
    /// Arenas ever mapped. CPython: `ntimes_arena_allocated`.
    pub arenas_allocated_total: usize,
    /// Arenas returned to the OS.
    pub arenas_reclaimed: usize,
    /// Times the kernel refused to unmap a wholly free arena (possible at `vm.max_map_count`,
    /// when unmapping splits a mapping). Each such arena was kept, wholly free and usable, so
    /// it is still counted in `arenas_current`.
    pub arena_unmap_failures: usize,
    /// Free pools whose pages (all but the header's) were given back to the OS inside a live
    /// arena (a running total; see the heap's docs on decommitting).
    pub pools_decommitted: usize,
    /// Most arenas mapped at once. CPython: `narenas_highwater`.
    pub arenas_highwater: usize,
    /// Arenas mapped now. CPython: `narenas_currently_allocated`.
    pub arenas_current: usize,
    /// Mapped arenas whose pools are all free: CPython keeps one (bpo-37257); the retention
    /// policy may keep up to `2^retention_level - 1` more.
    pub arenas_wholly_free: usize,
    /// The retention policy's level, 0 to 3: raised when memory given back to the OS was
    /// wanted again soon after, lowered after a long calm, reset by `trim()`. At level `l`,
    /// `2^l - 1` wholly free arenas stay mapped besides CPython's one, and free pools are
    /// decommitted in batches `2^l` times larger (see the heap's docs, "Retention").
    pub retention_level: u32,
    /// Bytes in live blocks (block sizes, not requested sizes).
    pub bytes_in_allocated_blocks: usize,
    /// Bytes in free (and never-carved) blocks of pools in use.
    pub bytes_in_available_blocks: usize,
    /// Pools holding no live block (emptied or never carved).
    pub unused_pools: usize,
    /// Bytes taken by the headers of pools in use.
    pub pool_header_bytes: usize,
    /// Bytes at the end of pools in use too small for one more block.
    pub quantization_bytes: usize,
    /// Bytes lost to aligning arenas: always 0, arenas are mapped `ARENA_SIZE`-aligned
    /// (CPython loses one pool per arena here).
    pub arena_alignment_bytes: usize,
    /// Bytes of arenas mapped: `arenas_current * arena_size`, the sum of the six lines above.
    pub total_arena_bytes: usize,
    /// Live blocks that fell through to layer +1 (too large or over-aligned).
    pub large_blocks: usize,
    /// Bytes requested by those blocks.
    pub large_bytes: usize,
    /// Bytes of address space for bookkeeping: the arena table, the arena map and, in debug
    /// builds after a fallback, the record of fallback blocks.
    pub metadata_bytes: usize,
    /// Leaves of the arena map.
    pub arena_map_leaves: usize,
    /// Pools visited, in all, by heaps collecting other threads' frees into their pools before
    /// mapping an arena (bounded by `Heap::WALK_CREDIT` per arena mapped).
    pub remote_walk_visits: usize,
}

impl Stats {
    pub(crate) const fn empty() -> Self {
        Self {
            geometry: "",
            alignment: 0,
            threshold: 0,
            nclasses: 0,
            pool_size: 0,
            arena_size: 0,
            classes: [ClassStats {
                size: 0,
                pools: 0,
                blocks_in_use: 0,
                free_blocks: 0,
            }; MAX_CLASSES],
            arenas_allocated_total: 0,
            arenas_reclaimed: 0,
            arena_unmap_failures: 0,
            pools_decommitted: 0,
            arenas_highwater: 0,
            arenas_current: 0,
            arenas_wholly_free: 0,
            retention_level: 0,
            bytes_in_allocated_blocks: 0,
            bytes_in_available_blocks: 0,
            unused_pools: 0,
            pool_header_bytes: 0,
            quantization_bytes: 0,
            arena_alignment_bytes: 0,
            total_arena_bytes: 0,
            large_blocks: 0,
            large_bytes: 0,
            metadata_bytes: 0,
            arena_map_leaves: 0,
            remote_walk_visits: 0,
        }
    }

    /// The meaningful per-class entries.
    pub fn classes(&self) -> &[ClassStats] {
        &self.classes[..self.nclasses]
    }

    /// Live blocks in all classes.
    pub fn blocks_in_use(&self) -> usize {
        self.classes().iter().map(|c| c.blocks_in_use).sum()
    }

    /// Adds the figures of another heap with the same geometry. Counts and bytes add up
    /// exactly; `arenas_highwater` becomes the sum of the peaks, an upper bound on the joint
    /// peak.
    pub fn merge(&mut self, other: &Stats) {
        debug_assert_eq!(self.nclasses, other.nclasses);
        for (a, b) in self.classes.iter_mut().zip(other.classes.iter()) {
            a.pools += b.pools;
            a.blocks_in_use += b.blocks_in_use;
            a.free_blocks += b.free_blocks;
        }
        self.arenas_allocated_total += other.arenas_allocated_total;
        self.arenas_reclaimed += other.arenas_reclaimed;
        self.arena_unmap_failures += other.arena_unmap_failures;
        self.pools_decommitted += other.pools_decommitted;
        self.arenas_highwater += other.arenas_highwater;
        self.arenas_current += other.arenas_current;
        self.arenas_wholly_free += other.arenas_wholly_free;
        self.retention_level = self.retention_level.max(other.retention_level);
        self.bytes_in_allocated_blocks += other.bytes_in_allocated_blocks;
        self.bytes_in_available_blocks += other.bytes_in_available_blocks;
        self.unused_pools += other.unused_pools;
        self.pool_header_bytes += other.pool_header_bytes;
        self.quantization_bytes += other.quantization_bytes;
        self.arena_alignment_bytes += other.arena_alignment_bytes;
        self.total_arena_bytes += other.total_arena_bytes;
        self.large_blocks += other.large_blocks;
        self.large_bytes += other.large_bytes;
        self.metadata_bytes += other.metadata_bytes;
        self.arena_map_leaves += other.arena_map_leaves;
        self.remote_walk_visits += other.remote_walk_visits;
    }
}

/// Formats `n` with thousands separators (`2,097,152`), honouring width and alignment.
struct Commas(usize);

impl fmt::Display for Commas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut digits = [0u8; 20];
        let mut n = self.0;
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let mut out = [0u8; 27];
        let mut o = 0;
        for i in (0..len).rev() {
            out[o] = digits[i];
            o += 1;
            if i != 0 && i % 3 == 0 {
                out[o] = b',';
                o += 1;
            }
        }
        // SAFETY: only ASCII digits and commas were written.
        f.pad_integral(true, "", unsafe {
            core::str::from_utf8_unchecked(&out[..o])
        })
    }
}

/// One `label = value` line: the label padded to 35 columns, the value right-aligned in 21
/// (CPython: `printone`).
fn line(f: &mut fmt::Formatter<'_>, label: fmt::Arguments<'_>, value: usize) -> fmt::Result {
    let mut l = pymalloc_vmm::diag::StackWriter::<64>::new();
    let _ = l.write_fmt(label);
    writeln!(f, "{:<35}={:>21}", l.as_str(), Commas(value))
}

impl fmt::Display for Stats {
    /// The report of CPython's `sys._debugmallocstats()` for this allocator, followed by the
    /// lines CPython has no equivalent for (blocks passed to layer +1, bookkeeping).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Small block threshold = {}, in {} size classes.",
            self.threshold, self.nclasses
        )?;
        writeln!(f)?;
        writeln!(f, "class   size   num pools   blocks in use  avail blocks")?;
        writeln!(f, "-----   ----   ---------   -------------  ------------")?;
        for (i, c) in self.classes().iter().enumerate() {
            if c.pools == 0 {
                continue;
            }
            writeln!(
                f,
                "{:5} {:6} {:11} {:15} {:13}",
                i, c.size, c.pools, c.blocks_in_use, c.free_blocks
            )?;
        }
        writeln!(f)?;
        line(
            f,
            format_args!("# arenas allocated total"),
            self.arenas_allocated_total,
        )?;
        line(f, format_args!("# arenas reclaimed"), self.arenas_reclaimed)?;
        line(
            f,
            format_args!("# arenas highwater mark"),
            self.arenas_highwater,
        )?;
        line(
            f,
            format_args!("# arenas allocated current"),
            self.arenas_current,
        )?;
        line(
            f,
            format_args!(
                "{} arenas * {} bytes/arena",
                self.arenas_current, self.arena_size
            ),
            self.total_arena_bytes,
        )?;
        writeln!(f)?;
        line(
            f,
            format_args!("# bytes in allocated blocks"),
            self.bytes_in_allocated_blocks,
        )?;
        line(
            f,
            format_args!("# bytes in available blocks"),
            self.bytes_in_available_blocks,
        )?;
        line(
            f,
            format_args!(
                "{} unused pools * {} bytes",
                self.unused_pools, self.pool_size
            ),
            self.unused_pools * self.pool_size,
        )?;
        line(
            f,
            format_args!("# bytes lost to pool headers"),
            self.pool_header_bytes,
        )?;
        line(
            f,
            format_args!("# bytes lost to quantization"),
            self.quantization_bytes,
        )?;
        line(
            f,
            format_args!("# bytes lost to arena alignment"),
            self.arena_alignment_bytes,
        )?;
        line(f, format_args!("Total"), self.total_arena_bytes)?;
        writeln!(f)?;
        writeln!(f, "arena map counts")?;
        line(
            f,
            format_args!("# arena map leaf nodes"),
            self.arena_map_leaves,
        )?;
        line(
            f,
            format_args!("# bytes in arena table and map"),
            self.metadata_bytes,
        )?;
        line(
            f,
            format_args!("# arena unmaps refused by the OS"),
            self.arena_unmap_failures,
        )?;
        line(
            f,
            format_args!("# free pools decommitted"),
            self.pools_decommitted,
        )?;
        line(
            f,
            format_args!("# wholly free arenas mapped"),
            self.arenas_wholly_free,
        )?;
        line(
            f,
            format_args!("# retention level"),
            self.retention_level as usize,
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "blocks passed to layer +1 (> {} bytes or over-aligned)",
            self.threshold
        )?;
        line(f, format_args!("# blocks in use"), self.large_blocks)?;
        line(f, format_args!("# bytes requested"), self.large_bytes)
    }
}

/// What [`crate::PyMalloc::check_invariants`] found wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Corruption {
    /// Which invariant failed.
    pub what: &'static str,
    /// The pool, arena or block concerned.
    pub address: usize,
    /// The value the invariant requires.
    pub expected: usize,
    /// The value found.
    pub found: usize,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "heap corruption at {:#x}: {}", self.address, self.what)?;
        if self.expected != 0 || self.found != 0 {
            write!(f, " (expected {}, found {})", self.expected, self.found)?;
        }
        Ok(())
    }
}

impl std::error::Error for Corruption {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas() {
        let s = |n| format!("{:>12}", Commas(n));
        assert_eq!(s(0), "           0");
        assert_eq!(s(999), "         999");
        assert_eq!(s(1000), "       1,000");
        assert_eq!(s(2_097_152), "   2,097,152");
        assert_eq!(
            format!("{}", Commas(usize::MAX)),
            "18,446,744,073,709,551,615"
        );
    }
}
