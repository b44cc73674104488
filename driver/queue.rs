// SPDX-License-Identifier: GPL-2.0-only

//! A command queue (control or cursor) and its interrupt-time completion.
//!
//! Owns one virtqueue, the commands the device holds, and the waits for them:
//!
//! - **Submitting** ([`CommandQueue::submit`], or a [`Batch`] of commands; process context): the
//!   command's scatter-gather lists are built before the lock is taken (except for fenced commands,
//!   see below); under it only the ring may allocate, `GFP_ATOMIC`, an indirect descriptor table
//!   (it falls back to direct descriptors without one). The queue lock is taken with `lock()`; the
//!   command is added and, for a lone command, whether the device needs a notification is decided
//!   in the same critical section. The notification itself (an exit to the host, which may sleep on
//!   some transports) is always sent after the lock is dropped. A batch's commands are notified
//!   together when it is dropped, as C's `virtio_gpu_notify()` does. A submitter that finds the
//!   queue full first notifies the device of what it was not yet told of (a batch still open) and
//!   retries; then it sleeps on `space`, which the interrupt handler signals.
//! - **Completing** ([`CommandQueue::complete`], hard IRQ): the virtqueue callback takes the same
//!   `SpinLockIrq` with `lock_with(irq)`, since interrupts are already off, gets every used buffer,
//!   hands each synchronous command's response to its waiter, logs the error responses of the
//!   others (rate-limited), passes the commands that keep something (objects, references, data
//!   that may be `vmalloc`ed) on to the reclaim work item, whose release may sleep (see
//!   [`crate::reclaim`]), drops the others (`kmalloc`ed memory), re-enables callbacks with the
//!   re-check, and wakes the submitters waiting for room.
//! - **Synchronous commands** ([`CommandQueue::call`], or [`Batch::start_call`] for several in
//!   flight then [`Call::wait`]): the waiter sleeps on the command's own [`Reply`], bounded, and
//!   gets `ENODEV` at once if the command is dropped unanswered (device removed).
//! - **Fenced commands** ([`Batch::submit_fenced`]): the fence's seqno is taken, written into the
//!   command and the fence queued on the queue's [`Timeline`] all under the queue lock, so seqnos
//!   follow the queue's order; the command's scatter-gather lists are built there too
//!   (`GFP_ATOMIC`, for the lists that do not fit in the request). The interrupt handler signals,
//!   after the queue lock, every fence up to the highest seqno among the commands it completed (the
//!   command's own, not what the device wrote back). That assumes the device processes a queue's
//!   commands in order, as QEMU's does (the specification does not promise it; the C driver assumes
//!   it the same way). A fence whose command got an error answer signals without an error, as in C:
//!   the error is logged. At removal the pending fences signal with `ENODEV`.
//! - **Refused commands**: a command the queue refuses is dropped after the lock, except one that
//!   would free an object: the host may still use that object's memory, so the command is parked
//!   until the reset at removal (see [`QueueState::park`]).
//!
//! Locks, in order: the queue lock (`SpinLockIrq`), then a reply's lock, the reclaim stack's
//! lock or the timeline's lock (all `SpinLockIrq`); a fence's own lock after the timeline's.
//! The error rate limit's raw spinlock is only try-locked, under the queue lock. Nothing sleeps
//! under any of them.

use crate::{
    protocol::{
        self,
        CtrlHdr,
        Encoded, //
    },
    reclaim::{
        self,
        Reclaimed, //
    },
    DrmDevice, //
};
use core::cell::UnsafeCell;
use kernel::{
    dma_fence::{
        driver::FenceContext,
        Fence,
        FenceAllocation,
        FenceContexts,
        FenceNames,
        Timeline, //
    },
    interrupt::LocalInterruptDisabled,
    new_condvar, new_spinlock_irq,
    prelude::*,
    ratelimit::RateLimit,
    sync::{
        aref::ARef,
        Arc,
        CondVar,
        SpinLockIrq,
        SpinLockIrqGuard, //
    },
    time::Jiffies,
    virtio::{
        virtqueue::{
            Buffer,
            Notify,
            Request,
            Sg,
            Virtqueue, //
        },
        Reset,
    },
};

/// How long a synchronous command may take, as in the C driver: 5 s.
pub(crate) const CALL_TIMEOUT_MS: u32 = 5000;

