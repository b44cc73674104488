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
    define_ww_class, new_mutex,
    prelude::*,
    sync::{
        lock::ww_mutex::{AcquireCtx, Mutex},
        Arc, Completion,
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
    workqueue::system_unbound().try_spawn(GFP_KERNEL, move || {
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
