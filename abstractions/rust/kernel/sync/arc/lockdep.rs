// SPDX-License-Identifier: GPL-2.0

//! Lockdep tracking of [`Arc`] drops (`CONFIG_RUST_ARC_LOCKDEP`).
//!
//! Dropping an `Arc` may run its contents' destructor, which may take locks.
//! Whether it does depends on whether the drop is the last one, which tests
//! rarely control, so a drop made while holding a lock that the destructor
//! also takes deadlocks only on the run where it happens to be last. To show
//! lockdep every drop that *might* be last, each `Arc` allocation carries a
//! lockdep map whose class is the `Arc`'s construction site (an implicit
//! class, see [`implicit_class`](crate::sync::implicit_class), named
//! `file:line:column`). The map is not a lock: nobody ever waits for it. It
//! stands for "the destructor of an `Arc` made here may run now":
//!
//! - every drop made while the task holds a lock is a `lock_sync()` of the
//!   map (an acquisition that ends at once, as `synchronize_srcu()` does for
//!   SRCU), so "lock L held while dropping this Arc" becomes the dependency
//!   L -> map even when the count does not reach zero;
//! - the last drop holds the map around the destructor, so every lock the
//!   destructor takes is recorded as map -> lock.
//!
//! A lock L held at a drop site and taken by the destructor of an `Arc` made
//! at the same site therefore closes the cycle L -> map -> L, and an
//! inversion between two locks through a drop (A -> map -> B while B -> A
//! elsewhere) closes A -> map -> B -> A: lockdep reports both on the first
//! run that exercises the two paths, last drop or not. Both acquisitions are
//! non-recursive reads, so that every path through the map is a strong one
//! for lockdep's cycle search (a recursive read would cut L -> map -> L);
//! that two drops of one class nest is allowed by the class's comparison
//! function (see "Nesting").
//!
//! # Interrupt context
//!
//! A virtqueue interrupt handler that drops a fence reference under its
//! queue's `SpinLockIrq` is the pattern this must accept. For lockdep's
//! interrupt checks a map held with interrupts enabled (any last drop in a
//! thread) is "HARDIRQ-READ-unsafe", and the queue lock taken in the
//! interrupt is "HARDIRQ-safe": queue lock -> map would read as a possible
//! irq lock inversion, although the map can never block anyone. So the map's
//! lockdep type is `LD_LOCK_WAIT_OVERRIDE`, the type of lockdep's own
//! annotations that are "not actually a lock": the interrupt-safety searches
//! skip such classes (`usage_skip()` in `kernel/locking/lockdep.c`) while
//! the cycle search does not. Its wait types are both `LD_WAIT_INV`, so it
//! overrides no wait context (`check_wait_context()` only looks at classes
//! with an inner wait type).
//!
//! What interrupt bugs stay caught:
//!
//! - a lock held at a drop in an interrupt (or anywhere) that the
//!   destructor takes is a cycle, reported even when that drop was not the
//!   last (the `arc_destructor_takes_the_irq_lock` expected-splat case);
//! - a destructor that really runs in an interrupt takes its locks there,
//!   and lockdep checks those acquisitions as it checks any other: an
//!   interrupt-unsafe lock taken by it is an inconsistent lock state;
//! - the hold around the destructor is a trylock-style acquisition, so
//!   lockdep also records the dependencies from the locks held at the last
//!   drop to the destructor's locks directly (lockdep adds a direct edge
//!   from every held lock down to the first non-trylock one): an
//!   interrupt-safe lock held at a last drop whose destructor takes an
//!   interrupt-unsafe lock is an ordinary irq inversion.
//!
//! What is not inferred: that a drop under an interrupt-safe lock, which was
//! not the last, could have run a destructor that takes an interrupt-unsafe
//! lock. That needs the map's own interrupt usage, which is exactly what
//! produced the false reports above.
//!
//! # Nesting
//!
//! A destructor that drops another `Arc` of its own class (a list of nodes
//! made at one site) syncs the map while holding it. That is not a lock
//! recursion (the map is not a lock), so each class gets a comparison
//! function that allows any same-class nesting. The nested last drop does
//! not hold a second map of the class when the top of the task's lock stack
//! already is one: it is the same lockdep class, so every dependency is
//! recorded already, and a list of any length takes one entry of lockdep's
//! stack of held locks (`MAX_LOCK_DEPTH` is 48) instead of one per node.
//! (When an interrupt arrives during such a destructor and drops the last
//! reference of an `Arc` of the same class, the interrupt's destructor is
//! not tracked: lockdep keeps interrupt chains apart from the task's.)
//!
//! # Cost
//!
//! A drop made in task context with no lock held does nothing more than an
//! `Arc` without the option, but reading the lockdep depth of the task: with
//! nothing held it could add no dependency. Every other drop costs one
//! `lock_sync()` (one lockdep validation, no held-lock bookkeeping), and the
//! last one a lockdep acquire/release pair around the destructor. The map
//! makes the allocation bigger by one `struct lockdep_map`. With the option
//! off, none of this is compiled in and [`Arc`] is unchanged (`cargo xtask
//! test` compares the object code of a small user with the pristine
//! kernel's).

