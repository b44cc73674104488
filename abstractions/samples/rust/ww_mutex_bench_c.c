// SPDX-License-Identifier: GPL-2.0
/*
 * C reference loops for the ww_mutex benchmark (rust_ww_mutex_bench).
 *
 * The Rust benchmark module hands in the same mutexes it locks through the
 * Rust API, so both sides lock the same objects in the same boot.
 */

#include <linux/ktime.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/ww_mutex.h>

#include "ww_mutex_bench_c.h"

/**
 * ww_bench_c_lock_unlock - lock and unlock one mutex @iters times in one context
 * @lock: the mutex
 * @class: its class
 * @iters: number of lock/unlock pairs
 *
 * Return: elapsed nanoseconds, or a negative errno.
 */
s64 ww_bench_c_lock_unlock(struct ww_mutex *lock, struct ww_class *class,
			   u32 iters)
{
	struct ww_acquire_ctx ctx;
	u64 start;
	u32 i;
	int err;

	ww_acquire_init(&ctx, class);
	start = ktime_get_ns();
	for (i = 0; i < iters; i++) {
		err = ww_mutex_lock(lock, &ctx);
		if (err) {
			ww_acquire_fini(&ctx);
			return err;
		}
		ww_mutex_unlock(lock);
	}
	start = ktime_get_ns() - start;
	ww_acquire_fini(&ctx);
	return start;
}
EXPORT_SYMBOL_GPL(ww_bench_c_lock_unlock);

static void unlock_all(struct ww_mutex **locks, bool *held, u32 n)
{
	u32 i;

	for (i = 0; i < n; i++) {
		if (held[i]) {
			ww_mutex_unlock(locks[i]);
			held[i] = false;
		}
	}
}

/* One lock-all with back-off, like drm_exec: release all, slow-lock, retry. */
static int lock_all_once(struct ww_mutex **locks, bool *held, u32 n,
			 struct ww_class *class)
{
	struct ww_acquire_ctx ctx;
	int contended = -1;
	u32 i;
	int err;

	ww_acquire_init(&ctx, class);
retry:
	if (contended >= 0) {
		ww_mutex_lock_slow(locks[contended], &ctx);
		held[contended] = true;
	}
	for (i = 0; i < n; i++) {
		if (held[i])
			continue;
		err = ww_mutex_lock(locks[i], &ctx);
		if (err == -EDEADLK) {
			unlock_all(locks, held, n);
			contended = i;
			goto retry;
		}
		if (err) {
			unlock_all(locks, held, n);
			ww_acquire_fini(&ctx);
			return err;
		}
		held[i] = true;
	}
	ww_acquire_done(&ctx);
	unlock_all(locks, held, n);
	ww_acquire_fini(&ctx);
	return 0;
}

/**
 * ww_bench_c_lock_all - lock all of @n mutexes, then unlock them, @iters times
 * @locks: the mutexes
 * @n: how many
 * @class: their class
 * @iters: repetitions
 *
 * Return: elapsed nanoseconds, or a negative errno.
 */
s64 ww_bench_c_lock_all(struct ww_mutex **locks, u32 n, struct ww_class *class,
			u32 iters)
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
		err = lock_all_once(locks, held, n, class);
	start = ktime_get_ns() - start;
	kfree(held);
	return err ? err : start;
}
EXPORT_SYMBOL_GPL(ww_bench_c_lock_all);

MODULE_DESCRIPTION("C reference loops for the ww_mutex benchmark");
MODULE_LICENSE("GPL");
