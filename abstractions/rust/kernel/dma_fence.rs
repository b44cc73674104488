// SPDX-License-Identifier: GPL-2.0

//! DMA fences: one-shot completion events shared between drivers and
//! userspace.
//!
//! C header: [`include/linux/dma-fence.h`](srctree/include/linux/dma-fence.h)
//!
//! A [`Fence`] is the shared, reference-counted view (`ARef<Fence>`) that
//! anyone may hold: test it, wait for it, register a callback, put it in a
//! reservation object or a `sync_file`. Only the driver that made a fence can
//! signal it, through the [`DriverFence`] it got when it initialised the
//! fence (see [`driver`]). Fences of one context are signalled in seqno order;
//! a [`Timeline`] keeps a context's pending fences and signals "this one and
//! every earlier one", from any context including hard IRQ.
//!
//! # Rules the types carry
//!
//! - Nothing fails on the signalling path: fence memory is allocated ahead
//!   ([`FenceAllocation`]), initialising it cannot fail, and signalling takes
//!   only the fence's own (IRQ-safe) lock.
//! - A driver fence that is dropped unsignalled is signalled with
//!   `-ECANCELED` and a warning, so no waiter waits forever.
//! - Callbacks run in atomic context, under the fence's lock. The payload of
//!   a callback is handed to it by value: this module never drops a payload
//!   in that context, and gives it back to the caller when the fence had
//!   already signalled.
//! - The fences of this module have no `release` or `wait` operation, so
//!   once signalled they no longer point to the driver's code (7.3 then
//!   clears their `ops`), and the core frees them after an RCU grace period.
//!
//! Locks: each fence's own spinlock (inside the C functions; IRQ-safe), and a
//! [`Timeline`]'s `SpinLockIrq`, which is taken before a fence's lock.
//!
//! # Examples
//!
//! ```
//! use kernel::{
//!     c_str,
//!     dma_fence::{FenceAllocation, FenceContexts, FenceNames},
//!     prelude::*,
//! };
//!
//! struct Names;
//! impl FenceNames for Names {
//!     const DRIVER: &'static CStr = c_str!("example");
//!     const TIMELINE: &'static CStr = c_str!("ring0");
//! }
//!
//! let contexts = FenceContexts::<Names>::new(1)?;
//! // Allocate where sleeping is allowed...
//! let alloc = FenceAllocation::<Names>::new(GFP_KERNEL)?;
//! // ...initialise and signal where it may not be.
//! let fence = alloc.init(contexts.context(0).ok_or(EINVAL)?, 1);
//! let shared = fence.shared();
//! assert!(!shared.is_signaled());
//! fence.signal();
//! assert!(shared.is_signaled());
//! assert_eq!(shared.status(), Some(Ok(())));
//! # Ok::<(), Error>(())
//! ```

use crate::{
    alloc::{AllocError, Flags},
    bindings,
    error::to_result,
    prelude::*,
    sync::aref::{ARef, AlwaysRefCounted},
    time::Delta,
    types::Opaque,
};
use core::{marker::PhantomData, ptr::NonNull};

pub mod driver;
mod tests;
pub mod timeline;
pub mod unwrap;

pub use driver::{DriverFence, FenceAllocation, FenceContexts, FenceNames};
pub use timeline::Timeline;

/// A DMA fence, shared by reference count.
///
/// # Invariants
///
/// The `dma_fence` is initialised, and every `&Fence` comes with a
/// reference count held for at least its lifetime.
#[repr(transparent)]
pub struct Fence(Opaque<bindings::dma_fence>);

// SAFETY: A `dma_fence` is meant to be shared across threads: every
// operation takes its lock or uses atomics.
unsafe impl Send for Fence {}
// SAFETY: As above.
unsafe impl Sync for Fence {}

