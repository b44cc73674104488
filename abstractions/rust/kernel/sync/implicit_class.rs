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
//!   its code must; that is the same rule as for its static classes.
//!
//! # Examples
//!
//! ```
//! use kernel::{fmt, prelude::*, str::CString, sync::implicit_class::{class_at, Usage}};
//!
//! #[track_caller]
//! fn here() -> &'static core::panic::Location<'static> {
//!     core::panic::Location::caller()
//! }
//!
//! let (a, b) = (here(), here()); // two locations on one line: two classes
//! let ka = class_at(a, Usage::Lock);
//! let kb = class_at(b, Usage::Lock);
//! assert!(!core::ptr::eq(ka.key().get_ref(), kb.key().get_ref()));
//! // The same location always gives the same class.
//! assert!(core::ptr::eq(class_at(a, Usage::Lock).key().get_ref(), ka.key().get_ref()));
//! let suffix = CString::try_from_fmt(fmt!(":{}:{}", a.line(), a.column()))?;
//! assert!(ka.name().to_bytes().ends_with(suffix.to_bytes()));
//! # Ok::<(), Error>(())
//! ```

use crate::{
    bindings,
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Full, Relaxed, Release},
        LockClassKey,
    },
    types::Opaque,
};
use core::{panic::Location, ptr};

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

/// Number of lists in the table (a power of two).
const BUCKETS: usize = 512;
/// Number of static fallback classes per usage.
const FALLBACKS: usize = 8;
/// Longest class name kept, including the NUL; longer file names are
/// shortened from the left.
const NAME_LEN: usize = 96;

/// Entry states.
const LIVE: i32 = 0;
const UNREGISTERED: i32 = 1;
const REGISTERING: i32 = 2;

/// One source location's class.
///
/// # Invariants
///
/// - Entries are never freed, moved or unlinked once published in the
///   table; everything but `state`, `owner` and `flags` is immutable then.
/// - `key` is registered with lockdep exactly while `state` is `LIVE`.
/// - `name` holds a NUL-terminated string.
#[repr(C)]
struct Entry {
    key: Opaque<bindings::lock_class_key>,
    next: *mut Entry,
    hash: u32,
    line: u32,
    column: u32,
    usage: Usage,
    /// Length of the file name copied at the start of `name`.
    file_len: usize,
    /// `file:line:column\0` (the file part possibly shortened).
    name: [u8; NAME_LEN],
    /// The file name of the location as seen so far, for a quick compare.
    file: Atomic<*const u8>,
    /// The module the location belongs to (null: built in, or pinned).
    owner: Atomic<*mut bindings::module>,
    state: Atomic<i32>,
    /// Set once the class has its comparison function (Arc classes).
    flags: Atomic<i32>,
}

/// A class found or created by [`class_at`].
#[derive(Clone, Copy)]
pub struct ImplicitClass {
    key: Pin<&'static LockClassKey>,
    name: &'static CStr,
    entry: *const Entry,
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

    /// Whether this is one of the static fallback classes (the entry could
    /// not be allocated).
    pub fn is_fallback(&self) -> bool {
        self.entry.is_null()
    }

    /// Runs `f` once per class (for Arc classes: setting the comparison
    /// function). Returns whether `f` ran now.
    pub(crate) fn once(&self, f: impl FnOnce()) -> bool {
        if self.entry.is_null() {
            return false;
        }
        // SAFETY: entries are never freed (type invariant of `Entry`).
        let e = unsafe { &*self.entry };
        if e.flags.load(Acquire) != 0 || e.flags.cmpxchg(0, 1, Full).is_err() {
            return false;
        }
        f();
        true
    }
}

// SAFETY: The class names an immutable, never-freed entry and a static key.
unsafe impl Send for ImplicitClass {}
// SAFETY: As above; every mutable field of the entry is atomic.
unsafe impl Sync for ImplicitClass {}

