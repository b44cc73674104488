// SPDX-License-Identifier: GPL-2.0
/*
 * C reference loops for the SpinLockIrq benchmark (rust_irq_lock_bench).
 *
 * The Rust module calls these from the same irq_work, in the same blocks
 * that take turns, as its own loops: what a C interrupt handler pays for
 * its lock, spin_lock() (what lock_with() calls) and spin_lock_irq_disable()
 * (what lock() calls), without the Rust wrapper around them. They take a
 * lock of their own, so a C handler's lock has a lockdep class as Rust's.
 */

#include <linux/export.h>
#include <linux/ktime.h>
#include <linux/module.h>
#include <linux/spinlock.h>

#include "irq_lock_bench_c.h"

static DEFINE_SPINLOCK(bench_lock);
/* Incremented under bench_lock, so the caller can check the loops ran. */
static u64 bench_count;

/*
 * The time of @iters lock and unlock pairs, taken with spin_lock() or, if
 * @irq_disable, spin_lock_irq_disable(). Always inlined into each caller with
 * a constant @irq_disable, so each loop calls its lock functions directly,
 * with no test in it.
 */
static __always_inline s64 time_pairs(u32 iters, bool irq_disable)
{
	u64 start;
	u32 i;

	lockdep_assert_irqs_disabled();
	start = ktime_get_ns();
	for (i = 0; i < iters; i++) {
		if (irq_disable)
			spin_lock_irq_disable(&bench_lock);
		else
			spin_lock(&bench_lock);
		bench_count++;
		if (irq_disable)
			spin_unlock_irq_enable(&bench_lock);
		else
			spin_unlock(&bench_lock);
	}
	return ktime_get_ns() - start;
}

/**
 * irq_lock_bench_c_spin_lock - take and release a lock with spin_lock()
 * @iters: number of lock and unlock pairs
 *
 * Context: Interrupts disabled (a hard-IRQ handler's context).
 * Return: elapsed nanoseconds.
 */
s64 irq_lock_bench_c_spin_lock(u32 iters)
{
	return time_pairs(iters, false);
}
EXPORT_SYMBOL_GPL(irq_lock_bench_c_spin_lock);

/**
 * irq_lock_bench_c_spin_lock_irq_disable - the same with the interrupt
 * state saved, disabled and restored once more around each pair
 * @iters: number of lock and unlock pairs
 *
 * Context: Interrupts disabled (a hard-IRQ handler's context).
 * Return: elapsed nanoseconds.
 */
s64 irq_lock_bench_c_spin_lock_irq_disable(u32 iters)
{
	return time_pairs(iters, true);
}
EXPORT_SYMBOL_GPL(irq_lock_bench_c_spin_lock_irq_disable);

/**
 * irq_lock_bench_c_count - the lock and unlock pairs done so far
 *
 * Return: the number of pairs both loops have done since the module loaded.
 */
u64 irq_lock_bench_c_count(void)
{
	u64 count;

	spin_lock_irq_disable(&bench_lock);
	count = bench_count;
	spin_unlock_irq_enable(&bench_lock);
	return count;
}
EXPORT_SYMBOL_GPL(irq_lock_bench_c_count);

MODULE_DESCRIPTION("C reference loops for the SpinLockIrq benchmark");
MODULE_LICENSE("GPL");
