// SPDX-License-Identifier: GPL-2.0-only

//! virtio-gpu DRM driver in Rust.
//!
//! This file owns the binding to the virtio device: the id and feature tables, probe (feature
//! negotiation, queues, the first synchronous commands) and unbind. The per-device state lives in
//! [`VirtioGpu`]; the queues and their interrupt path in [`queue`]; the wire format in
//! [`protocol`].
//!
//! # Lock order
//!
//! `CommandQueue::inner` (`SpinLockIrq`, per queue) -> `Reply::state` (`SpinLockIrq`, per
//! synchronous command). The virtqueue callback (hard IRQ) takes a queue lock with
//! `lock_with`; process context takes it with `lock()`. Nothing sleeps under either.

use kernel::{
    device::Core,
    interrupt::LocalInterruptDisabled,
    prelude::*,
    sync::Arc,
    uapi,
    virtio::{
        self,
        virtqueue::{
            Callbacks,
            Registration,
            Virtqueues, //
        },
    },
};

mod protocol;
mod queue;

use protocol::{
    config,
    CtrlHdr,
    RespDisplayInfo,
    Scanout,
    MAX_SCANOUTS, //
};
use queue::{
    response_header,
    Command,
    CommandQueue, //
};

/// The features the driver negotiates, as the C driver does. `VIRTIO_GPU_F_VIRGL` is only
/// offered on little-endian hosts (virgl's command stream is little-endian).
const FEATURES: &[u32] = &[
    #[cfg(target_endian = "little")]
    uapi::VIRTIO_GPU_F_VIRGL,
    uapi::VIRTIO_GPU_F_EDID,
    uapi::VIRTIO_GPU_F_RESOURCE_UUID,
    uapi::VIRTIO_GPU_F_RESOURCE_BLOB,
    uapi::VIRTIO_GPU_F_CONTEXT_INIT,
    uapi::VIRTIO_GPU_F_BLOB_ALIGNMENT,
];

kernel::virtio_device_table!(
    VIRTIO_TABLE,
    [virtio::DeviceId::new(
        uapi::VIRTIO_ID_GPU,
        virtio::DeviceId::ANY
    )]
);

/// What the device offered and the driver accepted.
#[derive(Clone, Copy)]
struct Features {
    virgl: bool,
    edid: bool,
    resource_uuid: bool,
    resource_blob: bool,
    context_init: bool,
    blob_alignment: bool,
}

impl Features {
    fn negotiated(dev: &virtio::Device<Core<'_>>) -> Self {
        Self {
            virgl: cfg!(target_endian = "little") && dev.has_feature(uapi::VIRTIO_GPU_F_VIRGL),
            edid: dev.has_feature(uapi::VIRTIO_GPU_F_EDID),
            resource_uuid: dev.has_feature(uapi::VIRTIO_GPU_F_RESOURCE_UUID),
            resource_blob: dev.has_feature(uapi::VIRTIO_GPU_F_RESOURCE_BLOB),
            context_init: dev.has_feature(uapi::VIRTIO_GPU_F_CONTEXT_INIT),
            blob_alignment: dev.has_feature(uapi::VIRTIO_GPU_F_BLOB_ALIGNMENT),
        }
    }

    /// Logs the features as the C driver does (host-visible memory is not supported yet).
    fn log(&self, dev: &virtio::Device<Core<'_>>) {
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

/// The device's queues, in the order they are found: the callbacks' target.
#[pin_data]
struct Queues<'a> {
    #[pin]
    control: CommandQueue<'a>,
    #[pin]
    cursor: CommandQueue<'a>,
}

/// Queue indices, in the order of [`QUEUE_NAMES`].
const CONTROL: usize = 0;
const CURSOR: usize = 1;
const QUEUE_NAMES: [&CStr; 2] = [c"control", c"cursor"];

impl Callbacks for Queues<'_> {
    fn queue_used(&self, index: u32, irq: &LocalInterruptDisabled) {
        match index as usize {
            CONTROL => self.control.complete(irq),
            CURSOR => self.cursor.complete(irq),
            _ => {}
        }
    }
}

