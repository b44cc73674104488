// SPDX-License-Identifier: GPL-2.0

//! Lock classes chosen by source location ("implicit" classes).
//!
//! [`Lock::new_implicit`](super::lock::Lock::new_implicit),
//! [`CondVar::new_implicit`](super::CondVar::new_implicit) and, with
//! `CONFIG_RUST_ARC_LOCKDEP`, every [`Arc`](super::Arc) constructor are
//! `#[track_caller]`: the caller's [`Location`] picks a lockdep class named
//! after it (`file:line:column`), one class per source location, without a
//! macro. The `new_*!` macros and [`static_lock_class!`](crate::static_lock_class)
//! keep working as before.
//!
//! # How the objections to implicit classes are answered
//!
//! - **Same line, same class.** `Location` addresses are not unique: the same
//!   source location can be emitted by several crates (generic code is
//!   instantiated in every user) or several times after inlining. Classes are
//!   therefore keyed on the location's *content* (file name, line, column),
//!   never on its address, so one source location always maps to one class.
//! - **Callable in atomic context.** The lookup takes no lock at all: the
//!   table is a fixed array of lists that only grow, read with acquire loads
//!   and extended with a compare-and-exchange. A new entry is allocated with
//!   `GFP_ATOMIC` and its key registered with `lockdep_register_key`, which
//!   takes only lockdep's internal raw lock. The KUnit suite looks a new
//!   class up under a spinlock with `CONFIG_DEBUG_ATOMIC_SLEEP`.
//! - **Fallible allocation, infallible caller.** If the entry cannot be
//!   allocated, the caller gets one of a few static fallback classes (chosen
//!   by the location's hash) instead of an error. What that degrades: the
//!   locks of every location that fell back to the same slot share a class,
//!   so lockdep may report a dependency between unrelated locks (a false
//!   positive, named `rust_implicit_fallback`); it never misses one. A later
//!   lookup of the same location tries to allocate again. The same fallback
//!   serves a lookup that races with another CPU registering the class (or
//!   registering it again after a reload): the lookup never waits.
//! - **Module unload.** An entry records the module its location's file name
//!   lives in. When a Rust module unloads, [`release_module`] (called by the
//!   `module!` glue after the module is dropped, or after a failed init)
//!   unregisters the keys of that module's entries with
//!   `lockdep_unregister_key`, so no class dangles. The entry itself stays
//!   (unregistered) and is registered again if the module is loaded again, so
//!   loading and unloading does not grow lockdep's class count. An entry whose
//!   location is also reached from outside the module (generic code
//!   instantiated both in the module and elsewhere) is pinned and never
//!   unregistered. The module's own locks must be gone when it unloads, as
//!   its code must; that is the same rule as for its static classes. The
//!   classes of `Arc`s are never unregistered (an `Arc` a module made may
//!   be kept by the rest of the kernel after it unloads); reloading finds
//!   the same entry, so they do not grow the class count either.
//!   [`Lock::new_implicit`](super::lock::Lock::new_implicit) is safe under
//!   that rule, as `new_mutex!` is; [`class_at`], which hands the key itself
//!   to any user, is `unsafe` and states it as its contract.
//!
//! # Without lockdep
//!
//! Without `CONFIG_LOCKDEP` a class is never looked at, so there is nothing
//! to look up: no table, no hashing, no allocation, and the constructors are
//! not `#[track_caller]`. [`class_at`] returns one static class and compiles
//! to a constant (`cargo xtask test` checks that a lock made with
//! [`new_implicit`](super::lock::Lock::new_implicit) compiles to the same
//! code as one made with [`new_spinlock!`](crate::new_spinlock)).
//!
//! # Examples
//!
//! ```
//! use kernel::{prelude::*, sync::{Mutex, SpinLock}};
//!
//! /// Every queue's lock has the class of this line, as with `new_mutex!`.
//! #[pin_data]
//! struct Queue {
//!     #[pin]
//!     items: Mutex<KVec<u32>>,
//! }
//!
//! impl Queue {
//!     fn new() -> impl PinInit<Self> {
//!         pin_init!(Self { items <- Mutex::new_implicit(KVec::new()) })
//!     }
//! }
//!
//! let q = KBox::pin_init(Queue::new(), GFP_KERNEL)?;
//! let stats = KBox::pin_init(SpinLock::new_implicit(0u32), GFP_KERNEL)?;
//! let mut items = q.items.lock();
//! items.push(1, GFP_KERNEL)?;
//! *stats.lock() += 1; // another class: nests under the queue's lock
//! # Ok::<(), Error>(())
//! ```

