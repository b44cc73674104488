// SPDX-License-Identifier: GPL-2.0

//! Planes: what a CRTC scans out.
//!
//! C header: [`include/drm/drm_plane.h`](srctree/include/drm/drm_plane.h).
//!
//! A [`Plane`] here is a primary plane that covers its CRTC: no scaling, no positioning, with
//! DRM's default plane state. DRM's helpers check and commit it; the driver's
//! [`DriverPlane::atomic_update`] shows the new state on the device, from the commit's tail
//! (with the plane's modeset locks held by the commit; it may sleep).

use super::{
    callback_device,
    create,
    KmsDriver,
    Rect,
    Setup, //
};
use crate::{
    bindings,
    drm::{
        self,
        gem::IntoGEMObject, //
    },
    error::from_err_ptr,
    prelude::*,
    types::Opaque,
};
use core::{
    marker::PhantomData,
    ops::Deref,
    ptr::NonNull, //
};

/// A DRM pixel format code from its four characters (`fourcc_code()`).
pub const fn fourcc(code: &[u8; 4]) -> u32 {
    (code[0] as u32) | (code[1] as u32) << 8 | (code[2] as u32) << 16 | (code[3] as u32) << 24
}

/// `DRM_FORMAT_XRGB8888`: 32-bit pixels, `[31:0] x:R:G:B` little-endian.
pub const FORMAT_XRGB8888: u32 = fourcc(b"XR24");
/// `DRM_FORMAT_ARGB8888`: 32-bit pixels, `[31:0] A:R:G:B` little-endian.
pub const FORMAT_ARGB8888: u32 = fourcc(b"AR24");

/// A driver's plane: what it shows on its device when the plane's state changes.
pub trait DriverPlane: Send + Sync + Sized + 'static {
    /// The driver of the plane's device.
    type Driver: KmsDriver;

    /// The pixel formats (`DRM_FORMAT_*`) the plane scans out.
    const FORMATS: &'static [u32];

    /// Shows `update` on the device of `dev`: a new framebuffer, new damage, or none (the plane
    /// or its CRTC is switched off). Called from the commit's tail, for each commit that
    /// changes the plane's state or damages its framebuffer.
    fn atomic_update(
        dev: &drm::Device<Self::Driver, drm::Ioctl>,
        plane: &Plane<Self>,
        update: &PlaneUpdate<'_, Self::Driver>,
    );
}

/// A primary plane, with the driver's data `T`.
///
/// # Invariants
///
/// `raw` is a plane initialised by `drm_universal_plane_init()` with this type's operations,
/// owned by its device's mode configuration until its `destroy` operation frees this
/// allocation.
#[repr(C)]
#[pin_data]
pub struct Plane<T: DriverPlane> {
    #[pin]
    raw: Opaque<bindings::drm_plane>,
    #[pin]
    data: T,
}

// SAFETY: A `Plane` is shared with DRM, which accesses `raw` under its own locks from any
// thread; `T` is `Send`.
unsafe impl<T: DriverPlane> Send for Plane<T> {}
// SAFETY: Through `&Plane` only `T` (which is `Sync`) and `raw`'s immutable index are read.
unsafe impl<T: DriverPlane> Sync for Plane<T> {}

