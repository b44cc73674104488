// SPDX-License-Identifier: GPL-2.0

//! The pending fences of one context, signalled in seqno order.
//!
//! A device completes work in submission order per ring and often reports
//! only the last completed seqno; every fence up to it is then done. A
//! [`Timeline`] takes the [`DriverFence`]s of one context as they are
//! submitted ([`push`](Timeline::push), which refuses a seqno that does not
//! grow) and signals "this one and every earlier one"
//! ([`signal_until`](Timeline::signal_until)). Neither allocates: the list
//! is threaded through the fences' own memory, so a driver can queue a
//! fence under the lock where it takes the seqno, and signal from its
//! interrupt handler.
//!
//! Locks: `pending` (a `SpinLockIrq`), then each fence's own lock inside
//! `dma_fence_signal`. The interrupt path takes `pending` with
//! [`lock_with`](crate::sync::SpinLockIrq::lock_with) (see
//! [`signal_until_with`](Timeline::signal_until_with)); process context
//! with `lock()`.

use super::{driver::FenceMem, DriverFence, FenceNames, SignallingSection};
use crate::{
    interrupt::LocalInterruptDisabled,
    prelude::*,
    sync::{lock::Guard, SpinLockIrq},
};
use core::ptr::{null_mut, NonNull};

/// The list, oldest first.
///
/// # Invariants
///
/// `head` .. `tail`, linked through `FenceMem::next`, are the `len` fences
/// given up by `DriverFence`s of the timeline's names (`into_raw`), owned by
/// the list until taken back; both are null when the list is empty. They
/// are all of `context`; seqnos grow from `head` on, and `last` is the
/// largest ever pushed.
struct Pending {
    head: *mut FenceMem,
    tail: *mut FenceMem,
    last: Option<u64>,
    /// The context of the fences (set by the first push).
    context: Option<u64>,
    /// How many fences the list holds.
    len: usize,
}

// SAFETY: The list owns its fences, which may be signalled from any thread.
unsafe impl Send for Pending {}

/// The pending fences of one fence context, signalled in seqno order.
///
/// # Examples
///
/// ```
/// use kernel::{
///     c_str,
///     dma_fence::{FenceAllocation, FenceContexts, FenceNames, Timeline},
///     prelude::*,
/// };
///
/// struct Names;
/// impl FenceNames for Names {
///     const DRIVER: &'static CStr = c_str!("example");
///     const TIMELINE: &'static CStr = c_str!("ring0");
/// }
///
/// let contexts = FenceContexts::<Names>::new(1)?;
/// let ctx = contexts.context(0).ok_or(EINVAL)?;
/// let timeline = KBox::pin_init(Timeline::<Names>::new(), GFP_KERNEL)?;
/// let mut shared = KVec::new();
/// for seqno in 1..=3 {
///     let fence = FenceAllocation::new(GFP_KERNEL)?.init(ctx, seqno);
///     shared.push(fence.shared(), GFP_KERNEL)?;
///     timeline.push(fence).map_err(|_| EINVAL)?;
/// }
/// // The device reports seqno 2 done: fences 1 and 2 signal.
/// assert_eq!(timeline.signal_until(2), 2);
/// assert!(shared[0].is_signaled() && shared[1].is_signaled());
/// assert!(!shared[2].is_signaled());
/// assert_eq!(timeline.signal_until(3), 1);
/// # Ok::<(), Error>(())
/// ```
#[pin_data(PinnedDrop)]
pub struct Timeline<N: FenceNames> {
    #[pin]
    pending: SpinLockIrq<Pending>,
    _names: core::marker::PhantomData<N>,
}

