// SPDX-License-Identifier: GPL-2.0

//! Locking a set of wound/wait mutexes with the back-off done for you.

use super::{
    acquire_ctx::{CtxMemory, Kind},
    AcquireCtx, Class, Lockable,
};
use crate::{bindings, prelude::*};
use core::ptr::NonNull;

/// A set of wound/wait mutexes locked in one [`AcquireCtx`].
///
/// Use [`LockSet::lock_all`]: it runs your locking closure, and whenever a
/// lock returns [`EDEADLK`] it releases everything, waits for the contended
/// mutex with `ww_mutex_lock_slow` in the *same* context (so the stamp, and
/// with it the context's seniority, is kept), and runs the closure again.
/// Locking a mutex the set already holds (for example one listed twice) is
/// not an error. Once the closure succeeds it calls `ww_acquire_done` and
/// hands the set to your second closure, which reaches the data with
/// [`with_locked`](LockSet::with_locked). Everything is unlocked when the set
/// is dropped.
///
/// # Examples
///
/// ```
/// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{LockSet, Mutex}};
///
/// define_ww_class!(CLASS);
///
/// let a = KBox::pin_init(Mutex::new(10u32, &CLASS), GFP_KERNEL)?;
/// let b = KBox::pin_init(Mutex::new(20u32, &CLASS), GFP_KERNEL)?;
/// let list = [&*b, &*a, &*b]; // any order, duplicates allowed
///
/// let sum = LockSet::lock_all(
///     &CLASS,
///     |set| {
///         for m in list {
///             set.lock(m)?;
///         }
///         Ok(())
///     },
///     |set| Ok(set.with_locked(&*a, |x| *x)? + set.with_locked(&*b, |x| *x)?),
/// )?;
/// assert_eq!(sum, 30);
/// assert!(!a.is_locked());
/// # Ok::<(), Error>(())
/// ```
///
/// A set made with [`LockSet::new`] can run one transaction after another
/// with [`run`](LockSet::run); it keeps its context memory and list, so a
/// transaction allocates nothing once the list has grown to its size:
///
/// ```
/// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{LockSet, Mutex}};
///
/// define_ww_class!(CLASS);
///
/// let a = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
/// let b = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
/// let mut set = LockSet::with_capacity(&CLASS, 2)?;
/// for _ in 0..3 {
///     set.run(
///         |set| {
///             set.lock(&*a)?;
///             set.lock(&*b)
///         },
///         |set| {
///             set.with_locked(&*a, |x| *x += 1)?;
///             set.with_locked(&*b, |x| *x += 2)
///         },
///     )?;
///     // Between transactions the set holds nothing.
///     assert_eq!(set.held_count(), 0);
///     assert!(set.stamp().is_none());
/// }
/// // One at a time: context-free locks of one class must not nest.
/// assert_eq!(*a.lock(), 3);
/// assert_eq!(*b.lock(), 6);
/// # Ok::<(), Error>(())
/// ```
///
/// # Invariants
///
/// - `ctx` is `Some` exactly during a transaction, and `memory` is `Some`
///   between transactions.
/// - `locked` lists exactly the mutexes locked in `ctx` (each once), each
///   with the [`Lockable::unlock`] of the type it was locked through; they
///   outlive `'a`. It is empty between transactions.
/// - `contended`, when set, is the mutex for which C last returned
///   [`EDEADLK`] in `lock`, with the unlock function of the type it was
///   locked through.
pub struct LockSet<'a> {
    class: &'a Class,
    ctx: Option<AcquireCtx<'a>>,
    memory: Option<CtxMemory>,
    locked: KVec<(NonNull<bindings::ww_mutex>, Unlock)>,
    contended: Option<(NonNull<bindings::ww_mutex>, Unlock)>,
    interruptible: bool,
    backoffs: u32,
}

/// A [`Lockable::unlock`] function.
type Unlock = unsafe fn(*mut bindings::ww_mutex);

