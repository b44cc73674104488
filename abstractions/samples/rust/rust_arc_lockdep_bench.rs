// SPDX-License-Identifier: GPL-2.0

//! Benchmark of `Arc` with and without `CONFIG_RUST_ARC_LOCKDEP`, and of
//! implicit lock class lookups. Prints `arc_bench: <case> ns=<n>` per case
//! (nanoseconds per operation, best of several rounds), then
//! `arc_bench: done`. `cargo xtask bench` loads it on the test kernel and on
//! the `arc-lockdep-off` variant and compares.
//!
//! Cases: `clone_drop` (clone and drop of an `Arc` that stays alive, nothing
//! held), `clone_drop_holding_lock` (the same with a spinlock held, so the
//! drop's lockdep acquisition is validated against it), `new_drop` (make an
//! `Arc` and drop the last reference), `class_lookup_repeat` (the implicit
//! class of one known location), `class_lookup_first` (the first lookup of
//! each of 256 new locations; one sample, so it needs a fine clock) and
//! `class_lookup_256_repeat` (those 256 again).

use core::panic::Location;
use kernel::{
    prelude::*,
    sync::{
        implicit_class::{caller_lock_class, class_at, Usage},
        Arc, SpinLock,
    },
    time::{Instant, Monotonic},
};

module! {
    type: ArcBench,
    name: "rust_arc_lockdep_bench",
    authors: ["virtgpu-rs developers"],
    description: "Arc lockdep tracking and implicit lock classes: ns per operation",
    license: "GPL",
}

const ROUNDS: usize = 5;
const ITERS: u32 = 100_000;

fn ns_since(start: &Instant<Monotonic>) -> i64 {
    start.elapsed().as_nanos()
}

/// Best of `ROUNDS` runs of `f`, which does `ops` operations; ns per operation.
fn best(ops: u32, mut f: impl FnMut() -> Result) -> Result<i64> {
    let mut best = i64::MAX;
    for _ in 0..ROUNDS {
        let start = Instant::<Monotonic>::now();
        f()?;
        best = best.min(ns_since(&start));
    }
    Ok(best.checked_div(i64::from(ops.max(1))).unwrap_or(0))
}

fn report(case: &str, ns: i64) {
    pr_info!("arc_bench: {} ns={}\n", case, ns);
}

/// 256 distinct source locations: each `loc!()` is its own call site.
fn new_sites() -> [&'static Location<'static>; 256] {
    macro_rules! loc {
        () => {
            Location::caller()
        };
    }
    [
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
        loc!(),
    ]
}

fn run() -> Result {
    let a = Arc::new(0u64, GFP_KERNEL)?;
    report(
        "clone_drop",
        best(ITERS, || {
            for _ in 0..ITERS {
                drop(core::hint::black_box(a.clone()));
            }
            Ok(())
        })?,
    );
    let lock = KBox::pin_init(SpinLock::new_implicit(0u32), GFP_KERNEL)?;
    report(
        "clone_drop_holding_lock",
        best(ITERS, || {
            let _g = lock.lock();
            for _ in 0..ITERS {
                drop(core::hint::black_box(a.clone()));
            }
            Ok(())
        })?,
    );
    let iters = ITERS / 10;
    report(
        "new_drop",
        best(iters, || {
            for i in 0..iters {
                drop(core::hint::black_box(Arc::new(u64::from(i), GFP_KERNEL)?));
            }
            Ok(())
        })?,
    );
    report(
        "class_lookup_repeat",
        best(ITERS, || {
            for _ in 0..ITERS {
                core::hint::black_box(caller_lock_class());
            }
            Ok(())
        })?,
    );
    let sites = new_sites();
    let start = Instant::<Monotonic>::now();
    for s in sites {
        core::hint::black_box(class_at(s, Usage::Lock));
    }
    report("class_lookup_first", ns_since(&start) / sites.len() as i64);
    let reps = 100;
    report(
        "class_lookup_256_repeat",
        best(reps * sites.len() as u32, || {
            for _ in 0..reps {
                for s in sites {
                    core::hint::black_box(class_at(s, Usage::Lock));
                }
            }
            Ok(())
        })?,
    );
    Ok(())
}

struct ArcBench;

impl kernel::Module for ArcBench {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        match run() {
            Ok(()) => pr_info!("arc_bench: done\n"),
            Err(e) => pr_err!("arc_bench: failed: {:?}\n", e),
        }
        Ok(ArcBench)
    }
}
