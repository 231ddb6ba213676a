//! The operation-sequence program shared by every fuzz target: the input bytes are read as a
//! sequence of alloc / alloc_zeroed / realloc / dealloc operations with arbitrary layouts, run
//! against one allocator. Every block holds a pattern derived from its id, checked before it is
//! freed or reallocated; alignment and zeroing are checked on every allocation.
#![deny(unsafe_op_in_unsafe_fn)]

use std::alloc::{GlobalAlloc, Layout};

use arbitrary::{Arbitrary, Unstructured};

/// One operation.
#[derive(Arbitrary, Debug)]
pub enum Op {
    /// Allocate `size_class`-derived bytes at alignment `1 << (align_shift % 13)`.
    Alloc { size: SizeHint, align_shift: u8, zeroed: bool },
    /// Free the live block at `index % live`.
    Dealloc { index: u16 },
    /// Resize the live block at `index % live`.
    Realloc { index: u16, size: SizeHint },
}

/// A size skewed towards the small classes, with some large ones.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum SizeHint {
    /// 0..=1023 bytes.
    Small(u16),
    /// 0..=65535 bytes.
    Medium(u16),
    /// up to 1 MiB.
    Large(u32),
}

impl SizeHint {
    fn bytes(self) -> usize {
        match self {
            SizeHint::Small(n) => (n % 1024) as usize,
            SizeHint::Medium(n) => n as usize,
            SizeHint::Large(n) => (n % (1 << 20)) as usize,
        }
        .max(1)
    }
}

/// Bytes the live set may hold: requests beyond it are skipped, so that no input can make a
/// run exhaust the fuzzer's memory limit.
pub const MAX_LIVE_BYTES: usize = 64 << 20;

/// A live block of the model.
pub struct Live {
    /// The block.
    pub ptr: *mut u8,
    /// Its current layout.
    pub layout: Layout,
    /// The id its pattern is derived from.
    pub id: u64,
}

fn pattern(id: u64, i: usize) -> u8 {
    (id as u8).wrapping_mul(31) ^ (i as u8).wrapping_add((id >> 8) as u8)
}

/// Fills the first and last 64 bytes (all of a small block): enough to catch overlap and
/// corruption without making large blocks slow to fuzz.
fn touched(len: usize) -> impl Iterator<Item = usize> {
    (0..len.min(64)).chain(len.saturating_sub(64).max(64)..len)
}

/// # Safety
/// `p` is valid for `len` bytes.
unsafe fn fill(p: *mut u8, len: usize, id: u64) {
    for i in touched(len) {
        // SAFETY: `i < len`.
        unsafe { p.add(i).write(pattern(id, i)) };
    }
}

/// # Safety
/// `p` is valid for `len` bytes, filled by `fill(p, len, id)` (or a prefix of it).
unsafe fn verify(p: *const u8, len: usize, id: u64, what: &str) {
    for i in touched(len) {
        // SAFETY: `i < len`.
        let b = unsafe { p.add(i).read() };
        assert_eq!(b, pattern(id, i), "{what}: block {p:p} (id {id}) damaged at byte {i} of {len}");
    }
}

/// Runs the operations in `data` against `a` and returns the blocks still live (the caller
/// compares them with the allocator's statistics, then frees them with [`free_all`]).
pub fn run<A: GlobalAlloc>(a: &A, data: &[u8]) -> Vec<Live> {
    let mut u = Unstructured::new(data);
    let mut live: Vec<Live> = Vec::new();
    let mut next_id = 0u64;
    let mut live_bytes = 0usize;
    // `arbitrary` keeps producing default values once the input runs out: stop there.
    while !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        match op {
            Op::Alloc { size, align_shift, zeroed } => {
                let layout = Layout::from_size_align(size.bytes(), 1 << (align_shift % 13)).unwrap();
                if live_bytes + layout.size() > MAX_LIVE_BYTES {
                    continue;
                }
                live_bytes += layout.size();
                // SAFETY: a valid, non-zero layout.
                let p = unsafe { if zeroed { a.alloc_zeroed(layout) } else { a.alloc(layout) } };
                if p.is_null() {
                    continue; // allowed: out of memory
                }
                assert_eq!(p as usize % layout.align(), 0, "misaligned {layout:?}");
                if zeroed {
                    // SAFETY: a fresh block of `layout.size()` bytes.
                    let bytes = unsafe { std::slice::from_raw_parts(p, layout.size()) };
                    assert!(bytes.iter().all(|&b| b == 0), "alloc_zeroed({layout:?}) not zero");
                }
                next_id += 1;
                // SAFETY: fresh block.
                unsafe { fill(p, layout.size(), next_id) };
                live.push(Live { ptr: p, layout, id: next_id });
            }
            Op::Dealloc { index } if !live.is_empty() => {
                let l = live.swap_remove(index as usize % live.len());
                live_bytes -= l.layout.size();
                // SAFETY: a live block with its pattern, freed once with its layout.
                unsafe {
                    verify(l.ptr, l.layout.size(), l.id, "before free");
                    a.dealloc(l.ptr, l.layout);
                }
            }
            Op::Realloc { index, size } if !live.is_empty() => {
                let i = index as usize % live.len();
                let l = &mut live[i];
                let new_size = size.bytes();
                if live_bytes - l.layout.size() + new_size > MAX_LIVE_BYTES {
                    continue;
                }
                // SAFETY: a live block; on success the old pointer is given up.
                unsafe {
                    verify(l.ptr, l.layout.size(), l.id, "before realloc");
                    let q = a.realloc(l.ptr, l.layout, new_size);
                    if q.is_null() {
                        verify(l.ptr, l.layout.size(), l.id, "after a failed realloc");
                        continue;
                    }
                    assert_eq!(q as usize % l.layout.align(), 0, "realloc lost the alignment");
                    let kept = l.layout.size().min(new_size);
                    // The bytes `fill` wrote into the old block that the new one keeps.
                    for i in touched(l.layout.size()).filter(|&i| i < kept) {
                        assert_eq!(q.add(i).read(), pattern(l.id, i), "realloc lost byte {i}");
                    }
                    next_id += 1;
                    fill(q, new_size, next_id);
                    live_bytes = live_bytes - l.layout.size() + new_size;
                    l.ptr = q;
                    l.layout = Layout::from_size_align(new_size, l.layout.align()).unwrap();
                    l.id = next_id;
                }
            }
            _ => {}
        }
    }
    live
}

/// Checks and frees every block left by [`run`].
pub fn free_all<A: GlobalAlloc>(a: &A, live: Vec<Live>) {
    for l in live {
        // SAFETY: live blocks, freed once with their layouts.
        unsafe {
            verify(l.ptr, l.layout.size(), l.id, "at the end");
            a.dealloc(l.ptr, l.layout);
        }
    }
}
