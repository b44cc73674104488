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
//! `file:line:column`):
//!
//! - every drop acquires and releases the map before decrementing the
//!   count, so "lock L held while dropping this Arc" becomes the recorded
//!   dependency L -> map even when the count does not reach zero;
//! - the last drop holds the map around the destructor, so every lock the
//!   destructor takes is recorded as map -> lock.
//!
//! A lock L held at a drop site and taken by the destructor of an `Arc` made
//! at the same site therefore closes the cycle L -> map -> L, and an
//! inversion between two locks through a drop (A -> map -> B while B -> A
//! elsewhere) closes A -> map -> B -> A: lockdep reports both on the first
//! run that exercises the two paths, last drop or not.
//!
//! # Interrupt context
//!
//! The map is acquired as a *reader* (non-recursive), never as a writer. A
//! virtqueue interrupt handler dropping a fence reference is a legitimate
//! pattern; with writer acquisitions lockdep would see the map used both in
//! hard-IRQ context and with interrupts enabled and report an "inconsistent
//! lock state" for a lock that does not exist. Reader acquisitions in both
//! contexts are consistent for lockdep, and a non-recursive reader still
//! closes cycles, so the drop-site checks above keep working. What stays
//! caught is a real inversion: an `Arc` dropped in an interrupt whose
//! destructor takes a lock that is held elsewhere with interrupts enabled
//! (map in hard-IRQ, map -> L, L taken with IRQs on) is reported as an
//! IRQ-safe to IRQ-unsafe dependency.
//!
//! # Nesting
//!
//! A destructor that drops another `Arc` of its own class (a list of nodes
//! made at one site) acquires the map while holding it. That is not a lock
//! recursion (the map is not a lock), so each class gets a comparison
//! function that allows any same-class nesting.
//!
//! # Cost
//!
//! A drop that is not the last, made in task context with no lock held,
//! skips the acquire/release pair: with nothing held it could add no
//! dependency, and outside interrupts no interrupt-context use. (It would
//! only mark the map as used with interrupts enabled, which matters for
//! locks that interrupts take, and a fake read lock never blocks anyone.)
//! Every other drop costs one lockdep acquire/release pair, and the last one
//! a second pair around the destructor. The map makes the allocation bigger
//! by one `struct lockdep_map`. With the option off, none of this is
//! compiled in and [`Arc`] is unchanged (`cargo xtask test` compares the
//! object code of a small user with the pristine kernel's).

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
        let class = class_at(loc, Usage::Arc);
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
                bindings::lockdep_lock_type_LD_LOCK_NORMAL as u8,
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

    /// The "ip" lockdep reports for the map: this file's acquire function,
    /// so reports show an `Arc` drop; the backtrace gives the drop site.
    fn ip() -> crate::ffi::c_ulong {
        (Self::acquire as fn(&Self)) as usize as crate::ffi::c_ulong
    }

    fn acquire(&self) {
        // SAFETY: the map is initialised (invariant). `read = 1`: a
        // non-recursive reader (module docs); `check = 1`: full validation.
        unsafe {
            bindings::lock_acquire(self.0.get(), 0, 0, 1, 1, core::ptr::null_mut(), Self::ip())
        };
    }

    fn release(&self) {
        // SAFETY: the map is initialised and held by this task (acquired just before).
        unsafe { bindings::lock_release(self.0.get(), Self::ip()) };
    }

    /// Records a drop that may be the last: acquire and release at once.
    ///
    /// Skipped in task context with no lock held (see "Cost" in the module
    /// documentation).
    pub(super) fn probe(&self) {
        // SAFETY: only reads the current task's state.
        if unsafe { bindings::lockdep_task_holds_nothing() } {
            return;
        }
        self.acquire();
        self.release();
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
    map.acquire();
    // SAFETY: the contents are initialised and dropped exactly once, here.
    unsafe { core::ptr::drop_in_place(&raw mut (*inner).data) };
    map.release();
    // SAFETY: the allocation came from `Kmalloc` with `layout` (the layout of
    // its value); the map is released, so no held lock lives in it, and it is
    // never used again.
    unsafe { Kmalloc::free(ptr.cast(), layout) };
}
