// SPDX-License-Identifier: GPL-2.0-only

//! The virtio-gpu ioctls: argument checks and results, errno for errno as the C driver.
//!
//! Owns the translation between `include/uapi/drm/virtgpu_drm.h` and the device state; every
//! handler runs inside the DRM core's `drm_dev_enter()` section, so the device is bound for its
//! whole run. Takes no lock of its own.

use crate::{
    device::VirtioGpu,
    file::File,
    gem::{
        self,
        Bo,
        MadeBy, //
    },
    protocol::{
        self,
        CtrlHdr,
        TransferToHost2d, //
    },
    queue::Command,
    reclaim::Reclaimed,
    DrmDevice, //
};
use kernel::{
    dma_fence::FenceAllocation,
    dma_resv::{
        Resv,
        Usage, //
    },
    drm::{
        self,
        gem::BaseObject, //
    },
    page::PAGE_SIZE,
    prelude::*,
    time::Delta,
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

/// `DRM_IOCTL_MODE_CREATE_DUMB`: a linear XRGB8888 buffer backed by a 2D host resource, as C's.
///
/// The core has checked that width, height and bpp are non-zero and that `width * 4 * height`,
/// page-aligned, fits in 32 bits. `EINVAL` for a bpp other than 32, as C.
pub(crate) fn dumb_create(
    dev: &DrmDevice<drm::Registered>,
    gpu: &VirtioGpu<'_>,
    file: &drm::File<File>,
    args: &mut uapi::drm_mode_create_dumb,
) -> Result {
    if args.bpp != 32 {
        return Err(EINVAL);
    }
    let pitch = args.width.checked_mul(4).ok_or(EINVAL)?;
    let size = (pitch.checked_mul(args.height).ok_or(EINVAL)? as usize)
        .checked_next_multiple_of(PAGE_SIZE)
        .ok_or(EINVAL)?;
    // Written before the object exists, as C writes it.
    args.size = size as u64;
    // The device hears of the commands once the handle exists, as from C's GEM open callback.
    let mut batch = gpu.control().batch();
    let obj = Bo::create_2d(
        dev,
        &mut batch,
        size,
        protocol::FORMAT_HOST_XRGB8888,
        args.width,
        args.height,
        MadeBy::Dumb,
    )?;
    args.handle = obj.create_handle(file)?;
    args.pitch = pitch;
    Ok(())
}

/// `DRM_IOCTL_VIRTGPU_MAP`: the fake offset to `mmap` the object `handle` at, as C's
/// `drm_gem_dumb_map_offset()`. `ENOENT` for an unknown handle.
pub(crate) fn map(
    _dev: &DrmDevice<drm::Registered>,
    _gpu: &VirtioGpu<'_>,
    args: &mut uapi::drm_virtgpu_map,
    file: &drm::File<File>,
) -> Result<u32> {
    let obj = gem::Object::lookup_handle(file, args.handle)?;
    args.offset = obj.create_mmap_offset()?;
    Ok(0)
}

/// `DRM_IOCTL_VIRTGPU_RESOURCE_CREATE`, for a device without virgl: a 2D resource backed by a
/// new object, whose creation fence is in the object's reservation (what `WAIT` waits for).
///
/// As C without virgl: `EINVAL` for a depth, sample count, level count or array size above 1,
/// or a target other than 2 (`PIPE_TEXTURE_2D`); a size of 0 means one page. The format is
/// the host's to check: a bad one gets an error answer, logged, as in C.
pub(crate) fn resource_create(
    dev: &DrmDevice<drm::Registered>,
    gpu: &VirtioGpu<'_>,
    args: &mut uapi::drm_virtgpu_resource_create,
    file: &drm::File<File>,
) -> Result<u32> {
    if args.depth > 1
        || args.nr_samples > 1
        || args.last_level > 1
        || args.target != 2
        || args.array_size > 1
    {
        return Err(EINVAL);
    }
    let size = match args.size {
        0 => PAGE_SIZE,
        // Cannot overflow on 64-bit; on 32-bit a size near 4 GiB could.
        n => (n as usize)
            .checked_next_multiple_of(PAGE_SIZE)
            .ok_or(EINVAL)?,
    };
    let fence = FenceAllocation::new(GFP_KERNEL)?;
    // The device hears of the commands once the handle exists, as from C's GEM open callback.
    let mut batch = gpu.control().batch();
    let obj = Bo::create_2d(
        dev,
        &mut batch,
        size,
        args.format,
        args.width,
        args.height,
        MadeBy::ResourceCreate(fence),
    )?;
    let handle = obj.create_handle(file)?;
    args.res_handle = obj.resource_id();
    args.bo_handle = handle;
    Ok(0)
}

/// `DRM_IOCTL_VIRTGPU_RESOURCE_INFO`: the object's size (cut to 32 bits, as C) and resource id.
/// `ENOENT` for an unknown handle.
pub(crate) fn resource_info(
    _dev: &DrmDevice<drm::Registered>,
    _gpu: &VirtioGpu<'_>,
    args: &mut uapi::drm_virtgpu_resource_info,
    file: &drm::File<File>,
) -> Result<u32> {
    let obj = gem::Object::lookup_handle(file, args.bo_handle)?;
    args.size = obj.size() as u32;
    args.res_handle = obj.resource_id();
    Ok(0)
}

/// `DRM_IOCTL_VIRTGPU_TRANSFER_TO_HOST`, for a device without virgl: the host copies the box
/// from the object's pages into its resource. Not fenced, as C's 2D path; the command holds a
/// reference to the object until the device has answered. `ENOENT` for an unknown handle; the
/// box is the host's to check.
pub(crate) fn transfer_to_host(
    _dev: &DrmDevice<drm::Registered>,
    gpu: &VirtioGpu<'_>,
    args: &mut uapi::drm_virtgpu_3d_transfer_to_host,
    file: &drm::File<File>,
) -> Result<u32> {
    let obj = gem::Object::lookup_handle(file, args.bo_handle)?;
    let b = &args.box_;
    let transfer = TransferToHost2d::new(obj.resource_id(), args.offset.into(), b.w, b.h, b.x, b.y);
    let cmd = Command::keeping(
        protocol::encode(&transfer),
        Reclaimed::hold(obj),
        size_of::<CtrlHdr>(),
    )?;
    gpu.control().submit(cmd)?;
    Ok(0)
}

/// How long `WAIT` waits, as C: 15 s.
const WAIT_TIMEOUT: Delta = Delta::from_secs(15);

/// `DRM_IOCTL_VIRTGPU_WAIT`: waits (interruptibly, at most 15 s) until every fence in the
/// object's reservation has signalled. `EBUSY` if one has not (at once with
/// `VIRTGPU_WAIT_NOWAIT`), `ENOENT` for an unknown handle, `ERESTARTSYS` on a signal, as C.
pub(crate) fn wait(
    _dev: &DrmDevice<drm::Registered>,
    _gpu: &VirtioGpu<'_>,
    args: &mut uapi::drm_virtgpu_3d_wait,
    file: &drm::File<File>,
) -> Result<u32> {
    let obj = gem::Object::lookup_handle(file, args.handle)?;
    let resv = Resv::of_gem(&*obj);
    let idle = if args.flags & uapi::VIRTGPU_WAIT_NOWAIT != 0 {
        resv.test_signaled(Usage::Read)
    } else {
        resv.wait_timeout(Usage::Read, true, WAIT_TIMEOUT)?
    };
    if idle {
        Ok(0)
    } else {
        Err(EBUSY)
    }
}

/// `DRM_IOCTL_VIRTGPU_EXECBUFFER` and `DRM_IOCTL_VIRTGPU_TRANSFER_FROM_HOST`: 3D commands. The
/// driver has no virgl support yet (`VIRTGPU_PARAM_3D_FEATURES` says 0), so `ENOSYS`, which is
/// what C returns on a device without virgl.
pub(crate) fn no_virgl<T>(
    _dev: &DrmDevice<drm::Registered>,
    _gpu: &VirtioGpu<'_>,
    _args: &mut T,
    _file: &drm::File<File>,
) -> Result<u32> {
    Err(ENOSYS)
}

/// `DRM_IOCTL_VIRTGPU_GET_CAPS`: `ENOSYS` on a device without capsets, as C; the capset cache
/// that answers the others is not there yet, so they get `ENOSYS` too (the driver reports no 3D
/// features, so userspace does not ask).
pub(crate) fn get_caps(
    _dev: &DrmDevice<drm::Registered>,
    gpu: &VirtioGpu<'_>,
    args: &mut uapi::drm_virtgpu_get_caps,
    _file: &drm::File<File>,
) -> Result<u32> {
    if !gpu.capsets.is_empty() && args.size == 0 {
        return Err(EINVAL);
    }
    Err(ENOSYS)
}

/// `DRM_IOCTL_VIRTGPU_RESOURCE_CREATE_BLOB` and `DRM_IOCTL_VIRTGPU_CONTEXT_INIT`: `EINVAL`,
/// what C returns on a device without blob resources or without virgl and context init; the
/// driver has neither yet (`VIRTGPU_PARAM_RESOURCE_BLOB` and `VIRTGPU_PARAM_CONTEXT_INIT` say 0).
pub(crate) fn not_supported<T>(
    _dev: &DrmDevice<drm::Registered>,
    _gpu: &VirtioGpu<'_>,
    _args: &mut T,
    _file: &drm::File<File>,
) -> Result<u32> {
    Err(EINVAL)
}
