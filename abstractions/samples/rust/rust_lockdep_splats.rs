// SPDX-License-Identifier: GPL-2.0

//! Deliberately wrong locking, one case per load, for the expected-splat
//! boots of `cargo xtask test` (`kunit/splats.toml`).
//!
//! Each case is a pattern lockdep must report. The module runs the case
//! chosen with `case=<n>` at load time, between two markers that xtask
//! requires, `lockdep_splats: <name>: start` and `lockdep_splats: <name>:
//! done`, and xtask checks the report in between. Never load it on a kernel
//! you care about: every case makes lockdep fire (and lockdep then turns
//! itself off for the rest of the boot).

use kernel::{
    define_ww_class,
    interrupt::LocalInterruptDisabled,
    irq_work::{IrqWork, IrqWorkItem},
    new_mutex, new_spinlock, new_spinlock_irq,
    prelude::*,
    sync::{
        lock::ww_mutex::{AcquireCtx, Mutex},
        Arc, Completion, SpinLock, SpinLockIrq,
    },
    time::{delay::fsleep, Delta},
    workqueue,
};

module! {
    type: LockdepSplats,
    name: "rust_lockdep_splats",
    authors: ["virtgpu-rs developers"],
    description: "Wrong locking patterns that lockdep must report",
    license: "GPL",
    params: {
        case: u32 {
            default: 0,
            description: "The case to run (see the module documentation)",
        },
    },
}

define_ww_class!(SPLAT_WW);

/// locking-selftest's context-free lock inside a context: the task holds a
/// mutex of the class in an acquire context, then takes another mutex of the
/// same class without one. Lockdep reports recursive locking of the class's
/// mutex lock class. (It does not deadlock: the second mutex is free.)
fn ww_lock_without_ctx_inside_ctx() -> Result {
    let a = KBox::pin_init(Mutex::new(0u32, &SPLAT_WW), GFP_KERNEL)?;
    let b = KBox::pin_init(Mutex::new(0u32, &SPLAT_WW), GFP_KERNEL)?;
    let ctx = AcquireCtx::new(&SPLAT_WW)?;
    let ga = ctx.lock(&*a)?;
    let gb = b.lock();
    drop(gb);
    drop(ga);
    Ok(())
}

/// locking-selftest's two contexts in one task: a second acquire context of
/// the same class while the first is open. Lockdep reports recursive
/// locking of the class's acquire lock class.
fn ww_two_contexts_in_one_task() -> Result {
    let first = AcquireCtx::new(&SPLAT_WW)?;
    let second = AcquireCtx::new(&SPLAT_WW)?;
    drop(second);
    drop(first);
    Ok(())
}

type Lock = Arc<kernel::sync::Mutex<u32>>;

/// An object whose destructor takes a lock (`CONFIG_RUST_ARC_LOCKDEP`
/// cases). `entered` is completed just before the destructor locks.
struct TakesLock {
    lock: Lock,
    entered: Option<Arc<Completion>>,
}

impl Drop for TakesLock {
    fn drop(&mut self) {
        if let Some(c) = &self.entered {
            c.complete_all();
        }
        *self.lock.lock() += 1;
    }
}

/// Every `Arc<TakesLock>` is made here, so they share one lockdep class,
/// named after this line.
fn make(lock: &Lock, entered: Option<Arc<Completion>>) -> Result<Arc<TakesLock>> {
    Ok(Arc::new(
        TakesLock {
            lock: lock.clone(),
            entered,
        },
        GFP_KERNEL,
    )?)
}

/// Shows lockdep one last drop without any lock held, so that it records
/// that the destructor of the class takes `lock` (map -> lock).
fn teach_destructor(lock: &Lock) -> Result {
    drop(make(lock, None)?);
    Ok(())
}

/// (a) The last `Arc` is dropped while holding the lock its destructor
/// takes: a real deadlock. Lockdep reports it at the drop (lock -> map
/// closes the cycle with the map -> lock it learnt), before the destructor
/// blocks. The drop runs in a worker, which then stays blocked; the module
/// waits until the destructor is entered and gives the report a moment.
fn arc_last_drop_holding_its_lock() -> Result {
    let lock: Lock = Arc::pin_init(new_mutex!(0, "SPLAT_L"), GFP_KERNEL)?;
    teach_destructor(&lock)?;
    let entered = Arc::pin_init(Completion::new(), GFP_KERNEL)?;
    let obj = make(&lock, Some(entered.clone()))?;
    workqueue::system_dfl().try_spawn(GFP_KERNEL, move || {
        let g = lock.lock();
        drop(obj); // the last reference: the destructor deadlocks on `lock`
        drop(g);
    })?;
    entered.wait_for_completion();
    fsleep(Delta::from_millis(500));
    Ok(())
}

