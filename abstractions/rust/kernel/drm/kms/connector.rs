// SPDX-License-Identifier: GPL-2.0

//! Connectors: the displays, whether they are there and which modes they take.
//!
//! C header: [`include/drm/drm_connector.h`](srctree/include/drm/drm_connector.h).
//!
//! A [`Connector`] here is a virtual one (`DRM_MODE_CONNECTOR_VIRTUAL`) behind a virtual
//! [`Encoder`]. DRM probes it (`drm_helper_probe_single_connector_modes()`, under
//! `mode_config.mutex`) when userspace asks for its modes: the driver says whether a display is
//! there ([`DriverConnector::detect`]), lists its modes ([`DriverConnector::get_modes`], through
//! [`Modes`]) and may refuse some ([`DriverConnector::mode_valid`]).

use super::{
    callback_device,
    create,
    encoder::Encoder,
    KmsDriver,
    Setup, //
};
use crate::{
    bindings,
    drm,
    error::to_result,
    prelude::*,
    types::Opaque, //
};
use core::{
    marker::PhantomData,
    ops::Deref, //
};

/// Whether a display is connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// A display is there.
    Connected,
    /// None is.
    Disconnected,
    /// The driver cannot tell.
    Unknown,
}

/// A driver's connector: the display behind it and its modes.
pub trait DriverConnector: Send + Sync + Sized + 'static {
    /// The driver of the connector's device.
    type Driver: KmsDriver;

    /// Whether a display is connected (`force`: userspace asked to look again).
    fn detect(
        dev: &drm::Device<Self::Driver, drm::Ioctl>,
        connector: &Connector<Self>,
        force: bool,
    ) -> Status;

    /// Adds the display's modes to `modes`; returns how many were added.
    fn get_modes(
        dev: &drm::Device<Self::Driver, drm::Ioctl>,
        connector: &Connector<Self>,
        modes: &mut Modes<'_>,
    ) -> u32;

    /// Whether the display takes `mode`, one of those added or asked for by userspace. By
    /// default every mode within the device's limits is.
    fn mode_valid(
        _dev: &drm::Device<Self::Driver, drm::Ioctl>,
        _connector: &Connector<Self>,
        _mode: &DisplayMode,
    ) -> bool {
        true
    }
}

/// A virtual connector with the driver's data `T`.
///
/// # Invariants
///
/// `raw` is a connector initialised by `drm_connector_init()` with this type's operations,
/// owned by its device's mode configuration until its `destroy` operation frees this
/// allocation.
#[repr(C)]
#[pin_data]
pub struct Connector<T: DriverConnector> {
    #[pin]
    raw: Opaque<bindings::drm_connector>,
    #[pin]
    data: T,
}

// SAFETY: A `Connector` is shared with DRM, which accesses `raw` under its own locks from any
// thread; `T` is `Send`.
unsafe impl<T: DriverConnector> Send for Connector<T> {}
// SAFETY: Through `&Connector` only `T` (which is `Sync`) and `raw`'s immutable index are read.
unsafe impl<T: DriverConnector> Sync for Connector<T> {}

