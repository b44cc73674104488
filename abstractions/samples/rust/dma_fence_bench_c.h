/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _DMA_FENCE_BENCH_C_H
#define _DMA_FENCE_BENCH_C_H

#include <linux/atomic.h>
#include <linux/types.h>

struct dma_fence;
struct dma_resv;

s64 fence_bench_c_signal(u64 context, u32 iters);
s64 fence_bench_c_callback(u64 context, u32 iters, atomic_t *calls);
s64 fence_bench_c_resv_lock_all(struct dma_resv **resvs, u32 n,
				struct dma_fence *fence, u32 iters);

#endif /* _DMA_FENCE_BENCH_C_H */
