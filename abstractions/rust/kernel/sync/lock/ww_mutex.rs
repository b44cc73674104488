// SPDX-License-Identifier: GPL-2.0

//! Wound/wait mutexes.
//!
//! A wound/wait mutex ([`Mutex`]) can be locked together with other mutexes of
//! the same [`Class`] in any order without deadlock: every [`AcquireCtx`] gets
//! a stamp from the class, and when two contexts contend, the younger one is
//! told to back off with [`EDEADLK`]. It must then release every lock it holds,
//! wait for the contended lock with [`AcquireCtx::lock_slow`] (keeping its
//! stamp, so it ages and eventually wins) and try the rest again.
//! [`LockSet::lock_all`] runs that loop for you and is the entry point most
//! code wants.
//!
//! # Forgotten guards
//!
//! A locked `ww_mutex` points to the acquire context holding it, and other
//! lockers read that context's stamp. If a guard could be leaked (with
//! [`core::mem::forget`]) and its context then freed, the mutex would point
//! to freed memory. This module rules that out:
//!
//! - an [`AcquireCtx`] lives on the heap, and guards borrow it, so it
//!   cannot be dropped while a guard exists;
//! - when it is dropped, C's own count of the locks it holds
//!   (`ctx->acquired`) tells whether a guard was forgotten: if none was, it
//!   ends with `ww_acquire_fini` and is freed; if one was, it is leaked (with
//!   a warning), so the locked mutex keeps pointing to valid memory, and the
//!   mutex stays locked, as after forgetting any guard;
//! - forgetting the context itself leaks its allocation the same way;
//! - a [`LockSet`] owns its locks and releases them before its context ends.
//!
//! This costs nothing per lock: no list of held locks is kept for guards.
//!
//! # Misuse that C catches at run time
//!
//! `lib/locking-selftest.c` has ww cases where lockdep or the ww debug code
//! must fire. With this API they are either impossible or refused before C
//! is called:
//!
//! - unlocking twice, `ww_acquire_fini` twice, locking after fini, fini with
//!   locks still held: impossible. Unlocking happens only when a guard is
//!   dropped (once), fini only when the context is dropped, after unlocking
//!   what it still holds.
//! - `ww_acquire_done` twice, locking after done, a mutex of another class,
//!   `lock_slow` of a mutex other than the contended one or with locks held:
//!   refused with [`EINVAL`].
//! - locking something else after [`EDEADLK`] without backing off: refused
//!   with [`EDEADLK`].
//!
//! Two cases stay run-time checks, because the types cannot see what else
//! the task holds: taking a mutex without a context while the same task has
//! an acquire context of that class open, and opening a second acquire
//! context of a class while one is open. Lockdep reports both as recursive
//! locking; the expected-splat boots of `cargo xtask test`
//! (`kunit/splats.toml`, module `rust_lockdep_splats`) check those reports.
//!
//! C reference: [`include/linux/ww_mutex.h`](srctree/include/linux/ww_mutex.h)
//! and `Documentation/locking/ww-mutex-design.rst`.

use crate::{
    bindings,
    error::to_result,
    prelude::*,
    types::{NotThreadSafe, Opaque},
};
use core::{cell::UnsafeCell, marker::PhantomPinned, ptr::NonNull};

mod acquire_ctx;
mod class;
mod lock_set;
mod tests;

pub use acquire_ctx::{AcquireCtx, CtxGuard};
pub use class::{Class, DynamicClass};
pub use lock_set::LockSet;