impl<T: DriverConnector> Connector<T> {
    /// Creates a virtual connector behind `encoder`, with the data `data`, on the device being
    /// set up; with `edid`, it has the `EDID` property, which [`Modes::update_edid`] fills.
    ///
    /// `EINVAL` if `encoder` is an encoder of another device.
    pub fn new_virtual<'a, E>(
        setup: &Setup<'a, T::Driver>,
        encoder: &'a Encoder,
        edid: bool,
        data: impl PinInit<T, E>,
    ) -> Result<&'a Self>
    where
        Error: From<E>,
    {
        let dev = setup.device().as_raw();
        // SAFETY: `encoder` is an initialised encoder (type invariant of `Encoder`).
        if unsafe { (*encoder.as_raw()).dev } != dev {
            return Err(EINVAL);
        }
        let init = try_pin_init!(Self {
            raw: Opaque::zeroed(),
            data <- data,
        });
        let c_init = |raw: *mut bindings::drm_connector| {
            // SAFETY: `create` passes the zeroed connector of its allocation, as the
            // initialisation expects; the device's mode configuration is initialised (type
            // invariant of `Setup`). The operations are constants of the driver's module,
            // which outlives its devices.
            unsafe {
                bindings::drm_connector_init(
                    dev,
                    raw,
                    ConnectorFuncs::<T>::funcs(),
                    bindings::DRM_MODE_CONNECTOR_VIRTUAL as c_int,
                )
            }
        };
        let listed = |raw: *mut bindings::drm_connector| {
            // SAFETY: `create` passes the connector it initialised. DRM lists it once it is
            // initialised enough to be destroyed (the list head was zeroed before).
            unsafe { !(*raw).head.next.is_null() }
        };
        // SAFETY: `Self` is `#[repr(C)]` with its zeroed connector first. The connector's
        // operations free it with `KBox::from_raw` in `destroy`. The device frees its objects
        // when it goes, after `'a` (the setup borrows it).
        let (this, raw) = unsafe { create(init, c_init, listed) }?;
        // INVARIANT: Initialised with this type's operations; DRM owns it (and frees it with
        // the device, should a step below fail).
        // SAFETY: The connector is initialised and the device is not registered: nothing else
        // uses it yet. This is what `drm_connector_helper_add()` does.
        unsafe { (*raw).helper_private = ConnectorFuncs::<T>::helpers() };
        if edid {
            // SAFETY: As above.
            unsafe { bindings::drm_connector_attach_edid_property(raw) };
        }
        // SAFETY: Both are initialised objects of the device being set up.
        to_result(unsafe { bindings::drm_connector_attach_encoder(raw, encoder.as_raw()) })?;
        Ok(this)
    }

    /// The connector's index among its device's connectors.
    pub fn index(&self) -> u32 {
        // SAFETY: The connector is initialised (type invariant); its index never changes.
        unsafe { (*self.raw.get()).index }
    }

    /// The `Connector` of `raw`.
    ///
    /// # Safety
    ///
    /// `raw` is the connector of a `Connector<T>`, valid for `'a`.
    unsafe fn from_raw<'a>(raw: *mut bindings::drm_connector) -> &'a Self {
        // SAFETY: `raw` is the `raw` field of a `Connector<T>` (function safety requirement).
        unsafe { &*crate::container_of!(Opaque::cast_from(raw), Self, raw) }
    }
}

impl<T: DriverConnector> Deref for Connector<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.data
    }
}

/// The modes of a connector being probed: what [`DriverConnector::get_modes`] adds to.
///
/// # Invariants
///
/// `raw` is a connector being probed, with its device's `mode_config.mutex` held, for `'a`.
pub struct Modes<'a> {
    raw: *mut bindings::drm_connector,
    _p: PhantomData<&'a mut bindings::drm_connector>,
}

