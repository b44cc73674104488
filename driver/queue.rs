// SPDX-License-Identifier: GPL-2.0-only

//! A command queue (control or cursor) and its interrupt-time completion.
//!
//! Owns one virtqueue, the commands the device holds, and the waits for them:
//!
//! - **Submitting** ([`CommandQueue::submit`], process context): the command's scatter-gather
//!   lists are built before the lock is taken, so nothing allocates under it. The queue lock is
//!   taken with `lock()`; if the queue has no room the submitter sleeps on `space` (the
//!   interrupt handler wakes it) and the device is notified after the lock is dropped.
//! - **Completing** ([`CommandQueue::complete`], hard IRQ): the virtqueue callback takes the same
//!   `SpinLockIrq` with `lock_with(irq)`, since interrupts are already off, gets every used
//!   buffer, hands each synchronous command's response to its waiter and drops the others (their
//!   release must never sleep: a [`Command`] holds plain memory only), re-enables callbacks with
//!   the re-check, and wakes the submitters waiting for room.
//! - **Synchronous commands** ([`CommandQueue::call`]): the waiter sleeps on its own [`Reply`],
//!   bounded, and gets `ENODEV` at once if the command is dropped unanswered (device removed).
//!
//! Locks, in order: the queue lock (`SpinLockIrq`), then a reply's lock (`SpinLockIrq`). Nothing
//! sleeps under either.

use kernel::{
    interrupt::LocalInterruptDisabled,
    new_condvar, new_spinlock_irq,
    prelude::*,
    sync::{
        Arc,
        CondVar,
        SpinLockIrq, //
    },
    time::Jiffies,
    virtio::virtqueue::{
        Buffer,
        Request,
        Sg,
        Virtqueue, //
    },
};

/// How long a synchronous command may take, as in the C driver: 5 s.
pub(crate) const CALL_TIMEOUT_MS: u32 = 5000;

/// What a synchronous command's waiter learns.
enum ReplyState {
    /// The device still has the command.
    Pending,
    /// The device answered: the response buffer and the number of bytes it wrote.
    Answered(KVec<u8>, u32),
    /// The command was dropped unanswered (the device was reset).
    Cancelled,
}

/// Where the interrupt handler leaves a synchronous command's response.
#[pin_data]
pub(crate) struct Reply {
    #[pin]
    state: SpinLockIrq<ReplyState>,
    #[pin]
    done: CondVar,
}

impl Reply {
    fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            state <- new_spinlock_irq!(ReplyState::Pending, "virtio_gpu_rs::Reply::state"),
            done <- new_condvar!("virtio_gpu_rs::Reply::done"),
        })
    }

    /// Settles the reply (never twice) and wakes the waiter.
    fn settle(&self, state: &mut ReplyState, outcome: ReplyState) {
        if matches!(*state, ReplyState::Pending) {
            *state = outcome;
        }
        self.done.notify_all();
    }

    /// Hands the response to the waiter, from the interrupt handler.
    fn answer(&self, resp: KVec<u8>, len: u32, irq: &LocalInterruptDisabled) {
        let mut state = self.state.lock_with(irq);
        self.settle(&mut state, ReplyState::Answered(resp, len));
    }

    /// Tells the waiter its command is gone unanswered.
    fn cancel(&self) {
        let mut state = self.state.lock();
        self.settle(&mut state, ReplyState::Cancelled);
    }
}

/// A command buffer: what the device reads, room for what it writes, and who waits for it.
///
/// Its drop never sleeps (it may run in the interrupt handler): vectors and an `Arc<Reply>`.
pub(crate) struct Command {
    cmd: KVec<u8>,
    resp: KVec<u8>,
    reply: Option<Arc<Reply>>,
}

impl Command {
    /// A command of the bytes `cmd` with room for a response of `resp_len` bytes.
    pub(crate) fn new(cmd: KVec<u8>, resp_len: usize) -> Result<KBox<Self>> {
        let mut resp = KVec::with_capacity(resp_len, GFP_KERNEL)?;
        resp.resize(resp_len, 0, GFP_KERNEL)?;
        Ok(KBox::new(
            Self {
                cmd,
                resp,
                reply: None,
            },
            GFP_KERNEL,
        )?)
    }
}

impl Buffer for Command {
    fn describe<'a>(&'a mut self, sg: &mut Sg<'a>) -> Result {
        sg.device_reads(&self.cmd)?;
        if !self.resp.is_empty() {
            sg.device_writes(&mut self.resp)?;
        }
        Ok(())
    }
}

