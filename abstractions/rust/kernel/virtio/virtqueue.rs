// SPDX-License-Identifier: GPL-2.0

//! Virtqueues: finding them, adding buffers, getting used buffers back, and the callbacks.
//!
//! C header: [`include/linux/virtio.h`](srctree/include/linux/virtio.h).
//!
//! This module owns the queues of one bound device and everything the device may still hold:
//!
//! - [`Virtqueues::find`] (in probe) creates the device's queues. Each is taken once, typed by
//!   the [`Buffer`] it carries, with [`Virtqueues::take`].
//! - A buffer travels as a [`Request`]: the driver's [`KBox`] plus the scatter-gather lists that
//!   describe it, built in process context so that [`Virtqueue::add`] (typically under a spinlock)
//!   allocates nothing. The device owns the box until [`Virtqueue::get_buf`] hands it back.
//! - [`Virtqueues::ready`] installs the driver's [`Callbacks`] and marks the device ready. The
//!   PCI and MMIO transports call queue callbacks from their interrupt handlers with interrupts
//!   disabled (on other transports the abstraction disables them), and
//!   [`Callbacks::queue_used`] receives the [`LocalInterruptDisabled`] proof of it, so the driver
//!   takes its queue lock with `SpinLockIrq::lock_with`. The C callback is one function of the
//!   kernel, not of the driver's module, and reaches the driver only through the device's `priv`,
//!   which the abstraction clears when the device is unbound.
//! - Dropping a [`Virtqueue`] that still holds buffers resets the device if it is live, then
//!   detaches every buffer the device did not use and drops it. A driver cannot leak a buffer at
//!   removal or on an error path of its probe (short of leaking the queue itself).
//! - The queues are deleted when the device is unbound (a devres action), after the driver's data
//!   and so its queues are gone.
//!
//! The virtqueue functions need their caller to serialise them per queue: here that is `&mut
//! Virtqueue`, so a queue shared between process context and its callback lives in a lock (the
//! driver's). Nothing here takes a lock; dropping a queue that holds buffers sleeps (it may
//! reset the device).

use super::{
    Device,
    Reset, //
};
use crate::{
    alloc::Flags,
    bindings, device, devres,
    error::to_result,
    interrupt::{
        local_interrupt_disable,
        LocalInterruptDisabled, //
    },
    prelude::*,
    sync::{
        atomic::{
            ordering,
            Atomic, //
        },
        rcu,
        Arc, //
    },
};
use core::{
    ffi::c_void,
    marker::PhantomData,
    ptr::NonNull, //
};

/// The most parts (device-readable plus device-writable) one [`Request`] may have.
pub const MAX_PARTS: usize = 8;

/// What the driver implements to receive queue notifications.
pub trait Callbacks: Send + Sync {
    /// The device has used buffers of queue `index` (or a notification was spurious).
    ///
    /// Called from the transport's interrupt handler, in hard-IRQ context on PCI and MMIO,
    /// always with interrupts disabled on this CPU (`irq` proves it). It must not
    /// sleep, and it should not drop anything whose release may sleep. A typical handler takes
    /// the queue's `SpinLockIrq` with `lock_with(irq)`, disables callbacks, gets every used buffer,
    /// and re-enables callbacks (and gets buffers again if [`Virtqueue::enable_cb`] says so).
    fn queue_used(&self, index: u32, irq: &LocalInterruptDisabled);
}

/// Memory the device reads from or writes to, owned by the driver's box while the device has it.
///
/// The device accesses the memory [`Buffer::describe`] names until the buffer comes back from
/// [`Virtqueue::get_buf`] (or is detached at reset). The parts borrow from `self` for as long as
/// the describing call, and the abstraction keeps the box, whose contents do not move, alive and
/// unreachable by anyone else for the whole time, so the borrows stay valid.
pub trait Buffer: Send + 'static {
    /// Describes the parts the device reads, then the parts it writes, in order.
    fn describe<'a>(&'a mut self, sg: &mut Sg<'a>) -> Result;
}

/// One contiguous stretch of virtual memory of a [`Request`].
///
/// # Invariants
///
/// `len` is in `1..=u32::MAX`, and `addr..addr + len` is memory borrowed from a [`Buffer`]'s
/// contents (so it does not wrap around the address space).
#[derive(Clone, Copy)]
struct Part {
    addr: NonNull<u8>,
    len: usize,
}

/// The parts of a [`Buffer`], in device order: every device-readable part before the first
/// device-writable one.
pub struct Sg<'a> {
    parts: [Option<Part>; MAX_PARTS],
    out: usize,
    count: usize,
    _borrow: PhantomData<&'a mut [u8]>,
}

impl<'a> Sg<'a> {
    fn new() -> Self {
        Self {
            parts: [None; MAX_PARTS],
            out: 0,
            count: 0,
            _borrow: PhantomData,
        }
    }

