//! IGT in the guest: test lists, drm-ci style expectations and the verdict.
//!
//! A list names `test@subtest` (or a whole `test`). [`guest_list`] turns it
//! into the `test-runner` list the guest runs. Results come back as
//! `result:` lines ([`virtgpu_protocol::CaseResult`]) and are judged by
//! [`Expectations`] like drm-ci judges them: a test listed in the fails file
//! must end with the status written there, any other test must pass or
//! skip, a test matching a flakes pattern may do anything, and an
//! unexpected pass or skip of an expected failure fails the run too (the
//! baseline must then be updated). Tests matching a skips pattern are not
//! run at all.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use regex::Regex;
use virtgpu_protocol::{CaseResult, Status};

/// Where the IGT test binaries are in the guest.
pub const IGT_DIR: &str = "/usr/libexec/igt-gpu-tools";

/// One `test@subtest` (or whole `test`) to run.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Item {
    pub test: String,
    pub subtest: Option<String>,
}

impl Item {
    pub fn parse(s: &str) -> Result<Item> {
        let s = s.trim();
        let (test, subtest) = match s.split_once('@') {
            Some((t, sub)) => (t, Some(sub.to_string())),
            None => (s, None),
        };
        let ok = |x: &str| {
            !x.is_empty()
                && x.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        };
        if !ok(test) || subtest.as_deref().is_some_and(|x| !ok(x)) {
            bail!("{s:?} is not an IGT test name (test or test@subtest)");
        }
        Ok(Item {
            test: test.to_string(),
            subtest,
        })
    }

    pub fn name(&self) -> String {
        match &self.subtest {
            Some(s) => format!("{}@{s}", self.test),
            None => self.test.clone(),
        }
    }
}

/// Reads a list file: one name per line, `#` comments.
pub fn read_list(text: &str) -> Result<Vec<Item>> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(Item::parse)
        .collect()
}

/// The `test-runner` list for `items`.
pub fn guest_list(items: &[Item]) -> String {
    let mut out = String::from(
        "# IGT, written by cargo xtask igt\n\
         env IGT_FORCE_DRIVER=virtio_gpu\n\
         env IGT_DATADIR=/usr/share/igt-gpu-tools\n",
    );
    for i in items {
        out.push_str(&format!("{}\t{IGT_DIR}/{}", i.name(), i.test));
        if let Some(s) = &i.subtest {
            out.push_str(&format!(" --run-subtest {s}"));
        }
        out.push('\n');
    }
    out
}

/// Regular expressions, one a line (drm-ci's skips and flakes files).
pub struct Patterns(Vec<Regex>);

impl Patterns {
    pub fn parse(text: &str) -> Result<Patterns> {
        let mut v = Vec::new();
        for l in text.lines().map(str::trim) {
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            v.push(Regex::new(l).with_context(|| format!("bad pattern {l:?}"))?);
        }
        Ok(Patterns(v))
    }

    pub fn empty() -> Patterns {
        Patterns(Vec::new())
    }

    /// Whether any pattern matches `name` (anywhere, as drm-ci's do).
    pub fn matches(&self, name: &str) -> bool {
        self.0.iter().any(|r| r.is_match(name))
    }

    pub fn extend(&mut self, other: Patterns) {
        self.0.extend(other.0);
    }
}

/// A driver's expectations.
pub struct Expectations {
    /// `name` → expected status, for tests that do not pass.
    pub fails: BTreeMap<String, Status>,
    pub flakes: Patterns,
    pub skips: Patterns,
}

/// Reads a fails file (`name,Status` lines).
pub fn parse_fails(text: &str) -> Result<BTreeMap<String, Status>> {
    let mut m = BTreeMap::new();
    for (n, l) in text.lines().map(str::trim).enumerate() {
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (name, st) = l
            .split_once(',')
            .with_context(|| format!("line {}: expected name,Status", n + 1))?;
        let status = Status::from_name(st.trim())
            .filter(|s| *s != Status::Pass)
            .with_context(|| {
                format!(
                    "line {}: {st:?} is not Fail, Crash, Timeout, Skip, Warn or DmesgFail",
                    n + 1
                )
            })?;
        m.insert(name.trim().to_string(), status);
    }
    Ok(m)
}