impl Drop for Command {
    fn drop(&mut self) {
        // Answered commands had their reply taken; one still here was never answered.
        if let Some(reply) = self.reply.take() {
            reply.cancel();
        }
    }
}

/// The state the queue lock protects.
struct QueueState<'a> {
    vq: Virtqueue<'a, Command>,
    /// Set at removal: submissions fail with `ENODEV` from then on.
    removed: bool,
}

/// A virtqueue of commands, shared by the submitters and the interrupt handler.
#[pin_data]
pub(crate) struct CommandQueue<'a> {
    #[pin]
    inner: SpinLockIrq<QueueState<'a>>,
    /// Submitters waiting for free descriptors.
    #[pin]
    space: CondVar,
}

impl<'a> CommandQueue<'a> {
    /// A command queue over `vq`.
    pub(crate) fn new(vq: Virtqueue<'a, Command>) -> impl PinInit<Self> {
        pin_init!(Self {
            inner <- new_spinlock_irq!(
                QueueState { vq, removed: false },
                "virtio_gpu_rs::CommandQueue::inner"
            ),
            space <- new_condvar!("virtio_gpu_rs::CommandQueue::space"),
        })
    }

    /// Gives `cmd` to the device and notifies it. Sleeps while the queue is full.
    pub(crate) fn submit(&self, cmd: KBox<Command>) -> Result {
        let mut request = Request::new(cmd, GFP_KERNEL)?;
        let mut inner = self.inner.lock();
        let notify = loop {
            if inner.removed {
                return Err(ENODEV);
            }
            match inner.vq.add(request, GFP_ATOMIC) {
                Ok(()) => break inner.vq.kick_prepare(),
                // Full: wait for the device to use buffers. Unless it holds none, then this
                // one cannot fit even in an empty queue.
                Err(e) if e.error == ENOSPC && !inner.vq.is_idle() => {
                    request = e.request;
                    self.space.wait(&mut inner);
                }
                Err(e) => return Err(e.error),
            }
        };
        drop(inner);
        if let Some(notify) = notify {
            notify.notify();
        }
        Ok(())
    }

    /// Sends `cmd`, waits (uninterruptibly, at most [`CALL_TIMEOUT_MS`]) for the response of at
    /// most `resp_len` bytes and returns the bytes the device wrote.
    ///
    /// `ETIMEDOUT` if the device does not answer in time, `ENODEV` if it is removed meanwhile.
    pub(crate) fn call(&self, cmd: KVec<u8>, resp_len: usize) -> Result<KVec<u8>> {
        let reply = Arc::pin_init(Reply::new(), GFP_KERNEL)?;
        let mut command = Command::new(cmd, resp_len)?;
        command.reply = Some(reply.clone());
        self.submit(command)?;

        let mut left: Jiffies = kernel::time::msecs_to_jiffies(CALL_TIMEOUT_MS);
        let mut state = reply.state.lock();
        loop {
            match core::mem::replace(&mut *state, ReplyState::Pending) {
                ReplyState::Answered(mut resp, len) => {
                    resp.truncate(len as usize);
                    return Ok(resp);
                }
                ReplyState::Cancelled => return Err(ENODEV),
                ReplyState::Pending => {}
            }
            if left == 0 {
                return Err(ETIMEDOUT);
            }
            left = reply.done.wait_timeout(&mut state, left);
        }
    }

    /// Completes every buffer the device used. Called from the virtqueue callback.
    pub(crate) fn complete(&self, irq: &LocalInterruptDisabled) {
        let mut inner = self.inner.lock_with(irq);
        let mut used = false;
        loop {
            inner.vq.disable_cb();
            while let Some((mut cmd, len)) = inner.vq.get_buf() {
                used = true;
                if let Some(reply) = cmd.reply.take() {
                    let resp = core::mem::take(&mut cmd.resp);
                    reply.answer(resp, len, irq);
                }
                // `cmd` holds plain memory only: freeing it here does not sleep.
            }
            if inner.vq.enable_cb() {
                break;
            }
        }
        drop(inner);
        if used {
            self.space.notify_all();
        }
    }

    /// Stops the queue at removal, after the device was reset: submissions fail from now on,
    /// every command the device held is dropped (its waiter gets `ENODEV`) and the submitters
    /// waiting for room are woken.
    pub(crate) fn shut_down(&self) -> Result {
        let mut inner = self.inner.lock();
        inner.removed = true;
        let res = inner.vq.detach_unused();
        drop(inner);
        self.space.notify_all();
        res
    }
}
