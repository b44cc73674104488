// SPDX-License-Identifier: GPL-2.0

//! Benchmark of a `SpinLockIrq` taken in hard-IRQ context, as a virtqueue
//! callback takes its queue's lock: `lock_with` (given the handler's proof
//! that interrupts are off) against `lock` (which saves, disables and
//! restores the interrupt state once more), and against the same two ways
//! written in C (`irq_lock_bench_c`: `spin_lock` and `spin_lock_irq_disable`,
//! which `lock_with` and `lock` call), so that what the C functions cost on
//! this machine is told apart from what the Rust wrapper adds.
//!
//! Each round is one `irq_work`, so it runs in hard-IRQ context, and times
//! the four cases in blocks that take turns (so that a slow spell of the
//! host, TCG's vCPU thread preempted, hits every case alike), the blocks in
//! orders that give each case each place and each predecessor equally often
//! (`ORDERS`). Prints
//! `irqlock_bench: <case> ns=<n>` (ns per lock and unlock pair, best of the
//! rounds, to a tenth of a ns), then
//! `irqlock_bench: rounds <case>_vs_<case> won=<k> of=<n>` for the pairs
//! compared (the rounds in which the first was faster) and
//! `irqlock_bench: done`; `cargo xtask bench` reads them.

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
    description: "SpinLockIrq in hard IRQ: lock_with against lock and C, ns per pair",
    license: "GPL",
}

// The C side: these declarations match irq_lock_bench_c.h. The functions are
// exported by irq_lock_bench_c, which this module depends on (modpost records
// the dependency), so they stay loaded as long as this module is.
extern "C" {
    fn irq_lock_bench_c_spin_lock(iters: u32) -> i64;
    fn irq_lock_bench_c_spin_lock_irq_disable(iters: u32) -> i64;
    fn irq_lock_bench_c_count() -> u64;
}

const ROUNDS: usize = 10;
/// Blocks per case and round, taking turns with the other cases'.
const BLOCKS: usize = 8;
/// Lock and unlock pairs per block.
const BLOCK_ITERS: u32 = 1_000;
/// Lock and unlock pairs per case and round. A round keeps interrupts off for
/// all four cases' pairs: about 45 ms under TCG with lockdep and KASAN.
const ITERS: i64 = BLOCKS as i64 * BLOCK_ITERS as i64;

/// What one block of a round times.
#[derive(Clone, Copy)]
enum Case {
    /// `SpinLockIrq::lock_with`, given the handler's proof.
    LockWith,
    /// `SpinLockIrq::lock`.
    Lock,
    /// `spin_lock()` from C.
    CSpinLock,
    /// `spin_lock_irq_disable()` from C.
    CSpinLockIrqDisable,
}

/// The number of cases.
const CASES: usize = 4;

impl Case {
    /// The name it is reported under.
    fn name(self) -> &'static str {
        match self {
            Case::LockWith => "lock_with",
            Case::Lock => "lock",
            Case::CSpinLock => "c_spin_lock",
            Case::CSpinLockIrqDisable => "c_spin_lock_irq_disable",
        }
    }
}

/// The cases in the order they are reported; a case's index here is its slot in
/// the timings.
const REPORTED: [Case; CASES] = [
    Case::LockWith,
    Case::Lock,
    Case::CSpinLock,
    Case::CSpinLockIrqDisable,
];

/// The orders of the blocks, taken in turn: a Williams square, so that over
/// four blocks each case is timed once at each place, and right after each
/// other case once (a case may gain from its place, or from the one before it
/// leaving a lock's memory warm).
const ORDERS: [[usize; CASES]; CASES] = [[0, 1, 3, 2], [1, 2, 0, 3], [2, 3, 1, 0], [3, 0, 2, 1]];

const _: () = assert!(BLOCKS % CASES == 0, "every order as often as the others");

/// The pairs of cases compared round by round, as indices into [`REPORTED`]:
/// the goal is the first at most the second; `won` counts the rounds in which
/// the first was faster. `cargo xtask bench` lists the same pairs
/// (`IRQ_LOCK_PAIRS`).
const PAIRS: [(usize, usize); 3] = [(0, 1), (0, 2), (2, 3)];

