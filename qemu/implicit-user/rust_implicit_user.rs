// SPDX-License-Identifier: GPL-2.0

//! Locks made with implicit classes and the same locks made with the class
//! macros, built as an external module against our kernel configured
//! without `CONFIG_LOCKDEP`. xtask compares each `*_implicit` function with
//! its `*_macro` twin: without lockdep an implicit class must cost nothing,
//! so the two must compile to the same instructions (only the name and key
//! they point to differ), and nothing here may reference the class table.

use kernel::{
    new_condvar, new_mutex, new_spinlock,
    prelude::*,
    sync::{CondVar, Mutex, SpinLock},
};

module! {
    type: ImplicitUser,
    name: "rust_implicit_user",
    authors: ["virtgpu-rs developers"],
    description: "Implicit lock classes against the class macros, for object code comparison",
    license: "GPL",
}

/// A spinlock with the class of its source location.
#[inline(never)]
pub fn implicit_user_spinlock_implicit(v: u32) -> Result<Pin<KBox<SpinLock<u32>>>> {
    KBox::pin_init(SpinLock::new_implicit(v), GFP_KERNEL)
}

/// The same with `new_spinlock!`.
#[inline(never)]
pub fn implicit_user_spinlock_macro(v: u32) -> Result<Pin<KBox<SpinLock<u32>>>> {
    KBox::pin_init(new_spinlock!(v), GFP_KERNEL)
}

/// A mutex with the class of its source location.
#[inline(never)]
pub fn implicit_user_mutex_implicit(v: u64) -> Result<Pin<KBox<Mutex<u64>>>> {
    KBox::pin_init(Mutex::new_implicit(v), GFP_KERNEL)
}

/// The same with `new_mutex!`.
#[inline(never)]
pub fn implicit_user_mutex_macro(v: u64) -> Result<Pin<KBox<Mutex<u64>>>> {
    KBox::pin_init(new_mutex!(v), GFP_KERNEL)
}

/// A condition variable with the class of its source location.
#[inline(never)]
pub fn implicit_user_condvar_implicit() -> Result<Pin<KBox<CondVar>>> {
    KBox::pin_init(CondVar::new_implicit(), GFP_KERNEL)
}

/// The same with `new_condvar!`.
#[inline(never)]
pub fn implicit_user_condvar_macro() -> Result<Pin<KBox<CondVar>>> {
    KBox::pin_init(new_condvar!(), GFP_KERNEL)
}

struct ImplicitUser;

impl kernel::Module for ImplicitUser {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let s = implicit_user_spinlock_implicit(1)?;
        let t = implicit_user_spinlock_macro(2)?;
        let m = implicit_user_mutex_implicit(3)?;
        let n = implicit_user_mutex_macro(4)?;
        let _c = implicit_user_condvar_implicit()?;
        let _d = implicit_user_condvar_macro()?;
        let sum = u64::from(*s.lock() + *t.lock()) + *m.lock() + *n.lock();
        pr_info!("implicit_user: {}\n", sum);
        Ok(ImplicitUser)
    }
}