    fn push(&mut self, addr: *const u8, len: usize) -> Result {
        let addr = NonNull::new(addr.cast_mut()).ok_or(EINVAL)?;
        if len == 0 || u32::try_from(len).is_err() {
            return Err(EINVAL);
        }
        let slot = self.parts.get_mut(self.count).ok_or(E2BIG)?;
        // INVARIANT: `len` was checked above; the callers pass a borrowed slice.
        *slot = Some(Part { addr, len });
        self.count += 1;
        Ok(())
    }

    /// Adds a part the device reads. All device-readable parts come first: after a
    /// device-writable part this fails with `EINVAL`. Empty parts and more than [`MAX_PARTS`]
    /// parts are refused (`EINVAL`, `E2BIG`).
    pub fn device_reads(&mut self, data: &'a [u8]) -> Result {
        if self.out != self.count {
            return Err(EINVAL);
        }
        self.push(data.as_ptr(), data.len())?;
        self.out += 1;
        Ok(())
    }

    /// Adds a part the device writes.
    pub fn device_writes(&mut self, data: &'a mut [u8]) -> Result {
        self.push(data.as_mut_ptr(), data.len())
    }
}

/// Where a part's memory is, which decides how its scatter-gather entries are made: see
/// [`placement_of`], the only place one is made.
#[derive(Clone, Copy)]
enum Placement {
    /// In the linear map, physically contiguous: one entry.
    Linear,
    /// Vmalloc or module memory: one entry for each of `n` pages.
    Paged(usize),
}

impl Placement {
    /// The number of scatter-gather entries the part needs.
    fn entries(self) -> usize {
        match self {
            Placement::Linear => 1,
            Placement::Paged(n) => n,
        }
    }
}

/// Where `part` is: in the linear map (one entry), or in vmalloc or module memory (one entry
/// per page). `EINVAL` for memory that is neither, or vmalloc space without pages behind it (an
/// I/O mapping).
///
/// A part inside `boxed` is taken as linear without asking: each `virt_addr_valid` takes and
/// releases an RCU read lock, which lockdep tracks, and costs more than building a header's
/// entry.
///
/// # Guarantees
///
/// `Linear`: `part`'s memory is in the linear map, physically contiguous from its first byte
/// to its last. `Paged(n)`: it is vmalloc or module memory, `n` is the number of pages that
/// `part` spans, and each has a page behind it.
///
/// # Safety
///
/// `boxed` must be empty or lie within a live allocation made by
/// [`Kmalloc`](crate::alloc::allocator::Kmalloc).
unsafe fn placement_of(part: &Part, boxed: &core::ops::Range<usize>) -> Result<Placement> {
    let start = part.addr.as_ptr() as usize;
    // No overflow: `len >= 1` and the memory does not wrap (type invariant of `Part`).
    let last = start + (part.len - 1);
    if boxed.contains(&start) && boxed.contains(&last) {
        // GUARANTEE: `boxed` is in a live `Kmalloc` allocation (safety requirement), and so is
        // `part`. `Kmalloc` allocates with `krealloc`: a slab object (slab pages come from the
        // page allocator without `__GFP_HIGHMEM`), a compound page for sizes above the largest
        // cache, or a KFENCE object (memblock memory, at most a page); each is in the linear map
        // and physically contiguous.
        return Ok(Placement::Linear);
    }
    // SAFETY: `virt_addr_valid` only inspects the address.
    let linear = |a: usize| unsafe { bindings::virt_addr_valid(a as *const c_void) };
    if linear(start) && linear(last) {
        // GUARANTEE: Both ends are in the linear map, which maps physical memory in one piece.
        return Ok(Placement::Linear);
    }
    // SAFETY: `is_vmalloc_or_module_addr` only inspects the address.
    if unsafe { bindings::is_vmalloc_or_module_addr(start as *const c_void) } == 0 {
        return Err(EINVAL);
    }
    let page = bindings::PAGE_SIZE;
    let mut addr = start & !(page - 1);
    let mut n = 0;
    while addr <= last {
        // SAFETY: `addr` is a vmalloc or module address; `vmalloc_to_page` only walks the page
        // tables, and tells a page from none.
        if unsafe { bindings::vmalloc_to_page(addr as *const c_void) }.is_null() {
            return Err(EINVAL);
        }
        n += 1;
        addr += page;
    }
    // GUARANTEE: Vmalloc or module memory; `n` counts the pages from `start`'s to `last`'s, each
    // with a page behind it.
    Ok(Placement::Paged(n))
}

