// SPDX-License-Identifier: GPL-2.0

//! Benchmark of the Rust `dma_fence` and `dma_resv` APIs against the same
//! loops written in C (`dma_fence_bench_c`), in the same boot, on the same
//! reservation objects.
//!
//! Each case runs several rounds, alternating Rust and C, and prints the
//! best round of each as nanoseconds per operation:
//!
//! `fence_bench: <case> rust_ns=<n> c_ns=<n>`
//!
//! Cases: `fence_signal` (make a fence, signal it, release it),
//! `fence_callback` (the same with a callback registered before the signal)
//! and `resv_job_<n>` (one execbuffer-style job over `n` reservation
//! objects: lock them all with back-off, reserve a slot on each, add the
//! job's fence, unlock).

use core::ffi::c_void;
use kernel::{
    c_str,
    dma_fence::{Fence, FenceAllocation, FenceCallback, FenceCb, FenceContexts, FenceNames},
    dma_resv::{OwnedResv, Usage},
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        lock::ww_mutex::{Class, LockSet},
    },
    time::{Instant, Monotonic},
};

module! {
    type: FenceBench,
    name: "rust_dma_fence_bench",
    authors: ["virtgpu-rs developers"],
    description: "Rust dma_fence and dma_resv APIs versus C: ns per operation",
    license: "GPL",
}

// The C side (dma_fence_bench_c.h); the structs are passed as `c_void`.
extern "C" {
    fn fence_bench_c_signal(context: u64, iters: u32) -> i64;
    fn fence_bench_c_callback(context: u64, iters: u32, calls: *mut c_void) -> i64;
    fn fence_bench_c_resv_lock_all(
        resvs: *mut *mut c_void,
        n: u32,
        fence: *mut c_void,
        iters: u32,
    ) -> i64;
}

const ROUNDS: usize = 5;

struct Names;
impl FenceNames for Names {
    const DRIVER: &'static CStr = c_str!("rust_dma_fence_bench");
    const TIMELINE: &'static CStr = c_str!("bench");
}

type Contexts = FenceContexts<Names>;

fn elapsed_ns(start: &Instant<Monotonic>) -> i64 {
    start.elapsed().as_nanos()
}

fn c_result(ns: i64) -> Result<i64> {
    if ns < 0 {
        return Err(Error::from_errno(i32::try_from(ns).unwrap_or(-22)));
    }
    Ok(ns)
}

fn rust_signal(c: &Contexts, iters: u32) -> Result<i64> {
    let ctx = c.context(0).ok_or(EINVAL)?;
    let start = Instant::<Monotonic>::now();
    for i in 0..iters {
        FenceAllocation::new(GFP_KERNEL)?
            .init(ctx, u64::from(i) + 1)
            .signal();
    }
    Ok(elapsed_ns(&start))
}

/// Callbacks run by the Rust loop (the C loop counts in its own `atomic_t`).
static RUST_CALLS: Atomic<u32> = Atomic::new(0);

/// Counts its calls, as the C callback does.
struct Count;

impl FenceCallback for Count {
    fn signalled(self, _fence: &Fence) {
        RUST_CALLS.fetch_add(1, Relaxed);
    }
}

fn rust_callback(c: &Contexts, iters: u32) -> Result<i64> {
    let ctx = c.context(0).ok_or(EINVAL)?;
    let start = Instant::<Monotonic>::now();
    for i in 0..iters {
        let fence = FenceAllocation::new(GFP_KERNEL)?.init(ctx, u64::from(i) + 1);
        let cb = FenceCb::new(Count, GFP_KERNEL)?;
        // Unsignalled: the callback is registered.
        let _ = fence.fence().add_callback(cb);
        fence.signal();
    }
    Ok(elapsed_ns(&start))
}

type Resvs = KVec<Pin<KBox<OwnedResv>>>;

fn rust_jobs(resvs: &Resvs, n: usize, fence: &Fence, iters: u32) -> Result<i64> {
    let mut set = LockSet::with_capacity(Class::reservation(), n)?;
    let start = Instant::<Monotonic>::now();
    for _ in 0..iters {
        set.run(
            |set| resvs.iter().take(n).try_for_each(|r| set.lock(&***r)),
            |set| {
                for r in resvs.iter().take(n) {
                    set.with_locked_ref(&***r, |l| -> Result {
                        l.reserve_fences(1)?.add(fence, Usage::Write)
                    })??;
                }
                Ok(())
            },
        )?;
    }
    Ok(elapsed_ns(&start))
}