/// The per-device state, alive while the driver is bound.
struct VirtioGpu<'bound> {
    queues: Arc<Queues<'bound>>,
    _callbacks: Registration<'bound, Queues<'bound>>,
    _features: Features,
    _num_capsets: u32,
    _scanouts: KVec<Scanout>,
}

/// Fetches the display info (`VIRTIO_GPU_CMD_GET_DISPLAY_INFO`) for the first `count` scanouts.
fn display_info(queue: &CommandQueue<'_>, count: usize) -> Result<KVec<Scanout>> {
    let cmd = protocol::encode(&CtrlHdr::command(protocol::CMD_GET_DISPLAY_INFO))?;
    let resp = queue.call(cmd, size_of::<RespDisplayInfo>())?;
    let hdr = response_header(&resp)?;
    if hdr.ty() != protocol::RESP_OK_DISPLAY_INFO {
        return Err(EPROTO);
    }
    let info = protocol::decode::<RespDisplayInfo>(&resp)?;
    let mut scanouts = KVec::with_capacity(count, GFP_KERNEL)?;
    for i in 0..count {
        scanouts.push(info.scanout(i).ok_or(EPROTO)?, GFP_KERNEL)?;
    }
    Ok(scanouts)
}

struct VirtioGpuDriver;

#[vtable]
impl virtio::Driver for VirtioGpuDriver {
    type Data<'bound> = VirtioGpu<'bound>;

    const ID_TABLE: virtio::IdTable = &VIRTIO_TABLE;
    const FEATURES: &'static [u32] = FEATURES;

    fn probe<'bound>(
        dev: &'bound virtio::Device<Core<'_>>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        if !dev.has_feature(virtio::F_VERSION_1) {
            return Err(ENODEV);
        }
        let features = Features::negotiated(dev);
        features.log(dev);

        let mut vqs = Virtqueues::<Queues<'bound>>::find(dev, &QUEUE_NAMES)?;
        let control = vqs.take::<Command>(CONTROL)?;
        let cursor = vqs.take::<Command>(CURSOR)?;
        let queues = Arc::pin_init(
            pin_init!(Queues {
                control <- CommandQueue::new(control),
                cursor <- CommandQueue::new(cursor),
            }),
            GFP_KERNEL,
        )?;

        // SAFETY: `num_scanouts` and `num_capsets` are fields of every virtio-gpu device's
        // configuration space (`struct virtio_gpu_config`).
        let (num_scanouts, num_capsets) = unsafe {
            (
                dev.config_le32(config::NUM_SCANOUTS),
                dev.config_le32(config::NUM_CAPSETS),
            )
        };
        dev_info!(dev, "number of scanouts: {}\n", num_scanouts);
        dev_info!(dev, "number of cap sets: {}\n", num_capsets);
        let count = core::cmp::min(num_scanouts as usize, MAX_SCANOUTS);

        // From here on the device may use the queues and the callbacks find `queues`.
        let callbacks = vqs.ready(queues.clone())?;

        let scanouts = display_info(&queues.control, count).inspect_err(|e| {
            dev_err!(dev, "no display info: {:?}\n", e);
        })?;
        for (i, s) in scanouts.iter().enumerate() {
            dev_info!(
                dev,
                "scanout {}: {}x{}+{}+{} {}\n",
                i,
                s.width,
                s.height,
                s.x,
                s.y,
                if s.enabled { "enabled" } else { "disabled" }
            );
        }

        Ok(VirtioGpu {
            queues,
            _callbacks: callbacks,
            _features: features,
            _num_capsets: num_capsets,
            _scanouts: scanouts,
        })
    }

    fn unbind<'bound>(dev: &'bound virtio::Device<Core<'_>>, this: Pin<&Self::Data<'bound>>) {
        // Reset first: the device then holds nothing, so shutting the queues down cancels every
        // command still pending and wakes its waiter with `ENODEV`.
        dev.reset();
        for queue in [&this.queues.control, &this.queues.cursor] {
            if let Err(e) = queue.shut_down() {
                dev_warn!(dev, "queue not drained: {:?}\n", e);
            }
        }
    }
}

kernel::module_virtio_driver! {
    type: VirtioGpuDriver,
    name: "virtio_gpu_rs",
    authors: ["virtgpu-rs developers"],
    description: "virtio-gpu DRM driver (Rust)",
    license: "GPL",
}
