// SPDX-License-Identifier: GPL-2.0-only

//! The virtio-gpu wire protocol: typed commands and responses.
//!
//! Owns the byte-level view of what travels on the control and cursor queues, over the uapi
//! header `include/uapi/linux/virtio_gpu.h` (every field little-endian). Nothing here locks.

use kernel::{
    prelude::*,
    transmute::{
        AsBytes,
        FromBytes, //
    },
    uapi, //
};

/// `struct virtio_gpu_ctrl_hdr`, the header of every command and response.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub(crate) struct CtrlHdr(uapi::virtio_gpu_ctrl_hdr);

// SAFETY: `virtio_gpu_ctrl_hdr` is made of integers and an explicit padding array: no implicit
// padding, every bit pattern valid.
unsafe impl AsBytes for CtrlHdr {}
// SAFETY: As above.
unsafe impl FromBytes for CtrlHdr {}

impl CtrlHdr {
    /// The header of a command of type `ty` (`VIRTIO_GPU_CMD_*`), without fence or context.
    pub(crate) fn command(ty: u32) -> Self {
        Self(uapi::virtio_gpu_ctrl_hdr {
            type_: ty.to_le(),
            flags: 0,
            fence_id: 0,
            ctx_id: 0,
            ring_idx: 0,
            padding: [0; 3],
        })
    }

    /// The command or response type.
    pub(crate) fn ty(&self) -> u32 {
        u32::from_le(self.0.type_)
    }
}

/// `VIRTIO_GPU_CMD_GET_DISPLAY_INFO`.
pub(crate) const CMD_GET_DISPLAY_INFO: u32 =
    uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_DISPLAY_INFO;
/// `VIRTIO_GPU_RESP_OK_DISPLAY_INFO`.
pub(crate) const RESP_OK_DISPLAY_INFO: u32 =
    uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_DISPLAY_INFO;

/// The most scanouts a device reports (`VIRTIO_GPU_MAX_SCANOUTS`).
pub(crate) const MAX_SCANOUTS: usize = uapi::VIRTIO_GPU_MAX_SCANOUTS as usize;

/// `struct virtio_gpu_resp_display_info`.
#[repr(transparent)]
pub(crate) struct RespDisplayInfo(uapi::virtio_gpu_resp_display_info);

// SAFETY: Integers only, laid out without implicit padding; every bit pattern valid.
unsafe impl AsBytes for RespDisplayInfo {}
// SAFETY: As above.
unsafe impl FromBytes for RespDisplayInfo {}

/// One scanout of a display info response, in host byte order.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Scanout {
    pub(crate) x: u32,
    pub(crate) y: u32,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) enabled: bool,
}

impl RespDisplayInfo {
    /// Scanout `i`, for `i < MAX_SCANOUTS`.
    pub(crate) fn scanout(&self, i: usize) -> Option<Scanout> {
        let one = self.0.pmodes.get(i)?;
        Some(Scanout {
            x: u32::from_le(one.r.x),
            y: u32::from_le(one.r.y),
            width: u32::from_le(one.r.width),
            height: u32::from_le(one.r.height),
            enabled: u32::from_le(one.enabled) != 0,
        })
    }
}

/// `VIRTIO_GPU_CMD_GET_CAPSET_INFO`.
pub(crate) const CMD_GET_CAPSET_INFO: u32 =
    uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_CAPSET_INFO;
/// `VIRTIO_GPU_RESP_OK_CAPSET_INFO`.
pub(crate) const RESP_OK_CAPSET_INFO: u32 =
    uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_CAPSET_INFO;

/// `struct virtio_gpu_get_capset_info`.
#[repr(transparent)]
pub(crate) struct GetCapsetInfo(uapi::virtio_gpu_get_capset_info);

// SAFETY: Integers only, laid out without implicit padding (explicit `padding`).
unsafe impl AsBytes for GetCapsetInfo {}

impl GetCapsetInfo {
    /// Asks for the host's capset number `index`.
    pub(crate) fn new(index: u32) -> Self {
        Self(uapi::virtio_gpu_get_capset_info {
            hdr: CtrlHdr::command(CMD_GET_CAPSET_INFO).0,
            capset_index: index.to_le(),
            padding: 0,
        })
    }
}

