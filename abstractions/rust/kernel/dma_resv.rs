// SPDX-License-Identifier: GPL-2.0

//! Reservation objects: the fences of a buffer, behind a wound/wait mutex.
//!
//! C header: [`include/linux/dma-resv.h`](srctree/include/linux/dma-resv.h)
//!
//! Every GEM object and DMA buffer has a `struct dma_resv` (its own, or one
//! it shares). A [`Resv`] is a typed handle to one. It is
//! [`Lockable`]: lock it alone ([`Resv::lock`],
//! [`Resv::lock_interruptible`]) or together with the reservations of
//! every buffer of a job through a [`LockSet`](crate::sync::lock::ww_mutex::LockSet),
//! which backs off on `EDEADLK` for you. Unlocking goes through
//! `dma_resv_unlock` semantics, so the debug checks of fence slots keep
//! working. Under the lock, [`ResvLocked`] reserves fence slots
//! ([`ResvLocked::reserve_fences`], the step that may fail) and adds fences
//! to them ([`FenceSlots::add`], which cannot). Waiting and testing need no
//! lock.
//!
//! Locks: the reservation's `ww_mutex` (class `reservation_ww_class`).
//!
//! # Examples
//!
//! The execbuffer pattern: lock every buffer of a job (any order,
//! duplicates and shared reservations allowed), reserve a slot on each,
//! publish the job's fence, unlock.
//!
//! ```
//! use kernel::{
//!     c_str,
//!     dma_fence::{FenceAllocation, FenceContexts, FenceNames},
//!     dma_resv::{OwnedResv, Resv, Usage},
//!     prelude::*,
//!     sync::lock::ww_mutex::{Class, LockSet},
//! };
//!
//! struct Names;
//! impl FenceNames for Names {
//!     const DRIVER: &'static CStr = c_str!("example");
//!     const TIMELINE: &'static CStr = c_str!("ring0");
//! }
//!
//! let a = KBox::pin_init(OwnedResv::new(), GFP_KERNEL)?;
//! let b = KBox::pin_init(OwnedResv::new(), GFP_KERNEL)?;
//! let job: [&Resv; 3] = [&b, &a, &b]; // `b` twice
//!
//! let contexts = FenceContexts::<Names>::new(1)?;
//! let fence = FenceAllocation::new(GFP_KERNEL)?.init(contexts.context(0).ok_or(EINVAL)?, 1);
//! LockSet::lock_all_interruptible(
//!     Class::reservation(),
//!     |set| job.iter().try_for_each(|r| set.lock(*r)),
//!     |set| {
//!         for r in job {
//!             set.with_locked_ref(r, |locked| -> Result {
//!                 locked.reserve_fences(1)?.add(fence.fence(), Usage::Write)
//!             })??;
//!         }
//!         Ok(())
//!     },
//! )?;
//! assert!(!a.test_signaled(Usage::Write));
//! fence.signal();
//! assert!(a.test_signaled(Usage::Write) && b.test_signaled(Usage::Read));
//! # Ok::<(), Error>(())
//! ```

use crate::{
    bindings,
    dma_fence::Fence,
    error::to_result,
    prelude::*,
    sync::aref::ARef,
    sync::lock::ww_mutex::{Class, Lockable, MutexGuard},
    time::Delta,
    types::Opaque,
};

mod tests;

/// How a fence uses a buffer; waits for a usage include every stronger one.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u32)]
pub enum Usage {
    /// Kernel-internal work (moves, clears).
    Kernel = bindings::dma_resv_usage_DMA_RESV_USAGE_KERNEL,
    /// Writes: implicit-sync readers wait for these.
    Write = bindings::dma_resv_usage_DMA_RESV_USAGE_WRITE,
    /// Reads: implicit-sync writers wait for these.
    Read = bindings::dma_resv_usage_DMA_RESV_USAGE_READ,
    /// Bookkeeping only: no implicit sync.
    Bookkeep = bindings::dma_resv_usage_DMA_RESV_USAGE_BOOKKEEP,
}

/// A reservation object.
///
/// # Invariants
///
/// The `dma_resv` is initialised (`dma_resv_init`) and stays so while
/// borrowed.
#[repr(transparent)]
pub struct Resv(Opaque<bindings::dma_resv>);

// SAFETY: A `dma_resv` is made for use from any thread: its mutex serialises
// writers and readers use RCU.
unsafe impl Send for Resv {}
// SAFETY: As above.
unsafe impl Sync for Resv {}