/// The table: each slot is the head of a list of entries.
static TABLE: [Atomic<*mut Entry>; BUCKETS] = [const { Atomic::new(ptr::null_mut()) }; BUCKETS];

/// Fallback classes for locks and for Arcs.
static FALLBACK_LOCK: [LockClassKey; FALLBACKS] = [const {
    // SAFETY: the keys are in static storage and never dropped.
    unsafe { LockClassKey::new_static() }
}; FALLBACKS];
static FALLBACK_ARC: [LockClassKey; FALLBACKS] = [const {
    // SAFETY: the keys are in static storage and never dropped.
    unsafe { LockClassKey::new_static() }
}; FALLBACKS];

/// Number of entries whose allocation failed (fallback used).
static FALLBACK_COUNT: Atomic<i64> = Atomic::new(0);

/// FNV-1a over the location's content: file name, line, column and usage.
fn hash(loc: &Location<'_>, usage: Usage) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |b: u8| {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    };
    for b in loc.file().bytes() {
        eat(b);
    }
    for b in loc.line().to_le_bytes() {
        eat(b);
    }
    for b in loc.column().to_le_bytes() {
        eat(b);
    }
    eat(usage as u8);
    h
}

/// The module whose memory holds `addr`, or null.
#[cfg(CONFIG_MODULES)]
fn module_of(addr: *const u8) -> *mut bindings::module {
    let _rcu = crate::sync::rcu::read_lock();
    // SAFETY: `__module_address` only compares `addr` with module ranges; it
    // must be called under RCU (held above) or with preemption off.
    unsafe { bindings::__module_address(addr as usize as crate::ffi::c_ulong) }
}

#[cfg(not(CONFIG_MODULES))]
fn module_of(_addr: *const u8) -> *mut bindings::module {
    ptr::null_mut()
}

impl Entry {
    fn file_name(&self) -> &[u8] {
        &self.name[..self.file_len]
    }

    fn matches(&self, loc: &Location<'_>, usage: Usage, h: u32) -> bool {
        if self.hash != h
            || self.line != loc.line()
            || self.column != loc.column()
            || self.usage != usage
        {
            return false;
        }
        // Fast path: the same file-name string as before.
        if self.file.load(Relaxed) == loc.file().as_ptr() {
            return true;
        }
        let f = loc.file().as_bytes();
        // A shortened name compares its kept (right-hand) part.
        f.len() >= self.file_len && f[f.len() - self.file_len..] == *self.file_name()
    }

    fn as_class(&'static self) -> ImplicitClass {
        // SAFETY: `LockClassKey` is a transparent wrapper of
        // `Opaque<lock_class_key>`; the entry is never moved or freed.
        let key = unsafe { Pin::new_unchecked(&*self.key.get().cast::<LockClassKey>()) };
        // `name` is NUL-terminated (type invariant), so this never falls back.
        let name = CStr::from_bytes_until_nul(&self.name).unwrap_or(c"rust_implicit");
        ImplicitClass {
            key,
            name,
            entry: self,
        }
    }

    /// Records that `loc` (whose file-name string may live elsewhere) uses
    /// this entry: a location reached from outside the owning module pins
    /// the entry, so that the module's unload leaves it registered.
    ///
    /// Returns `false` if the entry stopped being `LIVE` meanwhile (its
    /// module is unloading): the caller must not use its key.
    fn note_use(&'static self, loc: &Location<'_>) -> bool {
        let f = loc.file().as_ptr();
        if self.file.load(Relaxed) == f {
            return true;
        }
        let owner = self.owner.load(Acquire);
        if !owner.is_null() && module_of(f) != owner {
            // Pin, then look at the state again. `release_module` does the
            // opposite (state, then owner), both with full ordering, so at
            // least one of the two sees the other: either the key is not
            // unregistered, or it is not used here.
            let _ = self.owner.cmpxchg(owner, ptr::null_mut(), Full);
            if self.state.load(Acquire) != LIVE {
                return false;
            }
        }
        self.file.store(f, Relaxed);
        true
    }
}

