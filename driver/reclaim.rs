// SPDX-License-Identifier: GPL-2.0-only

//! Freeing, in process context, what the device has released.
//!
//! Owns [`DeviceData`], the DRM device's data, which lives as long as the DRM device (open files
//! and GEM objects keep it after unbind), and [`Reclaimed`]:
//!
//! - **Reclaim.** An object whose host resource was unreferenced may be freed only once the
//!   device has answered the `RESOURCE_UNREF`, which the interrupt handler learns. Freeing may
//!   sleep, so the handler moves the object, wrapped in a [`Reclaimed`] allocated when the unref
//!   was sent, onto the `reclaim` list (no allocation) and queues the work item, which frees
//!   the list's objects in process context. Unbind flushes the work item once the device can no
//!   longer complete commands, so the module's code never runs after the binding is gone.
//! - **Leaks over use-after-free.** An object is freed only once the device is known to be done
//!   with its memory: it answered the unref, or it was reset. An unref the queue refuses parks
//!   its object on the queue until the reset at unbind ([`crate::queue`]). A [`Reclaimed`]
//!   dropped before either (the unref command could not even be built) leaks its object rather
//!   than free memory the host may still read.
//!
//! Locks: `reclaim` (`SpinLockIrq`) is taken by the interrupt handler with `lock_with` while it
//! holds a queue lock, so it comes after the queue locks; the work item takes it with `lock()`.

use crate::{
    faults::Faults,
    gem::{
        self,
        Bo, //
    },
    DrmDevice, //
};
use core::mem::ManuallyDrop;
use kernel::{
    drm::gem::Release,
    interrupt::LocalInterruptDisabled,
    list::{
        impl_list_arc_safe,
        impl_list_item,
        List,
        ListArc,
        ListLinks, //
    },
    new_spinlock_irq, new_work,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{
            Atomic,
            Relaxed, //
        },
        SpinLockIrq,
        UniqueArc, //
    },
    workqueue::{
        self,
        impl_has_work,
        Work,
        WorkItem, //
    },
};

/// What a command keeps until the device has answered it, then lets go in process context: an
/// object to free once the device released its host resource, a reference to an object the
/// command names (whose last put may free it), or the data that follows the command (which may
/// be `vmalloc`ed, and `vfree` may sleep outside interrupts: on transports that call back from
/// a thread).
///
/// # Invariants
///
/// `obj` is dropped only by the drop of `self`, and only once `device_done` is set.
#[pin_data(PinnedDrop)]
pub(crate) struct Reclaimed {
    #[pin]
    links: ListLinks,
    /// Set once the device is done with `obj`'s memory (it answered, or it was reset).
    device_done: Atomic<bool>,
    obj: ManuallyDrop<Option<Release<Bo>>>,
    held: Option<ARef<gem::Object>>,
    data: KVVec<u8>,
}

impl_list_arc_safe! {
    impl ListArcSafe<0> for Reclaimed { untracked; }
}
impl_list_item! {
    impl ListItem<0> for Reclaimed { using ListLinks { self.links }; }
}

impl Reclaimed {
    /// Wraps `obj`, to be freed once the device answered. On failure `obj` comes back.
    pub(crate) fn free(obj: Release<Bo>) -> Result<ListArc<Self>, Release<Bo>> {
        // Allocate before `obj` moves into the initialiser, so that it comes back on failure.
        let Ok(slot) = UniqueArc::<Self>::new_uninit(GFP_KERNEL) else {
            return Err(obj);
        };
        Ok(Self::init(slot, Some(obj), None, KVVec::new()))
    }

    /// Holds a reference to `obj` until the device answered.
    pub(crate) fn hold(obj: ARef<gem::Object>) -> Result<ListArc<Self>> {
        let slot = UniqueArc::<Self>::new_uninit(GFP_KERNEL)?;
        Ok(Self::init(slot, None, Some(obj), KVVec::new()))
    }

    /// Keeps `data`, which the device reads after the command, until the device answered.
    pub(crate) fn read_by_device(data: KVVec<u8>) -> Result<ListArc<Self>> {
        let slot = UniqueArc::<Self>::new_uninit(GFP_KERNEL)?;
        Ok(Self::init(slot, None, None, data))
    }