impl Modes<'_> {
    /// Sets the display's EDID (none if `edid` is `None`, empty, or not a valid EDID), which
    /// the connector's `EDID` property and display information then show. `ENOMEM` leaves the
    /// connector's EDID as it was.
    pub fn update_edid(&mut self, edid: Option<&[u8]>) -> Result {
        let mut drm_edid = match edid.filter(|e| !e.is_empty()) {
            Some(e) => {
                // SAFETY: `e` is valid for reads of its length; DRM copies it.
                let d = unsafe { bindings::drm_edid_alloc(e.as_ptr().cast(), e.len()) };
                if d.is_null() {
                    return Err(ENOMEM);
                }
                d
            }
            None => core::ptr::null(),
        };
        // SAFETY: `drm_edid` is null or came from `drm_edid_alloc()`.
        if !drm_edid.is_null() && !unsafe { bindings::drm_edid_valid(drm_edid) } {
            // SAFETY: As above; not used after this.
            unsafe { bindings::drm_edid_free(drm_edid) };
            drm_edid = core::ptr::null();
        }
        // SAFETY: `raw` is being probed under `mode_config.mutex` (type invariant); a null or
        // invalid EDID clears the connector's.
        let ret = unsafe { bindings::drm_edid_connector_update(self.raw, drm_edid) };
        // SAFETY: `drm_edid` came from `drm_edid_alloc()` (or is null); the connector keeps a
        // copy of what it needs.
        unsafe { bindings::drm_edid_free(drm_edid) };
        to_result(ret)
    }

    /// Adds the modes of the EDID set by [`Modes::update_edid`]; returns how many.
    pub fn add_edid_modes(&mut self) -> u32 {
        // SAFETY: `raw` is being probed under `mode_config.mutex` (type invariant).
        let n = unsafe { bindings::drm_edid_connector_add_modes(self.raw) };
        n.max(0) as u32
    }

    /// Adds the standard (DMT) modes up to `width` x `height`; returns how many.
    pub fn add_standard_modes(&mut self, width: u32, height: u32) -> u32 {
        // SAFETY: `raw` is being probed under `mode_config.mutex` (type invariant).
        let n = unsafe { bindings::drm_add_modes_noedid(self.raw, width, height) };
        n.max(0) as u32
    }

    /// Marks the added modes of `width` x `height` as preferred.
    pub fn set_preferred(&mut self, width: u32, height: u32) {
        // SAFETY: `raw` is being probed under `mode_config.mutex` (type invariant).
        unsafe { bindings::drm_set_preferred_mode(self.raw, width as c_int, height as c_int) };
    }

    /// Adds a CVT mode of `width` x `height` at `refresh` Hz, marked preferred if `preferred`.
    ///
    /// `EINVAL` for a size outside the device's limits ([`KmsDriver::MIN_SIZE`] to
    /// [`KmsDriver::MAX_SIZE`]) or a refresh rate outside 1 to [`MAX_REFRESH_HZ`] Hz: DRM's CVT
    /// arithmetic divides by zero for some sizes and rates beyond those.
    pub fn add_cvt(&mut self, width: u32, height: u32, refresh: u32, preferred: bool) -> Result {
        // SAFETY: `raw` is a valid connector (type invariant).
        let dev = unsafe { (*self.raw).dev };
        // SAFETY: `dev` is the connector's valid device; its limits are fixed after setup.
        let (min_w, min_h, max_w, max_h) = unsafe {
            let c = &(*dev).mode_config;
            (c.min_width, c.min_height, c.max_width, c.max_height)
        };
        if !(min_w..=max_w).contains(&width)
            || !(min_h..=max_h).contains(&height)
            || !(1..=MAX_REFRESH_HZ).contains(&refresh)
        {
            return Err(EINVAL);
        }
        // SAFETY: `dev` is the connector's valid device; a CVT mode of any size is computed,
        // null only without memory.
        let mode = unsafe {
            bindings::drm_cvt_mode(
                dev,
                width as c_int,
                height as c_int,
                refresh as c_int,
                false,
                false,
                false,
            )
        };
        if mode.is_null() {
            return Err(ENOMEM);
        }
        if preferred {
            // SAFETY: `mode` was just allocated, and is only this function's.
            unsafe { (*mode).type_ |= PREFERRED };
        }
        // SAFETY: `raw` is being probed under `mode_config.mutex` (type invariant); the
        // connector takes `mode` over.
        unsafe { bindings::drm_mode_probed_add(self.raw, mode) };
        Ok(())
    }
}

/// The highest refresh rate [`Modes::add_cvt`] takes, in Hz.
pub const MAX_REFRESH_HZ: u32 = 1000;

/// `DRM_MODE_TYPE_PREFERRED`, in the width of `drm_display_mode::type`.
const PREFERRED: u8 = bindings::DRM_MODE_TYPE_PREFERRED as u8;

/// A display mode, as DRM gives it to [`DriverConnector::mode_valid`].
#[repr(transparent)]
pub struct DisplayMode(Opaque<bindings::drm_display_mode>);

impl DisplayMode {
    fn raw(&self) -> &bindings::drm_display_mode {
        // SAFETY: A `DisplayMode` is only made from a mode DRM lends for a callback's duration,
        // which it does not change meanwhile.
        unsafe { &*self.0.get() }
    }

    /// The visible width in pixels.
    pub fn width(&self) -> u32 {
        u32::from(self.raw().hdisplay)
    }

    /// The visible height in pixels.
    pub fn height(&self) -> u32 {
        u32::from(self.raw().vdisplay)
    }

