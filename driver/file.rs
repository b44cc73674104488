// SPDX-License-Identifier: GPL-2.0-only

//! Per-open state of the DRM device.
//!
//! Owns what a file of `/dev/dri/card*` or `renderD*` carries. Without virgl (3D contexts) a
//! file needs no host context, as in the C driver, which allocates a context id at open only
//! when the device has virgl; that comes with 3D support. Takes no lock.

use crate::{
    DrmDevice,
    DrmDriver, //
};
use kernel::{
    drm,
    prelude::*, //
};

/// The driver's part of an open DRM file.
pub(crate) struct File;

impl drm::file::DriverFile for File {
    type Driver = DrmDriver;

    fn open(_dev: &DrmDevice) -> Result<Pin<KBox<Self>>> {
        Ok(KBox::new(Self, GFP_KERNEL)?.into())
    }
}
