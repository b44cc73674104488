//! Progress display and command execution with captured logs.
//!
//! Every long step is a [`Phase`]: a spinner with the phase name and the
//! elapsed time while it runs (quiet unless `-v`), one summary line when it
//! ends. Commands run through [`run_logged`], which writes their output to a
//! log file and, on failure, prints the log's tail and its path.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Turns on verbose output (full command output on the terminal).
pub fn set_verbose(v: bool) {
    VERBOSE.store(v, Ordering::Relaxed);
}

/// Whether `-v` was given.
pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// A named, timed step with a spinner.
pub struct Phase {
    name: String,
    start: Instant,
    bar: ProgressBar,
}

impl Phase {
    /// Starts a phase and shows its spinner.
    pub fn start(name: impl Into<String>) -> Phase {
        let name = name.into();
        let bar = if verbose() {
            eprintln!("==> {name}");
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(name.clone());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        };
        Phase {
            name,
            start: Instant::now(),
            bar,
        }
    }

    /// Shows a short status next to the spinner (e.g. the last build line).
    pub fn status(&self, msg: &str) {
        self.bar
            .set_message(msg.chars().take(100).collect::<String>());
    }

    /// Runs `f` in this phase: on success ends it with `detail` of the
    /// value, on failure marks it failed and passes the error on.
    pub fn run<T>(
        self,
        f: impl FnOnce(&Phase) -> Result<T>,
        detail: impl FnOnce(&T) -> String,
    ) -> Result<T> {
        match f(&self) {
            Ok(v) => {
                self.done(&detail(&v));
                Ok(v)
            }
            Err(e) => {
                self.fail();
                Err(e)
            }
        }
    }

    /// Ends the phase successfully and returns its duration.
    pub fn done(self, detail: &str) -> Duration {
        let d = self.start.elapsed();
        self.bar.finish_and_clear();
        let sep = if detail.is_empty() { "" } else { ": " };
        eprintln!(
            "  ok  {:<28} {:>7}{sep}{detail}",
            self.name,
            fmt_duration(d)
        );
        d
    }

    /// Ends the phase as failed.
    pub fn fail(self) {
        self.bar.finish_and_clear();
        eprintln!(
            "  FAILED {} after {}",
            self.name,
            fmt_duration(self.start.elapsed())
        );
    }
}

/// `1m05s`-style duration.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// The last `n` lines of a file (empty if it cannot be read).
pub fn tail(path: &Path, n: usize) -> String {
    let Ok(text) = std::fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A readable form of `cmd`: for a command entering the Debian root, the
/// command run inside it.
pub fn describe(cmd: &Command) -> String {
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let inner = args
        .iter()
        .position(|a| a == "/usr/bin/env")
        .filter(|_| cmd.get_program() == "unshare")
        .map(|i| {
            args[i + 1..]
                .iter()
                .skip_while(|a| *a == "-i" || a.starts_with("--chdir=") || a.contains('='))
                .cloned()
                .collect::<Vec<_>>()
        });
    match inner {
        Some(v) => format!("{} (in the Debian root)", v.join(" ")),
        None => format!("{} {}", cmd.get_program().to_string_lossy(), args.join(" ")),
    }
}

/// Runs `cmd`, appending stdout and stderr to `log`, showing progress in
/// `phase`. On failure prints the tail of the log and returns an error that
/// names the log and `hint`.
pub fn run_logged(cmd: &mut Command, log: &Path, phase: &Phase, hint: &str) -> Result<()> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening log {}", log.display()))?;
    writeln!(file, "$ {}", describe(cmd))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let mut readers = Vec::new();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(|l| l.ok()) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    for line in rx {
        writeln!(file, "{line}")?;
        if verbose() {
            eprintln!("{line}");
        } else {
            phase.status(line.trim());
        }
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child.wait()?;
    if !status.success() {
        if let Some(block) = first_error(&std::fs::read_to_string(log).unwrap_or_default()) {
            eprintln!("---- first error in {} ----", log.display());
            eprintln!("{block}");
        }
        eprintln!("---- last lines of {} ----", log.display());
        eprintln!("{}", tail(log, 30));
        eprintln!("----");
        let what = describe(cmd);
        let what: String = what.chars().take(160).collect();
        bail!(
            "`{what}` failed ({status}); full log: {}\n  hint: {hint}",
            log.display()
        );
    }
    Ok(())
}

/// The first compiler error in a build log with the lines that explain it.
pub fn first_error(log: &str) -> Option<String> {
    let lines: Vec<&str> = log.lines().collect();
    let i = lines.iter().position(|l| {
        let t = l.trim_start();
        t.starts_with("error[") || t.starts_with("error:") || l.contains(": error:")
    })?;
    Some(lines[i..(i + 15).min(lines.len())].join("\n"))
}

/// Runs `cmd` and returns its stdout, or an error with its stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates `path` (and parents) and returns it.
pub fn ensure_dir(path: PathBuf) -> Result<PathBuf> {
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok(path)
}

/// Writes `contents` to `path` atomically (temp file + rename).
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp-write");
    {
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_error_finds_rustc_and_clang_errors() {
        let log = "  RUSTC x.o\nerror: expected one of `.`, `;`\n --> drivers/x.rs:3:5\nmake: *** Error 2\n";
        let e = first_error(log).unwrap();
        assert!(e.starts_with("error: expected"));
        assert!(e.contains("drivers/x.rs:3:5"));
        assert!(first_error("drivers/a.c:1:2: error: unknown type\n").is_some());
        assert!(first_error("  CC a.o\n  LD b\n").is_none());
    }

    #[test]
    fn describe_shows_the_command_inside_the_root() {
        let mut c = Command::new("unshare");
        c.args([
            "--fork",
            "--",
            "sh",
            "-c",
            "x",
            "enter-root",
            "/r",
            "0",
            "/usr/bin/env",
            "-i",
            "--chdir=/w",
            "PATH=/bin",
            "make",
            "-j2",
        ]);
        assert_eq!(describe(&c), "make -j2 (in the Debian root)");
        assert_eq!(describe(Command::new("ls").arg("-l")), "ls -l");
    }
}
