// SPDX-License-Identifier: GPL-2.0
/*
 * C reference loops for the dma_fence and dma_resv benchmark
 * (rust_dma_fence_bench): what a C driver does to make, signal and release
 * a fence, to signal one with a callback registered, and to reserve a fence
 * slot on a set of reservation objects (the drm_exec /
 * drm_gem_lock_reservations pattern).
 */

#include <linux/dma-fence.h>
#include <linux/dma-resv.h>
#include <linux/ktime.h>
#include <linux/module.h>
#include <linux/slab.h>

#include "dma_fence_bench_c.h"

static const char *bench_name(struct dma_fence *fence)
{
	return "dma_fence_bench_c";
}

static const struct dma_fence_ops bench_ops = {
	.get_driver_name = bench_name,
	.get_timeline_name = bench_name,
};

static struct dma_fence *bench_fence(u64 context, u64 seqno)
{
	struct dma_fence *fence = kmalloc(sizeof(*fence), GFP_KERNEL);

	if (fence)
		dma_fence_init64(fence, &bench_ops, NULL, context, seqno);
	return fence;
}

/**
 * fence_bench_c_signal - make, signal and release @iters fences
 * @context: the fence context
 * @iters: number of fences
 *
 * Return: elapsed nanoseconds, or a negative errno.
 */
s64 fence_bench_c_signal(u64 context, u32 iters)
{
	u64 start = ktime_get_ns();
	u32 i;

	for (i = 0; i < iters; i++) {
		struct dma_fence *fence = bench_fence(context, i + 1);

		if (!fence)
			return -ENOMEM;
		dma_fence_signal(fence);
		dma_fence_put(fence);
	}
	return ktime_get_ns() - start;
}
EXPORT_SYMBOL_GPL(fence_bench_c_signal);

struct bench_cb {
	struct dma_fence_cb cb;
	atomic_t *calls;
};

static void bench_cb_func(struct dma_fence *fence, struct dma_fence_cb *cb)
{
	struct bench_cb *b = container_of(cb, struct bench_cb, cb);

	atomic_inc(b->calls);
	kfree(b);
}

/**
 * fence_bench_c_callback - make a fence, register a callback, signal, release
 * @context: the fence context
 * @iters: number of fences
 * @calls: incremented by each callback
 *
 * Return: elapsed nanoseconds, or a negative errno.
 */
s64 fence_bench_c_callback(u64 context, u32 iters, atomic_t *calls)
{
	u64 start = ktime_get_ns();
	u32 i;

	for (i = 0; i < iters; i++) {
		struct dma_fence *fence = bench_fence(context, i + 1);
		struct bench_cb *b = kmalloc(sizeof(*b), GFP_KERNEL);

		if (!fence || !b) {
			kfree(b);
			if (fence) {
				dma_fence_signal(fence);
				dma_fence_put(fence);
			}
			return -ENOMEM;
		}
		b->calls = calls;
		if (dma_fence_add_callback(fence, &b->cb, bench_cb_func))
			kfree(b);
		dma_fence_signal(fence);
		dma_fence_put(fence);
	}
	return ktime_get_ns() - start;
}
EXPORT_SYMBOL_GPL(fence_bench_c_callback);

static void unlock_all(struct dma_resv **resvs, bool *held, u32 n)
{
	u32 i;

	for (i = 0; i < n; i++) {
		if (held[i]) {
			dma_resv_unlock(resvs[i]);
			held[i] = false;
		}
	}
}

/* Lock all, reserve a slot on each and add @fence, unlock: one job. */
static int job_once(struct dma_resv **resvs, bool *held, u32 n,
		    struct dma_fence *fence)
{
	struct ww_acquire_ctx ctx;
	int contended = -1;
	int err = 0;
	u32 i;

	ww_acquire_init(&ctx, &reservation_ww_class);
retry:
	if (contended >= 0) {
		dma_resv_lock_slow(resvs[contended], &ctx);
		held[contended] = true;
	}
	for (i = 0; i < n; i++) {
		if (held[i])
			continue;
		err = dma_resv_lock(resvs[i], &ctx);
		if (err == -EDEADLK) {
			unlock_all(resvs, held, n);
			contended = i;
			goto retry;
		}
		if (err)
			goto out;
		held[i] = true;
	}
	ww_acquire_done(&ctx);
	for (i = 0; i < n; i++) {
		err = dma_resv_reserve_fences(resvs[i], 1);
		if (err)
			goto out;
		dma_resv_add_fence(resvs[i], fence, DMA_RESV_USAGE_WRITE);
	}
out:
	unlock_all(resvs, held, n);
	ww_acquire_fini(&ctx);
	return err;
}

/**
 * fence_bench_c_resv_lock_all - @iters jobs over @n reservation objects
 * @resvs: the reservation objects
 * @n: how many
 * @fence: the fence each job adds to each of them
 * @iters: number of jobs
 *
 * Return: elapsed nanoseconds, or a negative errno.
 */
s64 fence_bench_c_resv_lock_all(struct dma_resv **resvs, u32 n,
				struct dma_fence *fence, u32 iters)
{
	bool *held;
	u64 start;
	u32 i;
	int err = 0;

	held = kcalloc(n, sizeof(*held), GFP_KERNEL);
	if (!held)
		return -ENOMEM;
	start = ktime_get_ns();
	for (i = 0; i < iters && !err; i++)
		err = job_once(resvs, held, n, fence);
	start = ktime_get_ns() - start;
	kfree(held);
	return err ? err : start;
}
EXPORT_SYMBOL_GPL(fence_bench_c_resv_lock_all);

MODULE_DESCRIPTION("C reference loops for the dma_fence and dma_resv benchmark");
MODULE_LICENSE("GPL");
