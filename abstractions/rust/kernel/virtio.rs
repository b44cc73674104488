// SPDX-License-Identifier: GPL-2.0

//! Virtio drivers.
//!
//! C headers: [`include/linux/virtio.h`](srctree/include/linux/virtio.h),
//! [`include/linux/virtio_config.h`](srctree/include/linux/virtio_config.h).
//!
//! This module owns a virtio driver's registration ([`Driver`], [`Adapter`],
//! [`module_virtio_driver!`]), the device seen from a driver ([`Device`]: negotiated features,
//! typed reads and writes of the configuration space) and, in [`virtqueue`], the queues.
//!
//! The virtio core calls a driver's callbacks in these contexts, and the abstraction holds the
//! driver to them:
//!
//! - [`Driver::probe`] and [`Driver::unbind`] run in process context under the device lock.
//!   Before `probe` the device has its features negotiated; it becomes usable (`DRIVER_OK`)
//!   either when the driver calls [`virtqueue::Virtqueues::ready`] (to talk to the device during
//!   probe) or, at the latest, after the driver's data is in place.
//! - After [`Driver::unbind`] returns, the abstraction resets the device and uninstalls the queue
//!   callbacks (waiting for running ones). The device then no longer uses any buffer, no queue
//!   callback runs the driver's code, and the driver's data is dropped: its
//!   [`virtqueue::Virtqueue`]s detach and drop every buffer the device never used. Then the
//!   queues are deleted. A driver cannot forget the reset, nor leak a buffer short of leaking its
//!   queues.
//! - [`Driver::config_changed`] runs in atomic context (the core holds a spinlock with
//!   interrupts off), only between the end of `probe` and the start of `unbind`.
//! - Suspend is refused (`freeze` fails with `EOPNOTSUPP`) until drivers can rebuild their
//!   queues on resume.
//!
//! The lock taken here is the core's `config_lock` around `config_changed`; the queues document
//! their own.

use crate::{
    bindings,
    device,
    device_id::RawDeviceId,
    driver,
    error::{
        from_result,
        to_result,
        VTABLE_DEFAULT_ERROR, //
    },
    interrupt::{
        local_interrupt_disable,
        LocalInterruptDisabled, //
    },
    prelude::*,
    types::Opaque,
    ThisModule, //
};
use core::{
    marker::PhantomData,
    mem::offset_of,
    ptr::{
        addr_of_mut,
        NonNull, //
    },
};

pub mod virtqueue;

/// `VIRTIO_F_VERSION_1`: the device follows the virtio 1.0 (or later) specification, so its
/// configuration space is little-endian.
pub const F_VERSION_1: u32 = bindings::VIRTIO_F_VERSION_1;

/// `VIRTIO_F_ACCESS_PLATFORM`: the device reaches guest memory through the platform's DMA
/// translation (an IOMMU, say). Without it, the device uses guest-physical addresses and
/// bypasses the DMA API (C's `virtio_has_dma_quirk()`).
pub const F_ACCESS_PLATFORM: u32 = bindings::VIRTIO_F_ACCESS_PLATFORM;

/// An adapter for the registration of virtio drivers.
pub struct Adapter<T: Driver>(T);

// SAFETY:
// - `bindings::virtio_driver` is a C type declared as `repr(C)`.
// - `T::Data` is the type of the driver's device private data.
// - `struct virtio_driver` embeds a `struct device_driver`.
// - `DEVICE_DRIVER_OFFSET` is the correct byte offset to the embedded `struct device_driver`.
unsafe impl<T: Driver + 'static> driver::DriverLayout for Adapter<T> {
    type DriverType = bindings::virtio_driver;
    type DriverData<'bound> = T::Data<'bound>;
    const DEVICE_DRIVER_OFFSET: usize = offset_of!(Self::DriverType, driver);
}

