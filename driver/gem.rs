// SPDX-License-Identifier: GPL-2.0-only

//! GEM objects: shmem-backed buffers, each mirrored on the host by a resource.
//!
//! Owns [`Bo`] and the life of its host resource:
//!
//! - **Creation** ([`Bo::create_2d`]): a new resource id (not reused, as C's default), a
//!   shmem object, then `RESOURCE_CREATE_2D` and `RESOURCE_ATTACH_BACKING` with the
//!   guest-physical addresses of the object's pages, pinned until it is freed. Both go into the
//!   caller's batch without waiting for the answers, as C sends them; the device handles
//!   commands in order, so any later command finds the resource.
//! - **Release** ([`gem::DriverObject::release`]): when the last reference goes, the object's
//!   memory still backs the host resource. The driver sends `RESOURCE_UNREF` and keeps the
//!   memory until the device has answered; then the reclaim work item frees it (never the
//!   interrupt handler: freeing may sleep; see [`crate::reclaim`]). If the device is already
//!   unbound, it was reset and holds nothing: the object is freed at once. If the unref cannot
//!   be sent, the object is leaked rather than freed under the host.
//!
//! Takes no lock of its own (the control queue's, through it).

use crate::{
    device::VirtioGpu,
    protocol::{
        self,
        AttachBacking,
        CtrlHdr,
        MemEntry,
        ResourceCreate2d,
        ResourceUnref, //
    },
    queue::{
        Batch,
        Command,
        QueueFences, //
    },
    reclaim::Reclaimed,
    DrmDevice,
    DrmDriver, //
};
use kernel::{
    alloc::{
        allocator::{
            KVmalloc,
            Kmalloc, //
        },
        Allocator, //
    },
    dma_fence::FenceAllocation,
    dma_resv::{
        Resv,
        Usage, //
    },
    drm::{
        self,
        device::RegisteredRef,
        gem::{
            self,
            shmem::{
                self,
                PhysRanges, //
            },
            Release, //
        },
    },
    page::PAGE_SIZE,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{
            Atomic,
            Relaxed, //
        },
    },
    transmute::AsBytes,
};

/// The driver's GEM object type.
pub(crate) type Object = shmem::Object<Bo>;

/// The size of the response to a command that returns nothing: a header.
const NODATA: usize = size_of::<CtrlHdr>();

/// The last host resource id handed out, minus one.
static LAST_ID: Atomic<u32> = Atomic::new(0);

/// A new host resource id: 2, 3, 4 and so on, not reused while the module is loaded (until
/// the counter wraps after 2^32 ids, as C's).
///
/// As C's default (`virtio_gpu_virglrenderer_workaround`, on unless the `virglhack` parameter
/// is 0): old virglrenderer breaks on a reused id, and a reused id is never the one a late
/// unref names.
fn new_resource_id() -> u32 {
    loop {
        // Wraps after 2^32 ids; 0 means "no resource" on the wire.
        let id = LAST_ID.fetch_add(1, Relaxed).wrapping_add(2);
        if id != 0 {
            return id;
        }
    }
}

/// The driver's data of a GEM object.
#[pin_data]
pub(crate) struct Bo {
    resource_id: u32,
    /// Made by `DRM_IOCTL_MODE_CREATE_DUMB`: the host sees what the CPU wrote only through
    /// transfers, which the plane's update sends for it (userspace does for the others).
    dumb: bool,
    /// Whether a command naming the host resource was sent: the resource then needs an unref.
    created: Atomic<bool>,
    /// The device the resource lives on, entered again to send the unref.
    dev: RegisteredRef<DrmDriver>,
}

/// What [`Bo::new`](gem::DriverObject::new) takes: the resource id and the device.
pub(crate) struct BoArgs {
    resource_id: u32,
    dumb: bool,
    dev: RegisteredRef<DrmDriver>,
}

impl gem::DriverObject for Bo {
    type Driver = DrmDriver;
    type Args = BoArgs;

    fn new(_dev: &DrmDevice, _size: usize, args: BoArgs) -> impl PinInit<Self, Error> {
        try_pin_init!(Bo {
            resource_id: args.resource_id,
            dumb: args.dumb,
            created: Atomic::new(false),
            dev: args.dev,
        })
    }

    fn release(obj: Release<Self>) {
        if !obj.data().created.load(Relaxed) {
            return;
        }
        let dev = obj.data().dev.clone();
        // Unbound: the device was reset and holds nothing; `obj` is freed on return.
        let Some(guard) = dev.registration_guard() else {
            return;
        };
        guard.registration_data_with(|gpu| unref(gpu, obj));
    }
}

impl Bo {
    /// The host resource id.
    pub(crate) fn resource_id(&self) -> u32 {
        self.resource_id
    }

    /// Whether the object is a dumb buffer.
    pub(crate) fn is_dumb(&self) -> bool {
        self.dumb
    }

