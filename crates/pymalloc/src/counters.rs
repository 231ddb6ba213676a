//! Counters that threads update without the arenas lock: the blocks the backend (layer +1)
//! holds for a `PyMalloc`. Threads with a heap slot count in their slot's share
//! ([`SlotCounters`], no read-modify-write); threads without one in the shared
//! [`LargeCounters`].
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

/// One thread's share of the large-block counters: the blocks (and bytes) it allocated minus
/// those it freed, written only by the thread holding the slot they belong to (a relaxed load
/// and store each, no read-modify-write: plain moves), read by anyone. A block allocated on one
/// thread and freed on another adds to one share and subtracts from the other, so a share can
/// be negative; only the sum over all shares means anything.
pub(crate) struct SlotCounters {
    blocks: crate::sync::atomic::AtomicIsize,
    bytes: crate::sync::atomic::AtomicIsize,
}

impl SlotCounters {
    crate::sync::const_unless_loom! {
        pub(crate) fn new() -> Self {
            Self {
                blocks: crate::sync::atomic::AtomicIsize::new(0),
                bytes: crate::sync::atomic::AtomicIsize::new(0),
            }
        }
    }

    /// Adds `blocks` and `bytes` (either may be negative). Only the holder of the slot calls it.
    #[inline(always)]
    pub(crate) fn add(&self, blocks: isize, bytes: isize) {
        self.blocks
            .store(self.blocks.load(Relaxed).wrapping_add(blocks), Relaxed);
        self.bytes
            .store(self.bytes.load(Relaxed).wrapping_add(bytes), Relaxed);
    }

    /// `(blocks, bytes)` of this share.
    pub(crate) fn read(&self) -> (isize, isize) {
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