/// The largest answer a synchronous command can wait for: an EDID's, the largest the driver
/// asks for. (Capsets, with virgl, will need more.)
pub(crate) const ANSWER_MAX: usize = size_of::<protocol::RespEdid>();

/// What a synchronous command's waiter learns.
enum ReplyState {
    /// The device still has the command.
    Pending,
    /// The device answered: the number of bytes of [`Reply::answer`] it wrote (at most the
    /// room the command described).
    Answered(usize),
    /// The command was dropped unanswered (the device was reset).
    Cancelled,
}

/// A synchronous command's answer, and where the interrupt handler says it came: one allocation
/// for both (the command is the other; C's `vbuf` and response buffer are two too).
///
/// # Invariants
///
/// `room <= ANSWER_MAX`. `answer` is written only by the device, through the scatter-gather
/// list that [`Command::describe`] builds for the one command holding this reply, while that
/// command is in the queue; it is read only through an [`Answer`], which exists only once
/// `state` is [`ReplyState::Answered`], set after the command was taken back from the queue.
#[pin_data]
pub(crate) struct Reply {
    #[pin]
    state: SpinLockIrq<ReplyState>,
    #[pin]
    done: CondVar,
    /// How many bytes of `answer` the device may write.
    room: usize,
    answer: UnsafeCell<[u8; ANSWER_MAX]>,
}

// SAFETY: `state` and `done` are `Sync`; `answer` is written only through the command's
// scatter-gather list while the command is out (by the device, or by the DMA layer copying a
// bounce buffer back as the command is taken back), and read through shared references only
// after that (type invariant), so sharing a `Reply` between the waiter and the interrupt
// handler races on nothing.
unsafe impl Sync for Reply {}

impl Reply {
    /// A reply with room for `room` bytes (at most [`ANSWER_MAX`]).
    fn new(room: usize) -> impl PinInit<Self> {
        pin_init!(Self {
            state <- new_spinlock_irq!(ReplyState::Pending, "virtio_gpu_rs::Reply::state"),
            done <- new_condvar!("virtio_gpu_rs::Reply::done"),
            // INVARIANT: Clamped.
            room: core::cmp::min(room, ANSWER_MAX),
            // Zeroed: a device that claims more than it wrote gives zeroes, not old memory.
            answer: UnsafeCell::new([0; ANSWER_MAX]),
        })
    }

    /// The room of the answer buffer, for the device to write: a pointer, which only
    /// [`Command::describe`] turns into a reference (see there).
    fn room(&self) -> *mut [u8] {
        // In bounds: `room <= ANSWER_MAX` (type invariant).
        core::ptr::slice_from_raw_parts_mut(self.answer.get().cast::<u8>(), self.room)
    }

    /// Settles the reply (never twice) and wakes the waiter.
    fn settle(&self, state: &mut ReplyState, outcome: ReplyState) {
        if matches!(*state, ReplyState::Pending) {
            *state = outcome;
        }
        self.done.notify_all();
    }

    /// Tells the waiter the device wrote `len` bytes (it says; at most the room are kept), from
    /// the interrupt handler, once the command was taken back from the queue.
    fn answer(&self, len: usize, irq: &LocalInterruptDisabled) {
        let mut state = self.state.lock_with(irq);
        self.settle(
            &mut state,
            ReplyState::Answered(core::cmp::min(len, self.room)),
        );
    }

    /// Tells the waiter its command is gone unanswered.
    fn cancel(&self) {
        let mut state = self.state.lock();
        self.settle(&mut state, ReplyState::Cancelled);
    }
}

/// A synchronous command the device has (see [`Batch::start_call`]).
///
/// Dropping it unwaited is fine: the interrupt handler answers a reply nobody reads, and its
/// last reference frees it, from any context: `kmalloc`ed memory, and locks with no `Drop` and
/// static lock classes.
pub(crate) struct Call {
    reply: Arc<Reply>,
}