    fn init(
        slot: UniqueArc<core::mem::MaybeUninit<Self>>,
        obj: Option<Release<Bo>>,
        held: Option<ARef<gem::Object>>,
        data: KVVec<u8>,
    ) -> ListArc<Self> {
        // INVARIANT: Not done yet.
        let node = slot.pin_init_with(pin_init!(Self {
            links <- ListLinks::new(),
            device_done: Atomic::new(false),
            obj: ManuallyDrop::new(obj),
            held,
            data,
        }));
        // `pin_init!` without fallible fields cannot fail: the error is `Infallible`.
        match node {
            Ok(node) => ListArc::from(node),
            Err(never) => match never {},
        }
    }

    /// The data the device reads after the command (empty if none).
    pub(crate) fn data(&self) -> &[u8] {
        &self.data
    }

    /// Whether this frees an object: then it must not be dropped before the device is done.
    pub(crate) fn frees_object(&self) -> bool {
        self.obj.is_some()
    }

    /// Records that the device is done with the object's memory: it may be freed.
    pub(crate) fn set_device_done(&self) {
        self.device_done.store(true, Relaxed);
    }
}

#[pinned_drop]
impl PinnedDrop for Reclaimed {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: `obj` is not structurally pinned; it is taken out once, here.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: Taken once, here (type invariant); `obj` is not used after.
        let Some(obj) = (unsafe { ManuallyDrop::take(&mut this.obj) }) else {
            return;
        };
        if this.device_done.load(Relaxed) {
            drop(obj);
        } else {
            leak(obj);
        }
    }
}

fn log_leak(obj: &Release<Bo>) {
    pr_err!(
        "resource {} not released by the device: leaking its memory\n",
        obj.data().resource_id()
    );
}

/// Leaks an object whose memory the device may still use (its unref could not be sent).
pub(crate) fn leak(obj: Release<Bo>) {
    log_leak(&obj);
    core::mem::forget(obj);
}

/// The DRM device's data: see the module documentation.
#[pin_data]
pub(crate) struct DeviceData {
    /// Objects the device has released, to be freed by `work`.
    #[pin]
    reclaim: SpinLockIrq<List<Reclaimed>>,
    #[pin]
    work: Work<DrmDevice>,
    /// The faults the driver is told to simulate (tests only; see [`crate::faults`]).
    pub(crate) faults: Faults,
}

impl_has_work! {
    impl HasWork<DrmDevice> for DeviceData { self.work }
}

impl WorkItem for DeviceData {
    type Pointer = ARef<DrmDevice>;

    fn run(dev: ARef<DrmDevice>) {
        // One at a time: the lock is not held while an object is freed (that may sleep).
        loop {
            let next = dev.reclaim.lock().pop_front();
            match next {
                Some(obj) => drop(obj),
                None => break,
            }
        }
    }
}

impl DeviceData {
    pub(crate) fn new() -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            reclaim <- new_spinlock_irq!(List::new(), "virtio_gpu_rs::DeviceData::reclaim"),
            work <- new_work!("virtio_gpu_rs::DeviceData::work"),
            faults: Faults::new(),
        })
    }
}

/// Hands `obj` to the reclaim work item of `dev`, from the interrupt handler.
///
/// The caller holds a queue lock, so that the queueing of the work item is ordered before that
/// queue's shut-down, after which unbind flushes it.
pub(crate) fn defer_with(dev: &DrmDevice, obj: ListArc<Reclaimed>, irq: &LocalInterruptDisabled) {
    dev.reclaim.lock_with(irq).push_back(obj);
    // Already queued is fine: it will see this object. The reference comes back then, and
    // dropping it does not free the device (the caller's queue holds one).
    let _ = workqueue::system_percpu().enqueue(ARef::from(dev));
}

/// Waits until the reclaim work item of `dev` is idle. Called at unbind, once the device can no
/// longer complete commands, so nothing queues it again.
pub(crate) fn flush(dev: &DrmDevice) {
    dev.work.flush();
}