use crate::{prelude::*, sync::LockClassKey};
use core::panic::Location;

#[cfg(CONFIG_LOCKDEP)]
mod table;
mod tests;

/// What a class is used for. A lock and an `Arc` made on the same source
/// location get different classes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Usage {
    /// A lock (mutex, spinlock, condition variable).
    Lock,
    /// The drop map of an [`Arc`](super::Arc) (`CONFIG_RUST_ARC_LOCKDEP`).
    Arc,
}

/// A class found or created by [`class_at`].
///
/// # Invariants
///
/// With `CONFIG_LOCKDEP`, `entry` is null (a fallback class) or points to a
/// table entry, which is never freed.
#[derive(Clone, Copy)]
pub struct ImplicitClass {
    key: Pin<&'static LockClassKey>,
    name: &'static CStr,
    #[cfg(CONFIG_LOCKDEP)]
    entry: *const table::Entry,
}

impl ImplicitClass {
    /// The lockdep key of the class.
    pub fn key(&self) -> Pin<&'static LockClassKey> {
        self.key
    }

    /// The class name: `file:line:column`, or `rust_implicit_fallback`.
    pub fn name(&self) -> &'static CStr {
        self.name
    }
}

// SAFETY: The class names an immutable, never-freed entry and a static key.
unsafe impl Send for ImplicitClass {}
// SAFETY: As above; every mutable field of the entry is atomic.
unsafe impl Sync for ImplicitClass {}

/// The class of `loc` for `usage`: found, made, or a fallback. Never fails
/// and never sleeps.
///
/// # Safety
///
/// For [`Usage::Lock`], the key is unregistered when the module whose code
/// `loc` lies in unloads (the `module!` glue calls [`release_module`]). Every
/// lock initialised with the returned key must therefore be gone by the time
/// that module's exit has run; for a location in built-in code, and for
/// [`Usage::Arc`] keys, which are never unregistered, there is no such limit.
///
/// # Examples
///
/// ```
/// use kernel::sync::implicit_class::{class_at, Usage};
///
/// #[track_caller]
/// fn here() -> &'static core::panic::Location<'static> {
///     core::panic::Location::caller()
/// }
///
/// let (a, b) = (here(), here()); // two locations on one line
/// // SAFETY: The keys are only compared, never used for a lock.
/// let (ka, kb) = unsafe { (class_at(a, Usage::Lock), class_at(b, Usage::Lock)) };
/// let same = |x: &kernel::sync::LockClassKey, y| core::ptr::eq(x, y);
/// // One class per location, the same one every time (with lockdep; without
/// // it every location shares one static class).
/// assert_eq!(same(ka.key().get_ref(), kb.key().get_ref()), !cfg!(CONFIG_LOCKDEP));
/// // SAFETY: As above.
/// let again = unsafe { class_at(a, Usage::Lock) };
/// assert!(same(again.key().get_ref(), ka.key().get_ref()));
/// ```
#[cfg(CONFIG_LOCKDEP)]
pub unsafe fn class_at(loc: &'static Location<'static>, usage: Usage) -> ImplicitClass {
    table::lookup(&table::Site::from(loc), usage)
}

/// The class of `loc` for `usage`: without lockdep, one static class.
///
/// # Safety
///
/// None without lockdep; the contract of the lockdep version applies to
/// callers that must build both ways.
#[cfg(not(CONFIG_LOCKDEP))]
#[inline(always)]
pub unsafe fn class_at(_loc: &'static Location<'static>, _usage: Usage) -> ImplicitClass {
    // SAFETY: In static storage and never dropped.
    static KEY: LockClassKey = unsafe { LockClassKey::new_static() };
    ImplicitClass {
        key: Pin::static_ref(&KEY),
        name: c"rust_implicit",
    }
}