impl Call {
    /// Waits (uninterruptibly, at most [`CALL_TIMEOUT_MS`]) for the device's answer and returns
    /// the bytes it wrote.
    ///
    /// `ETIMEDOUT` if the device does not answer in time, `ENODEV` if it is removed meanwhile.
    pub(crate) fn wait(self) -> Result<Answer> {
        let mut left: Jiffies = kernel::time::msecs_to_jiffies(CALL_TIMEOUT_MS);
        let mut state = self.reply.state.lock();
        loop {
            match *state {
                ReplyState::Answered(len) => {
                    drop(state);
                    // INVARIANT: The state is `Answered`.
                    return Ok(Answer {
                        reply: self.reply,
                        len,
                    });
                }
                ReplyState::Cancelled => return Err(ENODEV),
                ReplyState::Pending => {}
            }
            if left == 0 {
                return Err(ETIMEDOUT);
            }
            left = self.reply.done.wait_timeout(&mut state, left);
        }
    }
}

/// The bytes the device wrote in answer to a synchronous command.
///
/// # Invariants
///
/// `reply` is [`ReplyState::Answered`] with `len` bytes (`len <= ANSWER_MAX`); once answered, a
/// reply never changes.
pub(crate) struct Answer {
    reply: Arc<Reply>,
    len: usize,
}

impl core::ops::Deref for Answer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: The reply is answered (type invariant): its command was taken back from the
        // queue, so the device writes `answer` no more, and nothing else ever does (type
        // invariant of `Reply`); `len` is in bounds.
        unsafe { (&*self.reply.answer.get()).get_unchecked(..self.len) }
    }
}

/// Commands given to the device together, as C batches them with `virtio_gpu_notify()`: each
/// is added to the queue at once, in order (other submitters' commands may come between them),
/// and the device is notified once, when the batch is dropped, if it wants to be. A
/// notification costs an exit to the host, and the host then answers a batch with one
/// interrupt rather than one per command.
///
/// The device may hear of a batch's commands earlier: when another submitter notifies it, or
/// when a submitter finds the queue full (it notifies the device before it sleeps, so that room
/// comes even while a batch is open). It never hears of them if the device is removed
/// meanwhile; the commands are then dropped unanswered. Drop a batch before waiting on any of
/// its [`Call`]s or fences: the device may not have been told of them.
///
/// `'q` is the borrow of the queue, `'bound` how long the device stays bound.
pub(crate) struct Batch<'q, 'bound> {
    queue: &'q CommandQueue<'bound>,
    /// Whether a command was added: an empty batch notifies nothing.
    pending: bool,
}

impl Batch<'_, '_> {
    /// Adds `cmd`. Sleeps while the queue is full (after notifying the device of what it was not
    /// told of yet).
    ///
    /// On failure the command is dropped, after the queue lock (its drop may sleep).
    pub(crate) fn submit(&mut self, cmd: KBox<Command>) -> Result {
        self.queue.add(cmd, Kick::Later)?;
        self.pending = true;
        Ok(())
    }

    /// Adds `cmd` as a fenced command; returns its fence, which signals once the device has
    /// answered. Sleeps while the queue is full.
    ///
    /// `fence` is the fence's memory, allocated ahead: nothing allocates a fence under the
    /// lock. The scatter-gather lists are built there, since the seqno is written into the
    /// command there; a small command's lists fit in the request (see `Request::new`), a long
    /// one's would be allocated with `GFP_ATOMIC`, so this is for commands without large data.
    /// On failure the command is dropped after the lock.
    pub(crate) fn submit_fenced(
        &mut self,
        cmd: KBox<Command>,
        fence: FenceAllocation<QueueFences>,
    ) -> Result<ARef<Fence>> {
        let fence = self.queue.add_fenced(cmd, fence)?;
        self.pending = true;
        Ok(fence)
    }

    /// Adds `cmd`, with room for a response of at most `resp_len` bytes: [`Call::wait`] gets
    /// the answer, once the batch is dropped.
    pub(crate) fn start_call(&mut self, cmd: Encoded, resp_len: usize) -> Result<Call> {
        let call = self.queue.start_call(cmd, resp_len, Kick::Later)?;
        self.pending = true;
        Ok(call)
    }
}

impl Drop for Batch<'_, '_> {
    fn drop(&mut self) {
        if self.pending {
            self.queue.notify();
        }
    }
}

/// When the device is told of an added command.
#[derive(Clone, Copy)]
enum Kick {
    /// Whether it needs a notification is decided in the critical section that adds the
    /// command, and the notification is sent after the lock: a lone command's one lock round
    /// trip.
    Now,
    /// Later, by a batch (or by a submitter that finds the queue full): the command is left
    /// marked as unnotified.
    Later,
}