    /// Creates an object of `size` bytes (a multiple of the page size) backed on the host by a
    /// 2D resource of `width` x `height` pixels of `format` (`VIRTIO_GPU_FORMAT_*`), for `made`.
    ///
    /// A resource of `RESOURCE_CREATE` is created fenced, its fence added to the object's
    /// reservation (as a write) before anyone else can see the object; a dumb buffer's is not,
    /// as in C.
    ///
    /// The commands go into `batch`: the device is told of them when the caller drops it (after
    /// making the handle, as C notifies in its GEM open callback), or when a failure's unref
    /// notifies it of everything so far.
    pub(crate) fn create_2d(
        dev: &DrmDevice<drm::Registered>,
        batch: &mut Batch<'_, '_>,
        size: usize,
        format: u32,
        width: u32,
        height: u32,
        made: MadeBy,
    ) -> Result<ARef<Object>> {
        let id = new_resource_id();
        let (dumb, fence) = match made {
            MadeBy::Dumb => (true, None),
            MadeBy::ResourceCreate(fence) => (false, Some(fence)),
        };
        let args = BoArgs {
            resource_id: id,
            dumb,
            dev: dev.registered_ref(),
        };
        let obj = Object::new(dev, size, shmem::ObjectConfig::default(), args)?;
        let attach = attach_backing(&obj, id)?;

        let create = protocol::encode(&ResourceCreate2d::new(id, format, width, height));
        let create = Command::new(create, NODATA)?;
        // On a failure after `create`, the unref the drop of `obj` sends follows it in the ring.
        // `created` is set as soon as the command is out: from then on a failure's drop of
        // `obj` must unreference the resource.
        match fence {
            None => {
                batch.submit(create)?;
                obj.created.store(true, Relaxed);
            }
            Some(fence) => {
                // Locked and a slot reserved first, so that the fence cannot fail to go in.
                let resv = Resv::of_gem(&*obj);
                let locked = resv.lock();
                let mut slots = locked.reserve_fences(1)?;
                let fence = batch.submit_fenced(create, fence)?;
                obj.created.store(true, Relaxed);
                slots.add(&fence, Usage::Write)?;
            }
        }
        batch.submit(attach)?;
        Ok(obj)
    }
}

/// What an object is made for.
pub(crate) enum MadeBy {
    /// `DRM_IOCTL_MODE_CREATE_DUMB`.
    Dumb,
    /// `DRM_IOCTL_VIRTGPU_RESOURCE_CREATE`, with the memory of the creation's fence.
    ResourceCreate(FenceAllocation<QueueFences>),
}

/// Memory entries up to this size go in `kmalloc`ed memory, which the interrupt handler frees
/// with the command; larger ones may be `vmalloc`ed, and the reclaim work item frees them.
const SMALL_ENTRIES: usize = PAGE_SIZE;

/// The `RESOURCE_ATTACH_BACKING` command of `obj`, resource `id`: the memory entries of its
/// pages, by guest-physical address (the device bypasses the DMA API: see probe). The pages
/// stay pinned until the object is freed.
fn attach_backing(obj: &Object, id: u32) -> Result<KBox<Command>> {
    let ranges = obj.pin_phys_ranges()?;
    // Counted first, then written straight into the entries: no list in between.
    let count = ranges.clone().count();
    let attach = protocol::encode(&AttachBacking::new(
        id,
        u32::try_from(count).map_err(|_| EINVAL)?,
    ));
    let bytes = count * size_of::<MemEntry>();
    if bytes <= SMALL_ENTRIES {
        Command::with_data(attach, mem_entries::<Kmalloc>(ranges, bytes)?, NODATA)
    } else {
        let entries = mem_entries::<KVmalloc>(ranges, bytes)?;
        Command::keeping(attach, Reclaimed::read_by_device(entries), NODATA)
    }
}

/// The memory entries of `ranges`, `bytes` long, in memory of `A`.
fn mem_entries<A: Allocator>(ranges: PhysRanges<'_>, bytes: usize) -> Result<Vec<u8, A>> {
    let mut entries = Vec::<u8, A>::with_capacity(bytes, GFP_KERNEL)?;
    for r in ranges {
        entries.extend_from_slice(MemEntry::new(r.addr, r.len).as_bytes(), GFP_KERNEL)?;
    }
    Ok(entries)
}

/// Sends `RESOURCE_UNREF` for `obj`'s resource; `obj` is freed once the device has answered.
///
/// If the command cannot be sent, `obj` is leaked (see [`crate::reclaim`]) unless the device was
/// reset meanwhile: the host may still read its memory.
fn unref(gpu: &VirtioGpu<'_>, obj: Release<Bo>) {
    let id = obj.data().resource_id();
    let unref = protocol::encode(&ResourceUnref::new(id));
    // Should the command not be allocated, the object is leaked as it is dropped. Should the
    // queue refuse it, the object waits for the reset at unbind; if the device was reset already,
    // it is freed in here. The command is the only allocation: it carries the object through
    // the interrupt handler to the reclaim work item, as C's one buffer does.
    if let Ok(cmd) = Command::keeping(unref, Reclaimed::free(obj), NODATA) {
        let _ = gpu.control().submit(cmd);
    }
}
