//! Reading what `/init` reported in a serial log, against the steps xtask
//! asked for.
//!
//! Every requested step must report, in order, and succeed: a module that
//! does not load or unload, a program that exits non-zero, is killed by a
//! signal or never starts, and a step that never reports (the guest stopped
//! first) each give a [`Problem`] with the program's output. Each program
//! run also delimits its output, so its KTAP is attributed to it and to the
//! DRM driver that was loaded while it ran.

use virtgpu_protocol::{output_tag, Event, Exit, Step, NO_DEVICE};

use crate::boot::Driver;

/// One run of a guest program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramRun {
    pub program: String,
    /// The DRM driver loaded while it ran, if any.
    pub driver: Option<Driver>,
    /// 0-based line of its start event, and of its end event when it came.
    pub start: usize,
    pub end: Option<usize>,
    pub exit: Option<Exit>,
}

impl ProgramRun {
    /// What the program printed: its tagged lines of `log` (between its
    /// start and end events), without the tag.
    pub fn output<'a>(&self, log: &'a str) -> Vec<&'a str> {
        let end = self.end.unwrap_or(usize::MAX);
        let tag = output_tag(&self.program);
        log.lines()
            .enumerate()
            .filter(|(i, _)| *i > self.start && *i < end)
            .filter_map(|(_, l)| l.split_once(&tag).map(|(_, rest)| rest))
            .collect()
    }
}

/// What `/init` reported.
#[derive(Debug, Default)]
pub struct GuestLog {
    /// Events with their 0-based line numbers.
    pub events: Vec<(usize, Event)>,
    pub runs: Vec<ProgramRun>,
    /// Lines that are a program's output.
    program_lines: std::collections::HashSet<usize>,
}

/// A requested step that did not happen as asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub summary: String,
    /// The program's last lines of output, when the step ran a program.
    pub output: Option<String>,
}

/// Lines of a failed program's output shown below the table.
const OUTPUT_TAIL: usize = 25;

impl GuestLog {
    pub fn read(log: &str) -> GuestLog {
        let mut g = GuestLog::default();
        let mut driver: Option<Driver> = None;
        let mut tag: Option<String> = None;
        for (i, line) in log.lines().enumerate() {
            if tag.as_ref().is_some_and(|t| line.contains(t.as_str())) {
                g.program_lines.insert(i);
                continue;
            }
            let Some(e) = Event::parse(line) else {
                continue;
            };
            match &e {
                Event::Loaded {
                    module, ok: true, ..
                } => {
                    if let Some(d) = Driver::of_module(module) {
                        driver = Some(d);
                    }
                }
                Event::Unloaded {
                    module, ok: true, ..
                } if driver.is_some_and(|d| d.module() == module) => {
                    driver = None;
                }
                Event::Started { program } => {
                    tag = Some(output_tag(program));
                    g.runs.push(ProgramRun {
                        program: program.clone(),
                        driver,
                        start: i,
                        end: None,
                        exit: None,
                    })
                }
                Event::Ended { program, exit } => {
                    tag = None;
                    if let Some(r) = g
                        .runs
                        .iter_mut()
                        .rev()
                        .find(|r| &r.program == program && r.end.is_none())
                    {
                        r.end = Some(i);
                        r.exit = Some(exit.clone());
                    }
                }
                _ => {}
            }
            g.events.push((i, e));
        }
        g
    }

    pub fn init_done(&self) -> bool {
        self.events.iter().any(|(_, e)| *e == Event::InitDone)
    }

    /// The kernel's clocksource, as `/init` found it.
    pub fn clocksource(&self) -> Option<&str> {
        self.events.iter().find_map(|(_, e)| match e {
            Event::Clocksource(c) => Some(c.as_str()),
            _ => None,
        })
    }

    /// lockdep's class figures after the steps.
    pub fn lockdep(&self) -> Option<&str> {
        self.events.iter().find_map(|(_, e)| match e {
            Event::Lockdep(c) => Some(c.as_str()),
            _ => None,
        })
    }

    /// Whether line `i` of the log is a program's output.
    pub fn in_program(&self, i: usize) -> bool {
        self.program_lines.contains(&i)
    }