/// Room for a command's response in the command: a header's worth (all that a command nobody
/// waits for gets back), a buffer, or none (a synchronous command's answer goes into its
/// [`Reply`]).
enum Response {
    Header([u8; size_of::<CtrlHdr>()]),
    Buffer(KVec<u8>),
    None,
}

impl Response {
    /// Room for `len` bytes; allocates unless it is a header's worth.
    fn new(len: usize) -> Result<Self> {
        if len == size_of::<CtrlHdr>() {
            return Ok(Self::Header([0; size_of::<CtrlHdr>()]));
        }
        Self::buffer(len)
    }

    /// Room for `len` bytes in a buffer, which a waiter can be handed.
    fn buffer(len: usize) -> Result<Self> {
        let mut resp = KVec::with_capacity(len, GFP_KERNEL)?;
        resp.resize(len, 0, GFP_KERNEL)?;
        Ok(Self::Buffer(resp))
    }

    /// The room in the command itself.
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Header(h) => h,
            Self::Buffer(b) => b,
            Self::None => &[],
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Self::Header(h) => h,
            Self::Buffer(b) => b,
            Self::None => &mut [],
        }
    }
}

/// A command buffer: what the device reads, room for what it writes, who waits for it and what
/// it keeps until the device has answered.
///
/// A command, its response header and what it keeps live inside it, so a command costs one
/// allocation (the box). Without `reclaim`, a command never sleeps when dropped: `kmalloc`ed
/// memory and an `Arc<Reply>`; the interrupt handler drops it. With `reclaim` (an object to
/// free, a reference to put, data that may be `vmalloc`ed), the handler passes the whole box on
/// to the reclaim work item, linked through `next`, without allocating.
pub(crate) struct Command {
    cmd: Encoded,
    /// What follows the command, if anything, when small (`kmalloc`ed).
    data: KVec<u8>,
    resp: Response,
    reply: Option<Arc<Reply>>,
    /// What to let go, in process context, once the device has answered: an object to free, a
    /// reference to an object, the data that follows the command; if any.
    reclaim: Option<Reclaimed>,
    /// The seqno of the command's fence, if it has one.
    fence: Option<u64>,
    /// The next command of the [`Commands`] this one is on. `None` while it is on none, so
    /// that dropping a command never drops a chain of others.
    next: Option<KBox<Command>>,
}

impl Command {
    /// A command of the bytes `cmd` with room for a response of `resp_len` bytes.
    pub(crate) fn new(cmd: Encoded, resp_len: usize) -> Result<KBox<Self>> {
        Self::boxed(cmd, Response::new(resp_len)?, KVec::new(), None)
    }

    /// Boxes a command with its parts in place (all but the reply, which a call sets after).
    fn boxed(
        cmd: Encoded,
        resp: Response,
        data: KVec<u8>,
        reclaim: Option<Reclaimed>,
    ) -> Result<KBox<Self>> {
        Ok(KBox::new(
            Self {
                cmd,
                data,
                resp,
                reply: None,
                reclaim,
                fence: None,
                next: None,
            },
            GFP_KERNEL,
        )?)
    }

    /// A command of the bytes `cmd` followed by `data`, with room for a response of `resp_len`
    /// bytes.
    pub(crate) fn with_data(cmd: Encoded, data: KVec<u8>, resp_len: usize) -> Result<KBox<Self>> {
        Self::boxed(cmd, Response::new(resp_len)?, data, None)
    }

    /// A command of the bytes `cmd`, followed by the data of `kept` if any, with room for a
    /// response of `resp_len` bytes.
    ///
    /// `kept` is let go (in process context) once the device has answered this command, or was
    /// reset before it did. If the queue refuses the command, an object it frees waits for the
    /// reset at unbind; if the command is dropped unsent, the object is leaked (see
    /// [`crate::reclaim`]).
    pub(crate) fn keeping(cmd: Encoded, kept: Reclaimed, resp_len: usize) -> Result<KBox<Self>> {
        Self::boxed(cmd, Response::new(resp_len)?, KVec::new(), Some(kept))
    }

    /// Makes this a fenced command of seqno `seqno`.
    fn set_fence(&mut self, seqno: u64) -> Result {
        protocol::set_fence(self.cmd.as_mut_slice(), seqno)?;
        self.fence = Some(seqno);
        Ok(())
    }

