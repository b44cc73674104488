// SPDX-License-Identifier: GPL-2.0

//! KUnit tests for wound/wait mutexes, mirroring the scenarios of
//! `kernel/locking/test-ww_mutex.c` and the ww cases of
//! `lib/locking-selftest.c` that lockdep must stay quiet on, for both a
//! wound-wait and a wait-die class.

use crate::prelude::*;

#[kunit_tests(rust_ww_mutex)]
mod suite {
    use crate::{
        bindings, define_wd_class, define_ww_class,
        prelude::*,
        sync::{
            atomic::{Acquire, Atomic, Full, Relaxed, Release},
            lock::ww_mutex::{AcquireCtx, Class, DynamicClass, LockSet, Lockable, Mutex},
            Arc, Completion,
        },
        test_support::{code, spawn, with_pending_signal},
        time::{delay::fsleep, Delta, Instant, Monotonic},
    };

    define_ww_class!(WW);
    define_wd_class!(WD);

    static CLASSES: [&Class; 2] = [&WW, &WD];

    type Lock = Pin<KBox<Mutex<'static, i64>>>;

    fn new_lock(class: &'static Class, v: i64) -> Result<Lock> {
        KBox::pin_init(Mutex::new(v, class), GFP_KERNEL)
    }

    fn new_locks(class: &'static Class, n: usize) -> Result<Arc<KVec<Lock>>> {
        let mut v = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            v.push(new_lock(class, 0)?, GFP_KERNEL)?;
        }
        Ok(Arc::new(v, GFP_KERNEL)?)
    }

    /// A small deterministic PRNG (xorshift) for lock orders.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self, bound: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % bound as u64) as usize
        }
    }

    #[test]
    fn define_macros_pick_the_algorithm() {
        assert!(!WW.is_wait_die());
        assert!(WD.is_wait_die());
    }

    #[test]
    fn mutex_without_context() -> Result {
        for class in CLASSES {
            let m = new_lock(class, 1)?;
            assert!(!m.is_locked());
            {
                let mut g = m.lock();
                *g += 1;
                assert!(m.is_locked());
                assert_eq!(m.try_lock().err(), Some(EBUSY));
            }
            assert_eq!(*m.lock_interruptible()?, 2);
            assert!(!m.is_locked());
        }
        Ok(())
    }

    /// test-ww_mutex.c `test_mutex`: a worker blocks on a mutex the test
    /// holds and gets it only after the test unlocks it. Variants: the
    /// worker locks with a context, without one, or with trylock.
    #[test]
    fn mutex_against_a_worker() -> Result {
        for class in CLASSES {
            for variant in 0..3 {
                for test_ctx in [false, true] {
                    let locks = new_locks(class, 1)?;
                    let got = Arc::new(Atomic::<i32>::new(0), GFP_KERNEL)?;
                    // Context-free locking must not be mixed with a live
                    // context of the same class (lockdep reports it).
                    let ctx = if test_ctx {
                        Some(AcquireCtx::new(class)?)
                    } else {
                        None
                    };
                    let held = match &ctx {
                        Some(c) => Some(c.lock(&*locks[0])?),
                        None => None,
                    };
                    let plain = if test_ctx {
                        None
                    } else {
                        Some(locks[0].lock())
                    };
                    let (l, g) = (locks.clone(), got.clone());
                    let done = spawn(move || {
                        let m = &*l[0];
                        match variant {
                            0 => {
                                if let Ok(c) = AcquireCtx::new(m.class()) {
                                    if let Ok(_g) = c.lock(m) {
                                        g.store(1, Relaxed);
                                    }
                                }
                            }
                            1 => {
                                let _g = m.lock();
                                g.store(1, Relaxed);
                            }
                            _ => loop {
                                if let Ok(_g) = m.try_lock() {
                                    g.store(1, Relaxed);
                                    break;
                                }
                                fsleep(Delta::from_millis(1));
                            },
                        }
                    })?;
                    fsleep(Delta::from_millis(20));
                    // The worker must not get a mutex the test holds.
                    assert_eq!(got.load(Relaxed), 0);
                    drop(held);
                    drop(plain);
                    done.wait_for_completion();
                    assert_eq!(got.load(Relaxed), 1);
                }
            }
        }
        Ok(())
    }

    /// test-ww_mutex.c `test_aa` and locking-selftest's AA cases that must
    /// not splat: relocking in the same context gives EALREADY, trylock of
    /// one's own lock fails.
    #[test]
    fn aa() -> Result {
        for class in CLASSES {
            let m = new_lock(class, 0)?;
            let ctx = AcquireCtx::new(class)?;
            let _g = ctx.lock(&*m)?;
            assert_eq!(ctx.lock(&*m).err(), Some(EALREADY));
            assert_eq!(ctx.try_lock(&*m).err(), Some(EBUSY));
            assert_eq!(m.try_lock().err(), Some(EBUSY));
            assert_eq!(ctx.held_count(), 1);
        }
        Ok(())
    }

    #[test]
    fn misuse_is_refused() -> Result {
        let a = new_lock(&WW, 0)?;
        let other = new_lock(&WD, 0)?;
        let ctx = AcquireCtx::new(&WW)?;
        // Wrong class.
        assert_eq!(ctx.lock(&*other).err(), Some(EINVAL));
        // lock_slow without a preceding EDEADLK.
        assert_eq!(ctx.lock_slow(&*a).err(), Some(EINVAL));
        // done twice, and locking after done.
        ctx.done()?;
        assert_eq!(ctx.done().err(), Some(EINVAL));
        assert_eq!(ctx.lock(&*a).err(), Some(EINVAL));
        Ok(())
    }

    /// A forgotten guard must not leave the mutex pointing at a freed
    /// context: dropping the context then leaks it instead of freeing it.
    #[test]
    fn forgotten_guard_leaks_its_context() -> Result {
        for class in CLASSES {
            let m = new_lock(class, 0)?;
            let raw_ctx = {
                let ctx = AcquireCtx::new(class)?;
                core::mem::forget(ctx.lock(&*m)?);
                assert_eq!(ctx.held_count(), 1);
                ctx.as_raw()
            };
            // The context was dropped, the mutex is still locked and points
            // to it: that memory must still be valid.
            assert!(m.is_locked());
            // SAFETY: reading the leaked context, which was not freed.
            assert_eq!(unsafe { (*raw_ctx).acquired }, 1);
            // Clean up by hand what the forgotten guard and the leaked
            // context would have done, so lockdep sees no lock left held.
            // SAFETY: `m` is locked in `raw_ctx` by this task; the context is
            // then empty, finished once, and freed from its original box.
            unsafe {
                crate::bindings::ww_mutex_unlock(m.as_raw());
                crate::bindings::ww_acquire_fini(raw_ctx);
                drop(KBox::from_raw(
                    raw_ctx.cast::<crate::types::Opaque<crate::bindings::ww_acquire_ctx>>(),
                ));
            }
            // Another context can take the mutex.
            let ctx = AcquireCtx::new(class)?;
            let _g = ctx.lock(&*m)?;
        }
        Ok(())
    }

    /// locking-selftest "ww_test_edeadlk_normal/_slow" style: back off after
    /// EDEADLK with and without the slow path; the stamp stays the same.
    fn abba_one(class: &'static Class, resolve: bool) -> Result<(i32, i32)> {
        let locks = new_locks(class, 2)?;
        let ready = Arc::new(Atomic::<i32>::new(0), GFP_KERNEL)?;
        let mut results = KVec::new();
        let mut done = KVec::new();
        for t in 0..2usize {
            let r = Arc::new(Atomic::<i32>::new(-1), GFP_KERNEL)?;
            let (l, rd, rr) = (locks.clone(), ready.clone(), r.clone());
            done.push(
                spawn(move || {
                    let (first, second) = (&*l[t], &*l[1 - t]);
                    let Ok(ctx) = AcquireCtx::new(first.class()) else {
                        rr.store(-(ENOMEM.to_errno()), Relaxed);
                        return;
                    };
                    let stamp = ctx.stamp();
                    let g1 = match ctx.lock(first) {
                        Ok(g) => Some(g),
                        Err(e) => {
                            rr.store(e.to_errno(), Relaxed);
                            return;
                        }
                    };
                    rd.fetch_add(1, Full);
                    while rd.load(Relaxed) < 2 {
                        fsleep(Delta::from_millis(1));
                    }
                    let res = ctx.lock(second).map(drop);
                    let mut ret = code(res);
                    if resolve && ret == EDEADLK.to_errno() {
                        // The protocol: release everything, sleep on the
                        // contended lock, take the rest; repeat while told
                        // to back off (DEBUG_WW_MUTEX_SLOWPATH injects more
                        // EDEADLKs).
                        drop(g1);
                        let mut contended = second;
                        let mut other = first;
                        loop {
                            let r = ctx.lock_slow(contended).and_then(|g| {
                                let g2 = ctx.lock(other)?;
                                drop((g, g2));
                                Ok(())
                            });
                            ret = code(r);
                            if ret != EDEADLK.to_errno() {
                                break;
                            }
                            core::mem::swap(&mut contended, &mut other);
                        }
                    }
                    if ctx.stamp() != stamp {
                        ret = -1000;
                    }
                    rr.store(ret, Relaxed);
                })?,
                GFP_KERNEL,
            )?;
            results.push(r, GFP_KERNEL)?;
        }
        for d in done.iter() {
            d.wait_for_completion();
        }
        Ok((results[0].load(Relaxed), results[1].load(Relaxed)))
    }

    /// test-ww_mutex.c `test_abba`: two contexts lock A,B and B,A. Without
    /// resolution one of them is told to back off; with it, both finish.
    #[test]
    fn abba() -> Result {
        let edeadlk = EDEADLK.to_errno();
        for class in CLASSES {
            let (a, b) = abba_one(class, false)?;
            assert!(a == edeadlk || b == edeadlk);
            assert!(a == 0 || a == edeadlk);
            assert!(b == 0 || b == edeadlk);
            let (a, b) = abba_one(class, true)?;
            assert_eq!(a, 0);
            assert_eq!(b, 0);
        }
        Ok(())
    }

    /// test-ww_mutex.c `test_cycle`: `n` contexts each hold mutex i and want
    /// mutex i+1 (mod n); with back-off every one of them completes.
    #[test]
    fn cyclic_chains() -> Result {
        for class in CLASSES {
            for n in 2..=5usize {
                let locks = new_locks(class, n)?;
                let started = Arc::new(Atomic::<i32>::new(0), GFP_KERNEL)?;
                let ok = Arc::new(Atomic::<i32>::new(0), GFP_KERNEL)?;
                let mut done = KVec::new();
                for i in 0..n {
                    let (l, s, o) = (locks.clone(), started.clone(), ok.clone());
                    done.push(
                        spawn(move || {
                            let (a, b) = (&*l[i], &*l[(i + 1) % n]);
                            let mut first = true;
                            let r = LockSet::lock_all(
                                a.class(),
                                |set| {
                                    set.lock(a)?;
                                    if first {
                                        first = false;
                                        s.fetch_add(1, Full);
                                        while s.load(Relaxed) < n as i32 {
                                            fsleep(Delta::from_millis(1));
                                        }
                                    }
                                    set.lock(b)
                                },
                                |set| {
                                    set.with_locked(a, |x| *x += 1)?;
                                    set.with_locked(b, |x| *x += 1)
                                },
                            );
                            if r.is_ok() {
                                o.fetch_add(1, Full);
                            }
                        })?,
                        GFP_KERNEL,
                    )?;
                }
                for d in done.iter() {
                    d.wait_for_completion();
                }
                assert_eq!(ok.load(Relaxed), n as i32);
                let total: i64 = locks.iter().map(|m| *m.lock()).sum();
                assert_eq!(total, 2 * n as i64);
            }
        }
        Ok(())
    }

    /// test-ww_mutex.c `stress`: several workers lock random subsets of the
    /// mutexes (in order, reordered, or one at a time without a context) for
    /// a bounded time and count every update; no update may be lost.
    fn stress(class: &'static Class, modes: &'static [usize], nlocks: usize, ms: i64) -> Result {
        let workers = 3;
        let locks = new_locks(class, nlocks)?;
        let updates = Arc::new(Atomic::<i64>::new(0), GFP_KERNEL)?;
        let backoffs = Arc::new(Atomic::<i64>::new(0), GFP_KERNEL)?;
        let failures = Arc::new(Atomic::<i32>::new(0), GFP_KERNEL)?;
        let mut done = KVec::new();
        for w in 0..workers {
            let (l, u, b, f) = (
                locks.clone(),
                updates.clone(),
                backoffs.clone(),
                failures.clone(),
            );
            done.push(
                spawn(move || {
                    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (w as u64 + 1));
                    let start = Instant::<Monotonic>::now();
                    let mut order = KVec::new();
                    while start.elapsed().as_nanos() < ms * 1_000_000 {
                        // 0: in order, 1: random order, 2: one lock, no context.
                        let mode = modes[w % modes.len()];
                        if mode == 2 {
                            // stress_one: a single lock, no context.
                            *l[rng.next(nlocks)].lock() += 1;
                            u.fetch_add(1, Full);
                            continue;
                        }
                        order.clear();
                        let count = 1 + rng.next(nlocks);
                        for i in 0..count {
                            let idx = if mode == 0 { i } else { rng.next(nlocks) };
                            if order.push(idx, GFP_KERNEL).is_err() {
                                f.fetch_add(1, Full);
                                return;
                            }
                        }
                        let r = LockSet::lock_all(
                            class,
                            |set| {
                                for &i in order.iter() {
                                    set.lock(&*l[i])?;
                                }
                                Ok(())
                            },
                            |set| {
                                // Duplicates are held once and counted once.
                                let n = set.held_count() as i64;
                                let mut seen: i64 = 0;
                                for (i, m) in l.iter().enumerate() {
                                    if order.contains(&i) {
                                        set.with_locked(&**m, |x| *x += 1)?;
                                        seen += 1;
                                    }
                                }
                                b.fetch_add(i64::from(set.backoffs()), Full);
                                Ok((n, seen))
                            },
                        );
                        match r {
                            Ok((n, seen)) if n == seen => {
                                u.fetch_add(n, Full);
                            }
                            _ => {
                                f.fetch_add(1, Full);
                            }
                        }
                    }
                })?,
                GFP_KERNEL,
            )?;
        }
        for d in done.iter() {
            d.wait_for_completion();
        }
        assert_eq!(failures.load(Relaxed), 0);
        let total: i64 = locks.iter().map(|m| *m.lock()).sum();
        // No update was lost.
        assert_eq!(total, updates.load(Relaxed));
        assert!(total > 0);
        // DEBUG_WW_MUTEX_SLOWPATH injects EDEADLK, so back-offs happened.
        #[cfg(CONFIG_DEBUG_WW_MUTEX_SLOWPATH)]
        assert!(backoffs.load(Relaxed) > 0);
        Ok(())
    }

    #[test]
    fn stress_inorder() -> Result {
        for class in CLASSES {
            stress(class, &[0], 16, 300)?;
        }
        Ok(())
    }

    #[test]
    fn stress_reorder() -> Result {
        for class in CLASSES {
            stress(class, &[1], 16, 300)?;
        }
        Ok(())
    }

    #[test]
    fn stress_with_stress_one() -> Result {
        for class in CLASSES {
            stress(class, &[0, 1, 2], 16, 300)?;
        }
        Ok(())
    }

    /// The lock-set helper: duplicates, and the stamp kept across back-offs.
    #[test]
    fn lock_set_keeps_its_stamp() -> Result {
        for class in CLASSES {
            let a = new_lock(class, 1)?;
            let b = new_lock(class, 2)?;
            let mut stamps = KVec::new();
            let mut runs = 0;
            let sum = LockSet::lock_all(
                class,
                |set| {
                    runs += 1;
                    stamps.push(set.stamp().ok_or(EINVAL)?, GFP_KERNEL)?;
                    set.lock(&*a)?;
                    set.lock(&*b)?;
                    set.lock(&*a)
                },
                |set| {
                    assert_eq!(set.held_count(), 2);
                    Ok(set.with_locked(&*a, |x| *x)? + set.with_locked(&*b, |x| *x)?)
                },
            )?;
            assert_eq!(sum, 3);
            assert!(stamps.iter().all(|&s| s == stamps[0]));
            assert_eq!(stamps.len(), runs);
            assert!(!a.is_locked() && !b.is_locked());
        }
        Ok(())
    }

    #[test]
    fn lock_set_propagates_errors_and_unlocks() -> Result {
        let a = new_lock(&WW, 0)?;
        let other = new_lock(&WD, 0)?;
        let r = LockSet::lock_all(
            &WW,
            |set| {
                set.lock(&*a)?;
                set.lock(&*other)
            },
            |_| Ok(()),
        );
        assert_eq!(r.err(), Some(EINVAL));
        assert!(!a.is_locked());
        let r: Result = LockSet::lock_all(&WW, |set| set.lock(&*a), |_| Err(ENOSPC));
        assert_eq!(r.err(), Some(ENOSPC));
        assert!(!a.is_locked());
        Ok(())
    }

    /// An interrupted acquire: a worker holds `m`; with a signal pending,
    /// every interruptible way of waiting for it returns EINTR and leaves
    /// nothing locked, including a lock set that had already locked `a`.
    #[test]
    fn interrupted_acquire() -> Result {
        for class in CLASSES {
            let locks = new_locks(class, 2)?;
            let held = Arc::pin_init(Completion::new(), GFP_KERNEL)?;
            let release = Arc::pin_init(Completion::new(), GFP_KERNEL)?;
            let (l, h, r) = (locks.clone(), held.clone(), release.clone());
            let done = spawn(move || {
                if let Ok(ctx) = AcquireCtx::new(l[1].class()) {
                    if let Ok(_g) = ctx.lock(&*l[1]) {
                        h.complete_all();
                        r.wait_for_completion();
                    }
                }
                // Unblocks the test if the worker failed to lock.
                h.complete_all();
            })?;
            held.wait_for_completion();
            let (a, m) = (&*locks[0], &*locks[1]);
            assert!(m.is_locked());
            let (plain, in_ctx, in_set) = with_pending_signal(|| {
                assert!(crate::current!().signal_pending());
                let plain = m.lock_interruptible().map(drop);
                let in_ctx = AcquireCtx::new(class).and_then(|c| c.lock_interruptible(m).map(drop));
                let in_set = LockSet::lock_all_interruptible(
                    class,
                    |set| {
                        set.lock(a)?;
                        set.lock(m)
                    },
                    |_| Ok(()),
                );
                (plain, in_ctx, in_set)
            });
            assert!(!crate::current!().signal_pending());
            assert_eq!(code(plain), -(bindings::EINTR as i32));
            assert_eq!(code(in_ctx), -(bindings::EINTR as i32));
            assert_eq!(code(in_set), -(bindings::EINTR as i32));
            assert!(!a.is_locked());
            assert!(m.is_locked());
            release.complete_all();
            done.wait_for_completion();
            assert!(!m.is_locked());
            // Without a signal, the same set now succeeds.
            LockSet::lock_all_interruptible(
                class,
                |set| {
                    set.lock(a)?;
                    set.lock(m)
                },
                |_| Ok(()),
            )?;
        }
        Ok(())
    }

    /// locking-selftest ww "S" cases: normal acquire, done and fini.
    #[test]
    fn selftest_normal_acquire() -> Result {
        for class in CLASSES {
            let a = new_lock(class, 0)?;
            let b = new_lock(class, 0)?;
            let ctx = AcquireCtx::new(class)?;
            let ga = ctx.lock(&*a)?;
            let gb = ctx.try_lock(&*b)?;
            ctx.done()?;
            assert_eq!(ctx.held_count(), 2);
            drop((gb, ga));
            assert_eq!(ctx.held_count(), 0);
        }
        Ok(())
    }

    /// locking-selftest ww_test_edeadlk_normal(_slow), with the older context
    /// in a worker (two contexts of one class in one task would be recursive
    /// locking for lockdep): with a wait-die class, the younger context that
    /// wants a mutex the older one holds is told to back off at once, then
    /// takes it once it is released, with or without the slow path.
    #[test]
    fn selftest_edeadlk_back_off() -> Result {
        for slow in [false, true] {
            let locks = new_locks(&WD, 2)?;
            let state = Arc::new(Atomic::<i32>::new(0), GFP_KERNEL)?;
            let (l, st) = (locks.clone(), state.clone());
            let done = spawn(move || {
                let Ok(old) = AcquireCtx::new(&WD) else {
                    st.store(-1, Release);
                    return;
                };
                let Ok(g) = old.lock(&*l[1]) else {
                    st.store(-1, Release);
                    return;
                };
                // 1: holding B. Wait for 2: release it.
                st.store(1, Release);
                while st.load(Acquire) != 2 {
                    fsleep(Delta::from_millis(1));
                }
                drop(g);
            })?;
            while state.load(Acquire) == 0 {
                fsleep(Delta::from_millis(1));
            }
            assert_eq!(state.load(Relaxed), 1);
            let (a, b) = (&*locks[0], &*locks[1]);
            let young = AcquireCtx::new(&WD)?;
            let stamp = young.stamp();
            let ga = young.lock(a)?;
            assert_eq!(young.lock(b).err(), Some(EDEADLK));
            // Nothing else may be locked before backing off.
            assert_eq!(young.lock(a).err(), Some(EDEADLK));
            drop(ga);
            state.store(2, Release);
            // Take the contended mutex first, then the other; with
            // DEBUG_WW_MUTEX_SLOWPATH any lock taken while holding another can
            // be told to back off again, so this is the protocol's loop.
            let mut order = (b, a);
            let (g1, g2) = loop {
                let g1 = if slow {
                    young.lock_slow(order.0)?
                } else {
                    young.lock(order.0)?
                };
                match young.lock(order.1) {
                    Ok(g2) => break (g1, g2),
                    Err(e) if e == EDEADLK => {
                        drop(g1);
                        order = (order.1, order.0);
                    }
                    Err(e) => return Err(e),
                }
            };
            assert_eq!(young.stamp(), stamp);
            drop((g1, g2));
            done.wait_for_completion();
        }
        Ok(())
    }

    /// locking-selftest spin nesting: a spinlock taken inside a ww mutex.
    #[test]
    fn spinlock_inside_ww_mutex() -> Result {
        let spin = KBox::pin_init(crate::new_spinlock!(0u32), GFP_KERNEL)?;
        for class in CLASSES {
            let m = new_lock(class, 0)?;
            let ctx = AcquireCtx::new(class)?;
            let mut g = ctx.lock(&*m)?;
            *spin.lock() += 1;
            *g += 1;
        }
        assert_eq!(*spin.lock(), 2);
        Ok(())
    }

    /// An existing C ww_mutex (a `dma_resv`'s lock) used with the C class
    /// `reservation_ww_class`.
    #[cfg(CONFIG_DMA_SHARED_BUFFER)]
    #[test]
    fn dma_resv_lock() -> Result {
        use crate::{bindings, sync::lock::ww_mutex::ForeignMutex, types::Opaque};

        let resv = KBox::pin_init(
            Opaque::ffi_init(|slot: *mut bindings::dma_resv| {
                // SAFETY: `slot` is valid for writes and pinned.
                unsafe { bindings::dma_resv_init(slot) }
            }),
            GFP_KERNEL,
        )?;
        let class = Class::reservation();
        // SAFETY: `dma_resv_init` initialised `lock` with `reservation_ww_class`;
        // `resv` outlives `lock` (declared after it, dropped before it).
        let lock =
            unsafe { ForeignMutex::from_raw(&raw mut (*resv.get()).lock, class) }.ok_or(EINVAL)?;
        let other = KBox::pin_init(Mutex::new(7u32, class), GFP_KERNEL)?;
        let v = LockSet::lock_all(
            class,
            |set| {
                set.lock(&lock)?;
                set.lock(&*other)
            },
            |set| {
                assert!(lock.is_locked());
                set.with_locked(&*other, |x| *x)
            },
        )?;
        assert_eq!(v, 7);
        assert!(!lock.is_locked());
        // SAFETY: `resv` was initialised and is no longer locked or used.
        unsafe { bindings::dma_resv_fini(resv.get()) };
        Ok(())
    }

    #[test]
    fn dynamic_class() -> Result {
        for wait_die in [false, true] {
            let class = KBox::pin_init(DynamicClass::new(c"rust_ww_dyn", wait_die), GFP_KERNEL)?;
            assert_eq!(class.is_wait_die(), wait_die);
            let a = KBox::pin_init(Mutex::new(1u32, &class), GFP_KERNEL)?;
            let b = KBox::pin_init(Mutex::new(2u32, &class), GFP_KERNEL)?;
            let v = LockSet::lock_all(
                &class,
                |set| {
                    set.lock(&*b)?;
                    set.lock(&*a)
                },
                |set| Ok(set.with_locked(&*a, |x| *x)? * set.with_locked(&*b, |x| *x)?),
            )?;
            assert_eq!(v, 2);
        }
        Ok(())
    }
}
