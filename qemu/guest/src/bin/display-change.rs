//! Asks the host to resize the display and checks that the loaded driver reads the new display
//! info: the device's configuration-change path (`VIRTIO_GPU_EVENT_DISPLAY`, `config_changed`).
//!
//! For each size it prints a [`DISPLAY_REQUEST`] line; xtask then resizes QEMU's console as a
//! VNC client would (a `SetDesktopSize` request), and the device raises a configuration
//! interrupt. The program waits until the driver shows the size:
//!
//! - `c`: the connector's preferred mode (the first of `/sys/class/drm/card*-*/modes`, after
//!   writing `detect` to its `status`, which probes the modes again).
//! - `rust`: a new `virtio_gpu_rs ...: scanout 0: WxH+0+0 enabled` line in the kernel log (the
//!   driver has no connectors yet; it logs the display info it reads).
//!
//! Sizes: two of 800x600, 1024x768 and 640x480 that the display does not have, then the size it
//! had, so that later programs find it as it was (QEMU ignores a request for the size it has,
//! and a check for the size shown already would prove nothing).
//!
//! Usage: `display-change c|rust`. Reports KTAP (suite `display_change`); exits 0 only when every
//! size was seen in time.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread::sleep;
use std::time::{Duration, Instant};

use virtgpu_guest::{kernel_log, KernelLog};
use virtgpu_protocol::ktap::Suite;
use virtgpu_protocol::DISPLAY_REQUEST;

/// How long the driver may take to show a new size (the host's resize, the interrupt, the work
/// item and its two commands, under TCG).
const TIMEOUT: Duration = Duration::from_secs(30);

/// The sizes asked for: the first two the display does not have already.
const SIZES: [&str; 3] = ["800x600", "1024x768", "640x480"];

type Res<T> = Result<T, String>;

/// The driver whose view of the display is checked.
#[derive(Clone, Copy, PartialEq)]
enum Driver {
    C,
    Rust,
}

/// The C driver's connector directory in sysfs (`/sys/class/drm/card0-Virtual-1`).
fn connector() -> Res<PathBuf> {
    let dir = "/sys/class/drm";
    let entries = fs::read_dir(dir).map_err(|e| format!("cannot list {dir}: {e}"))?;
    entries
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            name.is_some_and(|n| n.starts_with("card") && n.contains('-'))
        })
        .ok_or_else(|| format!("no connector in {dir}"))
}

/// The connector's preferred mode (`WxH`), after probing its modes again.
fn preferred_mode(conn: &Path) -> Res<String> {
    fs::write(conn.join("status"), "detect")
        .map_err(|e| format!("cannot write {}/status: {e}", conn.display()))?;
    let modes = fs::read_to_string(conn.join("modes"))
        .map_err(|e| format!("cannot read {}/modes: {e}", conn.display()))?;
    Ok(modes.lines().next().unwrap_or("").trim().to_string())
}

/// Whether `msg` is the Rust driver's display-info line for scanout 0 at `size`.
fn rust_scanout_line(msg: &str, size: &str) -> bool {
    msg.starts_with("virtio_gpu_rs ") && msg.ends_with(&format!(": scanout 0: {size}+0+0 enabled"))
}

/// The size scanout 0 has now, as the driver shows it.
fn current_size(driver: Driver) -> Res<String> {
    match driver {
        Driver::C => preferred_mode(&connector()?),
        Driver::Rust => {
            // The last display-info line of the driver in the whole log.
            kernel_log()?
                .iter()
                .rev()
                .filter(|m| m.starts_with("virtio_gpu_rs ") && m.ends_with("+0+0 enabled"))
                .find_map(|m| {
                    let (_, rest) = m.split_once(": scanout 0: ")?;
                    Some(rest.split_once('+')?.0.to_string())
                })
                .ok_or_else(|| "the driver logged no display info for scanout 0".into())
        }
    }
}

/// Asks the host for `size` and waits until `driver` shows it; returns how long that took.
fn change_to(driver: Driver, size: &str) -> Res<Duration> {
    let mut log = KernelLog::from_now()?;
    let conn = match driver {
        Driver::C => Some(connector()?),
        Driver::Rust => None,
    };
    println!("{DISPLAY_REQUEST}{size}");
    let start = Instant::now();
    while start.elapsed() < TIMEOUT {
        let seen = match &conn {
            Some(conn) => preferred_mode(conn)? == size,
            None => log
                .new_messages()?
                .iter()
                .any(|m| rust_scanout_line(m, size)),
        };
        if seen {
            return Ok(start.elapsed());
        }
        sleep(Duration::from_millis(100));
    }
    let shown = current_size(driver).unwrap_or_else(|e| e);
    Err(format!(
        "not shown within {}s (the driver shows {shown})",
        TIMEOUT.as_secs()
    ))
}

fn main() -> ExitCode {
    let driver = match std::env::args().nth(1).as_deref() {
        Some("c") => Driver::C,
        Some("rust") => Driver::Rust,
        _ => {
            eprintln!("usage: display-change c|rust");
            return ExitCode::FAILURE;
        }
    };
    let mut suite = Suite::start("display_change", Some(4));
    let original = match current_size(driver) {
        Ok(size) => {
            suite.pass("initial_size");
            size
        }
        Err(e) => {
            suite.fail("initial_size", &e);
            suite.finish();
            return ExitCode::FAILURE;
        }
    };
    suite.diag(&format!("initial size {original}"));
    // Two sizes the display does not have, then back.
    let mut sizes: Vec<&str> = SIZES.iter().copied().filter(|s| *s != original).collect();
    sizes.truncate(2);
    sizes.push(&original);
    for size in sizes {
        let took = change_to(driver, size);
        if let Ok(t) = &took {
            suite.diag(&format!("{size} shown after {} ms", t.as_millis()));
        }
        suite.check(&format!("resize_{size}"), &took);
    }
    if suite.finish() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
