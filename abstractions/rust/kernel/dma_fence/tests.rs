// SPDX-License-Identifier: GPL-2.0

//! KUnit tests for DMA fences, timelines, merged fences and `sync_file`.

use crate::prelude::*;

#[kunit_tests(rust_dma_fence)]
mod suite {
    use crate::{
        bindings, c_str,
        dma_fence::{
            unwrap::{merge, Unwrap},
            DriverFence, Fence, FenceAllocation, FenceCallback, FenceCb, FenceContexts, FenceNames,
            Timeline,
        },
        interrupt::LocalInterruptDisabled,
        irq_work::{IrqWork, IrqWorkItem},
        prelude::*,
        sync::aref::ARef,
        sync::{
            atomic::{Atomic, Relaxed},
            Arc, Completion, SpinLockIrq,
        },
        sync_file::{fence_from_fd, SyncFile},
        test_support::{code, spawn, with_pending_signal},
        time::{delay::fsleep, Delta},
    };

    struct Names;
    impl FenceNames for Names {
        const DRIVER: &'static CStr = c_str!("rust_dma_fence_test");
        const TIMELINE: &'static CStr = c_str!("test");
    }

    type Contexts = FenceContexts<Names>;

    fn fence(c: &Contexts, ring: u32, seqno: u64) -> Result<DriverFence<Names>> {
        Ok(FenceAllocation::new(GFP_KERNEL)?.init(c.context(ring).ok_or(EINVAL)?, seqno))
    }

    /// The fence's reference count.
    fn refs(f: &Fence) -> u32 {
        // SAFETY: `f` is live; a racy read of the count is fine for a test
        // that has no other user of the fence.
        unsafe { (*f.as_raw()).refcount.refcount.refs.counter as u32 }
    }

    #[test]
    fn signal_completes_once_with_success() -> Result {
        let c = Contexts::new(1)?;
        let f = fence(&c, 0, 5)?;
        let shared = f.shared();
        assert_eq!(shared.context(), c.context(0).ok_or(EINVAL)?.id());
        assert_eq!(shared.seqno(), 5);
        assert!(!shared.is_signaled());
        assert_eq!(shared.status(), None);
        f.signal();
        assert!(shared.is_signaled());
        assert_eq!(shared.status(), Some(Ok(())));
        // Only the shared reference is left.
        assert_eq!(refs(&shared), 1);
        Ok(())
    }

    #[test]
    fn signal_error_is_the_status() -> Result {
        let c = Contexts::new(1)?;
        let f = fence(&c, 0, 1)?;
        let shared = f.shared();
        f.signal_error(ETIME);
        assert_eq!(shared.status(), Some(Err(ETIME)));
        Ok(())
    }

    /// An unsignalled driver fence that goes away must not leave waiters
    /// waiting: it signals `-ECANCELED` (and prints a warning).
    #[test]
    fn dropped_unsignalled_fence_is_cancelled() -> Result {
        let c = Contexts::new(1)?;
        let f = fence(&c, 0, 1)?;
        let shared = f.shared();
        drop(f);
        assert_eq!(shared.status(), Some(Err(ECANCELED)));
        Ok(())
    }

    /// Counts its calls and checks the fence it is called with.
    struct Count {
        calls: Arc<Atomic<u32>>,
        seqno: u64,
    }

    impl FenceCallback for Count {
        fn signalled(self, fence: &Fence) {
            if fence.seqno() == self.seqno && fence.is_signaled() {
                self.calls.fetch_add(1, Relaxed);
            }
        }
    }

    /// A callback registered before the signal runs once, in the signalling
    /// thread; one registered after gets its payload back.
    #[test]
    fn callback_runs_or_gives_the_payload_back() -> Result {
        let c = Contexts::new(1)?;
        let f = fence(&c, 0, 3)?;
        let calls = Arc::new(Atomic::new(0u32), GFP_KERNEL)?;
        let cb = |calls: &Arc<Atomic<u32>>| {
            FenceCb::new(
                Count {
                    calls: calls.clone(),
                    seqno: 3,
                },
                GFP_KERNEL,
            )
        };
        assert!(f.fence().add_callback(cb(&calls)?).is_ok());
        assert_eq!(calls.load(Relaxed), 0);
        let shared = f.shared();
        f.signal();
        assert_eq!(calls.load(Relaxed), 1);
        match shared.add_callback(cb(&calls)?) {
            Err(back) => assert_eq!(back.seqno, 3),
            Ok(()) => return Err(EINVAL),
        }
        assert_eq!(calls.load(Relaxed), 1);
        Ok(())
    }

