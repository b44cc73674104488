// SPDX-License-Identifier: GPL-2.0

//! A fence as a file: how fences cross into and out of userspace.
//!
//! C header: [`include/linux/sync_file.h`](srctree/include/linux/sync_file.h)
//!
//! A driver exports a fence by making a [`SyncFile`] of it and installing
//! the file in a descriptor it reserved before doing anything that cannot be
//! undone (so the last step cannot fail), and imports one with
//! [`fence_from_fd`].
//!
//! Locks: none of its own.
//!
//! # Examples
//!
//! ```
//! use kernel::{
//!     c_str,
//!     dma_fence::{FenceAllocation, FenceContexts, FenceNames},
//!     prelude::*,
//!     sync_file::SyncFile,
//! };
//!
//! struct Names;
//! impl FenceNames for Names {
//!     const DRIVER: &'static CStr = c_str!("example");
//!     const TIMELINE: &'static CStr = c_str!("ring0");
//! }
//!
//! let contexts = FenceContexts::<Names>::new(1)?;
//! let fence = FenceAllocation::new(GFP_KERNEL)?.init(contexts.context(0).ok_or(EINVAL)?, 1);
//! let file = SyncFile::new(fence.fence())?;
//! assert!(core::ptr::eq(file.fence(), fence.fence()));
//! fence.signal();
//! assert!(file.fence().is_signaled());
//! # Ok::<(), Error>(())
//! ```

use crate::{bindings, dma_fence::Fence, fs::File, prelude::*, sync::aref::ARef};
use core::ptr::NonNull;

/// A `sync_file` and the reference on its file.
///
/// # Invariants
///
/// `sf` is a `sync_file` made by `sync_file_create`; we own one reference
/// on its `file`, which keeps it (and its fence reference) alive.
pub struct SyncFile {
    sf: NonNull<bindings::sync_file>,
}

// SAFETY: A file reference may be dropped (`fput`) from any thread.
unsafe impl Send for SyncFile {}
// SAFETY: Through `&SyncFile` only the fence is reachable, which is `Sync`.
unsafe impl Sync for SyncFile {}

impl SyncFile {
    /// Makes a `sync_file` holding a reference on `fence`.
    pub fn new(fence: &Fence) -> Result<Self> {
        // SAFETY: `fence` is a live fence; `sync_file_create` takes its own
        // reference on it.
        let sf = unsafe { bindings::sync_file_create(fence.as_raw()) };
        // INVARIANT: made by `sync_file_create`, which returns the file with
        // one reference, ours.
        Ok(Self {
            sf: NonNull::new(sf).ok_or(ENOMEM)?,
        })
    }

    /// The fence it holds.
    pub fn fence(&self) -> &Fence {
        // SAFETY: A `sync_file` made by `sync_file_create` holds a
        // reference on its fence for its whole life (invariant).
        unsafe { Fence::from_raw((*self.sf.as_ptr()).fence) }
    }

    /// The file, to install in a reserved descriptor
    /// ([`FileDescriptorReservation::fd_install`]).
    ///
    /// [`FileDescriptorReservation::fd_install`]: crate::fs::file::FileDescriptorReservation::fd_install
    pub fn into_file(self) -> ARef<File> {
        let me = core::mem::ManuallyDrop::new(self);
        // SAFETY: `file` is a valid file on which we own a reference
        // (invariant), handed over to the `ARef`.
        unsafe {
            ARef::from_raw(NonNull::new_unchecked(
                (*me.sf.as_ptr()).file.cast::<File>(),
            ))
        }
    }
}

impl Drop for SyncFile {
    fn drop(&mut self) {
        // SAFETY: We own a reference on the file (invariant); the file
        // owns the `sync_file`.
        unsafe { bindings::fput((*self.sf.as_ptr()).file) };
    }
}

/// The fence of the `sync_file` behind descriptor `fd`, with a reference.
/// `EINVAL` if `fd` is not a `sync_file` (the errno drivers return for a
/// bad in-fence).
pub fn fence_from_fd(fd: i32) -> Result<ARef<Fence>> {
    // SAFETY: Looks `fd` up in the current task's table; returns a new
    // reference or null.
    let f = unsafe { bindings::sync_file_get_fence(fd) };
    let f = NonNull::new(f).ok_or(EINVAL)?;
    // SAFETY: `f` comes with a reference we own.
    Ok(unsafe { Fence::from_raw_owned(f) })
}