/// `struct virtio_gpu_resp_capset_info`.
#[repr(transparent)]
pub(crate) struct RespCapsetInfo(uapi::virtio_gpu_resp_capset_info);

// SAFETY: Integers only, laid out without implicit padding; every bit pattern valid.
unsafe impl FromBytes for RespCapsetInfo {}

/// A capability set the host supports, in host byte order.
#[derive(Clone, Copy)]
pub(crate) struct CapsetInfo {
    pub(crate) id: u32,
    pub(crate) max_version: u32,
    pub(crate) max_size: u32,
}

impl RespCapsetInfo {
    pub(crate) fn info(&self) -> CapsetInfo {
        CapsetInfo {
            id: u32::from_le(self.0.capset_id),
            max_version: u32::from_le(self.0.capset_max_version),
            max_size: u32::from_le(self.0.capset_max_size),
        }
    }
}

/// `VIRTIO_GPU_CMD_GET_EDID`.
pub(crate) const CMD_GET_EDID: u32 = uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_EDID;
/// `VIRTIO_GPU_RESP_OK_EDID`.
pub(crate) const RESP_OK_EDID: u32 = uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_EDID;

impl GetEdid {
    /// Asks for the EDID of scanout `scanout`.
    pub(crate) fn new(scanout: u32) -> Self {
        Self(uapi::virtio_gpu_cmd_get_edid {
            hdr: CtrlHdr::command(CMD_GET_EDID).0,
            scanout: scanout.to_le(),
            padding: 0,
        })
    }
}

/// `struct virtio_gpu_resp_edid`.
#[repr(transparent)]
pub(crate) struct RespEdid(uapi::virtio_gpu_resp_edid);

// SAFETY: Integers and a byte array, laid out without implicit padding; every bit pattern valid.
unsafe impl FromBytes for RespEdid {}

impl RespEdid {
    /// The EDID's bytes; `EPROTO` if the device claims more than the response holds.
    pub(crate) fn edid(&self) -> Result<&[u8]> {
        self.0
            .edid
            .get(..u32::from_le(self.0.size) as usize)
            .ok_or(EPROTO)
    }
}

/// `VIRTIO_GPU_RESP_ERR_UNSPEC`, the first error response type.
pub(crate) const RESP_ERR_UNSPEC: u32 = uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_UNSPEC;

/// `VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM`: DRM's `XRGB8888` in little-endian memory, the format of
/// dumb buffers on little-endian guests (C's `DRM_FORMAT_HOST_XRGB8888`).
#[cfg(target_endian = "little")]
pub(crate) const FORMAT_HOST_XRGB8888: u32 =
    uapi::virtio_gpu_formats_VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM;
/// `VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM`: DRM's `BGRX8888`, which is `XRGB8888` in big-endian memory.
#[cfg(target_endian = "big")]
pub(crate) const FORMAT_HOST_XRGB8888: u32 =
    uapi::virtio_gpu_formats_VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM;

/// Implements the byte views of wire structs made of little-endian integers and explicit padding
/// only (no implicit padding, every bit pattern valid).
macro_rules! wire_struct {
    ($($name:ident($inner:ty)),* $(,)?) => {$(
        #[repr(transparent)]
        pub(crate) struct $name($inner);
        // SAFETY: Integers and explicit padding fields only, laid out without implicit padding.
        unsafe impl AsBytes for $name {}
    )*};
}

wire_struct!(
    TransferToHost2d(uapi::virtio_gpu_transfer_to_host_2d),
    ResourceCreate2d(uapi::virtio_gpu_resource_create_2d),
    AttachBacking(uapi::virtio_gpu_resource_attach_backing),
    MemEntry(uapi::virtio_gpu_mem_entry),
    ResourceUnref(uapi::virtio_gpu_resource_unref),
    GetEdid(uapi::virtio_gpu_cmd_get_edid),
    SetScanout(uapi::virtio_gpu_set_scanout),
    ResourceFlush(uapi::virtio_gpu_resource_flush),
);

