// SPDX-License-Identifier: GPL-2.0

//! Wound/wait classes.
//!
//! A class groups the mutexes that may be locked together in one acquire
//! context. It hands out the stamps that order contexts, and it owns the two
//! lockdep keys (one for the contexts, one for the mutexes) of the group.
//!
//! C reference: `struct ww_class` in [`include/linux/ww_mutex.h`](srctree/include/linux/ww_mutex.h).

use crate::{bindings, prelude::*, types::Opaque};
use core::ffi::CStr;

/// A wound/wait class.
///
/// Create one with [`define_ww_class!`](crate::define_ww_class) (wound-wait) or
/// [`define_wd_class!`](crate::define_wd_class) (wait-die) in a `static`, with
/// [`DynamicClass`] at run time, or use an existing C class through
/// [`Class::from_raw`] or [`Class::reservation`].
///
/// # Invariants
///
/// `inner` is an initialised `struct ww_class` whose lockdep keys are either in
/// static storage or registered with lockdep for as long as the class exists.
///
/// # Examples
///
/// ```
/// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::Class};
/// define_ww_class!(CLASS);
/// // SAFETY: `CLASS` is a static class, valid for `'static`.
/// let same = unsafe { Class::from_raw(CLASS.as_raw()) };
/// assert!(core::ptr::eq(same, &CLASS));
/// assert!(!same.is_wait_die());
/// # Ok::<(), Error>(())
/// ```
#[repr(transparent)]
pub struct Class {
    inner: Opaque<bindings::ww_class>,
}

// SAFETY: After initialisation a `ww_class` is only changed through its atomic
// `stamp` counter (by `ww_acquire_init`), so any thread may use a shared
// reference to it.
unsafe impl Sync for Class {}
// SAFETY: A `ww_class` has no thread affinity: it holds no pointer to a task
// and can be used (and, when dynamic, unregistered) from any thread.
unsafe impl Send for Class {}

impl Class {
    /// Builds a class for a `static` item; use the `define_*_class!` macros
    /// rather than calling this directly.
    ///
    /// # Safety
    ///
    /// The returned value must be stored in a `static` item and never moved
    /// out of it: lockdep accepts the embedded keys only in static storage.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{c_str, prelude::*, sync::lock::ww_mutex::Class};
    ///
    /// // What `define_wd_class!(MINE)` expands to.
    /// // SAFETY: the class is stored in a `static` item.
    /// static MINE: Class =
    ///     unsafe { Class::new_static(c_str!("mine_acquire"), c_str!("mine_mutex"), true) };
    /// assert!(MINE.is_wait_die());
    /// # Ok::<(), Error>(())
    /// ```
    #[doc(hidden)]
    pub const unsafe fn new_static(
        acquire_name: &'static CStr,
        mutex_name: &'static CStr,
        wait_die: bool,
    ) -> Self {
        // SAFETY: `struct ww_class` is plain data; all-zeroes is a valid
        // initial state for its atomic stamp and its static lockdep keys.
        let mut class: bindings::ww_class = unsafe { core::mem::zeroed() };
        class.acquire_name = crate::str::as_char_ptr_in_const_context(acquire_name);
        class.mutex_name = crate::str::as_char_ptr_in_const_context(mutex_name);
        class.is_wait_die = wait_die as u32;
        // INVARIANT: the caller keeps the value in static storage.
        Class {
            inner: Opaque::new(class),
        }
    }

