//! `/init` of the virtgpu-rs test initramfs.
//!
//! Mounts the pseudo file systems, carries out the steps of `vrs.steps=`
//! from the kernel command line in order (load a module, unload one, run a
//! program: see [`virtgpu_protocol::Step`]) and prints one
//! [`virtgpu_protocol::Event`] line for each, which xtask reads to judge the
//! boot: a module that does not load, a program that exits non-zero or is
//! killed by a signal, or a step that never reports fails the boot's row;
//! so does a DRM driver's module that loads but brings up no card.
//! Then it prints lockdep's figures and powers off (QEMU runs with
//! `-no-reboot`), unless `vrs.hang=1` asks it to hang.
//!
//! Everything goes through the kernel log (`/dev/kmsg`, one record a line,
//! `printk.devkmsg=on`), so the console never splits a line of ours with a
//! kernel message, nor a kernel message with ours (only busybox's own
//! error messages, from `mount`, `modprobe` and `rmmod`, go to the console
//! directly). A program's stdout and
//! stderr are forwarded line by line as `<program>| <line>`: xtask takes a
//! program's output (its KTAP included) from those lines, and nothing a
//! program prints can pass for a kernel report.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use virtgpu_guest::kill_group;
use virtgpu_protocol::{cmdline_value, key, output_tag, Event, Exit, Step, DRM_DRIVERS, NO_DEVICE};

const CARD: &str = "/dev/dri/card0";
const LIBRARY_PATH: &str = "/usr/lib/x86_64-linux-gnu:/usr/lib/aarch64-linux-gnu";

/// Longest line written to the kernel log at once (a record holds 1024).
const MAX_LINE: usize = 900;

/// Where `/init` writes: the kernel log, or stdout before it can be opened.
#[derive(Clone)]
struct Log(Option<Arc<File>>);

impl Log {
    fn open() -> Log {
        Log(OpenOptions::new()
            .write(true)
            .open("/dev/kmsg")
            .ok()
            .map(Arc::new))
    }

    /// Writes one line as one record (a longer line is cut, and says so).
    fn line(&self, text: &str) {
        let mut end = text.len().min(MAX_LINE);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let cut = if end < text.len() { " [line cut]" } else { "" };
        let rec = format!("{}{cut}\n", &text[..end]);
        match &self.0 {
            Some(f) => {
                let _ = (&**f).write_all(rec.as_bytes());
            }
            None => print!("{rec}"),
        }
    }

    fn say(&self, e: Event) {
        self.line(&e.to_string());
    }

    /// Forwards `pipe` line by line as `<program>| <line>`.
    fn forward(&self, program: &str, pipe: impl Read + Send + 'static) -> mpsc::Receiver<()> {
        let (tx, rx) = mpsc::channel();
        let log = self.clone();
        let tag = output_tag(program);
        std::thread::spawn(move || {
            let mut r = BufReader::new(pipe);
            let mut buf = Vec::new();
            while matches!(r.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                let text = String::from_utf8_lossy(&buf);
                log.line(&format!("{tag}{}", text.trim_end_matches(['\n', '\r'])));
                buf.clear();
            }
            let _ = tx.send(());
        });
        rx
    }
}

/// Runs a busybox applet or program; its exit status, or -1 if it did not run.
fn sh(log: &Log, program: &str, args: &[&str]) -> i32 {
    match Command::new(program).args(args).status() {
        Ok(s) => s.code().unwrap_or(-1),
        Err(e) => {
            log.line(&format!("virtgpu-rs init: cannot run {program}: {e}"));
            -1
        }
    }
}