/// Something that can be locked as a wound/wait mutex: a [`Mutex`] made in
/// Rust, a [`ForeignMutex`] embedded in a C object, or an object that wraps
/// one with its own unlock bookkeeping (a `dma_resv`, see
/// [`kernel::dma_resv`](crate::dma_resv)).
///
/// # Safety
///
/// For every value `l` of the type, as long as it is borrowed:
///
/// - `l.as_raw()` is an initialised `ww_mutex` of class `l.class()`, at an
///   address that does not change, which is not re-initialised or freed;
/// - `l.data_ptr()` points to data that only the holder of that mutex
///   accesses (any aligned pointer for zero-sized data);
/// - [`Lockable::unlock`], given `l.as_raw()` while the current task holds
///   it, releases it: `ww_mutex_unlock` plus whatever the object around the
///   mutex must do on unlock (as `dma_resv_unlock` resets the fence-slot
///   count it checks), and nothing else.
///
/// Locking always goes through the `ww_mutex_lock*` functions, as every
/// `dma_resv_lock*` does.
///
/// # Examples
///
/// Code that takes either kind of mutex:
///
/// ```
/// use kernel::{define_ww_class, prelude::*};
/// use kernel::sync::lock::ww_mutex::{AcquireCtx, Lockable, Mutex};
///
/// fn lock_twice<'a, L: Lockable>(ctx: &AcquireCtx<'a>, l: &'a L) -> Result {
///     let _g = ctx.lock(l)?;
///     assert_eq!(ctx.lock(l).err(), Some(EALREADY));
///     Ok(())
/// }
///
/// define_ww_class!(CLASS);
/// let m = KBox::pin_init(Mutex::new(0u8, &CLASS), GFP_KERNEL)?;
/// let ctx = AcquireCtx::new(&CLASS)?;
/// lock_twice(&ctx, &*m)?;
/// # Ok::<(), Error>(())
/// ```
pub unsafe trait Lockable {
    /// The data the lock protects.
    type Data: ?Sized;

    /// The `struct ww_mutex`.
    fn as_raw(&self) -> *mut bindings::ww_mutex;

    /// The class the mutex was initialised with.
    fn class(&self) -> &Class;

    /// The protected data.
    fn data_ptr(&self) -> *mut Self::Data;

    /// Releases `raw`; by default `ww_mutex_unlock`.
    ///
    /// # Safety
    ///
    /// `raw` must be `as_raw()` of a live value of this type, held by the
    /// current task.
    unsafe fn unlock(raw: *mut bindings::ww_mutex) {
        // SAFETY: Held by the current task (caller).
        unsafe { bindings::ww_mutex_unlock(raw) }
    }
}

/// A wound/wait mutex protecting a `T`.
///
/// Lock it alone with [`Mutex::lock`] and friends (no context, like C's
/// `ww_mutex_lock(lock, NULL)`), or together with others of its class through
/// an [`AcquireCtx`] or a [`LockSet`].
///
/// # Invariants
///
/// `inner` is an initialised `ww_mutex` of `class`; `data` is protected by it.
///
/// # Examples
///
/// ```
/// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::Mutex};
///
/// define_ww_class!(CLASS);
///
/// let m = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
/// *m.lock() += 1;
/// assert!(!m.is_locked());
/// assert_eq!(*m.try_lock()?, 1);
/// # Ok::<(), Error>(())
/// ```
#[pin_data]
#[repr(C)]
pub struct Mutex<'c, T: ?Sized> {
    #[pin]
    inner: Opaque<bindings::ww_mutex>,
    class: &'c Class,
    #[pin]
    _pin: PhantomPinned,
    data: UnsafeCell<T>,
}

// SAFETY: The mutex can move to another thread with its data when the data can.
unsafe impl<T: ?Sized + Send> Send for Mutex<'_, T> {}
// SAFETY: Shared references let any thread lock the mutex and get `&mut T`, so
// `T` must be `Send`; the mutex serialises all access, so `T: Sync` is not needed.
unsafe impl<T: ?Sized + Send> Sync for Mutex<'_, T> {}

impl<'c, T> Mutex<'c, T> {
    /// Creates a mutex of `class` protecting `data`.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::Mutex};
    /// define_ww_class!(CLASS);
    /// let m = KBox::pin_init(Mutex::new(KVec::<u8>::new(), &CLASS), GFP_KERNEL)?;
    /// m.lock().push(7, GFP_KERNEL)?;
    /// assert_eq!(m.lock()[..], [7]);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn new(data: T, class: &'c Class) -> impl PinInit<Self> {
        pin_init!(Mutex {
            inner <- Opaque::ffi_init(|slot: *mut bindings::ww_mutex| {
                // SAFETY: `slot` is valid for writes and pinned; `class` is an
                // initialised class that outlives the mutex (`'c`).
                unsafe { bindings::ww_mutex_init(slot, class.as_raw()) }
            }),
            class,
            _pin: PhantomPinned,
            data: UnsafeCell::new(data),
        })
    }
}