/// Fills `list` with `part`'s memory, placed as `placement` says.
///
/// # Safety
///
/// `list` must point to `placement.entries()` initialised entries. If `placement` is `Linear`,
/// `part`'s memory must be in the linear map and physically contiguous; if it is `Paged(n)`, it
/// must be vmalloc or module memory spanning `n` pages, each with a page behind it (what
/// [`placement_of`] guarantees).
unsafe fn fill(list: *mut bindings::scatterlist, part: &Part, placement: Placement) {
    let page = bindings::PAGE_SIZE;
    let start = part.addr.as_ptr() as usize;
    let n = match placement {
        Placement::Linear => {
            // SAFETY: `start` is in the linear map (safety requirement), so `virt_to_page` gives
            // its page, and the memory from there is physically contiguous for `len` bytes;
            // `list` has one valid entry (safety requirement).
            unsafe {
                bindings::sg_set_page(
                    list,
                    bindings::virt_to_page(start as *const c_void),
                    part.len as u32,
                    (start % page) as u32,
                )
            };
            return;
        }
        Placement::Paged(n) => n,
    };
    let end = start + part.len;
    let mut addr = start;
    for i in 0..n {
        let offset = addr % page;
        let len = core::cmp::min(page - offset, end - addr);
        // SAFETY: `addr` is in one of the `n` pages `part` spans, vmalloc or module memory with a
        // page behind it (safety requirement); entry `i < n` of `list` is valid.
        unsafe {
            let p = bindings::vmalloc_to_page(addr as *const c_void);
            bindings::sg_set_page(list.add(i), p, len as u32, offset as u32);
        }
        addr += len;
    }
}

/// Requests with at most this many scatter-gather entries keep them inline: a command with a
/// header, a payload and a response in linear memory allocates nothing for its lists.
const INLINE_ENTRIES: usize = 4;

/// The scatter-gather entries of a [`Request`].
///
/// Each entry names a page (a `struct page` pointer with flag bits in `page_link`), an offset
/// and a length. None points into the entries: the lists are never chained, `sg_next` steps to
/// the adjacent entry and `sg_mark_end` only sets a bit. So the lists stay valid wherever the
/// request moves, and `virtqueue_add_sgs` keeps no pointer to them once it returns.
enum Entries {
    Inline([bindings::scatterlist; INLINE_ENTRIES]),
    Allocated(KVec<bindings::scatterlist>),
}

// `Request` is `Send` because its entries are plain data: keep it so.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Entries>();
};

impl Entries {
    /// At least `n` zeroed entries: inline when they fit (then `flags` is not used).
    fn zeroed(n: usize, flags: Flags) -> Result<Self> {
        if n <= INLINE_ENTRIES {
            return Ok(Self::Inline(Zeroable::zeroed()));
        }
        Ok(Self::Allocated(KVec::from_elem(
            Zeroable::zeroed(),
            n,
            flags,
        )?))
    }

    fn as_mut_ptr(&mut self) -> *mut bindings::scatterlist {
        match self {
            Self::Inline(sgs) => sgs.as_mut_ptr(),
            Self::Allocated(sgs) => sgs.as_mut_ptr(),
        }
    }
}

/// A buffer made ready for a queue: the driver's box and the scatter-gather lists naming its
/// parts.
///
/// # Invariants
///
/// - `heads[..out + ins]` are the indices in `sgs` of the first entries of `out + ins`
///   terminated lists, one per part; the first `out` are device-readable.
/// - Every entry of those lists names memory that `buf` borrowed to [`Buffer::describe`]: it stays valid while
///   `buf` is alive and nobody else accesses it through `buf`, because `buf` is owned here (or
///   by the device, through the queue) and never handed out mutably until the device is done.
pub struct Request<B: Buffer> {
    buf: KBox<B>,
    sgs: Entries,
    heads: [usize; MAX_PARTS],
    out: u32,
    ins: u32,
}

impl<B: Buffer> Request<B> {
    /// Describes `buf` and builds its scatter-gather lists. Up to four entries (a header, a
    /// payload and a response in linear memory, say) are kept in the request and `flags` is not
    /// used; more are allocated with `flags`.
    ///
    /// Fails with `EINVAL` if `buf` describes no part, an empty part, parts out of order or
    /// memory that cannot be handed to a device, and with `E2BIG` for too many parts. `buf` is
    /// dropped then; see [`Request::try_new`] to get it back.
    pub fn new(buf: KBox<B>, flags: Flags) -> Result<Self> {
        Self::try_new(buf, flags).map_err(|(e, _)| e)
    }

    /// As [`Request::new`], but a failure gives `buf` back, so that the caller decides where it
    /// is dropped (not under a spinlock, if its drop may sleep) or tries again.
    pub fn try_new(mut buf: KBox<B>, flags: Flags) -> Result<Self, (Error, KBox<B>)> {
        match Self::lists(&mut buf, flags) {
            Ok((sgs, heads, out, ins)) => Ok(Self {
                buf,
                sgs,
                heads,
                out,
                ins,
            }),
            Err(e) => Err((e, buf)),
        }
    }

