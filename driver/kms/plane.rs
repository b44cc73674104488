// SPDX-License-Identifier: GPL-2.0-only

//! The primary plane of a scanout: a commit shown on the device.
//!
//! Owns [`Primary`], whose update sends what C's `virtio_gpu_primary_plane_update()` sends:
//! with a framebuffer on an active CRTC, the damaged rectangle copied to the host
//! (`TRANSFER_TO_HOST_2D`, for a dumb buffer, whose pixels the CPU wrote), the scanout pointed
//! at the resource if the framebuffer, its source or the mode changed (`SET_SCANOUT`), and the
//! rectangle shown (`RESOURCE_FLUSH`), in one batch; without, the scanout switched off. The
//! commands go through the control queue without waiting for the answers, as in C.
//!
//! Locks: the commit holds the plane's modeset lock; the update takes the control queue's lock
//! (by submitting) and enters the DRM registration.

use super::{
    with_gpu,
    HOST_XRGB8888, //
};
use crate::{
    device::VirtioGpu,
    gem::Object,
    protocol::{
        self,
        CtrlHdr,
        ResourceFlush,
        SetScanout,
        TransferToHost2d, //
    },
    queue::Command,
    reclaim::Reclaimed,
    DrmDevice,
    DrmDriver, //
};
use kernel::{
    drm,
    drm::kms::plane::{
        DriverPlane,
        Plane,
        PlaneUpdate, //
    },
    prelude::*,
    ratelimit::RateLimit,
    sync::aref::ARef,
};

/// The size of the answer to the commands sent: a header.
const NODATA: usize = size_of::<CtrlHdr>();

/// The primary plane of a scanout.
#[pin_data]
pub(super) struct Primary {
    scanout: u32,
    /// Limits the log lines of updates that could not be sent.
    #[pin]
    errors: RateLimit,
}

impl Primary {
    /// The primary plane of scanout `scanout`.
    pub(super) fn new(scanout: u32) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            scanout,
            errors <- RateLimit::default(c"virtio_gpu_rs: plane updates"),
        })
    }
}

impl DriverPlane for Primary {
    type Driver = DrmDriver;

    const FORMATS: &'static [u32] = &[HOST_XRGB8888];

    fn atomic_update(
        dev: &DrmDevice<drm::Ioctl>,
        plane: &Plane<Self>,
        update: &PlaneUpdate<'_, DrmDriver>,
    ) {
        // Unplugged: the device is gone, nothing to show it on.
        let res = with_gpu(dev, |gpu| show(gpu, plane.scanout, update)).unwrap_or(Ok(()));
        match res {
            // The queues were shut down: the device is being unbound.
            Ok(()) | Err(ENODEV) => {}
            Err(e) => {
                if plane.errors.allow() {
                    pr_err!("scanout {}: update not sent: {:?}\n", plane.scanout, e);
                }
            }
        }
    }
}

/// Sends `update` of scanout `scanout`'s plane to `gpu`.
fn show(gpu: &VirtioGpu<'_>, scanout: u32, update: &PlaneUpdate<'_, DrmDriver>) -> Result {
    let queue = gpu.control();
    let src = update.source();
    let Some(fb) = update.framebuffer() else {
        let off = SetScanout::new(scanout, 0, src.width(), src.height(), 0, 0);
        return queue.submit(Command::new(protocol::encode(&off), NODATA)?);
    };
    let Some(damage) = update.damage() else {
        return Ok(());
    };
    let obj: &Object = fb.object(0).ok_or(EINVAL)?;
    let id = obj.resource_id();
    let (x, y) = (damage.x1.max(0) as u32, damage.y1.max(0) as u32);
    let mut batch = queue.batch();
    if obj.is_dumb() {
        let offset =
            u64::from(x) * u64::from(fb.bytes_per_pixel(0)) + u64::from(y) * u64::from(fb.pitch(0));
        let transfer = TransferToHost2d::new(id, offset, damage.width(), damage.height(), x, y);
        // The host reads the object's pages: it stays until the device has answered.
        let held: ARef<Object> = obj.into();
        batch.submit(Command::keeping(
            protocol::encode(&transfer),
            Reclaimed::hold(held),
            NODATA,
        )?)?;
    }
    if update.source_changed() || update.needs_modeset() {
        let set = SetScanout::new(
            scanout,
            id,
            src.width(),
            src.height(),
            src.x1.max(0) as u32,
            src.y1.max(0) as u32,
        );
        batch.submit(Command::new(protocol::encode(&set), NODATA)?)?;
    }
    let flush = ResourceFlush::new(id, damage.width(), damage.height(), x, y);
    batch.submit(Command::new(protocol::encode(&flush), NODATA)?)
}