impl<'a> LockSet<'a> {
    /// Makes a set for mutexes of `class`, to run transactions with
    /// [`run`](Self::run).
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{LockSet, Mutex}};
    /// define_ww_class!(CLASS);
    /// let m = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
    /// let mut set = LockSet::new(&CLASS)?;
    /// set.run(|set| set.lock(&*m), |set| set.with_locked(&*m, |x| *x += 1))?;
    /// set.run(|set| set.lock(&*m), |set| set.with_locked(&*m, |x| *x += 1))?;
    /// assert_eq!(*m.lock(), 2);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn new(class: &'a Class) -> Result<Self> {
        Self::with_capacity(class, 0)
    }

    /// Like [`new`](Self::new), with room for `n` mutexes in the list, so
    /// that transactions locking up to `n` mutexes allocate nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{LockSet, Mutex}};
    /// define_ww_class!(CLASS);
    /// let mut locks = KVec::new();
    /// for _ in 0..4 {
    ///     locks.push(KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?, GFP_KERNEL)?;
    /// }
    /// let mut set = LockSet::with_capacity(&CLASS, locks.len())?;
    /// let held = set.run(
    ///     |set| locks.iter().try_for_each(|m| set.lock(&**m)),
    ///     |set| Ok(set.held_count()),
    /// )?;
    /// assert_eq!(held, 4);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn with_capacity(class: &'a Class, n: usize) -> Result<Self> {
        // INVARIANT: between transactions: no context, memory present,
        // nothing locked.
        Ok(LockSet {
            class,
            ctx: None,
            memory: Some(CtxMemory::new()?),
            locked: KVec::with_capacity(n, GFP_KERNEL)?,
            contended: None,
            interruptible: false,
            backoffs: 0,
        })
    }

    /// Locks everything `lock_fn` asks for in a new acquire context of
    /// `class`, backing off and retrying on [`EDEADLK`], then calls
    /// `locked_fn` with the set. Everything is unlocked before it returns.
    ///
    /// Errors other than [`EDEADLK`] from `lock_fn` end the attempt; every
    /// lock is released and the error is returned.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{LockSet, Mutex}};
    /// define_ww_class!(CLASS);
    /// let m = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
    /// define_ww_class!(OTHER);
    /// let foreign = KBox::pin_init(Mutex::new(0u32, &OTHER), GFP_KERNEL)?;
    /// // An error from the locking closure ends the attempt, unlocking `m`.
    /// let r = LockSet::lock_all(
    ///     &CLASS,
    ///     |set| {
    ///         set.lock(&*m)?;
    ///         set.lock(&*foreign)
    ///     },
    ///     |_| Ok(()),
    /// );
    /// assert_eq!(r.err(), Some(EINVAL));
    /// assert!(!m.is_locked());
    /// # Ok::<(), Error>(())
    /// ```
    pub fn lock_all<R>(
        class: &'a Class,
        lock_fn: impl FnMut(&mut LockSet<'a>) -> Result,
        locked_fn: impl FnOnce(&mut LockSet<'a>) -> Result<R>,
    ) -> Result<R> {
        Self::new(class)?.transaction(false, lock_fn, locked_fn)
    }

    /// Like [`lock_all`](Self::lock_all), but waits are interruptible: a
    /// signal ends the attempt with [`EINTR`], with nothing left locked.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{LockSet, Mutex}};
    /// define_ww_class!(CLASS);
    /// let m = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
    /// let v = LockSet::lock_all_interruptible(
    ///     &CLASS,
    ///     |set| set.lock(&*m),
    ///     |set| set.with_locked(&*m, |x| { *x += 5; *x }),
    /// )?;
    /// assert_eq!(v, 5);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn lock_all_interruptible<R>(
        class: &'a Class,
        lock_fn: impl FnMut(&mut LockSet<'a>) -> Result,
        locked_fn: impl FnOnce(&mut LockSet<'a>) -> Result<R>,
    ) -> Result<R> {
        Self::new(class)?.transaction(true, lock_fn, locked_fn)
    }

    /// Runs one transaction in this set, as [`lock_all`](Self::lock_all)
    /// does, reusing the set's memory. Each transaction gets a new stamp.
    ///
    /// Calling it from inside one of its closures returns [`EBUSY`].
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{LockSet, Mutex}};
    /// define_ww_class!(CLASS);
    /// let m = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
    /// let mut set = LockSet::new(&CLASS)?;
    /// assert_eq!(set.run(|set| set.lock(&*m), |_| Ok(1))?, 1);
    /// // Not from inside a transaction of the same set.
    /// let nested = set.run(|set| set.run(|_| Ok(()), |_| Ok(())), |_| Ok(()));
    /// assert_eq!(nested.err(), Some(EBUSY));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn run<R>(
        &mut self,
        lock_fn: impl FnMut(&mut LockSet<'a>) -> Result,
        locked_fn: impl FnOnce(&mut LockSet<'a>) -> Result<R>,
    ) -> Result<R> {
        self.transaction(false, lock_fn, locked_fn)
    }

    /// Like [`run`](Self::run), with interruptible waits, as
    /// [`lock_all_interruptible`](Self::lock_all_interruptible).
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{LockSet, Mutex}};
    /// define_ww_class!(CLASS);
    /// let m = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
    /// let mut set = LockSet::new(&CLASS)?;
    /// set.run_interruptible(|set| set.lock(&*m), |set| set.with_locked(&*m, |x| *x = 9))?;
    /// assert_eq!(*m.lock(), 9);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn run_interruptible<R>(
        &mut self,
        lock_fn: impl FnMut(&mut LockSet<'a>) -> Result,
        locked_fn: impl FnOnce(&mut LockSet<'a>) -> Result<R>,
    ) -> Result<R> {
        self.transaction(true, lock_fn, locked_fn)
    }

    fn transaction<R>(
        &mut self,
        interruptible: bool,
        lock_fn: impl FnMut(&mut LockSet<'a>) -> Result,
        locked_fn: impl FnOnce(&mut LockSet<'a>) -> Result<R>,
    ) -> Result<R> {
        // `memory` is `None` only during a transaction (invariant).
        let memory = self.memory.take().ok_or(EBUSY)?;
        self.ctx = Some(AcquireCtx::start_in(memory, self.class));
        self.interruptible = interruptible;
        self.backoffs = 0;
        let r = self.lock_and_call(lock_fn, locked_fn);
        self.unlock_all();
        if let Some(ctx) = self.ctx.take() {
            // `locked` was the whole of the context's holdings, and it is
            // empty now, so this gives the memory back. Were something still
            // held, the context would be leaked and the next call would
            // allocate new memory.
            self.memory = ctx.finish();
        }
        r
    }

    fn lock_and_call<R>(
        &mut self,
        mut lock_fn: impl FnMut(&mut LockSet<'a>) -> Result,
        locked_fn: impl FnOnce(&mut LockSet<'a>) -> Result<R>,
    ) -> Result<R> {
        loop {
            let r = lock_fn(self);
            // A swallowed EDEADLK still requires the back-off.
            match (r, self.ctx()?.contended()) {
                (Ok(()), None) => break,
                (Ok(()), Some(_)) => self.back_off()?,
                (Err(e), Some(_)) if e == EDEADLK => self.back_off()?,
                (Err(e), _) => return Err(e),
            }
        }
        self.ctx()?.done()?;
        locked_fn(self)
    }

    /// The context of the running transaction; [`EINVAL`] outside one.
    fn ctx(&self) -> Result<&AcquireCtx<'a>> {
        self.ctx.as_ref().ok_or(EINVAL)
    }

    /// Releases everything and sleeps until the contended mutex is ours.
    fn back_off(&mut self) -> Result {
        let contended = self.ctx()?.contended().ok_or(EINVAL)?;
        // The unlock recorded with it, for this very mutex.
        let unlock = match self.contended.take() {
            Some((m, unlock)) if m == contended => unlock,
            _ => return Err(EINVAL),
        };
        self.backoffs += 1;
        self.unlock_all();
        let kind = if self.interruptible {
            Kind::SlowInterruptible
        } else {
            Kind::Slow
        };
        // SAFETY: `contended` was locked through `lock`, which checked its
        // class, and it outlives `'a` (the bound of `lock`).
        unsafe { self.ctx()?.lock_raw(contended.as_ptr(), kind)? };
        // Cannot fail: `unlock_all` left the capacity of everything it freed.
        self.locked.push((contended, unlock), GFP_KERNEL)?;
        Ok(())
    }

    /// Unlocks everything the set holds, newest first.
    fn unlock_all(&mut self) {
        while let Some((p, unlock)) = self.locked.pop() {
            // SAFETY: every entry of `locked` is held in `ctx`, and `unlock`
            // is the unlock of the type it was locked through (invariant).
            unsafe { unlock(p.as_ptr()) };
        }
    }

    /// Locks `m` as part of the set. Call it from the locking closure and
    /// pass its errors on with `?`; holding `m` already is not an error.
    /// Outside a transaction it returns [`EINVAL`].
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{LockSet, Mutex}};
    /// define_ww_class!(CLASS);
    /// let m = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
    /// let mut set = LockSet::new(&CLASS)?;
    /// // Only inside a transaction.
    /// assert_eq!(set.lock(&*m).err(), Some(EINVAL));
    /// let held = set.run(
    ///     |set| {
    ///         set.lock(&*m)?;
    ///         set.lock(&*m) // already held: not an error
    ///     },
    ///     |set| Ok(set.held_count()),
    /// )?;
    /// assert_eq!(held, 1);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn lock<L: Lockable + ?Sized>(&mut self, m: &'a L) -> Result {
        if !core::ptr::eq(m.class(), self.class) {
            return Err(EINVAL);
        }
        let kind = if self.interruptible {
            Kind::Interruptible
        } else {
            Kind::Normal
        };
        // Reserve first, so a failed allocation leaves nothing locked. Grow
        // by at least eight entries to keep reallocations rare.
        if self.locked.len() == self.locked.capacity() {
            self.locked.reserve(self.locked.len().max(8), GFP_KERNEL)?;
        }
        // SAFETY: `m` is of the context's class (checked) and outlives `'a`.
        match unsafe { self.ctx()?.lock_raw(m.as_raw(), kind) } {
            Ok(()) => {
                let raw = NonNull::new(m.as_raw()).ok_or(EINVAL)?;
                // Cannot fail: capacity was reserved above.
                self.locked
                    .push_within_capacity((raw, L::unlock as Unlock))
                    .map_err(|_| ENOMEM)
            }
            Err(e) if e == EALREADY => Ok(()),
            Err(e) => {
                // Only an `EDEADLK` from C makes `m` the contended mutex (the
                // context refuses further locks with `EDEADLK` too, without
                // asking C).
                if let Some(raw) = NonNull::new(m.as_raw()) {
                    if e == EDEADLK && self.ctx()?.contended() == Some(raw) {
                        // INVARIANT: `m` is the mutex C refused.
                        self.contended = Some((raw, L::unlock as Unlock));
                    }
                }
                Err(e)
            }
        }
    }

    /// Runs `f` on the data of `m`, which the set must hold ([`EINVAL`] if not).
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{LockSet, Mutex}};
    /// define_ww_class!(CLASS);
    /// let m = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
    /// let other = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
    /// let r = LockSet::lock_all(
    ///     &CLASS,
    ///     |set| set.lock(&*m),
    ///     |set| {
    ///         set.with_locked(&*m, |x| *x = 1)?;
    ///         // `other` is not in the set.
    ///         set.with_locked(&*other, |x| *x = 1)
    ///     },
    /// );
    /// assert_eq!(r.err(), Some(EINVAL));
    /// assert_eq!(*m.lock(), 1);
    /// assert_eq!(*other.lock(), 0);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn with_locked<L: Lockable + ?Sized, R>(
        &mut self,
        m: &L,
        f: impl FnOnce(&mut L::Data) -> R,
    ) -> Result<R>
    where
        L::Data: Unpin,
    {
        if !self.ctx()?.holds(m) {
            return Err(EINVAL);
        }
        // SAFETY: the set holds `m`, so no one else accesses its data, and
        // `&mut self` keeps this the only access through the set.
        Ok(f(unsafe { &mut *m.data_ptr() }))
    }

    /// Runs `f` on a shared view of the data of `m`, which the set must hold
    /// ([`EINVAL`] if not). For data that is not `Unpin` (a C object such as
    /// a `dma_resv`, whose locked operations take `&self`).
    pub fn with_locked_ref<L: Lockable + ?Sized, R>(
        &self,
        m: &L,
        f: impl FnOnce(&L::Data) -> R,
    ) -> Result<R> {
        if !self.ctx()?.holds(m) {
            return Err(EINVAL);
        }
        // SAFETY: the set holds `m`, so no one else accesses its data; this
        // thread only reads through `&`.
        Ok(f(unsafe { &*m.data_ptr() }))
    }

    /// The stamp of the running transaction's context (back-offs keep it);
    /// `None` between transactions.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{LockSet, Mutex}};
    /// define_ww_class!(CLASS);
    /// let m = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
    /// let mut set = LockSet::new(&CLASS)?;
    /// assert!(set.stamp().is_none());
    /// let inside = set.run(|set| set.lock(&*m), |set| Ok(set.stamp()))?;
    /// assert!(inside.is_some());
    /// assert!(set.stamp().is_none());
    /// # Ok::<(), Error>(())
    /// ```
    pub fn stamp(&self) -> Option<usize> {
        self.ctx.as_ref().map(AcquireCtx::stamp)
    }

    /// How many times the running (or last) transaction backed off.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{LockSet, Mutex}};
    /// define_ww_class!(CLASS);
    /// let m = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
    /// let mut set = LockSet::new(&CLASS)?;
    /// // One mutex, nothing to contend with: no back-off.
    /// set.run(|set| set.lock(&*m), |_| Ok(()))?;
    /// assert_eq!(set.backoffs(), 0);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn backoffs(&self) -> u32 {
        self.backoffs
    }

    /// How many mutexes the set holds.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::{LockSet, Mutex}};
    /// define_ww_class!(CLASS);
    /// let m = KBox::pin_init(Mutex::new(0u32, &CLASS), GFP_KERNEL)?;
    /// let mut set = LockSet::new(&CLASS)?;
    /// let inside = set.run(|set| set.lock(&*m), |set| Ok(set.held_count()))?;
    /// assert_eq!((inside, set.held_count()), (1, 0));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn held_count(&self) -> usize {
        self.locked.len()
    }
}

impl Drop for LockSet<'_> {
    fn drop(&mut self) {
        // Only reached mid-transaction if a closure moved the set out (with
        // `mem::swap`): unlock before the context ends, so it holds nothing.
        self.unlock_all();
    }
}
