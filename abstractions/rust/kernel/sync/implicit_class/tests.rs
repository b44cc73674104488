// SPDX-License-Identifier: GPL-2.0

//! KUnit tests for implicit lock classes and for lockdep tracking of `Arc`
//! drops. Lockdep must stay quiet on all of them: every pattern here is
//! correct, and a report fails the boot.

use crate::prelude::*;

#[cfg(CONFIG_LOCKDEP)]
#[kunit_tests(rust_implicit_class)]
mod implicit {
    use crate::{
        prelude::*,
        str::CString,
        sync::{
            implicit_class::{
                caller_lock_class, class_at, stats,
                table::{lookup, Site},
                ImplicitClass, Usage,
            },
            Mutex, SpinLock, SpinLockIrq,
        },
    };
    use core::panic::Location;

    /// One source location, whoever calls.
    fn fixed_site() -> ImplicitClass {
        // SAFETY: Built-in code: the key is never unregistered.
        unsafe { caller_lock_class() }
    }

    #[track_caller]
    fn caller_site() -> ImplicitClass {
        // SAFETY: As above.
        unsafe { caller_lock_class() }
    }

    /// The class of a location in this (built-in) file.
    fn class(loc: &'static Location<'static>, usage: Usage) -> ImplicitClass {
        // SAFETY: As above.
        unsafe { class_at(loc, usage) }
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
        let class = class(loc, Usage::Lock);
        let expected = CString::try_from_fmt(fmt!(":{}:{}", loc.line(), loc.column()))?;
        let name = class.name().to_bytes();
        assert!(name.ends_with(expected.to_bytes()));
        assert!(core::str::from_utf8(name).is_ok_and(|s| s.contains("implicit_class/tests.rs:")));
        Ok(())
    }