impl<T: DriverPlane> Plane<T> {
    /// Creates the primary plane of a CRTC among `possible_crtcs` (a mask of CRTC indices) of
    /// the device being set up, with the data `data`.
    pub fn new_primary<'a, E>(
        setup: &Setup<'a, T::Driver>,
        possible_crtcs: u32,
        data: impl PinInit<T, E>,
    ) -> Result<&'a Self>
    where
        Error: From<E>,
    {
        let dev = setup.device().as_raw();
        let formats = T::FORMATS;
        let init = try_pin_init!(Self {
            raw: Opaque::zeroed(),
            data <- data,
        });
        let c_init = |raw: *mut bindings::drm_plane| {
            // SAFETY: `create` passes the zeroed plane of its allocation, as the
            // initialisation expects; the device's mode configuration is initialised (type
            // invariant of `Setup`). The operations and formats are constants of the
            // driver's module, which outlives its devices. A null name makes DRM name it.
            unsafe {
                bindings::drm_universal_plane_init(
                    dev,
                    raw,
                    possible_crtcs,
                    PlaneFuncs::<T>::funcs(),
                    formats.as_ptr(),
                    formats.len() as u32,
                    core::ptr::null(),
                    bindings::drm_plane_type_DRM_PLANE_TYPE_PRIMARY,
                    core::ptr::null(),
                )
            }
        };
        let listed = |raw: *mut bindings::drm_plane| {
            // SAFETY: `create` passes the plane it initialised. DRM lists it once it is
            // initialised enough to be destroyed (the list head was zeroed before).
            unsafe { !(*raw).head.next.is_null() }
        };
        // SAFETY: `Self` is `#[repr(C)]` with its zeroed plane first. The plane's operations
        // free it with `KBox::from_raw` in `destroy`. The device frees its objects when it
        // goes, after `'a` (the setup borrows it).
        let (this, raw) = unsafe { create(init, c_init, listed) }?;
        // SAFETY: `raw` is initialised and the device is not registered: nothing else uses the
        // plane yet. This is what `drm_plane_helper_add()` does.
        unsafe { (*raw).helper_private = PlaneFuncs::<T>::helpers() };
        // SAFETY: As above; the device's damage property exists once the configuration does.
        unsafe { bindings::drm_plane_enable_fb_damage_clips(raw) };
        // INVARIANT: Initialised with this type's operations; DRM owns it.
        Ok(this)
    }

    /// The plane's index among its device's planes.
    pub fn index(&self) -> u32 {
        // SAFETY: The plane is initialised (type invariant); its index never changes.
        unsafe { (*self.raw.get()).index }
    }

    /// The plane's DRM object.
    pub(super) fn as_raw(&self) -> *mut bindings::drm_plane {
        self.raw.get()
    }

    /// The `Plane` of `raw`.
    ///
    /// # Safety
    ///
    /// `raw` is the plane of a `Plane<T>` (a plane with `T`'s operations), valid for `'a`.
    unsafe fn from_raw<'a>(raw: *mut bindings::drm_plane) -> &'a Self {
        // SAFETY: `raw` is the `raw` field of a `Plane<T>` (function safety requirement).
        unsafe { &*crate::container_of!(Opaque::cast_from(raw), Self, raw) }
    }
}

impl<T: DriverPlane> Deref for Plane<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.data
    }
}

/// A plane's change in a commit: its state before and after, in the commit's tail.
///
/// # Invariants
///
/// `commit` is the commit being applied, `old` and `new` the old and new states of one plane
/// in it, valid (and not changed) for `'a`.
pub struct PlaneUpdate<'a, D: drm::Driver> {
    commit: NonNull<bindings::drm_atomic_commit>,
    old: NonNull<bindings::drm_plane_state>,
    new: NonNull<bindings::drm_plane_state>,
    _p: PhantomData<(&'a bindings::drm_plane_state, &'a D)>,
}

impl<'a, D: drm::Driver> PlaneUpdate<'a, D> {
    fn old(&self) -> &'a bindings::drm_plane_state {
        // SAFETY: Valid and unchanged for `'a` (type invariant).
        unsafe { self.old.as_ref() }
    }

    fn new_state(&self) -> &'a bindings::drm_plane_state {
        // SAFETY: Valid and unchanged for `'a` (type invariant).
        unsafe { self.new.as_ref() }
    }

    /// The framebuffer the plane shows from now on, if it shows one and its CRTC is on.
    pub fn framebuffer(&self) -> Option<Framebuffer<'a, D>> {
        let new = self.new_state();
        let fb = NonNull::new(new.fb)?;
        if new.crtc.is_null() {
            return None;
        }
        // SAFETY: `commit` is the commit being applied (type invariant), `new.crtc` a CRTC of
        // its device, which the plane's check added to the commit.
        let crtc_state =
            unsafe { bindings::drm_atomic_get_new_crtc_state(self.commit.as_ptr(), new.crtc) };
        if crtc_state.is_null() {
            return None;
        }
        // SAFETY: A CRTC state of the commit, valid while it is applied.
        let active = unsafe { (*crtc_state).active };
        // INVARIANT: The new state holds a reference to `fb` while it lives, for `'a`.
        active.then_some(Framebuffer {
            raw: fb,
            _p: PhantomData,
        })
    }

    /// The part of the framebuffer the plane shows, in whole pixels.
    pub fn source(&self) -> Rect {
        source_of(self.new_state())
    }

    /// Whether the plane shows another framebuffer, or another part of it, than before.
    pub fn source_changed(&self) -> bool {
        let (old, new) = (self.old(), self.new_state());
        old.fb != new.fb || source_of(old) != source_of(new)
    }

    /// Whether the commit sets a new mode on the plane's CRTC (or switches it on or off).
    pub fn needs_modeset(&self) -> bool {
        let crtc = self.new_state().crtc;
        if crtc.is_null() {
            return false;
        }
        // SAFETY: `commit` is the commit being applied (type invariant), `crtc` a CRTC of its
        // device.
        let state = unsafe { bindings::drm_atomic_get_new_crtc_state(self.commit.as_ptr(), crtc) };
        // SAFETY: A CRTC state of the commit, valid while it is applied; null if the commit
        // leaves the CRTC alone.
        !state.is_null() && unsafe { bindings::drm_atomic_crtc_needs_modeset(state) }
    }

    /// The part of the framebuffer that changed since the previous commit (every damage clip
    /// merged, or the whole source when the framebuffer changed); `None` if nothing did.
    pub fn damage(&self) -> Option<Rect> {
        let mut rect: bindings::drm_rect = pin_init::zeroed();
        // SAFETY: Both states are valid (type invariant); `rect` is written on success.
        unsafe {
            bindings::drm_atomic_helper_damage_merged(
                self.old.as_ptr(),
                self.new.as_ptr(),
                &mut rect,
            )
        }
        .then(|| Rect::from_raw(&rect))
    }
}

