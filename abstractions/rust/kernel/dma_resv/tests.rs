// SPDX-License-Identifier: GPL-2.0

//! KUnit tests for reservation objects: the execbuffer pattern under
//! contention, over bare reservations and over the reservations of real GEM
//! objects looked up by handle.

use crate::prelude::*;

#[kunit_tests(rust_dma_resv)]
mod suite {
    use crate::{
        c_str,
        dma_fence::{DriverFence, FenceAllocation, FenceContexts, FenceNames},
        dma_resv::{OwnedResv, Resv, Usage},
        prelude::*,
        sync::aref::ARef,
        sync::{
            atomic::{Atomic, Relaxed},
            lock::ww_mutex::{Class, LockSet},
            Arc, Mutex,
        },
        test_support::spawn,
        time::Delta,
    };

    struct Names;
    impl FenceNames for Names {
        const DRIVER: &'static CStr = c_str!("rust_dma_resv_test");
        const TIMELINE: &'static CStr = c_str!("job");
    }

    /// Reservations of the test's "objects"; objects `i` and `i + RESVS`
    /// (for `i < SHARED`) share one reservation, as GEM objects imported from
    /// one DMA buffer do.
    const RESVS: usize = 48;
    const SHARED: usize = 16;
    const OBJECTS: usize = RESVS + SHARED;
    const THREADS: usize = 3;
    const ROUNDS: u64 = 12;

    /// Where a job's objects come from, and what the job holds of one while
    /// it runs.
    trait Objects: Send + Sync {
        /// What a job holds of an object (a GEM reference, or its number).
        type Held;
        /// Looks object `o` up, as an execbuffer looks up a handle.
        fn hold(&self, o: usize) -> Result<Self::Held>;
        /// The reservation of a held object.
        fn resv<'a>(&'a self, held: &'a Self::Held) -> &'a Resv;
        /// Reservation `i < RESVS`, for the checks after the jobs.
        fn nth_resv(&self, i: usize) -> &Resv;
    }

    /// Reservations of their own.
    struct Bare(KVec<Pin<KBox<OwnedResv>>>);

    impl Objects for Bare {
        type Held = usize;
        fn hold(&self, o: usize) -> Result<usize> {
            Ok(o)
        }
        fn resv<'a>(&'a self, held: &'a usize) -> &'a Resv {
            &self.0[*held % RESVS]
        }
        fn nth_resv(&self, i: usize) -> &Resv {
            &self.0[i]
        }
    }

    #[pin_data]
    struct World<O: Objects> {
        objects: O,
        /// Per thread: the last round whose fence each reservation got.
        #[pin]
        last: Mutex<[[u64; RESVS]; THREADS]>,
        backoffs: Atomic<u32>,
        retried: Atomic<u32>,
        contexts: FenceContexts<Names>,
    }

    /// A small deterministic generator (xorshift), per thread.
    fn next(state: &mut u32) -> u32 {
        *state ^= *state << 13;
        *state ^= *state >> 17;
        *state ^= *state << 5;
        *state
    }

    /// One thread's jobs: each locks 16 to 64 objects (overlapping the
    /// other threads', with duplicates) with `lock_all_interruptible`,
    /// reserves a slot on each, adds the job's fence, and unlocks. The
    /// stamp of a job's context must be the same on every run of its
    /// locking closure.
    fn jobs<O: Objects>(world: &World<O>, t: usize) -> Result<KVec<DriverFence<Names>>> {
        let mut fences = KVec::new();
        let mut rng = 0x9e37_79b9u32.wrapping_mul(t as u32 + 1);
        for round in 1..=ROUNDS {
            let n = 16 + (next(&mut rng) as usize % (OBJECTS - 16 + 1));
            let mut objects = KVec::with_capacity(n, GFP_KERNEL)?;
            let mut held = KVec::with_capacity(n, GFP_KERNEL)?;
            for _ in 0..n {
                let o = next(&mut rng) as usize % OBJECTS;
                objects.push(o, GFP_KERNEL)?;
                held.push(world.objects.hold(o)?, GFP_KERNEL)?;
            }
            let ctx = world.contexts.context(t as u32).ok_or(EINVAL)?;
            let fence = FenceAllocation::new(GFP_KERNEL)?.init(ctx, round);
            let mut stamps = KVec::new();
            let mut set = LockSet::with_capacity(Class::reservation(), n)?;
            set.run_interruptible(
                |set| {
                    stamps.push(set.stamp().ok_or(EINVAL)?, GFP_KERNEL)?;
                    for h in held.iter() {
                        set.lock(world.objects.resv(h))?;
                    }
                    Ok(())
                },
                |set| {
                    for h in held.iter() {
                        set.with_locked_ref(world.objects.resv(h), |r| -> Result {
                            r.reserve_fences(1)?.add(fence.fence(), Usage::Write)
                        })??;
                    }
                    Ok(())
                },
            )?;
            world.backoffs.fetch_add(set.backoffs(), Relaxed);
            if stamps.len() > 1 {
                world.retried.fetch_add(1, Relaxed);
            }
            if stamps.iter().any(|s| *s != stamps[0]) {
                pr_err!("dma_resv test: a job's stamp changed across back-offs\n");
                return Err(EINVAL);
            }
            let mut last = world.last.lock();
            for &o in objects.iter() {
                last[t][o % RESVS] = round;
            }
            drop(last);
            fences.push(fence, GFP_KERNEL)?;
        }
        Ok(fences)
    }