    /// Builds the scatter-gather lists of `buf`: the entries, the head of each part's list,
    /// and the numbers of device-readable and device-writable parts.
    fn lists(buf: &mut KBox<B>, flags: Flags) -> Result<(Entries, [usize; MAX_PARTS], u32, u32)> {
        // The box's own memory, allocated by `Kmalloc` (`KBox`), alive while `buf` is.
        let start = core::ptr::from_ref::<B>(&**buf) as usize;
        let boxed = start..start + core::mem::size_of::<B>();
        let mut sg = Sg::new();
        buf.describe(&mut sg)?;
        // `sg` holds plain addresses in the box's memory or memory the box owns: `buf` is not
        // used again while they are read.
        if sg.count == 0 {
            return Err(EINVAL);
        }

        let mut placed = [None; MAX_PARTS];
        for (slot, part) in placed.iter_mut().zip(sg.parts.iter().flatten()) {
            // SAFETY: `boxed` is the memory of the live box `buf`, allocated by `Kmalloc`.
            *slot = Some((*part, unsafe { placement_of(part, &boxed) }?));
        }
        let total = placed.iter().flatten().map(|(_, p)| p.entries()).sum();
        let mut sgs = Entries::zeroed(total, flags)?;

        // The lists are carved out of one base pointer, used only until `sgs` moves.
        let base = sgs.as_mut_ptr();
        let mut heads = [0; MAX_PARTS];
        let mut next = 0;
        for (i, (part, placement)) in placed.iter().flatten().enumerate() {
            let n = placement.entries();
            // SAFETY: `next + n <= total`, and `sgs` has at least `total` entries.
            let list = unsafe { base.add(next) };
            // SAFETY: `list` points to `n` entries of `sgs`; this zeroes them and marks the last
            // as the end of the list.
            unsafe { bindings::sg_init_table(list, n as u32) };
            // SAFETY: `list` has `n == placement.entries()` initialised entries, and `placement`
            // is what `placement_of` guaranteed for `part`.
            unsafe { fill(list, part, *placement) };
            heads[i] = next;
            next += n;
        }
        let (out, count) = (sg.out, sg.count);

        // INVARIANT (of the `Request` made of these): Each part has its own terminated list in
        // `sgs`, device-readable parts first, and all name memory borrowed from `buf`'s
        // contents, which `buf` keeps.
        Ok((sgs, heads, out as u32, (count - out) as u32))
    }

    /// Gives the buffer back, for instance after the queue was found full for good.
    pub fn into_buffer(self) -> KBox<B> {
        self.buf
    }
}

/// The queues of one bound device, shared by its [`Virtqueue`]s, the callbacks' registration
/// and the devres action that deletes the queues when the device is unbound.
///
/// # Invariants
///
/// `vdev` is a virtio device bound to a driver of this abstraction, whose queues were created
/// by [`Virtqueues::find`]; they exist until [`DeleteQueues`] runs at unbind, which happens after
/// the driver's data (holding every [`Virtqueue`] and [`Registration`] that was not leaked) is
/// dropped.
struct QueueSet {
    vdev: NonNull<bindings::virtio_device>,
}

// SAFETY: `QueueSet` is a handle to the device's queues: its methods are safe to call from any
// thread in process context.
unsafe impl Send for QueueSet {}
// SAFETY: The methods taking `&self` read the status or reset the device; the transports
// serialise status accesses with the device (core callbacks run under the device lock, and a
// reset from two threads at once only writes zero twice).
unsafe impl Sync for QueueSet {}

impl QueueSet {
    fn device(&self) -> &Device<device::Bound> {
        // SAFETY: By the type invariant `vdev` is a bound virtio device.
        unsafe { &*self.vdev.as_ptr().cast::<Device<device::Bound>>() }
    }

    /// Resets the device unless it is already reset (see [`Device::is_live`]). After this the
    /// device uses no buffer. Sleeps.
    fn quiesce(&self) {
        if self.device().is_live() {
            // SAFETY: By the type invariant `vdev` is valid.
            unsafe { bindings::virtio_reset_device(self.vdev.as_ptr()) };
        }
    }
}

/// The devres action that deletes a device's queues when it is unbound.
struct DeleteQueues(Arc<QueueSet>);

impl Drop for DeleteQueues {
    fn drop(&mut self) {
        // The driver's data is gone: its queues and the callbacks' registration dropped (or were
        // leaked, then their buffers leak with them), and the core's `remove` uninstalled the
        // callbacks. Only a probe that failed before any queue held a buffer leaves a live device.
        self.0.quiesce();
        let vdev = self.0.vdev.as_ptr();
        // SAFETY: By the type invariant of `QueueSet`, `vdev` is valid and its queues exist; this
        // is the one place that deletes them. `config` points to the transport's operations,
        // which always include `del_vqs`.
        unsafe {
            if let Some(del_vqs) = (*(*vdev).config).del_vqs {
                del_vqs(vdev);
            }
        }
    }
}

/// The queues of a device just found, before they are taken and the device is ready.
///
/// It is neither `Send` nor `Sync` and [`Virtqueues::ready`] consumes it: it cannot leave the
/// probe that found the queues, so the device is marked ready at most once.
pub struct Virtqueues<'a, H: Callbacks> {
    set: Arc<QueueSet>,
    vqs: KVec<Option<NonNull<bindings::virtqueue>>>,
    _dev: PhantomData<&'a Device<device::Bound>>,
    _handler: PhantomData<fn(H)>,
}

