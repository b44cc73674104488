/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _IRQ_LOCK_BENCH_C_H
#define _IRQ_LOCK_BENCH_C_H

#include <linux/types.h>

s64 irq_lock_bench_c_spin_lock(u32 iters);
s64 irq_lock_bench_c_spin_lock_irq_disable(u32 iters);
u64 irq_lock_bench_c_count(void);

#endif /* _IRQ_LOCK_BENCH_C_H */