fn wait_for(what: impl Fn() -> bool, limit: Duration) {
    let start = Instant::now();
    while !what() && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mount_all(log: &Log) {
    sh(log, "/bin/busybox", &["--install", "-s", "/bin"]);
    for (fs, dir) in [
        ("proc", "/proc"),
        ("sysfs", "/sys"),
        ("devtmpfs", "/dev"),
        ("debugfs", "/sys/kernel/debug"),
        ("tracefs", "/sys/kernel/tracing"),
        ("tmpfs", "/tmp"),
    ] {
        let _ = std::fs::create_dir_all(dir);
        if sh(log, "/bin/mount", &["-t", fs, fs, dir]) != 0 {
            log.line(&format!("virtgpu-rs init: mounting {fs} on {dir} failed"));
        }
    }
}

fn run_step(log: &Log, step: &Step) {
    match step {
        Step::Load { module, params } => {
            let mut args = vec![module.as_str()];
            args.extend(params.iter().map(String::as_str));
            let mut status = sh(log, "/bin/modprobe", &args);
            if status == 0 && DRM_DRIVERS.contains(&module.as_str()) {
                wait_for(|| Path::new(CARD).exists(), Duration::from_secs(5));
                if !Path::new(CARD).exists() {
                    // Loaded, but it bound no device: nothing can test it.
                    status = NO_DEVICE;
                }
            }
            log.say(Event::Loaded {
                module: module.clone(),
                ok: status == 0,
                status,
            });
        }
        Step::Unload { module } => {
            let status = sh(log, "/bin/rmmod", &[module]);
            if status == 0 && DRM_DRIVERS.contains(&module.as_str()) {
                wait_for(|| !Path::new(CARD).exists(), Duration::from_secs(5));
            }
            log.say(Event::Unloaded {
                module: module.clone(),
                ok: status == 0,
                status,
            });
        }
        Step::Run { program, args } => {
            log.say(Event::Started {
                program: program.clone(),
            });
            let spawned = Command::new(format!("/usr/bin/{program}"))
                .args(args)
                // Debian programs from the packages archive find their
                // libraries here (there is no ld.so.cache).
                .env("LD_LIBRARY_PATH", LIBRARY_PATH)
                // The kernel starts init without a PATH.
                .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .spawn();
            let exit = match spawned {
                Ok(mut child) => {
                    let mut done = Vec::new();
                    if let Some(p) = child.stdout.take() {
                        done.push(log.forward(program, p));
                    }
                    if let Some(p) = child.stderr.take() {
                        done.push(log.forward(program, p));
                    }
                    let status = child.wait();
                    // Helpers the program left behind would hold the pipes
                    // and print into the next step: they go with it.
                    kill_group(child.id());
                    for d in done {
                        let _ = d.recv_timeout(Duration::from_secs(5));
                    }
                    match status {
                        Ok(s) => match (s.code(), s.signal()) {
                            (Some(c), _) => Exit::Code(c),
                            (None, Some(sig)) => Exit::Signal(sig),
                            (None, None) => Exit::NotStarted(format!("unknown status {s}")),
                        },
                        Err(e) => Exit::NotStarted(e.to_string()),
                    }
                }
                Err(e) => Exit::NotStarted(e.to_string()),
            };
            log.say(Event::Ended {
                program: program.clone(),
                exit,
            });
        }
    }
}

fn main() {
    let early = Log(None);
    mount_all(&early);
    let log = Log::open();
    log.say(Event::InitStart);
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if let Ok(c) =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
    {
        log.say(Event::Clocksource(c.trim().to_string()));
    }
    match Step::parse_list(cmdline_value(&cmdline, key::STEPS).unwrap_or("")) {
        Ok(steps) => steps.iter().for_each(|s| run_step(&log, s)),
        Err(e) => log.say(Event::BadCommandLine(e)),
    }
    if cmdline_value(&cmdline, key::HANG) == Some("1") {
        log.say(Event::Hanging);
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    // Lockdep's class count after everything above (a figure for the notes).
    if let Ok(stats) = std::fs::read_to_string("/proc/lockdep_stats") {
        if let Some(l) = stats.lines().find(|l| l.contains("lock-classes:")) {
            let words: Vec<&str> = l.split_whitespace().collect();
            log.say(Event::Lockdep(words.join(" ")));
        }
    }
    log.say(Event::InitDone);
    sh(&log, "/bin/sync", &[]);
    sh(&log, "/bin/reboot", &["-f"]);
    // reboot -f does not return; if it did, init must not exit (panic).
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