    /// Every way the boot differs from `steps` done in order, successfully.
    pub fn problems(&self, steps: &[Step], log: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut reports = self.events.iter().filter_map(|(_, e)| match e {
            Event::Loaded { .. } | Event::Unloaded { .. } | Event::Ended { .. } => Some(e),
            _ => None,
        });
        let mut runs = self.runs.iter();
        for e in self.events.iter().map(|(_, e)| e) {
            if let Event::BadCommandLine(why) = e {
                out.push(Problem {
                    summary: format!("/init could not read its command line: {why}"),
                    output: None,
                });
            }
        }
        for step in steps {
            let got = reports.next();
            let run = match step {
                Step::Run { .. } => runs.next(),
                _ => None,
            };
            let tail = || {
                run.map(|r| {
                    let lines = r.output(log);
                    let from = lines.len().saturating_sub(OUTPUT_TAIL);
                    lines[from..].join("\n")
                })
            };
            let summary = match (step, got) {
                (_, None) => Some(format!(
                    "step {step} never reported: the guest stopped before it finished"
                )),
                (
                    Step::Load { module, .. },
                    Some(Event::Loaded {
                        module: m,
                        ok,
                        status,
                    }),
                ) if m == module => (!ok).then(|| match *status {
                    NO_DEVICE => format!(
                        "module {module} loaded but no DRM device appeared within 5 s (did it bind?)"
                    ),
                    s => format!("module {module} FAILED to load (modprobe exit {s})"),
                }),
                (
                    Step::Unload { module },
                    Some(Event::Unloaded {
                        module: m,
                        ok,
                        status,
                    }),
                ) if m == module => {
                    (!ok).then(|| format!("module {module} FAILED to unload (rmmod exit {status})"))
                }
                (Step::Run { program, .. }, Some(Event::Ended { program: p, exit }))
                    if p == program =>
                {
                    match exit {
                        Exit::Code(0) => None,
                        Exit::Code(c) => Some(format!("program {program} exited with status {c}")),
                        Exit::Signal(s) => Some(format!(
                            "program {program} was killed by signal {s} ({})",
                            signal_name(*s)
                        )),
                        Exit::NotStarted(why) => {
                            Some(format!("program {program} did not start: {why}"))
                        }
                    }
                }
                (_, Some(other)) => Some(format!(
                    "step {step} was expected, /init reported `{other}` instead"
                )),
            };
            if let Some(summary) = summary {
                out.push(Problem {
                    summary,
                    output: tail().filter(|t| !t.is_empty()),
                });
            }
        }
        if let Some(extra) = reports.next() {
            out.push(Problem {
                summary: format!("/init reported a step nobody asked for: `{extra}`"),
                output: None,
            });
        }
        out
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => "see signal(7)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(s: &str) -> Vec<Step> {
        Step::parse_list(s).unwrap()
    }

    fn ev(e: Event) -> String {
        format!("[    3.000000] {e}")
    }

    #[test]
    fn every_failure_of_a_step_is_a_problem() {
        let log = [
            ev(Event::InitStart),
            ev(Event::Loaded {
                module: "virtio_gpu".into(),
                ok: true,
                status: 0,
            }),
            ev(Event::Loaded {
                module: "nosuch".into(),
                ok: false,
                status: 1,
            }),
            ev(Event::Loaded {
                module: "virtio_gpu_rs".into(),
                ok: false,
                status: NO_DEVICE,
            }),
            ev(Event::Started {
                program: "one".into(),
            }),
            "[    3.1] one| the output".into(),
            ev(Event::Ended {
                program: "one".into(),
                exit: Exit::Code(1),
            }),
            ev(Event::Started {
                program: "two".into(),
            }),
            ev(Event::Ended {
                program: "two".into(),
                exit: Exit::Signal(11),
            }),
            ev(Event::Started {
                program: "three".into(),
            }),
            "[    3.2] three| DEBUG: something ordinary".into(),
            ev(Event::Ended {
                program: "three".into(),
                exit: Exit::Code(0),
            }),
            ev(Event::InitDone),
        ]
        .join("\n");
        let g = GuestLog::read(&log);
        let p = g.problems(
            &steps(
                "load:virtio_gpu,load:nosuch,load:virtio_gpu_rs,run:one,run:two,run:three,run:four",
            ),
            &log,
        );
        let s: Vec<&str> = p.iter().map(|p| p.summary.as_str()).collect();
        assert_eq!(
            s,
            [
                "module nosuch FAILED to load (modprobe exit 1)",
                "module virtio_gpu_rs loaded but no DRM device appeared within 5 s (did it bind?)",
                "program one exited with status 1",
                "program two was killed by signal 11 (SIGSEGV)",
                "step run:four never reported: the guest stopped before it finished",
            ]
        );
        assert_eq!(p[2].output.as_deref(), Some("the output"));
        assert!(g.init_done());
        assert_eq!(g.runs[0].driver, Some(Driver::C));
        assert!(g.in_program(5) && !g.in_program(1));
    }

    #[test]
    fn clean_steps_have_no_problem_and_drivers_follow_loads() {
        let log = [
            ev(Event::Loaded {
                module: "virtio_gpu".into(),
                ok: true,
                status: 0,
            }),
            ev(Event::Started {
                program: "p".into(),
            }),
            ev(Event::Ended {
                program: "p".into(),
                exit: Exit::Code(0),
            }),
            ev(Event::Unloaded {
                module: "virtio_gpu".into(),
                ok: true,
                status: 0,
            }),
            ev(Event::Loaded {
                module: "virtio_gpu_rs".into(),
                ok: true,
                status: 0,
            }),
            ev(Event::Started {
                program: "p".into(),
            }),
            ev(Event::Ended {
                program: "p".into(),
                exit: Exit::Code(0),
            }),
        ]
        .join("\n");
        let g = GuestLog::read(&log);
        assert!(g
            .problems(
                &steps("load:virtio_gpu,run:p,unload:virtio_gpu,load:virtio_gpu_rs,run:p"),
                &log
            )
            .is_empty());
        let drivers: Vec<_> = g.runs.iter().map(|r| r.driver).collect();
        assert_eq!(drivers, [Some(Driver::C), Some(Driver::Rust)]);
    }

    #[test]
    fn a_program_that_never_ends_is_a_problem_with_its_output() {
        let log = [
            ev(Event::Started {
                program: "p".into(),
            }),
            "[    9.0] p| last words".into(),
            "[    9.0] Kernel panic - not syncing: x".into(),
        ]
        .join("\n");
        let g = GuestLog::read(&log);
        let p = g.problems(&steps("run:p"), &log);
        assert_eq!(p.len(), 1);
        assert!(p[0].summary.contains("never reported"));
        assert!(p[0].output.as_deref().unwrap().contains("last words"));
    }
}
