// SPDX-License-Identifier: GPL-2.0

//! Merged fences: containers (`dma_fence_array`, `dma_fence_chain`) and
//! the plain fences inside them.
//!
//! C header: [`include/linux/dma-fence-unwrap.h`](srctree/include/linux/dma-fence-unwrap.h)
//!
//! A `sync_file` a client passes in may hold a merge of fences from many
//! contexts. [`merge`] makes such a container from fences (flattening the
//! containers among them and keeping, per context, only the latest fence),
//! and [`Unwrap`] walks the plain fences of one, which is how a driver
//! finds the fences of its own contexts (to skip waiting for them).
//!
//! Locks: none of its own.

use super::Fence;
use crate::{bindings, prelude::*, sync::aref::ARef, types::Opaque};
use core::ptr::NonNull;

/// Merges `fences` into one fence that signals when all have. With one
/// fence left after dropping signalled and superseded ones, that fence is
/// returned itself; with none, an already-signalled stub.
///
/// # Examples
///
/// ```
/// use kernel::{
///     c_str,
///     dma_fence::{unwrap::{merge, Unwrap}, FenceAllocation, FenceContexts, FenceNames},
///     prelude::*,
/// };
///
/// struct Names;
/// impl FenceNames for Names {
///     const DRIVER: &'static CStr = c_str!("example");
///     const TIMELINE: &'static CStr = c_str!("ring");
/// }
///
/// let contexts = FenceContexts::<Names>::new(2)?;
/// let a = FenceAllocation::new(GFP_KERNEL)?.init(contexts.context(0).ok_or(EINVAL)?, 1);
/// let b = FenceAllocation::new(GFP_KERNEL)?.init(contexts.context(1).ok_or(EINVAL)?, 7);
/// let merged = merge(&[a.shared(), b.shared()])?;
/// let mut found = KVec::new();
/// for f in Unwrap::new(&merged) {
///     found.push((f.context() - a.fence().context(), f.seqno()), GFP_KERNEL)?;
/// }
/// found.sort_unstable();
/// assert_eq!(found[..], [(0, 1), (1, 7)]);
/// a.signal();
/// assert!(!merged.is_signaled());
/// b.signal();
/// assert!(merged.is_signaled());
/// # Ok::<(), Error>(())
/// ```
pub fn merge(fences: &[ARef<Fence>]) -> Result<ARef<Fence>> {
    let n = fences.len();
    let mut raw = KVec::with_capacity(n, GFP_KERNEL)?;
    for f in fences {
        raw.push(f.as_raw(), GFP_KERNEL)?;
    }
    let mut cursors = KVec::with_capacity(n, GFP_KERNEL)?;
    for _ in 0..n {
        cursors.push(
            bindings::dma_fence_unwrap {
                chain: core::ptr::null_mut(),
                array: core::ptr::null_mut(),
                index: 0,
            },
            GFP_KERNEL,
        )?;
    }
    // SAFETY: `raw` holds `n` fences we hold references on (through
    // `fences`) and `cursors` room for `n` cursors; the result is a new
    // reference, or null when out of memory.
    let merged =
        unsafe { bindings::__dma_fence_unwrap_merge(n, raw.as_mut_ptr(), cursors.as_mut_ptr()) };
    let merged = NonNull::new(merged).ok_or(ENOMEM)?;
    // SAFETY: `merged` is a fence with a reference we own.
    Ok(unsafe { Fence::from_raw_owned(merged) })
}

/// The plain fences inside a (possibly merged) fence, in container order,
/// each with a reference of its own (a chain may drop signalled links, and
/// their fences, while the walk goes on). A plain fence yields itself.
///
/// # Invariants
///
/// Once `started`, `cursor` is a cursor set up by `dma_fence_unwrap_first`
/// on `head`; its `chain` is null or a fence it holds a reference on.
pub struct Unwrap<'a> {
    head: &'a Fence,
    cursor: Opaque<bindings::dma_fence_unwrap>,
    started: bool,
}

impl<'a> Unwrap<'a> {
    /// Walks the fences inside `head`.
    pub fn new(head: &'a Fence) -> Self {
        Self {
            head,
            cursor: Opaque::uninit(),
            started: false,
        }
    }
}

impl Iterator for Unwrap<'_> {
    type Item = ARef<Fence>;

    fn next(&mut self) -> Option<ARef<Fence>> {
        let f = if self.started {
            // SAFETY: The cursor was set up by `dma_fence_unwrap_first` on
            // `head`, which we borrow.
            unsafe { bindings::dma_fence_unwrap_next(self.cursor.get()) }
        } else {
            self.started = true;
            // SAFETY: `head` is a live fence; the cursor is ours to write.
            unsafe { bindings::dma_fence_unwrap_first(self.head.as_raw(), self.cursor.get()) }
        };
        // SAFETY: The cursor holds a reference on the chain link (or head)
        // that contains `f`, so `f` is alive now; `ARef::from` takes a
        // reference of our own before the cursor moves on.
        NonNull::new(f).map(|f| ARef::from(unsafe { Fence::from_raw(f.as_ptr()) }))
    }
}

impl Drop for Unwrap<'_> {
    fn drop(&mut self) {
        if !self.started {
            return;
        }
        // SAFETY: Set up by `dma_fence_unwrap_first` (invariant).
        let chain = unsafe { (*self.cursor.get()).chain };
        if !chain.is_null() {
            // Stopped before the end: the cursor still holds a reference on
            // the chain link it was at (the walk drops it when it ends).
            // SAFETY: That reference is the cursor's (invariant).
            unsafe { bindings::dma_fence_put(chain) };
        }
    }
}
