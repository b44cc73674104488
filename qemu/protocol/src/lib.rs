//! What the virtgpu-rs test guest and xtask say to each other, in one place.
//!
//! xtask starts a guest with a kernel command line made of the keys below
//! ([`Step`]s in `vrs.steps=`), the guest's `/init` (`vrs-init` of the guest
//! crate) carries them out and prints one [`Event`] line per thing that
//! happened on the serial console, and xtask reads the same lines back with
//! [`Event::parse`]. Guest test programs report through [`ktap`], whose
//! output xtask parses like KUnit's.
//!
//! Nothing here depends on the kernel or on an architecture; the crate has
//! no dependencies so the static guest programs stay small.

pub mod ktap;

use std::fmt;

/// The prefix of every line `/init` prints for xtask.
pub const PREFIX: &str = "virtgpu-rs: ";

/// `drm-render` prints this, then `<w>x<h>`, once its first frame is on
/// screen: xtask takes its screendump then.
pub const RENDER_READY: &str = "virtgpu-rs: render ready ";

/// `display-change` prints this, then `<w>x<h>`, to have the display
/// resized: xtask asks QEMU for that size as a VNC client would, and the
/// device signals a display change to the driver.
pub const DISPLAY_REQUEST: &str = "virtgpu-rs: resize display ";

/// Programs whose output is compared across drivers print each canonical
/// line with this prefix; xtask compares those lines between runs.
pub const TRANSCRIPT: &str = "transcript: ";

/// How `/init` tags each line a program prints when it forwards it to the
/// kernel log: `<program>| <line>`.
pub fn output_tag(program: &str) -> String {
    format!("{program}| ")
}

/// How one test of a test list ended (`test-runner`), in drm-ci's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Pass,
    Fail,
    Skip,
    /// Killed by a signal.
    Crash,
    /// Killed after the time limit.
    Timeout,
    /// Passed or skipped, but the kernel reported a problem (a WARN, a
    /// lockdep report, ...) while it ran. Decided by xtask from the log.
    Warn,
    /// Failed, and the kernel reported a problem while it ran.
    DmesgFail,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Pass,
        Status::Fail,
        Status::Skip,
        Status::Crash,
        Status::Timeout,
        Status::Warn,
        Status::DmesgFail,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Status::Pass => "Pass",
            Status::Fail => "Fail",
            Status::Skip => "Skip",
            Status::Crash => "Crash",
            Status::Timeout => "Timeout",
            Status::Warn => "Warn",
            Status::DmesgFail => "DmesgFail",
        }
    }

    pub fn from_name(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|x| x.name() == s)
    }

    /// The status of a test during which the kernel reported a problem.
    pub fn with_kernel_report(self) -> Status {
        match self {
            Status::Pass | Status::Skip => Status::Warn,
            Status::Fail => Status::DmesgFail,
            other => other,
        }
    }
}

/// One result line of `test-runner`: `result: <case> <Status> <ms>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseResult {
    pub case: String,
    pub status: Status,
    pub millis: u64,
}

impl CaseResult {
    pub const PREFIX: &'static str = "result: ";

    /// Reads a result line: the prefix must start it, so a test's output
    /// quoted in diagnostics cannot pass for a result.
    pub fn parse(line: &str) -> Option<CaseResult> {
        let rest = line.trim_end().strip_prefix(Self::PREFIX)?;
        let mut w = rest.split(' ');
        let case = w.next()?.to_string();
        let status = Status::from_name(w.next()?)?;
        let millis = w.next()?.strip_suffix("ms")?.parse().ok()?;
        Some(CaseResult {
            case,
            status,
            millis,
        })
    }
}

impl fmt::Display for CaseResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{} {} {}ms",
            Self::PREFIX,
            self.case,
            self.status.name(),
            self.millis
        )
    }
}

/// Kernel command line keys read in the guest.
pub mod key {
    /// `vrs.steps=load:mod:p=1,run:prog,unload:mod`: what `/init` does, in order.
    pub const STEPS: &str = "vrs.steps";
    /// `vrs.hang=1`: never power off (tests xtask's hang detection).
    pub const HANG: &str = "vrs.hang";
    /// `vrs.render_seconds=N`: how long `drm-render` keeps flipping.
    pub const RENDER_SECONDS: &str = "vrs.render_seconds";
}

/// The value of `key` on a kernel command line.
pub fn cmdline_value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

/// One thing `/init` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `modprobe` a module with parameters (`p=1`).
    Load { module: String, params: Vec<String> },
    /// `rmmod` a module.
    Unload { module: String },
    /// Run a program from `/usr/bin` with arguments.
    Run { program: String, args: Vec<String> },
}

