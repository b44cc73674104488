//! Calls the DRM uapi of `/dev/dri/card0` with valid and invalid arguments
//! and prints one canonical line per call, prefixed `transcript: `.
//!
//! xtask runs it under one driver, reloads (or swaps) the driver and runs it
//! again: the transcripts must be identical, so every errno, size and value
//! the Rust driver returns is the C driver's. Lines hold nothing that varies
//! between two correct runs (no mmap offsets, no fds).
//!
//! It also reports KTAP (suite `drm_uapi`): a valid call must succeed and an
//! invalid one must fail; which errno it fails with is the transcript's
//! business.
//!
//! Usage: `drm-uapi [CARD]` (default `/dev/dri/card0`).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::process::ExitCode;

use drm_ffi as ffi;
use virtgpu_guest::virtgpu;
use virtgpu_protocol::ktap::Suite;
use virtgpu_protocol::TRANSCRIPT;

/// What the calls are judged by.
#[derive(Clone, Copy)]
enum Want {
    Success,
    Failure,
    /// Depends on the device (a feature it may lack): only the transcript judges.
    Either,
}

struct Calls {
    k: Suite,
}

fn errno(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => format!("errno {n}"),
        None => format!("error {e}"),
    }
}

impl Calls {
    /// Prints the transcript line of `case` and reports whether it went as
    /// `want`s.
    fn call<T>(
        &mut self,
        case: &str,
        want: Want,
        r: io::Result<T>,
        show: impl Fn(&T) -> String,
    ) -> Option<T> {
        let line = match &r {
            Ok(v) => format!("{case}: ok {}", show(v)),
            Err(e) => format!("{case}: {}", errno(e)),
        };
        println!("{TRANSCRIPT}{}", line.trim_end());
        match (want, &r) {
            (Want::Success, Ok(_)) | (Want::Failure, Err(_)) | (Want::Either, _) => {
                self.k.pass(case)
            }
            (Want::Success, Err(e)) => self
                .k
                .fail(case, &format!("expected success, got {}", errno(e))),
            (Want::Failure, Ok(_)) => self.k.fail(case, "expected an error, the call succeeded"),
        }
        r.ok()
    }
}

fn text(v: &[i8]) -> String {
    v.iter().map(|&c| c as u8 as char).collect()
}

/// DRM_CAP_* values of include/uapi/drm/drm.h.
const CAPS: &[(&str, u64)] = &[
    ("DUMB_BUFFER", 0x1),
    ("VBLANK_HIGH_CRTC", 0x2),
    ("DUMB_PREFERRED_DEPTH", 0x3),
    ("DUMB_PREFER_SHADOW", 0x4),
    ("PRIME", 0x5),
    ("TIMESTAMP_MONOTONIC", 0x6),
    ("ASYNC_PAGE_FLIP", 0x7),
    ("CURSOR_WIDTH", 0x8),
    ("CURSOR_HEIGHT", 0x9),
    ("ADDFB2_MODIFIERS", 0x10),
    ("PAGE_FLIP_TARGET", 0x11),
    ("CRTC_IN_VBLANK_EVENT", 0x12),
    ("SYNCOBJ", 0x13),
    ("SYNCOBJ_TIMELINE", 0x14),
    ("ATOMIC_ASYNC_PAGE_FLIP", 0x15),
    ("NO_SUCH_CAP", 0xffff),
];

