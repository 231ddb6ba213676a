//! Branch-weight hints on stable Rust: a call to a `#[cold]` function on one side of a branch
//! tells the optimiser which side is rare (the same trick as hashbrown's `util.rs`).

/// Marks the path that calls it as rarely taken.
#[cold]
#[inline(always)]
pub(crate) fn cold_path() {}

/// `b`, hinted as usually true.
#[inline(always)]
pub(crate) fn likely(b: bool) -> bool {
    if !b {
        cold_path();
    }
    b
}

/// `b`, hinted as usually false.
#[inline(always)]
pub(crate) fn unlikely(b: bool) -> bool {
    if b {
        cold_path();
    }
    b
}