/// A rectangle on the wire, from its size and position in pixels.
fn rect(width: u32, height: u32, x: u32, y: u32) -> uapi::virtio_gpu_rect {
    uapi::virtio_gpu_rect {
        x: x.to_le(),
        y: y.to_le(),
        width: width.to_le(),
        height: height.to_le(),
    }
}

impl TransferToHost2d {
    /// `VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D`: the host copies the rectangle `width` x `height` at
    /// (`x`, `y`) of resource `id` from its backing, starting at byte `offset`.
    pub(crate) fn new(id: u32, offset: u64, width: u32, height: u32, x: u32, y: u32) -> Self {
        Self(uapi::virtio_gpu_transfer_to_host_2d {
            hdr: CtrlHdr::command(uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D).0,
            r: rect(width, height, x, y),
            offset: offset.to_le(),
            resource_id: id.to_le(),
            padding: 0,
        })
    }
}

impl SetScanout {
    /// `VIRTIO_GPU_CMD_SET_SCANOUT`: scanout `scanout` shows the rectangle `width` x `height`
    /// at (`x`, `y`) of resource `id`; resource 0 switches the scanout off.
    pub(crate) fn new(scanout: u32, id: u32, width: u32, height: u32, x: u32, y: u32) -> Self {
        Self(uapi::virtio_gpu_set_scanout {
            hdr: CtrlHdr::command(uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_SET_SCANOUT).0,
            r: rect(width, height, x, y),
            scanout_id: scanout.to_le(),
            resource_id: id.to_le(),
        })
    }
}

impl ResourceFlush {
    /// `VIRTIO_GPU_CMD_RESOURCE_FLUSH`: the host updates the scanouts showing resource `id` in
    /// the rectangle `width` x `height` at (`x`, `y`).
    pub(crate) fn new(id: u32, width: u32, height: u32, x: u32, y: u32) -> Self {
        Self(uapi::virtio_gpu_resource_flush {
            hdr: CtrlHdr::command(uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_FLUSH).0,
            r: rect(width, height, x, y),
            resource_id: id.to_le(),
            padding: 0,
        })
    }
}

impl ResourceCreate2d {
    /// `VIRTIO_GPU_CMD_RESOURCE_CREATE_2D`: host resource `id`, `width` x `height` of `format`.
    pub(crate) fn new(id: u32, format: u32, width: u32, height: u32) -> Self {
        Self(uapi::virtio_gpu_resource_create_2d {
            hdr: CtrlHdr::command(uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_CREATE_2D).0,
            resource_id: id.to_le(),
            format: format.to_le(),
            width: width.to_le(),
            height: height.to_le(),
        })
    }
}

impl AttachBacking {
    /// `VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING`: resource `id` is backed by the `entries`
    /// [`MemEntry`]s that follow the command.
    pub(crate) fn new(id: u32, entries: u32) -> Self {
        Self(uapi::virtio_gpu_resource_attach_backing {
            hdr: CtrlHdr::command(
                uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING,
            )
            .0,
            resource_id: id.to_le(),
            nr_entries: entries.to_le(),
        })
    }
}

impl MemEntry {
    /// `len` bytes of guest memory at the address the device uses, `addr`.
    pub(crate) fn new(addr: u64, len: u32) -> Self {
        Self(uapi::virtio_gpu_mem_entry {
            addr: addr.to_le(),
            length: len.to_le(),
            padding: 0,
        })
    }
}

impl ResourceUnref {
    /// `VIRTIO_GPU_CMD_RESOURCE_UNREF`: the host drops resource `id` and its backing.
    pub(crate) fn new(id: u32) -> Self {
        Self(uapi::virtio_gpu_resource_unref {
            hdr: CtrlHdr::command(uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_UNREF).0,
            resource_id: id.to_le(),
            padding: 0,
        })
    }
}