fn run(fd: BorrowedFd<'_>, c: &mut Calls) {
    use Want::*;
    let (mut name, mut date, mut desc) = (Vec::new(), Vec::new(), Vec::new());
    c.call(
        "version",
        Success,
        ffi::get_version(fd, Some(&mut name), Some(&mut date), Some(&mut desc)),
        |v| {
            format!(
                "{}.{}.{} name={} date={} desc={}",
                v.version_major,
                v.version_minor,
                v.version_patchlevel,
                text(&name),
                text(&date),
                text(&desc)
            )
        },
    );
    // The generic capabilities (PRIME, TIMESTAMP_MONOTONIC, the sync objects) every driver
    // answers; the KMS ones only a driver with KMS (the transcript compares them).
    for (cap, id) in CAPS {
        let want = match *id {
            0xffff => Failure,
            0x5 | 0x6 | 0x13 | 0x14 => Success,
            _ => Either,
        };
        c.call(
            &format!("get_cap_{cap}"),
            want,
            ffi::get_capability(fd, *id),
            |v| format!("{}", v.value),
        );
    }

    // Dumb buffers: a valid one, then what a driver must refuse.
    let db = c.call(
        "create_dumb_64x64x32",
        Success,
        ffi::mode::dumbbuffer::create(fd, 64, 64, 32, 0),
        |d| format!("pitch={} size={}", d.pitch, d.size),
    );
    for (case, want, w, h, bpp, flags) in [
        ("create_dumb_zero_width", Failure, 0, 64, 32, 0),
        ("create_dumb_zero_bpp", Failure, 64, 64, 0, 0),
        // The core ignores `flags` (7.3's drm_mode_create_dumb does not
        // check them): the C driver accepts this, so must the Rust one.
        ("create_dumb_unknown_flags", Success, 64, 64, 32, 1),
        (
            "create_dumb_overflow",
            Failure,
            0xffff_ffff,
            0xffff_ffff,
            32,
            0,
        ),
    ] {
        c.call(
            case,
            want,
            ffi::mode::dumbbuffer::create(fd, w, h, bpp, flags),
            |d| format!("pitch={} size={}", d.pitch, d.size),
        );
    }
    if let Some(db) = db {
        c.call(
            "map_dumb",
            Success,
            ffi::mode::dumbbuffer::map(fd, db.handle, 0, 0),
            |_| String::new(),
        );
        let exported = c.call(
            "prime_export",
            Success,
            ffi::gem::handle_to_fd(fd, db.handle, libc_cloexec()),
            |_| String::new(),
        );
        if let Some(p) = exported {
            // SAFETY: PRIME_HANDLE_TO_FD succeeded, so `p.fd` is a new file
            // descriptor that nothing else in this process owns or closes.
            let owned = unsafe { OwnedFd::from_raw_fd(p.fd) };
            c.call(
                "prime_import_same_object",
                Success,
                ffi::gem::fd_to_handle(fd, owned.as_fd()),
                |h| format!("same_handle={}", h.handle == db.handle),
            );
        }
        // A global name, and a second handle to the object through it (the first stays).
        let name = c.call(
            "gem_flink",
            Success,
            virtgpu_guest::gem_flink(fd, db.handle),
            |_| String::new(),
        );
        if let Some(name) = name {
            c.call(
                "gem_flink_again_same_name",
                Success,
                virtgpu_guest::gem_flink(fd, db.handle),
                |again| format!("{}", *again == name),
            );
            let opened = c.call("gem_open", Success, ffi::gem::open(fd, name), |o| {
                format!("size={} new_handle={}", o.size, o.handle != db.handle)
            });
            if let Some(o) = opened {
                c.call(
                    "gem_close_opened",
                    Success,
                    ffi::gem::close(fd, o.handle),
                    |_| String::new(),
                );
            }
        }
        c.call(
            "gem_flink_bad_handle",
            Failure,
            virtgpu_guest::gem_flink(fd, 0x7fff_0000),
            |_| String::new(),
        );
        c.call(
            "destroy_dumb",
            Success,
            ffi::mode::dumbbuffer::destroy(fd, db.handle),
            |_| String::new(),
        );
        c.call(
            "destroy_dumb_again",
            Failure,
            ffi::mode::dumbbuffer::destroy(fd, db.handle),
            |_| String::new(),
        );
    }
    // A buffer another device exported. C imports one only with RESOURCE_BLOB (and without
    // virgl); without, drm_gem_prime_import() attaches and maps it, then C's
    // gem_prime_import_sg_table refuses it. The transcript compares the answers.
    let foreign = c.call(
        "prime_import_foreign_setup",
        Success,
        virtgpu_guest::foreign_dma_buf(64 * 64 * 4),
        |_| String::new(),
    );
    if let Some(buf) = foreign {
        let imported = c.call(
            "prime_import_foreign",
            Either,
            ffi::gem::fd_to_handle(fd, buf.as_fd()),
            |_| String::new(),
        );
        if let Some(h) = imported {
            c.call(
                "gem_close_imported",
                Success,
                ffi::gem::close(fd, h.handle),
                |_| String::new(),
            );
        }
    }
    c.call(
        "map_dumb_bad_handle",
        Failure,
        ffi::mode::dumbbuffer::map(fd, 0x7fff_0000, 0, 0),
        |_| String::new(),
    );
    c.call(
        "gem_close_bad_handle",
        Failure,
        ffi::gem::close(fd, 0x7fff_0000),
        |_| String::new(),
    );
    c.call(
        "gem_open_bad_name",
        Failure,
        ffi::gem::open(fd, 0x7fff_0000),
        |_| String::new(),
    );
    // Known parameters succeed (but BLOB_ALIGNMENT, which only a device with the feature has);
    // the value written, and that exactly an int was written, are the transcript's business.
    for (name, param) in virtgpu_guest::VIRTGPU_PARAMS {
        let want = match *name {
            n if n.starts_with("UNKNOWN") => Failure,
            "BLOB_ALIGNMENT" => Either,
            _ => Success,
        };
        c.call(
            &format!("virtgpu_getparam_{name}"),
            want,
            virtgpu_guest::virtgpu_getparam(fd, *param),
            |v| format!("value={} int={}", v.value, v.wrote_int),
        );
    }
    // DRM_COMMAND_BASE + 0 is an empty slot of the virtgpu table, + 0xc past its end.
    for (name, nr) in [
        ("virtgpu_ioctl_slot_0", 0x40),
        ("virtgpu_ioctl_past_end", 0x4c),
    ] {
        c.call(name, Failure, virtgpu_guest::drm_raw_ioctl(fd, nr), |_| {
            String::new()
        });
    }
    c.call(
        "virtgpu_getparam_bad_pointer",
        Failure,
        virtgpu_guest::virtgpu_getparam_bad_pointer(fd, 1),
        |_| String::new(),
    );
    virtgpu_resources(fd, c);
}