    /// Records that the device is done with this command: it answered, or it was reset.
    fn set_device_done(&mut self) {
        if let Some(kept) = &mut self.reclaim {
            kept.set_device_done();
        }
    }

    /// Whether dropping this command may sleep: then it is dropped in process context.
    fn keeps(&self) -> bool {
        self.reclaim.is_some()
    }
}

impl Buffer for Command {
    fn describe<'a>(&'a mut self, sg: &mut Sg<'a>) -> Result {
        sg.device_reads(self.cmd.as_slice())?;
        if !self.data.is_empty() {
            sg.device_reads(&self.data)?;
        }
        if let Some(data) = self.reclaim.as_ref().map(Reclaimed::data) {
            if !data.is_empty() {
                sg.device_reads(data)?;
            }
        }
        if let Some(reply) = &self.reply {
            // SAFETY: `room` points into `reply`, which this command keeps alive, and is in
            // bounds. Nothing else references the answer buffer while this borrow lasts: this
            // command, the only one holding the reply, is being described to be added (its
            // lists are built once, before the add), and the waiter reads the buffer only once
            // the reply is answered (type invariant of `Reply`).
            sg.device_writes(unsafe { &mut *reply.room() })?;
            return Ok(());
        }
        let resp = self.resp.bytes_mut();
        if !resp.is_empty() {
            sg.device_writes(resp)?;
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

/// Commands set aside, linked through their own `next` field: putting one on costs no
/// allocation, so the interrupt handler can. Last in, first out.
///
/// # Invariants
///
/// `head` and the `next` of every command on the stack link the commands put on and not yet
/// taken off. A command on no stack has no `next` ([`Commands::pop`] takes it), so dropping
/// one drops no other command.
pub(crate) struct Commands {
    head: Option<KBox<Command>>,
}

impl Commands {
    pub(crate) const fn new() -> Self {
        Self { head: None }
    }

    /// Puts `cmd` on.
    pub(crate) fn push(&mut self, mut cmd: KBox<Command>) {
        // A command on no stack has no `next`: nothing is dropped here (under the reclaim
        // lock, in the interrupt handler).
        kernel::warn_on!(cmd.next.is_some());
        // INVARIANT: `cmd` links the commands on the stack and is its new head.
        cmd.next = self.head.take();
        self.head = Some(cmd);
    }

    /// Takes the last command put on.
    pub(crate) fn pop(&mut self) -> Option<KBox<Command>> {
        let mut cmd = self.head.take()?;
        // INVARIANT: The rest is the stack; `cmd`, off it, has no `next`.
        self.head = cmd.next.take();
        Some(cmd)
    }
}

impl Drop for Commands {
    fn drop(&mut self) {
        // One at a time: dropping the head with its `next` chain would recurse once per command.
        while self.pop().is_some() {}
    }
}

/// The names of the driver's fences, as C names them.
pub(crate) struct QueueFences;

impl FenceNames for QueueFences {
    const DRIVER: &'static CStr = c"virtio_gpu";
    const TIMELINE: &'static CStr = c"controlq";
}

/// The state the queue lock protects.
struct QueueState<'bound> {
    vq: Virtqueue<'bound, Command>,
    /// Set at removal: submissions fail with `ENODEV` from then on.
    removed: bool,
    /// The seqno of the next fenced command (the first is 1, as in C).
    next_seqno: u64,
    /// Whether commands were added since the device was last considered for a notification.
    unnotified: bool,
    /// Unrefs the queue refused, with their objects: the host may still use the objects' memory
    /// until the device is reset, so they wait for it here. In practice only a broken queue
    /// refuses an unref (the transport breaks it just before the reset at removal, with
    /// hardened notifications): its lists fit in the request, the ring falls back to direct
    /// descriptors when it has no memory for indirect ones, and without the DMA API nothing is
    /// mapped.
    parked: Commands,
}

impl<'bound> QueueState<'bound> {
    /// Decides, after a command was added, whether the device is to be notified now.
    #[must_use = "the device is only notified by `Notify::notify`"]
    fn added(&mut self, kick: Kick) -> Option<Notify<'bound>> {
        match kick {
            Kick::Now => self.kick_prepare(),
            Kick::Later => {
                self.unnotified = true;
                None
            }
        }
    }