// SAFETY: `inner` is a `ww_mutex` of `class` (invariant), pinned with the
// mutex; `data` is protected by it; the default unlock is all it needs.
unsafe impl<T: ?Sized> Lockable for Mutex<'_, T> {
    type Data = T;

    fn as_raw(&self) -> *mut bindings::ww_mutex {
        self.inner.get()
    }

    fn class(&self) -> &Class {
        self.class
    }

    fn data_ptr(&self) -> *mut T {
        self.data.get()
    }
}

impl<T: ?Sized> Mutex<'_, T> {
    /// Whether the mutex is locked (by anyone).
    ///
    /// Like `dma_resv_is_locked`, this is a snapshot for assertions and
    /// heuristics, not a synchronisation primitive.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::Mutex};
    /// define_ww_class!(CLASS);
    /// let m = KBox::pin_init(Mutex::new((), &CLASS), GFP_KERNEL)?;
    /// let g = m.lock();
    /// assert!(m.is_locked());
    /// drop(g);
    /// assert!(!m.is_locked());
    /// # Ok::<(), Error>(())
    /// ```
    pub fn is_locked(&self) -> bool {
        is_locked(self)
    }

    /// Locks the mutex without an acquire context, sleeping until it is free.
    ///
    /// Without a context there is no deadlock detection, so this must not be
    /// mixed with other locks of the class held by the same task.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::Mutex};
    /// define_ww_class!(CLASS);
    /// let m = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
    /// {
    ///     let mut g = m.lock();
    ///     *g += 1;
    /// } // unlocked here
    /// assert_eq!(*m.lock(), 1);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn lock(&self) -> MutexGuard<'_, Self> {
        lock_no_ctx(self)
    }

    /// Like [`Mutex::lock`] but a signal interrupts the wait with [`EINTR`].
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::Mutex};
    /// define_ww_class!(CLASS);
    /// let m = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
    /// // Without a pending signal this is `lock`; with one it may return EINTR.
    /// *m.lock_interruptible()? = 7;
    /// assert_eq!(*m.lock(), 7);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn lock_interruptible(&self) -> Result<MutexGuard<'_, Self>> {
        lock_no_ctx_interruptible(self)
    }

    /// Locks the mutex if it is free, else returns [`EBUSY`].
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::Mutex};
    /// define_ww_class!(CLASS);
    /// let m = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
    /// let g = m.lock();
    /// assert_eq!(m.try_lock().err(), Some(EBUSY));
    /// drop(g);
    /// assert!(m.try_lock().is_ok());
    /// # Ok::<(), Error>(())
    /// ```
    pub fn try_lock(&self) -> Result<MutexGuard<'_, Self>> {
        try_lock_no_ctx(self)
    }
}

/// A `ww_mutex` embedded in a C object (for example the lock of a
/// `struct dma_resv`), used through this module's API.
///
/// It protects no Rust data: the C object's own rules say what it protects.
///
/// # Invariants
///
/// `ptr` points to an initialised `ww_mutex` of `class`, valid for `'a`.
///
/// # Examples
///
/// Here the "C" mutex is the one inside a Rust [`Mutex`]. A C object whose
/// unlock does more than `ww_mutex_unlock` needs its own [`Lockable`] type
/// instead: a `dma_resv` is [`Resv`](crate::dma_resv::Resv), which unlocks
/// with `dma_resv_unlock`.
///
/// ```
/// use kernel::{define_ww_class, prelude::*};
/// use kernel::sync::lock::ww_mutex::{ForeignMutex, Lockable, Mutex};
///
/// define_ww_class!(CLASS);
/// let m = KBox::pin_init(Mutex::new((), &CLASS), GFP_KERNEL)?;
/// // SAFETY: `m` is a `ww_mutex` of `CLASS` and outlives `f`.
/// let f = unsafe { ForeignMutex::from_raw(m.as_raw(), &CLASS) }.ok_or(EINVAL)?;
/// let g = f.lock();
/// assert!(m.is_locked());
/// drop(g);
/// assert!(f.try_lock().is_ok());
/// # Ok::<(), Error>(())
/// ```
pub struct ForeignMutex<'a> {
    ptr: NonNull<bindings::ww_mutex>,
    class: &'a Class,
}

