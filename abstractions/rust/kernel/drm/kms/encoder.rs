// SPDX-License-Identifier: GPL-2.0

//! Encoders: what connects a CRTC to a connector. A virtual display's has nothing to do.
//!
//! C header: [`include/drm/drm_encoder.h`](srctree/include/drm/drm_encoder.h).

use super::{
    create,
    Setup, //
};
use crate::{
    bindings,
    prelude::*,
    types::Opaque, //
};

/// A virtual encoder (`DRM_MODE_ENCODER_VIRTUAL`): no operations, no data.
///
/// # Invariants
///
/// `raw` is an encoder initialised by `drm_encoder_init()` with this type's operations, owned
/// by its device's mode configuration until its `destroy` operation frees this allocation.
#[repr(C)]
#[pin_data]
pub struct Encoder {
    #[pin]
    raw: Opaque<bindings::drm_encoder>,
}

// SAFETY: DRM accesses `raw` under its own locks from any thread.
unsafe impl Send for Encoder {}
// SAFETY: Through `&Encoder` nothing is read but the pointer to `raw`.
unsafe impl Sync for Encoder {}

impl Encoder {
    /// Creates a virtual encoder for the CRTCs in `possible_crtcs` (a mask of CRTC indices) on
    /// the device being set up.
    pub fn new_virtual<'a, T: super::KmsDriver>(
        setup: &Setup<'a, T>,
        possible_crtcs: u32,
    ) -> Result<&'a Self> {
        let dev = setup.device().as_raw();
        let init = try_pin_init!(Self {
            raw: Opaque::zeroed(),
        });
        let c_init = |raw: *mut bindings::drm_encoder| {
            // SAFETY: `create` passes the zeroed encoder of its allocation, as the
            // initialisation expects; the device's mode configuration is initialised (type
            // invariant of `Setup`). The operations are a static of the kernel. A null name
            // makes DRM name the encoder.
            unsafe {
                bindings::drm_encoder_init(
                    dev,
                    raw,
                    &FUNCS,
                    bindings::DRM_MODE_ENCODER_VIRTUAL as c_int,
                    core::ptr::null(),
                )
            }
        };
        let listed = |raw: *mut bindings::drm_encoder| {
            // SAFETY: `create` passes the encoder it initialised. DRM lists it once it is
            // initialised enough to be destroyed (the list head was zeroed before).
            unsafe { !(*raw).head.next.is_null() }
        };
        // SAFETY: `Self` is `#[repr(C)]` with its zeroed encoder first. The encoder's operations
        // free it with `KBox::from_raw` in `destroy`. The device frees its objects when it
        // goes, after `'a` (the setup borrows it).
        let (this, raw) = unsafe { create(init, c_init, listed) }?;
        // SAFETY: The encoder is initialised, and nothing else uses it before the device is
        // registered.
        unsafe { (*raw).possible_crtcs = possible_crtcs };
        // INVARIANT: Initialised with this type's operations; DRM owns it.
        Ok(this)
    }

    /// The encoder's DRM object.
    pub(super) fn as_raw(&self) -> *mut bindings::drm_encoder {
        self.raw.get()
    }
}

static FUNCS: bindings::drm_encoder_funcs = bindings::drm_encoder_funcs {
    destroy: Some(destroy),
    ..pin_init::zeroed()
};

/// Frees an encoder when its device's mode configuration is cleaned up.
extern "C" fn destroy(raw: *mut bindings::drm_encoder) {
    // SAFETY: DRM destroys each encoder once, when the device goes; `raw` is the `raw` field of
    // an `Encoder`, as `FUNCS` is only given to those.
    let this = unsafe { crate::container_of!(Opaque::cast_from(raw), Encoder, raw) };
    // SAFETY: `raw` is initialised and no longer used by DRM after this.
    unsafe { bindings::drm_encoder_cleanup(raw) };
    // SAFETY: The allocation came from `KBox::into_raw` in `create` (`Encoder::new_virtual`),
    // and DRM's ownership ends here: nothing refers to it any more.
    drop(unsafe { KBox::from_raw(this.cast_mut()) });
}