    /// Whether the device needs a notification for every command added so far. The answer
    /// covers them all, so none is left unnotified.
    #[must_use = "the device is only notified by `Notify::notify`"]
    fn kick_prepare(&mut self) -> Option<Notify<'bound>> {
        self.unnotified = false;
        self.vq.kick_prepare()
    }

    /// Keeps `cmd`, refused by the queue, until the device is reset if it frees an object;
    /// else gives it back.
    fn park(&mut self, cmd: KBox<Command>) -> Option<KBox<Command>> {
        if cmd.reclaim.as_ref().is_some_and(Reclaimed::frees_object) {
            self.parked.push(cmd);
            return None;
        }
        Some(cmd)
    }
}

/// A virtqueue of commands, shared by the submitters and the interrupt handler.
#[pin_data]
pub(crate) struct CommandQueue<'bound> {
    #[pin]
    inner: SpinLockIrq<QueueState<'bound>>,
    /// Submitters waiting for free descriptors.
    #[pin]
    space: CondVar,
    /// The fences of the fenced commands the device has not answered, in seqno order.
    #[pin]
    timeline: Timeline<QueueFences>,
    context: FenceContext<QueueFences>,
    /// The error answers logged, at most as many as `printk_ratelimited()` lets through.
    #[pin]
    errors: RateLimit,
}

impl<'bound> CommandQueue<'bound> {
    /// A command queue over `vq`, whose fences are of a new fence context.
    pub(crate) fn new(vq: Virtqueue<'bound, Command>) -> impl PinInit<Self, Error> {
        let context = FenceContexts::new(1).and_then(|c| c.context(0).ok_or(EINVAL));
        try_pin_init!(Self {
            inner <- new_spinlock_irq!(
                QueueState {
                    vq,
                    removed: false,
                    next_seqno: 1,
                    unnotified: false,
                    parked: Commands::new(),
                },
                "virtio_gpu_rs::CommandQueue::inner"
            ),
            space <- new_condvar!("virtio_gpu_rs::CommandQueue::space"),
            timeline <- Timeline::new(),
            context: context?,
            errors <- RateLimit::default(c"virtio_gpu_rs: error responses"),
        })
    }

    /// Starts a batch: commands added to it reach the device together (see [`Batch`]).
    #[must_use = "a batch notifies the device when it is dropped"]
    pub(crate) fn batch(&self) -> Batch<'_, 'bound> {
        Batch {
            queue: self,
            pending: false,
        }
    }

    /// Gives `cmd` to the device and notifies it if it wants to be. See [`Batch::submit`].
    pub(crate) fn submit(&self, cmd: KBox<Command>) -> Result {
        self.add(cmd, Kick::Now)
    }

    /// Sends `cmd`, waits (uninterruptibly, at most [`CALL_TIMEOUT_MS`]) for the response of at
    /// most `resp_len` bytes and returns the bytes the device wrote.
    ///
    /// `ETIMEDOUT` if the device does not answer in time, `ENODEV` if it is removed meanwhile.
    pub(crate) fn call(&self, cmd: Encoded, resp_len: usize) -> Result<Answer> {
        self.start_call(cmd, resp_len, Kick::Now)?.wait()
    }

    /// Adds `cmd`, with room for a response of at most `resp_len` bytes, for a [`Call`].
    /// `EINVAL` for room of more than [`ANSWER_MAX`].
    fn start_call(&self, cmd: Encoded, resp_len: usize, kick: Kick) -> Result<Call> {
        if resp_len > ANSWER_MAX {
            return Err(EINVAL);
        }
        let reply = Arc::pin_init(Reply::new(resp_len), GFP_KERNEL)?;
        let mut command = Command::boxed(cmd, Response::None, KVec::new(), None)?;
        command.reply = Some(reply.clone());
        self.add(command, kick)?;
        Ok(Call { reply })
    }

