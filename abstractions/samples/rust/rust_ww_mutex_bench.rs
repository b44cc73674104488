// SPDX-License-Identifier: GPL-2.0

//! Benchmark of the Rust ww_mutex API against the same loops written in C
//! (`ww_mutex_bench_c`), on the same mutexes, in the same boot.
//!
//! For each case it runs several rounds, alternating Rust and C, and prints
//! the best round of each as nanoseconds per operation:
//!
//! `ww_bench: <case> rust_ns=<n> c_ns=<n>`
//!
//! Cases: `lock_unlock` (one mutex, one context, uncontended), `lock_all_<n>`
//! (lock all of `n` mutexes with back-off, then unlock; uncontended) and
//! `lock_all_<n>_contended` (the same by two workers at once, time per
//! lock-all).

use core::ffi::c_void;
use kernel::{
    define_ww_class,
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Full, Relaxed, Release},
        lock::ww_mutex::{AcquireCtx, LockSet, Lockable, Mutex},
        Arc, Completion,
    },
    time::{Instant, Monotonic},
    workqueue,
};

module! {
    type: WwBench,
    name: "rust_ww_mutex_bench",
    authors: ["virtgpu-rs developers"],
    description: "Rust ww_mutex API versus C: ns per operation",
    license: "GPL",
}

// The C side (ww_mutex_bench_c.h). The structs are passed as `c_void`:
// `ww_mutex` embeds types that are opaque to the FFI-safety lint.
extern "C" {
    fn ww_bench_c_lock_unlock(lock: *mut c_void, class: *mut c_void, iters: u32) -> i64;
    fn ww_bench_c_lock_all(locks: *mut *mut c_void, n: u32, class: *mut c_void, iters: u32) -> i64;
}

define_ww_class!(BENCH);

const ROUNDS: usize = 5;
const MAX_LOCKS: usize = 256;

type Locks = Arc<KVec<Pin<KBox<Mutex<'static, ()>>>>>;

fn elapsed_ns(start: &Instant<Monotonic>) -> i64 {
    start.elapsed().as_nanos()
}

/// `iters` lock-alls of the first `n` mutexes in Rust, each a transaction of
/// one reused [`LockSet`] (made, like C's bookkeeping array, before the
/// clock starts); elapsed ns.
fn rust_lock_all_loop(locks: &Locks, n: usize, iters: u32) -> Result<i64> {
    let mut set = LockSet::with_capacity(&BENCH, n)?;
    let start = Instant::<Monotonic>::now();
    for _ in 0..iters {
        set.run(
            |set| {
                for m in locks.iter().take(n) {
                    set.lock(&**m)?;
                }
                Ok(())
            },
            |_| Ok(()),
        )?;
    }
    Ok(elapsed_ns(&start))
}

/// `iters` lock-alls in C; elapsed ns.
fn c_lock_all_loop(locks: &Locks, n: usize, iters: u32) -> Result<i64> {
    let mut ptrs = KVec::with_capacity(n, GFP_KERNEL)?;
    for m in locks.iter().take(n) {
        ptrs.push(m.as_raw().cast::<c_void>(), GFP_KERNEL)?;
    }
    // SAFETY: `ptrs` holds `n` initialised mutexes of `BENCH`, alive for the call.
    let ns =
        unsafe { ww_bench_c_lock_all(ptrs.as_mut_ptr(), n as u32, BENCH.as_raw().cast(), iters) };
    if ns < 0 {
        return Err(Error::from_errno(ns as i32));
    }
    Ok(ns)
}

fn lock_unlock(locks: &Locks, iters: u32) -> Result<(i64, i64)> {
    let m = &*locks[0];
    let ctx = AcquireCtx::new(&BENCH)?;
    let start = Instant::<Monotonic>::now();
    for _ in 0..iters {
        drop(ctx.lock(m)?);
    }
    let rust = elapsed_ns(&start);
    drop(ctx);
    // SAFETY: `m` is an initialised mutex of `BENCH`, not held by this task.
    let c = unsafe { ww_bench_c_lock_unlock(m.as_raw().cast(), BENCH.as_raw().cast(), iters) };
    if c < 0 {
        return Err(Error::from_errno(c as i32));
    }
    Ok((rust, c))
}