use super::ArcInner;
use crate::{
    alloc::{allocator::Kmalloc, Allocator},
    bindings,
    str::CStrExt,
    sync::implicit_class::{class_at, ImplicitClass, Usage},
    types::Opaque,
};
use core::{alloc::Layout, panic::Location, ptr::NonNull};

/// The lockdep map of one `Arc` allocation.
///
/// # Invariants
///
/// The map is initialised with a class that stays registered while the map
/// exists (an implicit class of the construction site).
#[repr(transparent)]
pub(super) struct DropMap(Opaque<bindings::lockdep_map>);

/// Allows any nesting of two maps of one Arc class (see the module docs).
///
/// # Safety
///
/// None: the maps are not read; lockdep calls it with two held maps.
unsafe extern "C" fn nest_any(
    _a: *const bindings::lockdep_map,
    _b: *const bindings::lockdep_map,
) -> core::ffi::c_int {
    -1
}

impl DropMap {
    /// A map of the class of the construction site `loc`.
    pub(super) fn new(loc: &'static Location<'static>) -> Self {
        // SAFETY: The key of an `Arc` class is never unregistered (an `Arc`
        // made by a module may outlive it), so no map outlives its key.
        let class = unsafe { class_at(loc, Usage::Arc) };
        let map = DropMap(Opaque::uninit());
        // SAFETY: `map.0` is valid for writes; the name and the key are
        // static (implicit classes are never freed, only unregistered at
        // module unload, after the module's objects are gone).
        unsafe {
            bindings::lockdep_init_map_type(
                map.0.get(),
                class.name().as_char_ptr(),
                class.key().as_ptr(),
                0,
                bindings::lockdep_wait_type_LD_WAIT_INV as u8,
                bindings::lockdep_wait_type_LD_WAIT_INV as u8,
                // Not a lock: skipped by the interrupt-safety searches.
                bindings::lockdep_lock_type_LD_LOCK_WAIT_OVERRIDE as u8,
            )
        };
        Self::allow_nesting(&map, &class);
        // INVARIANT: initialised with the site's class.
        map
    }

    fn allow_nesting(map: &DropMap, class: &ImplicitClass) {
        let set = || {
            // SAFETY: `map` is an initialised map (invariant); this only
            // sets the comparison function of its class.
            unsafe { bindings::lockdep_set_lock_cmp_fn(map.0.get(), Some(nest_any), None) }
        };
        // Once per class; the shared fallback classes every time.
        if class.is_fallback() {
            set();
        } else {
            class.once(set);
        }
    }

    /// The "ip" lockdep reports for the map: this file's probe function,
    /// so reports show an `Arc` drop; the backtrace gives the drop site.
    fn ip() -> crate::ffi::c_ulong {
        (Self::probe as fn(&Self)) as usize as crate::ffi::c_ulong
    }

    /// Records a drop that may be the last: the locks the task holds now
    /// come before the destructor's.
    ///
    /// Skipped in task context with no lock held (see "Cost" in the module
    /// documentation).
    pub(super) fn probe(&self) {
        // SAFETY: only reads the current task's state.
        if unsafe { bindings::lockdep_task_holds_nothing() } {
            return;
        }
        // SAFETY: the map is initialised (invariant). `read = 1`: a
        // non-recursive reader (module docs); `check = 1`: full validation.
        unsafe { bindings::lock_sync(self.0.get(), 0, 1, 1, core::ptr::null_mut(), Self::ip()) };
    }

    /// Holds the map while `f` runs the destructor, unless a map of the same
    /// class is already the innermost lock this task holds (a nested drop).
    fn held_around(&self, f: impl FnOnce()) {
        // SAFETY: the map is initialised; only the current task's lock stack
        // and the map of its innermost held lock, alive while held, are read.
        if unsafe { bindings::lockdep_nested_in_own_class(self.0.get()) } {
            f();
            return;
        }
        // SAFETY: the map is initialised (invariant). A trylock-style,
        // non-recursive read: see "Interrupt context" in the module docs.
        unsafe {
            bindings::lock_acquire(self.0.get(), 0, 1, 1, 1, core::ptr::null_mut(), Self::ip())
        };
        f();
        // SAFETY: the map is held by this task (acquired just above; the
        // destructor releases what it takes).
        unsafe { bindings::lock_release(self.0.get(), Self::ip()) };
    }
}

/// Runs the destructor of the last reference's contents with the map held,
/// then frees the allocation.
///
/// # Safety
///
/// `ptr` must point to a live `ArcInner` allocated with [`Kmalloc`] whose
/// count just dropped to zero; it is not used again after this call.
pub(super) unsafe fn drop_last<T: ?Sized>(ptr: NonNull<ArcInner<T>>) {
    let inner = ptr.as_ptr();
    // SAFETY: `inner` is live (caller).
    let layout = Layout::for_value(unsafe { &*inner });
    // SAFETY: `inner` is live; nothing else references it (count zero).
    let map = unsafe { &(*inner).lockdep };
    map.held_around(|| {
        // SAFETY: the contents are initialised and dropped exactly once, here.
        unsafe { core::ptr::drop_in_place(&raw mut (*inner).data) }
    });
    // SAFETY: the allocation came from `Kmalloc` with `layout` (the layout of
    // its value); the map is released, so no held lock lives in it, and it is
    // never used again.
    unsafe { Kmalloc::free(ptr.cast(), layout) };
}