/// The class of `loc` for `usage`: found, made, or a fallback. Never fails
/// and never sleeps.
pub fn class_at(loc: &'static Location<'static>, usage: Usage) -> ImplicitClass {
    let h = hash(loc, usage);
    let slot = &TABLE[h as usize % BUCKETS];
    let mut head = slot.load(Acquire);
    let mut seen_until: *mut Entry = ptr::null_mut();
    loop {
        // Only the entries added since the last look need checking.
        if let Some(e) = find(head, seen_until, loc, usage, h) {
            return live(e, loc).unwrap_or_else(|| fallback(h, usage));
        }
        let Some(new) = make_entry(loc, usage, h, head) else {
            return fallback(h, usage);
        };
        match slot.cmpxchg(head, new, Full) {
            Ok(_) => {
                // SAFETY: `new` is published now; entries are never freed.
                let e = unsafe { &*new };
                // SAFETY: the key is not registered yet (state
                // `REGISTERING`) and never moves.
                unsafe { bindings::lockdep_register_key(e.key.get()) };
                e.state.store(LIVE, Release);
                return e.as_class();
            }
            Err(now) => {
                // Another entry was added first (perhaps for `loc`): `new`
                // was never shared nor registered, so it can simply go.
                // SAFETY: `new` came from `KBox::into_raw` in `make_entry`.
                drop(unsafe { KBox::from_raw(new) });
                seen_until = head;
                head = now;
            }
        }
    }
}

/// Looks for `loc` in the list from `head` up to (not including) `until`.
fn find(
    mut p: *mut Entry,
    until: *mut Entry,
    loc: &Location<'_>,
    usage: Usage,
    h: u32,
) -> Option<&'static Entry> {
    while !p.is_null() && p != until {
        // SAFETY: published entries are never freed and their `next` never
        // changes (invariant); the acquire load of the head made them visible.
        let e = unsafe { &*p };
        if e.matches(loc, usage, h) {
            return Some(e);
        }
        p = e.next;
    }
    None
}

/// Makes sure `e`'s key is registered (again, if its module was unloaded
/// and is back). `None` if another CPU is registering it right now: the
/// caller falls back rather than wait.
fn live(e: &'static Entry, loc: &'static Location<'static>) -> Option<ImplicitClass> {
    match e.state.load(Acquire) {
        LIVE => e.note_use(loc).then(|| e.as_class()),
        UNREGISTERED => {
            if e.state.cmpxchg(UNREGISTERED, REGISTERING, Full).is_err() {
                return None;
            }
            e.owner.store(module_of(loc.file().as_ptr()), Relaxed);
            e.file.store(loc.file().as_ptr(), Relaxed);
            // SAFETY: the key is unregistered (state) and never moves.
            unsafe { bindings::lockdep_register_key(e.key.get()) };
            e.state.store(LIVE, Release);
            Some(e.as_class())
        }
        _ => None,
    }
}

/// Allocates and fills a new entry whose `next` is `head`; its key is
/// registered once it is published.
fn make_entry(
    loc: &'static Location<'static>,
    usage: Usage,
    h: u32,
    head: *mut Entry,
) -> Option<*mut Entry> {
    let mut tail = [0u8; 24];
    let tail_len = location_suffix(&mut tail, loc.line(), loc.column());
    let file = loc.file().as_bytes();
    let room = NAME_LEN - 1 - tail_len;
    let kept = &file[file.len().saturating_sub(room)..];
    let mut name = [0u8; NAME_LEN];
    name[..kept.len()].copy_from_slice(kept);
    name[kept.len()..kept.len() + tail_len].copy_from_slice(&tail[..tail_len]);
    let entry = KBox::new(
        Entry {
            key: Opaque::uninit(),
            next: head,
            hash: h,
            line: loc.line(),
            column: loc.column(),
            usage,
            file_len: kept.len(),
            name,
            file: Atomic::new(loc.file().as_ptr()),
            owner: Atomic::new(module_of(loc.file().as_ptr())),
            // INVARIANT: registered only once published.
            state: Atomic::new(REGISTERING),
            flags: Atomic::new(0),
        },
        GFP_ATOMIC | __GFP_NOWARN,
    )
    .ok()?;
    Some(KBox::into_raw(entry))
}

