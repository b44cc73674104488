// SPDX-License-Identifier: GPL-2.0-only

//! The per-device state every part of the driver borrows while the device is bound.
//!
//! Owns [`VirtioGpu`]: the queues and their callbacks' registration, what the device offered
//! (features, capsets, scanouts) and what probe read from it. It lives as the DRM device's
//! registration data: ioctls reach it inside the DRM core's `drm_dev_enter()` section, and it is
//! dropped after `drm_dev_unplug()` when the device is unbound, which also ends every use of the
//! queues. Fields are fixed after probe but the displays, which [`crate::display`] replaces under
//! their `Mutex` when the host changes them; the queues lock themselves (see the lock order in
//! the crate documentation).

use crate::{
    display::Displays,
    protocol::{
        self,
        CapsetInfo, //
    },
    queue::CommandQueue,
    DrmDevice, //
};
use kernel::{
    device::Core,
    interrupt::LocalInterruptDisabled,
    new_mutex,
    prelude::*,
    sync::{
        aref::ARef,
        Arc,
        Mutex, //
    },
    uapi,
    virtio::{
        self,
        virtqueue::{
            Callbacks,
            Registration, //
        },
    },
};

/// What the device offered and the driver accepted.
#[derive(Clone, Copy)]
pub(crate) struct Features {
    pub(crate) virgl: bool,
    pub(crate) edid: bool,
    pub(crate) resource_uuid: bool,
    pub(crate) resource_blob: bool,
    pub(crate) context_init: bool,
    pub(crate) blob_alignment: bool,
}

impl Features {
    pub(crate) fn negotiated(dev: &virtio::Device<Core<'_>>) -> Self {
        Self {
            // Only offered on little-endian (see `FEATURES`), so only negotiated there.
            virgl: dev.has_feature(uapi::VIRTIO_GPU_F_VIRGL),
            edid: dev.has_feature(uapi::VIRTIO_GPU_F_EDID),
            resource_uuid: dev.has_feature(uapi::VIRTIO_GPU_F_RESOURCE_UUID),
            resource_blob: dev.has_feature(uapi::VIRTIO_GPU_F_RESOURCE_BLOB),
            context_init: dev.has_feature(uapi::VIRTIO_GPU_F_CONTEXT_INIT),
            blob_alignment: dev.has_feature(uapi::VIRTIO_GPU_F_BLOB_ALIGNMENT),
        }
    }

    /// Logs the features as the C driver does (host-visible memory is not supported yet).
    pub(crate) fn log(&self, dev: &virtio::Device<Core<'_>>) {
        let c = |on: bool| if on { '+' } else { '-' };
        dev_info!(
            dev,
            "features: {}virgl {}edid {}resource_blob -host_visible\n",
            c(self.virgl),
            c(self.edid),
            c(self.resource_blob)
        );
        dev_info!(
            dev,
            "features: {}context_init {}blob_alignment {}resource_uuid\n",
            c(self.context_init),
            c(self.blob_alignment),
            c(self.resource_uuid)
        );
    }
}

/// Queue indices, in the order of [`QUEUE_NAMES`].
pub(crate) const CONTROL: usize = 0;
pub(crate) const CURSOR: usize = 1;
pub(crate) const QUEUE_NAMES: [&CStr; 2] = [c"control", c"cursor"];

/// The device's queues: the target of the queue callbacks.
#[pin_data]
pub(crate) struct Queues<'a> {
    #[pin]
    pub(crate) control: CommandQueue<'a>,
    #[pin]
    pub(crate) cursor: CommandQueue<'a>,
    /// The DRM device, whose data receives what completed commands leave to free.
    pub(crate) drm: ARef<DrmDevice>,
}

impl Callbacks for Queues<'_> {
    fn queue_used(&self, index: u32, irq: &LocalInterruptDisabled) {
        match index as usize {
            CONTROL => self.control.complete(&self.drm, irq),
            CURSOR => self.cursor.complete(&self.drm, irq),
            _ => {}
        }
    }
}