    /// Adds `cmd` as a fenced command of a batch; returns its fence. The device is told of it
    /// when the batch is dropped (or before a wait for room).
    fn add_fenced(
        &self,
        mut cmd: KBox<Command>,
        fence: FenceAllocation<QueueFences>,
    ) -> Result<ARef<Fence>> {
        let mut inner = self.inner.lock();
        let outcome = loop {
            if inner.removed {
                break Err((ENODEV, cmd));
            }
            let seqno = inner.next_seqno;
            if let Err(e) = cmd.set_fence(seqno) {
                break Err((e, cmd));
            }
            let request = match Request::try_new(cmd, GFP_ATOMIC) {
                Ok(r) => r,
                Err(refused) => break Err(refused),
            };
            match inner.vq.add(request, GFP_ATOMIC) {
                Ok(()) => {
                    inner.next_seqno += 1;
                    let fence = fence.init(self.context, seqno);
                    let shared = fence.shared();
                    // Queued before the device can answer: the interrupt handler, which takes
                    // the queue lock first, finds it. Seqnos grow in one context, so the push
                    // cannot be refused; were it, the dropped fence would signal `ECANCELED`.
                    kernel::warn_on!(self.timeline.push(fence).is_err());
                    break Ok((shared, inner.added(Kick::Later)));
                }
                Err(e) if e.error == ENOSPC && !inner.vq.is_idle() => {
                    cmd = e.request.into_buffer();
                    let (relocked, res) = self.wait_for_room(inner);
                    inner = relocked;
                    if let Err(e) = res {
                        break Err((e, cmd));
                    }
                }
                Err(e) => break Err((e.error, e.request.into_buffer())),
            }
        };
        finish(inner, outcome)
    }

    /// Adds `cmd`. The device is told of it as `kick` says (and before a wait for room).
    fn add(&self, cmd: KBox<Command>, kick: Kick) -> Result {
        let mut request = match Request::try_new(cmd, GFP_KERNEL) {
            Ok(request) => request,
            Err(refused) => {
                // Refused as the queue would refuse it: what it frees waits for the reset.
                return finish(self.inner.lock(), Err(refused));
            }
        };
        let mut inner = self.inner.lock();
        let outcome = loop {
            if inner.removed {
                // The device was reset: it will never see the command.
                break Err((ENODEV, request.into_buffer()));
            }
            match inner.vq.add(request, GFP_ATOMIC) {
                Ok(()) => break Ok(((), inner.added(kick))),
                // Full: wait for the device to use buffers. Unless it holds none, then this
                // one cannot fit even in an empty queue.
                Err(e) if e.error == ENOSPC && !inner.vq.is_idle() => {
                    request = e.request;
                    let (relocked, res) = self.wait_for_room(inner);
                    inner = relocked;
                    if let Err(e) = res {
                        break Err((e, request.into_buffer()));
                    }
                }
                Err(e) => break Err((e.error, e.request.into_buffer())),
            }
        };
        finish(inner, outcome)
    }

    /// Notifies the device of the commands added since it was last considered for a
    /// notification, if there are any and it wants to be (not once removed: the device was
    /// reset).
    fn notify(&self) {
        let notify = {
            let mut inner = self.inner.lock();
            if inner.removed || !inner.unnotified {
                return;
            }
            inner.kick_prepare()
        };
        if let Some(notify) = notify {
            // Nothing to do for a broken device here: removal drops the commands it holds.
            let _ = notify.notify();
        }
    }

