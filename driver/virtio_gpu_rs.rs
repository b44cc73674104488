// SPDX-License-Identifier: GPL-2.0-only

//! virtio-gpu DRM driver in Rust.
//!
//! This file owns the two registrations: the virtio driver (id and feature tables, probe,
//! unbind) and the DRM driver it registers per device (name, version, ioctl table). The device
//! state lives in [`device`], the displays and their changes in [`display`], the queues and
//! their interrupt path in [`queue`], the wire format in [`protocol`], the ioctls in [`ioctl`],
//! per-open state in [`file`], GEM objects in [`gem`], modesetting in [`kms`], and what outlives
//! the binding (reclaim, resource ids) in [`reclaim`].
//!
//! # Lifetimes
//!
//! The device state ([`device::VirtioGpu`]) is the DRM device's registration data: it lives from
//! probe to unbind, and ioctls reach it inside `drm_dev_enter()`. At unbind the driver resets
//! the device and shuts the queues down first (waiters get `ENODEV`); after `remove` returns, the
//! driver core drops the binding, which unplugs the DRM device (waiting for running ioctls) and
//! drops the state. Open files keep the DRM device itself, and their ioctls fail with `ENODEV`.
//!
//! # Lock order
//!
//! A GEM object's reservation (`dma_resv`, a ww_mutex; only while a fenced command is submitted
//! for it) -> `CommandQueue::inner` (`SpinLockIrq`, per queue) -> `Reply::state` (`SpinLockIrq`,
//! per synchronous command), `DeviceData::reclaim` (`SpinLockIrq`, per device) or the queue's
//! `Timeline` (`SpinLockIrq`, then each fence's lock). The virtqueue callback (hard IRQ) takes a
//! queue lock with `lock_with`, and the reply and reclaim locks with `lock_with` under it; it
//! takes the timeline's after dropping the queue lock. Process context takes them with `lock()`.
//! Nothing sleeps under any spinlock; freeing an object (which may sleep) happens in the reclaim
//! work item, or in process context after the locks are dropped. `VirtioGpu::displays`
//! (`Mutex`) is taken in process context, alone or under DRM's `mode_config.mutex` (a
//! connector's probe, see [`kms`]), and nothing is taken under it. A plane's update submits
//! commands (the queue lock) under DRM's modeset locks.

use kernel::{
    device::{
        Bound,
        Core,
        DeviceContext, //
    },
    drm::{
        self,
        kms::AtomicShutdown, //
    },
    interrupt::LocalInterruptDisabled,
    prelude::*,
    sync::{
        aref::ARef,
        Arc, //
    },
    uapi,
    virtio::{
        self,
        virtqueue::Virtqueues, //
    },
};

mod device;
mod display;
mod faults;
mod file;
mod gem;
mod ioctl;
mod kms;
mod protocol;
mod queue;
mod reclaim;

