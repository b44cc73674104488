//! Times the driver's uapi paths from userspace, the same way under either driver, so that
//! `cargo xtask bench` can set the Rust driver against C in one boot.
//!
//! Prints `drm_bench: <case> ns=<ns per operation>` for each case, then `drm_bench: done`:
//!
//! - `dumb_cycle`: create a 256x256 dumb buffer, map it (ioctl and `mmap`), write a byte,
//!   unmap, destroy; the object's release (the host unref and the deferred free) included.
//!   `dumb_create`, `dumb_map_write` and `dumb_destroy` split it into its phases.
//! - `create_wait`: `RESOURCE_CREATE` of a 64x64 resource, then `WAIT` on it: the fenced
//!   command's round trip, from submission through the device and the interrupt handler that
//!   signals the fence to the waiter woken; then the handle is closed.
//! - `transfer_4mib`: `TRANSFER_TO_HOST` of a whole 1024x1024 (4 MiB) resource; after the
//!   last one a fenced `RESOURCE_CREATE` and its `WAIT` drain the queue (the device answers in
//!   order), inside the timed span. `mb_per_s` gives the throughput.
//!
//! Usage: `drm-bench [card]` (default `/dev/dri/card0`). Exits non-zero if a call fails.

use std::os::fd::{AsFd, BorrowedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use virtgpu_guest::virtgpu;

/// Rounds of each case: enough for a stable mean under TCG, few enough to stay short.
const CYCLES: u32 = 200;
const TRANSFERS: u32 = 100;

type Res<T> = Result<T, String>;

fn create(fd: BorrowedFd<'_>, w: u32, h: u32) -> Res<virtgpu::ResourceCreate> {
    virtgpu::call(
        fd,
        virtgpu::RESOURCE_CREATE,
        virtgpu::ResourceCreate::tex_2d(w, h, w * h * 4),
    )
    .map_err(|e| format!("RESOURCE_CREATE {w}x{h}: {e}"))
}

fn wait(fd: BorrowedFd<'_>, handle: u32) -> Res<()> {
    virtgpu::call(fd, virtgpu::WAIT, virtgpu::Wait { handle, flags: 0 })
        .map(drop)
        .map_err(|e| format!("WAIT: {e}"))
}

fn close(fd: BorrowedFd<'_>, handle: u32) -> Res<()> {
    drm_ffi::gem::close(fd, handle)
        .map(drop)
        .map_err(|e| format!("GEM_CLOSE: {e}"))
}

/// The phases of a dumb cycle: create, map and write (the ioctl, `mmap`, the first write's
/// fault, `munmap`), destroy (the release, up to the unref sent; the deferred free runs
/// meanwhile or during the next cycle).
const DUMB_PHASES: [&str; 3] = ["dumb_create", "dumb_map_write", "dumb_destroy"];

/// One dumb cycle; adds the time of each of its [`DUMB_PHASES`] to `phases`.
fn dumb_cycle(fd: BorrowedFd<'_>, phases: &mut [Duration; 3]) -> Res<()> {
    let t0 = Instant::now();
    let db = drm_ffi::mode::dumbbuffer::create(fd, 256, 256, 32, 0)
        .map_err(|e| format!("CREATE_DUMB: {e}"))?;
    let t1 = Instant::now();
    let map = drm_ffi::mode::dumbbuffer::map(fd, db.handle, 0, 0)
        .map_err(|e| format!("MAP_DUMB: {e}"))?;
    let mut mapping = virtgpu_guest::Mapping::new(fd, db.size as usize, map.offset)
        .map_err(|e| format!("mmap: {e}"))?;
    mapping.bytes()[0] = 1;
    drop(mapping);
    let t2 = Instant::now();
    drm_ffi::mode::dumbbuffer::destroy(fd, db.handle)
        .map(drop)
        .map_err(|e| format!("DESTROY_DUMB: {e}"))?;
    let t3 = Instant::now();
    for (phase, took) in phases.iter_mut().zip([t1 - t0, t2 - t1, t3 - t2]) {
        *phase += took;
    }
    Ok(())
}

/// `CYCLES` dumb cycles after a warm-up one: prints ns per cycle, then per phase.
fn dumb_cycles(fd: BorrowedFd<'_>) -> Res<()> {
    dumb_cycle(fd, &mut [Duration::ZERO; 3])?;
    let mut phases = [Duration::ZERO; 3];
    let start = Instant::now();
    for _ in 0..CYCLES {
        dumb_cycle(fd, &mut phases)?;
    }
    let per_op = |d: Duration| d.as_nanos() as f64 / f64::from(CYCLES);
    println!("drm_bench: dumb_cycle ns={:.0}", per_op(start.elapsed()));
    for (name, took) in DUMB_PHASES.iter().zip(phases) {
        println!("drm_bench: {name} ns={:.0}", per_op(took));
    }
    Ok(())
}

fn create_wait(fd: BorrowedFd<'_>) -> Res<()> {
    let r = create(fd, 64, 64)?;
    wait(fd, r.bo_handle)?;
    close(fd, r.bo_handle)
}

/// `TRANSFERS` transfers of a 4 MiB resource, drained; returns the time they took.
fn transfers(fd: BorrowedFd<'_>) -> Res<std::time::Duration> {
    let r = create(fd, 1024, 1024)?;
    wait(fd, r.bo_handle)?;
    let transfer = virtgpu::Transfer::whole(r.bo_handle, 1024, 1024);
    let start = Instant::now();
    for _ in 0..TRANSFERS {
        virtgpu::call(fd, virtgpu::TRANSFER_TO_HOST, transfer)
            .map_err(|e| format!("TRANSFER_TO_HOST: {e}"))?;
    }
    let marker = create(fd, 1, 1)?;
    wait(fd, marker.bo_handle)?;
    let took = start.elapsed();
    close(fd, marker.bo_handle)?;
    close(fd, r.bo_handle)?;
    Ok(took)
}

/// Runs `op` `n` times; prints and returns ns per run.
fn timed(case: &str, n: u32, mut op: impl FnMut() -> Res<()>) -> Res<f64> {
    op()?; // warm-up, not timed
    let start = Instant::now();
    for _ in 0..n {
        op()?;
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
    println!("drm_bench: {case} ns={ns:.0}");
    Ok(ns)
}

fn run(fd: BorrowedFd<'_>) -> Res<()> {
    dumb_cycles(fd)?;
    timed("create_wait", CYCLES, || create_wait(fd))?;
    transfers(fd)?; // warm-up
    let took = transfers(fd)?;
    let ns = took.as_nanos() as f64 / f64::from(TRANSFERS);
    let mb_per_s = 4.0 * f64::from(TRANSFERS) / took.as_secs_f64();
    println!("drm_bench: transfer_4mib ns={ns:.0} mb_per_s={mb_per_s:.1}");
    Ok(())
}

fn main() -> ExitCode {
    let card = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/dev/dri/card0".into());
    let r = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&card)
        .map_err(|e| format!("opening {card}: {e}"))
        .and_then(|f| run(f.as_fd()));
    match r {
        Ok(()) => {
            println!("drm_bench: done");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("drm-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
