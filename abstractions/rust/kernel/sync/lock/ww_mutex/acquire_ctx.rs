// SPDX-License-Identifier: GPL-2.0

//! Acquire contexts: locking several wound/wait mutexes of one class.

use super::{Class, Lockable};
use crate::{bindings, error::to_result, prelude::*, types::Opaque};
use core::{cell::Cell, marker::PhantomData, mem::ManuallyDrop, ptr::NonNull};

/// How a lock call waits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Normal,
    Interruptible,
    Slow,
    SlowInterruptible,
    Try,
}

/// An acquire context (`struct ww_acquire_ctx`): one attempt at locking a set
/// of mutexes of one [`Class`].
///
/// Every mutex locked in it must outlive `'a`, hence the context. The context
/// lives on the heap; dropping it ends it with `ww_acquire_fini` when it
/// holds nothing, and otherwise (a [`CtxGuard`] was forgotten) leaks it, so
/// the mutexes that point to it never point to freed memory; see the
/// [module documentation](super).
///
/// The context belongs to the task that made it (lockdep tracks it as a lock
/// of that task), so it is neither `Send` nor `Sync`.
///
/// # Invariants
///
/// - `ctx` is a `ww_acquire_ctx` initialised with `class` by the current task
///   and not yet finished; it is only freed after `ww_acquire_fini`, when no
///   mutex holds a pointer to it.
/// - `contended` is the mutex whose lock attempt last returned `EDEADLK`, until
///   it is locked with one of the `lock_slow` variants.
///
/// # Examples
///
/// Locking two mutexes by hand, with the back-off the protocol requires:
///
/// ```
/// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{AcquireCtx, Mutex}};
///
/// define_ww_class!(CLASS);
///
/// let a = KBox::pin_init(Mutex::new(1u32, &CLASS), GFP_KERNEL)?;
/// let b = KBox::pin_init(Mutex::new(2u32, &CLASS), GFP_KERNEL)?;
///
/// let ctx = AcquireCtx::new(&CLASS)?;
/// let (ga, gb) = loop {
///     let ga = match ctx.lock(&*a) {
///         Ok(g) => g,
///         // Nothing else is held: wait for `a` and start over.
///         Err(e) if e == EDEADLK => { drop(ctx.lock_slow(&*a)?); continue; }
///         Err(e) => return Err(e),
///     };
///     match ctx.lock(&*b) {
///         Ok(gb) => break (ga, gb),
///         Err(e) if e == EDEADLK => {
///             drop(ga);
///             drop(ctx.lock_slow(&*b)?);
///         }
///         Err(e) => return Err(e),
///     }
/// };
/// ctx.done()?;
/// assert_eq!(*ga + *gb, 3);
/// # Ok::<(), Error>(())
/// ```
///
/// [`LockSet::lock_all`](super::LockSet::lock_all) does the same without the
/// hand-written loop.
pub struct AcquireCtx<'a> {
    ctx: ManuallyDrop<Pin<KBox<Opaque<bindings::ww_acquire_ctx>>>>,
    class: &'a Class,
    contended: Cell<Option<NonNull<bindings::ww_mutex>>>,
    done: Cell<bool>,
    /// Mutexes locked in the context must outlive `'a`. Invariant in `'a`:
    /// were it covariant, `&AcquireCtx<'long>` could be used as
    /// `&AcquireCtx<'short>` to lock a mutex that dies before the context,
    /// and dropping the context would then unlock freed memory.
    _mutexes: PhantomData<fn(&'a ()) -> &'a ()>,
}

/// Heap memory for one `ww_acquire_ctx` at a time.
///
/// A [`LockSet`](super::LockSet) keeps it between transactions, so that a
/// transaction allocates nothing once the set is made.
///
/// # Invariants
///
/// No mutex points to the memory, and no context is initialised in it.
pub(super) struct CtxMemory(Pin<KBox<Opaque<bindings::ww_acquire_ctx>>>);

impl CtxMemory {
    pub(super) fn new() -> Result<Self> {
        // INVARIANT: fresh memory; nothing points to it.
        Ok(CtxMemory(KBox::pin(Opaque::uninit(), GFP_KERNEL)?))
    }
}