use device::{
    Features,
    Queues,
    VirtioGpu,
    CONTROL,
    CURSOR,
    QUEUE_NAMES, //
};
use display::ConfigWork;
use protocol::{
    config,
    MAX_SCANOUTS, //
};
use queue::{
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

/// The DRM driver: what userspace sees, named and versioned as the C driver.
pub(crate) struct DrmDriver;

/// The driver's DRM device.
pub(crate) type DrmDevice<Ctx = drm::Normal> = drm::Device<DrmDriver, Ctx>;

#[vtable]
impl drm::Driver for DrmDriver {
    type Data = reclaim::DeviceData;
    type RegistrationData<'a> = VirtioGpu<'a>;
    type File = file::File;
    type Object = gem::Object;
    type ParentDevice<Ctx: DeviceContext> = virtio::Device<Ctx>;

    const INFO: drm::DriverInfo = drm::DriverInfo {
        major: 0,
        minor: 1,
        patchlevel: 0,
        name: c"virtio_gpu",
        desc: c"virtio GPU",
    };

    const FEAT_RENDER: bool = true;
    const FEAT_MODESET: bool = true;
    // As C: DRM's sync objects, which userspace uses without the driver until execbuffer takes
    // and gives them (with virgl).
    const FEAT_SYNCOBJ: bool = true;

    fn dumb_create<'a>(
        dev: &DrmDevice<drm::Registered>,
        gpu: &'a VirtioGpu<'a>,
        file: &drm::File<file::File>,
        args: &mut uapi::drm_mode_create_dumb,
    ) -> Result {
        ioctl::dumb_create(dev, gpu, file, args)
    }

    kernel::declare_drm_ioctls! {
        (VIRTGPU_MAP, drm_virtgpu_map, drm::ioctl::RENDER_ALLOW, ioctl::map),
        (
            VIRTGPU_EXECBUFFER,
            drm_virtgpu_execbuffer,
            drm::ioctl::RENDER_ALLOW,
            ioctl::no_virgl::<uapi::drm_virtgpu_execbuffer>
        ),
        (
            VIRTGPU_GETPARAM,
            drm_virtgpu_getparam,
            drm::ioctl::RENDER_ALLOW,
            ioctl::get_param
        ),
        (
            VIRTGPU_RESOURCE_CREATE,
            drm_virtgpu_resource_create,
            drm::ioctl::RENDER_ALLOW,
            ioctl::resource_create
        ),
        (
            VIRTGPU_RESOURCE_INFO,
            drm_virtgpu_resource_info,
            drm::ioctl::RENDER_ALLOW,
            ioctl::resource_info
        ),
        (
            VIRTGPU_TRANSFER_FROM_HOST,
            drm_virtgpu_3d_transfer_from_host,
            drm::ioctl::RENDER_ALLOW,
            ioctl::no_virgl::<uapi::drm_virtgpu_3d_transfer_from_host>
        ),
        (
            VIRTGPU_TRANSFER_TO_HOST,
            drm_virtgpu_3d_transfer_to_host,
            drm::ioctl::RENDER_ALLOW,
            ioctl::transfer_to_host
        ),
        (VIRTGPU_WAIT, drm_virtgpu_3d_wait, drm::ioctl::RENDER_ALLOW, ioctl::wait),
        (
            VIRTGPU_GET_CAPS,
            drm_virtgpu_get_caps,
            drm::ioctl::RENDER_ALLOW,
            ioctl::get_caps
        ),
        (
            VIRTGPU_RESOURCE_CREATE_BLOB,
            drm_virtgpu_resource_create_blob,
            drm::ioctl::RENDER_ALLOW,
            ioctl::not_supported::<uapi::drm_virtgpu_resource_create_blob>
        ),
        (
            VIRTGPU_CONTEXT_INIT,
            drm_virtgpu_context_init,
            drm::ioctl::RENDER_ALLOW,
            ioctl::not_supported::<uapi::drm_virtgpu_context_init>
        ),
    }
}

/// What the virtio driver keeps per bound device.
struct Binding<'bound> {
    /// Fault injection's debugfs files, removed first.
    _knobs: faults::Knobs,
    /// The queues, also reachable through the DRM registration; kept here for unbind.
    queues: Arc<Queues<'bound>>,
    /// Reads configuration changes (see [`display`]).
    config_work: Arc<ConfigWork>,
    _drm: drm::Registration<'bound, DrmDriver>,
    /// Switches the outputs off once the DRM device is unplugged: after `_drm`.
    _kms: AtomicShutdown<DrmDriver>,
}

/// The virtio driver.
struct VirtioGpuDriver;

#[vtable]
impl virtio::Driver for VirtioGpuDriver {
    type Data<'bound> = Binding<'bound>;

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
        // The host gets the guest-physical addresses of GEM objects' pages (C's path without
        // the DMA API); a device behind an IOMMU would need them mapped for its transport.
        if dev.has_feature(virtio::F_ACCESS_PLATFORM) {
            dev_err!(dev, "VIRTIO_F_ACCESS_PLATFORM is not supported yet\n");
            return Err(ENODEV);
        }

