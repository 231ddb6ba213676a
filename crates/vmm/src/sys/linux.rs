//! Linux: `mmap`, `munmap`, `madvise`, `mremap`, `sysconf` and `/proc/self/statm` through libc.
//! Every function here is a single system call (or a few), allocates nothing and never panics.

use core::ptr::{NonNull, null_mut};

use super::Trims;

pub(crate) fn query_page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 && (n as usize).is_power_of_two() {
        n as usize
    } else {
        // Only reachable on a broken libc; 4 KiB is the smallest page any Linux port uses, and
        // every length we pass is then a multiple of the true page size's divisor.
        4096
    }
}

pub(crate) fn map(len: usize) -> Option<NonNull<u8>> {
    // SAFETY: an anonymous private mapping with a null hint touches no existing memory.
    let p = unsafe {
        libc::mmap(
            null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(p.cast())
    }
}

/// Maps `len` bytes (whole pages) aligned to `align` (a power of two above the page size):
/// over-maps by `align - page` bytes and unmaps the unaligned head and the tail. Returns the
/// aligned start and the trims the kernel refused to unmap (count, bytes): those stay mapped,
/// unused, and the caller accounts for them.
pub(crate) fn map_aligned(len: usize, align: usize) -> Option<(NonNull<u8>, Trims)> {
    let page = query_page_size();
    let total = len.checked_add(align - page)?;
    let raw = map(total)?.as_ptr();
    let start = raw.map_addr(|a| (a + (align - 1)) & !(align - 1));
    let head = start as usize - raw as usize;
    let tail = total - head - len;
    let mut refused = Trims::default();
    // SAFETY: [raw, raw + head) is the unaligned head of the mapping made just above, never
    // handed out.
    if head != 0 && !unsafe { unmap(raw, head) } {
        refused.add(head);
    }
    // SAFETY: [start + len, raw + total) is the tail of that same mapping, also unused.
    if tail != 0 && !unsafe { unmap(start.add(len), tail) } {
        refused.add(tail);
    }
    Some((NonNull::new(start)?, refused))
}

/// # Safety
/// `[ptr, ptr + len)` is page aligned, mapped by us and dead.
pub(crate) unsafe fn unmap(ptr: *mut u8, len: usize) -> bool {
    // SAFETY: guaranteed by the caller.
    unsafe { libc::munmap(ptr.cast(), len) == 0 }
}

/// # Safety
/// `[ptr, ptr + len)` is page aligned, mapped by us, and its contents are disposable.
pub(crate) unsafe fn decommit(ptr: *mut u8, len: usize) -> bool {
    // SAFETY: guaranteed by the caller; MADV_DONTNEED on private anonymous memory drops the
    // pages and makes later reads see zero.
    unsafe { libc::madvise(ptr.cast(), len, libc::MADV_DONTNEED) == 0 }
}

/// # Safety
/// `[ptr, ptr + old_len)` is (the start of) one of our mappings.
pub(crate) unsafe fn remap(
    ptr: *mut u8,
    old_len: usize,
    new_len: usize,
    may_move: bool,
) -> Option<NonNull<u8>> {
    let flags = if may_move { libc::MREMAP_MAYMOVE } else { 0 };
    // SAFETY: guaranteed by the caller.
    let p = unsafe { libc::mremap(ptr.cast(), old_len, new_len, flags) };
    if p == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(p.cast())
    }
}

/// The second field of `/proc/self/statm` (resident pages), read into a stack buffer.
pub(crate) fn statm_resident_pages() -> Option<usize> {
    const PATH: &[u8] = b"/proc/self/statm\0";
    // SAFETY: PATH is NUL-terminated; O_RDONLY|O_CLOEXEC opens nothing we must protect.
    let fd = unsafe { libc::open(PATH.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let mut buf = [0u8; 128];
    // SAFETY: `buf` is a writable stack buffer of the length passed.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: `fd` was opened above and is closed exactly once.
    unsafe { libc::close(fd) };
    if n <= 0 {
        return None;
    }
    let text = &buf[..n as usize];
    let mut fields = text.split(|&b| b == b' ');
    let _size = fields.next()?;
    let resident = fields.next()?;
    let mut value = 0usize;
    for &b in resident {
        if !b.is_ascii_digit() {
            break;
        }
        value = value.checked_mul(10)?.checked_add((b - b'0') as usize)?;
    }
    Some(value)
}