/// (b) The same drop, but of a reference that is NOT the last: nothing
/// deadlocks on this run, yet the pattern is the same bug. With
/// `CONFIG_RUST_ARC_LOCKDEP` lockdep reports it; without, it is silent (the
/// `arc-lockdep-off` variant boot shows that).
fn arc_non_last_drop_holding_its_lock() -> Result {
    let lock: Lock = Arc::pin_init(new_mutex!(0, "SPLAT_L"), GFP_KERNEL)?;
    teach_destructor(&lock)?;
    let obj = make(&lock, None)?;
    let extra = obj.clone();
    let g = lock.lock();
    drop(extra); // not the last reference
    drop(g);
    drop(obj);
    if *lock.lock() != 2 {
        return Err(EIO);
    }
    Ok(())
}

/// (c) An ordering inversion through a drop: elsewhere B is taken before
/// A; here A is held while dropping an `Arc` whose destructor takes B.
fn arc_drop_inverts_two_locks() -> Result {
    let a: Lock = Arc::pin_init(new_mutex!(0, "SPLAT_A"), GFP_KERNEL)?;
    let b: Lock = Arc::pin_init(new_mutex!(0, "SPLAT_B"), GFP_KERNEL)?;
    {
        let gb = b.lock();
        let ga = a.lock();
        drop(ga);
        drop(gb);
    }
    teach_destructor(&b)?;
    let obj = make(&b, None)?;
    let extra = obj.clone();
    let ga = a.lock();
    drop(extra); // not the last reference: A -> map -> B, against B -> A
    drop(ga);
    drop(obj);
    Ok(())
}

type IrqLock = Arc<SpinLockIrq<u32>>;

/// An object whose destructor takes an IRQ-safe lock.
struct TakesIrqLock(IrqLock);

impl Drop for TakesIrqLock {
    fn drop(&mut self) {
        *self.0.lock() += 1;
    }
}

/// Every `Arc<TakesIrqLock>` is made here: one lockdep class.
fn make_irq(lock: &IrqLock) -> Result<Arc<TakesIrqLock>> {
    Ok(Arc::new(TakesIrqLock(lock.clone()), GFP_KERNEL)?)
}

/// A virtqueue-like interrupt handler: takes `lock` with `lock_with` and
/// drops `obj` under it.
#[pin_data]
struct DropUnderLock {
    lock: IrqLock,
    #[pin]
    obj: SpinLockIrq<Option<Arc<TakesIrqLock>>>,
    #[pin]
    done: Completion,
}

impl IrqWorkItem for DropUnderLock {
    fn run(&self, irq: &LocalInterruptDisabled) {
        let obj = self.obj.lock_with(irq).take();
        let g = self.lock.lock_with(irq);
        drop(obj); // not the last reference
        drop(g);
        self.done.complete_all();
    }
}

/// (d) The interrupt path gone wrong: the destructor of an object takes the
/// IRQ-safe lock that the interrupt handler holds while dropping a reference
/// to such an object. On the run where that reference is the last, the
/// handler deadlocks on its own lock; lockdep must report it on a run where
/// it is not (the quiet twin, a non-last drop under a lock the destructor
/// does not take, is the KUnit case `non_last_drop_under_irq_lock_in_hard_irq`).
fn arc_destructor_takes_the_irq_lock() -> Result {
    let lock: IrqLock = Arc::pin_init(new_spinlock_irq!(0, "SPLAT_Q"), GFP_KERNEL)?;
    drop(make_irq(&lock)?); // teaches lockdep: map -> SPLAT_Q
    let obj = make_irq(&lock)?;
    let (queued, handler_lock) = (obj.clone(), lock.clone());
    let work = KBox::pin_init(
        IrqWork::new(pin_init!(DropUnderLock {
            lock: handler_lock,
            obj <- new_spinlock_irq!(Some(queued), "SPLAT_OBJ"),
            done <- Completion::new(),
        })),
        GFP_KERNEL,
    )?;
    work.queue();
    work.item().done.wait_for_completion();
    drop(obj);
    if *lock.lock() != 2 {
        return Err(EIO);
    }
    Ok(())
}

/// A list of `n` nodes of one class whose destructors drop the next node:
/// the last drop of the head nests `n` drops.
fn drop_nested_list(n: usize) -> Result {
    struct Node {
        _next: Option<Arc<Node>>,
    }
    let mut head = None;
    for _ in 0..n {
        head = Some(Arc::new(Node { _next: head }, GFP_KERNEL)?);
    }
    drop(head);
    Ok(())
}

/// (e) A deep nesting of drops does not turn lockdep off: drop a list of 50
/// nested `Arc`s of one class (more than lockdep's 48 held locks; this used
/// to print "BUG: MAX_LOCK_DEPTH too low!" and disable lockdep), then run
/// (b): its report must still appear.
fn arc_deep_drop_then_report() -> Result {
    drop_nested_list(50)?;
    arc_non_last_drop_holding_its_lock()
}

/// Names for the fences of case (f).
#[cfg(CONFIG_DMA_SHARED_BUFFER)]
struct SplatFences;