    /// Gets room for a submitter that found the queue full (`inner` held). If the device was not
    /// told of every command it holds (a batch still open), it is notified, after the lock as
    /// C does, and the submitter retries: the room might otherwise never come. Else the
    /// submitter sleeps on `space` until the interrupt handler, or removal, wakes it. Returns
    /// the queue lock, held again.
    ///
    /// `EIO` if the notification finds the device broken: no room would come. (A device that
    /// breaks while the submitter sleeps is found at removal, which wakes it.)
    fn wait_for_room<'q>(
        &'q self,
        mut inner: SpinLockIrqGuard<'q, QueueState<'bound>>,
    ) -> (SpinLockIrqGuard<'q, QueueState<'bound>>, Result) {
        if inner.unnotified {
            if let Some(notify) = inner.kick_prepare() {
                drop(inner);
                let res = if notify.notify() { Ok(()) } else { Err(EIO) };
                return (self.inner.lock(), res);
            }
        }
        self.space.wait(&mut inner);
        (inner, Ok(()))
    }

    /// Completes every buffer the device used. Called from the virtqueue callback of `dev`'s
    /// device, and by fault injection when it lets held completions through (interrupts
    /// disabled, as `irq` proves).
    pub(crate) fn complete(&self, dev: &DrmDevice, irq: &LocalInterruptDisabled) {
        if dev.faults.holds_completions() {
            return;
        }
        let mut inner = self.inner.lock_with(irq);
        if inner.removed {
            // Shut down: the buffers were taken back (a late call, from fault injection).
            return;
        }
        let mut used = false;
        let mut signal_until = None;
        loop {
            inner.vq.disable_cb();
            while let Some((mut cmd, len)) = inner.vq.get_buf() {
                used = true;
                if cmd.fence.is_some() {
                    signal_until = core::cmp::max(signal_until, cmd.fence);
                }
                if let Some(reply) = cmd.reply.take() {
                    // `call` made the command; the device wrote at most the room described.
                    reply.answer(len as usize, irq);
                } else {
                    log_error_response(&cmd, len, &self.errors);
                }
                if cmd.keeps() {
                    cmd.set_device_done();
                    // Under the queue lock: see `reclaim::defer_with`.
                    reclaim::defer_with(dev, cmd, irq);
                }
                // Otherwise `cmd` is plain memory: freeing it here does not sleep.
            }
            if inner.vq.enable_cb() {
                break;
            }
        }
        drop(inner);
        if let Some(seqno) = signal_until {
            self.timeline.signal_until_with(seqno, irq);
        }
        if used {
            self.space.notify_all();
        }
    }

    /// Stops the queue at removal, after the device was reset (as `reset` proves): submissions
    /// fail from now on, every command the device held is dropped (its waiter gets `ENODEV`,
    /// its objects are freed), so are the objects parked by refused commands, and the
    /// submitters waiting for room are woken.
    pub(crate) fn shut_down(&self, reset: &Reset<'_>) -> Result {
        self.inner.lock().removed = true;
        let res = loop {
            // One at a time, each dropped after the lock: freeing an object may sleep.
            let cmd = self.inner.lock().vq.detach_unused(reset);
            match cmd {
                Ok(Some(mut cmd)) => cmd.set_device_done(),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        if res.is_ok() {
            // The device holds no command any more: no pending fence will be answered.
            self.timeline.cancel_all(ENODEV);
            // Nor any memory.
            loop {
                let parked = self.inner.lock().parked.pop();
                match parked {
                    Some(mut cmd) => cmd.set_device_done(),
                    None => break,
                }
            }
        }
        self.space.notify_all();
        res
    }
}

/// What an addition under the queue lock ended with: the submitter's result and the
/// notification to send, or the error with the refused command.
type Outcome<'bound, T> = core::result::Result<(T, Option<Notify<'bound>>), (Error, KBox<Command>)>;

/// Finishes an addition: parks a refused command that would free an object (while the lock is
/// still held, so that the shut-down finds it), then, after the lock, notifies the device if
/// it was decided, or drops the refused command, where its drop may sleep.
fn finish<'bound, T>(
    mut inner: SpinLockIrqGuard<'_, QueueState<'bound>>,
    outcome: Outcome<'bound, T>,
) -> Result<T> {
    match outcome {
        Ok((value, notify)) => {
            drop(inner);
            if let Some(notify) = notify {
                // The command is in the ring: should the device be broken, removal drops it.
                let _ = notify.notify();
            }
            Ok(value)
        }
        // Refused once the queue was shut down (also by a submitter that let the lock go to
        // notify): the device was reset, it is done with the command's memory, and the
        // shut-down already freed the parked.
        Err((error, mut cmd)) if inner.removed => {
            drop(inner);
            cmd.set_device_done();
            Err(error)
        }
        Err((error, cmd)) => {
            let refused = inner.park(cmd);
            drop(inner);
            drop(refused);
            Err(error)
        }
    }
}

/// Logs the device's error answer to a command nobody waits for, as C does (rate-limited): the
/// command is gone, nobody else would learn of it.
fn log_error_response(cmd: &Command, len: u32, limit: &RateLimit) {
    let resp = cmd.resp.bytes();
    let len = core::cmp::min(len as usize, resp.len());
    let Ok(hdr) = protocol::decode::<protocol::CtrlHdr>(resp.get(..len).unwrap_or(&[])) else {
        return;
    };
    if hdr.ty() < protocol::RESP_ERR_UNSPEC || !limit.allow() {
        return;
    }
    let ty = protocol::decode::<protocol::CtrlHdr>(cmd.cmd.as_slice()).map_or(0, |c| c.ty());
    pr_err!("response {:#x} (command {:#x})\n", hdr.ty(), ty);
}
