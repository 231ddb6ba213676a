//! The debug builds' record of fallback blocks: small-layout blocks that came from layer +1
//! because no arena could be mapped.
//!
//! Once the allocator has made one, `dealloc` of a small layout can no longer assume that an
//! address outside the arenas is a bad free: it may be a fallback block, which goes back to the
//! backend. Without a record, a foreign pointer would then be passed to the backend's `free`
//! unchecked. Debug builds keep every live fallback block in this set, so a small-layout free of
//! an address that is in no arena *and* not in the set is still reported as a bad free (and a
//! fallback block freed twice as well). Release builds keep no record.
//!
//! The record also keeps each block's layout size, so that a fallback block freed with the
//! layout of another class, or with a layout that routes to layer +1, is reported too.
//!
//! The set is an open-addressing hash table with linear probing over memory from layer −1
//! (never from the allocator itself), guarded by the arenas lock. A slot is two words, address
//! and size; the address word is `EMPTY`, `GONE` (a tombstone) or a block address (blocks are
//! at least 8-aligned, so neither marker is one).
//!
//! # Invariant
//! `len <= used <= capacity * 3 / 4`, where `len` counts addresses and `used` addresses plus
//! tombstones, so every probe ends at an empty slot within a few steps. If the table cannot grow (layer −1
//! refused a mapping, which is likely in the very conditions that cause fallbacks) the block
//! is not recorded and `complete` becomes `false` for good: from then on an unrecorded address
//! cannot be told from a foreign one, and the check is skipped rather than report a genuine
//! fallback block as a bad free.

use core::ptr::{self, NonNull};

const EMPTY: usize = 0;
const GONE: usize = 1;
/// Slots in the first table: one 4 KiB page.
const INITIAL_CAPACITY: usize = 512;

pub(crate) struct FallbackSet {
    table: *mut [usize; 2], // `capacity` slots of (address, size), or null before the first
    capacity: usize,        // slots, a power of two (0 before the first insert)
    len: usize,             // addresses recorded
    used: usize,            // addresses plus tombstones
    complete: bool,         // every fallback block handed out so far is recorded
}

impl FallbackSet {
    pub(crate) const fn new() -> Self {
        Self {
            table: ptr::null_mut(),
            capacity: 0,
            len: 0,
            used: 0,
            complete: true,
        }
    }

    /// Whether every live fallback block is recorded, so that an unrecorded address is known
    /// not to be one.
    pub(crate) fn is_complete(&self) -> bool {
        self.complete
    }

    /// Bytes of address space the table occupies.
    pub(crate) fn bytes(&self) -> usize {
        self.capacity * size_of::<[usize; 2]>()
    }

    fn slot(&self, i: usize) -> *mut [usize; 2] {
        debug_assert!(i < self.capacity);
        // SAFETY: `i < capacity`, and the table has `capacity` slots.
        unsafe { self.table.add(i) }
    }