    /// Keyed on content: the same file, line and column with the file name
    /// at another address (one source line emitted by two crates, each with
    /// its own copy of the string) gets the class of the original, so the
    /// lookup must compare the names' bytes; a lock and an `Arc` on one
    /// location get two classes.
    #[test]
    fn keyed_on_content_not_address() -> Result {
        let loc = Location::caller();
        // Leaked: a class entry may keep pointing at the name it saw.
        let buf: &'static mut [u8; 128] = KBox::leak(KBox::new([0u8; 128], GFP_KERNEL)?);
        let copy = buf.get_mut(..loc.file().len()).ok_or(EINVAL)?;
        copy.copy_from_slice(loc.file().as_bytes());
        let file: &'static str = core::str::from_utf8(copy).map_err(|_| EINVAL)?;
        assert!(!core::ptr::eq(file.as_ptr(), loc.file().as_ptr()));
        let elsewhere = Site {
            file,
            line: loc.line(),
            column: loc.column(),
        };
        let original = class(loc, Usage::Lock);
        assert!(same(&lookup(&elsewhere, Usage::Lock), &original));
        // One column further is another location.
        let next = Site {
            column: loc.column() + 1,
            ..elsewhere
        };
        assert!(!same(&lookup(&next, Usage::Lock), &original));
        assert!(!same(&class(loc, Usage::Arc), &original));
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
        interrupt::LocalInterruptDisabled,
        irq_work::{IrqWork, IrqWorkItem},
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
                workqueue::system_dfl().try_spawn(GFP_KERNEL, move || {
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

    /// Whether lockdep is still on (a "BUG: MAX_LOCK_DEPTH too low!" or any
    /// report turns it off for the rest of the boot).
    fn lockdep_on() -> bool {
        // SAFETY: `debug_locks` is a global int that lockdep only ever
        // clears; a racy read of an aligned int is what C's READ_ONCE does.
        unsafe { core::ptr::read_volatile(&raw const bindings::debug_locks) != 0 }
    }

    /// A list of nodes made at one site, dropped from the head: each node's
    /// destructor drops the next, nesting the class in itself once per node.
    /// 50 levels, more than the 48 locks lockdep can track per task: the
    /// nested drops must reuse the outer map instead of holding one each,
    /// or lockdep turns itself off.
    #[test]
    fn deep_nested_drops_hold_one_map() -> Result {
        struct Node {
            _next: Option<Arc<Node>>,
        }
        fn node(next: Option<Arc<Node>>) -> Result<Arc<Node>> {
            Ok(Arc::new(Node { _next: next }, GFP_KERNEL)?)
        }
        assert!(lockdep_on() || !cfg!(CONFIG_PROVE_LOCKING));
        let mut head = None;
        for _ in 0..50 {
            head = Some(node(head)?);
        }
        drop(head);
        assert!(lockdep_on() || !cfg!(CONFIG_PROVE_LOCKING));
        Ok(())
    }

    /// How many locks lockdep counts as held by the current task.
    fn held_depth() -> i32 {
        #[cfg(CONFIG_LOCKDEP)]
        // SAFETY: `current` is a valid task; only the task itself changes
        // its own `lockdep_depth`.
        let depth = unsafe { (*crate::task::Task::current_raw()).lockdep_depth };
        #[cfg(not(CONFIG_LOCKDEP))]
        let depth = 0;
        depth
    }

    /// A list of 1,000 nested `Arc`s of one class. Its destructor unlinks the
    /// rest iteratively (a recursive drop of 1,000 nodes would overflow the
    /// kernel stack, lockdep or not), so every node's last drop happens
    /// inside the head's destructor: each one must reuse the head's map (one
    /// held lock at most in any destructor), and lockdep stays on.
    #[test]
    fn thousand_nested_arcs_drop_with_one_map_held() -> Result {
        struct Link {
            next: Option<Arc<Link>>,
            dropped: Arc<Atomic<u32>>,
            deepest: Arc<Atomic<i32>>,
        }
        impl Drop for Link {
            fn drop(&mut self) {
                self.dropped.fetch_add(1, Relaxed);
                let depth = held_depth();
                if depth > self.deepest.load(Relaxed) {
                    self.deepest.store(depth, Relaxed);
                }
                let mut next = self.next.take();
                while let Some(n) = next {
                    next = Arc::into_unique_or_drop(n)
                        .and_then(|mut u| u.as_mut().get_mut().next.take());
                }
            }
        }
        let dropped = Arc::new(Atomic::new(0u32), GFP_KERNEL)?;
        let deepest = Arc::new(Atomic::new(0i32), GFP_KERNEL)?;
        let mut head = None;
        for _ in 0..1000 {
            head = Some(Arc::new(
                Link {
                    next: head,
                    dropped: dropped.clone(),
                    deepest: deepest.clone(),
                },
                GFP_KERNEL,
            )?);
        }
        let base = held_depth();
        drop(head);
        assert_eq!(dropped.load(Relaxed), 1000);
        // With the option, the head's map; without it, nothing.
        let expected = i32::from(cfg!(CONFIG_RUST_ARC_LOCKDEP) && lockdep_on());
        assert_eq!(deepest.load(Relaxed) - base, expected);
        assert!(lockdep_on() || !cfg!(CONFIG_PROVE_LOCKING));
        Ok(())
    }

    /// An interrupt handler's queue: an IRQ-safe lock and the reference it
    /// holds.
    #[pin_data]
    struct Handler<T: Send + Sync> {
        #[pin]
        queue: SpinLockIrq<Option<Arc<T>>>,
        #[pin]
        done: Completion,
    }

    impl<T: Send + Sync> IrqWorkItem for Handler<T> {
        /// Drops the queued reference under the queue lock, taken with
        /// `lock_with` as a virtqueue callback would.
        fn run(&self, irq: &LocalInterruptDisabled) {
            let mut queue = self.queue.lock_with(irq);
            drop(queue.take());
            drop(queue);
            self.done.complete_all();
        }
    }

    /// Runs `Handler` once in hard-IRQ context on `obj`, which must not be
    /// the last reference.
    fn drop_in_irq_under_lock<T: Send + Sync>(obj: Arc<T>) -> Result {
        let work = KBox::pin_init(
            IrqWork::new(pin_init!(Handler {
                queue <- SpinLockIrq::new_implicit(Some(obj)),
                done <- Completion::new(),
            })),
            GFP_KERNEL,
        )?;
        work.queue();
        work.item().done.wait_for_completion();
        assert!(work.item().queue.lock().is_none());
        Ok(())
    }

    /// The driver's interrupt path: a thread drops the last reference of an
    /// object of one class (its map held with interrupts enabled), then an
    /// interrupt handler takes its IRQ-safe queue lock with `lock_with` and
    /// drops a reference of that class that is not the last. Lockdep must
    /// stay quiet: the map never blocks anyone. (It used to report "possible
    /// irq lock inversion dependency detected".)
    #[test]
    fn non_last_drop_under_irq_lock_in_hard_irq() -> Result {
        struct Fence(u32);
        fn fence(seqno: u32) -> Result<Arc<Fence>> {
            Ok(Arc::new(Fence(seqno), GFP_KERNEL)?)
        }
        drop(fence(1)?); // the last reference, interrupts enabled
        let f = fence(2)?;
        drop_in_irq_under_lock(f.clone())?;
        assert_eq!(f.0, 2);
        drop(f); // the last reference, in the thread
                 // A report would also have turned lockdep off.
        assert!(lockdep_on() || !cfg!(CONFIG_PROVE_LOCKING));
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