// SAFETY: The handle only names a kernel mutex, which may be locked and
// unlocked from any task.
unsafe impl Send for ForeignMutex<'_> {}
// SAFETY: As above: sharing the handle only lets other tasks lock the mutex.
unsafe impl Sync for ForeignMutex<'_> {}

impl<'a> ForeignMutex<'a> {
    /// Wraps an existing C `ww_mutex`.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a `ww_mutex` initialised with `class`, valid (not
    /// freed, not re-initialised) for `'a`.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{ForeignMutex, Lockable, Mutex}};
    /// define_ww_class!(CLASS);
    /// let inner = KBox::pin_init(Mutex::new((), &CLASS), GFP_KERNEL)?;
    /// // SAFETY: `inner` is a `ww_mutex` of `CLASS` and outlives `f`.
    /// let f = unsafe { ForeignMutex::from_raw(inner.as_raw(), &CLASS) }.ok_or(EINVAL)?;
    /// assert!(core::ptr::eq(f.as_raw(), inner.as_raw()));
    /// // SAFETY: a null pointer is refused rather than wrapped.
    /// assert!(unsafe { ForeignMutex::from_raw(core::ptr::null_mut(), &CLASS) }.is_none());
    /// # Ok::<(), Error>(())
    /// ```
    pub unsafe fn from_raw(ptr: *mut bindings::ww_mutex, class: &'a Class) -> Option<Self> {
        // INVARIANT: guaranteed by the caller.
        NonNull::new(ptr).map(|ptr| ForeignMutex { ptr, class })
    }

    /// Whether the mutex is locked (by anyone).
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{ForeignMutex, Lockable, Mutex}};
    /// define_ww_class!(CLASS);
    /// // Stands in for a C object's mutex, such as a `dma_resv`'s.
    /// let inner = KBox::pin_init(Mutex::new((), &CLASS), GFP_KERNEL)?;
    /// // SAFETY: `inner` is a `ww_mutex` of `CLASS` and outlives `f`.
    /// let f = unsafe { ForeignMutex::from_raw(inner.as_raw(), &CLASS) }.ok_or(EINVAL)?;
    /// let g = inner.lock();
    /// assert!(f.is_locked());
    /// drop(g);
    /// assert!(!f.is_locked());
    /// # Ok::<(), Error>(())
    /// ```
    pub fn is_locked(&self) -> bool {
        is_locked(self)
    }

    /// Locks the mutex without an acquire context.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{ForeignMutex, Lockable, Mutex}};
    /// define_ww_class!(CLASS);
    /// // Stands in for a C object's mutex, such as a `dma_resv`'s.
    /// let inner = KBox::pin_init(Mutex::new((), &CLASS), GFP_KERNEL)?;
    /// // SAFETY: `inner` is a `ww_mutex` of `CLASS` and outlives `f`.
    /// let f = unsafe { ForeignMutex::from_raw(inner.as_raw(), &CLASS) }.ok_or(EINVAL)?;
    /// let g = f.lock();
    /// assert!(inner.is_locked());
    /// drop(g);
    /// assert!(!inner.is_locked());
    /// # Ok::<(), Error>(())
    /// ```
    pub fn lock(&self) -> MutexGuard<'_, Self> {
        lock_no_ctx(self)
    }

    /// Locks the mutex if it is free, else returns [`EBUSY`].
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{ForeignMutex, Lockable, Mutex}};
    /// define_ww_class!(CLASS);
    /// // Stands in for a C object's mutex, such as a `dma_resv`'s.
    /// let inner = KBox::pin_init(Mutex::new((), &CLASS), GFP_KERNEL)?;
    /// // SAFETY: `inner` is a `ww_mutex` of `CLASS` and outlives `f`.
    /// let f = unsafe { ForeignMutex::from_raw(inner.as_raw(), &CLASS) }.ok_or(EINVAL)?;
    /// let g = inner.lock();
    /// assert_eq!(f.try_lock().err(), Some(EBUSY));
    /// drop(g);
    /// assert!(f.try_lock().is_ok());
    /// # Ok::<(), Error>(())
    /// ```
    pub fn try_lock(&self) -> Result<MutexGuard<'_, Self>> {
        try_lock_no_ctx(self)
    }
}

