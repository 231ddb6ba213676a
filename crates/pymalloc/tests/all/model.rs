//! Random alloc / realloc / free sequences checked against a model (the live set) and against
//! `stats()`, with `check_invariants()` along the way; freeing everything returns every arena.

use super::*;
use pymalloc::{Py37, Py310};

struct Live {
    ptr: *mut u8,
    layout: Layout,
    id: u64,
    /// The class of the pool holding the block: set when the block is placed, kept when
    /// `realloc` leaves it in place (it may then exceed the layout's class).
    class: Option<usize>,
}

fn random_layout<G: Geometry>(rng: &mut Rng) -> Layout {
    let t = G::SMALL_REQUEST_THRESHOLD;
    let size = match rng.below(20) {
        0 => t + 1 + rng.below(4 * t), // large
        1 => 1 + rng.below(64),        // tiny
        _ => 1 + rng.below(t),         // any class
    };
    let align = match rng.below(16) {
        0 => 1 << (5 + rng.below(8)), // over-aligned: falls through
        1..=4 => 1,
        _ => 1 << rng.below(G::ALIGNMENT_SHIFT as usize + 1),
    };
    Layout::from_size_align(size, align).unwrap()
}

/// The model's view of what `stats()` must say: blocks per class, and large blocks/bytes.
fn expected<G: Geometry>(live: &[Live], a: &PyMalloc<RawMalloc, G>) -> ([usize; 64], usize, usize) {
    let mut per_class = [0usize; 64];
    let (mut large, mut large_bytes) = (0, 0);
    for l in live {
        match l.class {
            Some(c) => {
                assert!(a.owns(l.ptr));
                per_class[c] += 1;
            }
            None => {
                assert!(!a.owns(l.ptr));
                large += 1;
                large_bytes += l.layout.size();
            }
        }
    }
    (per_class, large, large_bytes)
}