/// Two workers run `iters` lock-alls each at the same time; returns the
/// slower worker's elapsed ns.
fn contended(locks: &Locks, n: usize, iters: u32, use_c: bool) -> Result<i64> {
    let ready = Arc::new(Atomic::<i32>::new(0), GFP_KERNEL)?;
    let worst = Arc::new(Atomic::<i64>::new(0), GFP_KERNEL)?;
    let failed = Arc::new(Atomic::<i32>::new(0), GFP_KERNEL)?;
    let mut done = KVec::new();
    for _ in 0..2 {
        let c = Arc::pin_init(Completion::new(), GFP_KERNEL)?;
        let (l, r, w, f, cc) = (
            locks.clone(),
            ready.clone(),
            worst.clone(),
            failed.clone(),
            c.clone(),
        );
        workqueue::system_dfl().try_spawn(GFP_KERNEL, move || {
            r.fetch_add(1, Full);
            while r.load(Acquire) < 2 {
                core::hint::spin_loop();
            }
            let res = if use_c {
                c_lock_all_loop(&l, n, iters)
            } else {
                rust_lock_all_loop(&l, n, iters)
            };
            match res {
                Ok(ns) => {
                    let mut cur = w.load(Relaxed);
                    while ns > cur {
                        match w.cmpxchg(cur, ns, Full) {
                            Ok(_) => break,
                            Err(v) => cur = v,
                        }
                    }
                }
                Err(_) => f.store(1, Release),
            }
            cc.complete_all();
        })?;
        done.push(c, GFP_KERNEL)?;
    }
    for c in done.iter() {
        c.wait_for_completion();
    }
    if failed.load(Relaxed) != 0 {
        return Err(EIO);
    }
    Ok(worst.load(Relaxed))
}

fn report(case: &CStr, rust: i64, c: i64, ops: u32) {
    let ops = i64::from(ops.max(1));
    // `checked_div`: no overflow panic path (which objtool cannot follow).
    let (r, c) = (
        rust.checked_div(ops).unwrap_or(0),
        c.checked_div(ops).unwrap_or(0),
    );
    pr_info!("ww_bench: {} rust_ns={} c_ns={}\n", case, r, c);
}

fn run() -> Result {
    let mut v = KVec::with_capacity(MAX_LOCKS, GFP_KERNEL)?;
    for _ in 0..MAX_LOCKS {
        v.push(
            KBox::pin_init(Mutex::new((), &BENCH), GFP_KERNEL)?,
            GFP_KERNEL,
        )?;
    }
    let locks: Locks = Arc::new(v, GFP_KERNEL)?;

    // The guest clock may be jiffies-based (4 ms): each measurement runs for
    // hundreds of milliseconds.
    let iters = 200_000;
    let (mut rust, mut c) = (i64::MAX, i64::MAX);
    for _ in 0..ROUNDS {
        let (r, cc) = lock_unlock(&locks, iters)?;
        rust = rust.min(r);
        c = c.min(cc);
    }
    report(c"lock_unlock", rust, c, iters);

    // 65536 lock operations per case; the divisions are constant (a division by the variable
    // `n` would have a panic path, which objtool cannot follow with every rustc).
    for (n, iters, name, cname) in [
        (16, 65536 / 16, c"lock_all_16", c"lock_all_16_contended"),
        (64, 65536 / 64, c"lock_all_64", c"lock_all_64_contended"),
        (256, 65536 / 256, c"lock_all_256", c"lock_all_256_contended"),
    ] {
        let (mut rust, mut c) = (i64::MAX, i64::MAX);
        for _ in 0..ROUNDS {
            rust = rust.min(rust_lock_all_loop(&locks, n, iters)?);
            c = c.min(c_lock_all_loop(&locks, n, iters)?);
        }
        report(name, rust, c, iters);

        let (mut rust, mut c) = (i64::MAX, i64::MAX);
        for _ in 0..ROUNDS {
            rust = rust.min(contended(&locks, n, iters, false)?);
            c = c.min(contended(&locks, n, iters, true)?);
        }
        report(cname, rust, c, iters);
    }
    Ok(())
}

struct WwBench;

impl kernel::Module for WwBench {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let start = Instant::<Monotonic>::now();
        match run() {
            Ok(()) => pr_info!("ww_bench: done in {} ms\n", elapsed_ns(&start) / 1_000_000),
            Err(e) => pr_err!("ww_bench: failed: {:?}\n", e),
        }
        Ok(WwBench)
    }
}
