// SPDX-License-Identifier: GPL-2.0

//! Rate limits, for messages that an event outside the kernel's control may repeat at will.
//!
//! C header: [`include/linux/ratelimit.h`](srctree/include/linux/ratelimit.h)

use crate::{
    bindings,
    prelude::*,
    time::{self, Delta},
    types::Opaque,
};

/// A rate limit: at most `burst` events in an interval, as a C `struct ratelimit_state`.
///
/// [`RateLimit::allow`] never sleeps and may be called from any context, hard IRQ included,
/// and from several at once: the state has its own raw spinlock, only ever try-locked (callers
/// that contend may then count the burst a little over or under, as in C). When an interval
/// begins after events were refused, the kernel logs how many were, under the limit's name (as
/// `printk_ratelimited()` does under the caller's function).
///
/// # Examples
///
/// ```
/// use kernel::{ratelimit::RateLimit, time::Delta};
///
/// let limit = KBox::pin_init(RateLimit::new(c"example", Delta::from_secs(60), 2), GFP_KERNEL)?;
/// assert!(limit.allow());
/// assert!(limit.allow());
/// // The burst is used up until the minute is over.
/// assert!(!limit.allow());
///
/// // A zero interval never limits.
/// let open = KBox::pin_init(RateLimit::new(c"example", Delta::ZERO, 1), GFP_KERNEL)?;
/// assert!((0..100).all(|_| open.allow()));
/// # Ok::<(), Error>(())
/// ```
///
/// # Invariants
///
/// `state` was initialised by `ratelimit_state_init` and is only used through `___ratelimit`.
#[pin_data]
pub struct RateLimit {
    #[pin]
    state: Opaque<bindings::ratelimit_state>,
    name: &'static CStr,
}

// SAFETY: The state holds no reference to the task or CPU that made it; it may be used and
// dropped from any thread.
unsafe impl Send for RateLimit {}

// SAFETY: The only operation through `&self` is `___ratelimit`, C's API for a state shared by
// every CPU: it changes `begin` and `flags` only under the state's raw spinlock (try-locked with
// interrupts saved), `rs_n_left` and `missed` are atomics, and the fields it reads without the
// lock (`interval`, `burst`, `flags`) it reads with `READ_ONCE`.
unsafe impl Sync for RateLimit {}

impl RateLimit {
    /// A limit of `burst` events per `interval`, rounded up to whole jiffies (an interval
    /// beyond `i32::MAX` jiffies saturates). A zero or negative interval does not limit; a zero
    /// burst refuses every event. `name` prefixes the kernel's count of refused events.
    pub fn new(name: &'static CStr, interval: Delta, burst: u32) -> impl PinInit<Self> {
        let ms = u32::try_from(interval.as_millis_ceil().max(0)).unwrap_or(u32::MAX);
        let jiffies = i32::try_from(time::msecs_to_jiffies(ms)).unwrap_or(i32::MAX);
        let burst = i32::try_from(burst).unwrap_or(i32::MAX);
        // INVARIANT: `ratelimit_state_init` initialises the state.
        pin_init!(Self {
            // SAFETY: `slot` is valid for writes of a `ratelimit_state`, which
            // `ratelimit_state_init` initialises in full.
            state <- Opaque::ffi_init(|slot| unsafe {
                bindings::ratelimit_state_init(slot, jiffies, burst)
            }),
            name,
        })
    }

    /// The kernel's default limit, as `printk_ratelimited()`'s: 10 events per 5 seconds.
    pub fn default(name: &'static CStr) -> impl PinInit<Self> {
        Self::new(name, Delta::from_secs(5), bindings::DEFAULT_RATELIMIT_BURST)
    }

    /// Counts an event; whether it is within the limit (if not, it counts as refused).
    pub fn allow(&self) -> bool {
        // SAFETY: `state` is initialised (type invariant). `name` is a NUL-terminated string,
        // valid for the call, which is all `___ratelimit` needs: it only prints it (the printk
        // copies it) and keeps no pointer to it.
        unsafe { bindings::___ratelimit(self.state.get(), self.name.as_char_ptr()) != 0 }
    }
}