fn run<G: Geometry>(seed: u64, ops: usize) {
    let a = fresh::<G>();
    let mut rng = Rng::new(seed);
    let mut live: Vec<Live> = Vec::new();
    let mut next_id = 0u64;
    let mut peak_arenas = 0;
    for step in 0..ops {
        let roll = rng.below(100);
        // Phases: grow the live set, then shrink it, so arenas fill and empty.
        let growing = (step / 5000) % 2 == 0;
        if live.is_empty() || (growing && roll < 60) || (!growing && roll < 30) {
            let layout = random_layout::<G>(&mut rng);
            let zeroed = rng.below(4) == 0;
            // SAFETY: non-zero layout.
            let p = unsafe {
                if zeroed {
                    a.alloc_zeroed(layout)
                } else {
                    a.alloc(layout)
                }
            };
            assert!(!p.is_null());
            assert_eq!(p as usize % layout.align(), 0);
            if zeroed {
                // SAFETY: fresh block of `layout.size()` bytes.
                let b = unsafe { core::slice::from_raw_parts(p, layout.size()) };
                assert!(
                    b.iter().all(|&x| x == 0),
                    "seed {seed} step {step}: not zeroed"
                );
            }
            next_id += 1;
            // SAFETY: fresh block.
            unsafe { fill(p, layout.size(), next_id) };
            live.push(Live {
                ptr: p,
                layout,
                id: next_id,
                class: G::class_for(layout.size(), layout.align()),
            });
        } else if roll < 85 {
            let l = live.swap_remove(rng.below(live.len()));
            // SAFETY: live block with its pattern; freed once.
            unsafe {
                verify(l.ptr, l.layout.size(), l.id)
                    .unwrap_or_else(|o| panic!("seed {seed} step {step}: damaged at {o}"));
                a.dealloc(l.ptr, l.layout);
            }
        } else {
            let i = rng.below(live.len());
            let new = random_layout::<G>(&mut rng).size();
            let l = &mut live[i];
            // SAFETY: live block; on success the old pointer is given up.
            unsafe {
                verify(l.ptr, l.layout.size(), l.id).unwrap();
                let q = a.realloc(l.ptr, l.layout, new);
                assert!(!q.is_null());
                assert_eq!(q as usize % l.layout.align(), 0);
                verify(q, l.layout.size().min(new), l.id)
                    .unwrap_or_else(|o| panic!("seed {seed} step {step}: realloc lost {o}"));
                next_id += 1;
                fill(q, new, next_id);
                let new_class = G::class_for(new, l.layout.align());
                if q != l.ptr || l.class.is_none() || new_class.is_none() {
                    l.class = new_class;
                } else {
                    assert!(
                        new_class <= l.class,
                        "a block stays in place only if it fits"
                    );
                }
                l.ptr = q;
                l.layout = Layout::from_size_align(new, l.layout.align()).unwrap();
                l.id = next_id;
            }
        }
        if step % 997 == 0 || step == ops - 1 {
            a.check_invariants()
                .unwrap_or_else(|c| panic!("seed {seed} step {step}: {c}"));
            let s = a.stats();
            let (per_class, large, large_bytes) = expected::<G>(&live, &a);
            let got: Vec<usize> = s.classes().iter().map(|c| c.blocks_in_use).collect();
            assert_eq!(
                got,
                per_class[..G::NB_SMALL_SIZE_CLASSES],
                "seed {seed} step {step}"
            );
            assert_eq!((s.large_blocks, s.large_bytes), (large, large_bytes));
            // The six lines of the CPython report add up to the arenas mapped.
            let sum = s.bytes_in_allocated_blocks
                + s.bytes_in_available_blocks
                + s.unused_pools * s.pool_size
                + s.pool_header_bytes
                + s.quantization_bytes
                + s.arena_alignment_bytes;
            assert_eq!(sum, s.total_arena_bytes);
            assert_eq!(s.total_arena_bytes, s.arenas_current * G::ARENA_SIZE);
            peak_arenas = peak_arenas.max(s.arenas_current);
        }
    }
    for l in live.drain(..) {
        // SAFETY: live blocks, freed once.
        unsafe {
            verify(l.ptr, l.layout.size(), l.id).unwrap();
            a.dealloc(l.ptr, l.layout);
        }
    }
    a.check_invariants().unwrap();
    let s = a.stats();
    assert_eq!(
        (s.blocks_in_use(), s.large_blocks, s.large_bytes),
        (0, 0, 0)
    );
    // What may stay before trim(): one empty pool per class, and CPython's wholly free arena
    // plus at most 7 more kept by the retention policy.
    assert!(
        s.classes()
            .iter()
            .all(|c| c.pools <= 1 && c.free_blocks > 0 || c.pools == 0)
    );
    let kept_pools = s.classes().iter().filter(|c| c.pools == 1).count();
    assert!(
        s.arenas_current <= s.arenas_wholly_free.max(1) + kept_pools,
        "{} arenas stay",
        s.arenas_current
    );
    assert!(s.arenas_wholly_free <= 1 << s.retention_level);
    assert!(s.arenas_highwater >= peak_arenas);
    a.trim();
    let s = a.stats();
    assert_eq!(
        s.arenas_current, 0,
        "freeing everything and trimming leaves no arena mapped"
    );
    assert_eq!(s.total_arena_bytes, 0);
    assert_eq!(s.arenas_reclaimed, s.arenas_allocated_total);
    a.check_invariants().unwrap();
}

/// Seeds and operations per seed: fewer under Miri, which runs about a thousand times slower.
const SEEDS: u64 = if cfg!(miri) { 1 } else { 6 };
const OPS: usize = if cfg!(miri) { 3_000 } else { 40_000 };

#[test]
fn random_sequences_py310() {
    for seed in 1..=SEEDS {
        run::<Py310>(seed, OPS);
    }
}

#[test]
fn random_sequences_py37() {
    for seed in 100..100 + SEEDS {
        run::<Py37>(seed, OPS);
    }
}