impl Expectations {
    /// The files `qemu/igt/<driver>-{fails,flakes,skips}.txt` (missing
    /// files are empty).
    pub fn load(dir: &Path, driver: &str) -> Result<Expectations> {
        let read = |kind: &str| -> Result<String> {
            let p = dir.join(format!("{driver}-{kind}.txt"));
            match std::fs::read_to_string(&p) {
                Ok(t) => Ok(t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
                Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
            }
        };
        let ctx = |kind: &str| format!("in qemu/igt/{driver}-{kind}.txt");
        Ok(Expectations {
            fails: parse_fails(&read("fails")?).with_context(|| ctx("fails"))?,
            flakes: Patterns::parse(&read("flakes")?).with_context(|| ctx("flakes"))?,
            skips: Patterns::parse(&read("skips")?).with_context(|| ctx("skips"))?,
        })
    }

    /// The verdict on one result.
    pub fn judge(&self, r: &CaseResult) -> Judged {
        let expected = self.fails.get(&r.case).copied().unwrap_or(Status::Pass);
        let report = matches!(r.status, Status::Warn | Status::DmesgFail);
        let outcome = if self.flakes.matches(&r.case) && (!report || r.status == expected) {
            Outcome::Flake
        } else if r.status == expected || (expected == Status::Pass && r.status == Status::Skip) {
            Outcome::Expected
        } else if expected != Status::Pass && matches!(r.status, Status::Pass | Status::Skip) {
            Outcome::UnexpectedImprovement
        } else {
            Outcome::Unexpected
        };
        Judged {
            result: r.clone(),
            expected,
            outcome,
        }
    }
}

/// How a result compares with the expectations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Expected,
    /// Matches a flakes pattern: any status is accepted.
    Flake,
    /// An expected failure passed or skipped: the baseline is out of date.
    UnexpectedImprovement,
    /// A regression.
    Unexpected,
}

#[derive(Clone, Debug)]
pub struct Judged {
    pub result: CaseResult,
    pub expected: Status,
    pub outcome: Outcome,
}

impl Judged {
    pub fn ok(&self) -> bool {
        matches!(self.outcome, Outcome::Expected | Outcome::Flake)
    }

    /// A table note.
    pub fn note(&self) -> String {
        let got = self.result.status.name();
        let secs = self.result.millis as f64 / 1000.0;
        match self.outcome {
            Outcome::Expected if self.expected == Status::Pass => format!("{got} ({secs:.1}s)"),
            Outcome::Expected => format!("{got}, as the baseline expects ({secs:.1}s)"),
            Outcome::Flake => format!("{got}, a known flake ({secs:.1}s)"),
            Outcome::UnexpectedImprovement => format!(
                "FAILED: UnexpectedImprovement({got}): the baseline expects {}; update it",
                self.expected.name()
            ),
            Outcome::Unexpected => format!(
                "FAILED: {got}, expected {} ({secs:.1}s)",
                self.expected.name()
            ),
        }
    }
}

/// The results of the `test-runner` runs of a boot, each with the kernel
/// reports printed while it ran (between the previous result and its own)
/// folded into its status, and the indices of the splats so excused from
/// failing the boot: only those folded into the status of one of `items`
/// (whose row judges it), and only when the status shows it (a crash or a
/// timeout with a report leaves the report to fail the boot).
pub fn attributed(out: &crate::boot::BootOutcome, items: &[Item]) -> (Vec<CaseResult>, Vec<usize>) {
    let (runs, excused) = attributed_runs(out, items);
    (runs.into_iter().flat_map(|(_, r)| r).collect(), excused)
}

/// The results of one `test-runner` run, with the driver loaded while it ran.
pub type DriverRun = (Option<crate::boot::Driver>, Vec<CaseResult>);

/// As [`attributed`], with the results of each `test-runner` run apart, each
/// with the driver loaded while it ran, in the order the runs started (a
/// boot that runs IGT under two drivers).
pub fn attributed_runs(
    out: &crate::boot::BootOutcome,
    items: &[Item],
) -> (Vec<DriverRun>, Vec<usize>) {
    let judged: std::collections::HashSet<String> = items.iter().map(Item::name).collect();
    let mut runs = Vec::new();
    let mut excused = Vec::new();
    for run in out.guest.runs.iter().filter(|r| r.program == "test-runner") {
        let mut results = Vec::new();
        let tag = virtgpu_protocol::output_tag(&run.program);
        let end = run.end.unwrap_or(usize::MAX);
        // The line (0-based) after which the next test's messages start.
        let mut from = run.start;
        for (i, line) in out.log.lines().enumerate() {
            if i <= run.start || i >= end {
                continue;
            }
            let Some(mut r) = line
                .split_once(tag.as_str())
                .and_then(|(_, rest)| CaseResult::parse(rest))
            else {
                continue;
            };
            // Splat::line is 1-based.
            for (k, s) in out.splats.iter().enumerate() {
                if s.line > from + 1 && s.line <= i + 1 {
                    let folded = r.status.with_kernel_report();
                    if folded != r.status || matches!(r.status, Status::Warn | Status::DmesgFail) {
                        r.status = folded;
                        if judged.contains(&r.case) {
                            excused.push(k);
                        }
                    }
                }
            }
            from = i;
            results.push(r);
        }
        runs.push((run.driver, results));
    }
    (runs, excused)
}