/// The state of a bound device.
#[pin_data]
pub(crate) struct VirtioGpu<'bound> {
    /// Keeps the queue callbacks installed while the DRM device is registered.
    _callbacks: Registration<'bound, Queues<'bound>>,
    queues: Arc<Queues<'bound>>,
    pub(crate) features: Features,
    /// The device's blob alignment, with `VIRTIO_GPU_F_BLOB_ALIGNMENT`.
    pub(crate) blob_alignment: Option<u32>,
    pub(crate) capsets: KVec<CapsetInfo>,
    /// The displays as last read: at probe, then after each change (see [`crate::display`]).
    #[pin]
    pub(crate) displays: Mutex<Displays>,
}

impl<'bound> VirtioGpu<'bound> {
    /// Gathers what the device tells about itself, once its queues work.
    pub(crate) fn new(
        dev: &'bound virtio::Device<Core<'_>>,
        queues: Arc<Queues<'bound>>,
        callbacks: Registration<'bound, Queues<'bound>>,
        features: Features,
        num_capsets: u32,
        num_scanouts: usize,
    ) -> Result<impl PinInit<Self, Error> + 'bound> {
        let blob_alignment = if features.blob_alignment {
            // SAFETY: `blob_alignment` is a `__le32` field, at an aligned offset, of the
            // configuration space of a device that offers `VIRTIO_GPU_F_BLOB_ALIGNMENT`.
            Some(unsafe { dev.config_le32(protocol::config::BLOB_ALIGNMENT) }?)
        } else {
            None
        };
        // As C: a capset the host describes badly (or not in time) is logged and the capsets
        // are left out; the device still works without them.
        let capsets = capset_infos(&queues.control, num_capsets).unwrap_or_else(|e| {
            dev_err!(dev, "capset infos: {:?}; no capsets\n", e);
            KVec::new()
        });
        for c in capsets.iter() {
            dev_info!(
                dev,
                "capset {}: max version {}, max size {}\n",
                c.id,
                c.max_version,
                c.max_size
            );
        }
        let displays = Displays::read(dev, &queues.control, num_scanouts, features.edid)?;
        displays.log(dev, None, None);
        Ok(try_pin_init!(Self {
            _callbacks: callbacks,
            queues,
            features,
            blob_alignment,
            capsets,
            displays <- new_mutex!(displays, "virtio_gpu_rs::VirtioGpu::displays"),
        }? Error))
    }

    /// The control queue.
    pub(crate) fn control(&self) -> &CommandQueue<'bound> {
        &self.queues.control
    }

    /// Both queues.
    pub(crate) fn queues(&self) -> [&CommandQueue<'bound>; 2] {
        [&self.queues.control, &self.queues.cursor]
    }

    /// The `VIRTGPU_PARAM_SUPPORTED_CAPSET_IDs` mask: bit `id` for each capset the host has
    /// (ids are 1 to [`MAX_CAPSET_ID`], checked at probe).
    pub(crate) fn capset_id_mask(&self) -> u64 {
        self.capsets.iter().fold(0, |m, c| m | (1u64 << c.id))
    }
}

/// The largest capset id, as C's `MAX_CAPSET_ID`.
const MAX_CAPSET_ID: u32 = 63;

/// Fetches the host's capset infos (`VIRTIO_GPU_CMD_GET_CAPSET_INFO`), one command at a time
/// as C does: the count is the device's to choose, so at most one of them is in flight.
fn capset_infos(queue: &CommandQueue<'_>, count: u32) -> Result<KVec<CapsetInfo>> {
    let mut infos = KVec::with_capacity(count as usize, GFP_KERNEL)?;
    for i in 0..count {
        let cmd = protocol::encode(&protocol::GetCapsetInfo::new(i));
        let resp = queue.call(cmd, size_of::<protocol::RespCapsetInfo>())?;
        let info = protocol::decode_response::<protocol::RespCapsetInfo>(
            &resp,
            protocol::RESP_OK_CAPSET_INFO,
        )?
        .info();
        // C accepts ids 1 to `MAX_CAPSET_ID` (63): one bit each in the capset mask.
        if !(1..=MAX_CAPSET_ID).contains(&info.id) {
            return Err(EINVAL);
        }
        infos.push(info, GFP_KERNEL)?;
    }
    Ok(infos)
}