    /// Borrows an existing C class.
    ///
    /// # Safety
    ///
    /// `ptr` must point to an initialised `struct ww_class` that stays valid
    /// and keeps its lockdep keys registered (or static) for `'a`.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{prelude::*, sync::lock::ww_mutex::Class};
    /// // A class defined in C, here `reservation_ww_class` through its pointer.
    /// let raw = Class::reservation().as_raw();
    /// // SAFETY: `reservation_ww_class` is static and initialised.
    /// let resv = unsafe { Class::from_raw(raw) };
    /// assert!(resv.is_wait_die());
    /// # Ok::<(), Error>(())
    /// ```
    pub unsafe fn from_raw<'a>(ptr: *mut bindings::ww_class) -> &'a Class {
        // SAFETY: `Class` is a transparent wrapper of `Opaque<ww_class>`,
        // which has the layout of `ww_class`; the caller guarantees validity
        // for `'a`.
        unsafe { &*ptr.cast::<Class>() }
    }

    /// The class of every `dma_resv` lock (`reservation_ww_class`, a wait-die
    /// class), for reserving GEM objects and DMA buffers together.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::sync::lock::ww_mutex::Class;
    ///
    /// let resv = Class::reservation();
    /// assert!(resv.is_wait_die());
    /// ```
    #[cfg(CONFIG_DMA_SHARED_BUFFER)]
    pub fn reservation() -> &'static Class {
        // SAFETY: `reservation_ww_class` is a static C class defined by
        // DEFINE_WW_CLASS in drivers/dma-buf/dma-resv.c.
        unsafe { Class::from_raw(&raw mut bindings::reservation_ww_class) }
    }

    /// The raw pointer, for FFI.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_ww_class, prelude::*, sync::lock::ww_mutex::AcquireCtx};
    /// define_ww_class!(CLASS);
    /// let ctx = AcquireCtx::new(&CLASS)?;
    /// // SAFETY: reading the class pointer C keeps in the context (debug builds).
    /// #[cfg(CONFIG_DEBUG_MUTEXES)]
    /// assert_eq!(unsafe { (*ctx.as_raw()).ww_class }, CLASS.as_raw());
    /// assert_eq!(ctx.class().as_raw(), CLASS.as_raw());
    /// # Ok::<(), Error>(())
    /// ```
    pub fn as_raw(&self) -> *mut bindings::ww_class {
        self.inner.get()
    }

    /// Whether the class uses the wait-die algorithm (otherwise wound-wait).
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{define_wd_class, define_ww_class};
    ///
    /// define_ww_class!(WOUND);
    /// define_wd_class!(DIE);
    /// assert!(!WOUND.is_wait_die());
    /// assert!(DIE.is_wait_die());
    /// ```
    pub fn is_wait_die(&self) -> bool {
        // SAFETY: by the type invariant `inner` is initialised; `is_wait_die`
        // is never written after initialisation.
        unsafe { (*self.inner.get()).is_wait_die != 0 }
    }
}

/// Defines a `static` wound-wait [`Class`] named `$name`.
///
/// Its lockdep classes are named `$name_acquire` and `$name_mutex`, like C's
/// `DEFINE_WW_CLASS`. Under contention, an older context "wounds" a younger
/// holder, which backs off at its next lock attempt.
///
/// # Examples
///
/// ```
/// use kernel::define_ww_class;
///
/// define_ww_class!(BUFFERS);
/// assert!(!BUFFERS.is_wait_die());
/// ```
#[macro_export]
macro_rules! define_ww_class {
    ($vis:vis $name:ident) => {
        $crate::__define_class!($vis $name, false);
    };
}

/// Defines a `static` wait-die [`Class`] named `$name`.
///
/// Like C's `DEFINE_WD_CLASS`: under contention, a younger context "dies"
/// (gets `EDEADLK`) instead of waiting for an older holder.
///
/// # Examples
///
/// ```
/// use kernel::define_wd_class;
///
/// define_wd_class!(pub(crate) OBJECTS);
/// assert!(OBJECTS.is_wait_die());
/// ```
#[macro_export]
macro_rules! define_wd_class {
    ($vis:vis $name:ident) => {
        $crate::__define_class!($vis $name, true);
    };
}