// SAFETY: A call to `unregister` for a given instance of `DriverType` is guaranteed to be valid if
// a preceding call to `register` has been successful.
unsafe impl<T: Driver + 'static> driver::RegistrationOps for Adapter<T> {
    unsafe fn register(
        vdrv: &Opaque<Self::DriverType>,
        name: &'static CStr,
        module: &'static ThisModule,
    ) -> Result {
        let features = T::FEATURES;
        let count = u32::try_from(features.len())?;

        // SAFETY: It's safe to set the fields of `struct virtio_driver` on initialization; the
        // tables are `'static`, so they outlive the registration.
        unsafe {
            (*vdrv.get()).driver.name = name.as_char_ptr();
            (*vdrv.get()).id_table = T::ID_TABLE.as_ptr();
            (*vdrv.get()).feature_table = features.as_ptr();
            (*vdrv.get()).feature_table_size = count;
            (*vdrv.get()).probe = Some(Self::probe_callback);
            (*vdrv.get()).remove = Some(Self::remove_callback);
            (*vdrv.get()).freeze = Some(Self::freeze_callback);
            if T::HAS_CONFIG_CHANGED {
                (*vdrv.get()).config_changed = Some(Self::config_changed_callback);
            }
        }

        // SAFETY: `vdrv` is guaranteed to be a valid `DriverType`, pinned until `unregister`.
        to_result(unsafe { bindings::__register_virtio_driver(vdrv.get(), module.as_ptr()) })
    }

    unsafe fn unregister(vdrv: &Opaque<Self::DriverType>) {
        // SAFETY: `vdrv` is guaranteed to be a valid, registered `DriverType`.
        unsafe { bindings::unregister_virtio_driver(vdrv.get()) }
    }
}