    /// A timed wait on a pending fence times out; an untimed one returns
    /// when another thread signals.
    #[test]
    fn timed_wait_times_out_and_wait_returns() -> Result {
        let c = Contexts::new(1)?;
        let f = fence(&c, 0, 1)?;
        let shared = f.shared();
        assert!(!shared.wait_timeout(false, Delta::from_millis(20))?);
        let done = spawn(move || {
            fsleep(Delta::from_millis(20));
            f.signal();
        })?;
        shared.wait(false)?;
        assert!(shared.is_signaled());
        assert!(shared.wait_timeout(true, Delta::from_millis(1))?);
        done.wait_for_completion();
        Ok(())
    }

    /// With a signal pending, interruptible waits return `ERESTARTSYS`;
    /// uninterruptible ones are not disturbed.
    #[test]
    fn interruptible_wait_is_interrupted() -> Result {
        let c = Contexts::new(1)?;
        let f = fence(&c, 0, 1)?;
        let shared = f.shared();
        let (plain, timed, uninterruptible) = with_pending_signal(|| {
            (
                shared.wait(true),
                shared
                    .wait_timeout(true, Delta::from_millis(1000))
                    .map(drop),
                shared.wait_timeout(false, Delta::from_millis(10)),
            )
        });
        assert_eq!(code(plain), -(bindings::ERESTARTSYS as i32));
        assert_eq!(code(timed), -(bindings::ERESTARTSYS as i32));
        assert_eq!(uninterruptible, Ok(false));
        f.signal();
        Ok(())
    }

    /// A timeline signals every fence up to a seqno, oldest first, keeps
    /// the later ones, refuses a seqno that does not grow, and cancels what
    /// is left when it goes.
    #[test]
    fn timeline_signals_in_order() -> Result {
        let c = Contexts::new(1)?;
        let t = KBox::pin_init(Timeline::<Names>::new(), GFP_KERNEL)?;
        let mut shared: KVec<ARef<Fence>> = KVec::new();
        for seqno in [2, 4, 6, 8] {
            let f = fence(&c, 0, seqno)?;
            shared.push(f.shared(), GFP_KERNEL)?;
            t.push(f).map_err(|_| EINVAL)?;
        }
        // Not above 8: refused and given back.
        let late = fence(&c, 0, 8)?;
        let late = match t.push(late) {
            Err(f) => f,
            Ok(()) => return Err(EINVAL),
        };
        late.signal();
        assert_eq!(t.len(), 4);
        assert_eq!(t.signal_until(1), 0);
        assert_eq!(t.signal_until(5), 2);
        let signalled: KVec<bool> = {
            let mut v = KVec::new();
            for s in shared.iter() {
                v.push(s.is_signaled(), GFP_KERNEL)?;
            }
            v
        };
        assert_eq!(signalled[..], [true, true, false, false]);
        assert_eq!(t.len(), 2);
        drop(t);
        assert_eq!(shared[2].status(), Some(Err(ECANCELED)));
        assert_eq!(shared[3].status(), Some(Err(ECANCELED)));
        Ok(())
    }

    /// "Up to a seqno" includes the fence with that seqno.
    #[test]
    fn signal_until_includes_that_seqno() -> Result {
        let c = Contexts::new(1)?;
        let t = KBox::pin_init(Timeline::<Names>::new(), GFP_KERNEL)?;
        let mut shared: KVec<ARef<Fence>> = KVec::new();
        for seqno in [3, 5] {
            let f = fence(&c, 0, seqno)?;
            shared.push(f.shared(), GFP_KERNEL)?;
            t.push(f).map_err(|_| EINVAL)?;
        }
        assert_eq!(t.signal_until(3), 1);
        assert!(shared[0].is_signaled() && !shared[1].is_signaled());
        assert_eq!(t.signal_until(5), 1);
        assert!(t.is_empty());
        Ok(())
    }

    /// What the interrupt handler of the test owns: the queue lock and the
    /// timeline it signals under it.
    #[pin_data]
    struct Irq {
        #[pin]
        queue: SpinLockIrq<u64>,
        #[pin]
        timeline: Timeline<Names>,
        #[pin]
        done: Completion,
    }

    impl IrqWorkItem for Irq {
        fn run(&self, irq: &LocalInterruptDisabled) {
            let mut completed = self.queue.lock_with(irq);
            *completed += 1;
            self.timeline.signal_until_with(u64::MAX, irq);
            drop(completed);
            self.done.complete_all();
        }
    }

    /// `FENCES` pending fences of a timeline that an `irq_work` signals in
    /// hard IRQ, and the counts of what callbacks registered on them saw.
    struct Race {
        work: Arc<IrqWork<Irq>>,
        shared: Arc<KVec<ARef<Fence>>>,
        calls: Arc<Atomic<u32>>,
        returned: Arc<Atomic<u32>>,
    }

    const FENCES: u64 = 64;