impl<'a> AcquireCtx<'a> {
    /// Starts an acquire context of `class`, taking a new stamp from it.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{AcquireCtx, Mutex}};
    /// define_ww_class!(CLASS);
    /// let ctx = AcquireCtx::new(&CLASS)?;
    /// assert_eq!(ctx.held_count(), 0);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn new(class: &'a Class) -> Result<Self> {
        Ok(Self::start_in(CtxMemory::new()?, class))
    }

    /// Starts an acquire context of `class` in `memory`.
    pub(super) fn start_in(memory: CtxMemory, class: &'a Class) -> Self {
        // SAFETY: `memory` is valid for writes, pinned on the heap and holds
        // no live context (its invariant); `class` outlives the context.
        unsafe { bindings::ww_acquire_init(memory.0.get(), class.as_raw()) };
        // INVARIANT: the context was initialised with `class` by this task.
        AcquireCtx {
            ctx: ManuallyDrop::new(memory.0),
            class,
            contended: Cell::new(None),
            done: Cell::new(false),
            _mutexes: PhantomData,
        }
    }

    /// Ends the context and hands back its memory for the next one.
    ///
    /// Returns `None` when the context still holds a lock (a guard was
    /// forgotten): the memory is then leaked, as on drop.
    pub(super) fn finish(self) -> Option<CtxMemory> {
        let mut this = ManuallyDrop::new(self);
        if !this.fini() {
            return None;
        }
        // SAFETY: `this` is never used or dropped again, so the box is moved
        // out exactly once.
        let memory = unsafe { ManuallyDrop::take(&mut this.ctx) };
        // INVARIANT: `fini` ended the context, and no mutex points to it.
        Some(CtxMemory(memory))
    }

    /// Calls `ww_acquire_fini` if the context holds nothing; returns whether
    /// it did. Otherwise warns: the context must then never be freed.
    fn fini(&self) -> bool {
        let held = self.held_count();
        if held != 0 {
            pr_warn!(
                "ww_mutex: acquire context dropped holding {} lock(s) (a guard was forgotten); leaking it\n",
                held
            );
            return false;
        }
        // SAFETY: `ctx` is initialised, not finished (invariant) and holds
        // no lock. Both callers consume the context, so it is not used again.
        unsafe { bindings::ww_acquire_fini(self.ctx.get()) };
        true
    }

    /// The context's stamp: lower is older. It never changes during the
    /// context's life, in particular not across a back-off.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{AcquireCtx, Mutex}};
    /// define_ww_class!(CLASS);
    /// let first = AcquireCtx::new(&CLASS)?.stamp();
    /// let second = AcquireCtx::new(&CLASS)?.stamp();
    /// // A later context is younger: its stamp is higher.
    /// assert!(second > first);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn stamp(&self) -> usize {
        // SAFETY: `ctx` is initialised (type invariant); `stamp` is only
        // written by `ww_acquire_init`.
        unsafe { (*self.ctx.get()).stamp }
    }

    /// The class of the context.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{AcquireCtx, Mutex}};
    /// define_ww_class!(CLASS);
    /// let ctx = AcquireCtx::new(&CLASS)?;
    /// assert!(core::ptr::eq(ctx.class(), &CLASS));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn class(&self) -> &'a Class {
        self.class
    }

    /// The raw context, for FFI.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{AcquireCtx, Lockable, Mutex}};
    /// define_ww_class!(CLASS);
    /// let m = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
    /// let ctx = AcquireCtx::new(&CLASS)?;
    /// // Locking from C in the context, as a C helper taking a context would.
    /// // SAFETY: `m` is of the context's class and outlives the lock.
    /// assert_eq!(unsafe { kernel::bindings::ww_mutex_lock(m.as_raw(), ctx.as_raw()) }, 0);
    /// assert!(ctx.holds(&*m));
    /// // SAFETY: this task locked `m` just above.
    /// unsafe { kernel::bindings::ww_mutex_unlock(m.as_raw()) };
    /// # Ok::<(), Error>(())
    /// ```
    pub fn as_raw(&self) -> *mut bindings::ww_acquire_ctx {
        self.ctx.get()
    }

    /// How many mutexes the context holds (C's `ctx->acquired`).
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{AcquireCtx, Mutex}};
    /// define_ww_class!(CLASS);
    /// let m = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
    /// let ctx = AcquireCtx::new(&CLASS)?;
    /// let g = ctx.lock(&*m)?;
    /// assert_eq!(ctx.held_count(), 1);
    /// drop(g);
    /// assert_eq!(ctx.held_count(), 0);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn held_count(&self) -> usize {
        // SAFETY: `ctx` is initialised (type invariant); `acquired` is only
        // changed by lock and unlock calls of this task, which owns the context.
        unsafe { (*self.ctx.get()).acquired as usize }
    }

    /// Whether the context holds `l` (C's `lock->ctx == ctx`).
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{AcquireCtx, Mutex}};
    /// define_ww_class!(CLASS);
    /// let m = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
    /// let other = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
    /// let ctx = AcquireCtx::new(&CLASS)?;
    /// let _g = ctx.lock(&*m)?;
    /// assert!(ctx.holds(&*m));
    /// assert!(!ctx.holds(&*other));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn holds<L: Lockable + ?Sized>(&self, l: &L) -> bool {
        // SAFETY: `as_raw` is an initialised `ww_mutex`. Its `ctx` can change
        // under us only between other values; it equals our context exactly
        // while we hold it, which only this task can change. A volatile read
        // is C's READ_ONCE.
        let owner = unsafe { core::ptr::read_volatile(&raw const (*l.as_raw()).ctx) };
        owner == self.ctx.get()
    }

    /// Marks the end of the acquire phase (`ww_acquire_done`): no more
    /// locking in this context. Calling it again returns [`EINVAL`], as do
    /// lock calls after it.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{AcquireCtx, Mutex}};
    /// define_ww_class!(CLASS);
    /// let m = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
    /// let ctx = AcquireCtx::new(&CLASS)?;
    /// let g = ctx.lock(&*m)?;
    /// ctx.done()?;
    /// assert_eq!(ctx.done().err(), Some(EINVAL));
    /// // No more locking once done.
    /// drop(g);
    /// assert_eq!(ctx.lock(&*m).err(), Some(EINVAL));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn done(&self) -> Result {
        if self.done.replace(true) {
            return Err(EINVAL);
        }
        // SAFETY: `ctx` is initialised and `ww_acquire_done` was not called
        // before (checked above).
        unsafe { bindings::ww_acquire_done(self.ctx.get()) };
        Ok(())
    }

    /// Locks `l` in this context.
    ///
    /// Errors: [`EDEADLK`] when this context must back off (drop every guard,
    /// then [`lock_slow`](Self::lock_slow) this mutex), [`EALREADY`] when the
    /// context already holds `l`, [`EINVAL`] when `l` is of another class or
    /// after [`done`](Self::done), [`ENOMEM`] when tracking it fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{AcquireCtx, Mutex}};
    /// define_ww_class!(CLASS);
    /// let m = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
    /// define_ww_class!(OTHER);
    /// let foreign = KBox::pin_init(Mutex::new(0u32, &OTHER), GFP_KERNEL)?;
    /// let ctx = AcquireCtx::new(&CLASS)?;
    /// let mut g = ctx.lock(&*m)?;
    /// *g += 1;
    /// assert_eq!(ctx.lock(&*m).err(), Some(EALREADY));
    /// assert_eq!(ctx.lock(&*foreign).err(), Some(EINVAL));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn lock<'g, L: Lockable + ?Sized>(&'g self, l: &'a L) -> Result<CtxGuard<'g, 'a, L>> {
        self.lock_common(l, Kind::Normal)
    }

    /// Like [`lock`](Self::lock), but a signal interrupts the wait with [`EINTR`].
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{AcquireCtx, Mutex}};
    /// define_ww_class!(CLASS);
    /// let m = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
    /// let ctx = AcquireCtx::new(&CLASS)?;
    /// // Without a pending signal this is `lock`.
    /// *ctx.lock_interruptible(&*m)? = 3;
    /// assert_eq!(ctx.held_count(), 0);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn lock_interruptible<'g, L: Lockable + ?Sized>(
        &'g self,
        l: &'a L,
    ) -> Result<CtxGuard<'g, 'a, L>> {
        self.lock_common(l, Kind::Interruptible)
    }

    /// Sleeps until `l` is free and locks it, after an [`EDEADLK`].
    ///
    /// Only valid when the context holds nothing and `l` is the mutex whose
    /// lock attempt returned [`EDEADLK`]; otherwise [`EINVAL`].
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{AcquireCtx, Mutex}};
    /// define_ww_class!(CLASS);
    /// let m = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
    /// let ctx = AcquireCtx::new(&CLASS)?;
    /// // Nothing returned EDEADLK, so there is nothing to wait for: refused.
    /// // See the `AcquireCtx` example for the back-off it belongs to.
    /// assert_eq!(ctx.lock_slow(&*m).err(), Some(EINVAL));
    /// assert!(!m.is_locked());
    /// # Ok::<(), Error>(())
    /// ```
    pub fn lock_slow<'g, L: Lockable + ?Sized>(&'g self, l: &'a L) -> Result<CtxGuard<'g, 'a, L>> {
        self.lock_common(l, Kind::Slow)
    }

    /// Like [`lock_slow`](Self::lock_slow), but a signal interrupts the wait
    /// with [`EINTR`].
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{AcquireCtx, Mutex}};
    /// define_ww_class!(CLASS);
    /// let m = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
    /// let ctx = AcquireCtx::new(&CLASS)?;
    /// assert_eq!(ctx.lock_slow_interruptible(&*m).err(), Some(EINVAL));
    /// assert!(ctx.lock_interruptible(&*m).is_ok());
    /// # Ok::<(), Error>(())
    /// ```
    pub fn lock_slow_interruptible<'g, L: Lockable + ?Sized>(
        &'g self,
        l: &'a L,
    ) -> Result<CtxGuard<'g, 'a, L>> {
        self.lock_common(l, Kind::SlowInterruptible)
    }

    /// Locks `l` if it is free; [`EBUSY`] if not (also when this context
    /// already holds it).
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{AcquireCtx, Mutex}};
    /// define_ww_class!(CLASS);
    /// let m = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
    /// let ctx = AcquireCtx::new(&CLASS)?;
    /// let g = ctx.try_lock(&*m)?;
    /// assert_eq!(ctx.try_lock(&*m).err(), Some(EBUSY));
    /// drop(g);
    /// assert!(ctx.try_lock(&*m).is_ok());
    /// # Ok::<(), Error>(())
    /// ```
    pub fn try_lock<'g, L: Lockable + ?Sized>(&'g self, l: &'a L) -> Result<CtxGuard<'g, 'a, L>> {
        self.lock_common(l, Kind::Try)
    }

    fn lock_common<'g, L: Lockable + ?Sized>(
        &'g self,
        l: &'a L,
        kind: Kind,
    ) -> Result<CtxGuard<'g, 'a, L>> {
        if !core::ptr::eq(l.class(), self.class) {
            return Err(EINVAL);
        }
        // SAFETY: `as_raw` is a `ww_mutex` of our class that outlives `'a`.
        unsafe { self.lock_raw(l.as_raw(), kind)? };
        // INVARIANT: `l` is locked in this context.
        Ok(CtxGuard {
            lock: l,
            _ctx: PhantomData,
        })
    }

    /// Locks `raw` in this context.
    ///
    /// # Safety
    ///
    /// `raw` must be an initialised `ww_mutex` of this context's class that
    /// stays valid while it is locked.
    //
    // Inlined so that `kind`, constant at every call site, selects the C
    // function at compile time: a run-time `match` here became an indirect
    // jump through a table, which cost about 5% of a lock-all in the bench.
    #[inline(always)]
    pub(super) unsafe fn lock_raw(&self, raw: *mut bindings::ww_mutex, kind: Kind) -> Result {
        if self.done.get() {
            return Err(EINVAL);
        }
        let raw_nn = NonNull::new(raw).ok_or(EINVAL)?;
        let slow = matches!(kind, Kind::Slow | Kind::SlowInterruptible);
        if let Some(c) = self.contended.get() {
            // The protocol: after EDEADLK, release everything, then wait for
            // exactly the contended mutex. With nothing held it may also be
            // taken with a normal lock (the slow variant is optional in C too).
            if self.held_count() != 0 || c != raw_nn {
                return Err(if slow { EINVAL } else { EDEADLK });
            }
        } else if slow {
            return Err(EINVAL);
        }
        let ctx = self.ctx.get();
        // SAFETY: `raw` is a valid mutex of our class (caller) and `ctx` an
        // initialised context of that class owned by this task (invariant).
        let ret = unsafe {
            match kind {
                Kind::Normal => bindings::ww_mutex_lock(raw, ctx),
                Kind::Interruptible => bindings::ww_mutex_lock_interruptible(raw, ctx),
                Kind::Slow => {
                    bindings::ww_mutex_lock_slow(raw, ctx);
                    0
                }
                Kind::SlowInterruptible => bindings::ww_mutex_lock_slow_interruptible(raw, ctx),
                Kind::Try => {
                    if bindings::ww_mutex_trylock(raw, ctx) != 0 {
                        0
                    } else {
                        -(bindings::EBUSY as i32)
                    }
                }
            }
        };
        if let Err(e) = to_result(ret) {
            if e == EDEADLK {
                self.contended.set(Some(raw_nn));
            }
            return Err(e);
        }
        if self.contended.get() == Some(raw_nn) {
            self.contended.set(None);
        }
        Ok(())
    }

    /// The mutex whose lock attempt last returned [`EDEADLK`], if the context
    /// has not backed off from it yet.
    pub(super) fn contended(&self) -> Option<NonNull<bindings::ww_mutex>> {
        self.contended.get()
    }
}