/// The part of an installed set of callbacks that [`queue_callback`] reads: the function that
/// calls the driver's handler.
#[repr(C)]
struct Header {
    call: unsafe fn(*const Header, u32, &LocalInterruptDisabled),
}

/// What `priv` points to while the callbacks are installed.
///
/// # Invariants
///
/// `header.call` is `invoke::<H>`.
#[repr(C)]
struct Installed<H: Callbacks> {
    header: Header,
    handler: Arc<H>,
}

/// Calls the handler of the [`Installed`] at `this`.
///
/// # Safety
///
/// `this` must point to a live `Installed<H>`, and interrupts must be disabled (as `irq` claims).
unsafe fn invoke<H: Callbacks>(this: *const Header, index: u32, irq: &LocalInterruptDisabled) {
    // SAFETY: `Installed<H>` is `repr(C)` with `header` first, and `this` points to one (function
    // safety requirement).
    let installed = unsafe { &*this.cast::<Installed<H>>() };
    installed.handler.queue_used(index, irq);
}

/// The field of the device through which the queue callbacks find the driver's handler.
///
/// # Safety
///
/// `vdev` must be a valid virtio device bound to a driver of this abstraction.
unsafe fn priv_field<'a>(vdev: *mut bindings::virtio_device) -> &'a Atomic<*mut c_void> {
    // SAFETY: `priv` is a valid, aligned pointer-sized field of the device (function safety
    // requirement); while this abstraction's driver is bound, only it accesses the field, and only
    // through atomics.
    unsafe { Atomic::<*mut c_void>::from_ptr(&raw mut (*vdev).priv_) }
}

/// Clears the device's `priv` before a driver of this abstraction binds it.
///
/// # Safety
///
/// `vdev` must be a valid virtio device being bound to a driver of this abstraction, with no
/// queues yet.
pub(super) unsafe fn clear_priv(vdev: *mut bindings::virtio_device) {
    // SAFETY: Function safety requirement.
    unsafe { priv_field(vdev) }.store(core::ptr::null_mut(), ordering::Relaxed);
}

/// Uninstalls the callbacks of `vdev`, if any: when this returns, no queue callback runs the
/// driver's code any more. Sleeps.
///
/// # Safety
///
/// `vdev` must be a valid virtio device bound to a driver of this abstraction.
pub(super) unsafe fn uninstall(vdev: *mut bindings::virtio_device) {
    // SAFETY: Function safety requirement.
    // Relaxed suffices: the synchronisation below orders the store before anything freed after.
    unsafe { priv_field(vdev) }.store(core::ptr::null_mut(), ordering::Relaxed);
    // SAFETY: `vdev` is valid; this waits for the callbacks that may have read the old value.
    unsafe { bindings::virtio_synchronize_cbs(vdev) };
}

/// The one queue callback of every virtio driver of this abstraction.
///
/// It lives in the kernel, not in the driver's module, and calls into the driver only through
/// `priv`, which is cleared and synchronised with at the latest when the device is unbound
/// (see [`uninstall`]). So even queues a driver leaked never run its code after it is gone.
///
/// # Safety
///
/// `vq` must be a valid queue of a device bound to a driver of this abstraction.
unsafe extern "C" fn queue_callback(vq: *mut bindings::virtqueue) {
    // SAFETY: `vq` is valid (function safety requirement), so is its device.
    let (vdev, index) = unsafe { ((*vq).vdev, (*vq).index) };
    let rcu_guard = rcu::read_lock();
    // SAFETY: `vdev` is bound to a driver of this abstraction (function safety requirement).
    let header = unsafe { priv_field(vdev) }
        .load(ordering::Acquire)
        .cast::<Header>();
    if header.is_null() {
        // Not ready yet, or being torn down: a spurious notification.
        return;
    }
    // SAFETY: A non-null `priv` points to an `Installed<H>` of a live `Registration<H>`, whose
    // drop (like `remove`) clears `priv` and synchronises with running callbacks before freeing
    // it: the transport's `synchronize_cbs`, or `synchronize_rcu()` for transports without one,
    // which the read-side section below makes wait for us. By the type invariant of `Installed`,
    // `call` is `invoke::<H>`.
    let call = |irq: &LocalInterruptDisabled| unsafe { ((*header).call)(header, index, irq) };
    // SAFETY: `irqs_disabled` only reads this CPU's interrupt state.
    if unsafe { bindings::irqs_disabled() } {
        // SAFETY: Interrupts are disabled on this CPU, as just checked; PCI and MMIO always get
        // here this way, from their interrupt handlers.
        call(unsafe { LocalInterruptDisabled::assume_disabled() });
    } else {
        // A transport that calls back from a thread or a work item: make the promise true.
        call(&local_interrupt_disable());
    }
    drop(rcu_guard);
}