    impl Race {
        fn new(c: &Contexts) -> Result<Race> {
            let work = Arc::pin_init(
                IrqWork::new(pin_init!(Irq {
                    queue <- crate::new_spinlock_irq!(0, "test_queue"),
                    timeline <- Timeline::new(),
                    done <- Completion::new(),
                })),
                GFP_KERNEL,
            )?;
            let mut shared = KVec::new();
            for seqno in 1..=FENCES {
                let f = fence(c, 0, seqno)?;
                shared.push(f.shared(), GFP_KERNEL)?;
                work.item().timeline.push(f).map_err(|_| EINVAL)?;
            }
            Ok(Race {
                work,
                shared: Arc::new(shared, GFP_KERNEL)?,
                calls: Arc::new(Atomic::new(0u32), GFP_KERNEL)?,
                returned: Arc::new(Atomic::new(0u32), GFP_KERNEL)?,
            })
        }

        /// Registers a counting callback on fence `i`; counts it as
        /// returned if the fence had signalled.
        fn register(
            shared: &KVec<ARef<Fence>>,
            i: usize,
            calls: &Arc<Atomic<u32>>,
            returned: &Atomic<u32>,
        ) {
            let f = &shared[i];
            let cb = FenceCb::new(
                Count {
                    calls: calls.clone(),
                    seqno: f.seqno(),
                },
                GFP_KERNEL,
            );
            if let Ok(Err(_back)) = cb.map(|cb| f.add_callback(cb)) {
                returned.fetch_add(1, Relaxed);
            }
        }

        /// Signals every fence from the hard-IRQ handler and waits for it.
        fn fire(&self) {
            self.work.queue();
            self.work.item().done.wait_for_completion();
        }
    }

    /// Fences signalled in hard IRQ, under a `SpinLockIrq` taken with
    /// `lock_with`, while another thread registers callbacks on them: every
    /// callback runs exactly once, or its payload comes back.
    #[test]
    fn signal_in_hard_irq_races_callbacks() -> Result {
        let c = Contexts::new(1)?;
        let race = Race::new(&c)?;
        let (s, cl, rt) = (
            race.shared.clone(),
            race.calls.clone(),
            race.returned.clone(),
        );
        let registrar = spawn(move || {
            for i in 0..s.len() {
                Race::register(&s, i, &cl, &rt);
            }
        })?;
        race.fire();
        registrar.wait_for_completion();
        assert!(race.shared.iter().all(|f| f.is_signaled()));
        assert_eq!(
            race.calls.load(Relaxed) + race.returned.load(Relaxed),
            FENCES as u32
        );
        assert_eq!(*race.work.item().queue.lock(), 1);
        Ok(())
    }

    /// The same, with the interleaving forced: callbacks registered on the
    /// first half before the interrupt signals everything, on the second
    /// half after it. Exactly the first half runs its callbacks (in hard
    /// IRQ), exactly the second half gets the payloads back.
    #[test]
    fn callbacks_before_and_after_a_hard_irq_signal() -> Result {
        const HALF: usize = FENCES as usize / 2;
        let c = Contexts::new(1)?;
        let race = Race::new(&c)?;
        let half = Arc::pin_init(Completion::new(), GFP_KERNEL)?;
        let go = Arc::pin_init(Completion::new(), GFP_KERNEL)?;
        let (s, cl, rt) = (
            race.shared.clone(),
            race.calls.clone(),
            race.returned.clone(),
        );
        let (h, g) = (half.clone(), go.clone());
        let registrar = spawn(move || {
            for i in 0..s.len() {
                if i == HALF {
                    h.complete_all();
                    g.wait_for_completion();
                }
                Race::register(&s, i, &cl, &rt);
            }
        })?;
        half.wait_for_completion();
        race.fire();
        let calls_at_signal = race.calls.load(Relaxed);
        // Let the registrar finish before any assert can end the test.
        go.complete_all();
        registrar.wait_for_completion();
        assert_eq!(calls_at_signal, HALF as u32);
        assert!(race.shared.iter().all(|f| f.is_signaled()));
        assert_eq!(race.calls.load(Relaxed), HALF as u32);
        assert_eq!(race.returned.load(Relaxed), HALF as u32);
        Ok(())
    }

