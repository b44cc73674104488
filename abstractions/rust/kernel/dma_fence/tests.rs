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
        sync_file::SyncFile,
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

    /// Fences signalled in hard IRQ, under a `SpinLockIrq` taken with
    /// `lock_with`, while another thread registers callbacks on them: every
    /// callback runs exactly once, or its payload comes back.
    #[test]
    fn signal_in_hard_irq_races_callbacks() -> Result {
        const FENCES: u64 = 64;
        let c = Contexts::new(1)?;
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
            let f = fence(&c, 0, seqno)?;
            shared.push(f.shared(), GFP_KERNEL)?;
            work.item().timeline.push(f).map_err(|_| EINVAL)?;
        }
        let calls = Arc::new(Atomic::new(0u32), GFP_KERNEL)?;
        let returned = Arc::new(Atomic::new(0u32), GFP_KERNEL)?;
        let shared = Arc::new(shared, GFP_KERNEL)?;
        let (s, cl, rt) = (shared.clone(), calls.clone(), returned.clone());
        let registrar = spawn(move || {
            for f in s.iter() {
                let cb = FenceCb::new(
                    Count {
                        calls: cl.clone(),
                        seqno: f.seqno(),
                    },
                    GFP_KERNEL,
                );
                match cb.map(|cb| f.add_callback(cb)) {
                    Ok(Ok(())) => {}
                    Ok(Err(_back)) => {
                        rt.fetch_add(1, Relaxed);
                    }
                    Err(_) => {}
                }
            }
        })?;
        work.queue();
        work.item().done.wait_for_completion();
        registrar.wait_for_completion();
        assert!(shared.iter().all(|f| f.is_signaled()));
        assert_eq!(calls.load(Relaxed) + returned.load(Relaxed), FENCES as u32);
        assert_eq!(*work.item().queue.lock(), 1);
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
