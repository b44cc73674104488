// SPDX-License-Identifier: GPL-2.0

//! KUnit tests for implicit lock classes and for lockdep tracking of `Arc`
//! drops. Lockdep must stay quiet on all of them: every pattern here is
//! correct, and a report fails the boot.

use crate::prelude::*;

#[kunit_tests(rust_implicit_class)]
mod implicit {
    use crate::{
        prelude::*,
        str::CString,
        sync::{
            implicit_class::{caller_lock_class, class_at, stats, ImplicitClass, Usage},
            Mutex, SpinLock, SpinLockIrq,
        },
    };
    use core::panic::Location;

    /// One source location, whoever calls.
    fn fixed_site() -> ImplicitClass {
        caller_lock_class()
    }

    #[track_caller]
    fn caller_site() -> ImplicitClass {
        caller_lock_class()
    }

    fn same(a: &ImplicitClass, b: &ImplicitClass) -> bool {
        core::ptr::eq(a.key().get_ref(), b.key().get_ref())
    }

    #[test]
    fn one_site_one_class_two_sites_two_classes() {
        let (a, b) = (fixed_site(), fixed_site());
        assert!(same(&a, &b));
        let c = caller_site();
        let d = caller_site();
        assert!(!same(&c, &d));
        assert!(!c.is_fallback() && !d.is_fallback());
    }

    #[test]
    fn names_carry_file_line_and_column() -> Result {
        let loc = Location::caller();
        let class = class_at(loc, Usage::Lock);
        let expected = CString::try_from_fmt(fmt!(":{}:{}", loc.line(), loc.column()))?;
        let name = class.name().to_bytes();
        assert!(name.ends_with(expected.to_bytes()));
        assert!(core::str::from_utf8(name).is_ok_and(|s| s.contains("implicit_class/tests.rs:")));
        Ok(())
    }

    /// Keyed on content: a copy of a `Location` at another address (the
    /// situation of one source line emitted by two crates) gets the class of
    /// the original, and a lock and an `Arc` on one location get two.
    #[test]
    fn keyed_on_content_not_address() -> Result {
        let loc = Location::caller();
        let copy: &'static Location<'static> = KBox::leak(KBox::new(*loc, GFP_KERNEL)?);
        assert!(!core::ptr::eq(loc, copy));
        assert!(same(
            &class_at(loc, Usage::Lock),
            &class_at(copy, Usage::Lock)
        ));
        assert!(!same(
            &class_at(loc, Usage::Lock),
            &class_at(loc, Usage::Arc)
        ));
        Ok(())
    }

    /// A new site adds an entry (other code may add some at the same time,
    /// hence `>=`); repeated lookups return the same class.
    #[test]
    fn a_new_site_adds_an_entry_and_repeats_reuse_it() {
        let (before, live_before, _) = stats();
        let first = caller_site();
        let (after, live_after, _) = stats();
        assert!(after > before);
        assert!(live_after > live_before);
        assert!(!first.is_fallback());
        let once = fixed_site();
        for _ in 0..10 {
            assert!(same(&once, &fixed_site()));
        }
    }

    /// Boqun's objection: the lookup must work where sleeping is not
    /// allowed. New classes are made under a spinlock and with interrupts
    /// off; `CONFIG_DEBUG_ATOMIC_SLEEP` reports any sleep there.
    #[test]
    fn new_classes_under_spinlocks() -> Result {
        let outer = KBox::pin_init(SpinLock::new_implicit(0u32), GFP_KERNEL)?;
        let irq = KBox::pin_init(SpinLockIrq::new_implicit(0u32), GFP_KERNEL)?;
        let (a, b) = {
            let _g = outer.lock();
            let a = caller_site();
            let _gi = irq.lock();
            (a, caller_site())
        };
        assert!(!a.is_fallback() && !b.is_fallback());
        assert!(!same(&a, &b));
        Ok(())
    }

    /// Locks made at one site share a class, so nesting two of them is
    /// recursive locking for lockdep; locks made at two sites may nest.
    #[test]
    fn implicit_mutexes_nest_across_sites() -> Result {
        let outer = KBox::pin_init(Mutex::new_implicit(1u32), GFP_KERNEL)?;
        let inner = KBox::pin_init(Mutex::new_implicit(2u32), GFP_KERNEL)?;
        let g = outer.lock();
        let h = inner.lock();
        assert_eq!(*g + *h, 3);
        Ok(())
    }
}

#[kunit_tests(rust_arc_lockdep)]
mod arc {
    use crate::{
        bindings,
        prelude::*,
        sync::{
            atomic::{Acquire, Atomic, Relaxed},
            Arc, Completion, Mutex, SpinLockIrq,
        },
        types::Opaque,
        workqueue,
    };

    /// The size of the lockdep map an `Arc` allocation carries, or 0.
    const MAP: usize = if cfg!(CONFIG_RUST_ARC_LOCKDEP) {
        core::mem::size_of::<bindings::lockdep_map>()
    } else {
        0
    };

    /// With the option off the layout is today's: the data right after
    /// the count; with it on, after the map. The handle is one pointer
    /// either way.
    #[test]
    fn layout_matches_the_option() {
        assert_eq!(
            core::mem::size_of::<Arc<u64>>(),
            core::mem::size_of::<usize>()
        );
        assert_eq!(
            core::mem::size_of::<Option<Arc<u64>>>(),
            core::mem::size_of::<usize>()
        );
        if MAP == 0 {
            assert_eq!(Arc::<u32>::DATA_OFFSET, 4);
            assert_eq!(Arc::<u64>::DATA_OFFSET, 8);
        } else {
            assert_eq!(Arc::<u8>::DATA_OFFSET, 8 + MAP);
            assert_eq!(Arc::<u64>::DATA_OFFSET, 8 + MAP);
        }
    }