impl<T: Driver + 'static> Adapter<T> {
    extern "C" fn probe_callback(vdev: *mut bindings::virtio_device) -> c_int {
        // SAFETY: The virtio core only calls `probe` with a valid `struct virtio_device` for the
        // duration of the call.
        //
        // INVARIANT: `vdev` is valid for the duration of `probe_callback()`.
        let dev = unsafe { &*vdev.cast::<Device<device::CoreInternal<'_>>>() };

        // A driver bound before this one (the C driver, say) may have left its own pointer in
        // `priv`. The queue callbacks read `priv`, so clear it before any queue exists.
        //
        // SAFETY: `vdev` is valid and being bound to this abstraction's driver.
        unsafe { virtqueue::clear_priv(vdev) };

        from_result(|| {
            let data = T::probe(dev);

            dev.as_ref().set_drvdata(data)?;
            Ok(0)
        })
    }

    extern "C" fn remove_callback(vdev: *mut bindings::virtio_device) {
        // SAFETY: The virtio core only calls `remove` with a valid `struct virtio_device` for the
        // duration of the call.
        //
        // INVARIANT: `vdev` is valid for the duration of `remove_callback()`.
        let dev = unsafe { &*vdev.cast::<Device<device::CoreInternal<'_>>>() };

        // SAFETY: `remove` is only called after a successful `probe`, which stored a
        // `Pin<KBox<T::Data<'_>>>` with `set_drvdata()`.
        let data = unsafe { dev.as_ref().drvdata_borrow::<T::Data<'_>>() };

        T::unbind(dev, data);

        // The core requires the device to be reset when `remove` returns. After the reset the
        // device uses no buffer, so the driver's data (dropped by the driver core next) can
        // detach its buffers.
        //
        // SAFETY: `vdev` is valid, see above.
        unsafe { bindings::virtio_reset_device(vdev) };

        // No queue callback may run the driver's code after it is unbound, even if it leaked its
        // queues or their callbacks' registration.
        //
        // SAFETY: `vdev` is valid and bound to this abstraction's driver.
        unsafe { virtqueue::uninstall(vdev) };
    }

    extern "C" fn config_changed_callback(vdev: *mut bindings::virtio_device) {
        // SAFETY: The virtio core only calls `config_changed` with a valid `struct virtio_device`
        // for the duration of the call.
        //
        // INVARIANT: `vdev` is valid for the duration of the call.
        let dev = unsafe { &*vdev.cast::<Device<device::BoundInternal>>() };

        // SAFETY: The core delivers configuration changes only while `config_core_enabled` is set,
        // which it sets after `probe` succeeded (so `set_drvdata()` stored the data) and clears
        // before `remove` runs, under the same `config_lock` it holds here.
        let data = unsafe { dev.as_ref().drvdata_borrow::<T::Data<'_>>() };

        // SAFETY: `irqs_disabled` only reads this CPU's interrupt state.
        if unsafe { bindings::irqs_disabled() } {
            // SAFETY: Interrupts are disabled on this CPU, as just checked (the core holds
            // `config_lock` taken with `spin_lock_irqsave()`).
            T::config_changed(dev, data, unsafe {
                LocalInterruptDisabled::assume_disabled()
            });
        } else {
            // Where `spin_lock_irqsave()` leaves interrupts on (PREEMPT_RT): make it true.
            T::config_changed(dev, data, &local_interrupt_disable());
        }
    }

    extern "C" fn freeze_callback(_vdev: *mut bindings::virtio_device) -> c_int {
        // The queues cannot be rebuilt on resume yet: refuse to suspend rather than resume with
        // a device whose queues are gone.
        EOPNOTSUPP.to_errno()
    }
}

/// Declares a kernel module that exposes a single virtio driver.
///
/// # Examples
///
/// ```ignore
/// kernel::module_virtio_driver! {
///     type: MyDriver,
///     name: "module_name",
///     authors: ["Author name"],
///     description: "Description",
///     license: "GPL v2",
/// }
/// ```
#[macro_export]
macro_rules! module_virtio_driver {
    ($($f:tt)*) => {
        $crate::module_driver!(<T>, $crate::virtio::Adapter<T>, { $($f)* });
    };
}

/// A virtio device id: a device type and a vendor, either of which may be [`DeviceId::ANY`].
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct DeviceId(bindings::virtio_device_id);

impl DeviceId {
    /// Matches any vendor (or, as a device type, any device).
    pub const ANY: u32 = bindings::VIRTIO_DEV_ANY_ID;

    /// The id of device type `device` from `vendor`.
    pub const fn new(device: u32, vendor: u32) -> Self {
        Self(bindings::virtio_device_id { device, vendor })
    }
}

// SAFETY: `DeviceId` is a `#[repr(transparent)]` wrapper of `virtio_device_id` and adds no
// invariant, so it may be transmuted to `RawType`.
unsafe impl RawDeviceId for DeviceId {
    type RawType = bindings::virtio_device_id;
}

/// The id table of a virtio driver. `struct virtio_device_id` has no driver data, so the table
/// carries none.
pub type IdTable = &'static dyn kernel::device_id::IdTable<DeviceId, ()>;

/// Creates a virtio [`IdTable`] with its alias for modpost, so the module loads on a match.
#[macro_export]
macro_rules! virtio_device_table {
    ($table_name:ident, [$($id:expr),* $(,)?]) => {
        $crate::module_device_table!("virtio", $crate::virtio::DeviceId, $table_name, @none,
            [$($id),*]);
    };
}

/// A virtio driver.
///
/// Implement it and register it with [`module_virtio_driver!`].
#[vtable]
pub trait Driver {
    /// The type of the driver's bound device private data.
    type Data<'bound>: Send + 'bound;

    /// The devices the driver binds.
    const ID_TABLE: IdTable;

    /// The device feature bits the driver understands (`VIRTIO_GPU_F_*` for instance). The core
    /// negotiates these and the transport's own features (such as [`F_VERSION_1`]) before
    /// [`Driver::probe`]; [`Device::has_feature`] tells which were accepted.
    const FEATURES: &'static [u32];

    /// Binds the driver to `dev`.
    ///
    /// Runs in process context. The returned initialiser is run in place; the device is marked
    /// ready (`DRIVER_OK`) after it completed, unless the driver did so before through
    /// [`virtqueue::Virtqueues::ready`].
    fn probe<'bound>(
        dev: &'bound Device<device::Core<'_>>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound;

    /// Called when `dev` is unbound, before the abstraction resets the device and drops `this`.
    ///
    /// The device still works here: the driver may, for instance, wait for its last commands.
    fn unbind<'bound>(dev: &'bound Device<device::Core<'_>>, this: Pin<&Self::Data<'bound>>) {
        let _ = (dev, this);
    }

    /// Called when the device changed its configuration space.
    ///
    /// Runs in atomic context with interrupts disabled (`irq` proves it): it must not sleep, so
    /// it typically reads what changed and queues a work item. Only called between a successful
    /// probe and the start of unbind.
    fn config_changed<'bound>(
        dev: &'bound Device<device::Bound>,
        this: Pin<&Self::Data<'bound>>,
        irq: &LocalInterruptDisabled,
    ) {
        let _ = (dev, this, irq);
        build_error!(VTABLE_DEFAULT_ERROR)
    }
}

/// A virtio device, as its driver sees it.
///
/// # Invariants
///
/// A [`Device`] instance represents a valid `struct virtio_device` created by the C portion of
/// the kernel.
#[repr(transparent)]
pub struct Device<Ctx: device::DeviceContext = device::Normal>(
    Opaque<bindings::virtio_device>,
    PhantomData<Ctx>,
);

impl<Ctx: device::DeviceContext> Device<Ctx> {
    pub(crate) fn as_raw(&self) -> *mut bindings::virtio_device {
        self.0.get()
    }

    /// The device type (`VIRTIO_ID_GPU` for instance).
    pub fn device_id(&self) -> u32 {
        // SAFETY: By the type invariant `self.as_raw()` is valid; `id` is set before the device is
        // registered and never changes.
        unsafe { (*self.as_raw()).id.device }
    }

    /// Whether feature bit `bit` was negotiated: the device offered it and the driver listed it
    /// in [`Driver::FEATURES`] (or it is a transport feature the core accepted).
    ///
    /// Unlike C's `virtio_has_feature()`, asking for a bit the driver did not list is not a
    /// `BUG()`: it was not negotiated, so the answer is `false`.
    pub fn has_feature(&self, bit: u32) -> bool {
        if bit >= bindings::VIRTIO_FEATURES_U64S * 64 {
            return false;
        }
        // SAFETY: By the type invariant `self.as_raw()` is valid; the feature bits are fixed once
        // the driver is bound; `bit` is in range.
        unsafe { bindings::__virtio_test_bit(self.as_raw(), bit) }
    }
}

impl Device<device::Bound> {
    /// Reads `N` bytes of the configuration space at `offset`, consistently: the read is retried
    /// until the device's configuration generation did not change during it. Sleeps.
    ///
    /// `ENODEV` if the transport has no configuration space for the device (see
    /// [`Device::config_le32`]).
    ///
    /// # Safety
    ///
    /// `offset..offset + N` must lie within the configuration space of the device, as the
    /// virtio specification defines it for its type and negotiated features (the transports do
    /// not check: PCI `BUG()`s, MMIO reads past the window).
    #[track_caller]
    pub unsafe fn config_bytes<const N: usize>(&self, offset: u32) -> Result<[u8; N]> {
        crate::task::might_sleep();
        if self.config_ops().get.is_none() {
            return Err(ENODEV);
        }
        let mut buf = [0u8; N];
        // SAFETY: `self.as_raw()` is valid and bound (type invariant, `Bound` context), so the
        // transport has the configuration space mapped and a `get` operation (checked above);
        // the range is within the space (function safety requirement); `buf` is valid for `N`
        // bytes of writes.
        unsafe { bindings::virtio_cread_bytes(self.as_raw(), offset, buf.as_mut_ptr().cast(), N) };
        Ok(buf)
    }

    /// Reads the little-endian 32-bit field at `offset` of the configuration space (a `__le32`
    /// of a virtio 1.0 device), as C's `virtio_cread_le()` does: one `get` of 4 bytes, without a
    /// generation check, since the specification makes a driver's read of a field of up to 32
    /// bits atomic. (On PCI and MMIO version 2 that is one access, where
    /// [`Device::config_bytes`] makes six: two generation reads around four byte reads.) Sleeps.
    ///
    /// `ENODEV` if the transport has no configuration space for the device (a PCI device
    /// without the capability), where C's wrappers would call a null operation.
    ///
    /// # Safety
    ///
    /// As for [`Device::config_bytes`] with `N = 4`, and `offset` must be 4-byte aligned (the
    /// field is a `__le32` of the specification's layout; PCI and MMIO need aligned accesses).
    #[track_caller]
    pub unsafe fn config_le32(&self, offset: u32) -> Result<u32> {
        crate::task::might_sleep();
        let get = self.config_ops().get.ok_or(ENODEV)?;
        let mut buf = [0u8; 4];
        // SAFETY: `self.as_raw()` is valid and bound (type invariant, `Bound` context), so the
        // transport has the configuration space mapped; `offset..offset + 4` lies within it and
        // is aligned (function safety requirement); `buf` is valid for 4 bytes of writes.
        unsafe { get(self.as_raw(), offset, buf.as_mut_ptr().cast(), 4) };
        Ok(u32::from_le_bytes(buf))
    }

    /// Writes the little-endian 32-bit field at `offset` of the configuration space, as C's
    /// `virtio_cwrite_le()` does. Sleeps.
    ///
    /// `ENODEV` if the transport has no configuration space for the device.
    ///
    /// # Safety
    ///
    /// As for [`Device::config_le32`], and the field must be one the driver may write.
    #[track_caller]
    pub unsafe fn write_config_le32(&self, offset: u32, value: u32) -> Result {
        crate::task::might_sleep();
        let set = self.config_ops().set.ok_or(ENODEV)?;
        let buf = value.to_le_bytes();
        // SAFETY: As in `config_le32`; the field is writable (function safety requirement);
        // `buf` is valid for 4 bytes of reads.
        unsafe { set(self.as_raw(), offset, buf.as_ptr().cast(), 4) };
        Ok(())
    }

    /// The transport's operations on the device.
    fn config_ops(&self) -> &bindings::virtio_config_ops {
        // SAFETY: By the type invariant `self.as_raw()` is a valid `struct virtio_device`; a
        // device with a driver bound (the `Bound` context) has its transport's operations set,
        // a constant table that does not change while it is bound.
        unsafe { &*(*self.as_raw()).config }
    }

    /// Reads the device status byte (`VIRTIO_CONFIG_S_*`). Does not sleep.
    fn status(&self) -> u8 {
        // The transport's operations always include `get_status`.
        match self.config_ops().get_status {
            // SAFETY: `self.as_raw()` is a valid device (type invariant), the one whose
            // transport this operation is.
            Some(get_status) => unsafe { get_status(self.as_raw()) },
            // Cannot happen; were it to, claim every state, so nothing takes the device for idle.
            None => u8::MAX,
        }
    }

    /// Whether the device accepted the features and waits for its driver to set it up: not
    /// reset since, not ready yet. Does not sleep.
    pub(crate) fn awaits_driver(&self) -> bool {
        let ok = bindings::VIRTIO_CONFIG_S_FEATURES_OK;
        u32::from(self.status()) & (ok | bindings::VIRTIO_CONFIG_S_DRIVER_OK) == ok
    }

    /// Whether the device may use buffers: a driver has it (status beyond `ACKNOWLEDGE`) and
    /// it was not reset since. Does not sleep.
    pub(crate) fn is_live(&self) -> bool {
        u32::from(self.status()) & !bindings::VIRTIO_CONFIG_S_ACKNOWLEDGE != 0
    }
}

impl<'c> Device<device::Core<'c>> {
    /// Resets the device: it stops using every buffer, and the transport synchronises with
    /// running queue callbacks. Sleeps.
    ///
    /// A driver resets in [`Driver::unbind`] to cancel what the device still holds (with
    /// [`virtqueue::Virtqueue::detach_unused`]) before it unregisters what waits for it; the
    /// abstraction resets after `unbind` in any case.
    ///
    /// The returned [`Reset`] proves the reset to [`virtqueue::Virtqueue::detach_unused`].
    #[must_use = "detaching unused buffers needs the proof"]
    pub fn reset(&self) -> Reset<'c> {
        // SAFETY: By the type invariant `self.as_raw()` is valid; `Core` means the device lock is
        // held, as the core holds it around probe and remove.
        unsafe { bindings::virtio_reset_device(self.as_raw()) };
        // INVARIANT: Just reset. `'c` is the invariant brand of this `Core` context, which
        // lasts while the device lock is held (the probe or unbind call); the proof carries it
        // and cannot leave the thread, so it does not outlive the lock.
        Reset {
            vdev: self.as_raw(),
            _p: PhantomData,
        }
    }
}

