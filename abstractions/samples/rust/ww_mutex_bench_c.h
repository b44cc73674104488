/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _WW_MUTEX_BENCH_C_H
#define _WW_MUTEX_BENCH_C_H

#include <linux/types.h>

struct ww_class;
struct ww_mutex;

s64 ww_bench_c_lock_unlock(struct ww_mutex *lock, struct ww_class *class,
			   u32 iters);
s64 ww_bench_c_lock_all(struct ww_mutex **locks, u32 n, struct ww_class *class,
			u32 iters);

#endif /* _WW_MUTEX_BENCH_C_H */