/// One round, run in hard-IRQ context: the time of `ITERS` pairs of each case.
#[pin_data]
struct Round {
    #[pin]
    lock: SpinLockIrq<u64>,
    /// The round's number: which order its first block takes.
    index: usize,
    /// ns per case, as in [`REPORTED`].
    ns: [Atomic<i64>; CASES],
    #[pin]
    done: Completion,
}

impl Round {
    /// The time of `BLOCK_ITERS` pairs of `case`.
    ///
    /// Under the lock, every case adds one to a `u64` with wraparound, as C's `bench_count++`
    /// does (no overflow check), so that the cases differ in their locks only.
    fn time(&self, case: Case, irq: &LocalInterruptDisabled) -> i64 {
        match case {
            Case::LockWith => {
                let start = Instant::<Monotonic>::now();
                for _ in 0..BLOCK_ITERS {
                    let mut count = self.lock.lock_with(irq);
                    *count = count.wrapping_add(1);
                }
                start.elapsed().as_nanos()
            }
            Case::Lock => {
                let start = Instant::<Monotonic>::now();
                for _ in 0..BLOCK_ITERS {
                    let mut count = self.lock.lock();
                    *count = count.wrapping_add(1);
                }
                start.elapsed().as_nanos()
            }
            // SAFETY: The declaration matches the C function's, which is loaded (see the
            // `extern` block). It takes no pointer, so it touches no Rust memory; it spins on a
            // lock its module's process context only takes with interrupts off, so taking it
            // here, with interrupts off as `irq` proves, cannot deadlock.
            Case::CSpinLock => unsafe { irq_lock_bench_c_spin_lock(BLOCK_ITERS) },
            // SAFETY: The declaration matches the C function's, which is loaded; it takes no
            // pointer, so it touches no Rust memory.
            Case::CSpinLockIrqDisable => unsafe {
                irq_lock_bench_c_spin_lock_irq_disable(BLOCK_ITERS)
            },
        }
    }
}

impl IrqWorkItem for Round {
    fn run(&self, irq: &LocalInterruptDisabled) {
        let mut ns = [0i64; CASES];
        for block in 0..BLOCKS {
            for &slot in &ORDERS[(self.index + block) % CASES] {
                ns[slot] += self.time(REPORTED[slot], irq);
            }
        }
        for (slot, n) in self.ns.iter().zip(ns) {
            slot.store(n, Relaxed);
        }
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
        let mut best = [i64::MAX; CASES];
        let mut won = [0usize; PAIRS.len()];
        // SAFETY: The declaration matches the C function's, which is loaded (see the `extern`
        // block); it takes no pointer, and process context, as here, may call it.
        let c_before = unsafe { irq_lock_bench_c_count() };
        for index in 0..ROUNDS {
            let round = KBox::pin_init(
                IrqWork::new(pin_init!(Round {
                    lock <- new_spinlock_irq!(0, "irqlock_bench::Round::lock"),
                    index,
                    ns: [const { Atomic::new(0) }; CASES],
                    done <- Completion::new(),
                })),
                GFP_KERNEL,
            )?;
            round.queue();
            round.item().done.wait_for_completion();
            if *round.item().lock.lock() != 2 * ITERS as u64 {
                return Err(EIO);
            }
            let ns = round.item().ns.each_ref().map(|n| n.load(Relaxed));
            for ((first, other), w) in PAIRS.iter().zip(won.iter_mut()) {
                if ns[*first] < ns[*other] {
                    *w += 1;
                }
            }
            for (b, n) in best.iter_mut().zip(ns) {
                *b = (*b).min(n);
            }
        }
        // SAFETY: As above.
        let c_pairs = unsafe { irq_lock_bench_c_count() }.wrapping_sub(c_before);
        if c_pairs != (2 * ITERS as u64) * ROUNDS as u64 {
            return Err(EIO);
        }
        for (case, ns) in REPORTED.iter().zip(best) {
            report(case.name(), ns);
        }
        for ((first, other), w) in PAIRS.iter().zip(won) {
            pr_info!(
                "irqlock_bench: rounds {}_vs_{} won={} of={}\n",
                REPORTED[*first].name(),
                REPORTED[*other].name(),
                w,
                ROUNDS
            );
        }
        pr_info!("irqlock_bench: done\n");
        Ok(IrqLockBench)
    }
}
