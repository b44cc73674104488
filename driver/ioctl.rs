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

/// Whether the driver has the 3D ioctls (`EXECBUFFER`, `GET_CAPS`, 3D resources): not yet.
const IMPLEMENTS_VIRGL: bool = false;
/// Whether the driver has `RESOURCE_CREATE_BLOB`: not yet.
const IMPLEMENTS_BLOB: bool = false;
/// Whether the driver has `CONTEXT_INIT`: not yet.
const IMPLEMENTS_CONTEXT_INIT: bool = false;

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
    // A parameter that promises ioctls says so only once the driver has them: userspace (Mesa)
    // trusts these. Until then the answer is 0 where C would say 1 for the device's feature.
    let (virgl, blob, context_init) = (
        f.virgl && IMPLEMENTS_VIRGL,
        f.resource_blob && IMPLEMENTS_BLOB,
        f.context_init && IMPLEMENTS_CONTEXT_INIT,
    );
    let value: i32 = match u32::try_from(args.param).map_err(|_| EINVAL)? {
        uapi::VIRTGPU_PARAM_3D_FEATURES => virgl.into(),
        uapi::VIRTGPU_PARAM_CAPSET_QUERY_FIX => 1,
        uapi::VIRTGPU_PARAM_RESOURCE_BLOB => blob.into(),
        // No host-visible memory window is mapped yet.
        uapi::VIRTGPU_PARAM_HOST_VISIBLE => 0,
        uapi::VIRTGPU_PARAM_CROSS_DEVICE => f.resource_uuid.into(),
        uapi::VIRTGPU_PARAM_CONTEXT_INIT => context_init.into(),
        // One bit per capset id (1 to 63), written as an `int` as C writes it: the ids above 31
        // are cut off there too (C's own `1 << id` is undefined for them).
        uapi::VIRTGPU_PARAM_SUPPORTED_CAPSET_IDs => gpu.capset_id_mask() as i32,
        uapi::VIRTGPU_PARAM_EXPLICIT_DEBUG_NAME => context_init.into(),
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