impl<N: FenceNames> Timeline<N> {
    /// An empty timeline.
    pub fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            // INVARIANT: empty.
            // An implicit class: `new_spinlock_irq!` in generic code gives
            // every instantiation one key but its own name string, which
            // lockdep refuses.
            pending <- SpinLockIrq::new_implicit(Pending {
                head: null_mut(),
                tail: null_mut(),
                last: None,
                context: None,
                len: 0,
            }),
            _names: core::marker::PhantomData,
        })
    }

    /// Adds a pending fence. It must be of the context of the fences pushed
    /// before and its seqno above theirs, or it comes back. Never allocates.
    pub fn push(&self, fence: DriverFence<N>) -> Result<(), DriverFence<N>> {
        let mut p = self.pending.lock();
        Self::push_locked(&mut p, fence)
    }

    /// As [`push`](Self::push), where interrupts are already off.
    pub fn push_with(
        &self,
        fence: DriverFence<N>,
        irq: &LocalInterruptDisabled,
    ) -> Result<(), DriverFence<N>> {
        let mut p = self.pending.lock_with(irq);
        Self::push_locked(&mut p, fence)
    }

    fn push_locked<B: crate::sync::lock::Backend>(
        p: &mut Guard<'_, Pending, B>,
        fence: DriverFence<N>,
    ) -> Result<(), DriverFence<N>> {
        let (seqno, context) = (fence.seqno(), fence.fence().context());
        if p.last.is_some_and(|l| seqno <= l) || p.context.is_some_and(|c| c != context) {
            return Err(fence);
        }
        p.context = Some(context);
        let mem = fence.into_raw().as_ptr();
        // SAFETY: `mem` is the fence's memory, now owned by the list; only
        // the list, under the lock we hold, uses `next`.
        unsafe { (*mem).next = null_mut() };
        match NonNull::new(p.tail) {
            // SAFETY: `tail` is the last fence of the list (invariant),
            // protected by the lock we hold.
            Some(t) => unsafe { (*t.as_ptr()).next = mem },
            None => p.head = mem,
        }
        // INVARIANT: the new fence is last, its seqno the largest.
        p.tail = mem;
        p.last = Some(seqno);
        p.len += 1;
        Ok(())
    }

    /// How many fences are pending.
    pub fn len(&self) -> usize {
        self.pending.lock().len
    }

    /// Whether no fence is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Signals every pending fence with a seqno up to `seqno`, oldest
    /// first; returns how many. Takes the lock with interrupts saved.
    pub fn signal_until(&self, seqno: u64) -> usize {
        // Begun before the lock: in atomic context the annotation does
        // nothing (the might-sleep checks cover it there).
        let _section = SignallingSection::begin();
        let mut p = self.pending.lock();
        Self::signal_locked(&mut p, seqno, None)
    }

    /// As [`signal_until`](Self::signal_until), from an interrupt handler
    /// or wherever interrupts are already off.
    pub fn signal_until_with(&self, seqno: u64, irq: &LocalInterruptDisabled) -> usize {
        let mut p = self.pending.lock_with(irq);
        Self::signal_locked(&mut p, seqno, None)
    }

    /// Signals every pending fence with `error` (a device reset, say).
    pub fn cancel_all(&self, error: Error) -> usize {
        let _section = SignallingSection::begin();
        let mut p = self.pending.lock();
        Self::signal_locked(&mut p, u64::MAX, Some(error))
    }

    fn signal_locked<B: crate::sync::lock::Backend>(
        p: &mut Guard<'_, Pending, B>,
        seqno: u64,
        error: Option<Error>,
    ) -> usize {
        let mut n = 0;
        while let Some(head) = NonNull::new(p.head) {
            // SAFETY: `head` is a fence of the list (invariant), alive since
            // the list owns a reference; its seqno never changes.
            let (seqno_of_head, next) =
                unsafe { ((*head.as_ptr()).fence.seqno, (*head.as_ptr()).next) };
            if seqno_of_head > seqno {
                break;
            }
            // INVARIANT: `head` leaves the list.
            p.head = next;
            if next.is_null() {
                p.tail = null_mut();
            }
            p.len -= 1;
            // SAFETY: Given up by `into_raw` (invariant) and taken back once,
            // here, as it leaves the list.
            let f = unsafe { DriverFence::<N>::from_raw(head) };
            match error {
                Some(e) => f.signal_error(e),
                None => f.signal(),
            }
            n += 1;
        }
        n
    }
}

#[pinned_drop]
impl<N: FenceNames> PinnedDrop for Timeline<N> {
    fn drop(self: Pin<&mut Self>) {
        // No fence may stay pending forever.
        let left = self.cancel_all(ECANCELED);
        if left != 0 {
            pr_warn!(
                "dma_fence: timeline dropped with {} pending fence(s), cancelled\n",
                left
            );
        }
    }
}
