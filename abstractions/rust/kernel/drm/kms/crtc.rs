// SPDX-License-Identifier: GPL-2.0

//! CRTCs: the timing of an output, with vertical blanking from a software timer.
//!
//! C header: [`include/drm/drm_crtc.h`](srctree/include/drm/drm_crtc.h).
//!
//! A [`Crtc`] here has no hardware of its own to program: its vertical blanking interrupts come
//! from DRM's vblank timer (an `hrtimer` per CRTC, at the mode's refresh rate), switched on
//! and off with the CRTC, and a commit's page-flip event is armed for the next blanking (or
//! sent at once if vblank is off), under the device's `event_lock`, by DRM's vblank helpers.
//! The device sees modes through the planes' updates.

use super::{
    create,
    plane::{
        DriverPlane,
        Plane, //
    },
    KmsDriver,
    Setup, //
};
use crate::{
    bindings,
    prelude::*,
    types::Opaque, //
};
use core::{
    marker::PhantomData,
    ops::Deref, //
};

/// A driver's CRTC. It has no operations yet: only data.
pub trait DriverCrtc: Send + Sync + Sized + 'static {
    /// The driver of the CRTC's device.
    type Driver: KmsDriver;
}

/// A CRTC with a software vblank, and the driver's data `T`.
///
/// # Invariants
///
/// `raw` is a CRTC initialised by `drm_crtc_init_with_planes()` with this type's operations,
/// owned by its device's mode configuration until its `destroy` operation frees this
/// allocation.
#[repr(C)]
#[pin_data]
pub struct Crtc<T: DriverCrtc> {
    #[pin]
    raw: Opaque<bindings::drm_crtc>,
    #[pin]
    data: T,
}

// SAFETY: A `Crtc` is shared with DRM, which accesses `raw` under its own locks from any thread;
// `T` is `Send`.
unsafe impl<T: DriverCrtc> Send for Crtc<T> {}
// SAFETY: Through `&Crtc` only `T` (which is `Sync`) and `raw`'s immutable index are read.
unsafe impl<T: DriverCrtc> Sync for Crtc<T> {}

impl<T: DriverCrtc> Crtc<T> {
    /// Creates a CRTC showing `primary`, with the data `data`, on the device being set up.
    ///
    /// `EINVAL` if `primary` is a plane of another device.
    pub fn new<'a, P: DriverPlane<Driver = T::Driver>, E>(
        setup: &Setup<'a, T::Driver>,
        primary: &'a Plane<P>,
        data: impl PinInit<T, E>,
    ) -> Result<&'a Self>
    where
        Error: From<E>,
    {
        let dev = setup.device().as_raw();
        // SAFETY: `primary` is an initialised plane (type invariant of `Plane`).
        if unsafe { (*primary.as_raw()).dev } != dev {
            return Err(EINVAL);
        }
        let init = try_pin_init!(Self {
            raw: Opaque::zeroed(),
            data <- data,
        });
        let c_init = |raw: *mut bindings::drm_crtc| {
            // SAFETY: `create` passes the zeroed CRTC of its allocation, as the initialisation
            // expects; the device's mode configuration is initialised (type invariant of
            // `Setup`) and `primary` is one of its planes (checked above). The operations
            // are constants of the driver's module, which outlives its devices. A null name
            // makes DRM name the CRTC.
            unsafe {
                bindings::drm_crtc_init_with_planes(
                    dev,
                    raw,
                    primary.as_raw(),
                    core::ptr::null_mut(),
                    CrtcFuncs::<T>::funcs(),
                    core::ptr::null(),
                )
            }
        };
        let listed = |raw: *mut bindings::drm_crtc| {
            // SAFETY: `create` passes the CRTC it initialised. DRM lists it before the last
            // step that can fail (its CRC directory's name), and owns it from then on (the
            // head was zeroed before).
            unsafe { !(*raw).head.next.is_null() }
        };
        // SAFETY: `Self` is `#[repr(C)]` with its zeroed CRTC first. The CRTC's operations free
        // it with `KBox::from_raw` in `destroy`. The device frees its objects when it goes,
        // after `'a` (the setup borrows it).
        let (this, raw) = unsafe { create(init, c_init, listed) }?;
        // SAFETY: The CRTC is initialised and the device is not registered: nothing else uses
        // it yet. This is what `drm_crtc_helper_add()` does.
        unsafe { (*raw).helper_private = CrtcFuncs::<T>::helpers() };
        // INVARIANT: Initialised with this type's operations; DRM owns it.
        Ok(this)
    }

    /// The CRTC's index among its device's CRTCs (its bit in `possible_crtcs` masks).
    pub fn index(&self) -> u32 {
        // SAFETY: The CRTC is initialised (type invariant); its index never changes.
        unsafe { (*self.raw.get()).index }
    }
}

impl<T: DriverCrtc> Deref for Crtc<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.data
    }
}

/// The operations of a `Crtc<T>`: DRM's atomic and vblank-timer helpers.
struct CrtcFuncs<T>(PhantomData<T>);

impl<T: DriverCrtc> CrtcFuncs<T> {
    const FUNCS: bindings::drm_crtc_funcs = bindings::drm_crtc_funcs {
        set_config: Some(bindings::drm_atomic_helper_set_config),
        destroy: Some(Self::destroy),
        page_flip: Some(bindings::drm_atomic_helper_page_flip),
        reset: Some(bindings::drm_atomic_helper_crtc_reset),
        atomic_duplicate_state: Some(bindings::drm_atomic_helper_crtc_duplicate_state),
        atomic_destroy_state: Some(bindings::drm_atomic_helper_crtc_destroy_state),
        enable_vblank: Some(bindings::drm_crtc_vblank_helper_enable_vblank_timer),
        disable_vblank: Some(bindings::drm_crtc_vblank_helper_disable_vblank_timer),
        get_vblank_timestamp: Some(
            bindings::drm_crtc_vblank_helper_get_vblank_timestamp_from_timer,
        ),
        ..pin_init::zeroed()
    };

    /// Vblank on with the CRTC, off without it; the page-flip event armed at the flush.
    const HELPERS: bindings::drm_crtc_helper_funcs = bindings::drm_crtc_helper_funcs {
        atomic_flush: Some(bindings::drm_crtc_vblank_atomic_flush),
        atomic_enable: Some(bindings::drm_crtc_vblank_atomic_enable),
        atomic_disable: Some(bindings::drm_crtc_vblank_atomic_disable),
        ..pin_init::zeroed()
    };

    const fn funcs() -> &'static bindings::drm_crtc_funcs {
        &Self::FUNCS
    }

    const fn helpers() -> &'static bindings::drm_crtc_helper_funcs {
        &Self::HELPERS
    }

    /// Frees a CRTC when its device's mode configuration is cleaned up.
    extern "C" fn destroy(raw: *mut bindings::drm_crtc) {
        // SAFETY: DRM destroys each CRTC once, when the device goes; `raw` is the `raw` field of
        // a `Crtc<T>`, as these operations are only given to those.
        let this = unsafe { crate::container_of!(Opaque::cast_from(raw), Crtc<T>, raw) };
        // SAFETY: `raw` is initialised and no longer used by DRM after this.
        unsafe { bindings::drm_crtc_cleanup(raw) };
        // SAFETY: The allocation came from `KBox::into_raw` in `create` (`Crtc::new`),
        // and DRM's ownership ends here: nothing refers to it any more.
        drop(unsafe { KBox::from_raw(this.cast_mut()) });
    }
}
