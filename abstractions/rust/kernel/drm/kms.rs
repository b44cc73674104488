// SPDX-License-Identifier: GPL-2.0

//! Kernel modesetting (KMS): the objects of a display pipeline, driven by DRM's atomic helpers.
//!
//! C headers: [`include/drm/drm_mode_config.h`](srctree/include/drm/drm_mode_config.h),
//! [`include/drm/drm_atomic_helper.h`](srctree/include/drm/drm_atomic_helper.h).
//!
//! This is the subset a driver of a virtual display needs: per output a primary
//! [`Plane`](plane::Plane), a [`Crtc`](crtc::Crtc) whose vertical blanking comes from a software
//! timer (DRM's vblank timer), a virtual [`Encoder`](encoder::Encoder) and a
//! [`Connector`](connector::Connector) whose modes the driver gives. The atomic check and commit
//! are DRM's helpers and keep DRM's default state objects; the driver implements what touches
//! its device: a plane's update, a connector's detection and modes.
//!
//! # Setting up
//!
//! A driver with [`FEAT_MODESET`](drm::Driver::FEAT_MODESET) starts a [`Setup`] on its
//! unregistered device, creates its objects with it and [`finish`](Setup::finish)es it before
//! it registers the device (a registration without a finished setup fails). From then on DRM
//! owns the objects: they are freed with the device's last reference, by the mode configuration's
//! managed cleanup. A driver keeps an [`AtomicShutdown`] next to its registration, dropped after
//! it, so that the outputs are switched off once the device is unplugged, as C drivers call
//! `drm_atomic_helper_shutdown()` after `drm_dev_unplug()`.
//!
//! # Callbacks
//!
//! DRM calls a driver's callbacks from modeset operations only: userspace's, which need the
//! device registered (or its registration under way), and [`AtomicShutdown`]'s, which runs on a
//! device that was registered. So they get the device in the [`Ioctl`](drm::Ioctl) context: the
//! driver enters its registration to reach its hardware, which it leaves alone once the device
//! is gone.
//!
//! # Lifetimes
//!
//! The objects' data must not hold a reference to their own device: the device frees the
//! objects when its last reference goes, so that would keep it forever. Known limitation: DRM
//! drops the device's data (`drm::Driver::Data`) before it cleans up the mode configuration, so
//! a framebuffer whose last reference goes in that cleanup releases its GEM objects on a device
//! without data. That cannot happen while every framebuffer is released before the device:
//! after an [`AtomicShutdown`], with GEM objects that keep their device (as a driver's objects
//! that talk to it through its registration do).
//!
//! Locks: DRM holds the mode configuration's locks (`mode_config.mutex` while probing
//! connectors, the modeset locks while checking a commit) around the callbacks; the vblank
//! helpers take `event_lock`. Callbacks run in process context and may sleep.

use crate::{
    bindings,
    drm::{self, device::RegisteredRef},
    error::to_result,
    prelude::*,
};
use core::marker::PhantomData;

pub mod connector;
pub mod crtc;
pub mod encoder;
pub mod plane;
#[cfg(CONFIG_RUST_DRM_GEM_SHMEM_HELPER)]
mod tests;

/// A DRM driver that sets modes: its framebuffer limits and checks.
pub trait KmsDriver: drm::Driver {
    /// The smallest framebuffer and mode, width and height in pixels.
    const MIN_SIZE: (u32, u32);
    /// The largest framebuffer and mode, width and height in pixels.
    const MAX_SIZE: (u32, u32);
    /// Whether the legacy `ADDFB` (a depth and a bpp, no format) picks formats in host byte
    /// order (`quirk_addfb_prefer_host_byte_order`): for a device whose pixels are in the
    /// CPU's byte order.
    const ADDFB_HOST_BYTE_ORDER: bool = false;

    /// Checks the pixel format (`DRM_FORMAT_*`) of a framebuffer userspace asks for, before DRM
    /// makes it (the core has checked the format exists, the sizes and the pitches); the error
    /// is returned to userspace. By default any format is taken.
    fn check_framebuffer_format(_format: u32) -> Result {
        Ok(())
    }
}