impl Step {
    /// Parses one `vrs.steps` item (`load:m:p=1`, `unload:m`, `run:p:arg`).
    pub fn parse(s: &str) -> Result<Step, String> {
        let mut parts = s.split(':');
        let verb = parts.next().unwrap_or_default();
        let name = parts
            .next()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("step {s:?} names no module or program"))?
            .to_string();
        let rest: Vec<String> = parts.map(str::to_string).collect();
        match verb {
            "load" => Ok(Step::Load {
                module: name,
                params: rest,
            }),
            "unload" if rest.is_empty() => Ok(Step::Unload { module: name }),
            "run" => Ok(Step::Run {
                program: name,
                args: rest,
            }),
            _ => Err(format!(
                "step {s:?}: expected load:MODULE[:PARAM=V...], unload:MODULE or run:PROGRAM[:ARG...]"
            )),
        }
    }

    /// Parses a whole `vrs.steps` value.
    pub fn parse_list(s: &str) -> Result<Vec<Step>, String> {
        s.split(',')
            .filter(|s| !s.is_empty())
            .map(Step::parse)
            .collect()
    }

    /// The kernel command line item for `steps` (`vrs.steps=...`), or an
    /// empty string when there are none.
    pub fn cmdline(steps: &[Step]) -> String {
        if steps.is_empty() {
            return String::new();
        }
        let items: Vec<String> = steps.iter().map(Step::to_string).collect();
        format!("{}={}", key::STEPS, items.join(","))
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (verb, name, rest) = match self {
            Step::Load { module, params } => ("load", module, params.as_slice()),
            Step::Unload { module } => ("unload", module, &[][..]),
            Step::Run { program, args } => ("run", program, args.as_slice()),
        };
        write!(f, "{verb}:{name}")?;
        for r in rest {
            write!(f, ":{r}")?;
        }
        Ok(())
    }
}

/// How a guest program ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// It could not be started (the reason).
    NotStarted(String),
}

/// The modules of the two virtio-gpu DRM drivers (C, Rust): after loading
/// one, `/init` waits for its card node; after unloading one, for it to go.
pub const DRM_DRIVERS: [&str; 2] = ["virtio_gpu", "virtio_gpu_rs"];

/// The `status` of a [`Event::Loaded`] that failed because a DRM driver's
/// module loaded but no card node appeared (it bound no device).
pub const NO_DEVICE: i32 = -2;

/// One line `/init` prints on the console for xtask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    InitStart,
    /// A module was loaded (`ok`) or its `modprobe` failed with `status`.
    Loaded {
        module: String,
        ok: bool,
        status: i32,
    },
    /// A module was unloaded, or its `rmmod` failed.
    Unloaded {
        module: String,
        ok: bool,
        status: i32,
    },
    /// A program is about to run; its output follows until [`Event::Ended`].
    Started {
        program: String,
    },
    Ended {
        program: String,
        exit: Exit,
    },
    /// The kernel's clocksource (`/sys/devices/system/clocksource`).
    Clocksource(String),
    /// lockdep's class figures from `/proc/lockdep_stats`.
    Lockdep(String),
    /// `vrs.hang=1` was given: the guest will not power off.
    Hanging,
    /// Every step ran; the guest powers off next.
    InitDone,
    /// `/init` could not understand its command line.
    BadCommandLine(String),
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PREFIX)?;
        let word = |ok: bool| if ok { "ok" } else { "FAILED" };
        match self {
            Event::InitStart => write!(f, "init start"),
            Event::Loaded { module, ok, status } => {
                write!(f, "module load {module} {} status={status}", word(*ok))
            }
            Event::Unloaded { module, ok, status } => {
                write!(f, "module unload {module} {} status={status}", word(*ok))
            }
            Event::Started { program } => write!(f, "program start {program}"),
            Event::Ended { program, exit } => match exit {
                Exit::Code(c) => write!(f, "program end {program} exit={c}"),
                Exit::Signal(s) => write!(f, "program end {program} signal={s}"),
                Exit::NotStarted(why) => write!(f, "program end {program} not-started={why}"),
            },
            Event::Clocksource(c) => write!(f, "clocksource {c}"),
            Event::Lockdep(s) => write!(f, "lockdep {s}"),
            Event::Hanging => write!(f, "hang requested, not powering off"),
            Event::InitDone => write!(f, "init done"),
            Event::BadCommandLine(why) => write!(f, "bad command line: {why}"),
        }
    }
}