/// The virtgpu resource ioctls on a device without virgl: 2D resources, their info, mapping,
/// transfers and waits, the arguments a driver without virgl refuses, and the 3D ioctls it
/// does not have. Resource ids are printed relative to each other only: C's fbdev console
/// takes one the Rust driver (without an fbdev console yet) does not.
fn virtgpu_resources(fd: BorrowedFd<'_>, c: &mut Calls) {
    use virtgpu::ResourceCreate as Rc;
    use Want::*;
    let res = c.call(
        "virtgpu_resource_create_64x64",
        Success,
        virtgpu::call(
            fd,
            virtgpu::RESOURCE_CREATE,
            Rc::tex_2d(64, 64, 64 * 64 * 4),
        ),
        |r| format!("res_handle_set={}", r.res_handle != 0),
    );
    let zero = c.call(
        "virtgpu_resource_create_size_0",
        Success,
        virtgpu::call(fd, virtgpu::RESOURCE_CREATE, Rc::tex_2d(16, 16, 0)),
        |_| String::new(),
    );
    if let (Some(a), Some(b)) = (res, zero) {
        c.call(
            "virtgpu_resource_ids_grow",
            Success,
            Ok(b.res_handle.wrapping_sub(a.res_handle)),
            |d| format!("next_minus_previous={d}"),
        );
    }
    type Change = fn(&mut Rc);
    let bad: [(&str, Change); 5] = [
        ("target_3", |r| r.target = 3),
        ("depth_2", |r| r.depth = 2),
        ("nr_samples_2", |r| r.nr_samples = 2),
        ("last_level_2", |r| r.last_level = 2),
        ("array_size_2", |r| r.array_size = 2),
    ];
    for (name, change) in bad {
        let mut rc = Rc::tex_2d(64, 64, 64 * 64 * 4);
        change(&mut rc);
        c.call(
            &format!("virtgpu_resource_create_{name}"),
            Failure,
            virtgpu::call(fd, virtgpu::RESOURCE_CREATE, rc),
            |_| String::new(),
        );
    }
    for (name, r) in [("64x64", res), ("size_0", zero)] {
        let Some(r) = r else { continue };
        let info = virtgpu::ResourceInfo {
            bo_handle: r.bo_handle,
            ..Default::default()
        };
        c.call(
            &format!("virtgpu_resource_info_{name}"),
            Success,
            virtgpu::call(fd, virtgpu::RESOURCE_INFO, info),
            |i| {
                format!(
                    "size={} same_res_handle={}",
                    i.size,
                    i.res_handle == r.res_handle
                )
            },
        );
    }
    let handle = res.map_or(0x7fff_0000, |r| r.bo_handle);
    let bad_handle = 0x7fff_0000;
    for (case, want, h) in [("", Success, handle), ("_bad_handle", Failure, bad_handle)] {
        let map = virtgpu::Map {
            handle: h,
            ..Default::default()
        };
        c.call(
            &format!("virtgpu_map{case}"),
            want,
            virtgpu::call(fd, virtgpu::MAP, map),
            |_| String::new(),
        );
        let transfer = virtgpu::Transfer::whole(h, 64, 64);
        c.call(
            &format!("virtgpu_transfer_to_host{case}"),
            want,
            virtgpu::call(fd, virtgpu::TRANSFER_TO_HOST, transfer),
            |_| String::new(),
        );
        // Blocking first: after it the creation fence has signalled, so NOWAIT is settled.
        for (flags, name) in [(0, "wait"), (virtgpu::WAIT_NOWAIT, "wait_nowait")] {
            let wait = virtgpu::Wait { handle: h, flags };
            c.call(
                &format!("virtgpu_{name}{case}"),
                want,
                virtgpu::call(fd, virtgpu::WAIT, wait),
                |_| String::new(),
            );
        }
    }
    let info = virtgpu::ResourceInfo {
        bo_handle: bad_handle,
        ..Default::default()
    };
    c.call(
        "virtgpu_resource_info_bad_handle",
        Failure,
        virtgpu::call(fd, virtgpu::RESOURCE_INFO, info),
        |_| String::new(),
    );
    // The 3D ioctls, with null pointers: refused before any is followed on a device without
    // virgl (ENOSYS, or EINVAL for blobs and context init).
    let mut exec = virtgpu::Execbuffer::default();
    let mut from_host = virtgpu::Transfer {
        bo_handle: handle,
        ..Default::default()
    };
    let mut caps = virtgpu::GetCaps {
        cap_set_id: 1,
        ..Default::default()
    };
    let mut blob = virtgpu::ResourceCreateBlob {
        blob_mem: 1,
        size: 4096,
        ..Default::default()
    };
    let mut init = virtgpu::ContextInit::default();
    // SAFETY: Each struct is its command's argument, with every user pointer null (and the
    // sizes and counts that would make the kernel follow them zero).
    let refused = unsafe {
        [
            (
                "execbuffer",
                virtgpu::ioctl(fd, virtgpu::EXECBUFFER, &mut exec),
            ),
            (
                "transfer_from_host",
                virtgpu::ioctl(fd, virtgpu::TRANSFER_FROM_HOST, &mut from_host),
            ),
            ("get_caps", virtgpu::ioctl(fd, virtgpu::GET_CAPS, &mut caps)),
            (
                "resource_create_blob",
                virtgpu::ioctl(fd, virtgpu::RESOURCE_CREATE_BLOB, &mut blob),
            ),
            (
                "context_init",
                virtgpu::ioctl(fd, virtgpu::CONTEXT_INIT, &mut init),
            ),
        ]
    };
    for (name, r) in refused {
        c.call(&format!("virtgpu_{name}"), Failure, r, |_| String::new());
    }
    for r in [res, zero].into_iter().flatten() {
        c.call(
            "virtgpu_resource_close",
            Success,
            ffi::gem::close(fd, r.bo_handle),
            |_| String::new(),
        );
    }
}

/// O_CLOEXEC for PRIME export.
fn libc_cloexec() -> u32 {
    0o2000000
}

fn main() -> ExitCode {
    let card = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/dev/dri/card0".into());
    let mut c = Calls {
        k: Suite::start("drm_uapi", None),
    };
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&card)
    {
        Ok(f) => run(f.as_fd(), &mut c),
        Err(e) => c.k.fail("open", &format!("opening {card}: {e}")),
    }
    if c.k.finish() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