/// The modesetting setup of an unregistered device: objects are created with it, and
/// [`Setup::finish`] makes the device ready to register.
///
/// # Invariants
///
/// `dev`'s mode configuration was initialised by `drmm_mode_config_init()` (once), and `dev`
/// is not registered.
pub struct Setup<'a, T: KmsDriver> {
    dev: &'a drm::UnregisteredDevice<T>,
}

impl<'a, T: KmsDriver> Setup<'a, T> {
    /// Starts the setup of `dev`: initialises its mode configuration, with `T`'s sizes.
    ///
    /// `EBUSY` if `dev` was set up before.
    pub fn new(dev: &'a drm::UnregisteredDevice<T>) -> Result<Self> {
        const {
            assert!(
                T::FEAT_MODESET,
                "modesetting needs a driver with FEAT_MODESET"
            )
        };
        let raw = dev.as_raw();
        // SAFETY: `raw` is a valid device, allocated zeroed: its mode configuration's lists are
        // null until `drmm_mode_config_init()` initialises them.
        if !unsafe { (*raw).mode_config.connector_list.next }.is_null() {
            return Err(EBUSY);
        }
        // SAFETY: `raw` is a valid, unregistered device whose mode configuration was not
        // initialised (checked above); the device releases what this allocates.
        to_result(unsafe { bindings::drmm_mode_config_init(raw) })?;
        // SAFETY: `raw` is valid and not registered yet: nothing else reads its mode
        // configuration (`dev` is not `Sync`: only this thread has it).
        unsafe {
            let config = &raw mut (*raw).mode_config;
            (*config).min_width = T::MIN_SIZE.0;
            (*config).min_height = T::MIN_SIZE.1;
            (*config).max_width = T::MAX_SIZE.0;
            (*config).max_height = T::MAX_SIZE.1;
            (*config).quirk_addfb_prefer_host_byte_order = T::ADDFB_HOST_BYTE_ORDER;
            (*config).fb_modifiers_not_supported = true;
        }
        // INVARIANT: Initialised just now, and `dev` is unregistered.
        Ok(Self { dev })
    }

    /// The device being set up.
    pub fn device(&self) -> &'a drm::Device<T> {
        self.dev
    }

    /// Ends the setup: vertical blanking for each CRTC, every object given its initial
    /// state, and the mode configuration's operations installed (DRM's atomic check and
    /// commit, the framebuffer creation through `T`), which makes the device ready to
    /// register.
    pub fn finish(self) -> Result {
        let raw = self.dev.as_raw();
        // SAFETY: `raw` is valid and not registered (type invariant); its CRTCs are all created.
        let crtcs = unsafe { (*raw).mode_config.num_crtc };
        // SAFETY: As above; the vblank state is released with the device.
        to_result(unsafe { bindings::drm_vblank_init(raw, crtcs as u32) })?;
        // SAFETY: `raw`'s mode configuration is initialised (type invariant) and not in use.
        unsafe { bindings::drm_mode_config_reset(raw) };
        // The reset leaves an object without a state when it has no memory for one.
        // SAFETY: As above; the lists hold the objects created with this setup.
        if !unsafe { every_object_has_a_state(raw) } {
            return Err(ENOMEM);
        }
        // SAFETY: `raw` is valid and not registered: nothing else reads the field. The
        // operations are a constant of the driver's module, which outlives its devices (their
        // release is the module's code too).
        unsafe { (*raw).mode_config.funcs = ModeConfigFuncs::<T>::build() };
        Ok(())
    }
}

/// The mode configuration operations of a `T` device.
struct ModeConfigFuncs<T>(PhantomData<T>);

impl<T: KmsDriver> ModeConfigFuncs<T> {
    const FUNCS: bindings::drm_mode_config_funcs = bindings::drm_mode_config_funcs {
        fb_create: Some(Self::fb_create),
        atomic_check: Some(bindings::drm_atomic_helper_check),
        atomic_commit: Some(bindings::drm_atomic_helper_commit),
        ..pin_init::zeroed()
    };