/// The source rectangle of `state`, in whole pixels (DRM keeps it in 16.16 fixed point).
fn source_of(state: &bindings::drm_plane_state) -> Rect {
    let (x, y) = ((state.src_x >> 16) as i32, (state.src_y >> 16) as i32);
    Rect {
        x1: x,
        y1: y,
        x2: x + (state.src_w >> 16) as i32,
        y2: y + (state.src_h >> 16) as i32,
    }
}

/// A framebuffer in use by a plane: GEM objects of a `D` device, in a format.
///
/// # Invariants
///
/// `raw` is a framebuffer of a `D` device, made by DRM's GEM framebuffer helper (its objects
/// are GEM objects of the device), kept alive for `'a`.
pub struct Framebuffer<'a, D: drm::Driver> {
    raw: NonNull<bindings::drm_framebuffer>,
    _p: PhantomData<(&'a bindings::drm_framebuffer, &'a D)>,
}

impl<'a, D: drm::Driver> Framebuffer<'a, D> {
    fn raw(&self) -> &'a bindings::drm_framebuffer {
        // SAFETY: Alive for `'a` (type invariant); its fields do not change after creation.
        unsafe { self.raw.as_ref() }
    }

    /// The GEM object of the framebuffer's color plane `i` (0 for single-plane formats).
    pub fn object(&self, i: usize) -> Option<&'a D::Object> {
        let obj = *self.raw().obj.get(i)?;
        if obj.is_null() {
            return None;
        }
        // SAFETY: The framebuffer holds a reference to `obj` while it lives (`'a`). Every GEM
        // object of a `D` device is a `D::Object`: the device creates them all, and imports
        // only its own buffers (a foreign one is refused, see `drm::gem`).
        Some(unsafe { <D::Object as IntoGEMObject>::from_raw(obj) })
    }

    /// The bytes per line of color plane `i`.
    pub fn pitch(&self, i: usize) -> u32 {
        self.raw().pitches.get(i).copied().unwrap_or(0)
    }

    /// The bytes per pixel of color plane `i` (0 for formats with blocks).
    pub fn bytes_per_pixel(&self, i: usize) -> u32 {
        // SAFETY: A framebuffer's format information is a static table entry.
        let cpp = unsafe { &(*self.raw().format).__bindgen_anon_1.cpp };
        cpp.get(i).map_or(0, |&c| u32::from(c))
    }

    /// The pixel format (`DRM_FORMAT_*`).
    pub fn format(&self) -> u32 {
        // SAFETY: As in `bytes_per_pixel`.
        unsafe { (*self.raw().format).format }
    }
}

/// The operations of a `Plane<T>`.
struct PlaneFuncs<T>(PhantomData<T>);

impl<T: DriverPlane> PlaneFuncs<T> {
    const FUNCS: bindings::drm_plane_funcs = bindings::drm_plane_funcs {
        update_plane: Some(bindings::drm_atomic_helper_update_plane),
        disable_plane: Some(bindings::drm_atomic_helper_disable_plane),
        destroy: Some(Self::destroy),
        reset: Some(bindings::drm_atomic_helper_plane_reset),
        atomic_duplicate_state: Some(bindings::drm_atomic_helper_plane_duplicate_state),
        atomic_destroy_state: Some(bindings::drm_atomic_helper_plane_destroy_state),
        ..pin_init::zeroed()
    };

