// SPDX-License-Identifier: GPL-2.0

//! The table of implicit classes (`CONFIG_LOCKDEP` only).
//!
//! A fixed array of lists that only grow: lookups read them with acquire
//! loads and take no lock, a new entry is published with a
//! compare-and-exchange, and entries are never freed. See the parent
//! module's documentation for what this answers; this file owns the table,
//! its fallback classes and the unregistration at module unload. Locks:
//! none (lockdep's internal graph lock, inside `lockdep_register_key` and
//! `lockdep_unregister_key`).

use super::{ImplicitClass, Usage};
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

impl Usage {
    /// What a class name starts with: `arc:` for the drop maps of `Arc`s,
    /// so that reports and `/proc/lockdep` tell them from locks.
    fn prefix(self) -> &'static [u8] {
        match self {
            Usage::Lock => b"",
            Usage::Arc => b"arc:",
        }
    }
}

/// A source location as the table sees it: its content, and the address of
/// its file-name string (which tells the module the location lives in).
#[derive(Clone, Copy)]
pub(super) struct Site {
    pub(super) file: &'static str,
    pub(super) line: u32,
    pub(super) column: u32,
}

impl From<&'static Location<'static>> for Site {
    fn from(loc: &'static Location<'static>) -> Self {
        Site {
            file: loc.file(),
            line: loc.line(),
            column: loc.column(),
        }
    }
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
pub(super) struct Entry {
    key: Opaque<bindings::lock_class_key>,
    next: *mut Entry,
    hash: u32,
    line: u32,
    column: u32,
    usage: Usage,
    /// Length of the file name copied into `name` (after the usage's prefix).
    file_len: usize,
    /// `[arc:]file:line:column\0` (the file part possibly shortened).
    name: [u8; NAME_LEN],
    /// The file name of the location as seen so far, for a quick compare.
    file: Atomic<*const u8>,
    /// The module the location belongs to (null: built in, or pinned).
    owner: Atomic<*mut bindings::module>,
    state: Atomic<i32>,
    /// Set once the class has its comparison function (Arc classes).
    flags: Atomic<i32>,
}

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
fn hash(site: &Site, usage: Usage) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |b: u8| {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    };
    for b in site.file.bytes() {
        eat(b);
    }
    for b in site.line.to_le_bytes() {
        eat(b);
    }
    for b in site.column.to_le_bytes() {
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
        let p = self.usage.prefix().len();
        &self.name[p..p + self.file_len]
    }

