// SPDX-License-Identifier: GPL-2.0-only

//! The connector of a scanout: the host's display behind it.
//!
//! Owns [`Display`], which answers DRM's probe from [`Displays`](crate::display::Displays) as
//! the host last described them, as C's connector does: connected while the host has the
//! scanout enabled; the modes of its EDID if the host gave one, else the standard modes up to
//! 8192x8192 and the host's size (or 1024x768) as the preferred one. A preferred mode other
//! than the host's size (within 16 pixels) or 1024x768 is refused.
//!
//! Locks: DRM probes under `mode_config.mutex`; the probe takes `VirtioGpu::displays` under
//! it to copy what it needs, and calls into DRM only once it let go.

use super::{
    with_gpu,
    DEFAULT_SIZE,
    MAX_SIZE, //
};
use crate::{
    DrmDevice,
    DrmDriver, //
};
use kernel::{
    drm,
    drm::kms::connector::{
        Connector,
        DisplayMode,
        DriverConnector,
        Modes,
        Status, //
    },
    prelude::*,
};

/// The refresh rate of the host's mode, as C's.
const REFRESH_HZ: u32 = 60;

/// How far below the host's size a preferred mode may be, in pixels, as in C.
const SIZE_SLACK: u32 = 16;

/// The display behind the connector of scanout `scanout`.
pub(super) struct Display {
    scanout: usize,
}

impl Display {
    pub(super) fn new(scanout: u32) -> Self {
        Self {
            scanout: scanout as usize,
        }
    }

    /// The host's size of the display (0x0 if the host gave none), and whether it is enabled;
    /// `None` once the device is unplugged.
    fn host(&self, dev: &DrmDevice<drm::Ioctl>) -> Option<(u32, u32, bool)> {
        with_gpu(dev, |gpu| {
            gpu.displays
                .lock()
                .scanout(self.scanout)
                .map(|s| (s.width, s.height, s.enabled))
        })
        .flatten()
    }
}

impl DriverConnector for Display {
    type Driver = DrmDriver;

    fn detect(dev: &DrmDevice<drm::Ioctl>, connector: &Connector<Self>, _force: bool) -> Status {
        match connector.host(dev) {
            Some((_, _, true)) => Status::Connected,
            _ => Status::Disconnected,
        }
    }

    fn get_modes(
        dev: &DrmDevice<drm::Ioctl>,
        connector: &Connector<Self>,
        modes: &mut Modes<'_>,
    ) -> u32 {
        // Copied out: DRM takes its own locks to store the EDID, not under `displays`.
        let (edid, size) = with_gpu(dev, |gpu| {
            let displays = gpu.displays.lock();
            let edid = displays.edid(connector.scanout).map(|e| {
                let mut copy = KVec::new();
                copy.extend_from_slice(e, GFP_KERNEL).map(|()| copy)
            });
            let size = displays
                .scanout(connector.scanout)
                .map(|s| (s.width, s.height));
            (edid.transpose(), size)
        })
        .unwrap_or((Ok(None), None));
        // The EDID property follows the host's EDID; a bad one is cleared, as in C. Without
        // memory for the copy, the connector keeps the EDID it had.
        if let Ok(edid) = edid {
            let _ = modes.update_edid(edid.as_deref());
        }
        let count = modes.add_edid_modes();
        if count > 0 {
            return count;
        }
        let (width, height) = size.unwrap_or((0, 0));
        let count = modes.add_standard_modes(MAX_SIZE.0, MAX_SIZE.1);
        if width == 0 || height == 0 {
            modes.set_preferred(DEFAULT_SIZE.0, DEFAULT_SIZE.1);
            return count;
        }
        match modes.add_cvt(width, height, REFRESH_HZ, true) {
            Ok(()) => count + 1,
            Err(_) => count,
        }
    }

    fn mode_valid(
        dev: &DrmDevice<drm::Ioctl>,
        connector: &Connector<Self>,
        mode: &DisplayMode,
    ) -> bool {
        if !mode.is_preferred() || (mode.width(), mode.height()) == DEFAULT_SIZE {
            return true;
        }
        let (width, height) = connector.host(dev).map_or((0, 0), |(w, h, _)| (w, h));
        (width.saturating_sub(SIZE_SLACK)..=width).contains(&mode.width())
            && (height.saturating_sub(SIZE_SLACK)..=height).contains(&mode.height())
    }
}
