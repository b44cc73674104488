// SPDX-License-Identifier: GPL-2.0-only

//! The displays the host offers, and their changes.
//!
//! Owns [`Displays`], the scanouts' geometry (`GET_DISPLAY_INFO`) and EDIDs (`GET_EDID`) as the
//! host last described them, and [`ConfigWork`], which reads them again when the device reports
//! a change:
//!
//! - **Probe** reads them once ([`Displays::read`]): the EDIDs and the display info, sent in
//!   one batch, as C does.
//! - **A change**: the device sets `VIRTIO_GPU_EVENT_DISPLAY` in `events_read` and raises a
//!   configuration interrupt. The virtio core calls `config_changed` in atomic context, which
//!   only queues [`ConfigWork`]. The work item enters the DRM registration, reads `events_read`
//!   (configuration space reads may sleep), acknowledges the event through `events_clear`, reads
//!   the displays again and replaces them, as C's config-changed work does. It logs the
//!   scanouts that changed (rate-limited: a window being resized sends a burst).
//! - **Acknowledged first.** C acknowledges after sending its reads; a change that arrives
//!   between its reads and its acknowledgement is then cleared unread (the work item queued for
//!   it finds no event). Acknowledging first, any later change sets the event again and queues
//!   the work item again, so a later change is never lost that way. (A read that fails, for
//!   want of memory or an answer, loses its change until the next one, as in C.)
//! - **Unbind**: the core stops calling `config_changed` before unbind; unbind flushes the work
//!   item once the queues are shut down (a read in flight then fails with `ENODEV`, quietly).
//!
//! Locks: the device state keeps [`Displays`] in a `Mutex`, taken in process context only, to
//! replace them, or by the connectors' probe (under DRM's `mode_config.mutex`) to read them; it
//! is never held while a command is in flight, nor with a queue lock, nor across the hotplug
//! event (which takes DRM's locks).

use crate::{
    device::VirtioGpu,
    protocol::{
        self,
        config,
        CtrlHdr,
        RespDisplayInfo,
        Scanout, //
    },
    queue::{
        Call,
        CommandQueue, //
    },
    DrmDevice,
    DrmDriver, //
};
use kernel::{
    device::Bound,
    drm::{
        self,
        device::RegisteredRef,
        kms, //
    },
    new_work,
    prelude::*,
    ratelimit::RateLimit,
    sync::Arc,
    uapi,
    virtio, //
    workqueue::{
        self,
        impl_has_work,
        Work,
        WorkItem, //
    },
};

/// The displays as the host last described them.
pub(crate) struct Displays {
    /// One per scanout the driver handles.
    scanouts: KVec<Scanout>,
    /// The scanouts' EDIDs with `VIRTIO_GPU_F_EDID`, one per scanout (empty for one the host
    /// did not give); none without the feature. The connectors offer them (see
    /// [`crate::kms`]).
    edids: KVec<KVec<u8>>,
}

impl Displays {
    /// Reads the displays of the first `count` scanouts through `queue`: with `edid`
    /// (`VIRTIO_GPU_F_EDID` negotiated) their EDIDs, then the display info, sent together and
    /// then awaited, as C does (`count` is at most [`MAX_SCANOUTS`](protocol::MAX_SCANOUTS),
    /// 16). A scanout without an EDID is logged on `dev` and left without one; the whole fails
    /// if the display info does, or if there is no memory for the lists.
    pub(crate) fn read(
        dev: &virtio::Device<Bound>,
        queue: &CommandQueue<'_>,
        count: usize,
        edid: bool,
    ) -> Result<Self> {
        if count == 0 {
            return Ok(Self {
                scanouts: KVec::new(),
                edids: KVec::new(),
            });
        }
        // On the stack: nothing is allocated between the change and the commands but the
        // commands. (In a debug kernel each allocation records a stack trace for kmemleak and
        // KASAN, which under TCG costs more than the device takes to answer.)
        let mut edid_calls: [Option<Result<Call>>; protocol::MAX_SCANOUTS] =
            [const { None }; protocol::MAX_SCANOUTS];
        let info_call = {
            // One notification for all; the batch is dropped before the first wait.
            let mut batch = queue.batch();
            if edid {
                for (scanout, slot) in edid_calls.iter_mut().enumerate().take(count) {
                    let cmd = protocol::encode(&protocol::GetEdid::new(scanout as u32));
                    *slot = Some(batch.start_call(cmd, size_of::<protocol::RespEdid>()));
                }
            }
            let cmd = protocol::encode(&CtrlHdr::command(protocol::CMD_GET_DISPLAY_INFO));
            batch.start_call(cmd, size_of::<RespDisplayInfo>())
        };
        // Allocated while the device works on the commands. On failure the calls are dropped
        // unwaited: the device answers into replies nobody reads.
        let mut edids = KVec::with_capacity(count, GFP_KERNEL)?;
        let mut scanouts = KVec::with_capacity(count, GFP_KERNEL)?;
        for (i, call) in edid_calls.into_iter().enumerate() {
            let Some(call) = call else { continue };
            let edid = match call.and_then(Call::wait).and_then(|resp| self::edid(&resp)) {
                Ok(edid) => edid,
                Err(e) => {
                    dev_err!(dev, "EDID of scanout {}: {:?}\n", i, e);
                    KVec::new()
                }
            };
            edids.push(edid, GFP_KERNEL)?;
        }
        let resp = info_call?.wait()?;
        let info: RespDisplayInfo =
            protocol::decode_response(&resp, protocol::RESP_OK_DISPLAY_INFO)?;
        for i in 0..count {
            scanouts.push(info.scanout(i).ok_or(EPROTO)?, GFP_KERNEL)?;
        }
        Ok(Self { scanouts, edids })
    }