impl Drop for AcquireCtx<'_> {
    fn drop(&mut self) {
        // Guards borrow the context, so none is alive here. If something is
        // still held, a guard was forgotten: its mutex points to `ctx`, and
        // other lockers read it, so the context must never be freed.
        if self.fini() {
            // SAFETY: the context is finished and no mutex points to it; it
            // is not used again.
            unsafe { ManuallyDrop::drop(&mut self.ctx) };
        }
    }
}

/// A mutex locked in an [`AcquireCtx`].
///
/// # Invariants
///
/// `lock` is locked in `ctx`.
///
/// # Examples
///
/// ```
/// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{AcquireCtx, Mutex}};
///
/// define_ww_class!(CLASS);
/// let m = KBox::pin_init(Mutex::new(1u64, &CLASS), GFP_KERNEL)?;
/// let ctx = AcquireCtx::new(&CLASS)?;
/// {
///     let mut g = ctx.lock(&*m)?;
///     *g += 1;
///     assert!(ctx.holds(&*m));
///     assert_eq!(ctx.held_count(), 1);
/// }
/// assert_eq!(ctx.held_count(), 0);
/// // No context-free locking while a context of the class is open.
/// drop(ctx);
/// assert_eq!(*m.lock(), 2);
/// # Ok::<(), Error>(())
/// ```
#[must_use = "the lock is released when the guard is dropped"]
pub struct CtxGuard<'g, 'a, L: Lockable + ?Sized> {
    lock: &'a L,
    /// The guard must not outlive its context (nor move to another task).
    _ctx: PhantomData<&'g AcquireCtx<'a>>,
}