/// Proof that a device was reset and uses no buffer: the device lock is held meanwhile.
///
/// It is neither `Send` nor `Sync` (it holds a raw pointer and the brand of a `Core` context):
/// it stays on the thread that holds the device lock, and its lifetime is that context's, so it
/// cannot be kept past the probe or unbind call that made it.
///
/// # Invariants
///
/// `vdev` was reset by [`Device::reset`] and stays reset while `'c` lasts: `'c` is the brand of
/// the [`device::Core`] context the reset was made in, so the device lock is held, and only
/// probe (or a restore, also under the device lock) makes a device ready.
pub struct Reset<'c> {
    vdev: *mut bindings::virtio_device,
    _p: PhantomData<fn(&'c ()) -> &'c ()>,
}

impl Reset<'_> {
    /// Whether this proves the reset of `vdev`.
    pub(crate) fn is_of(&self, vdev: *mut bindings::virtio_device) -> bool {
        core::ptr::eq(self.vdev, vdev)
    }
}

// SAFETY: `virtio::Device` is a transparent wrapper of `struct virtio_device`, and the offset is
// that of its `struct device` field.
unsafe impl<Ctx: device::DeviceContext> device::AsBusDevice<Ctx> for Device<Ctx> {
    const OFFSET: usize = offset_of!(bindings::virtio_device, dev);
}

