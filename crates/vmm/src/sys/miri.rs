//! The backend used under Miri, which supports anonymous `mmap` only partly (no partial
//! `munmap`, no `mremap`, no `madvise`). Mappings are emulated with the system allocator and a
//! table of live mappings, so the layers above run unchanged and Miri checks their pointer
//! arithmetic, provenance and aliasing. Semantics kept: zero-filled memory, alignment, tail
//! unmapping (the emulated mapping shrinks), decommit reads back zero, remap moves or grows.
//!
//! Like the real backend, this one never allocates through the global allocator: the table is
//! a fixed array in a `static`, so a program whose `#[global_allocator]` sits on this crate
//! (a `PyMalloc` mapping its first arena) does not re-enter itself.

use core::ptr::NonNull;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;

pub(crate) fn query_page_size() -> usize {
    4096
}

#[derive(Clone, Copy)]
struct Mapping {
    base: usize,    // address of the allocation
    layout: Layout, // how it was allocated (freed with the same)
    live: usize,    // bytes still "mapped" from base
}

/// Live emulated mappings at once; one more fails like an exhausted address space.
const MAX_MAPPINGS: usize = 4096;

struct Table {
    maps: [Mapping; MAX_MAPPINGS], // the first `len` are live
    len: usize,
}

static MAPPINGS: Mutex<Table> = Mutex::new(Table {
    maps: [Mapping {
        base: 0,
        layout: Layout::new::<u8>(),
        live: 0,
    }; MAX_MAPPINGS],
    len: 0,
});

fn alloc_mapping(len: usize, align: usize) -> Option<NonNull<u8>> {
    let layout = Layout::from_size_align(len, align.max(query_page_size())).ok()?;
    let mut table = MAPPINGS.lock().unwrap();
    if table.len == MAX_MAPPINGS {
        return None;
    }
    // SAFETY: non-zero size (callers never pass zero).
    let p = NonNull::new(unsafe { System.alloc_zeroed(layout) })?;
    let n = table.len;
    table.maps[n] = Mapping {
        base: p.as_ptr() as usize,
        layout,
        live: len,
    };
    table.len = n + 1;
    Some(p)
}

pub(crate) fn map(len: usize) -> Option<NonNull<u8>> {
    alloc_mapping(len, query_page_size())
}

/// Under Miri an aligned mapping is allocated aligned directly (no over-map and trim).
pub(crate) fn map_aligned(len: usize, align: usize) -> Option<(NonNull<u8>, super::Trims)> {
    Some((alloc_mapping(len, align)?, super::Trims::default()))
}

/// # Safety
/// As for the Linux backend: the range is (the tail of) one of our mappings and is dead.
pub(crate) unsafe fn unmap(ptr: *mut u8, len: usize) -> bool {
    let addr = ptr as usize;
    let mut table = MAPPINGS.lock().unwrap();
    let Table { maps, len: n } = &mut *table;
    let Some(i) = maps[..*n]
        .iter()
        .position(|m| addr >= m.base && addr + len == m.base + m.live)
    else {
        return false;
    };
    if addr == maps[i].base {
        let m = maps[i];
        maps[i] = maps[*n - 1];
        *n -= 1;
        // SAFETY: the whole emulated mapping is dead; it was allocated with `m.layout`.
        unsafe { System.dealloc(ptr, m.layout) };
    } else {
        maps[i].live -= len; // a tail: the emulated mapping shrinks
    }
    true
}

/// # Safety
/// As for the Linux backend.
pub(crate) unsafe fn decommit(ptr: *mut u8, len: usize) -> bool {
    // SAFETY: the range is ours and its contents are disposable.
    unsafe { ptr.write_bytes(0, len) };
    true
}

/// # Safety
/// As for the Linux backend.
pub(crate) unsafe fn remap(
    ptr: *mut u8,
    old_len: usize,
    new_len: usize,
    may_move: bool,
) -> Option<NonNull<u8>> {
    if new_len <= old_len {
        // SAFETY: the tail beyond `new_len` is dead per the caller.
        unsafe { unmap(ptr.add(new_len), old_len - new_len) };
        return NonNull::new(ptr);
    }
    if !may_move {
        return None;
    }
    let new = map(new_len)?;
    // SAFETY: both ranges are ours and distinct; the old one is dead afterwards.
    unsafe {
        core::ptr::copy_nonoverlapping(ptr, new.as_ptr(), old_len);
        unmap(ptr, old_len);
    }
    Some(new)
}

pub(crate) fn statm_resident_pages() -> Option<usize> {
    None
}