    /// Threads contend over overlapping sets of reservations, with the
    /// slow-path injection of `DEBUG_WW_MUTEX_SLOWPATH` adding back-offs:
    /// no deadlock, every job's stamp kept across its back-offs, and no
    /// fence lost: each reservation ends up holding, per thread, exactly the
    /// fence of the last job of that thread that touched it (a context's
    /// newer fence replaces its older one).
    /// `assert!` for helpers that a test calls: a failed check is reported
    /// and fails the test through its `Result`, instead of panicking (only a
    /// test function's own asserts are KUnit assertions).
    macro_rules! check {
        ($cond:expr) => {
            if !$cond {
                pr_err!("check failed: {}\n", stringify!($cond));
                return Err(EINVAL);
            }
        };
    }

    /// `assert_eq!` for helpers, as [`check!`].
    macro_rules! check_eq {
        ($a:expr, $b:expr) => {{
            let (a, b) = (&$a, &$b);
            if a != b {
                pr_err!(
                    "check failed: {} == {} ({:?} != {:?})\n",
                    stringify!($a),
                    stringify!($b),
                    a,
                    b
                );
                return Err(EINVAL);
            }
        }};
    }

    fn contend<O: Objects + 'static>(objects: O) -> Result {
        let contexts = FenceContexts::new(THREADS as u32)?;
        let world = Arc::pin_init(
            pin_init!(World {
                objects,
                last <- crate::new_mutex!([[0; RESVS]; THREADS]),
                backoffs: Atomic::new(0),
                retried: Atomic::new(0),
                contexts,
            }),
            GFP_KERNEL,
        )?;
        let results = Arc::pin_init(crate::new_mutex!(KVec::new()), GFP_KERNEL)?;
        let mut done = KVec::new();
        for t in 0..THREADS {
            let (w, r) = (world.clone(), results.clone());
            done.push(
                spawn(move || {
                    let out = jobs(&w, t).map(|f| (t, f));
                    let _ = r.lock().push(out, GFP_KERNEL);
                })?,
                GFP_KERNEL,
            )?;
        }
        for d in done.iter() {
            d.wait_for_completion();
        }
        let mut fences: KVec<(usize, KVec<DriverFence<Names>>)> = KVec::new();
        for r in results.lock().drain_all() {
            fences.push(r?, GFP_KERNEL)?;
        }
        check_eq!(fences.len(), THREADS);
        // The injection must have made some job back off, or the stamp
        // check above checked nothing (without the injection, three threads
        // may well never collide).
        if cfg!(CONFIG_DEBUG_WW_MUTEX_SLOWPATH) {
            check!(world.backoffs.load(Relaxed) > 0);
            check!(world.retried.load(Relaxed) > 0);
        }
        let contexts: KVec<u64> = {
            let mut v = KVec::new();
            for t in 0..THREADS {
                v.push(
                    world.contexts.context(t as u32).ok_or(EINVAL)?.id(),
                    GFP_KERNEL,
                )?;
            }
            v
        };
        let last = *world.last.lock();
        for i in 0..RESVS {
            let resv = world.objects.nth_resv(i);
            let mut found = [0u64; THREADS];
            let g = resv.lock_interruptible()?;
            for f in g.fences(Usage::Bookkeep)?.iter() {
                if let Some(t) = contexts.iter().position(|c| *c == f.context()) {
                    found[t] = f.seqno();
                }
            }
            drop(g);
            for t in 0..THREADS {
                check_eq!(found[t], last[t][i]);
            }
            check_eq!(
                resv.test_signaled(Usage::Write),
                last.iter().all(|l| l[i] == 0)
            );
        }
        // Signalling every fence releases every reservation.
        let mut shared: KVec<ARef<crate::dma_fence::Fence>> = KVec::new();
        for (_, list) in fences.iter() {
            for f in list.iter() {
                shared.push(f.shared(), GFP_KERNEL)?;
            }
        }
        for (_, list) in fences.drain_all() {
            for f in list {
                f.signal();
            }
        }
        for i in 0..RESVS {
            let resv = world.objects.nth_resv(i);
            check!(resv.wait_timeout(Usage::Read, false, Delta::from_millis(100))?);
        }
        check!(shared.iter().all(|f| f.is_signaled()));
        Ok(())
    }

    #[test]
    fn execbuffer_jobs_contend_without_losing_fences() -> Result {
        let mut resvs = KVec::with_capacity(RESVS, GFP_KERNEL)?;
        for _ in 0..RESVS {
            resvs.push(KBox::pin_init(OwnedResv::new(), GFP_KERNEL)?, GFP_KERNEL)?;
        }
        contend(Bare(resvs))
    }

    /// Real GEM objects of a DRM device on a faux parent, looked up by
    /// handle in an open file of the device, as an execbuffer ioctl does.
    #[cfg(CONFIG_RUST_DRM_GEM_SHMEM_HELPER)]
    mod gem {
        use super::{Objects, RESVS, SHARED};
        use crate::{
            bindings,
            device::{Bound, DeviceContext},
            dma_resv::Resv,
            drm::{
                self,
                gem::{
                    shmem::{Object, ObjectConfig},
                    BaseObject, DriverObject, IntoGEMObject,
                },
            },
            error::from_err_ptr,
            faux,
            prelude::*,
            sync::aref::ARef,
        };

        pub(super) struct TestDriver;

        #[pin_data]
        pub(super) struct TestObject {}

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

        pub(super) struct TestFile;

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
                name: c"rust_dma_resv_test",
                desc: c"dma_resv KUnit test device",
            };
            const IOCTLS: &'static [drm::ioctl::DrmIoctlDescriptor] = &[];
        }

        /// A file of the device, opened from the kernel (`mock_drm_getfile`).
        ///
        /// # Invariants
        ///
        /// `file` is a `struct file` of the device whose `private_data` is
        /// its `drm_file`; this owns one reference to it.
        struct OpenFile {
            file: *mut bindings::file,
        }

        // SAFETY: A `struct file` reference may be used and dropped on any
        // thread; handle lookups are serialised by the DRM core.
        unsafe impl Send for OpenFile {}
        // SAFETY: As above.
        unsafe impl Sync for OpenFile {}

        impl OpenFile {
            fn drm_file(&self) -> &drm::File<TestFile> {
                // SAFETY: By the type invariant `private_data` is the
                // `drm_file` of a file of a `TestDriver` device, alive while
                // we hold the file.
                unsafe { drm::File::from_raw((*self.file).private_data.cast()) }
            }
        }

        impl Drop for OpenFile {
            fn drop(&mut self) {
                // Released now, not by the delayed-fput worker (this runs in a
                // kernel thread): the file's handles and objects go before
                // the test's device does.
                //
                // SAFETY: By the type invariant we own this reference, the
                // last one: the file was never installed in a table.
                unsafe { bindings::__fput_sync(self.file) };
            }
        }

        /// The device, its objects and their handles.
        pub(super) struct Gem {
            /// Objects `0..RESVS` have their own reservation; object
            /// `RESVS + i` shares object `i`'s.
            objects: KVec<ARef<Object<TestObject>>>,
            handles: KVec<u32>,
            file: OpenFile,
            _drm: drm::Registration<'static, TestDriver>,
            _faux: faux::Registration,
        }

        impl Gem {
            pub(super) fn new() -> Result<Self> {
                let faux = faux::Registration::new(c"rust_dma_resv_test", None)?;
                let parent: &faux::Device<Bound> = faux.as_ref();
                // SAFETY: `faux::Registration` only points to the C faux
                // device, so moving it into `Gem` keeps the device where it
                // is; it stays registered, so bound, until `Gem` drops
                // `_faux`, after `_drm` (fields drop in order); and the
                // registration data borrows nothing.
                let parent: &'static faux::Device<Bound> = unsafe { &*core::ptr::from_ref(parent) };
                let unregistered = drm::UnregisteredDevice::<TestDriver>::new(parent, Ok(()))?;
                // SAFETY: The registration is kept in `Gem` and dropped with
                // it, never forgotten.
                let drm = unsafe {
                    drm::Registration::new(parent.as_ref(), unregistered, Ok::<(), Error>(()), 0)?
                };
                let dev = drm.device();
                // SAFETY: The primary minor of a device exists from its
                // allocation until it is released, and we hold the device.
                let file = from_err_ptr(unsafe {
                    bindings::mock_drm_getfile((*dev.as_raw()).primary, bindings::O_RDWR)
                })?;
                // INVARIANT: a new file of the device, whose reference we own.
                let file = OpenFile { file };
                let mut objects: KVec<ARef<Object<TestObject>>> =
                    KVec::with_capacity(RESVS + SHARED, GFP_KERNEL)?;
                for i in 0..RESVS + SHARED {
                    let config = ObjectConfig {
                        map_wc: false,
                        parent_resv_obj: (i >= RESVS).then(|| &*objects[i - RESVS]),
                    };
                    let obj = Object::<TestObject>::new(dev, bindings::PAGE_SIZE, config, ())?;
                    objects.push(obj, GFP_KERNEL)?;
                }
                let mut handles = KVec::with_capacity(objects.len(), GFP_KERNEL)?;
                for obj in objects.iter() {
                    handles.push(obj.create_handle(file.drm_file())?, GFP_KERNEL)?;
                }
                Ok(Self {
                    objects,
                    handles,
                    file,
                    _drm: drm,
                    _faux: faux,
                })
            }
        }

        impl Objects for Gem {
            type Held = ARef<Object<TestObject>>;
            fn hold(&self, o: usize) -> Result<Self::Held> {
                let obj =
                    Object::<TestObject>::lookup_handle(self.file.drm_file(), self.handles[o])?;
                // The handle names the object it was made for.
                if obj.as_raw() != self.objects[o].as_raw() {
                    return Err(EINVAL);
                }
                Ok(obj)
            }
            fn resv<'a>(&'a self, held: &'a Self::Held) -> &'a Resv {
                Resv::of_gem(&**held)
            }
            fn nth_resv(&self, i: usize) -> &Resv {
                Resv::of_gem(&*self.objects[i])
            }
        }

        impl Gem {
            /// Objects `i` and `RESVS + i` share one reservation, and only
            /// they do.
            pub(super) fn check_sharing(&self) -> bool {
                let r = |o: usize| Resv::of_gem(&*self.objects[o]).as_raw();
                (0..SHARED).all(|i| r(i) == r(RESVS + i))
                    && (0..RESVS).all(|i| (0..i).all(|j| r(i) != r(j)))
            }
        }
    }

    /// The execbuffer pattern over GEM objects: each job looks its objects up
    /// by handle in an open file of a real DRM device (duplicates included;
    /// objects sharing a reservation through `parent_resv_obj`), locks their
    /// reservations, reserves a slot on each and adds its fence, under the
    /// same contention and with the same checks as the bare reservations.
    #[cfg(CONFIG_RUST_DRM_GEM_SHMEM_HELPER)]
    #[test]
    fn execbuffer_over_gem_handles_contends_without_losing_fences() -> Result {
        let objects = gem::Gem::new()?;
        // Not an assert: a failed one would leave the device registered.
        if !objects.check_sharing() {
            pr_err!("GEM objects do not share reservations as made\n");
            return Err(EINVAL);
        }
        contend(objects)
    }

    /// The single-object path: a context-free interruptible lock, fence
    /// slots that run out, and unlocking through `dma_resv_unlock`.
    #[test]
    fn single_object_lock_and_slots() -> Result {
        let resv = KBox::pin_init(OwnedResv::new(), GFP_KERNEL)?;
        let contexts = FenceContexts::<Names>::new(1)?;
        let ctx = contexts.context(0).ok_or(EINVAL)?;
        let a = FenceAllocation::new(GFP_KERNEL)?.init(ctx, 1);
        let b = FenceAllocation::new(GFP_KERNEL)?.init(ctx, 2);
        {
            let g = resv.lock_interruptible()?;
            assert!(resv.is_locked());
            let mut slots = g.reserve_fences(1)?;
            slots.add(a.fence(), Usage::Read)?;
            assert_eq!(slots.add(b.fence(), Usage::Read), Err(ENOSPC));
            assert_eq!(slots.left(), 0);
        }
        assert!(!resv.is_locked());
        assert!(!resv.test_signaled(Usage::Read));
        assert!(resv.test_signaled(Usage::Write));
        assert!(!resv.wait_timeout(Usage::Read, true, Delta::from_millis(10))?);
        a.signal();
        assert!(resv.test_signaled(Usage::Read));
        b.signal();
        Ok(())
    }
}
