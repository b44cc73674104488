// SPDX-License-Identifier: GPL-2.0

//! The driver's side of a fence: contexts, preallocation, signalling.
//!
//! A driver allocates fence contexts once ([`FenceContexts`], one per ring,
//! like virtio-gpu's `base + ring`), allocates a fence's memory where it may
//! sleep ([`FenceAllocation::new`]), and initialises it where it may not
//! ([`FenceAllocation::init`], which cannot fail), typically under the lock
//! that orders its submissions, taking the next seqno there. The result is
//! a [`DriverFence`]: the only handle that can signal. Dropping it
//! unsignalled signals `-ECANCELED` with a warning.
//!
//! The fences carry no driver data and have no `release` operation: the
//! allocation is exactly a `struct dma_fence` from `kmalloc`, which the core
//! frees with `dma_fence_free` (after an RCU grace period) when the last
//! reference goes, in whatever context that happens. The driver and
//! timeline names come from a [`FenceNames`] type and are static.
//!
//! Locks: the fence's own inline spinlock, inside the C calls.

use super::Fence;
use crate::{
    alloc::{AllocError, Flags},
    bindings,
    prelude::*,
    str::CStrExt,
    sync::aref::ARef,
};
use core::{marker::PhantomData, mem::ManuallyDrop, ptr::NonNull};

/// The names a driver's fences report (`/sys/kernel/debug/dma_buf`,
/// `sync_file` info, tracepoints).
pub trait FenceNames: 'static {
    /// The driver name.
    const DRIVER: &'static CStr;
    /// The timeline name.
    const TIMELINE: &'static CStr;
}

/// The operations of fences named by `N`.
struct Ops<N>(PhantomData<N>);

impl<N: FenceNames> Ops<N> {
    const OPS: bindings::dma_fence_ops = bindings::dma_fence_ops {
        get_driver_name: Some(Self::driver_name),
        get_timeline_name: Some(Self::timeline_name),
        // SAFETY: All-zero is a valid `dma_fence_ops` (every other operation
        // absent, which the core handles).
        ..unsafe { core::mem::zeroed() }
    };

    extern "C" fn driver_name(_f: *mut bindings::dma_fence) -> *const crate::ffi::c_char {
        N::DRIVER.as_char_ptr()
    }

    extern "C" fn timeline_name(_f: *mut bindings::dma_fence) -> *const crate::ffi::c_char {
        N::TIMELINE.as_char_ptr()
    }
}

/// A block of fence contexts (`dma_fence_context_alloc`): one per ring.
///
/// Contexts are numbers and are never freed. The fences use `N`'s names
/// and an operation table in the module that made them, which a signalled
/// fence no longer points to (it has no `release` or `wait` operation, so
/// the core clears `ops`). So before a module unloads, every fence it made
/// must be signalled: dropping a [`DriverFence`] does it; leaking one (with
/// `mem::forget`) leaves a fence pointing into the unloaded module. The RCU
/// grace period that readers of a fence's names need passes in the module
/// loader, after the module's exit.
pub struct FenceContexts<N: FenceNames> {
    base: u64,
    count: u32,
    _names: PhantomData<N>,
}

impl<N: FenceNames> FenceContexts<N> {
    /// Allocates `count` consecutive contexts (`EINVAL` for none).
    pub fn new(count: u32) -> Result<Self> {
        if count == 0 {
            return Err(EINVAL);
        }
        // SAFETY: No requirement; atomic counter in the core.
        let base = unsafe { bindings::dma_fence_context_alloc(count) };
        Ok(Self {
            base,
            count,
            _names: PhantomData,
        })
    }

    /// The context of ring `ring` (`None` past the last).
    pub fn context(&self, ring: u32) -> Option<FenceContext<N>> {
        (ring < self.count).then(|| FenceContext {
            id: self.base + u64::from(ring),
            _names: PhantomData,
        })
    }
}

/// One fence context of a [`FenceContexts`] block.
pub struct FenceContext<N> {
    id: u64,
    _names: PhantomData<N>,
}

// Not derived: that would require `N: Clone`.
impl<N> Clone for FenceContext<N> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<N> Copy for FenceContext<N> {}

impl<N> FenceContext<N> {
    /// The context number (`dma_fence.context`).
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// The memory of one fence: the `dma_fence` first (the core frees the
/// block through that pointer), then the link a [`Timeline`] threads its
/// pending fences on, so that queueing a fence allocates nothing.
///
/// # Invariants
///
/// Allocated with `kmalloc` by [`FenceAllocation`]; `fence` is at offset 0.
///
/// [`Timeline`]: super::Timeline
#[repr(C)]
pub(super) struct FenceMem {
    pub(super) fence: bindings::dma_fence,
    /// The next pending fence; used only by the timeline that owns the
    /// fence, under its lock.
    pub(super) next: *mut FenceMem,
}

/// Memory for one fence, allocated ahead so that making the fence cannot
/// fail.
///
/// # Invariants
///
/// `mem` comes from `kmalloc` (a `KBox`), so `dma_fence_free` can free it
/// through a pointer to its first field, the `dma_fence`.
pub struct FenceAllocation<N: FenceNames> {
    mem: KBox<core::mem::MaybeUninit<FenceMem>>,
    _names: PhantomData<N>,
}

// SAFETY: Uninitialised memory owned by the value; its raw `next` pointer
// is not used before the fence is made.
unsafe impl<N: FenceNames> Send for FenceAllocation<N> {}

impl<N: FenceNames> FenceAllocation<N> {
    /// Allocates the memory of a fence.
    pub fn new(flags: Flags) -> Result<Self, AllocError> {
        Ok(Self {
            mem: KBox::new_uninit(flags)?,
            _names: PhantomData,
        })
    }