#[cfg(CONFIG_DMA_SHARED_BUFFER)]
impl kernel::dma_fence::FenceNames for SplatFences {
    const DRIVER: &'static CStr = kernel::c_str!("rust_lockdep_splats");
    const TIMELINE: &'static CStr = kernel::c_str!("splat");
}

/// (f) A lock taken on a fence signalling path and held elsewhere while
/// waiting for a fence: the waiter can keep the signaller from signalling
/// the fence it waits for. The signalling annotations make lockdep see it
/// (`dma_fence_map` -> SPLAT_F in the section, SPLAT_F -> `dma_fence_map`
/// at the wait), although the wait here times out and nothing deadlocks.
fn fence_lock_in_signalling_path_held_while_waiting() -> Result {
    #[cfg(CONFIG_DMA_SHARED_BUFFER)]
    {
        use kernel::dma_fence::{FenceAllocation, FenceContexts, SignallingSection};
        let l = KBox::pin_init(new_mutex!(0u32, "SPLAT_F"), GFP_KERNEL)?;
        let contexts = FenceContexts::<SplatFences>::new(1)?;
        let fence = FenceAllocation::new(GFP_KERNEL)?.init(contexts.context(0).ok_or(EINVAL)?, 1);
        {
            let g = l.lock();
            let _ = fence.fence().wait_timeout(false, Delta::from_millis(1))?;
            drop(g);
        }
        let section = SignallingSection::begin();
        *l.lock() += 1;
        drop(section);
        fence.signal();
        Ok(())
    }
    #[cfg(not(CONFIG_DMA_SHARED_BUFFER))]
    Err(ENODEV)
}

/// The interrupt handler of case (g): takes its state's lock, a plain
/// `SpinLock`, as if nothing else could interrupt a holder.
#[pin_data]
struct PlainLockHandler {
    #[pin]
    state: SpinLock<u32>,
    #[pin]
    done: Completion,
}

impl IrqWorkItem for PlainLockHandler {
    fn run(&self, _irq: &LocalInterruptDisabled) {
        *self.state.lock() += 1;
        self.done.complete_all();
    }
}

/// (g) The interrupt pattern done wrong (`PATTERNS.md`): state shared with
/// an interrupt handler behind a plain `SpinLock`. Process context takes it
/// with interrupts on, so the handler can interrupt a holder on the same CPU
/// and spin on the lock forever. Lockdep reports the inconsistent use the
/// first time it sees both (here nothing deadlocks: the holder is done
/// before the handler runs). The right shape is the driver's: a
/// `SpinLockIrq`, `lock()` in process context, `lock_with(irq)` in the
/// handler (the KUnit case `non_last_drop_under_irq_lock_in_hard_irq` is the
/// quiet twin).
fn irq_state_behind_plain_spinlock() -> Result {
    let work = KBox::pin_init(
        IrqWork::new(pin_init!(PlainLockHandler {
            state <- new_spinlock!(0, "SPLAT_PLAIN"),
            done <- Completion::new(),
        })),
        GFP_KERNEL,
    )?;
    *work.item().state.lock() += 1; // process context, interrupts on
    work.queue();
    work.item().done.wait_for_completion();
    if *work.item().state.lock() != 2 {
        return Err(EIO);
    }
    Ok(())
}

/// A case: its name (in the markers) and what it runs.
type Case = (&'static str, fn() -> Result);

/// The cases, numbered from 1 in this order (the `case=` parameter).
const CASES: &[Case] = &[
    (
        "ww_lock_without_ctx_inside_ctx",
        ww_lock_without_ctx_inside_ctx,
    ),
    ("ww_two_contexts_in_one_task", ww_two_contexts_in_one_task),
    (
        "arc_last_drop_holding_its_lock",
        arc_last_drop_holding_its_lock,
    ),
    (
        "arc_non_last_drop_holding_its_lock",
        arc_non_last_drop_holding_its_lock,
    ),
    ("arc_drop_inverts_two_locks", arc_drop_inverts_two_locks),
    (
        "arc_destructor_takes_the_irq_lock",
        arc_destructor_takes_the_irq_lock,
    ),
    ("arc_deep_drop_then_report", arc_deep_drop_then_report),
    (
        "fence_lock_in_signalling_path_held_while_waiting",
        fence_lock_in_signalling_path_held_while_waiting,
    ),
    (
        "irq_state_behind_plain_spinlock",
        irq_state_behind_plain_spinlock,
    ),
];

struct LockdepSplats;

impl kernel::Module for LockdepSplats {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let n = module_parameters::case.value();
        let Some((name, run)) = (n as usize).checked_sub(1).and_then(|i| CASES.get(i)) else {
            pr_err!("lockdep_splats: no case {} (1 to {})\n", n, CASES.len());
            return Err(EINVAL);
        };
        pr_info!("lockdep_splats: {}: start\n", name);
        run()?;
        pr_info!("lockdep_splats: {}: done\n", name);
        Ok(LockdepSplats)
    }
}
