//! After everything is freed, at most one wholly free arena stays mapped (CPython's rule,
//! bpo-37257; more only as the retention policy allows, which the first free-all here leaves
//! at level 0), without calling `trim()`: the empty pool a class keeps for the next allocation
//! never pins its arena. And when a few blocks survive in every arena, the pages of the free
//! pools around them go back to the OS. Checked with `stats()`, with layer −1's count of mapped bytes and with
//! the process's resident set, so this binary holds a single test and nothing else runs beside
//! it.

use std::alloc::{GlobalAlloc, Layout};

use pymalloc::{GeometryExt, Py310, PyMalloc};

const MIB: usize = 1 << 20;

/// xorshift64*: deterministic, so a failure replays.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}

fn rss() -> usize {
    pymalloc_vmm::resident_bytes().expect("/proc/self/statm")
}

/// Frees every block of `live` (in its order) and checks what stays mapped.
fn free_all_and_check(a: &PyMalloc, live: &mut Vec<(*mut u8, Layout)>, what: &str, base: usize) {
    let peak = a.stats();
    let rss_peak = rss();
    let mapped_peak = pymalloc_vmm::stats().mapped_bytes;
    for (p, l) in live.drain(..) {
        // SAFETY: each block is live and freed once with its layout.
        unsafe { a.dealloc(p, l) };
    }
    let s = a.stats();
    let (rss_after, mapped_after) = (rss(), pymalloc_vmm::stats().mapped_bytes);
    eprintln!(
        "{what}: peak {} arenas, {} MiB resident (baseline {} MiB); after the free-all {} arena(s), {} MiB",
        peak.arenas_current,
        rss_peak / MIB,
        base / MIB,
        s.arenas_current,
        rss_after / MIB
    );
    assert_eq!(s.blocks_in_use(), 0, "{what}");
    // CPython keeps one wholly free arena; the retention policy keeps 2^level - 1 more once
    // memory given back was soon wanted again (as in the second phase below, which follows
    // the first free-all at once).
    let may_stay = 1 << s.retention_level;
    assert!(
        s.arenas_current <= may_stay,
        "{what}: {} of {} arenas stay mapped with no block in use (level {})",
        s.arenas_current,
        peak.arenas_current,
        s.retention_level
    );
    assert!(
        mapped_peak - mapped_after >= (peak.arenas_current - may_stay) * Py310::ARENA_SIZE,
        "{what}: layer -1 still maps {mapped_after} bytes (peak {mapped_peak})"
    );
    // What is left resident above the starting point: at most the kept arenas, plus a
    // little for the allocator's tables and the kernel's own bookkeeping.
    assert!(
        rss_after.saturating_sub(base) <= may_stay * Py310::ARENA_SIZE + 2 * MIB,
        "{what}: {} KiB more resident than before (peak {} KiB more)",
        (rss_after - base) / 1024,
        (rss_peak - base) / 1024
    );
    a.check_invariants().unwrap();
}

#[test]
#[cfg_attr(miri, ignore = "reads /proc/self/statm and maps over 100 MiB")]
fn a_free_all_returns_every_arena_but_one_without_trim() {
    let a = PyMalloc::new();
    let mut live: Vec<(*mut u8, Layout)> = Vec::with_capacity(400_000);
    // Touch the vector's pages before the baseline, so they do not count as the allocator's.
    live.resize(400_000, (std::ptr::null_mut(), Layout::new::<u8>()));
    live.clear();
    let base = rss();

    // 1. 400 000 blocks of random sizes 1..=512 B, freed in random order.
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..400_000 {
        let l = Layout::from_size_align(1 + rng.below(512), 8).unwrap();
        // SAFETY: a valid, non-zero layout.
        let p = unsafe { a.alloc(l) };
        assert!(!p.is_null());
        // SAFETY: the block has at least one byte; touching it makes its page resident.
        unsafe { p.write(1) };
        live.push((p, l));
    }
    for i in (1..live.len()).rev() {
        live.swap(i, rng.below(i + 1));
    }
    free_all_and_check(&a, &mut live, "random sizes, random order", base);

    // 2. One arena's worth of pools for each of the 32 classes, then a free-all in order.
    for class in 0..Py310::NB_SMALL_SIZE_CLASSES {
        let l = Layout::from_size_align(Py310::class_size(class), 16).unwrap();
        for _ in 0..Py310::MAX_POOLS_IN_ARENA * Py310::blocks_per_pool(class) {
            // SAFETY: a valid, non-zero layout.
            let p = unsafe { a.alloc(l) };
            assert!(!p.is_null());
            // SAFETY: as above.
            unsafe { p.write(1) };
            live.push((p, l));
        }
    }
    assert!(a.stats().arenas_current >= Py310::NB_SMALL_SIZE_CLASSES);
    free_all_and_check(&a, &mut live, "one arena per class", base);

    // 3. A few blocks survive in every arena: no arena can go back to the OS, but the pages of
    //    its free pools can.
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    for _ in 0..400_000 {
        let l = Layout::from_size_align(16 + rng.below(241), 8).unwrap();
        // SAFETY: a valid, non-zero layout.
        let p = unsafe { a.alloc(l) };
        assert!(!p.is_null());
        // SAFETY: the block has at least 16 bytes; touching them makes its page resident.
        unsafe { p.write_bytes(1, 16) };
        live.push((p, l));
    }
    let peak = a.stats();
    let rss_peak = rss();
    let mut kept = Vec::new();
    for (i, (p, l)) in live.drain(..).enumerate() {
        if i % 4096 == 4095 {
            kept.push((p, l));
        } else {
            // SAFETY: each block is live and freed once with its layout.
            unsafe { a.dealloc(p, l) };
        }
    }
    let s = a.stats();
    let rss_after = rss();
    eprintln!(
        "one block in 4096 kept: {} arenas, {} MiB resident at peak; {} arenas, {} MiB after, \
         {} pools decommitted",
        peak.arenas_current,
        rss_peak / MIB,
        s.arenas_current,
        rss_after / MIB,
        s.pools_decommitted
    );
    assert!(s.pools_decommitted > 0);
    // Every pool but the kept blocks' is free; all but a batch per arena (a quarter of it)
    // has given its pages back except each pool's first (a quarter of a 16 KiB pool).
    let grown = rss_peak - base;
    assert!(
        rss_after - base < grown / 2,
        "{} KiB of the {} KiB the live set added stay resident",
        (rss_after - base) / 1024,
        grown / 1024
    );
    a.check_invariants().unwrap();
    live.append(&mut kept);
    free_all_and_check(&a, &mut live, "the kept blocks too", base);
}
