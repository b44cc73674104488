//! Loads the Rust driver, checks that it takes the virtio-gpu device and talks to it, then
//! unbinds and binds it through sysfs and reloads the module, many times.
//!
//! Usage: `virtio-bind [module] [rebinds] [reloads]` (defaults: `virtio_gpu_rs`, 10, 5). The C
//! driver must not be loaded. Every bind must end with the device bound to `module` and a new
//! display-info line of the driver in the kernel log (`<module> virtioN: scanout 0: WxH...`),
//! which proves that a command went out on the control queue and its response came back through
//! the interrupt path. The module is unloaded at the end. Reports KTAP (suite `virtio_bind`);
//! exits 0 only when every case passed.

use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread::sleep;
use std::time::{Duration, Instant};

use virtgpu_guest::run;
use virtgpu_protocol::ktap::Suite;

/// `VIRTIO_ID_GPU`, as sysfs prints a device type.
const GPU_TYPE: &str = "0x0010";
const DEVICES: &str = "/sys/bus/virtio/devices";

/// The virtio-gpu device's sysfs name (`virtio0`).
fn gpu_device() -> Result<String, String> {
    let entries = fs::read_dir(DEVICES).map_err(|e| format!("cannot list {DEVICES}: {e}"))?;
    for e in entries.flatten() {
        let ty = fs::read_to_string(e.path().join("device")).unwrap_or_default();
        if ty.trim() == GPU_TYPE {
            return Ok(e.file_name().to_string_lossy().into_owned());
        }
    }
    Err(format!("no virtio device of type {GPU_TYPE} in {DEVICES}"))
}

/// The driver `dev` is bound to, if any.
fn bound_driver(dev: &str) -> Option<String> {
    let link = fs::read_link(Path::new(DEVICES).join(dev).join("driver")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// Every message now in the kernel log (the text after each record's `;`).
fn kernel_log() -> Result<Vec<String>, String> {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .map_err(|e| format!("cannot open /dev/kmsg: {e}"))?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let rec = String::from_utf8_lossy(&buf[..n]);
                if let Some((_, msg)) = rec.split_once(';') {
                    out.push(msg.lines().next().unwrap_or("").to_string());
                }
            }
            // EPIPE: records were overwritten meanwhile; the next read goes on.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(format!("cannot read /dev/kmsg: {e}")),
        }
    }
    Ok(out)
}

/// The driver's display-info lines for `dev` in the kernel log.
fn display_lines(module: &str, dev: &str) -> Result<Vec<String>, String> {
    let prefix = format!("{module} {dev}: scanout 0: ");
    Ok(kernel_log()?
        .into_iter()
        .filter(|l| l.starts_with(&prefix))
        .collect())
}

/// Waits up to 10 s for `dev` to be bound to `module` with one more display-info line than
/// `before`; returns the new line.
fn wait_bound(module: &str, dev: &str, before: usize) -> Result<String, String> {
    let start = Instant::now();
    loop {
        let lines = display_lines(module, dev)?;
        let bound = bound_driver(dev);
        if bound.as_deref() == Some(module) && lines.len() > before {
            return Ok(lines[lines.len() - 1].clone());
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "after 10 s: {dev} bound to {bound:?}, {} display-info lines (had {before})",
                lines.len()
            ));
        }
        sleep(Duration::from_millis(50));
    }
}

/// Checks a display-info line names a real mode: `scanout 0: WxH+X+Y enabled`, W and H > 0.
fn check_mode(line: &str) -> Result<(), String> {
    let rest = line
        .split_once("scanout 0: ")
        .map(|(_, r)| r)
        .ok_or_else(|| format!("not a display-info line: {line:?}"))?;
    let (w, rest) = rest.split_once('x').ok_or_else(|| format!("no WxH in {line:?}"))?;
    let h = rest.split('+').next().unwrap_or("");
    let (w, h): (u32, u32) = match (w.parse(), h.parse()) {
        (Ok(w), Ok(h)) => (w, h),
        _ => return Err(format!("no WxH in {line:?}")),
    };
    if w == 0 || h == 0 || !line.ends_with(" enabled") {
        return Err(format!("scanout 0 has no enabled mode: {line:?}"));
    }
    Ok(())
}

fn write_attr(path: PathBuf, value: &str) -> Result<(), String> {
    fs::write(&path, value).map_err(|e| format!("cannot write {value} to {}: {e}", path.display()))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let module = args.first().cloned().unwrap_or_else(|| "virtio_gpu_rs".into());
    let rebinds: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let reloads: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let mut k = Suite::start("virtio_bind", None);

    let dev = match gpu_device() {
        Ok(d) => d,
        Err(e) => {
            k.fail("device", &e);
            return ExitCode::from(u8::from(!k.finish()));
        }
    };
    if let Some(d) = bound_driver(&dev) {
        k.fail("device", &format!("{dev} is already bound to {d}"));
        return ExitCode::from(u8::from(!k.finish()));
    }
    k.pass("device");

    let before = display_lines(&module, &dev).map(|l| l.len()).unwrap_or(0);
    let probe = run("/bin/modprobe", &[&module]).and_then(|()| wait_bound(&module, &dev, before));
    if k.check("probe", &probe) {
        if let Ok(line) = &probe {
            k.diag(line);
            k.check("display_info", &check_mode(line));
        }
    }

    let drv = Path::new("/sys/bus/virtio/drivers").join(&module);
    let cycles = (0..rebinds).try_for_each(|i| {
        let before = display_lines(&module, &dev)?.len();
        write_attr(drv.join("unbind"), &dev)?;
        if let Some(d) = bound_driver(&dev) {
            return Err(format!("cycle {i}: still bound to {d} after unbind"));
        }
        write_attr(drv.join("bind"), &dev)?;
        let line = wait_bound(&module, &dev, before).map_err(|e| format!("cycle {i}: {e}"))?;
        check_mode(&line).map_err(|e| format!("cycle {i}: {e}"))
    });
    if k.check("rebind_cycles", &cycles) {
        k.diag(&format!("{rebinds} unbind/bind cycles, each answered by the device"));
    }

    let reload = (0..reloads).try_for_each(|i| {
        let before = display_lines(&module, &dev)?.len();
        run("/bin/rmmod", &[&module]).map_err(|e| format!("cycle {i}: {e}"))?;
        if let Some(d) = bound_driver(&dev) {
            return Err(format!("cycle {i}: still bound to {d} after rmmod"));
        }
        run("/bin/modprobe", &[&module]).map_err(|e| format!("cycle {i}: {e}"))?;
        wait_bound(&module, &dev, before)
            .map(drop)
            .map_err(|e| format!("cycle {i}: {e}"))
    });
    if k.check("reload_cycles", &reload) {
        k.diag(&format!("{reloads} rmmod/modprobe cycles"));
    }

    let unload = run("/bin/rmmod", &[&module]).and_then(|()| match bound_driver(&dev) {
        Some(d) => Err(format!("{dev} still bound to {d} after rmmod")),
        None => Ok(()),
    });
    k.check("unload", &unload);

    ExitCode::from(u8::from(!k.finish()))
}