/// Marks the command in `cmd` (which starts with a [`CtrlHdr`]) as fenced with `fence_id`
/// (`VIRTIO_GPU_FLAG_FENCE`): the device answers it once the work is done, naming the fence.
pub(crate) fn set_fence(cmd: &mut [u8], fence_id: u64) -> Result {
    use core::mem::offset_of;
    type Hdr = uapi::virtio_gpu_ctrl_hdr;
    let flags = cmd
        .get_mut(offset_of!(Hdr, flags)..offset_of!(Hdr, flags) + 4)
        .ok_or(EINVAL)?;
    let old = u32::from_le_bytes([flags[0], flags[1], flags[2], flags[3]]);
    flags.copy_from_slice(&(old | uapi::VIRTIO_GPU_FLAG_FENCE).to_le_bytes());
    cmd.get_mut(offset_of!(Hdr, fence_id)..offset_of!(Hdr, fence_id) + 8)
        .ok_or(EINVAL)?
        .copy_from_slice(&fence_id.to_le_bytes());
    Ok(())
}

/// Byte offsets of the fields of `struct virtio_gpu_config`.
pub(crate) mod config {
    use core::mem::offset_of;
    use kernel::uapi::virtio_gpu_config;

    /// `events_read`: the events the device signals (`VIRTIO_GPU_EVENT_*`).
    pub(crate) const EVENTS_READ: u32 = offset_of!(virtio_gpu_config, events_read) as u32;
    /// `events_clear`: the driver writes the events it handled.
    pub(crate) const EVENTS_CLEAR: u32 = offset_of!(virtio_gpu_config, events_clear) as u32;
    /// `num_scanouts`.
    pub(crate) const NUM_SCANOUTS: u32 = offset_of!(virtio_gpu_config, num_scanouts) as u32;
    /// `num_capsets`.
    pub(crate) const NUM_CAPSETS: u32 = offset_of!(virtio_gpu_config, num_capsets) as u32;
    /// `blob_alignment`, with `VIRTIO_GPU_F_BLOB_ALIGNMENT`.
    pub(crate) const BLOB_ALIGNMENT: u32 = offset_of!(virtio_gpu_config, blob_alignment) as u32;
}

/// Copies `value` into an [`Encoded`], as the device-readable part of a command. A type longer
/// than [`MAX_COMMAND`] bytes does not build.
pub(crate) fn encode<T: AsBytes>(value: &T) -> Encoded {
    const {
        assert!(
            size_of::<T>() <= MAX_COMMAND,
            "a command longer than MAX_COMMAND"
        )
    };
    let bytes = value.as_bytes();
    let mut encoded = Encoded {
        bytes: [0; MAX_COMMAND],
        len: 0,
    };
    // Always there: `bytes.len() == size_of::<T>() <= MAX_COMMAND`, checked when building.
    if let Some(dst) = encoded.bytes.get_mut(..bytes.len()) {
        dst.copy_from_slice(bytes);
        // INVARIANT: `bytes.len() <= MAX_COMMAND`, as `get_mut` found.
        encoded.len = bytes.len();
    }
    encoded
}

/// The size of the largest command the driver sends (`TRANSFER_TO_HOST_2D`'s is 56 bytes).
pub(crate) const MAX_COMMAND: usize = 64;

/// A command's bytes, held by value: a command needs no allocation of its own.
///
/// # Invariants
///
/// `len <= MAX_COMMAND`.
pub(crate) struct Encoded {
    bytes: [u8; MAX_COMMAND],
    len: usize,
}

impl Encoded {
    /// The command's bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }

    /// The command's bytes, to write a fence into.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        self.bytes.get_mut(..self.len).unwrap_or(&mut [])
    }
}

/// Reads a `T` from the start of `bytes`; `EPROTO` if the device wrote less.
pub(crate) fn decode<T: FromBytes>(bytes: &[u8]) -> Result<T> {
    T::from_bytes_copy_prefix(bytes)
        .map(|(v, _)| v)
        .ok_or(EPROTO)
}

/// Reads a response of type `ty` (`VIRTIO_GPU_RESP_OK_*`) as a `T`; `EPROTO` if the device
/// answered with another type or wrote too little.
pub(crate) fn decode_response<T: FromBytes>(resp: &[u8], ty: u32) -> Result<T> {
    if decode::<CtrlHdr>(resp)?.ty() != ty {
        return Err(EPROTO);
    }
    decode(resp)
}