impl<L: Lockable + ?Sized> CtxGuard<'_, '_, L> {
    /// The locked mutex.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{AcquireCtx, Mutex}};
    /// define_ww_class!(CLASS);
    /// let m = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
    /// let ctx = AcquireCtx::new(&CLASS)?;
    /// let g = ctx.lock(&*m)?;
    /// assert!(core::ptr::eq(g.lock_ref(), &*m));
    /// assert!(g.lock_ref().is_locked());
    /// # Ok::<(), Error>(())
    /// ```
    pub fn lock_ref(&self) -> &L {
        self.lock
    }
}

impl<L: Lockable + ?Sized> core::ops::Deref for CtxGuard<'_, '_, L> {
    type Target = L::Data;

    fn deref(&self) -> &L::Data {
        // SAFETY: the lock is held (type invariant), so no one else accesses the data.
        unsafe { &*self.lock.data_ptr() }
    }
}

impl<L: Lockable + ?Sized> core::ops::DerefMut for CtxGuard<'_, '_, L>
where
    L::Data: Unpin,
{
    fn deref_mut(&mut self) -> &mut L::Data {
        // SAFETY: the lock is held (type invariant) and `&mut self` is unique;
        // the data is `Unpin`.
        unsafe { &mut *self.lock.data_ptr() }
    }
}

impl<L: Lockable + ?Sized> Drop for CtxGuard<'_, '_, L> {
    fn drop(&mut self) {
        // SAFETY: `lock` is held in `ctx` by this task (type invariant).
        unsafe { L::unlock(self.lock.as_raw()) };
    }
}