impl Resv {
    /// Borrows a C reservation object.
    ///
    /// # Safety
    ///
    /// `ptr` must point to an initialised `dma_resv` that stays initialised
    /// (not `dma_resv_fini`ed, not freed) for `'a`.
    pub unsafe fn from_raw<'a>(ptr: *mut bindings::dma_resv) -> &'a Resv {
        // SAFETY: `Resv` is a transparent wrapper of `Opaque<dma_resv>`; the
        // caller guarantees validity for `'a`.
        unsafe { &*ptr.cast() }
    }

    /// The reservation of a GEM object: its own, or the one it shares (an object imported from
    /// a DMA buffer, or made with another object's reservation).
    ///
    /// Locking it and then calling the shmem helpers' `vmap` deadlocks: they take this lock.
    #[cfg(all(CONFIG_DRM = "y", CONFIG_RUST_DRM_GEM_SHMEM_HELPER))]
    pub fn of_gem<O: crate::drm::gem::BaseObject>(obj: &O) -> &Resv {
        use crate::drm::gem::BaseObjectPrivate;
        // SAFETY: `resv` of a GEM object points to an initialised reservation from the object's
        // creation on: its own `_resv` (finalised only when the object is freed) or the one of
        // the DMA buffer or object it shares, which the object holds a reference to until it is
        // freed. `obj` is alive for the borrow, so the reservation is too.
        unsafe { Resv::from_raw(obj.raw_dma_resv()) }
    }

    /// The `struct dma_resv`.
    pub fn as_raw(&self) -> *mut bindings::dma_resv {
        self.0.get()
    }

    /// Whether the reservation is locked (by anyone).
    pub fn is_locked(&self) -> bool {
        crate::sync::lock::ww_mutex::is_locked(self)
    }

    /// Locks the reservation alone (no acquire context; not while this task
    /// has a context of the reservation class open).
    pub fn lock(&self) -> MutexGuard<'_, Resv> {
        crate::sync::lock::ww_mutex::lock_no_ctx(self)
    }

    /// Locks the reservation alone; a signal ends the wait with `EINTR`.
    pub fn lock_interruptible(&self) -> Result<MutexGuard<'_, Resv>> {
        crate::sync::lock::ww_mutex::lock_no_ctx_interruptible(self)
    }

    /// Waits at most `timeout` until every fence of `usage` (or stronger)
    /// has signalled; returns whether they all did. May sleep; no lock.
    pub fn wait_timeout(&self, usage: Usage, interruptible: bool, timeout: Delta) -> Result<bool> {
        let jiffies = crate::dma_fence::timeout_jiffies(timeout);
        // SAFETY: Initialised (invariant); reads the fences under RCU.
        let r = unsafe {
            bindings::dma_resv_wait_timeout(self.as_raw(), usage as u32, interruptible, jiffies)
        };
        if r < 0 {
            return Err(Error::from_errno(
                i32::try_from(r).unwrap_or(-(bindings::EINVAL as i32)),
            ));
        }
        Ok(r > 0)
    }

    /// Whether every fence of `usage` (or stronger) has signalled. No lock.
    pub fn test_signaled(&self, usage: Usage) -> bool {
        // SAFETY: Initialised (invariant); reads the fences under RCU.
        unsafe { bindings::dma_resv_test_signaled(self.as_raw(), usage as u32) }
    }
}

// SAFETY: `lock` is the reservation's `ww_mutex`, initialised by
// `dma_resv_init` with `reservation_ww_class` and as long-lived as the
// reservation (invariant). The data (`ResvLocked`, the same object) is only
// changed through `&ResvLocked` with the lock held (lock-free readers use
// RCU, as C's rules allow). `unlock` is `dma_resv_unlock`.
unsafe impl Lockable for Resv {
    type Data = ResvLocked;

    fn as_raw(&self) -> *mut bindings::ww_mutex {
        // SAFETY: A field of the initialised reservation.
        unsafe { &raw mut (*self.0.get()).lock }
    }

    fn class(&self) -> &Class {
        Class::reservation()
    }

    fn data_ptr(&self) -> *mut ResvLocked {
        self.0.get().cast()
    }

    unsafe fn unlock(raw: *mut bindings::ww_mutex) {
        // SAFETY: `raw` is the `lock` field of a live `dma_resv` (caller:
        // it came from `as_raw`).
        let resv = unsafe { crate::container_of!(raw, bindings::dma_resv, lock) };
        // SAFETY: Held by the current task (caller). Resets the count of
        // reserved fence slots, then unlocks.
        unsafe { bindings::dma_resv_unlock(resv) };
    }
}

/// A reservation object whose lock the current task holds: what may only
/// be done under the lock. Reached through a guard or a lock set.
///
/// # Invariants
///
/// Only ever borrowed while the reservation is locked by the borrower's
/// task.
#[repr(transparent)]
pub struct ResvLocked(Opaque<bindings::dma_resv>);

