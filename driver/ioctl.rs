// SPDX-License-Identifier: GPL-2.0-only

//! The virtio-gpu ioctls: argument checks and results, errno for errno as the C driver.
//!
//! Owns the translation between `include/uapi/drm/virtgpu_drm.h` and the device state; every
//! handler runs inside the DRM core's `drm_dev_enter()` section, so the device is bound for its
//! whole run. Takes no lock of its own.

use crate::{
    device::VirtioGpu,
    file::File,
    DrmDevice, //
};
use kernel::{
    drm,
    prelude::*,
    uaccess::{
        UserPtr,
        UserSlice, //
    },
    uapi, //
};

/// `DRM_IOCTL_VIRTGPU_GETPARAM`: the value of one parameter, written as a C `int` (4 bytes) to
/// the user pointer `value`, as the C driver writes it.
///
/// `EINVAL` for an unknown parameter, `ENOENT` for the blob alignment of a device without one,
/// `EFAULT` for a bad pointer.
pub(crate) fn get_param(
    _dev: &DrmDevice<drm::Registered>,
    gpu: &VirtioGpu<'_>,
    args: &mut uapi::drm_virtgpu_getparam,
    _file: &drm::File<File>,
) -> Result<u32> {
    let f = &gpu.features;
    let value: i32 = match u32::try_from(args.param).map_err(|_| EINVAL)? {
        uapi::VIRTGPU_PARAM_3D_FEATURES => f.virgl.into(),
        uapi::VIRTGPU_PARAM_CAPSET_QUERY_FIX => 1,
        uapi::VIRTGPU_PARAM_RESOURCE_BLOB => f.resource_blob.into(),
        // No host-visible memory window is mapped yet.
        uapi::VIRTGPU_PARAM_HOST_VISIBLE => 0,
        uapi::VIRTGPU_PARAM_CROSS_DEVICE => f.resource_uuid.into(),
        uapi::VIRTGPU_PARAM_CONTEXT_INIT => f.context_init.into(),
        // The mask is what C reports, an `int`: ids above 31 do not fit in it there either.
        uapi::VIRTGPU_PARAM_SUPPORTED_CAPSET_IDs => gpu.capset_id_mask() as i32,
        uapi::VIRTGPU_PARAM_EXPLICIT_DEBUG_NAME => f.context_init.into(),
        uapi::VIRTGPU_PARAM_BLOB_ALIGNMENT => match gpu.blob_alignment {
            Some(a) => a as i32,
            None => return Err(ENOENT),
        },
        _ => return Err(EINVAL),
    };
    let ptr = UserPtr::from_addr(args.value as usize);
    UserSlice::new(ptr, size_of::<i32>())
        .writer()
        .write(&value)?;
    Ok(0)
}