    const fn build() -> &'static bindings::drm_mode_config_funcs {
        &Self::FUNCS
    }

    /// Makes a framebuffer of GEM objects, once `T` took its format: DRM's helper, which checks
    /// the objects are large enough and flushes damage on `DIRTYFB` through the planes' updates.
    extern "C" fn fb_create(
        dev: *mut bindings::drm_device,
        file: *mut bindings::drm_file,
        info: *const bindings::drm_format_info,
        cmd: *const bindings::drm_mode_fb_cmd2,
    ) -> *mut bindings::drm_framebuffer {
        // SAFETY: DRM calls `fb_create` with a valid command for the duration of the call.
        let format = unsafe { (*cmd).pixel_format };
        if let Err(e) = T::check_framebuffer_format(format) {
            return e.to_ptr();
        }
        // SAFETY: The arguments are DRM's, valid for the call, as the helper expects them.
        unsafe { bindings::drm_gem_fb_create_with_dirty(dev, file, info, cmd) }
    }
}

/// Switches a device's outputs off when dropped: DRM's atomic shutdown, after the device was
/// unplugged. Keep it after the device's [`Registration`](drm::Registration) in the driver's
/// data (fields drop in order).
pub struct AtomicShutdown<T: KmsDriver> {
    dev: RegisteredRef<T>,
}

impl<T: KmsDriver> AtomicShutdown<T> {
    /// The shutdown of the registered device `dev` (see
    /// [`Registration::registered_ref`](drm::Registration::registered_ref)).
    pub fn new(dev: RegisteredRef<T>) -> Self {
        const {
            assert!(
                T::FEAT_MODESET,
                "modesetting needs a driver with FEAT_MODESET"
            )
        };
        Self { dev }
    }
}

impl<T: KmsDriver> Drop for AtomicShutdown<T> {
    fn drop(&mut self) {
        // SAFETY: The device is valid (the reference keeps it) and was registered with
        // `FEAT_MODESET` (checked when building), so its mode configuration was set up:
        // `Registration::new` refuses such a device otherwise.
        unsafe { bindings::drm_atomic_helper_shutdown(self.dev.device().as_raw()) };
    }
}

/// Tells userspace the outputs of the registered device `dev` changed (a uevent), so that it
/// probes the connectors again.
pub fn hotplug_event<T: KmsDriver>(dev: &drm::Device<T, drm::Registered>) {
    // SAFETY: `dev` is registered, its mode configuration set up (see `AtomicShutdown::drop`).
    unsafe { bindings::drm_kms_helper_hotplug_event(dev.as_raw()) };
}

/// The device of a modesetting callback, from `raw`.
///
/// # Safety
///
/// `raw` is a `T` device DRM calls a callback of one of this module's objects on, valid for
/// `'a`.
unsafe fn callback_device<'a, T: KmsDriver>(
    raw: *mut bindings::drm_device,
) -> &'a drm::Device<T, drm::Ioctl> {
    // SAFETY: `raw` is a valid `T` device for `'a` (function safety requirement). Its
    // registration is under way or done, which is what the `Ioctl` context needs (entering the
    // registration of a device whose registration then fails finds it unplugged): the callbacks
    // of this module's objects run from modeset operations only, userspace's (which reach the
    // device once `drm_dev_register()` has made it visible) and `AtomicShutdown`'s (after the
    // registration). Setting up and registering call none of them.
    unsafe { drm::Device::from_raw(raw) }
}