/// Implementation of [`define_ww_class!`](crate::define_ww_class) and
/// [`define_wd_class!`](crate::define_wd_class).
#[doc(hidden)]
#[macro_export]
macro_rules! __define_class {
    ($vis:vis $name:ident, $wait_die:literal) => {
        $vis static $name: $crate::sync::lock::ww_mutex::Class =
            // SAFETY: the class is stored in a `static` item.
            unsafe {
                $crate::sync::lock::ww_mutex::Class::new_static(
                    $crate::c_str!(::core::concat!(::core::stringify!($name), "_acquire")),
                    $crate::c_str!(::core::concat!(::core::stringify!($name), "_mutex")),
                    $wait_die,
                )
            };
    };
}

/// A [`Class`] created at run time, with its lockdep keys registered.
///
/// The keys are unregistered when it is dropped. Mutexes and acquire contexts
/// borrow their class, so none of them can outlive it.
///
/// # Invariants
///
/// `inner` is an initialised `ww_class` whose `acquire_key` and `mutex_key` are registered with lockdep
/// until `drop` unregisters them.
///
/// # Examples
///
/// ```
/// use kernel::{c_str, prelude::*, sync::lock::ww_mutex::{DynamicClass, Mutex}};
///
/// let class = KBox::pin_init(DynamicClass::new(c_str!("dyn"), true), GFP_KERNEL)?;
/// let m = KBox::pin_init(Mutex::new(5u32, &class), GFP_KERNEL)?;
/// assert_eq!(*m.lock(), 5);
/// # Ok::<(), Error>(())
/// ```
#[pin_data(PinnedDrop)]
pub struct DynamicClass {
    #[pin]
    inner: Opaque<bindings::ww_class>,
}

impl DynamicClass {
    /// Creates a class named `name` (wait-die if `wait_die`, else wound-wait).
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::{c_str, prelude::*, sync::lock::ww_mutex::DynamicClass};
    /// let wd = KBox::pin_init(DynamicClass::new(c_str!("dyn_wd"), true), GFP_KERNEL)?;
    /// let ww = KBox::pin_init(DynamicClass::new(c_str!("dyn_ww"), false), GFP_KERNEL)?;
    /// assert!(wd.is_wait_die() && !ww.is_wait_die());
    /// # Ok::<(), Error>(())
    /// ```
    pub fn new(name: &'static CStr, wait_die: bool) -> impl PinInit<Self> {
        pin_init!(DynamicClass {
            inner <- Opaque::ffi_init(move |slot: *mut bindings::ww_class| {
                // SAFETY: `slot` is valid for writes; zero is a valid bit
                // pattern for every field of `ww_class`.
                unsafe { core::ptr::write_bytes(slot, 0, 1) };
                // SAFETY: `slot` is valid and pinned, so the keys keep their
                // address until `drop` unregisters them.
                unsafe {
                    bindings::lockdep_register_key(&raw mut (*slot).acquire_key);
                    bindings::lockdep_register_key(&raw mut (*slot).mutex_key);
                    (*slot).acquire_name = name.as_char_ptr();
                    (*slot).mutex_name = name.as_char_ptr();
                    (*slot).is_wait_die = u32::from(wait_die);
                }
            }),
        })
    }
}

impl core::ops::Deref for DynamicClass {
    type Target = Class;

    fn deref(&self) -> &Class {
        // SAFETY: `inner` is an initialised class whose keys stay registered
        // while `self` lives (type invariant), and the returned reference
        // cannot outlive `self`.
        unsafe { Class::from_raw(self.inner.get()) }
    }
}

#[pinned_drop]
impl PinnedDrop for DynamicClass {
    fn drop(self: Pin<&mut Self>) {
        let raw = self.inner.get();
        // SAFETY: by the type invariant both keys are registered. No mutex or
        // context of this class is left: they all borrow the class.
        unsafe {
            bindings::lockdep_unregister_key(&raw mut (*raw).acquire_key);
            bindings::lockdep_unregister_key(&raw mut (*raw).mutex_key);
        }
    }
}
