//! The `GlobalAlloc` and `Allocator` impls that both kinds of list share: requests of the
//! list's own layout go through the list (`alloc` pops, `free` pushes), every other layout goes
//! to the layer below untouched, and `realloc` copies through the list whenever either layout
//! is the list's. One macro, so that the two impls cannot drift apart.

/// A well-aligned dangling pointer for a zero-sized allocation.
pub(crate) fn dangling(layout: core::alloc::Layout) -> core::ptr::NonNull<u8> {
    core::ptr::NonNull::new(core::ptr::without_provenance_mut(layout.align()))
        .unwrap_or(core::ptr::NonNull::dangling())
}

/// Implements `GlobalAlloc` for `$list<'_, A>` and `Allocator` for `&$list<'_, A>`, over the
/// type's fields `layout` (the list's layout) and `below` (the layer below) and its inherent
/// `alloc(&self) -> *mut u8` and `unsafe free(&self, *mut u8)`.
macro_rules! route_by_layout {
    ($list:ident) => {
        // SAFETY: blocks of the list's layout are distinct live blocks of `below`, obtained
        // with a block layout that fits `layout` and handed out once until freed; every other
        // layout is `below`'s own. `dealloc` routes by the same layout test as `alloc`.
        // Nothing unwinds.
        unsafe impl<A: core::alloc::GlobalAlloc + ?Sized> core::alloc::GlobalAlloc
            for $list<'_, A>
        {
            #[inline]
            unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
                if layout == self.layout {
                    self.alloc()
                } else {
                    // SAFETY: the caller's layout is valid for `below`.
                    unsafe { self.below.alloc(layout) }
                }
            }

            unsafe fn alloc_zeroed(&self, layout: core::alloc::Layout) -> *mut u8 {
                if layout == self.layout {
                    let p = self.alloc();
                    if !p.is_null() {
                        // SAFETY: the block has `layout.size()` bytes.
                        unsafe { p.write_bytes(0, layout.size()) };
                    }
                    p
                } else {
                    // SAFETY: as in `alloc`.
                    unsafe { self.below.alloc_zeroed(layout) }
                }
            }

            #[inline]
            unsafe fn dealloc(&self, ptr: *mut u8, layout: core::alloc::Layout) {
                if layout == self.layout {
                    // SAFETY: a block of our layout came from our `alloc` (GlobalAlloc
                    // contract).
                    unsafe { self.free(ptr) }
                } else {
                    // SAFETY: any other layout's block is `below`'s.
                    unsafe { self.below.dealloc(ptr, layout) }
                }
            }

            unsafe fn realloc(
                &self,
                ptr: *mut u8,
                layout: core::alloc::Layout,
                new_size: usize,
            ) -> *mut u8 {
                // SAFETY: `new_size` with `layout.align()` is a valid layout (GlobalAlloc
                // contract).
                let new = unsafe {
                    core::alloc::Layout::from_size_align_unchecked(new_size, layout.align())
                };
                if layout != self.layout && new != self.layout {
                    // SAFETY: the block and both layouts are `below`'s.
                    return unsafe { self.below.realloc(ptr, layout, new_size) };
                }
                // SAFETY: `new` is valid; on success the old block is live and the smaller of
                // the two sizes is copied before it is freed.
                unsafe {
                    let p = core::alloc::GlobalAlloc::alloc(self, new);
                    if !p.is_null() {
                        core::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                        core::alloc::GlobalAlloc::dealloc(self, ptr, layout);
                    }
                    p
                }
            }
        }

        // SAFETY: blocks returned by `allocate` stay valid until `deallocate` (or the list's
        // drop, which gives back only the blocks on the lists, never a block handed out); a
        // shared reference is `Copy` and every copy refers to the same list, so a block may be
        // freed through any copy.
        unsafe impl<A: core::alloc::GlobalAlloc + ?Sized> allocator_api2::alloc::Allocator
            for &$list<'_, A>
        {
            fn allocate(
                &self,
                layout: core::alloc::Layout,
            ) -> Result<core::ptr::NonNull<[u8]>, allocator_api2::alloc::AllocError> {
                if layout.size() == 0 {
                    return Ok(core::ptr::NonNull::slice_from_raw_parts(
                        $crate::route::dangling(layout),
                        0,
                    ));
                }
                // SAFETY: a valid layout of non-zero size.
                let p = unsafe { core::alloc::GlobalAlloc::alloc(*self, layout) };
                core::ptr::NonNull::new(p)
                    .map(|p| core::ptr::NonNull::slice_from_raw_parts(p, layout.size()))
                    .ok_or(allocator_api2::alloc::AllocError)
            }

            unsafe fn deallocate(&self, ptr: core::ptr::NonNull<u8>, layout: core::alloc::Layout) {
                if layout.size() != 0 {
                    // SAFETY: allocated by `allocate` with this layout.
                    unsafe { core::alloc::GlobalAlloc::dealloc(*self, ptr.as_ptr(), layout) }
                }
            }
        }
    };
}

pub(crate) use route_by_layout;