/// The fails file that records `results` as the baseline: every result
/// that is neither a pass nor a skip.
pub fn baseline(results: &[CaseResult]) -> String {
    let mut lines: Vec<String> = results
        .iter()
        .filter(|r| !matches!(r.status, Status::Pass | Status::Skip))
        .map(|r| format!("{},{}", r.case, r.status.name()))
        .collect();
    lines.sort();
    lines.dedup();
    let mut out = String::from(
        "# Tests that do not pass (nor skip) with this driver: test@subtest,Status.\n\
         # Written by `cargo xtask igt --record` from a complete run; see README.\n",
    );
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// Shard `index` (1-based) of `count` of `items`, round robin so that each
/// shard gets a share of every test binary.
pub fn shard(items: &[Item], index: usize, count: usize) -> Vec<Item> {
    items
        .iter()
        .enumerate()
        .filter(|(i, _)| i % count == index - 1)
        .map(|(_, x)| x.clone())
        .collect()
}

/// Parses `--shard i/n`.
pub fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let (i, n) = s
        .split_once('/')
        .with_context(|| format!("--shard {s:?}: expected I/N, e.g. 2/8"))?;
    let (i, n): (usize, usize) = (i.parse()?, n.parse()?);
    if n == 0 || i == 0 || i > n {
        bail!("--shard {s:?}: need 1 <= I <= N");
    }
    Ok((i, n))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A result of `case` with `status`, as the guest reports it.
    pub(crate) fn r(case: &str, status: Status) -> CaseResult {
        CaseResult {
            case: case.into(),
            status,
            millis: 10,
        }
    }

    /// A boot that printed `log`.
    fn outcome(log: String) -> crate::boot::BootOutcome {
        crate::boot::BootOutcome {
            splats: crate::splat::detect(&log),
            guest: crate::guest_log::GuestLog::read(&log),
            log,
            log_path: "/x".into(),
            renders: Vec::new(),
            screenshots: Vec::new(),
            error: None,
            error_source: None,
            duration: std::time::Duration::ZERO,
        }
    }

    fn exp() -> Expectations {
        Expectations {
            fails: parse_fails("# c\nkms_a@x,Fail\nkms_a@t,Timeout\n").unwrap(),
            flakes: Patterns::parse("^kms_flaky@").unwrap(),
            skips: Patterns::parse("kms_cursor_legacy.*").unwrap(),
        }
    }

    #[test]
    fn results_are_judged_like_drm_ci() {
        let e = exp();
        let o = |c: &str, s| e.judge(&r(c, s)).outcome;
        assert_eq!(o("core_getversion@basic", Status::Pass), Outcome::Expected);
        assert_eq!(o("core_getversion@basic", Status::Skip), Outcome::Expected);
        assert_eq!(
            o("core_getversion@basic", Status::Fail),
            Outcome::Unexpected
        );
        assert_eq!(
            o("core_getversion@basic", Status::Crash),
            Outcome::Unexpected
        );
        assert_eq!(o("kms_a@x", Status::Fail), Outcome::Expected);
        assert_eq!(o("kms_a@x", Status::Crash), Outcome::Unexpected);
        assert_eq!(o("kms_a@x", Status::Pass), Outcome::UnexpectedImprovement);
        assert_eq!(o("kms_a@x", Status::Skip), Outcome::UnexpectedImprovement);
        assert_eq!(o("kms_a@t", Status::Timeout), Outcome::Expected);
        assert_eq!(o("kms_flaky@y", Status::Fail), Outcome::Flake);
        // A flake may fail, but not hide a kernel report.
        assert_eq!(o("kms_flaky@y", Status::Warn), Outcome::Unexpected);
        assert!(e.skips.matches("kms_cursor_legacy@basic"));
        assert!(!e.judge(&r("kms_a@x", Status::Pass)).ok());
    }

    #[test]
    fn results_are_kept_apart_per_run_with_the_driver_loaded() {
        use crate::boot::Driver;
        use virtgpu_protocol::{Event, Exit};
        let ev = |e: Event| format!("[    5.0] {e}");
        let res = |c: &str, s| format!("[    5.1] test-runner| {}", r(c, s));
        let run = |results: Vec<String>| {
            let mut v = vec![ev(Event::Started {
                program: "test-runner".into(),
            })];
            v.extend(results);
            v.push(ev(Event::Ended {
                program: "test-runner".into(),
                exit: Exit::Code(0),
            }));
            v
        };
        let loaded = |d: Driver, loaded: bool| {
            let (module, ok, status) = (d.module().to_string(), true, 0);
            ev(match loaded {
                true => Event::Loaded { module, ok, status },
                false => Event::Unloaded { module, ok, status },
            })
        };
        let mut lines = vec![loaded(Driver::C, true)];
        // libdrm's tools first, under the same driver.
        lines.extend(run(vec![res("libdrm@modetest", Status::Pass)]));
        lines.extend(run(vec![res("a@one", Status::Pass)]));
        lines.push(loaded(Driver::C, false));
        lines.push(loaded(Driver::Rust, true));
        lines.extend(run(vec![res("a@one", Status::Fail)]));
        let log = lines.join("\n");
        let out = outcome(log);
        let (runs, _) = attributed_runs(&out, &[Item::parse("a@one").unwrap()]);
        type Statuses = Vec<(String, Status)>;
        let got: Vec<(Option<Driver>, Statuses)> = runs
            .into_iter()
            .map(|(d, r)| (d, r.into_iter().map(|r| (r.case, r.status)).collect()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    Some(Driver::C),
                    vec![("libdrm@modetest".to_string(), Status::Pass)]
                ),
                (Some(Driver::C), vec![("a@one".to_string(), Status::Pass)]),
                (
                    Some(Driver::Rust),
                    vec![("a@one".to_string(), Status::Fail)]
                ),
            ]
        );
    }

    #[test]
    fn a_kernel_report_during_a_test_is_folded_into_its_status() {
        use virtgpu_protocol::{Event, Exit};
        let ev = |e: Event| format!("[    5.0] {e}");
        let res = |c: &str, s| format!("[    5.1] test-runner| {}", r(c, s));
        let log = [
            ev(Event::Started {
                program: "test-runner".into(),
            }),
            "[    5.1] test-runner| KTAP version 1".into(),
            res("a@one", Status::Pass),
            "[    5.2] ------------[ cut here ]------------".into(),
            "[    5.2] [CRTC:40:crtc-0] vblank wait timed out".into(),
            "[    5.2] WARNING: drivers/gpu/drm/drm_atomic_helper.c:1928 at x".into(),
            "[    5.2] ---[ end trace 0000000000000000 ]---".into(),
            res("a@two", Status::Pass),
            res("a@three", Status::Fail),
            ev(Event::Ended {
                program: "test-runner".into(),
                exit: Exit::Code(0),
            }),
        ]
        .join("\n");
        let out = outcome(log);
        let items: Vec<Item> = ["a@one", "a@two", "a@three"]
            .iter()
            .map(|n| Item::parse(n).unwrap())
            .collect();
        let (results, excused) = attributed(&out, &items);
        // A report during a test that is not judged here is not excused.
        assert!(attributed(&out, &items[..1]).1.is_empty());
        let st: Vec<(&str, Status)> = results
            .iter()
            .map(|r| (r.case.as_str(), r.status))
            .collect();
        assert_eq!(
            st,
            [
                ("a@one", Status::Pass),
                ("a@two", Status::Warn),
                ("a@three", Status::Fail)
            ]
        );
        assert_eq!(excused, [0]);
        // The boot row does not fail for it; the test's row does unless expected.
        let e = exp();
        assert!(!e.judge(&results[1]).ok());
        let mut e2 = exp();
        e2.fails.insert("a@two".into(), Status::Warn);
        assert!(e2.judge(&results[1]).ok());
    }

    #[test]
    fn bad_expectation_files_are_refused() {
        assert!(parse_fails("kms_a@x,Pass\n").is_err());
        assert!(parse_fails("kms_a@x Fail\n").is_err());
        assert!(Patterns::parse("kms_(\n").is_err());
    }

    #[test]
    fn lists_shards_and_baselines() {
        let items = read_list("# ci\ncore_auth@basic-auth\ndumb_buffer # whole\n").unwrap();
        assert_eq!(
            items[1],
            Item {
                test: "dumb_buffer".into(),
                subtest: None
            }
        );
        assert!(read_list("rm -rf /\n").is_err());
        let g = guest_list(&items);
        assert!(g.contains(
            "core_auth@basic-auth\t/usr/libexec/igt-gpu-tools/core_auth --run-subtest basic-auth\n"
        ));
        assert!(g.contains("dumb_buffer\t/usr/libexec/igt-gpu-tools/dumb_buffer\n"));
        let many: Vec<Item> = (0..10)
            .map(|i| Item::parse(&format!("t@s{i}")).unwrap())
            .collect();
        let mut all: Vec<Item> = (1..=3).flat_map(|i| shard(&many, i, 3)).collect();
        all.sort();
        let mut want = many.clone();
        want.sort();
        assert_eq!(all, want);
        assert_eq!(parse_shard("2/8").unwrap(), (2, 8));
        assert!(parse_shard("0/8").is_err() && parse_shard("9/8").is_err());
        let b = baseline(&[
            r("b@x", Status::Crash),
            r("a@y", Status::Pass),
            r("a@x", Status::Fail),
        ]);
        assert!(b.ends_with("\na@x,Fail\nb@x,Crash\n"), "{b}");
        assert_eq!(parse_fails(&b).unwrap().len(), 2);
    }
}
