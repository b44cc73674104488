// SPDX-License-Identifier: GPL-2.0-only

//! Modesetting: the display pipeline the card node offers.
//!
//! Owns the setup of the KMS objects, as C's `virtio_gpu_modeset_init()` makes them: per
//! scanout a primary plane ([`plane`]), a CRTC with a software vblank, a virtual encoder and a
//! virtual connector ([`connector`]); and the framebuffer formats the device scans out. DRM's
//! atomic helpers check and commit; the device sees a commit through the primary plane's
//! update, which sends `SET_SCANOUT`, `TRANSFER_TO_HOST_2D` (for dumb buffers) and
//! `RESOURCE_FLUSH`.
//!
//! Locks: DRM's modeset locks and `mode_config.mutex` are held around the callbacks; under
//! them the connector takes `VirtioGpu::displays` and the plane the control queue's lock (by
//! submitting). Neither is held across a call into DRM that takes a modeset lock.

use crate::{
    DrmDevice,
    DrmDriver, //
};
use kernel::{
    drm::{
        self,
        kms::{
            connector::Connector,
            crtc::{
                Crtc,
                DriverCrtc, //
            },
            encoder::Encoder,
            plane::{
                self as kms_plane,
                Plane, //
            },
            KmsDriver,
            Setup, //
        },
    },
    prelude::*,
};

mod connector;
mod plane;

/// The smallest framebuffer and mode, as C's.
const MIN_SIZE: (u32, u32) = (32, 32);
/// The largest, as C's.
const MAX_SIZE: (u32, u32) = (8192, 8192);
/// The size of a display the host gives no size for, as C's.
const DEFAULT_SIZE: (u32, u32) = (1024, 768);

/// DRM's `XRGB8888` in the CPU's byte order (C's `DRM_FORMAT_HOST_XRGB8888`): the format of the
/// resources of dumb buffers (see [`crate::protocol::FORMAT_HOST_XRGB8888`]).
#[cfg(target_endian = "little")]
pub(crate) const HOST_XRGB8888: u32 = kms_plane::FORMAT_XRGB8888;
/// `DRM_FORMAT_BGRX8888`, which is `XRGB8888` in big-endian memory.
#[cfg(target_endian = "big")]
pub(crate) const HOST_XRGB8888: u32 = kms_plane::fourcc(b"BX24");

/// DRM's `ARGB8888` in the CPU's byte order (C's `DRM_FORMAT_HOST_ARGB8888`).
#[cfg(target_endian = "little")]
const HOST_ARGB8888: u32 = kms_plane::FORMAT_ARGB8888;
/// `DRM_FORMAT_BGRA8888`, which is `ARGB8888` in big-endian memory.
#[cfg(target_endian = "big")]
const HOST_ARGB8888: u32 = kms_plane::fourcc(b"BA24");

impl KmsDriver for DrmDriver {
    const MIN_SIZE: (u32, u32) = MIN_SIZE;
    const MAX_SIZE: (u32, u32) = MAX_SIZE;
    // The host's pixels are in the guest's byte order.
    const ADDFB_HOST_BYTE_ORDER: bool = true;

    /// The formats of C's framebuffers; others get `ENOENT`, as from C.
    fn check_framebuffer_format(format: u32) -> Result {
        if format == HOST_XRGB8888 || format == HOST_ARGB8888 {
            Ok(())
        } else {
            Err(ENOENT)
        }
    }
}

/// A scanout's CRTC: its index is the scanout's.
struct Output;

impl DriverCrtc for Output {
    type Driver = DrmDriver;
}

/// Sets up the modesetting objects of `dev`: one output per scanout of the first `scanouts`
/// (at most [`MAX_SCANOUTS`](crate::protocol::MAX_SCANOUTS)), whose connectors have an `EDID`
/// property with `edid` (`VIRTIO_GPU_F_EDID`).
pub(crate) fn setup(
    dev: &drm::UnregisteredDevice<DrmDriver>,
    scanouts: usize,
    edid: bool,
) -> Result {
    let setup = Setup::new(dev)?;
    for scanout in 0..scanouts as u32 {
        let plane = Plane::new_primary(&setup, 1 << scanout, plane::Primary::new(scanout))?;
        let crtc = Crtc::new(&setup, plane, Output)?;
        // Made in scanout order: CRTC `i` is scanout `i`, as the plane's mask says.
        if crtc.index() != scanout {
            return Err(EINVAL);
        }
        let encoder = Encoder::new_virtual(&setup, 1 << crtc.index())?;
        Connector::new_virtual(&setup, encoder, edid, connector::Display::new(scanout))?;
    }
    setup.finish()
}

/// The registered device of a modesetting callback's `dev`, in `f`; `None` once unplugged.
fn with_gpu<R>(
    dev: &DrmDevice<drm::Ioctl>,
    f: impl for<'a> FnOnce(&'a crate::device::VirtioGpu<'a>) -> R,
) -> Option<R> {
    let guard = dev.registration_guard()?;
    Some(guard.registration_data_with(f))
}