// SAFETY: `dma_fence_get`/`dma_fence_put` keep the fence alive while its
// count is non-zero; the last put frees it (after an RCU grace period).
unsafe impl AlwaysRefCounted for Fence {
    fn inc_ref(&self) {
        // SAFETY: The fence is initialised and has a reference (invariant).
        unsafe { bindings::dma_fence_get(self.as_raw()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The caller owns a reference, which it gives up.
        unsafe { bindings::dma_fence_put(obj.as_ptr().cast()) };
    }
}

impl Fence {
    /// Borrows a C fence.
    ///
    /// # Safety
    ///
    /// `ptr` must point to an initialised `dma_fence` on which a reference
    /// is held for `'a`.
    pub unsafe fn from_raw<'a>(ptr: *mut bindings::dma_fence) -> &'a Fence {
        // SAFETY: `Fence` is a transparent wrapper of `Opaque<dma_fence>`;
        // the caller guarantees validity for `'a`.
        unsafe { &*ptr.cast() }
    }

    /// Takes over one reference to a C fence.
    ///
    /// # Safety
    ///
    /// `ptr` must point to an initialised `dma_fence` and the caller must own
    /// one reference to it, which the returned `ARef` then owns.
    pub unsafe fn from_raw_owned(ptr: NonNull<bindings::dma_fence>) -> ARef<Fence> {
        // SAFETY: As required by `ARef::from_raw`, by the caller.
        unsafe { ARef::from_raw(ptr.cast()) }
    }

    /// The `struct dma_fence`.
    pub fn as_raw(&self) -> *mut bindings::dma_fence {
        self.0.get()
    }

    /// The fence's context.
    pub fn context(&self) -> u64 {
        // SAFETY: `context` is written once, at initialisation.
        unsafe { (*self.as_raw()).context }
    }

    /// The fence's sequence number within its context.
    pub fn seqno(&self) -> u64 {
        // SAFETY: `seqno` is written once, at initialisation.
        unsafe { (*self.as_raw()).seqno }
    }

    /// Whether the fence has signalled.
    pub fn is_signaled(&self) -> bool {
        // SAFETY: The fence is initialised (invariant).
        unsafe { bindings::dma_fence_is_signaled(self.as_raw()) }
    }

    /// `None` while pending; once signalled `Some(Ok(()))`, or the error it
    /// was signalled with.
    pub fn status(&self) -> Option<Result> {
        // SAFETY: The fence is initialised (invariant).
        match unsafe { bindings::dma_fence_get_status(self.as_raw()) } {
            0 => None,
            s if s > 0 => Some(Ok(())),
            e => Some(Err(Error::from_errno(e))),
        }
    }

    /// Waits until the fence signals. `interruptible`: a signal to the task
    /// ends the wait with `ERESTARTSYS`. May sleep.
    pub fn wait(&self, interruptible: bool) -> Result {
        // SAFETY: The fence is initialised (invariant).
        let r = unsafe {
            bindings::dma_fence_wait_timeout(
                self.as_raw(),
                interruptible,
                crate::ffi::c_long::MAX, // MAX_SCHEDULE_TIMEOUT
            )
        };
        to_result(i32::try_from(r.min(0)).unwrap_or(-(bindings::EINVAL as i32)))
    }

    /// Waits at most `timeout` for the fence. Returns whether it signalled
    /// (`false`: timed out). May sleep.
    pub fn wait_timeout(&self, interruptible: bool, timeout: Delta) -> Result<bool> {
        let jiffies = crate::ffi::c_long::try_from(timeout_jiffies(timeout))
            .unwrap_or(crate::ffi::c_long::MAX);
        // SAFETY: The fence is initialised (invariant).
        let r = unsafe { bindings::dma_fence_wait_timeout(self.as_raw(), interruptible, jiffies) };
        if r < 0 {
            return Err(Error::from_errno(
                i32::try_from(r).unwrap_or(-(bindings::EINVAL as i32)),
            ));
        }
        // 0: timed out; more: signalled with that much time left (a fence
        // already signalled on entry gives at least 1).
        Ok(r > 0)
    }

    /// Registers `cb` to run when the fence signals. If it has signalled
    /// already, the payload comes back as `Err`.
    ///
    /// The callback runs in atomic context (often hard IRQ), in the thread
    /// that signals; see [`FenceCallback`].
    pub fn add_callback<C: FenceCallback>(&self, cb: FenceCb<C>) -> Result<(), C> {
        let raw = KBox::into_raw(cb.0);
        // SAFETY: `raw` is a valid, initialised `CbBox<C>` whose `cb` field
        // the fence may use until it calls `run_callback`, which frees it.
        let ret = unsafe {
            bindings::dma_fence_add_callback(
                self.as_raw(),
                (&raw mut (*raw).cb).cast(),
                Some(run_callback::<C>),
            )
        };
        if ret == 0 {
            return Ok(());
        }
        // Not registered (-ENOENT: already signalled): still ours.
        // SAFETY: `raw` came from `KBox::into_raw` above and was not kept.
        let b = unsafe { KBox::from_raw(raw) };
        Err(KBox::into_inner(b).payload)
    }
}

/// What runs when a fence signals.
pub trait FenceCallback: Send + Sized + 'static {
    /// Called once, in the signalling thread, in atomic context: under the
    /// fence's spinlock with interrupts off, possibly in hard IRQ, and under
    /// whatever lock the signaller holds (a [`Timeline`]'s). Must not sleep,
    /// must not drop anything whose drop may sleep (`self` is handed over so
    /// that it can be passed on, to a work item say), and must not call what
    /// takes those locks: [`Fence::status`] or [`Fence::add_callback`] on
    /// this fence, or the [`Timeline`] that signals it.
    fn signalled(self, fence: &Fence);
}

/// A callback with its `dma_fence_cb`, allocated ahead of registration.
pub struct FenceCb<C: FenceCallback>(KBox<CbBox<C>>);

// SAFETY: The `dma_fence_cb` is not in use before registration; the payload
// is `Send` (`FenceCallback: Send`).
unsafe impl<C: FenceCallback> Send for FenceCb<C> {}

#[repr(C)]
struct CbBox<C> {
    cb: Opaque<bindings::dma_fence_cb>,
    payload: C,
}

impl<C: FenceCallback> FenceCb<C> {
    /// Allocates the registration for `payload`.
    pub fn new(payload: C, flags: Flags) -> Result<Self, AllocError> {
        Ok(Self(KBox::new(
            CbBox {
                cb: Opaque::uninit(),
                payload,
            },
            flags,
        )?))
    }
}

/// The C callback: hands the payload to [`FenceCallback::signalled`].
///
/// # Safety
///
/// `cb` must be the `cb` field of a `CbBox<C>` leaked by
/// [`Fence::add_callback`] on `fence`, called once by the fence core.
unsafe extern "C" fn run_callback<C: FenceCallback>(
    fence: *mut bindings::dma_fence,
    cb: *mut bindings::dma_fence_cb,
) {
    // SAFETY: `cb` is the first field of a `repr(C)` `CbBox<C>` (caller), and
    // `Opaque<dma_fence_cb>` has the layout of `dma_fence_cb`.
    let b = unsafe { KBox::from_raw(cb.cast::<CbBox<C>>()) };
    // Freeing the box is fine in atomic context; the payload moves on.
    let CbBox { payload, .. } = KBox::into_inner(b);
    // SAFETY: The core runs the callbacks of a fence while signalling it,
    // before it can be freed (the last reference may be dropped only after
    // `dma_fence_signal` returns, or the release runs them first), so
    // `fence` is alive for the call.
    payload.signalled(unsafe { Fence::from_raw(fence) });
}

/// A section of code on the signalling path of fences: lockdep checks that
/// nothing in it waits for a fence (directly or through a lock held by a
/// waiter), which could deadlock the signalling.
///
/// # Examples
///
/// ```
/// use kernel::dma_fence::SignallingSection;
///
/// let section = SignallingSection::begin();
/// // ... complete work and signal its fences ...
/// drop(section);
/// ```
pub struct SignallingSection {
    #[cfg_attr(not(CONFIG_LOCKDEP), allow(dead_code))]
    cookie: bool,
    /// Ends in the thread that began it.
    _not_send: PhantomData<*mut ()>,
}

impl SignallingSection {
    /// Begins a signalling section (`dma_fence_begin_signalling`).
    pub fn begin() -> Self {
        #[cfg(CONFIG_LOCKDEP)]
        // SAFETY: No requirement; ended by `drop`.
        let cookie = unsafe { bindings::dma_fence_begin_signalling() };
        #[cfg(not(CONFIG_LOCKDEP))]
        let cookie = true;
        Self {
            cookie,
            _not_send: PhantomData,
        }
    }
}

impl Drop for SignallingSection {
    fn drop(&mut self) {
        // SAFETY: `cookie` came from `dma_fence_begin_signalling` in this
        // thread.
        #[cfg(CONFIG_LOCKDEP)]
        unsafe {
            bindings::dma_fence_end_signalling(self.cookie)
        };
    }
}

/// `timeout` in jiffies, for the C waits: rounded up, so that a short
/// timeout still waits; negative counts as zero.
pub(crate) fn timeout_jiffies(timeout: Delta) -> crate::time::Jiffies {
    let ns = timeout.as_nanos().max(0);
    let ms = u32::try_from(ns.saturating_add(999_999) / 1_000_000).unwrap_or(u32::MAX);
    crate::time::msecs_to_jiffies(ms)
}
