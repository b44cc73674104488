// SPDX-License-Identifier: GPL-2.0

//! Locking a set of wound/wait mutexes with the back-off done for you.

use super::{acquire_ctx::Kind, AcquireCtx, Class, Lockable};
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
/// # Invariants
///
/// `locked` lists exactly the mutexes locked in `ctx` (each once); they
/// outlive `'a`.
pub struct LockSet<'a> {
    ctx: AcquireCtx<'a>,
    locked: KVec<NonNull<bindings::ww_mutex>>,
    interruptible: bool,
    backoffs: u32,
}

impl<'a> LockSet<'a> {
    /// Locks everything `lock_fn` asks for, backing off and retrying on
    /// [`EDEADLK`], then calls `locked_fn` with the set.
    ///
    /// Errors other than [`EDEADLK`] from `lock_fn` end the attempt; every
    /// lock is released and the error is returned.
    pub fn lock_all<R>(
        class: &'a Class,
        lock_fn: impl FnMut(&mut LockSet<'a>) -> Result,
        locked_fn: impl FnOnce(&mut LockSet<'a>) -> Result<R>,
    ) -> Result<R> {
        Self::run(class, false, lock_fn, locked_fn)
    }

    /// Like [`lock_all`](Self::lock_all), but waits are interruptible: a
    /// signal ends the attempt with [`EINTR`], with nothing left locked.
    pub fn lock_all_interruptible<R>(
        class: &'a Class,
        lock_fn: impl FnMut(&mut LockSet<'a>) -> Result,
        locked_fn: impl FnOnce(&mut LockSet<'a>) -> Result<R>,
    ) -> Result<R> {
        Self::run(class, true, lock_fn, locked_fn)
    }

    fn run<R>(
        class: &'a Class,
        interruptible: bool,
        mut lock_fn: impl FnMut(&mut LockSet<'a>) -> Result,
        locked_fn: impl FnOnce(&mut LockSet<'a>) -> Result<R>,
    ) -> Result<R> {
        let mut set = LockSet {
            ctx: AcquireCtx::new(class)?,
            locked: KVec::new(),
            interruptible,
            backoffs: 0,
        };
        loop {
            let r = lock_fn(&mut set);
            // A swallowed EDEADLK still requires the back-off.
            match (r, set.ctx.contended()) {
                (Ok(()), None) => break,
                (Ok(()), Some(_)) => set.back_off()?,
                (Err(e), Some(_)) if e == EDEADLK => set.back_off()?,
                (Err(e), _) => return Err(e),
            }
        }
        set.ctx.done()?;
        locked_fn(&mut set)
    }

    /// Releases everything and sleeps until the contended mutex is ours.
    fn back_off(&mut self) -> Result {
        let contended = self.ctx.contended().ok_or(EINVAL)?;
        self.backoffs += 1;
        self.unlock_all();
        let kind = if self.interruptible {
            Kind::SlowInterruptible
        } else {
            Kind::Slow
        };
        // SAFETY: `contended` was locked through `lock`, which checked its
        // class, and it outlives `'a` (the bound of `lock`).
        unsafe { self.ctx.lock_raw(contended.as_ptr(), kind)? };
        // Cannot fail: `unlock_all` left the capacity of everything it freed.
        self.locked.push(contended, GFP_KERNEL)?;
        Ok(())
    }

    /// Unlocks everything the set holds, newest first.
    fn unlock_all(&mut self) {
        while let Some(p) = self.locked.pop() {
            // SAFETY: every entry of `locked` is held in `ctx` (invariant).
            unsafe { bindings::ww_mutex_unlock(p.as_ptr()) };
        }
    }

    /// Locks `m` as part of the set. Call it from the locking closure and
    /// pass its errors on with `?`; holding `m` already is not an error.
    pub fn lock<L: Lockable + ?Sized>(&mut self, m: &'a L) -> Result {
        if !core::ptr::eq(m.class(), self.ctx.class()) {
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
        match unsafe { self.ctx.lock_raw(m.as_raw(), kind) } {
            Ok(()) => {
                let raw = NonNull::new(m.as_raw()).ok_or(EINVAL)?;
                // Cannot fail: capacity was reserved above.
                self.locked.push_within_capacity(raw).map_err(|_| ENOMEM)
            }
            Err(e) if e == EALREADY => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs `f` on the data of `m`, which the set must hold ([`EINVAL`] if not).
    pub fn with_locked<L: Lockable + ?Sized, R>(
        &mut self,
        m: &L,
        f: impl FnOnce(&mut L::Data) -> R,
    ) -> Result<R>
    where
        L::Data: Unpin,
    {
        if !self.ctx.holds(m) {
            return Err(EINVAL);
        }
        // SAFETY: the set holds `m`, so no one else accesses its data, and
        // `&mut self` keeps this the only access through the set.
        Ok(f(unsafe { &mut *m.data_ptr() }))
    }

    /// The stamp of the set's context; back-offs keep it.
    pub fn stamp(&self) -> usize {
        self.ctx.stamp()
    }

    /// How many times the set backed off so far.
    pub fn backoffs(&self) -> u32 {
        self.backoffs
    }

    /// How many mutexes the set holds.
    pub fn held_count(&self) -> usize {
        self.locked.len()
    }
}

impl Drop for LockSet<'_> {
    fn drop(&mut self) {
        // Before the context ends: it must hold nothing then.
        self.unlock_all();
    }
}