/// The class of the caller's location, for a lock.
///
/// # Safety
///
/// As for [`class_at`]: the key must not be used after the caller's module
/// has unloaded.
#[cfg_attr(CONFIG_LOCKDEP, track_caller)]
#[inline]
pub unsafe fn caller_lock_class() -> ImplicitClass {
    // SAFETY: Same contract (caller).
    unsafe { class_at(Location::caller(), Usage::Lock) }
}

/// Unregisters the classes of `module`'s locations. Called by the `module!`
/// glue when a Rust module goes away (after its `Drop`, or after its init
/// failed); the module's locks must be gone by then.
///
/// # Safety
///
/// Must be called from process context, once the module's code no longer
/// runs, and never for a module that is still in use.
#[inline]
pub unsafe fn release_module(module: *mut crate::bindings::module) {
    #[cfg(CONFIG_LOCKDEP)]
    // SAFETY: Same contract (caller).
    unsafe {
        table::release_module(module)
    };
    #[cfg(not(CONFIG_LOCKDEP))]
    let _ = module;
}

/// How many entries the table holds and how many are registered, and how
/// many lookups fell back (all zero without lockdep).
pub fn stats() -> (usize, usize, i64) {
    #[cfg(CONFIG_LOCKDEP)]
    let stats = table::stats();
    #[cfg(not(CONFIG_LOCKDEP))]
    let stats = (0, 0, 0);
    stats
}

impl<T, B: super::lock::Backend> super::lock::Lock<T, B> {
    /// Creates a lock whose lockdep class is the caller's source location
    /// (named `file:line:column`), with no macro and no class argument.
    ///
    /// One class per source location: every lock made on the same line and
    /// column shares it, as with [`new_mutex!`](crate::new_mutex). It works in
    /// any context, atomic included, and never fails; see the
    /// [module documentation](self) for how.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{prelude::*, sync::{Mutex, SpinLock}};
    ///
    /// fn counter() -> impl PinInit<Mutex<u32>> {
    ///     Mutex::new_implicit(0) // one class for every counter
    /// }
    ///
    /// let a = KBox::pin_init(counter(), GFP_KERNEL)?;
    /// let b = KBox::pin_init(counter(), GFP_KERNEL)?;
    /// let s = KBox::pin_init(SpinLock::new_implicit(0u8), GFP_KERNEL)?;
    /// // `a` and `b` share a class: take them one at a time.
    /// *a.lock() += 1;
    /// *b.lock() += 2;
    /// *s.lock() = 3;
    /// let sum = *a.lock();
    /// assert_eq!(sum + *b.lock(), 3);
    /// // Locks of different classes nest.
    /// let (ga, gs) = (a.lock(), s.lock());
    /// assert_eq!(*ga + u32::from(*gs), 4);
    /// # Ok::<(), Error>(())
    /// ```
    #[cfg_attr(CONFIG_LOCKDEP, track_caller)]
    #[inline]
    pub fn new_implicit(t: impl PinInit<T>) -> impl PinInit<Self> {
        // SAFETY: The key is used by this lock only. A lock made by a
        // module's code must be gone when the module unloads, as with a
        // class from `static_lock_class!` (module documentation).
        let class = unsafe { caller_lock_class() };
        Self::new(t, class.name(), class.key())
    }
}

impl super::CondVar {
    /// Creates a condition variable whose lockdep class is the caller's
    /// source location, like [`Lock::new_implicit`](super::lock::Lock::new_implicit).
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{prelude::*, sync::{CondVar, Mutex}};
    ///
    /// let m = KBox::pin_init(Mutex::new_implicit(false), GFP_KERNEL)?;
    /// let cv = KBox::pin_init(CondVar::new_implicit(), GFP_KERNEL)?;
    /// *m.lock() = true;
    /// cv.notify_all();
    /// let g = m.lock();
    /// assert!(*g);
    /// # Ok::<(), Error>(())
    /// ```
    #[cfg_attr(CONFIG_LOCKDEP, track_caller)]
    #[inline]
    pub fn new_implicit() -> impl PinInit<Self> {
        // SAFETY: As for `Lock::new_implicit`.
        let class = unsafe { caller_lock_class() };
        Self::new(class.name(), class.key())
    }
}
