// SPDX-License-Identifier: GPL-2.0

//! A small user of `Arc`, built as an external module against the pristine
//! kernel and against ours with `CONFIG_RUST_ARC_LOCKDEP` off; xtask
//! compares the object code of its functions (and of the `Arc` code
//! instantiated in it), which must be identical.
//!
//! Its data types are its own: with shared generics, an instance the kernel
//! crate happens to contain (`Arc<u64>`, say, from some test) would be called
//! instead of instantiated here, and the comparison would measure the kernel
//! crate's other users rather than `Arc`.

use core::marker::PhantomPinned;
use kernel::{
    prelude::*,
    sync::{Arc, ArcBorrow, UniqueArc},
};

module! {
    type: ArcUser,
    name: "rust_arc_user",
    authors: ["virtgpu-rs developers"],
    description: "A small Arc user for object code comparison",
    license: "GPL",
}

/// Data only this module uses.
struct Payload(u64);

/// Another, for a different layout.
struct Small(u8);

/// New, clone, drop (not last), read, drop (last).
#[inline(never)]
pub fn arc_user_roundtrip(v: u64) -> Result<u64> {
    let a = Arc::new(Payload(v), GFP_KERNEL)?;
    let b = a.clone();
    drop(a);
    Ok(b.0 + 1)
}

/// Contents that must stay pinned.
#[pin_data]
struct Pinned {
    v: u64,
    #[pin]
    _pin: PhantomPinned,
}

/// Pin-initialised contents (`Arc::pin_init`, through `UniqueArc`). Nothing is locked: a lock's
/// code is not `Arc`'s, and our tree changes it (patch 0021 drops the lockdep assertion from
/// the guard of a lock just taken), so a lock here would make the comparison about locks.
#[inline(never)]
pub fn arc_user_pinned(v: u64) -> Result<u64> {
    let p = Arc::pin_init(
        pin_init!(Pinned {
            v,
            _pin: PhantomPinned,
        }),
        GFP_KERNEL,
    )?;
    Ok(p.v)
}

/// `UniqueArc::new_uninit`, then into a shared `Arc`.
#[inline(never)]
pub fn arc_user_unique(v: u8) -> Result<u8> {
    let u = UniqueArc::new_uninit(GFP_KERNEL)?;
    let a: Arc<Small> = u.write(Small(v)).into();
    Ok(a.0)
}

/// Raw pointers and borrows (`ArcInner::container_of`).
#[inline(never)]
pub fn arc_user_raw(v: u8) -> Result<u8> {
    let a = Arc::new(Small(v), GFP_KERNEL)?;
    let p = Arc::into_raw(a);
    // SAFETY: `p` came from `Arc::into_raw` just above and is still owned.
    let b: ArcBorrow<'_, Small> = unsafe { ArcBorrow::from_raw(p) };
    let r = b.0;
    // SAFETY: as above; this takes the reference back once.
    drop(unsafe { Arc::from_raw(p) });
    Ok(r)
}

struct ArcUser;

impl kernel::Module for ArcUser {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let _ = (
            arc_user_roundtrip(1)?,
            arc_user_pinned(2)?,
            arc_user_unique(3)?,
            arc_user_raw(4)?,
        );
        Ok(ArcUser)
    }
}