impl ResvLocked {
    /// Makes room for `n` more fences (`n` > 0, else `EINVAL`), to be added
    /// through the returned slots. The room lasts until the reservation is
    /// unlocked.
    pub fn reserve_fences(&self, n: u32) -> Result<FenceSlots<'_>> {
        if n == 0 {
            return Err(EINVAL);
        }
        // SAFETY: Locked by this task (invariant).
        to_result(unsafe { bindings::dma_resv_reserve_fences(self.0.get(), n) })?;
        Ok(FenceSlots {
            resv: self,
            left: n,
        })
    }

    /// The fences of `usage` or stronger, each with a reference, in the
    /// order the reservation keeps them (a snapshot: the reservation may be
    /// changed while the caller looks at it).
    pub fn fences(&self, usage: Usage) -> Result<KVec<ARef<Fence>>> {
        let mut out = KVec::new();
        let mut cursor = bindings::dma_resv_iter {
            obj: self.0.get(),
            usage: usage as u32,
            fence: core::ptr::null_mut(),
            fence_usage: 0,
            index: 0,
            fences: core::ptr::null_mut(),
            num_fences: 0,
            is_restarted: false,
        };
        // SAFETY: Locked by this task (invariant), as the locked iterator
        // requires; `cursor` is set up as `dma_resv_iter_begin` does. Nothing
        // else runs while we walk (no callback), so the list stays put.
        let mut fence = unsafe { bindings::dma_resv_iter_first(&mut cursor) };
        while !fence.is_null() {
            // SAFETY: The reservation holds a reference on each of its
            // fences while locked; `ARef::from` takes one of our own.
            out.push(ARef::from(unsafe { Fence::from_raw(fence) }), GFP_KERNEL)?;
            // SAFETY: As above; the cursor came from `dma_resv_iter_first`.
            fence = unsafe { bindings::dma_resv_iter_next(&mut cursor) };
        }
        Ok(out)
    }
}

/// Fence slots reserved on a locked reservation.
///
/// # Invariants
///
/// `resv` is locked by this task for `'a`; `left` of the slots reserved
/// through it are unused.
pub struct FenceSlots<'a> {
    resv: &'a ResvLocked,
    left: u32,
}

impl FenceSlots<'_> {
    /// Adds `fence` (the reservation takes a reference) for `usage`,
    /// replacing an older fence of the same context. `ENOSPC` once these
    /// slots are used up. `fence` must be a plain fence, not a container
    /// (`dma_fence_array`, `dma_fence_chain`): C warns about those.
    ///
    /// Does not allocate when these slots are the only ones in use: it asks
    /// C for one free slot first, which only allocates (and may then fail
    /// with `ENOMEM`) if other `FenceSlots` of the same lock hold used more
    /// than their reservation, which would otherwise be a `BUG()` in C.
    pub fn add(&mut self, fence: &Fence, usage: Usage) -> Result {
        if self.left == 0 {
            return Err(ENOSPC);
        }
        let resv = self.resv.0.get();
        // SAFETY: Locked by this task (invariant of `ResvLocked`). With a
        // free slot reserved this returns at once.
        to_result(unsafe { bindings::dma_resv_reserve_fences(resv, 1) })?;
        self.left -= 1;
        // SAFETY: Locked by this task, with a free slot (just checked);
        // `fence` is live.
        unsafe { bindings::dma_resv_add_fence(resv, fence.as_raw(), usage as u32) };
        Ok(())
    }

    /// How many slots are left.
    pub fn left(&self) -> u32 {
        self.left
    }
}

/// A reservation object owned by Rust (for objects that are not GEM
/// objects or DMA buffers, and for tests).
#[pin_data(PinnedDrop)]
pub struct OwnedResv {
    #[pin]
    resv: Resv,
}

impl OwnedResv {
    /// An empty reservation object.
    pub fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid for writes and pinned; `dma_resv_init`
            // initialises it fully.
            resv <- unsafe {
                pin_init::pin_init_from_closure(|slot: *mut Resv| {
                    bindings::dma_resv_init(slot.cast());
                    Ok::<(), core::convert::Infallible>(())
                })
            },
        })
    }
}

impl core::ops::Deref for OwnedResv {
    type Target = Resv;

    fn deref(&self) -> &Resv {
        &self.resv
    }
}

#[pinned_drop]
impl PinnedDrop for OwnedResv {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: Initialised in `new`; nobody borrows it any more (we have
        // `&mut`). (A guard forgotten with `mem::forget` leaves it locked;
        // `dma_resv_fini` only frees its fences and lock debug state, and the
        // memory is freed after this, so nothing waits on it.)
        unsafe { bindings::dma_resv_fini(self.resv.as_raw()) };
    }
}