    fn matches(&self, site: &Site, usage: Usage, h: u32) -> bool {
        if self.hash != h
            || self.line != site.line
            || self.column != site.column
            || self.usage != usage
        {
            return false;
        }
        // Fast path: the same file-name string as before.
        if self.file.load(Relaxed) == site.file.as_ptr() {
            return true;
        }
        let f = site.file.as_bytes();
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

    /// Records that `site` (whose file-name string may live elsewhere) uses
    /// this entry: a location reached from outside the owning module pins
    /// the entry, so that the module's unload leaves it registered.
    ///
    /// Returns `false` if the entry stopped being `LIVE` meanwhile (its
    /// module is unloading): the caller must not use its key.
    fn note_use(&'static self, site: &Site) -> bool {
        let f = site.file.as_ptr();
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

/// The class of `site` for `usage`: found, made, or a fallback. Never fails
/// and never sleeps.
pub(super) fn lookup(site: &Site, usage: Usage) -> ImplicitClass {
    let h = hash(site, usage);
    let slot = &TABLE[h as usize % BUCKETS];
    let mut head = slot.load(Acquire);
    let mut seen_until: *mut Entry = ptr::null_mut();
    loop {
        // Only the entries added since the last look need checking.
        if let Some(e) = find(head, seen_until, site, usage, h) {
            return live(e, site).unwrap_or_else(|| fallback(h, usage));
        }
        let Some(new) = make_entry(site, usage, h, head) else {
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
                // Another entry was added first (perhaps for `site`): `new`
                // was never shared nor registered, so it can simply go.
                // SAFETY: `new` came from `KBox::into_raw` in `make_entry`.
                drop(unsafe { KBox::from_raw(new) });
                seen_until = head;
                head = now;
            }
        }
    }
}

/// Looks for `site` in the list from `head` up to (not including) `until`.
fn find(
    mut p: *mut Entry,
    until: *mut Entry,
    site: &Site,
    usage: Usage,
    h: u32,
) -> Option<&'static Entry> {
    while !p.is_null() && p != until {
        // SAFETY: published entries are never freed and their `next` never
        // changes (invariant); the acquire load of the head made them visible.
        let e = unsafe { &*p };
        if e.matches(site, usage, h) {
            return Some(e);
        }
        p = e.next;
    }
    None
}

/// Makes sure `e`'s key is registered (again, if its module was unloaded
/// and is back). `None` if another CPU is registering it right now: the
/// caller falls back rather than wait.
fn live(e: &'static Entry, site: &Site) -> Option<ImplicitClass> {
    match e.state.load(Acquire) {
        LIVE => e.note_use(site).then(|| e.as_class()),
        UNREGISTERED => {
            if e.state.cmpxchg(UNREGISTERED, REGISTERING, Full).is_err() {
                return None;
            }
            e.owner.store(module_of(site.file.as_ptr()), Relaxed);
            e.file.store(site.file.as_ptr(), Relaxed);
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
fn make_entry(site: &Site, usage: Usage, h: u32, head: *mut Entry) -> Option<*mut Entry> {
    let mut tail = [0u8; 24];
    let tail_len = location_suffix(&mut tail, site.line, site.column);
    let file = site.file.as_bytes();
    let prefix = usage.prefix();
    let room = NAME_LEN - 1 - tail_len - prefix.len();
    let kept = &file[file.len().saturating_sub(room)..];
    let mut name = [0u8; NAME_LEN];
    let (p, f) = (prefix.len(), prefix.len() + kept.len());
    name[..p].copy_from_slice(prefix);
    name[p..f].copy_from_slice(kept);
    name[f..f + tail_len].copy_from_slice(&tail[..tail_len]);
    let entry = KBox::new(
        Entry {
            key: Opaque::uninit(),
            next: head,
            hash: h,
            line: site.line,
            column: site.column,
            usage,
            file_len: kept.len(),
            name,
            file: Atomic::new(site.file.as_ptr()),
            owner: Atomic::new(module_of(site.file.as_ptr())),
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

/// Unregisters the lock classes of `module`'s locations (not its `Arc`
/// classes, see the module documentation). Called by the `module!`
/// glue when a Rust module goes away (after its `Drop`, or after its init
/// failed); the module's locks must be gone by then.
///
/// # Safety
///
/// Must be called from process context, once the module's code no longer
/// runs, and never for a module that is still in use.
pub(super) unsafe fn release_module(module: *mut bindings::module) {
    if module.is_null() {
        return;
    }
    for slot in &TABLE {
        let mut p = slot.load(Acquire);
        while !p.is_null() {
            // SAFETY: published entries are never freed (invariant).
            let e = unsafe { &*p };
            if e.usage == Usage::Arc {
                // An `Arc` made by the module may outlive it: its class stays
                // registered, only the module's file-name string goes away.
                if e.owner.load(Acquire) == module {
                    e.file.store(ptr::null(), Relaxed);
                }
                p = e.next;
                continue;
            }
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
pub(super) fn stats() -> (usize, usize, i64) {
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

impl ImplicitClass {
    /// Whether this is one of the static fallback classes (the entry could
    /// not be allocated).
    pub fn is_fallback(&self) -> bool {
        self.entry.is_null()
    }

    /// Runs `f` once per class (for Arc classes: setting the comparison
    /// function). Returns whether `f` ran now.
    #[cfg(CONFIG_RUST_ARC_LOCKDEP)]
    pub(crate) fn once(&self, f: impl FnOnce()) -> bool {
        if self.entry.is_null() {
            return false;
        }
        // SAFETY: entries are never freed (type invariant of `Entry`).
        let e = unsafe { &*self.entry };
        if e.flags.load(Acquire) != 0 {
            return false;
        }
        // Set the flag only once `f` has run, so that no CPU skips `f` and
        // uses the class before it is set up; two CPUs may both run it.
        f();
        e.flags.store(1, Release);
        true
    }
}