    /// Merging fences of two contexts gives one fence that signals when
    /// both have; unwrapping it finds both; stopping an unwrap early keeps
    /// the counts right.
    #[test]
    fn merged_fences_unwrap_and_signal_together() -> Result {
        let c = Contexts::new(2)?;
        let a = fence(&c, 0, 1)?;
        let b = fence(&c, 1, 2)?;
        let merged = merge(&[a.shared(), b.shared()])?;
        let mut seqnos = KVec::new();
        for f in Unwrap::new(&merged) {
            seqnos.push(f.seqno(), GFP_KERNEL)?;
        }
        seqnos.sort_unstable();
        assert_eq!(seqnos[..], [1, 2]);
        let before = refs(&merged);
        {
            let mut it = Unwrap::new(&merged);
            assert!(it.next().is_some());
        }
        assert_eq!(refs(&merged), before);
        a.signal();
        assert!(!merged.is_signaled());
        b.signal();
        assert!(merged.is_signaled());
        // A plain fence unwraps to itself.
        let d = fence(&c, 0, 3)?;
        let mut it = Unwrap::new(d.fence());
        assert!(it.next().is_some_and(|f| core::ptr::eq(&*f, d.fence())));
        assert!(it.next().is_none());
        drop(it);
        d.signal();
        Ok(())
    }

    /// A `dma_fence_chain` (a timeline syncobj's points) unwraps to the
    /// fences its links contain, newest first, and signals when they have.
    #[test]
    fn chain_unwraps_to_its_links() -> Result {
        let c = Contexts::new(3)?;
        let links = [fence(&c, 0, 1)?, fence(&c, 1, 2)?, fence(&c, 2, 3)?];
        let mut head: Option<ARef<Fence>> = None;
        for (point, link) in links.iter().enumerate() {
            let chain = KBox::<bindings::dma_fence_chain>::new_uninit(GFP_KERNEL)?;
            let chain = KBox::into_raw(chain).cast::<bindings::dma_fence_chain>();
            let raw = |f: ARef<Fence>| ARef::into_raw(f).as_ptr().cast::<bindings::dma_fence>();
            let prev = head.take().map_or(core::ptr::null_mut(), raw);
            let contained = raw(link.shared());
            // SAFETY: `chain` is memory for a chain node from the Kmalloc
            // allocator, with `base` at offset 0, which the chain's release
            // frees with `kfree_rcu` (as C's `dma_fence_chain_alloc` memory);
            // `dma_fence_chain_init` takes over the references on `prev` and
            // `contained`.
            unsafe { bindings::dma_fence_chain_init(chain, prev, contained, point as u64 + 1) };
            // SAFETY: The chain node is initialised, with one reference,
            // which `head` now owns; `chain` is not null.
            head = Some(unsafe {
                Fence::from_raw_owned(core::ptr::NonNull::new_unchecked(&raw mut (*chain).base))
            });
        }
        let head = head.ok_or(EINVAL)?;
        assert_eq!(head.seqno(), 3);
        let mut found = KVec::new();
        for f in Unwrap::new(&head) {
            found.push(f.as_raw(), GFP_KERNEL)?;
        }
        // The links' own fences, newest first.
        assert_eq!(found.len(), 3);
        for (f, link) in found.iter().zip(links.iter().rev()) {
            assert_eq!(*f, link.fence().as_raw());
        }
        for link in links {
            assert!(!head.is_signaled());
            link.signal();
        }
        assert!(head.is_signaled());
        Ok(())
    }

    /// A fence exported as a `sync_file` descriptor and imported back is the
    /// same fence; a descriptor that is not a `sync_file` is `EINVAL`.
    #[test]
    fn sync_file_fd_round_trip() -> Result {
        use crate::fs::file::FileDescriptorReservation;
        let c = Contexts::new(1)?;
        let f = fence(&c, 0, 1)?;
        let reservation = FileDescriptorReservation::get_unused_fd_flags(bindings::O_CLOEXEC)?;
        let fd = reservation.reserved_fd() as i32;
        reservation.fd_install(SyncFile::new(f.fence())?.into_file());
        let back = fence_from_fd(fd);
        let other = fence_from_fd(fd + 1000);
        // SAFETY: `fd` is the descriptor installed above, in this task's
        // table (the one all kernel threads share).
        let closed = unsafe { bindings::close_fd(fd as u32) };
        let back = back?;
        assert!(core::ptr::eq(&*back, f.fence()));
        assert_eq!(other.err(), Some(EINVAL));
        assert_eq!(fence_from_fd(-1).err(), Some(EINVAL));
        assert_eq!(closed, 0);
        // After the close, the import holds the fence on its own.
        f.signal();
        assert!(back.is_signaled());
        Ok(())
    }

    /// A `sync_file` holds its own reference on the fence.
    #[test]
    fn sync_file_holds_the_fence() -> Result {
        let c = Contexts::new(1)?;
        let f = fence(&c, 0, 1)?;
        let before = refs(f.fence());
        let file = SyncFile::new(f.fence())?;
        assert!(core::ptr::eq(file.fence(), f.fence()));
        assert_eq!(refs(f.fence()), before + 1);
        f.signal();
        assert!(file.fence().is_signaled());
        Ok(())
    }
}
