// SPDX-License-Identifier: GPL-2.0

//! KUnit tests for the modesetting setup and the connector probe, on a DRM device of a faux
//! parent: the setup's checks, the objects' indices and DRM's probe of a driver's connectors.

use crate::prelude::*;

#[kunit_tests(rust_drm_kms)]
mod suite {
    use crate::{
        bindings,
        device::{
            Bound,
            DeviceContext, //
        },
        drm::{
            self,
            gem::{
                shmem::Object,
                DriverObject, //
            },
            kms::{
                connector::{
                    Connector,
                    DisplayMode,
                    DriverConnector,
                    Modes,
                    Status, //
                },
                crtc::{
                    Crtc,
                    DriverCrtc, //
                },
                encoder::Encoder,
                plane::{
                    DriverPlane,
                    Plane,
                    PlaneUpdate,
                    FORMAT_XRGB8888, //
                },
                AtomicShutdown,
                KmsDriver,
                Setup, //
            },
        },
        faux,
        prelude::*,
        sync::atomic::{
            Atomic,
            Relaxed, //
        },
    };

    struct TestDriver;

    #[pin_data]
    struct TestObject {}

    impl DriverObject for TestObject {
        type Driver = TestDriver;
        type Args = ();
        fn new(
            _dev: &drm::Device<TestDriver>,
            _size: usize,
            _args: (),
        ) -> impl PinInit<Self, Error> {
            try_pin_init!(TestObject {})
        }
    }

    struct TestFile;

    impl drm::file::DriverFile for TestFile {
        type Driver = TestDriver;
        fn open(_dev: &drm::Device<TestDriver>) -> Result<Pin<KBox<Self>>> {
            Ok(KBox::new(Self, GFP_KERNEL)?.into())
        }
    }

    #[vtable]
    impl drm::Driver for TestDriver {
        type Data = ();
        type RegistrationData<'a> = ();
        type File = TestFile;
        type Object = Object<TestObject>;
        type ParentDevice<Ctx: DeviceContext> = faux::Device<Ctx>;
        const INFO: drm::DriverInfo = drm::DriverInfo {
            major: 0,
            minor: 0,
            patchlevel: 0,
            name: c"rust_drm_kms_test",
            desc: c"KMS KUnit test device",
        };
        const FEAT_MODESET: bool = true;
        const IOCTLS: &'static [drm::ioctl::DrmIoctlDescriptor] = &[];
    }

    impl KmsDriver for TestDriver {
        const MIN_SIZE: (u32, u32) = (32, 32);
        const MAX_SIZE: (u32, u32) = (4096, 4096);
    }

    struct TestPlane;

    impl DriverPlane for TestPlane {
        type Driver = TestDriver;
        const FORMATS: &'static [u32] = &[FORMAT_XRGB8888];
        fn atomic_update(
            _dev: &drm::Device<TestDriver, drm::Ioctl>,
            _plane: &Plane<Self>,
            _update: &PlaneUpdate<'_, TestDriver>,
        ) {
        }
    }

    struct TestCrtc;

    impl DriverCrtc for TestCrtc {
        type Driver = TestDriver;
    }

    /// A display of 1280x800 that takes no mode 800 pixels wide.
    struct TestDisplay {
        connected: bool,
        probes: Atomic<u32>,
    }

    impl DriverConnector for TestDisplay {
        type Driver = TestDriver;

        fn detect(
            _dev: &drm::Device<TestDriver, drm::Ioctl>,
            connector: &Connector<Self>,
            _force: bool,
        ) -> Status {
            connector.probes.fetch_add(1, Relaxed);
            if connector.connected {
                Status::Connected
            } else {
                Status::Disconnected
            }
        }

        fn get_modes(
            _dev: &drm::Device<TestDriver, drm::Ioctl>,
            _connector: &Connector<Self>,
            modes: &mut Modes<'_>,
        ) -> u32 {
            let n = modes.add_standard_modes(1024, 768);
            match modes.add_cvt(1280, 800, 60, true) {
                Ok(()) => n + 1,
                Err(_) => n,
            }
        }

        fn mode_valid(
            _dev: &drm::Device<TestDriver, drm::Ioctl>,
            _connector: &Connector<Self>,
            mode: &DisplayMode,
        ) -> bool {
            mode.width() != 800
        }
    }

    /// A faux parent and an unregistered device on it.
    struct Unregistered {
        drm: drm::UnregisteredDevice<TestDriver>,
        parent: &'static faux::Device<Bound>,
        faux: faux::Registration,
    }

    /// The device of a faux parent named `name`: one per test, so that a test that fails (and
    /// leaks its parent, as a failed KUnit assertion ends the test where it is) fails alone.
    fn unregistered(name: &CStr) -> Result<Unregistered> {
        let faux = faux::Registration::new(name, None)?;
        let parent: &faux::Device<Bound> = faux.as_ref();
        // SAFETY: `faux::Registration` only points to the C faux device, so moving it keeps
        // the device where it is; it stays registered, so bound, until the test drops it, after
        // the DRM device's registration.
        let parent: &'static faux::Device<Bound> = unsafe { &*core::ptr::from_ref(parent) };
        let drm = drm::UnregisteredDevice::<TestDriver>::new(parent, Ok(()))?;
        Ok(Unregistered { drm, parent, faux })
    }