    const HELPERS: bindings::drm_plane_helper_funcs = bindings::drm_plane_helper_funcs {
        atomic_check: Some(Self::atomic_check),
        atomic_update: Some(Self::atomic_update),
        ..pin_init::zeroed()
    };

    const fn funcs() -> &'static bindings::drm_plane_funcs {
        &Self::FUNCS
    }

    const fn helpers() -> &'static bindings::drm_plane_helper_funcs {
        &Self::HELPERS
    }

    /// Frees a plane when its device's mode configuration is cleaned up.
    extern "C" fn destroy(raw: *mut bindings::drm_plane) {
        // SAFETY: DRM destroys each plane once, when the device goes; `raw` is the `raw` field
        // of a `Plane<T>`, as these operations are only given to those.
        let this = unsafe { crate::container_of!(Opaque::cast_from(raw), Plane<T>, raw) };
        // SAFETY: `raw` is initialised and no longer used by DRM after this.
        unsafe { bindings::drm_plane_cleanup(raw) };
        // SAFETY: The allocation came from `KBox::into_raw` in `create` (`Plane::new_primary`),
        // and DRM's ownership ends here: nothing refers to it any more.
        drop(unsafe { KBox::from_raw(this.cast_mut()) });
    }

    /// Checks a primary plane covering its CRTC: no scaling, no positioning. A new framebuffer
    /// is damaged whole (its damage clips are ignored): a device that keeps a copy per buffer
    /// has none of it yet.
    extern "C" fn atomic_check(
        raw: *mut bindings::drm_plane,
        commit: *mut bindings::drm_atomic_commit,
    ) -> c_int {
        // SAFETY: DRM checks `commit`, which includes `raw`, a plane of it: the commit has both
        // states of the plane, and the new one is the commit's to change while it is checked.
        let (new, old) = unsafe {
            (
                bindings::drm_atomic_get_new_plane_state(commit, raw),
                bindings::drm_atomic_get_old_plane_state(commit, raw),
            )
        };
        // SAFETY: As above: both states are valid, only the checker writes the new one.
        let crtc = unsafe {
            (*new).ignore_damage_clips = (*old).fb != (*new).fb;
            (*new).crtc
        };
        let crtc_state = if crtc.is_null() {
            // Switched off: the helper makes the plane invisible.
            core::ptr::null_mut()
        } else {
            // SAFETY: `crtc` is a CRTC of the commit's device; the commit is being checked.
            match from_err_ptr(unsafe { bindings::drm_atomic_get_crtc_state(commit, crtc) }) {
                Ok(s) => s,
                Err(e) => return e.to_errno(),
            }
        };
        // SAFETY: The plane's new state and its CRTC's (or none) belong to the commit being
        // checked.
        unsafe {
            bindings::drm_atomic_helper_check_plane_state(
                new,
                crtc_state,
                bindings::DRM_PLANE_NO_SCALING as c_int,
                bindings::DRM_PLANE_NO_SCALING as c_int,
                false,
                true,
            )
        }
    }

    /// Passes a plane's update to the driver.
    extern "C" fn atomic_update(
        raw: *mut bindings::drm_plane,
        commit: *mut bindings::drm_atomic_commit,
    ) {
        // SAFETY: DRM applies `commit`, which includes `raw`, a plane of a `Plane<T>`.
        let plane = unsafe { Plane::<T>::from_raw(raw) };
        // SAFETY: As above: the commit has both states of the plane.
        let (old, new) = unsafe {
            (
                bindings::drm_atomic_get_old_plane_state(commit, raw),
                bindings::drm_atomic_get_new_plane_state(commit, raw),
            )
        };
        let (Some(commit), Some(old), Some(new)) =
            (NonNull::new(commit), NonNull::new(old), NonNull::new(new))
        else {
            return;
        };
        // INVARIANT: The commit being applied and the plane's states in it, which stay
        // valid and unchanged while it is applied, during this call.
        let update = PlaneUpdate {
            commit,
            old,
            new,
            _p: PhantomData,
        };
        // SAFETY: `raw` is a plane of a `T::Driver` device, valid for the call.
        let dev = unsafe { callback_device::<T::Driver>((*raw).dev) };
        T::atomic_update(dev, plane, &update);
    }
}