/// Creates a modesetting object: allocates `init` (a `T` whose first field is its DRM object, a
/// zeroed `R`), initialises the DRM object with `c_init` and hands the allocation over to DRM.
/// On success DRM owns it. On failure it is freed here, unless the initialisation got as far as
/// putting it on its device's list (`listed` says, of the DRM object): DRM owns it even so, and
/// its `destroy` frees it with the device.
///
/// Returns the object and its DRM object.
///
/// # Safety
///
/// - `T` is `#[repr(C)]` with an `Opaque<R>` first, which `init` zeroes.
/// - `c_init` initialises that DRM object of a device being set up with operations whose
///   `destroy` frees the allocation with `KBox::from_raw`, after DRM's cleanup of the object.
/// - `'a` does not outlive the device (which frees its objects when it goes).
unsafe fn create<'a, T, R>(
    init: impl PinInit<T, Error>,
    c_init: impl FnOnce(*mut R) -> c_int,
    listed: impl FnOnce(*mut R) -> bool,
) -> Result<(&'a T, *mut R)> {
    let obj = KBox::pin_init(init, GFP_KERNEL)?;
    // SAFETY: The allocation is never moved out of: DRM owns it from the initialisation until
    // `destroy` frees it, in place (function safety requirement).
    let this = KBox::into_raw(unsafe { Pin::into_inner_unchecked(obj) });
    // The DRM object is `T`'s first field (function safety requirement); `Opaque<R>` has the
    // layout of an `R`.
    let raw = this.cast::<R>();
    if let Err(e) = to_result(c_init(raw)) {
        if !listed(raw) {
            // SAFETY: `this` came from `KBox::into_raw` above and DRM did not take it.
            drop(unsafe { KBox::from_raw(this) });
        }
        return Err(e);
    }
    // SAFETY: DRM owns the initialised object and frees it only with the device, after `'a`
    // (function safety requirement).
    Ok((unsafe { &*this }, raw))
}

/// Whether every entry of the list at `head`, of `T`s linked through the field at `link` bytes,
/// has a state (`state` of an entry is not null).
///
/// # Safety
///
/// `head` is a valid list of valid `T`s, not changing meanwhile.
unsafe fn all_have_state<T>(
    head: *mut bindings::list_head,
    link: usize,
    state: impl Fn(*const T) -> bool,
) -> bool {
    // SAFETY: `head` is a valid list (function safety requirement).
    let mut pos = unsafe { (*head).next };
    while pos != head {
        // SAFETY: `pos` is the link of a `T` at `link` bytes (function safety requirement).
        let entry = unsafe { pos.byte_sub(link) }.cast::<T>();
        if !state(entry) {
            return false;
        }
        // SAFETY: `pos` is an entry of the valid list.
        pos = unsafe { (*pos).next };
    }
    true
}

/// Whether every CRTC, plane and connector of `dev` has a state.
///
/// # Safety
///
/// `dev` is a valid device whose mode configuration is initialised and not in use.
unsafe fn every_object_has_a_state(dev: *mut bindings::drm_device) -> bool {
    use bindings::{
        drm_connector,
        drm_crtc,
        drm_plane, //
    };
    use core::mem::offset_of;
    // SAFETY: `dev`'s mode configuration is initialised and not in use (function safety
    // requirement): its lists hold valid objects, whose `state` fields are read.
    unsafe {
        let config = &raw mut (*dev).mode_config;
        all_have_state::<drm_crtc>(
            &raw mut (*config).crtc_list,
            offset_of!(drm_crtc, head),
            |c| !(*c).state.is_null(),
        ) && all_have_state::<drm_plane>(
            &raw mut (*config).plane_list,
            offset_of!(drm_plane, head),
            |p| !(*p).state.is_null(),
        ) && all_have_state::<drm_connector>(
            &raw mut (*config).connector_list,
            offset_of!(drm_connector, head),
            |c| !(*c).state.is_null(),
        )
    }
}

/// A rectangle in pixels, from `(x1, y1)` included to `(x2, y2)` excluded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rect {
    /// Left edge.
    pub x1: i32,
    /// Top edge.
    pub y1: i32,
    /// Right edge, excluded.
    pub x2: i32,
    /// Bottom edge, excluded.
    pub y2: i32,
}

impl Rect {
    fn from_raw(r: &bindings::drm_rect) -> Self {
        Self {
            x1: r.x1,
            y1: r.y1,
            x2: r.x2,
            y2: r.y2,
        }
    }

    /// The width (0 for an empty or inverted rectangle).
    pub fn width(&self) -> u32 {
        self.x2.saturating_sub(self.x1).max(0) as u32
    }

    /// The height (0 for an empty or inverted rectangle).
    pub fn height(&self) -> u32 {
        self.y2.saturating_sub(self.y1).max(0) as u32
    }
}
