// SPDX-License-Identifier: GPL-2.0

//! Benchmark of a `SpinLockIrq` taken in hard-IRQ context, as a virtqueue
//! callback takes its queue's lock: `lock_with` (given the handler's proof
//! that interrupts are off) against `lock` (which saves, disables and
//! restores the interrupt state once more).
//!
//! Each round is one `irq_work`, so it runs in hard-IRQ context, and times
//! both cases in blocks that take turns (so that a slow spell of the host,
//! TCG's vCPU thread preempted, hits both cases alike), in an order that
//! alternates from block to block and from round to round. Prints `irqlock_bench: <case> ns=<n>` (ns per
//! lock and unlock pair, best of the rounds, to a tenth of a ns), then
//! `irqlock_bench: rounds won=<k> of=<n>` (the rounds in which `lock_with`
//! was faster) and `irqlock_bench: done`; `cargo xtask bench` reads them.

use kernel::{
    interrupt::LocalInterruptDisabled,
    irq_work::{IrqWork, IrqWorkItem},
    new_spinlock_irq,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Completion, SpinLockIrq,
    },
    time::{Instant, Monotonic},
};

module! {
    type: IrqLockBench,
    name: "rust_irq_lock_bench",
    authors: ["virtgpu-rs developers"],
    description: "SpinLockIrq in hard IRQ: lock_with against lock, ns per pair",
    license: "GPL",
}

const ROUNDS: usize = 10;
/// Blocks per case and round, taking turns with the other case's.
const BLOCKS: usize = 10;
/// Lock and unlock pairs per block.
const BLOCK_ITERS: i64 = 1_000;
/// Lock and unlock pairs per case and round: short enough for one interrupt.
const ITERS: i64 = BLOCKS as i64 * BLOCK_ITERS;

/// One round, run in hard-IRQ context: the time of `ITERS` pairs of each case.
#[pin_data]
struct Round {
    #[pin]
    lock: SpinLockIrq<u64>,
    /// Whether `lock_with` is timed before `lock` in this round.
    with_first: bool,
    with_ns: Atomic<i64>,
    plain_ns: Atomic<i64>,
    #[pin]
    done: Completion,
}

impl Round {
    /// The time of `BLOCK_ITERS` pairs taken with `lock_with`.
    fn time_with(&self, irq: &LocalInterruptDisabled) -> i64 {
        let start = Instant::<Monotonic>::now();
        for _ in 0..BLOCK_ITERS {
            *self.lock.lock_with(irq) += 1;
        }
        start.elapsed().as_nanos()
    }

    /// The time of `BLOCK_ITERS` pairs taken with `lock`.
    fn time_plain(&self) -> i64 {
        let start = Instant::<Monotonic>::now();
        for _ in 0..BLOCK_ITERS {
            *self.lock.lock() += 1;
        }
        start.elapsed().as_nanos()
    }
}

impl IrqWorkItem for Round {
    fn run(&self, irq: &LocalInterruptDisabled) {
        // Either case may gain from going second (warm caches), so the order alternates.
        let (mut with, mut plain) = (0, 0);
        for block in 0..BLOCKS {
            if self.with_first == (block % 2 == 0) {
                with += self.time_with(irq);
                plain += self.time_plain();
            } else {
                plain += self.time_plain();
                with += self.time_with(irq);
            }
        }
        self.with_ns.store(with, Relaxed);
        self.plain_ns.store(plain, Relaxed);
        self.done.complete_all();
    }
}

/// Prints `ns`, the time of `ITERS` pairs, per pair with one decimal.
fn report(case: &str, ns: i64) {
    let tenths = ns * 10 / ITERS;
    pr_info!(
        "irqlock_bench: {} ns={}.{}\n",
        case,
        tenths / 10,
        tenths % 10
    );
}

struct IrqLockBench;

impl kernel::Module for IrqLockBench {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let (mut with, mut plain) = (i64::MAX, i64::MAX);
        let mut with_won = 0;
        for i in 0..ROUNDS {
            let round = KBox::pin_init(
                IrqWork::new(pin_init!(Round {
                    lock <- new_spinlock_irq!(0, "irqlock_bench::Round::lock"),
                    with_first: i % 2 == 0,
                    with_ns: Atomic::new(0),
                    plain_ns: Atomic::new(0),
                    done <- Completion::new(),
                })),
                GFP_KERNEL,
            )?;
            round.queue();
            round.item().done.wait_for_completion();
            if *round.item().lock.lock() != 2 * ITERS as u64 {
                return Err(EIO);
            }
            let (round_with, round_plain) = (
                round.item().with_ns.load(Relaxed),
                round.item().plain_ns.load(Relaxed),
            );
            if round_with < round_plain {
                with_won += 1;
            }
            with = with.min(round_with);
            plain = plain.min(round_plain);
        }
        report("lock_with", with);
        report("lock", plain);
        pr_info!("irqlock_bench: rounds won={} of={}\n", with_won, ROUNDS);
        pr_info!("irqlock_bench: done\n");
        Ok(IrqLockBench)
    }
}