/// Writes `:line:column` into `buf`; returns its length.
fn location_suffix(buf: &mut [u8; 24], line: u32, column: u32) -> usize {
    let mut n = 0;
    for v in [line, column] {
        buf[n] = b':';
        n += 1;
        let mut digits = [0u8; 10];
        let mut d = 0;
        let mut x = v;
        loop {
            digits[d] = b'0' + (x % 10) as u8;
            d += 1;
            x /= 10;
            if x == 0 {
                break;
            }
        }
        while d > 0 {
            d -= 1;
            buf[n] = digits[d];
            n += 1;
        }
    }
    n
}

fn fallback(h: u32, usage: Usage) -> ImplicitClass {
    FALLBACK_COUNT.fetch_add(1, Relaxed);
    let keys = match usage {
        Usage::Lock => &FALLBACK_LOCK,
        Usage::Arc => &FALLBACK_ARC,
    };
    ImplicitClass {
        key: Pin::static_ref(&keys[h as usize % FALLBACKS]),
        name: c"rust_implicit_fallback",
        entry: ptr::null(),
    }
}

/// The class of the caller's location, for a lock.
#[track_caller]
pub fn caller_lock_class() -> ImplicitClass {
    class_at(Location::caller(), Usage::Lock)
}

/// Unregisters the classes of `module`'s locations. Called by the `module!`
/// glue when a Rust module goes away (after its `Drop`, or after its init
/// failed); the module's locks must be gone by then.
///
/// # Safety
///
/// Must be called from process context, once the module's code no longer
/// runs, and never for a module that is still in use.
pub unsafe fn release_module(module: *mut bindings::module) {
    if module.is_null() {
        return;
    }
    for slot in &TABLE {
        let mut p = slot.load(Acquire);
        while !p.is_null() {
            // SAFETY: published entries are never freed (invariant).
            let e = unsafe { &*p };
            if e.owner.load(Acquire) == module && e.state.cmpxchg(LIVE, REGISTERING, Full).is_ok() {
                // Pinned meanwhile by a user outside the module (see
                // `Entry::note_use`): keep it.
                if e.owner.load(Acquire) != module {
                    e.state.store(LIVE, Release);
                    p = e.next;
                    continue;
                }
                // SAFETY: the key is registered (it was LIVE) and no lock of
                // the class remains (the module is gone); unregistering
                // waits for RCU, which process context allows.
                unsafe { bindings::lockdep_unregister_key(e.key.get()) };
                // A class registered again is a new lockdep class: redo its set-up.
                e.flags.store(0, Relaxed);
                // The module's file-name string goes away with it.
                e.file.store(ptr::null(), Relaxed);
                e.state.store(UNREGISTERED, Release);
            }
            p = e.next;
        }
    }
}

/// How many entries the table holds and how many are registered, and how
/// many lookups fell back.
pub fn stats() -> (usize, usize, i64) {
    let (mut all, mut live) = (0, 0);
    for slot in &TABLE {
        let mut p = slot.load(Acquire);
        while !p.is_null() {
            // SAFETY: published entries are never freed (invariant).
            let e = unsafe { &*p };
            all += 1;
            live += usize::from(e.state.load(Relaxed) == LIVE);
            p = e.next;
        }
    }
    (all, live, FALLBACK_COUNT.load(Relaxed))
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
    #[track_caller]
    pub fn new_implicit(t: impl PinInit<T>) -> impl PinInit<Self> {
        let class = caller_lock_class();
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
    #[track_caller]
    pub fn new_implicit() -> impl PinInit<Self> {
        let class = caller_lock_class();
        Self::new(class.name(), class.key())
    }
}