// SAFETY: `ptr` is a `ww_mutex` of `class` valid for `'a` (invariant of
// `from_raw`); there is no data; a plain `ww_mutex` needs no more than the
// default unlock.
unsafe impl Lockable for ForeignMutex<'_> {
    type Data = ();

    fn as_raw(&self) -> *mut bindings::ww_mutex {
        self.ptr.as_ptr()
    }

    fn class(&self) -> &Class {
        self.class
    }

    fn data_ptr(&self) -> *mut () {
        NonNull::dangling().as_ptr()
    }
}

pub(crate) fn is_locked<L: Lockable + ?Sized>(l: &L) -> bool {
    // SAFETY: `as_raw` is an initialised `ww_mutex` (invariants of the implementors).
    unsafe { bindings::ww_mutex_is_locked(l.as_raw()) }
}

pub(crate) fn lock_no_ctx<L: Lockable + ?Sized>(l: &L) -> MutexGuard<'_, L> {
    // SAFETY: `as_raw` is an initialised `ww_mutex`. Without a context the
    // call cannot fail.
    let _ = unsafe { bindings::ww_mutex_lock(l.as_raw(), core::ptr::null_mut()) };
    // INVARIANT: the lock is now held by this task.
    MutexGuard {
        lock: l,
        _not_send: NotThreadSafe,
    }
}

pub(crate) fn lock_no_ctx_interruptible<L: Lockable + ?Sized>(l: &L) -> Result<MutexGuard<'_, L>> {
    // SAFETY: `as_raw` is an initialised `ww_mutex`.
    to_result(unsafe { bindings::ww_mutex_lock_interruptible(l.as_raw(), core::ptr::null_mut()) })?;
    // INVARIANT: the call succeeded, so the lock is held by this task.
    Ok(MutexGuard {
        lock: l,
        _not_send: NotThreadSafe,
    })
}

fn try_lock_no_ctx<L: Lockable + ?Sized>(l: &L) -> Result<MutexGuard<'_, L>> {
    // SAFETY: `as_raw` is an initialised `ww_mutex`.
    if unsafe { bindings::ww_mutex_trylock(l.as_raw(), core::ptr::null_mut()) } == 0 {
        return Err(EBUSY);
    }
    // INVARIANT: the trylock succeeded, so the lock is held by this task.
    Ok(MutexGuard {
        lock: l,
        _not_send: NotThreadSafe,
    })
}

/// A wound/wait mutex locked without an acquire context.
///
/// # Invariants
///
/// The current task holds `lock`, locked without a context; dropping the
/// guard unlocks it.
///
/// # Examples
///
/// ```
/// use kernel::{define_wd_class, prelude::*, sync::lock::ww_mutex::Mutex};
///
/// define_wd_class!(CLASS);
/// let m = KBox::pin_init(Mutex::new(KVec::<u32>::new(), &CLASS), GFP_KERNEL)?;
/// m.lock().push(1, GFP_KERNEL)?;
/// assert_eq!(m.lock().len(), 1);
/// # Ok::<(), Error>(())
/// ```
#[must_use = "the lock is released when the guard is dropped"]
pub struct MutexGuard<'a, L: Lockable + ?Sized> {
    lock: &'a L,
    _not_send: NotThreadSafe,
}

impl<L: Lockable + ?Sized> core::ops::Deref for MutexGuard<'_, L> {
    type Target = L::Data;

    fn deref(&self) -> &L::Data {
        // SAFETY: the lock is held (type invariant), so no one else accesses the data.
        unsafe { &*self.lock.data_ptr() }
    }
}

impl<L: Lockable + ?Sized> core::ops::DerefMut for MutexGuard<'_, L>
where
    L::Data: Unpin,
{
    fn deref_mut(&mut self) -> &mut L::Data {
        // SAFETY: the lock is held (type invariant) and `&mut self` is unique.
        // The data is `Unpin`, so handing out `&mut` cannot unpin it.
        unsafe { &mut *self.lock.data_ptr() }
    }
}

impl<L: Lockable + ?Sized> Drop for MutexGuard<'_, L> {
    fn drop(&mut self) {
        // SAFETY: the lock is held by this task (type invariant).
        unsafe { L::unlock(self.lock.as_raw()) };
    }
}
