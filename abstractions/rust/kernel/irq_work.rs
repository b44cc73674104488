// SPDX-License-Identifier: GPL-2.0

//! Work run in hard-interrupt context.
//!
//! C header: [`include/linux/irq_work.h`](srctree/include/linux/irq_work.h)
//!
//! An [`IrqWork`] owns an item and a `struct irq_work`. [`IrqWork::queue`]
//! raises a self-interrupt (or, on machines without one, waits for the next
//! tick) on the calling CPU, and the interrupt runs [`IrqWorkItem::run`] with
//! local interrupts disabled. That makes it the way to reach hard-IRQ context
//! on demand: tests use it to run the code a device interrupt would run, under
//! the same lockdep rules (a plain `irq_work` may take `spinlock_t`, as a
//! threaded-capable interrupt handler may; a `HRTIMER_MODE_*_HARD` callback
//! may not).
//!
//! Not built with `CONFIG_PREEMPT_RT`, where a plain `irq_work` runs in a
//! per-CPU thread and a hard one may not take `spinlock_t`.
//!
//! Locks: none of its own. Dropping an [`IrqWork`] (or calling
//! [`IrqWork::sync`]) waits for a queued or running callback and may sleep:
//! only in process context with interrupts enabled, never from the callback.
//!
//! # Examples
//!
//! ```
//! use kernel::{
//!     interrupt::LocalInterruptDisabled,
//!     irq_work::{IrqWork, IrqWorkItem},
//!     prelude::*,
//!     sync::{Completion, SpinLockIrq},
//! };
//!
//! #[pin_data]
//! struct Counter {
//!     #[pin]
//!     count: SpinLockIrq<u32>,
//!     #[pin]
//!     done: Completion,
//! }
//!
//! impl IrqWorkItem for Counter {
//!     fn run(&self, irq: &LocalInterruptDisabled) {
//!         *self.count.lock_with(irq) += 1;
//!         self.done.complete_all();
//!     }
//! }
//!
//! let work = KBox::pin_init(
//!     IrqWork::new(pin_init!(Counter {
//!         count <- SpinLockIrq::new_implicit(0),
//!         done <- Completion::new(),
//!     })),
//!     GFP_KERNEL,
//! )?;
//! assert!(work.queue());
//! work.item().done.wait_for_completion();
//! assert_eq!(*work.item().count.lock(), 1);
//! # Ok::<(), Error>(())
//! ```

use crate::{bindings, interrupt::LocalInterruptDisabled, prelude::*, types::Opaque};

/// What an [`IrqWork`] runs.
pub trait IrqWorkItem: Sync {
    /// Runs in hard-IRQ context on the CPU that queued the work, with local
    /// interrupts disabled. Must not sleep.
    fn run(&self, irq: &LocalInterruptDisabled);
}

/// An item and the `struct irq_work` that runs it in hard-IRQ context.
///
/// # Invariants
///
/// `work` is initialised with [`IrqWork::<T>::run_raw`] as its function and
/// is only ever queued while `self` is alive (the drop waits for it).
#[pin_data(PinnedDrop)]
pub struct IrqWork<T: IrqWorkItem> {
    #[pin]
    work: Opaque<bindings::irq_work>,
    #[pin]
    item: T,
}

// SAFETY: The `irq_work` may be queued and synced from any thread (its state
// is a set of atomic flags); the item moves with the work only if it is
// `Send`.
unsafe impl<T: IrqWorkItem + Send> Send for IrqWork<T> {}

// SAFETY: Through `&IrqWork` other threads and the interrupt only get `&T`,
// which `IrqWorkItem: Sync` allows, and queue or sync the work, which the C
// API allows concurrently.
unsafe impl<T: IrqWorkItem> Sync for IrqWork<T> {}

impl<T: IrqWorkItem> IrqWork<T> {
    /// A work item that runs `item` when queued.
    pub fn new(item: impl PinInit<T>) -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid for writes; `init_irq_work` fully
            // initialises it.
            work <- Opaque::ffi_init(|slot| unsafe {
                bindings::init_irq_work(slot, Some(Self::run_raw))
            }),
            item <- item,
        })
    }

    /// The item.
    pub fn item(&self) -> &T {
        &self.item
    }

    /// Queues the work on this CPU. Returns `false` if it was already
    /// pending (it then runs once for both calls).
    pub fn queue(&self) -> bool {
        // SAFETY: `work` is initialised (invariant) and pinned inside
        // `self`, which the drop keeps alive until the work has run.
        unsafe { bindings::irq_work_queue(self.work.get()) }
    }

    /// Waits until the work is neither pending nor running. May sleep:
    /// process context with interrupts enabled only.
    pub fn sync(&self) {
        // SAFETY: `work` is initialised (invariant).
        unsafe { bindings::irq_work_sync(self.work.get()) }
    }

    /// The C callback.
    ///
    /// # Safety
    ///
    /// `work` must be the `work` field of a live `IrqWork<T>`, called by the
    /// irq_work core.
    unsafe extern "C" fn run_raw(work: *mut bindings::irq_work) {
        // SAFETY: `work` is the `work` field of a live `IrqWork<T>` (caller),
        // and `Opaque<irq_work>` has the layout of `irq_work`.
        let this = unsafe {
            &*crate::container_of!(work.cast::<Opaque<bindings::irq_work>>(), Self, work)
        };
        // SAFETY: Without PREEMPT_RT (this module is not built with it) an
        // `irq_work` runs from the interrupt with local interrupts disabled
        // until this returns.
        let irq = unsafe { LocalInterruptDisabled::assume_disabled() };
        this.item.run(irq);
    }
}

#[pinned_drop]
impl<T: IrqWorkItem> PinnedDrop for IrqWork<T> {
    fn drop(self: Pin<&mut Self>) {
        // Nobody can queue it any more (we are the only user); wait for a
        // queued or running callback, which borrows `item`.
        self.sync();
    }
}