impl<'a, H: Callbacks> Virtqueues<'a, H> {
    /// Finds the device's queues, one per name, in order (`queue_used` gets their index).
    ///
    /// Called once, in probe: `EBUSY` if the device already has queues.
    pub fn find(dev: &'a Device<device::Core<'_>>, names: &[&'static CStr]) -> Result<Self> {
        let vdev = dev.as_raw();
        // SAFETY: `vdev` is valid; the queue list is only changed by the transport in probe,
        // under the device lock that we hold.
        if unsafe { (*vdev).vqs.next != &raw mut (*vdev).vqs } {
            return Err(EBUSY);
        }
        // Queues belong to a device whose features were accepted and that is not running yet
        // (not reset by the driver, not ready).
        if !dev.awaits_driver() {
            return Err(EINVAL);
        }

        let n = names.len();
        let mut info = KVec::with_capacity(n, GFP_KERNEL)?;
        for name in names {
            info.push(
                bindings::virtqueue_info {
                    name: name.as_char_ptr(),
                    callback: Some(queue_callback),
                    ctx: false,
                },
                GFP_KERNEL,
            )?;
        }
        let mut raw = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            raw.push(core::ptr::null_mut(), GFP_KERNEL)?;
        }
        let mut vqs = KVec::with_capacity(n, GFP_KERNEL)?;
        let set = Arc::new(
            QueueSet {
                // SAFETY: `vdev` comes from a reference.
                vdev: unsafe { NonNull::new_unchecked(vdev) },
            },
            GFP_KERNEL,
        )?;

        // SAFETY: `vdev` is valid and in probe; `raw` and `info` hold `n` entries; `priv` is null
        // (cleared before probe), so callbacks that come early return at once.
        to_result(unsafe {
            bindings::virtio_find_vqs(
                vdev,
                n as u32,
                raw.as_mut_ptr(),
                info.as_mut_ptr(),
                core::ptr::null_mut(),
            )
        })?;

        // INVARIANT: The queues exist now and are deleted at unbind. If registering the action
        // fails, it runs at once: the queues are deleted and we return the error.
        let bound: &device::Device<device::Bound> = dev.as_ref();
        devres::register(bound, DeleteQueues(set.clone()), GFP_KERNEL)?;

        for vq in raw {
            // Cannot fail: the capacity is there.
            vqs.push(NonNull::new(vq), GFP_ATOMIC)?;
        }
        Ok(Self {
            set,
            vqs,
            _dev: PhantomData,
            _handler: PhantomData,
        })
    }

    /// Takes queue `index`, typed by the buffers it carries. `ENOENT` if there is no such queue
    /// or it was taken already.
    pub fn take<B: Buffer>(&mut self, index: usize) -> Result<Virtqueue<'a, B>> {
        let vq = self
            .vqs
            .get_mut(index)
            .and_then(Option::take)
            .ok_or(ENOENT)?;
        Ok(Virtqueue {
            vq,
            set: self.set.clone(),
            outstanding: 0,
            _p: PhantomData,
        })
    }

    /// Installs `handler` as the queues' callbacks and marks the device ready (`DRIVER_OK`), so
    /// that the driver can use its queues during probe.
    ///
    /// The callbacks stay installed until the returned registration is dropped.
    ///
    /// `EINVAL` if the device was reset since [`Virtqueues::find`].
    pub fn ready(self, handler: Arc<H>) -> Result<Registration<'a, H>> {
        let vdev = self.set.vdev.as_ptr();
        if !self.set.device().awaits_driver() {
            return Err(EINVAL);
        }
        // INVARIANT: `call` is `invoke::<H>`.
        let installed = KBox::new(
            Installed {
                header: Header { call: invoke::<H> },
                handler,
            },
            GFP_KERNEL,
        )?;
        let installed = KBox::into_raw(installed);
        // SAFETY: `vdev` is bound to this abstraction's driver (we are in its probe).
        unsafe { priv_field(vdev) }.store(installed.cast(), ordering::Release);
        // SAFETY: `vdev` is valid and in probe; the driver only gets here once per probe, since
        // `find` refuses a device that has queues and `ready` consumes them.
        unsafe { bindings::virtio_device_ready(vdev) };
        Ok(Registration {
            set: self.set,
            // SAFETY: `installed` comes from `KBox::into_raw`.
            installed: unsafe { NonNull::new_unchecked(installed) },
            _p: PhantomData,
        })
    }
}

/// The installed queue callbacks of a device. Dropping it uninstalls them: no callback runs
/// after the drop returned. The abstraction also uninstalls them when the device is unbound, so
/// a registration that is leaked leaks memory, nothing worse.
///
/// # Invariants
///
/// `installed` comes from `KBox::into_raw` and is only freed by the drop; `priv` of the device
/// points to it or is null.
pub struct Registration<'a, H: Callbacks> {
    set: Arc<QueueSet>,
    installed: NonNull<Installed<H>>,
    _p: PhantomData<(&'a Device<device::Bound>, Arc<H>)>,
}

impl<H: Callbacks> Drop for Registration<'_, H> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant of `QueueSet`, the device is bound to this abstraction's
        // driver.
        unsafe { uninstall(self.set.vdev.as_ptr()) };
        // SAFETY: By the type invariant `installed` came from `KBox::into_raw`, and no callback
        // can reach it any more.
        drop(unsafe { KBox::from_raw(self.installed.as_ptr()) });
    }
}

