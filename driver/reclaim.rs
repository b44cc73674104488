// SPDX-License-Identifier: GPL-2.0-only

//! Freeing, in process context, what the device has released.
//!
//! Owns [`DeviceData`], the DRM device's data, which lives as long as the DRM device (open files
//! and GEM objects keep it after unbind), and [`Reclaimed`]:
//!
//! - **Reclaim.** An object whose host resource was unreferenced may be freed only once the
//!   device has answered the `RESOURCE_UNREF`, which the interrupt handler learns. Freeing may
//!   sleep, so the handler puts the command, which holds the object in its [`Reclaimed`], on the
//!   `reclaim` stack (linked through the commands: no allocation) and queues the work item,
//!   which drops those commands in process context. Unbind flushes the work item once the device
//!   can no longer complete commands, so the module's code never runs after the binding is gone.
//! - **Leaks over use-after-free.** An object is freed only once the device is known to be done
//!   with its memory: it answered the unref, or it was reset. An unref the queue refuses is
//!   parked on the queue until the reset at unbind ([`crate::queue`]). A [`Reclaimed`] dropped
//!   before either (the unref command could not even be allocated) leaks its object rather than
//!   free memory the host may still read.
//!
//! Locks: `reclaim` (`SpinLockIrq`) is taken by the interrupt handler with `lock_with` while it
//! holds a queue lock, so it comes after the queue locks; the work item takes it with `lock()`.

use crate::{
    faults::Faults,
    gem::{
        self,
        Bo, //
    },
    queue::{
        Command,
        Commands, //
    },
    DrmDevice, //
};
use kernel::{
    drm::gem::Release,
    interrupt::LocalInterruptDisabled,
    new_spinlock_irq, new_work,
    prelude::*,
    sync::{
        aref::ARef,
        SpinLockIrq, //
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
/// `obj` is dropped only once `device_done` is set; dropped before, it is leaked.
pub(crate) struct Reclaimed {
    /// Set once the device is done with `obj`'s memory (it answered, or it was reset).
    device_done: bool,
    obj: Option<Release<Bo>>,
    /// Kept for its drop only: the reference is put once the device answered.
    _held: Option<ARef<gem::Object>>,
    data: KVVec<u8>,
}

impl Reclaimed {
    /// Frees `obj` once the device answered.
    pub(crate) fn free(obj: Release<Bo>) -> Self {
        Self::new(Some(obj), None, KVVec::new())
    }

    /// Holds a reference to `obj` until the device answered.
    pub(crate) fn hold(obj: ARef<gem::Object>) -> Self {
        Self::new(None, Some(obj), KVVec::new())
    }

    /// Keeps `data`, which the device reads after the command, until the device answered.
    pub(crate) fn read_by_device(data: KVVec<u8>) -> Self {
        Self::new(None, None, data)
    }

    fn new(obj: Option<Release<Bo>>, held: Option<ARef<gem::Object>>, data: KVVec<u8>) -> Self {
        // INVARIANT: Not done yet.
        Self {
            device_done: false,
            obj,
            _held: held,
            data,
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
    pub(crate) fn set_device_done(&mut self) {
        self.device_done = true;
    }
}

impl Drop for Reclaimed {
    fn drop(&mut self) {
        let Some(obj) = self.obj.take() else {
            return;
        };
        if self.device_done {
            drop(obj);
        } else {
            leak(obj);
        }
    }
}

/// Leaks an object whose memory the device may still use (its unref could not be sent).
fn leak(obj: Release<Bo>) {
    pr_err!(
        "resource {} not released by the device: leaking its memory\n",
        obj.data().resource_id()
    );
    core::mem::forget(obj);
}

/// The DRM device's data: see the module documentation.
#[pin_data]
pub(crate) struct DeviceData {
    /// Answered commands that keep what must be let go in process context, for `work`.
    #[pin]
    reclaim: SpinLockIrq<Commands>,
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
            let next = dev.reclaim.lock().pop();
            match next {
                Some(cmd) => drop(cmd),
                None => break,
            }
        }
    }
}

impl DeviceData {
    pub(crate) fn new() -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            reclaim <- new_spinlock_irq!(Commands::new(), "virtio_gpu_rs::DeviceData::reclaim"),
            work <- new_work!("virtio_gpu_rs::DeviceData::work"),
            faults: Faults::new(),
        })
    }
}

/// Hands the answered `cmd` to the reclaim work item of `dev`, from the interrupt handler.
///
/// The caller holds a queue lock, so that the queueing of the work item is ordered before that
/// queue's shut-down, after which unbind flushes it.
pub(crate) fn defer_with(dev: &DrmDevice, cmd: KBox<Command>, irq: &LocalInterruptDisabled) {
    dev.reclaim.lock_with(irq).push(cmd);
    // Already queued is fine: it will see this command. The reference comes back then, and
    // dropping it does not free the device (the caller's queue holds one).
    let _ = workqueue::system_percpu().enqueue(ARef::from(dev));
}

/// Waits until the reclaim work item of `dev` is idle. Called at unbind, once the device can no
/// longer complete commands, so nothing queues it again.
pub(crate) fn flush(dev: &DrmDevice) {
    dev.work.flush();
}
