// SPDX-License-Identifier: GPL-2.0

//! Makes locks and `Arc`s with implicit lock classes and uses each once, so
//! that lockdep registers their classes; loaded and unloaded in a loop by
//! the guest program `lockdep-reload` to check that unloading releases them.

use kernel::{
    prelude::*,
    sync::{Arc, CondVar, Mutex, SpinLock},
};

module! {
    type: Reload,
    name: "rust_implicit_class_reload",
    authors: ["virtgpu-rs developers"],
    description: "Implicit lock classes across module reloads",
    license: "GPL",
}

struct Reload {
    _kept: Arc<Mutex<u32>>,
}

impl kernel::Module for Reload {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let a = Arc::pin_init(Mutex::new_implicit(0u32), GFP_KERNEL)?;
        let b = KBox::pin_init(SpinLock::new_implicit(0u32), GFP_KERNEL)?;
        let cv = KBox::pin_init(CondVar::new_implicit(), GFP_KERNEL)?;
        {
            let mut ga = a.lock();
            let mut gb = b.lock();
            *ga += 1;
            *gb += 1;
        }
        cv.notify_all();
        // An Arc dropped while a lock is held: its class is registered too.
        let extra = a.clone();
        let g = b.lock();
        drop(extra);
        drop(g);
        // Kept until unload: its last drop runs in the module's `Drop`.
        Ok(Reload { _kept: a })
    }
}