fn c_jobs(resvs: &Resvs, n: usize, fence: &Fence, iters: u32) -> Result<i64> {
    let mut ptrs = KVec::with_capacity(n, GFP_KERNEL)?;
    for r in resvs.iter().take(n) {
        ptrs.push(r.as_raw().cast::<c_void>(), GFP_KERNEL)?;
    }
    // SAFETY: `ptrs` holds `n` initialised reservation objects, alive and
    // unlocked for the call; `fence` is a live fence.
    c_result(unsafe {
        fence_bench_c_resv_lock_all(ptrs.as_mut_ptr(), n as u32, fence.as_raw().cast(), iters)
    })
}

fn report(case: &CStr, rust: i64, c: i64, ops: u32) {
    let ops = i64::from(ops.max(1));
    let (r, c) = (
        rust.checked_div(ops).unwrap_or(0),
        c.checked_div(ops).unwrap_or(0),
    );
    pr_info!("fence_bench: {} rust_ns={} c_ns={}\n", case, r, c);
}

/// Best of `ROUNDS` of each side, alternating.
fn best(
    mut rust: impl FnMut() -> Result<i64>,
    mut c: impl FnMut() -> Result<i64>,
) -> Result<(i64, i64)> {
    let (mut r, mut cc) = (i64::MAX, i64::MAX);
    for _ in 0..ROUNDS {
        r = r.min(rust()?);
        cc = cc.min(c()?);
    }
    Ok((r, cc))
}

fn run() -> Result {
    let contexts = Contexts::new(1)?;
    let context = contexts.context(0).ok_or(EINVAL)?.id();
    let iters = 20_000;

    let (r, c) = best(
        || rust_signal(&contexts, iters),
        // SAFETY: Plain loop over fences it makes itself.
        || c_result(unsafe { fence_bench_c_signal(context, iters) }),
    )?;
    report(c"fence_signal", r, c, iters);

    let c_calls = Atomic::new(0u32);
    let (r, c) = best(
        || rust_callback(&contexts, iters),
        // SAFETY: `c_calls` has the layout of an `atomic_t` and outlives the
        // call; the C callbacks run before it returns.
        || c_result(unsafe { fence_bench_c_callback(context, iters, c_calls.as_ptr().cast()) }),
    )?;
    let (rust_calls, c_calls) = (RUST_CALLS.load(Relaxed), c_calls.load(Relaxed));
    if rust_calls != c_calls || rust_calls != iters * ROUNDS as u32 {
        pr_err!(
            "fence_bench: callbacks ran {} (Rust) and {} (C) times\n",
            rust_calls,
            c_calls
        );
        return Err(EIO);
    }
    report(c"fence_callback", r, c, iters);

    let mut resvs = KVec::with_capacity(64, GFP_KERNEL)?;
    for _ in 0..64 {
        resvs.push(KBox::pin_init(OwnedResv::new(), GFP_KERNEL)?, GFP_KERNEL)?;
    }
    let job = FenceAllocation::new(GFP_KERNEL)?.init(contexts.context(0).ok_or(EINVAL)?, 1);
    // 32768 reservations per case, by constant divisions (see the ww_mutex benchmark).
    for (n, iters, name) in [
        (16, 32768 / 16, c"resv_job_16"),
        (64, 32768 / 64, c"resv_job_64"),
    ] {
        let (r, c) = best(
            || rust_jobs(&resvs, n, job.fence(), iters),
            || c_jobs(&resvs, n, job.fence(), iters),
        )?;
        report(name, r, c, iters);
    }
    job.signal();
    Ok(())
}

struct FenceBench;

impl kernel::Module for FenceBench {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let start = Instant::<Monotonic>::now();
        match run() {
            Ok(()) => pr_info!(
                "fence_bench: done in {} ms\n",
                elapsed_ns(&start) / 1_000_000
            ),
            Err(e) => pr_err!("fence_bench: failed: {:?}\n", e),
        }
        Ok(FenceBench)
    }
}