    /// Output `i`: a primary plane, a CRTC, a virtual encoder and a connector, connected for
    /// `connected`.
    fn output(setup: &Setup<'_, TestDriver>, i: u32, connected: bool) -> Result {
        let plane = Plane::new_primary(setup, 1 << i, TestPlane)?;
        let crtc = Crtc::new(setup, plane, TestCrtc)?;
        if plane.index() != i || crtc.index() != i {
            return Err(EINVAL);
        }
        let encoder = Encoder::new_virtual(setup, 1 << crtc.index())?;
        let display = TestDisplay {
            connected,
            probes: Atomic::new(0),
        };
        let connector = Connector::new_virtual(setup, encoder, false, display)?;
        if connector.index() != i {
            return Err(EINVAL);
        }
        Ok(())
    }

    /// The modes of `connector` after a probe, as (width, height, preferred), and its status.
    ///
    /// # Safety
    ///
    /// `connector` is a connector of a registered, live device.
    unsafe fn probe(
        connector: *mut bindings::drm_connector,
    ) -> (KVec<(u16, u16, bool)>, bindings::drm_connector_status) {
        let mut modes = KVec::new();
        // SAFETY: `connector` is a valid connector of a live device (function safety
        // requirement); its modes are probed and read under `mode_config.mutex`, as DRM does.
        unsafe {
            let dev = (*connector).dev;
            let lock = &raw mut (*dev).mode_config.mutex;
            bindings::mutex_lock(lock);
            if let Some(fill) = (*(*connector).funcs).fill_modes {
                fill(connector, 4096, 4096);
            }
            let head = &raw mut (*connector).modes;
            let mut pos = (*head).next;
            while pos != head {
                let mode = crate::container_of!(pos, bindings::drm_display_mode, head);
                let preferred = (*mode).type_ & bindings::DRM_MODE_TYPE_PREFERRED as u8 != 0;
                if modes
                    .push(((*mode).hdisplay, (*mode).vdisplay, preferred), GFP_KERNEL)
                    .is_err()
                {
                    break;
                }
                pos = (*pos).next;
            }
            let status = (*connector).status;
            bindings::mutex_unlock(lock);
            (modes, status)
        }
    }

    #[test]
    fn setup_is_once() -> Result {
        let dev = unregistered(c"rust_drm_kms_once")?;
        let setup = Setup::new(&dev.drm)?;
        assert_eq!(Setup::new(&dev.drm).err(), Some(EBUSY));
        setup.finish()?;
        drop(dev.drm);
        drop(dev.faux);
        Ok(())
    }

    #[test]
    fn registration_needs_finished_setup() -> Result {
        // Never set up.
        let dev = unregistered(c"rust_drm_kms_unset")?;
        // SAFETY: Refused before registering: nothing to keep.
        let reg =
            unsafe { drm::Registration::new(dev.parent.as_ref(), dev.drm, Ok::<(), Error>(()), 0) };
        assert_eq!(reg.err(), Some(EINVAL));
        drop(dev.faux);

        // Set up, not finished.
        let dev = unregistered(c"rust_drm_kms_unfinished")?;
        let setup = Setup::new(&dev.drm)?;
        output(&setup, 0, true)?;
        // SAFETY: As above.
        let reg =
            unsafe { drm::Registration::new(dev.parent.as_ref(), dev.drm, Ok::<(), Error>(()), 0) };
        assert_eq!(reg.err(), Some(EINVAL));
        drop(dev.faux);
        Ok(())
    }

    #[test]
    fn connectors_probe() -> Result {
        let dev = unregistered(c"rust_drm_kms_probe")?;
        let setup = Setup::new(&dev.drm)?;
        output(&setup, 0, true)?;
        output(&setup, 1, false)?;
        setup.finish()?;
        let raw = dev.drm.as_raw();
        // SAFETY: The device is valid; its mode configuration is set up and not changing.
        let (crtcs, planes, connectors) = unsafe {
            let c = &(*raw).mode_config;
            (c.num_crtc, c.num_total_plane, c.num_connector)
        };
        assert_eq!((crtcs, planes, connectors), (2, 2, 2));
        // SAFETY: The registration is dropped at the end of this test, never forgotten.
        let reg = unsafe {
            drm::Registration::new(dev.parent.as_ref(), dev.drm, Ok::<(), Error>(()), 0)?
        };
        let shutdown = AtomicShutdown::new(reg.registered_ref());

        // SAFETY: The device is registered and alive; its connector list is fixed after setup,
        // connector 0 first, then 1.
        let (first, second) = unsafe {
            let head = &raw mut (*raw).mode_config.connector_list;
            let first = (*head).next;
            let second = (*first).next;
            (
                crate::container_of!(first, bindings::drm_connector, head),
                crate::container_of!(second, bindings::drm_connector, head),
            )
        };
        // SAFETY: Connectors of the registered device.
        let (modes, status) = unsafe { probe(first) };
        assert_eq!(
            status,
            bindings::drm_connector_status_connector_status_connected
        );
        // The driver's preferred mode, the standard modes up to 1024x768 but those 800 wide.
        assert!(modes.contains(&(1280, 800, true)));
        assert!(modes.iter().any(|&(w, h, _)| (w, h) == (1024, 768)));
        assert!(modes.iter().all(|&(w, _, _)| w != 800 && w <= 1280));
        assert_eq!(modes.iter().filter(|m| m.2).count(), 1);

        // SAFETY: As above.
        let (modes, status) = unsafe { probe(second) };
        assert_eq!(
            status,
            bindings::drm_connector_status_connector_status_disconnected
        );
        assert!(modes.is_empty());

        drop(reg);
        drop(shutdown);
        drop(dev.faux);
        Ok(())
    }
}
