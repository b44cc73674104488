//! Running a guest under QEMU (TCG) with a captured serial log and QMP.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::machine::Machine;
use crate::toolchain::{Cmd, Toolchain};
use crate::ui::{self, Phase};
use virtgpu_protocol::DISPLAY_REQUEST;

/// What to boot.
pub struct BootSpec<'a> {
    pub machine: &'a Machine,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    /// Extra kernel command line (after console and panic settings).
    pub append: String,
    pub run_dir: &'a Path,
    pub timeout: Duration,
    /// Open a window instead of running headless.
    pub display: bool,
}

/// A running guest.
pub struct Guest {
    child: Child,
    pub log: PathBuf,
    qmp: PathBuf,
    /// The VNC server's socket (headless boots), through which display requests are served.
    vnc: Option<PathBuf>,
    /// How many of the guest's display requests were served.
    resized: usize,
    started: Instant,
    timeout: Duration,
    exited: bool,
    /// Bytes of the serial log already echoed (`-v`).
    echoed: usize,
    /// Length of the serial log when it last grew, and when that was.
    grown: (usize, Instant),
}

/// How long the kernel may print nothing before `/init` has started
/// before the boot counts as stalled (a KUnit case prints at least its
/// result line every few seconds).
const EARLY_STALL: Duration = Duration::from_secs(90);

/// The guest printed nothing for [`EARLY_STALL`] before `/init` started:
/// stuck in early boot (seen once under TCG, in ACPI set-up). The caller
/// may boot again.
#[derive(Debug)]
pub struct EarlyStall {
    pub last_lines: String,
}

impl std::fmt::Display for EarlyStall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "guest stalled before /init: no serial output for {}s. Last lines:\n{}",
            EARLY_STALL.as_secs(),
            self.last_lines
        )
    }
}

impl std::error::Error for EarlyStall {}

/// Whether `/init` has reported its start in the serial log `text`: from then on, a silent
/// guest is running our code (a benchmark loop, a long test), not stuck in early boot.
fn init_started(text: &str) -> bool {
    // The event's text carries the protocol prefix already.
    text.contains(&virtgpu_protocol::Event::InitStart.to_string())
}

impl Guest {
    /// Starts QEMU.
    pub fn start(tc: &Toolchain, spec: &BootSpec<'_>) -> Result<Guest> {
        let log = spec.run_dir.join("serial.log");
        let qmp = spec.run_dir.join("qmp.sock");
        let vnc = spec.run_dir.join("vnc.sock");
        let _ = std::fs::remove_file(&log);
        let _ = std::fs::remove_file(&qmp);
        let _ = std::fs::remove_file(&vnc);
        // printk.devkmsg=on: /init writes every line through /dev/kmsg,
        // which would otherwise be rate limited.
        let append = format!(
            "console={} panic=-1 oops=panic printk.devkmsg=on {}",
            spec.machine.console, spec.append
        );
        let mut c = Cmd::new(&spec.machine.qemu)
            .args(&spec.machine.args)
            .args(["-no-reboot", "-kernel"])
            .arg(spec.kernel)
            .arg("-initrd")
            .arg(spec.initrd)
            .arg("-append")
            .arg(append.trim())
            .arg("-serial")
            .arg(format!("file:{}", log.display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()));
        let vnc = if spec.display {
            let disp = std::env::var("DISPLAY").context(
                "--display needs a graphical session (DISPLAY is not set); run without --display for a headless run",
            )?;
            c = c.args(["-display", "gtk"]).env("DISPLAY", disp);
            // The window resizes the display itself.
            None
        } else {
            // No local display; a VNC server on a socket, for display requests.
            c = c
                .args(["-display", "none", "-vnc"])
                .arg(format!("unix:{}", vnc.display()));
            Some(vnc)
        };
        let stderr = std::fs::File::create(spec.run_dir.join("qemu.log"))?;
        let child = tc
            .command(&c)
            .stdin(Stdio::null())
            .stdout(stderr.try_clone()?)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", spec.machine.qemu))?;
        Ok(Guest {
            child,
            log,
            qmp,
            vnc,
            resized: 0,
            started: Instant::now(),
            timeout: spec.timeout,
            exited: false,
            echoed: 0,
            grown: (0, Instant::now()),
        })
    }

