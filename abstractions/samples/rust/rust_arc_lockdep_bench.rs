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
//! `Arc` and drop the last reference), `lockdep_pair` and
//! `lockdep_pair_holding_lock` (the floor: one lockdep acquire and release
//! of a map, as a spinlock does them, with nothing or that spinlock held;
//! what lockdep adds to a lock/unlock pair), `class_lookup_repeat` (the implicit
//! class of one known location), `class_lookup_first` (the first lookup of
//! each of 256 new locations; one sample, so it needs a fine clock) and
//! `class_lookup_256_repeat` (those 256 again).

use core::panic::Location;
#[cfg(CONFIG_LOCKDEP)]
use kernel::{bindings, str::CStrExt, types::Opaque};
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
    #[cfg(CONFIG_LOCKDEP)]
    floor(&lock)?;
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
                // SAFETY: The class is only looked up, never used.
                core::hint::black_box(unsafe { caller_lock_class() });
            }
            Ok(())
        })?,
    );
    let sites = new_sites();
    let start = Instant::<Monotonic>::now();
    for s in sites {
        // SAFETY: The class is only looked up, never used.
        core::hint::black_box(unsafe { class_at(s, Usage::Lock) });
    }
    report("class_lookup_first", ns_since(&start) / sites.len() as i64);
    let reps = 100;
    report(
        "class_lookup_256_repeat",
        best(reps * sites.len() as u32, || {
            for _ in 0..reps {
                for s in sites {
                    // SAFETY: As above.
                    core::hint::black_box(unsafe { class_at(s, Usage::Lock) });
                }
            }
            Ok(())
        })?,
    );
    Ok(())
}

/// A lockdep map of its own class, acquired and released as a spinlock's.
#[cfg(CONFIG_LOCKDEP)]
#[pin_data]
struct Map {
    #[pin]
    map: Opaque<bindings::lockdep_map>,
}

#[cfg(CONFIG_LOCKDEP)]
impl Map {
    fn new() -> impl PinInit<Self> {
        let key = kernel::static_lock_class!();
        pin_init!(Self {
            // SAFETY: `slot` is valid for writes; the name and key are static.
            map <- Opaque::ffi_init(|slot| unsafe {
                bindings::lockdep_init_map_type(
                    slot,
                    c"arc_bench_floor".as_char_ptr(),
                    key.as_ptr(),
                    0,
                    bindings::lockdep_wait_type_LD_WAIT_SPIN as u8,
                    bindings::lockdep_wait_type_LD_WAIT_INV as u8,
                    bindings::lockdep_lock_type_LD_LOCK_NORMAL as u8,
                )
            }),
        })
    }

    fn pair(&self) {
        // SAFETY: the map is initialised; acquired and released at once, as
        // `spin_acquire`/`spin_release` do.
        unsafe {
            bindings::lock_acquire(self.map.get(), 0, 0, 0, 1, core::ptr::null_mut(), 0);
            bindings::lock_release(self.map.get(), 0);
        }
    }
}

/// The floor: one lockdep-tracked acquire and release.
#[cfg(CONFIG_LOCKDEP)]
fn floor(lock: &SpinLock<u32>) -> Result {
    let map = KBox::pin_init(Map::new(), GFP_KERNEL)?;
    report(
        "lockdep_pair",
        best(ITERS, || {
            for _ in 0..ITERS {
                map.pair();
            }
            Ok(())
        })?,
    );
    report(
        "lockdep_pair_holding_lock",
        best(ITERS, || {
            let _g = lock.lock();
            for _ in 0..ITERS {
                map.pair();
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
