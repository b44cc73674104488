// SPDX-License-Identifier: GPL-2.0

//! Helpers shared by the KUnit suites of the kernel crate
//! (`CONFIG_KUNIT` only): running work on another thread and making a
//! wait interruptible on purpose.
//!
//! Locks: none.

use crate::{
    bindings,
    prelude::*,
    sync::{Arc, Completion},
    workqueue,
};

/// Runs `f` on an unbound workqueue; the returned completion fires when it
/// ends.
pub(crate) fn spawn(f: impl FnOnce() + Send + 'static) -> Result<Arc<Completion>> {
    let done = Arc::pin_init(Completion::new(), GFP_KERNEL)?;
    let d = done.clone();
    workqueue::system_dfl().try_spawn(GFP_KERNEL, move || {
        f();
        d.complete_all();
    })?;
    Ok(done)
}

/// Runs `f` with a signal pending on the current thread (a KUnit case
/// runs in a kernel thread, which must opt in to receive one), then
/// discards the signal.
pub(crate) fn with_pending_signal<R>(f: impl FnOnce() -> R) -> R {
    let sig = bindings::SIGUSR1 as i32;
    let me = crate::task::Task::current_raw();
    // SAFETY: `allow_kernel_signal` only changes the current thread's
    // disposition of `sig`, a valid signal number.
    unsafe { bindings::allow_kernel_signal(sig) };
    // SAFETY: `me` is the current task, alive for the call; `1` marks
    // the signal as sent by the kernel, which the thread now accepts.
    unsafe { bindings::send_sig(sig, me, 1) };
    let r = f();
    // SAFETY: `me` is the current task; the signal is discarded and the
    // thread ignores `sig` again, as before.
    unsafe {
        bindings::flush_signals(me);
        bindings::disallow_signal(sig)
    };
    r
}

/// Error code of a result as a plain integer (0 for success).
pub(crate) fn code(r: Result) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}