    /// Scanout `i` as the host last described it.
    pub(crate) fn scanout(&self, i: usize) -> Option<&Scanout> {
        self.scanouts.get(i)
    }

    /// The EDID of scanout `i`, if the host gave one.
    pub(crate) fn edid(&self, i: usize) -> Option<&[u8]> {
        self.edids.get(i).map(|e| &e[..]).filter(|e| !e.is_empty())
    }

    /// Logs on `dev` each scanout that `before` did not have as it is now, while `limit` (if
    /// any) allows. Without `before` (at probe), every scanout and the size of each EDID.
    ///
    /// Never inlined: it is the first thing done with the displays just read, and `cargo xtask
    /// bench` ends the display-info round trip at its entry with a kprobe on its symbol
    /// (`drm-bench`, case `display_info`; an entry probe, as on C's response callback, so that
    /// neither driver pays for a probe before its commands are sent).
    #[inline(never)]
    pub(crate) fn log(
        &self,
        dev: &virtio::Device<Bound>,
        before: Option<&Self>,
        limit: Option<&RateLimit>,
    ) {
        if before.is_none() {
            for (i, edid) in self.edids.iter().enumerate().filter(|(_, e)| !e.is_empty()) {
                dev_info!(dev, "EDID of scanout {}: {} bytes\n", i, edid.len());
            }
        }
        for (i, s) in self.scanouts.iter().enumerate() {
            if before.and_then(|b| b.scanouts.get(i)) == Some(s)
                || !limit.is_none_or(RateLimit::allow)
            {
                continue;
            }
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
    }
}

/// Handles a configuration change of `gpu`'s device `dev`, in process context: if the displays
/// changed, acknowledges it, reads them again and logs what changed, while `limit` allows.
fn changed(
    drm: &DrmDevice<drm::Registered>,
    gpu: &VirtioGpu<'_>,
    dev: &virtio::Device<Bound>,
    limit: &RateLimit,
) {
    // A device without a configuration space failed probe: neither access below fails.
    // SAFETY: `events_read` is a `__le32` field, at an aligned offset, of every virtio-gpu
    // device's configuration space.
    let Ok(events) = (unsafe { dev.config_le32(config::EVENTS_READ) }) else {
        return;
    };
    if events & uapi::VIRTIO_GPU_EVENT_DISPLAY == 0 {
        return;
    }
    // SAFETY: `events_clear` is a `__le32` field, at an aligned offset, of every virtio-gpu
    // device's configuration space, the one the driver writes.
    if unsafe { dev.write_config_le32(config::EVENTS_CLEAR, uapi::VIRTIO_GPU_EVENT_DISPLAY) }
        .is_err()
    {
        return;
    }
    // As many as at probe: one per scanout the driver handles.
    let count = gpu.displays.lock().scanouts.len();
    match Displays::read(dev, gpu.control(), count, gpu.features.edid) {
        Ok(displays) => {
            let mut current = gpu.displays.lock();
            displays.log(dev, Some(&current), Some(limit));
            *current = displays;
            drop(current);
            // Userspace probes the connectors again, as after C's change.
            kms::hotplug_event(drm);
        }
        // The queues were shut down: the device is being unbound.
        Err(e) if e == ENODEV => {}
        Err(e) => dev_err!(dev, "display change not read: {:?}\n", e),
    }
}

/// The work item that reads a configuration change in process context.
#[pin_data]
pub(crate) struct ConfigWork {
    /// The device, whose registration the work item enters.
    dev: RegisteredRef<DrmDriver>,
    /// Limits the log lines of changed scanouts.
    #[pin]
    log_limit: RateLimit,
    /// Queued by `config_changed`; runs [`changed`].
    #[pin]
    work: Work<ConfigWork>,
}

impl_has_work! {
    impl HasWork<Self> for ConfigWork { self.work }
}

impl WorkItem for ConfigWork {
    type Pointer = Arc<ConfigWork>;

    fn run(this: Arc<ConfigWork>) {
        // Unplugged: the device is being unbound, its configuration does not matter any more.
        let Some(guard) = this.dev.registration_guard() else {
            return;
        };
        let dev: &virtio::Device<Bound> = (*guard).as_ref();
        guard.registration_data_with(|gpu| changed(&guard, gpu, dev, &this.log_limit));
    }
}

impl ConfigWork {
    /// The work item of the registered DRM device `dev`.
    pub(crate) fn new(dev: RegisteredRef<DrmDriver>) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                dev,
                log_limit <- RateLimit::default(c"virtio_gpu_rs: display changes"),
                work <- new_work!("virtio_gpu_rs::ConfigWork::work"),
            }),
            GFP_KERNEL,
        )
    }

    /// Queues the work item, from `config_changed` (atomic context; queueing does not sleep).
    pub(crate) fn queue(self: &Arc<Self>) {
        // Queued already: it has not read `events_read` yet and will see this change. The
        // clone then comes back and is dropped; `self` keeps the work item alive. On the
        // per-CPU queue, as C's `schedule_work`: the worker of the CPU that took the interrupt
        // runs it, with no wake-up of another CPU's worker in between.
        let _ = workqueue::system_percpu().enqueue(self.clone());
    }

    /// Waits until the work item is idle. At unbind, once `config_changed` is no longer called,
    /// nothing queues it again after this.
    pub(crate) fn flush(&self) {
        self.work.flush();
    }
}

/// Reads an EDID from a `VIRTIO_GPU_CMD_GET_EDID` response.
fn edid(resp: &[u8]) -> Result<KVec<u8>> {
    let resp: protocol::RespEdid = protocol::decode_response(resp, protocol::RESP_OK_EDID)?;
    let mut edid = KVec::new();
    edid.extend_from_slice(resp.edid()?, GFP_KERNEL)?;
    Ok(edid)
}