// SAFETY: `Device` is a transparent wrapper of a type that doesn't depend on `Device`'s generic
// argument.
kernel::impl_device_context_deref!(unsafe { Device });
kernel::impl_device_context_into_aref!(Device);

// SAFETY: Instances of `Device` are always reference-counted.
unsafe impl crate::sync::aref::AlwaysRefCounted for Device {
    fn inc_ref(&self) {
        // SAFETY: The existence of a shared reference guarantees that the refcount is non-zero.
        unsafe { bindings::get_device(self.as_ref().as_raw()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // CAST: `Self` is a transparent wrapper of `bindings::virtio_device`.
        let vdev: *mut bindings::virtio_device = obj.cast().as_ptr();

        // SAFETY: By the type invariant of `Self`, `vdev` points to a valid `struct virtio_device`.
        let dev = unsafe { addr_of_mut!((*vdev).dev) };

        // SAFETY: The safety requirements guarantee that the refcount is non-zero.
        unsafe { bindings::put_device(dev) }
    }
}

impl<Ctx: device::DeviceContext> AsRef<device::Device<Ctx>> for Device<Ctx> {
    fn as_ref(&self) -> &device::Device<Ctx> {
        // SAFETY: By the type invariant of `Self`, `self.as_raw()` is a pointer to a valid
        // `struct virtio_device`.
        let dev = unsafe { addr_of_mut!((*self.as_raw()).dev) };

        // SAFETY: `dev` points to a valid `struct device`.
        unsafe { device::Device::from_raw(dev) }
    }
}

// SAFETY: A `Device` is always reference-counted and can be released from any thread.
unsafe impl Send for Device {}

// SAFETY: `Device` can be shared among threads because all methods of `Device` (i.e.
// `Device<Normal>`) are thread safe: the feature bits and id are fixed, and configuration space
// accesses are serialised by the transport.
unsafe impl Sync for Device {}

// SAFETY: Same as `Device<Normal>`: `Bound` is a zero-sized type-state marker that does not
// affect thread safety.
unsafe impl Sync for Device<device::Bound> {}
