// SPDX-License-Identifier: GPL-2.0-only

//! Fault injection for tests: a device that stops answering.
//!
//! Owns [`Faults`], the switches a bound device's driver consults (kept in the DRM device's
//! data, so the interrupt handler reaches them), and [`Knobs`], the debugfs directory of a bound
//! device that sets them, `/sys/kernel/debug/virtio_gpu_rs-<device>/`:
//!
//! - `hold_completions`: while `1`, the queues' interrupt handler leaves the buffers the device
//!   used where they are, as if the device had stopped answering: fences stay unsignalled,
//!   synchronous commands time out, and the queue fills up until submitters wait for room.
//!   Writing `0` completes what was held, as the interrupt handler would.
//!
//! Tests use it to remove a device whose queue is full while a submitter waits, and to interrupt
//! a wait for a fence. Without `CONFIG_DRM_VIRTIO_GPU_RS_FAULT_INJECTION` there is no directory
//! and [`Faults::holds_completions`] is a constant `false`.
//!
//! Locks: none of its own. Releasing the held completions takes each queue's lock as the
//! interrupt handler does (`lock_with`, with interrupts disabled locally).

use crate::DrmDriver;
use kernel::prelude::*;

#[cfg(CONFIG_DRM_VIRTIO_GPU_RS_FAULT_INJECTION)]
use kernel::{
    debugfs::{
        Dir,
        File, //
    },
    device::Core,
    drm::{
        self,
        device::RegisteredRef, //
    },
    fmt,
    interrupt::local_interrupt_disable,
    str::CString,
    sync::atomic::{
        Atomic,
        Relaxed, //
    },
    uaccess::UserSliceReader,
    virtio,
};

/// The faults a device's driver is told to simulate.
pub(crate) struct Faults {
    #[cfg(CONFIG_DRM_VIRTIO_GPU_RS_FAULT_INJECTION)]
    hold: Atomic<bool>,
}

impl Faults {
    pub(crate) fn new() -> Self {
        Self {
            #[cfg(CONFIG_DRM_VIRTIO_GPU_RS_FAULT_INJECTION)]
            hold: Atomic::new(false),
        }
    }

    /// Whether the interrupt handler must leave used buffers to a later completion.
    #[inline]
    pub(crate) fn holds_completions(&self) -> bool {
        #[cfg(CONFIG_DRM_VIRTIO_GPU_RS_FAULT_INJECTION)]
        return self.hold.load(Relaxed);
        #[cfg(not(CONFIG_DRM_VIRTIO_GPU_RS_FAULT_INJECTION))]
        false
    }
}

/// The debugfs directory of a bound device; removed (waiting for running writes) when dropped.
pub(crate) struct Knobs {
    #[cfg(CONFIG_DRM_VIRTIO_GPU_RS_FAULT_INJECTION)]
    _hold: Option<Pin<KBox<File<RegisteredRef<DrmDriver>>>>>,
    #[cfg(CONFIG_DRM_VIRTIO_GPU_RS_FAULT_INJECTION)]
    _dir: Dir,
}

#[cfg(CONFIG_DRM_VIRTIO_GPU_RS_FAULT_INJECTION)]
impl Knobs {
    /// Creates the directory of the device `vdev`, bound with the DRM device of `drm`. Failing
    /// to create it is not an error: only tests use it, and they find it missing.
    pub(crate) fn new(
        vdev: &virtio::Device<Core<'_>>,
        drm: &drm::Registration<'_, DrmDriver>,
    ) -> Self {
        let name = CString::try_from_fmt(fmt!("virtio_gpu_rs-{}", vdev.as_ref().name()));
        let dir = match &name {
            Ok(name) => Dir::new(name),
            Err(_) => Dir::new(c"virtio_gpu_rs"),
        };
        let hold = KBox::pin_init(
            dir.read_write_callback_file(
                c"hold_completions",
                drm.registered_ref(),
                &show_hold,
                &store_hold,
            ),
            GFP_KERNEL,
        )
        .ok();
        Self {
            _hold: hold,
            _dir: dir,
        }
    }
}

#[cfg(not(CONFIG_DRM_VIRTIO_GPU_RS_FAULT_INJECTION))]
impl Knobs {
    /// Nothing to create without fault injection.
    pub(crate) fn new(
        _vdev: &kernel::virtio::Device<kernel::device::Core<'_>>,
        _drm: &kernel::drm::Registration<'_, DrmDriver>,
    ) -> Self {
        Self {}
    }
}

#[cfg(CONFIG_DRM_VIRTIO_GPU_RS_FAULT_INJECTION)]
fn show_hold(dev: &RegisteredRef<DrmDriver>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    writeln!(f, "{}", u8::from(dev.device().faults.holds_completions()))
}

#[cfg(CONFIG_DRM_VIRTIO_GPU_RS_FAULT_INJECTION)]
fn store_hold(dev: &RegisteredRef<DrmDriver>, reader: &mut UserSliceReader) -> Result {
    let mut buf = [0u8; 8];
    let len = reader.len();
    let text = buf.get_mut(..len).ok_or(EINVAL)?;
    reader.read_slice(text)?;
    let hold = match text.strip_suffix(b"\n").unwrap_or(text) {
        b"1" | b"y" | b"Y" => true,
        b"0" | b"n" | b"N" => false,
        _ => return Err(EINVAL),
    };
    if dev.device().faults.hold.xchg(hold, Relaxed) && !hold {
        release(dev);
    }
    Ok(())
}

/// Completes what the queues held, as their interrupt handler would have: with interrupts
/// disabled, which is what the queue lock's `lock_with` needs. Nothing if the device was
/// unbound meanwhile (its queues were shut down).
#[cfg(CONFIG_DRM_VIRTIO_GPU_RS_FAULT_INJECTION)]
fn release(dev: &RegisteredRef<DrmDriver>) {
    let Some(guard) = dev.registration_guard() else {
        return;
    };
    guard.registration_data_with(|gpu| {
        let irq = local_interrupt_disable();
        for queue in gpu.queues() {
            queue.complete(dev.device(), &irq);
        }
    });
}