    /// Whether the mode is one the connector prefers.
    pub fn is_preferred(&self) -> bool {
        self.raw().type_ & PREFERRED != 0
    }
}

/// The operations of a `Connector<T>`.
struct ConnectorFuncs<T>(PhantomData<T>);

impl<T: DriverConnector> ConnectorFuncs<T> {
    const FUNCS: bindings::drm_connector_funcs = bindings::drm_connector_funcs {
        detect: Some(Self::detect),
        fill_modes: Some(bindings::drm_helper_probe_single_connector_modes),
        destroy: Some(Self::destroy),
        reset: Some(bindings::drm_atomic_helper_connector_reset),
        atomic_duplicate_state: Some(bindings::drm_atomic_helper_connector_duplicate_state),
        atomic_destroy_state: Some(bindings::drm_atomic_helper_connector_destroy_state),
        ..pin_init::zeroed()
    };

    const HELPERS: bindings::drm_connector_helper_funcs = bindings::drm_connector_helper_funcs {
        get_modes: Some(Self::get_modes),
        mode_valid: Some(Self::mode_valid),
        ..pin_init::zeroed()
    };

    const fn funcs() -> &'static bindings::drm_connector_funcs {
        &Self::FUNCS
    }

    const fn helpers() -> &'static bindings::drm_connector_helper_funcs {
        &Self::HELPERS
    }

    extern "C" fn detect(
        raw: *mut bindings::drm_connector,
        force: bool,
    ) -> bindings::drm_connector_status {
        // SAFETY: DRM probes a connector with these operations: one of a `Connector<T>`, on a
        // `T::Driver` device, valid for the call.
        let (connector, dev) = unsafe {
            (
                Connector::<T>::from_raw(raw),
                callback_device::<T::Driver>((*raw).dev),
            )
        };
        match T::detect(dev, connector, force) {
            Status::Connected => bindings::drm_connector_status_connector_status_connected,
            Status::Disconnected => bindings::drm_connector_status_connector_status_disconnected,
            Status::Unknown => bindings::drm_connector_status_connector_status_unknown,
        }
    }

    extern "C" fn get_modes(raw: *mut bindings::drm_connector) -> c_int {
        // SAFETY: As in `detect`.
        let (connector, dev) = unsafe {
            (
                Connector::<T>::from_raw(raw),
                callback_device::<T::Driver>((*raw).dev),
            )
        };
        // INVARIANT: DRM probes the connector under `mode_config.mutex`, for this call.
        let mut modes = Modes {
            raw,
            _p: PhantomData,
        };
        let n = T::get_modes(dev, connector, &mut modes);
        c_int::try_from(n).unwrap_or(c_int::MAX)
    }

    extern "C" fn mode_valid(
        raw: *mut bindings::drm_connector,
        mode: *const bindings::drm_display_mode,
    ) -> bindings::drm_mode_status {
        // SAFETY: As in `detect`; DRM lends `mode` for the call and does not change it
        // meanwhile.
        let (connector, dev, mode) = unsafe {
            (
                Connector::<T>::from_raw(raw),
                callback_device::<T::Driver>((*raw).dev),
                &*mode.cast::<DisplayMode>(),
            )
        };
        if T::mode_valid(dev, connector, mode) {
            bindings::drm_mode_status_MODE_OK
        } else {
            bindings::drm_mode_status_MODE_BAD
        }
    }

    /// Frees a connector when its device's mode configuration is cleaned up.
    extern "C" fn destroy(raw: *mut bindings::drm_connector) {
        // SAFETY: DRM destroys each connector once, when the device goes; `raw` is the `raw`
        // field of a `Connector<T>`, as these operations are only given to those.
        let this = unsafe { crate::container_of!(Opaque::cast_from(raw), Connector<T>, raw) };
        // SAFETY: `raw` is initialised, unregistered with its device (or never registered),
        // and no longer used by DRM after this.
        unsafe { bindings::drm_connector_cleanup(raw) };
        // SAFETY: The allocation came from `KBox::into_raw` in `create` (`Connector::new_virtual`),
        // and DRM's ownership ends here: nothing refers to it any more.
        drop(unsafe { KBox::from_raw(this.cast_mut()) });
    }
}