// SAFETY: Dropping the registration may happen on any thread; `H: Send + Sync`.
unsafe impl<H: Callbacks> Send for Registration<'_, H> {}
// SAFETY: `Registration` has no methods taking `&self`.
unsafe impl<H: Callbacks> Sync for Registration<'_, H> {}

/// Why [`Virtqueue::add`] did not take a request; the request is given back.
pub struct AddError<B: Buffer> {
    /// `ENOSPC` when the queue has too few free descriptors: wait for the device to use some,
    /// unless the queue is empty ([`Virtqueue::is_idle`]), then the request can never fit.
    /// `EIO` when the queue is broken, `ENOMEM` when mapping the memory for DMA failed.
    pub error: Error,
    /// The request, unchanged.
    pub request: Request<B>,
}

/// A virtqueue carrying buffers of type `B`.
///
/// # Invariants
///
/// - `vq` is a queue of `set`'s device, taken by exactly one `Virtqueue`.
/// - Every token in `vq` is a `KBox<B>` leaked by [`Virtqueue::add`]; `outstanding` counts
///   them.
pub struct Virtqueue<'a, B: Buffer> {
    vq: NonNull<bindings::virtqueue>,
    set: Arc<QueueSet>,
    outstanding: usize,
    _p: PhantomData<(&'a Device<device::Bound>, KBox<B>)>,
}

// SAFETY: The queue may be used from any thread given `&mut`; the tokens are `KBox<B>` with
// `B: Send`.
unsafe impl<B: Buffer> Send for Virtqueue<'_, B> {}
// SAFETY: `&Virtqueue` only reads fields the transport fixes at creation.
unsafe impl<B: Buffer> Sync for Virtqueue<'_, B> {}

impl<'a, B: Buffer> Virtqueue<'a, B> {
    /// The queue's index on its device.
    pub fn index(&self) -> u32 {
        // SAFETY: By the type invariant `vq` is valid; `index` is fixed.
        unsafe { (*self.vq.as_ptr()).index }
    }

    /// The number of descriptors of the queue.
    pub fn size(&self) -> u32 {
        // SAFETY: By the type invariant `vq` is valid.
        unsafe { bindings::virtqueue_get_vring_size(self.vq.as_ptr()) }
    }

    /// Whether the device holds no buffer of this queue.
    pub fn is_idle(&self) -> bool {
        self.outstanding == 0
    }

    /// The number of free descriptors.
    pub fn num_free(&mut self) -> u32 {
        // SAFETY: By the type invariant `vq` is valid; `&mut self` serialises with `add`/`get_buf`.
        unsafe { (*self.vq.as_ptr()).num_free }
    }