impl Event {
    /// Reads an event from one console line, which may carry a printk
    /// timestamp or other output before the prefix.
    pub fn parse(line: &str) -> Option<Event> {
        let (_, rest) = line.trim_end().split_once(PREFIX)?;
        let status_of = |s: &str| {
            s.strip_prefix("status=")
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1)
        };
        let module_event = |rest: &str| -> Option<(String, bool, i32)> {
            let mut w = rest.split(' ');
            let module = w.next()?.to_string();
            let ok = match w.next()? {
                "ok" => true,
                "FAILED" => false,
                _ => return None,
            };
            Some((module, ok, status_of(w.next().unwrap_or(""))))
        };
        if rest == "init start" {
            Some(Event::InitStart)
        } else if rest == "init done" {
            Some(Event::InitDone)
        } else if rest == "hang requested, not powering off" {
            Some(Event::Hanging)
        } else if let Some(r) = rest.strip_prefix("module load ") {
            let (module, ok, status) = module_event(r)?;
            Some(Event::Loaded { module, ok, status })
        } else if let Some(r) = rest.strip_prefix("module unload ") {
            let (module, ok, status) = module_event(r)?;
            Some(Event::Unloaded { module, ok, status })
        } else if let Some(p) = rest.strip_prefix("program start ") {
            Some(Event::Started {
                program: p.to_string(),
            })
        } else if let Some(r) = rest.strip_prefix("program end ") {
            let (program, how) = r.split_once(' ')?;
            let exit = if let Some(c) = how.strip_prefix("exit=") {
                Exit::Code(c.parse().ok()?)
            } else if let Some(s) = how.strip_prefix("signal=") {
                Exit::Signal(s.parse().ok()?)
            } else {
                Exit::NotStarted(how.strip_prefix("not-started=")?.to_string())
            };
            Some(Event::Ended {
                program: program.to_string(),
                exit,
            })
        } else if let Some(c) = rest.strip_prefix("clocksource ") {
            Some(Event::Clocksource(c.to_string()))
        } else if let Some(s) = rest.strip_prefix("lockdep ") {
            Some(Event::Lockdep(s.to_string()))
        } else {
            rest.strip_prefix("bad command line: ")
                .map(|w| Event::BadCommandLine(w.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let all = [
            Event::InitStart,
            Event::Loaded {
                module: "virtio_gpu".into(),
                ok: true,
                status: 0,
            },
            Event::Loaded {
                module: "nosuch".into(),
                ok: false,
                status: 1,
            },
            Event::Unloaded {
                module: "virtio_gpu".into(),
                ok: false,
                status: 1,
            },
            Event::Started {
                program: "drm-render".into(),
            },
            Event::Ended {
                program: "drm-render".into(),
                exit: Exit::Code(3),
            },
            Event::Ended {
                program: "x".into(),
                exit: Exit::Signal(11),
            },
            Event::Ended {
                program: "x".into(),
                exit: Exit::NotStarted("No such file or directory (os error 2)".into()),
            },
            Event::Clocksource("tsc".into()),
            Event::Lockdep("lock-classes: 655 [max: 8192]".into()),
            Event::Hanging,
            Event::InitDone,
            Event::BadCommandLine("step \"x\"".into()),
        ];
        for e in all {
            let line = format!("[    1.000000] {e}");
            assert_eq!(Event::parse(&line), Some(e.clone()), "{line}");
        }
        assert_eq!(Event::parse("virtgpu-rs: render ready 1x1"), None);
        assert_eq!(Event::parse("init done"), None);
    }

    #[test]
    fn steps_round_trip_and_reject_nonsense() {
        let s = "load:rust_lockdep_splats:case=3,run:drm-render,unload:virtio_gpu,run:lockdep-reload:m:5";
        let steps = Step::parse_list(s).unwrap();
        assert_eq!(steps.len(), 4);
        assert_eq!(
            steps[0],
            Step::Load {
                module: "rust_lockdep_splats".into(),
                params: vec!["case=3".into()]
            }
        );
        assert_eq!(Step::cmdline(&steps), format!("vrs.steps={s}"));
        assert!(Step::parse("load").is_err());
        assert!(Step::parse("unload:m:x=1").is_err());
        assert!(Step::parse("boot:x").is_err());
        assert_eq!(Step::cmdline(&[]), "");
    }

    #[test]
    fn case_results_round_trip() {
        for status in Status::ALL {
            let r = CaseResult {
                case: "kms_addfb_basic@bad-pitch-0".into(),
                status,
                millis: 1234,
            };
            assert_eq!(CaseResult::parse(&format!("{r}")), Some(r.clone()));
            assert_eq!(CaseResult::parse(&format!("    # {r}")), None);
        }
        assert_eq!(CaseResult::parse("result: a Maybe 1ms"), None);
    }

    #[test]
    fn cmdline_values_need_the_whole_key() {
        let c = "console=ttyS0 vrs.steps=run:a vrs.stepsx=no";
        assert_eq!(cmdline_value(c, key::STEPS), Some("run:a"));
        assert_eq!(cmdline_value(c, "vrs.step"), None);
    }
}