    fn home(&self, addr: usize) -> usize {
        // Fibonacci hashing of the address without its always-zero low bits.
        ((addr >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) & (self.capacity - 1)
    }

    /// The slot holding `addr`, if recorded.
    fn find(&self, addr: usize) -> Option<usize> {
        if self.capacity == 0 {
            return None;
        }
        let mut i = self.home(addr);
        for _ in 0..self.capacity {
            // SAFETY: `slot` is in the table, which holds initialised words.
            match unsafe { (*self.slot(i))[0] } {
                EMPTY => return None,
                v if v == addr => return Some(i),
                _ => i = (i + 1) & (self.capacity - 1),
            }
        }
        None
    }

    /// Records fallback block `addr`, allocated (or last reallocated) with a layout of `size`
    /// bytes.
    pub(crate) fn insert(&mut self, addr: usize, size: usize) {
        debug_assert!(addr > GONE);
        if !self.complete {
            // Checks are off for good; recording more would only cost time.
            return;
        }
        if (self.used + 1) * 4 > self.capacity * 3 && !self.grow() {
            // No room, and none to be had: give up the record for good (see the module docs).
            // Filling the table past 3/4 instead would make every probe long.
            self.complete = false;
            return;
        }
        let mut i = self.home(addr);
        loop {
            let s = self.slot(i);
            // SAFETY: `s` is in the table; at most 3/4 of the slots are taken, so the probe
            // ends.
            unsafe {
                if (*s)[0] == EMPTY || (*s)[0] == GONE {
                    if (*s)[0] == EMPTY {
                        self.used += 1;
                    }
                    *s = [addr, size];
                    self.len += 1;
                    return;
                }
            }
            i = (i + 1) & (self.capacity - 1);
        }
    }

    /// Forgets `addr`; returns its recorded size, if it was recorded.
    pub(crate) fn remove(&mut self, addr: usize) -> Option<usize> {
        let i = self.find(addr)?;
        // SAFETY: `find` returned a slot of the table.
        let size = unsafe { core::mem::replace(&mut *self.slot(i), [GONE, 0])[1] };
        self.len -= 1;
        Some(size)
    }

    /// The recorded size of `addr`, if it is recorded.
    pub(crate) fn recorded_size(&self, addr: usize) -> Option<usize> {
        let i = self.find(addr)?;
        // SAFETY: `find` returned a slot of the table.
        Some(unsafe { (*self.slot(i))[1] })
    }

    /// Rehashes into a table sized for the live addresses (twice the old one when it is more
    /// than a quarter full of them). Returns `false`, leaving the old table, if layer −1 refused.
    fn grow(&mut self) -> bool {
        let mut capacity = self.capacity.max(INITIAL_CAPACITY);
        while (self.len + 1) * 4 > capacity {
            capacity *= 2;
        }
        let Some(fresh) = pymalloc_vmm::map(capacity * size_of::<[usize; 2]>()) else {
            return false;
        };
        let complete = self.complete;
        let old = core::mem::replace(
            self,
            Self {
                table: fresh.as_ptr().cast(),
                capacity,
                len: 0,
                used: 0,
                complete,
            },
        );
        // A fresh mapping is zero-filled: every slot reads EMPTY.
        for i in 0..old.capacity {
            // SAFETY: `i` is a slot of the old table, still mapped.
            let [addr, size] = unsafe { *old.slot(i) };
            if addr > GONE {
                self.insert(addr, size);
            }
        }
        old.release();
        true
    }

    /// Unmaps the table and forgets everything.
    pub(crate) fn release(self) {
        if let Some(p) = NonNull::new(self.table) {
            // SAFETY: the table was mapped with this size and nothing refers to it after this.
            unsafe { pymalloc_vmm::unmap(p.cast(), self.bytes()) };
        }
    }
}

impl FallbackSet {
    /// Whether `addr` is recorded.
    #[cfg(test)]
    fn contains(&self, addr: usize) -> bool {
        self.recorded_size(addr).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_and_growth() {
        let mut s = FallbackSet::new();
        let n = if cfg!(miri) { 700 } else { 5000 };
        let addr = |i: usize| 0x1000 + i * 48;
        for i in 0..n {
            s.insert(addr(i), i + 1);
        }
        assert!(s.is_complete());
        assert!(s.capacity >= n * 4 / 3);
        for i in 0..n {
            assert!(s.contains(addr(i)), "{i}");
        }
        assert!(!s.contains(addr(n)));
        for i in (0..n).step_by(2) {
            assert_eq!(s.remove(addr(i)), Some(i + 1));
            assert_eq!(s.remove(addr(i)), None, "removed twice");
        }
        assert_eq!(s.recorded_size(addr(1)), Some(2));
        for i in 0..n {
            assert_eq!(s.contains(addr(i)), i % 2 == 1, "{i}");
        }
        // Churn through tombstones: the table stays usable and does not grow without bound.
        let cap = s.capacity;
        for round in 0..20 {
            for i in 0..n / 2 {
                let a = addr(n + round * n + i);
                s.insert(a, 8);
                assert_eq!(s.remove(a), Some(8));
            }
        }
        assert!(s.capacity <= cap * 2, "{} > 2 * {cap}", s.capacity);
        assert_eq!(s.len, n / 2);
        s.release();
    }
}