    /// Initialises the fence, unsignalled, in `context` with `seqno`, and
    /// returns the handle that must signal it. Never fails and never sleeps.
    ///
    /// Seqnos of one context must grow in the order the fences signal; a
    /// [`Timeline`](super::Timeline) checks it.
    pub fn init(self, context: FenceContext<N>, seqno: u64) -> DriverFence<N> {
        let mem = KBox::into_raw(self.mem).cast::<FenceMem>();
        // SAFETY: `mem` is valid for writes.
        unsafe { (&raw mut (*mem).next).write(core::ptr::null_mut()) };
        let raw = mem.cast::<bindings::dma_fence>();
        // SAFETY: `raw` is valid for writes and `kmalloc`ed with the
        // `dma_fence` at its start (`FenceMem` is `repr(C)`), as
        // `dma_fence_free` (the default release) expects. The ops table is
        // a promoted constant (`'static`). A null lock selects the fence's
        // inline lock.
        unsafe {
            bindings::dma_fence_init64(
                raw,
                &Ops::<N>::OPS,
                core::ptr::null_mut(),
                context.id,
                seqno,
            )
        };
        // INVARIANT: initialised; its one reference is the driver fence's.
        DriverFence {
            // SAFETY: `raw` came from a `KBox`, so it is not null.
            fence: unsafe { NonNull::new_unchecked(raw) },
            _names: PhantomData,
        }
    }
}

/// The driver's handle to a fence it made: the one that signals it.
///
/// # Invariants
///
/// `fence` is an initialised fence made by [`FenceAllocation::init`],
/// unsignalled, on which this handle owns one reference. Only this handle
/// signals it.
pub struct DriverFence<N: FenceNames> {
    fence: NonNull<bindings::dma_fence>,
    _names: PhantomData<N>,
}

// SAFETY: The fence may be signalled from any thread (its operations take
// its IRQ-safe lock).
unsafe impl<N: FenceNames> Send for DriverFence<N> {}
// SAFETY: Through `&DriverFence` only the shared `Fence` is reachable.
unsafe impl<N: FenceNames> Sync for DriverFence<N> {}

impl<N: FenceNames> DriverFence<N> {
    /// The fence, for tests and waits.
    pub fn fence(&self) -> &Fence {
        // SAFETY: We hold a reference (invariant).
        unsafe { Fence::from_raw(self.fence.as_ptr()) }
    }

    /// A new shared reference to the fence, to hand out.
    pub fn shared(&self) -> ARef<Fence> {
        ARef::from(self.fence())
    }

    /// The fence's seqno.
    pub fn seqno(&self) -> u64 {
        self.fence().seqno()
    }

    /// Signals the fence: it completed. Safe in any context, hard IRQ
    /// included.
    pub fn signal(self) {
        self.finish(None);
    }

    /// Signals the fence with an error (a negative errno such as `EIO` or
    /// `ETIME`): it completed, but failed.
    pub fn signal_error(self, error: Error) {
        self.finish(Some(error));
    }

    fn finish(self, error: Option<Error>) {
        let this = ManuallyDrop::new(self);
        // SAFETY: By the invariants the fence is unsignalled and we are its
        // only signaller; we give up our reference after signalling.
        unsafe { Self::signal_raw(this.fence, error) };
    }

    /// Signals `fence` (with `error`) and puts one reference.
    ///
    /// # Safety
    ///
    /// `fence` must be an unsignalled fence that only the caller signals, on
    /// which the caller owns a reference.
    unsafe fn signal_raw(fence: NonNull<bindings::dma_fence>, error: Option<Error>) {
        let f = fence.as_ptr();
        if let Some(e) = error {
            // SAFETY: Unsignalled, and nobody else signals (caller): the
            // error is set before the signal, as the core requires.
            unsafe { bindings::dma_fence_set_error(f, e.to_errno()) };
        }
        // SAFETY: `f` is initialised; signalling takes its IRQ-safe lock.
        unsafe { bindings::dma_fence_signal(f) };
        // SAFETY: The caller's reference, given up.
        unsafe { bindings::dma_fence_put(f) };
    }

    /// Gives up the handle without signalling, for a [`Timeline`] that
    /// keeps the pending fence (the memory is a [`FenceMem`]).
    ///
    /// [`Timeline`]: super::Timeline
    pub(super) fn into_raw(self) -> NonNull<FenceMem> {
        ManuallyDrop::new(self).fence.cast()
    }

    /// Takes back a handle given up with [`into_raw`](Self::into_raw).
    ///
    /// # Safety
    ///
    /// `mem` must come from `into_raw` and be taken back once.
    pub(super) unsafe fn from_raw(mem: NonNull<FenceMem>) -> Self {
        // INVARIANT: `into_raw` kept the reference and the signal duty.
        Self {
            fence: mem.cast(),
            _names: PhantomData,
        }
    }
}

impl<N: FenceNames> Drop for DriverFence<N> {
    fn drop(&mut self) {
        let f = self.fence();
        pr_warn!(
            "dma_fence: {} fence {}:{} dropped unsignalled, signalling -ECANCELED\n",
            N::DRIVER.to_str().unwrap_or("?"),
            f.context(),
            f.seqno()
        );
        // SAFETY: By the invariants: unsignalled, ours to signal, one
        // reference owned, given up here.
        unsafe { Self::signal_raw(self.fence, Some(ECANCELED)) };
    }
}