    /// Gives `request` to the device. Allocation (of an indirect descriptor table) uses `flags`:
    /// `GFP_ATOMIC` under a spinlock. Does not notify the device: see [`Virtqueue::kick`].
    #[expect(
        clippy::result_large_err,
        reason = "a refused request comes back whole, unallocated: callers add under a spinlock"
    )]
    pub fn add(&mut self, request: Request<B>, flags: Flags) -> Result<(), AddError<B>> {
        let Request {
            buf,
            mut sgs,
            heads,
            out,
            ins,
        } = request;
        // Pointers from here on: `sgs` stays in place until `virtqueue_add_sgs` has read the
        // lists.
        let base = sgs.as_mut_ptr();
        let mut lists = [core::ptr::null_mut(); MAX_PARTS];
        for (list, &head) in lists.iter_mut().zip(&heads).take((out + ins) as usize) {
            // SAFETY: By the type invariant of `Request`, `head` indexes an entry of `sgs`.
            *list = unsafe { base.add(head) };
        }
        let token = KBox::into_raw(buf);
        // SAFETY: By the type invariants `vq` is valid and `&mut self` serialises the queue;
        // `lists` holds `out + ins` valid lists (in `sgs`, which does not move during the call)
        // naming memory kept alive by `token`, which stays leaked until `get_buf` or the drop's
        // detaching returns it.
        let ret = unsafe {
            bindings::virtqueue_add_sgs(
                self.vq.as_ptr(),
                lists.as_mut_ptr(),
                out,
                ins,
                token.cast(),
                flags.as_raw(),
            )
        };
        // The device now has copies of the addresses; the lists themselves are not needed.
        if ret < 0 {
            // SAFETY: The queue refused the token, so it is still ours.
            let buf = unsafe { KBox::from_raw(token) };
            return Err(AddError {
                error: Error::from_errno(ret),
                request: Request {
                    buf,
                    sgs,
                    heads,
                    out,
                    ins,
                },
            });
        }
        drop(sgs);
        self.outstanding += 1;
        Ok(())
    }

    /// Notifies the device of added buffers if it wants to be. Returns `false` if the device is
    /// broken.
    pub fn kick(&mut self) -> bool {
        // SAFETY: By the type invariant `vq` is valid; `&mut self` serialises the queue.
        unsafe { bindings::virtqueue_kick(self.vq.as_ptr()) }
    }

    /// The first half of [`Virtqueue::kick`]: decides, under the queue's lock, whether the device
    /// needs a notification. The returned [`Notify`] sends it, best after the lock is dropped.
    #[must_use = "the device is only notified by `Notify::notify`"]
    pub fn kick_prepare(&mut self) -> Option<Notify<'a>> {
        // SAFETY: By the type invariant `vq` is valid; `&mut self` serialises the queue.
        if unsafe { bindings::virtqueue_kick_prepare(self.vq.as_ptr()) } {
            Some(Notify {
                vq: self.vq,
                _p: PhantomData,
            })
        } else {
            None
        }
    }

    /// Takes a buffer the device has used, with the number of bytes it wrote.
    pub fn get_buf(&mut self) -> Option<(KBox<B>, u32)> {
        let mut len = 0u32;
        // SAFETY: By the type invariant `vq` is valid; `&mut self` serialises the queue.
        let token = unsafe { bindings::virtqueue_get_buf(self.vq.as_ptr(), &mut len) };
        let token = NonNull::new(token.cast::<B>())?;
        self.outstanding -= 1;
        // SAFETY: By the type invariant every token is a leaked `KBox<B>`; the device has
        // finished with it and returned it exactly once.
        Some((unsafe { KBox::from_raw(token.as_ptr()) }, len))
    }

    /// Stops callbacks for this queue (a hint: one may still come).
    pub fn disable_cb(&mut self) {
        // SAFETY: By the type invariant `vq` is valid; `&mut self` serialises the queue.
        unsafe { bindings::virtqueue_disable_cb(self.vq.as_ptr()) }
    }

    /// Restarts callbacks. Returns `false` if buffers were used meanwhile: get them, or a
    /// completion is lost.
    pub fn enable_cb(&mut self) -> bool {
        // SAFETY: By the type invariant `vq` is valid; `&mut self` serialises the queue.
        unsafe { bindings::virtqueue_enable_cb(self.vq.as_ptr()) }
    }
}

impl<B: Buffer> Virtqueue<'_, B> {
    /// Takes back one buffer the device has not used, after the reset that `reset` proves, to
    /// cancel what the device still held; `None` once there is none left. Does not sleep.
    ///
    /// The buffer is handed back rather than dropped: its drop may sleep, so a caller that
    /// holds the queue under a spinlock drops it after unlocking.
    ///
    /// Fails with `EINVAL`, detaching nothing, if `reset` is another device's.
    pub fn detach_unused(&mut self, reset: &Reset<'_>) -> Result<Option<KBox<B>>> {
        if !reset.is_of(self.set.vdev.as_ptr()) {
            return Err(EINVAL);
        }
        Ok(self.detach_one())
    }

    /// Detaches one unused buffer. The device must be reset.
    fn detach_one(&mut self) -> Option<KBox<B>> {
        // SAFETY: By the type invariant `vq` is valid and `&mut self` serialises the queue; the
        // device is reset, so it uses none of the buffers.
        let token = unsafe { bindings::virtqueue_detach_unused_buf(self.vq.as_ptr()) };
        let token = NonNull::new(token.cast::<B>())?;
        self.outstanding -= 1;
        // SAFETY: By the type invariant every token is a leaked `KBox<B>`, detached once.
        Some(unsafe { KBox::from_raw(token.as_ptr()) })
    }

    /// Detaches and drops every unused buffer. The device must be reset.
    fn detach_all(&mut self) {
        while let Some(buf) = self.detach_one() {
            drop(buf);
        }
    }
}

impl<B: Buffer> Drop for Virtqueue<'_, B> {
    fn drop(&mut self) {
        if self.outstanding == 0 {
            // Nothing to take back, so no reason to stop the device.
            return;
        }
        crate::task::might_sleep();
        // The device must not touch a buffer once it is dropped.
        self.set.quiesce();
        self.detach_all();
    }
}

/// A notification of the device decided by [`Virtqueue::kick_prepare`].
///
/// # Invariants
///
/// `vq` is a queue of a device bound for `'a`: the queues are only deleted at unbind.
#[must_use = "the device is only notified by `Notify::notify`"]
pub struct Notify<'a> {
    vq: NonNull<bindings::virtqueue>,
    _p: PhantomData<&'a Device<device::Bound>>,
}

// SAFETY: `virtqueue_notify` needs no serialisation and may be called from any thread.
unsafe impl Send for Notify<'_> {}

impl Notify<'_> {
    /// Notifies the device. Returns `false` if the device is broken.
    pub fn notify(self) -> bool {
        // SAFETY: By the type invariant `vq` is valid; `virtqueue_notify` needs no serialisation.
        unsafe { bindings::virtqueue_notify(self.vq.as_ptr()) }
    }
}

#[cfg(CONFIG_KUNIT)]
mod tests;
