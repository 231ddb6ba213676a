//! Counters that threads update without the arenas lock: the blocks the backend (layer +1)
//! holds for a `PyMalloc`.
//!
//! They are statistics: nothing decides anything from them, so every access is `Relaxed`.
//! What they promise, and the loom model at the end of this file checks:
//! - no update is lost (each is one atomic read-modify-write), so once the threads that
//!   allocated and freed are joined (or otherwise synchronised with the reader), the figures
//!   are exact;
//! - a reader running alongside sees each counter at values it really passed through, in
//!   order, and those never go below zero (a block is counted in before anyone can free it)
//!   nor leave out a live block's bytes (`realloc` adds the new size before it subtracts the
//!   old one). Two counters read one after the other may come from different moments:
//!   `blocks` and `bytes` are each right, not right together.

use crate::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Live blocks handed to the backend, and the bytes requested for them.
pub(crate) struct LargeCounters {
    blocks: AtomicUsize,
    bytes: AtomicUsize,
}

impl LargeCounters {
    crate::sync::const_unless_loom! {
        pub(crate) fn new() -> Self {
            Self {
                blocks: AtomicUsize::new(0),
                bytes: AtomicUsize::new(0),
            }
        }
    }

    /// A block of `size` bytes was allocated.
    #[inline]
    pub(crate) fn allocated(&self, size: usize) {
        self.blocks.fetch_add(1, Relaxed);
        self.bytes.fetch_add(size, Relaxed);
    }

    /// A block of `size` bytes, counted by `allocated`, was freed.
    #[inline]
    pub(crate) fn freed(&self, size: usize) {
        self.bytes.fetch_sub(size, Relaxed);
        self.blocks.fetch_sub(1, Relaxed);
    }

    /// A block counted with `old` bytes now has `new`.
    #[inline]
    pub(crate) fn resized(&self, old: usize, new: usize) {
        // Add first: a concurrent reader must never see the bytes of a live block missing.
        self.bytes.fetch_add(new, Relaxed);
        self.bytes.fetch_sub(old, Relaxed);
    }

    /// `(blocks, bytes)`.
    pub(crate) fn read(&self) -> (usize, usize) {
        (self.blocks.load(Relaxed), self.bytes.load(Relaxed))
    }
}

/// `RUSTFLAGS="--cfg loom" cargo test -p pymalloc --release --lib`
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use crate::sync::atomic::Ordering;
    use loom::sync::Arc;
    use loom::thread;

    /// Bytes that could ever be counted at once in the model below; a reading above it is a
    /// counter that went below zero and wrapped.
    const MOST: usize = 100 + 300;

    /// One thread allocates a block of 100 bytes and hands it to another, which grows it to
    /// 300 and frees it, while a third thread reads. Only one block ever lives, so the bytes
    /// the reader sees must never go from non-zero to zero and back: that would be the live
    /// block's bytes missing for a moment.
    #[test]
    fn readings_never_wrap_nor_dip_and_end_exact() {
        loom::model(|| {
            let c = Arc::new(LargeCounters::new());
            let handoff = Arc::new(crate::sync::atomic::AtomicBool::new(false));
            let producer = {
                let (c, handoff) = (c.clone(), handoff.clone());
                thread::spawn(move || {
                    c.allocated(100);
                    handoff.store(true, Ordering::Release);
                })
            };
            let consumer = {
                let (c, handoff) = (c.clone(), handoff.clone());
                thread::spawn(move || {
                    while !handoff.load(Ordering::Acquire) {
                        thread::yield_now();
                    }
                    c.resized(100, 300);
                    c.freed(300);
                })
            };
            let (mut seen_live, mut seen_gone) = (false, false);
            for _ in 0..3 {
                let (blocks, bytes) = c.read();
                assert!(blocks <= 1, "blocks wrapped: {blocks:#x}");
                assert!(bytes <= MOST, "bytes wrapped: {bytes:#x}");
                if bytes != 0 {
                    assert!(!seen_gone, "a live block's bytes went missing");
                    seen_live = true;
                } else if seen_live {
                    seen_gone = true;
                }
            }
            producer.join().unwrap();
            consumer.join().unwrap();
            assert_eq!(c.read(), (0, 0));
        });
    }

    /// Two threads count blocks in and out at the same time: no update is lost.
    #[test]
    fn concurrent_updates_are_not_lost() {
        loom::model(|| {
            let c = Arc::new(LargeCounters::new());
            let other = {
                let c = c.clone();
                thread::spawn(move || {
                    c.allocated(24);
                    c.freed(24);
                })
            };
            c.allocated(1000);
            other.join().unwrap();
            assert_eq!(c.read(), (1, 1000));
        });
    }
}