    /// Drops that take a lock, done with another lock held in a consistent
    /// order, from several threads; the last drop may happen on any of them.
    #[test]
    fn clone_and_drop_across_threads() -> Result {
        struct Logged(Arc<Mutex<u32>>);
        impl Drop for Logged {
            fn drop(&mut self) {
                *self.0.lock() += 1;
            }
        }
        let outer = Arc::pin_init(Mutex::new_implicit(0u32), GFP_KERNEL)?;
        let log = Arc::pin_init(Mutex::new_implicit(0u32), GFP_KERNEL)?;
        for round in 0..4 {
            let obj = Arc::new(Logged(log.clone()), GFP_KERNEL)?;
            let mut done = KVec::new();
            for _ in 0..3 {
                let (o, out) = (obj.clone(), outer.clone());
                let c = Arc::pin_init(Completion::new(), GFP_KERNEL)?;
                let cc = c.clone();
                workqueue::system_unbound().try_spawn(GFP_KERNEL, move || {
                    // outer -> map -> log, the order everywhere.
                    let g = out.lock();
                    drop(o);
                    drop(g);
                    cc.complete_all();
                })?;
                done.push(c, GFP_KERNEL)?;
            }
            if round % 2 == 0 {
                drop(obj);
            } else {
                let g = outer.lock();
                drop(obj);
                drop(g);
            }
            for c in done.iter() {
                c.wait_for_completion();
            }
            assert_eq!(*log.lock(), round + 1);
        }
        Ok(())
    }

    /// A list of nodes made at one site: dropping the head drops the next
    /// node inside the head's destructor, nesting the class in itself.
    #[test]
    fn nested_drops_of_one_class() -> Result {
        struct Node {
            _next: Option<Arc<Node>>,
        }
        fn node(next: Option<Arc<Node>>) -> Result<Arc<Node>> {
            Ok(Arc::new(Node { _next: next }, GFP_KERNEL)?)
        }
        let mut head = None;
        for _ in 0..5 {
            head = Some(node(head)?);
        }
        drop(head);
        Ok(())
    }

    #[pin_data]
    #[repr(C)]
    struct Timer {
        #[pin]
        timer: Opaque<bindings::hrtimer>,
        payload: Atomic<*mut Guarded>,
        /// A C completion: `complete` (unlike `complete_all`, the only
        /// signal `Completion` offers) is meant for hard-IRQ context.
        #[pin]
        fired: Opaque<bindings::completion>,
    }

    /// Destructor takes an interrupt-safe lock, as a fence's release would.
    struct Guarded(Arc<SpinLockIrq<u32>>);

    impl Drop for Guarded {
        fn drop(&mut self) {
            *self.0.lock() += 1;
        }
    }

    /// The timer callback, in hard-IRQ context.
    ///
    /// # Safety
    ///
    /// `t` must be the `timer` field of a live `Timer`.
    unsafe extern "C" fn fire(t: *mut bindings::hrtimer) -> bindings::hrtimer_restart {
        // SAFETY: `timer` is the first field of `Timer`, which is `repr(C)`
        // and outlives the timer (the test waits for `fired`).
        let me = unsafe { &*t.cast::<Timer>() };
        let p = me.payload.xchg(core::ptr::null_mut(), Acquire);
        if !p.is_null() {
            // SAFETY: `p` came from `Arc::into_raw` in the test, taken once.
            drop(unsafe { Arc::from_raw(p) });
        }
        // SAFETY: `fired` was initialised before the timer was started.
        unsafe { bindings::complete(me.fired.get()) };
        bindings::hrtimer_restart::HRTIMER_NORESTART
    }

    /// The semantics for interrupt context: an `Arc` reference dropped in a
    /// hard-IRQ handler (an hrtimer in `HRTIMER_MODE_REL_HARD`) and the last
    /// one dropped in a thread with interrupts enabled, its destructor
    /// taking an IRQ-safe lock. Lockdep must not call this inconsistent.
    #[test]
    fn arc_dropped_in_hard_irq() -> Result {
        let lock = Arc::pin_init(SpinLockIrq::new_implicit(0u32), GFP_KERNEL)?;
        let obj = Arc::new(Guarded(lock.clone()), GFP_KERNEL)?;
        let raw = Arc::into_raw(obj.clone()).cast_mut();
        let t = KBox::pin_init(
            pin_init!(Timer {
                timer: Opaque::uninit(),
                payload: Atomic::new(raw),
                // SAFETY: `slot` is valid for writes and pinned.
                fired <- Opaque::ffi_init(|slot| unsafe { bindings::init_completion(slot) }),
            }),
            GFP_KERNEL,
        )?;
        let tp = t.timer.get();
        // SAFETY: `tp` is valid, pinned and outlives the timer (cancelled
        // below before `t` is dropped).
        unsafe {
            bindings::hrtimer_setup(
                tp,
                Some(fire),
                bindings::CLOCK_MONOTONIC as i32,
                bindings::hrtimer_mode_HRTIMER_MODE_REL_HARD,
            );
            bindings::hrtimer_start_range_ns(
                tp,
                1000,
                0,
                bindings::hrtimer_mode_HRTIMER_MODE_REL_HARD,
            );
        }
        // SAFETY: `fired` is initialised; the timer completes it.
        unsafe { bindings::wait_for_completion(t.fired.get()) };
        // SAFETY: `tp` was set up above.
        unsafe { bindings::hrtimer_cancel(tp) };
        assert!(t.payload.load(Relaxed).is_null());
        assert_eq!(*lock.lock(), 0);
        drop(obj); // the last reference, with interrupts enabled
        assert_eq!(*lock.lock(), 1);
        Ok(())
    }
}