    /// Fails with [`EarlyStall`] when the log has not grown for
    /// [`EARLY_STALL`] and `/init` has not started.
    fn check_stall(&mut self, text: &str) -> Result<()> {
        if text.len() != self.grown.0 {
            self.grown = (text.len(), Instant::now());
            return Ok(());
        }
        if init_started(text) || self.grown.1.elapsed() < EARLY_STALL {
            return Ok(());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.exited = true;
        Err(EarlyStall {
            last_lines: indent(&ui::tail(&self.log, 5)),
        }
        .into())
    }

    /// The serial log so far.
    pub fn log_text(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// With `-v`, prints the serial log's new complete lines to stderr.
    fn echo(&mut self, text: &str) {
        if !ui::verbose() || text.len() <= self.echoed {
            return;
        }
        let new = &text[self.echoed..];
        if let Some(end) = new.rfind('\n') {
            eprint!("{}", &new[..=end]);
            self.echoed += end + 1;
        }
    }

    /// Time since QEMU started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn hung(&mut self) -> anyhow::Error {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.exited = true;
        let qemu_log = self.log.with_file_name("qemu.log");
        anyhow::anyhow!(
            "guest hung: no power-off within {}s. Last lines of the serial log ({}):\n{}\n  \
             hint: see where the boot stopped; QEMU's own messages are in {}; \
             a slow host may need a longer --timeout",
            self.timeout.as_secs(),
            self.log.display(),
            indent(&ui::tail(&self.log, 15)),
            qemu_log.display()
        )
    }

    fn check_exit(&mut self) -> Result<bool> {
        if self.exited {
            return Ok(true);
        }
        if let Some(status) = self.child.try_wait()? {
            self.exited = true;
            if !status.success() {
                let qemu_log = self.log.with_file_name("qemu.log");
                bail!(
                    "QEMU failed ({status}):\n{}\n  serial log: {}",
                    indent(&ui::tail(&qemu_log, 10)),
                    self.log.display()
                );
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// Waits for a serial line containing `needle`; returns it, or `None` if
    /// the guest powered off first. Times out as a hang.
    pub fn wait_line(&mut self, needle: &str, phase: &Phase) -> Result<Option<String>> {
        loop {
            let text = self.log_text();
            self.echo(&text);
            if let Some(l) = text.lines().find(|l| l.contains(needle)) {
                return Ok(Some(l.to_string()));
            }
            if self.check_exit()? {
                return Ok(None);
            }
            self.check_stall(&text)?;
            if self.started.elapsed() > self.timeout {
                return Err(self.hung());
            }
            if let Some(last) = text.lines().last() {
                phase.status(crate::ktap::strip_timestamp(last).trim());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Serves the guest's display requests (a [`DISPLAY_REQUEST`] line with a size) not served
    /// yet: resizes the display through the VNC server.
    fn serve_display_requests(&mut self, text: &str, phase: &Phase) -> Result<()> {
        // Complete lines only: the last one may still be being written.
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        let requests: Vec<&str> = complete
            .lines()
            .filter_map(|l| l.split_once(DISPLAY_REQUEST).map(|(_, size)| size))
            .collect();
        for size in &requests[self.resized.min(requests.len())..] {
            let Some(vnc) = &self.vnc else {
                bail!(
                    "the guest asked for a display of {size}, which only a headless boot can serve (run without --display)"
                );
            };
            phase.status(&format!("resizing the display to {size}"));
            let (w, h) = crate::vnc::parse_size(size)?;
            crate::vnc::resize(vnc, w, h)
                .with_context(|| format!("resizing the display to {size} for the guest"))?;
            self.resized += 1;
        }
        Ok(())
    }

    /// Waits for QEMU to exit (the guest powers off), serving the guest's display requests
    /// meanwhile. Times out as a hang.
    pub fn wait_exit(&mut self, phase: &Phase) -> Result<()> {
        loop {
            let exited = self.check_exit()?;
            let text = self.log_text();
            self.echo(&text);
            if !exited {
                self.serve_display_requests(&text, phase)?;
            }
            if exited {
                return Ok(());
            }
            self.check_stall(&text)?;
            if self.started.elapsed() > self.timeout {
                return Err(self.hung());
            }
            if let Some(last) = text.lines().last() {
                phase.status(crate::ktap::strip_timestamp(last).trim());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs one QMP command and returns its `return` value.
    pub fn qmp(&self, command: &str, arguments: Value) -> Result<Value> {
        let stream = UnixStream::connect(&self.qmp)
            .with_context(|| format!("connecting to QMP at {}", self.qmp.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut w = stream;
        let mut line = String::new();
        reader.read_line(&mut line)?; // greeting
        let mut send = |v: Value| -> Result<Value> {
            writeln!(w, "{v}")?;
            loop {
                let mut l = String::new();
                if reader.read_line(&mut l)? == 0 {
                    bail!("QMP connection closed");
                }
                let v: Value = serde_json::from_str(&l).context("QMP sent invalid JSON")?;
                if let Some(r) = v.get("return") {
                    return Ok(r.clone());
                }
                if let Some(e) = v.get("error") {
                    bail!("QMP error: {e}");
                }
                // An asynchronous event: keep reading.
            }
        };
        send(json!({"execute": "qmp_capabilities"}))?;
        send(json!({"execute": command, "arguments": arguments}))
    }

    /// Saves the display as PNG.
    pub fn screendump(&self, png: &Path) -> Result<()> {
        let _ = std::fs::remove_file(png);
        self.qmp(
            "screendump",
            json!({"filename": png.display().to_string(), "format": "png"}),
        )?;
        Ok(())
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Indents every line by four spaces.
pub fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_start_is_seen_in_a_serial_log() {
        let log = "[    0.000000] Linux version 7.3.4\r\n\
                   [    8.097770] virtgpu-rs: init start\r\n\
                   [  344.429682] rust_dma_fence_bench: fence_bench: fence_signal rust_ns=1 c_ns=1\r\n";
        assert!(init_started(log));
        assert!(!init_started("[    0.000000] Linux version 7.3.4\r\n"));
        // Not a program's line that merely mentions it.
        assert!(!init_started("drm-bench| init start\n"));
    }
}