        let unregistered =
            drm::UnregisteredDevice::<DrmDriver>::new(dev, reclaim::DeviceData::new())?;
        let drm: ARef<DrmDevice> = (&*unregistered).into();

        let mut vqs = Virtqueues::<Queues<'bound>>::find(dev, &QUEUE_NAMES)?;
        let control = vqs.take::<Command>(CONTROL)?;
        let cursor = vqs.take::<Command>(CURSOR)?;
        let queues = Arc::pin_init(
            try_pin_init!(Queues {
                control <- CommandQueue::new(control),
                cursor <- CommandQueue::new(cursor),
                drm,
            }),
            GFP_KERNEL,
        )?;

        // SAFETY: `num_scanouts` and `num_capsets` are `__le32` fields of every virtio-gpu
        // device's configuration space (`struct virtio_gpu_config`), at aligned offsets.
        let (num_scanouts, num_capsets) = unsafe {
            (
                dev.config_le32(config::NUM_SCANOUTS)?,
                dev.config_le32(config::NUM_CAPSETS)?,
            )
        };
        dev_info!(dev, "number of scanouts: {}\n", num_scanouts);
        dev_info!(dev, "number of cap sets: {}\n", num_capsets);
        let num_scanouts = core::cmp::min(num_scanouts as usize, MAX_SCANOUTS);

        // From here on the device may use the queues and the callbacks find `queues`.
        let callbacks = vqs.ready(queues.clone())?;
        let gpu = VirtioGpu::new(
            dev,
            queues.clone(),
            callbacks,
            features,
            num_capsets,
            num_scanouts,
        )
        .inspect_err(|e| dev_err!(dev, "device does not answer: {:?}\n", e))?;
        kms::setup(&unregistered, num_scanouts, features.edid)?;

        // SAFETY: The registration is kept in the `Binding`, which the driver core drops when the
        // device is unbound; it is never forgotten.
        let drm = unsafe { drm::Registration::new(dev.as_ref(), unregistered, gpu, 0)? };

        let config_work = ConfigWork::new(drm.registered_ref())?;
        let kms = AtomicShutdown::new(drm.registered_ref());

        Ok(Binding {
            _knobs: faults::Knobs::new(dev, &drm),
            queues,
            config_work,
            _drm: drm,
            _kms: kms,
        })
    }

    fn unbind<'bound>(dev: &'bound virtio::Device<Core<'_>>, this: Pin<&Self::Data<'bound>>) {
        // Reset first: the device then holds nothing, so shutting the queues down cancels every
        // command still pending and wakes its waiter with `ENODEV`, and running ioctls return
        // before the DRM device is unplugged (which waits for them).
        let reset = dev.reset();
        for queue in [&this.queues.control, &this.queues.cursor] {
            if let Err(e) = queue.shut_down(&reset) {
                dev_warn!(dev, "queue not drained: {:?}\n", e);
            }
        }
        // `config_changed` is no longer called, so nothing queues the configuration work item
        // again; a read it had in flight failed with the queues shut down. Flushed first, as it
        // submits commands.
        this.config_work.flush();
        // No command can complete any more, so nothing queues the reclaim work item again: once
        // both are idle, no code of this module runs for the device after unbind.
        reclaim::flush(&this.queues.drm);
    }

    fn config_changed<'bound>(
        _dev: &'bound virtio::Device<Bound>,
        this: Pin<&Self::Data<'bound>>,
        _irq: &LocalInterruptDisabled,
    ) {
        // Atomic context: the work item reads what changed.
        this.config_work.queue();
    }
}

kernel::module_virtio_driver! {
    type: VirtioGpuDriver,
    name: "virtio_gpu_rs",
    authors: ["virtgpu-rs developers"],
    description: "virtio-gpu DRM driver (Rust)",
    license: "GPL",
}
