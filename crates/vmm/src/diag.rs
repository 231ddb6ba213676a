//! Reporting from inside an allocator: text formatted into a stack buffer and written to
//! standard error with `write(2)`, never through the global allocator.
//!
//! `format!`, `eprintln!` with a `String` argument, panics and backtraces may all allocate, and
//! an allocator that allocates while it reports an error re-enters itself with its locks held.
//! [`StackWriter`] implements [`core::fmt::Write`] over a fixed array (silently truncating), so
//! `write!(w, "bad free at {:#x}", addr)` is safe anywhere; [`fatal`] writes one report and
//! aborts the process without unwinding.
//!
//! ```
//! use core::fmt::Write;
//! use pymalloc_vmm::diag::StackWriter;
//!
//! let mut w = StackWriter::<64>::new();
//! write!(w, "block {:#x}: {} bytes", 0x1000, 48).unwrap();
//! assert_eq!(w.as_str(), "block 0x1000: 48 bytes");
//! ```

use core::fmt;

/// A [`fmt::Write`] sink over a stack array of `N` bytes. Output past `N` bytes is dropped and
/// [`StackWriter::truncated`] reports it; writing never fails and never allocates.
pub struct StackWriter<const N: usize> {
    buf: [u8; N],    // bytes; only `buf[..len]` is meaningful
    len: usize,      // bytes written so far, <= N
    truncated: bool, // whether anything was dropped
}

impl<const N: usize> StackWriter<N> {
    /// An empty writer.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
            truncated: false,
        }
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The text written so far. If truncation split a UTF-8 sequence, the partial character is
    /// left out.
    pub fn as_str(&self) -> &str {
        match core::str::from_utf8(self.as_bytes()) {
            Ok(s) => s,
            Err(e) => {
                let valid = &self.buf[..e.valid_up_to()];
                // SAFETY: `valid_up_to` is the length of the longest valid UTF-8 prefix.
                unsafe { core::str::from_utf8_unchecked(valid) }
            }
        }
    }

    /// Whether some output did not fit.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Forgets everything written.
    pub fn clear(&mut self) {
        self.len = 0;
        self.truncated = false;
    }

    /// Writes the buffer to standard error (see [`write_stderr`]).
    pub fn flush_to_stderr(&self) {
        write_stderr(self.as_bytes());
    }
}

impl<const N: usize> Default for StackWriter<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Write for StackWriter<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = N - self.len;
        let take = s.len().min(room);
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        if take < s.len() {
            self.truncated = true;
        }
        Ok(())
    }
}

/// Writes `bytes` to file descriptor 2 with `write(2)`, retrying on short writes and `EINTR`.
/// Errors are ignored: there is nowhere left to report them.
pub fn write_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid readable slice of the length passed.
        let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        if n > 0 {
            bytes = &bytes[n as usize..];
        } else if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        } else {
            return;
        }
    }
}

/// Writes `args` and a newline to standard error from a 2 KiB stack buffer, then aborts the
/// process (`abort(3)`: no unwinding, no destructors, no allocation).
///
/// This is how every layer reports a fault it cannot return as a value: a bad free, a broken
/// invariant, re-entry into a lock it already holds.
#[cold]
#[inline(never)]
pub fn fatal(args: fmt::Arguments<'_>) -> ! {
    let mut w = StackWriter::<2048>::new();
    let _ = fmt::Write::write_fmt(&mut w, args);
    let _ = fmt::Write::write_str(&mut w, "\n");
    w.flush_to_stderr();
    // SAFETY: abort has no preconditions and does not return.
    unsafe { libc::abort() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn writes_and_truncates_without_allocating() {
        let mut w = StackWriter::<8>::new();
        write!(w, "{}", 12345).unwrap();
        assert_eq!(w.as_str(), "12345");
        assert!(!w.truncated());
        write!(w, "{:#x}", 0xabcdef).unwrap();
        assert_eq!(w.as_str(), "123450xa");
        assert!(w.truncated());
        w.clear();
        assert_eq!(w.as_str(), "");
    }

    #[test]
    fn a_split_utf8_character_is_dropped() {
        let mut w = StackWriter::<2>::new();
        w.write_str("aé").unwrap();
        assert_eq!(w.as_str(), "a");
    }
}
