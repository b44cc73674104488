// SPDX-License-Identifier: GPL-2.0-only

//! GEM objects of the driver.
//!
//! For now an object has no backing and no host resource: the DRM core needs an object type to
//! register the device. Shmem-backed objects with host resources (`RESOURCE_CREATE_2D`,
//! `ATTACH_BACKING`, `UNREF`) replace it. Takes no lock.

use crate::DrmDriver;
use kernel::{
    drm::{
        self,
        gem, //
    },
    prelude::*, //
};

/// The driver's data of a GEM object.
#[pin_data]
pub(crate) struct Bo {}

impl gem::DriverObject for Bo {
    type Driver = DrmDriver;
    type Args = ();

    fn new(_dev: &drm::Device<DrmDriver>, _size: usize, _args: ()) -> impl PinInit<Self, Error> {
        try_pin_init!(Bo {})
    }
}
