//! `cargo xtask test`: per architecture, the main boot (KUnit, the guest
//! programs under the chosen driver, the render check), the expected-splat
//! boots of `kunit/splats.toml` and the codegen check, as one table.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use virtgpu_protocol::{key, Step, TRANSCRIPT};

use crate::boot::{self, Boot, BootOutcome, Builds, Driver};
use crate::build::Ctx;
use crate::ktap;
use crate::machine;
use crate::paths;
use crate::report::{Report, Row, Verdict};
use crate::splat_cases;
use crate::ui;
use crate::BootArgs;

use super::bench::ARC_OFF_VARIANT;

/// Whether KUnit runs suite `name` under `kunit.filter_glob=<f>`: the glob
/// matches the suite, or it has the form `suite.test` and its suite part
/// matches.
fn suite_matches(f: &glob::Pattern, name: &str) -> bool {
    f.matches(name)
        || f.as_str()
            .split_once('.')
            .and_then(|(suite, _)| glob::Pattern::new(suite).ok())
            .is_some_and(|p| p.matches(name))
}

/// Expected suites for `arch` from `kunit/suites.txt`.
pub fn expected_suites(text: &str, arch: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| match l.split_once(':') {
            Some((a, s)) if a == arch => Some(s.trim().to_string()),
            Some(_) => None,
            None => Some(l.to_string()),
        })
        .collect()
}

/// A guest program of the main boot and the rows it produces (which a
/// `--filter` must match for it to run).
struct Program {
    name: &'static str,
    rows: &'static [&'static str],
}

/// Draws the pattern; the render check takes its screendump.
const RENDER: Program = Program {
    name: "drm-render",
    rows: &["render", "drm_render"],
};

/// Runs twice (driver unloaded and loaded again in between, or the other
/// driver), and its transcripts must be identical.
const UAPI: Program = Program {
    name: "drm-uapi",
    rows: &["drm_uapi", "differential:drm_uapi"],
};

/// libdrm's tools (Debian's libdrm-tests), on every architecture.
const LIBDRM: Program = Program {
    name: "test-runner",
    rows: &["libdrm"],
};

/// Loads the Rust driver with the C driver unloaded, checks it binds the
/// device and gets its display info, then unbinds, binds and reloads it.
const BIND: Program = Program {
    name: "virtio-bind",
    rows: &["virtio_bind"],
};

/// Has the host resize the display and checks the loaded driver reads the new size (the
/// device's configuration-change path), under the boot's driver and under Rust.
const DISPLAY: Program = Program {
    name: "display-change",
    rows: &["display_change"],
};

/// Clears kmemleak's suspects before the boot's programs and scans after them: any object
/// they leaked fails its row.
const KMEMLEAK: Program = Program {
    name: "kmemleak",
    rows: &["kmemleak"],
};

/// The `test-runner` list of the `libdrm` suite.
const LIBDRM_LIST: &str = "\
# libdrm's tools against the loaded driver, written by cargo xtask test
modetest@resources\t/usr/bin/modetest -M virtio_gpu
modetest@set-mode\t/usr/bin/modetest -M virtio_gpu -s Virtual-1:1024x768
drmdevice@list\t/usr/bin/drmdevice
";

/// Seconds each IGT test of the CI list may take in the main boot.
const IGT_TEST_TIMEOUT: u64 = 60;

/// Where the guest finds the IGT list it runs under the Rust driver.
const RUST_IGT_LIST: &str = "etc/vrs/igt-rust.list";

fn run(program: &Program) -> Step {
    Step::Run {
        program: program.name.into(),
        args: Vec::new(),
    }
}

/// The rows of one boot: its KUnit suites (`expected` must all report), the
/// KTAP suites of its programs (named by driver), and `boot`, which fails on
/// a hang, an unfinished `/init`, a step that failed and any splat.
///
/// Splats whose index is in `excused` were attributed to an IGT test, whose
/// row judges them; they do not fail `boot`.
pub fn boot_rows(
    arch: &str,
    out: &BootOutcome,
    steps: &[Step],
    expected: &[String],
    filter: Option<&glob::Pattern>,
    excused: &[usize],
) -> Report {
    let mut r = Report::default();
    let matches = |name: &str| filter.is_none_or(|f| suite_matches(f, name));
    let kernel_part: String = out
        .log
        .lines()
        .enumerate()
        .filter(|(i, _)| !out.guest.in_program(*i))
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    let suites = ktap::parse(&kernel_part);
    // IGT's rows are judged against the expectations by the caller.
    let from_programs = |s: &ktap::Suite| s.name != super::igt::SUITE;
    for s in suites.iter().filter(|s| matches(&s.name)) {
        r.rows.push(Row::suite(arch, "-", s));
    }
    for e in expected.iter().filter(|e| matches(e)) {
        if !suites.iter().any(|s| &s.name == e) {
            r.rows.push(Row::verdict(
                arch,
                "-",
                e,
                &Verdict::fail("MISSING: expected suite did not report (kunit/suites.txt)"),
            ));
        }
    }
    let mut seen: Vec<String> = Vec::new();
    for run in &out.guest.runs {
        let driver = run.driver.map_or("-", Driver::name);
        for s in ktap::parse(&run.output(&out.log).join("\n"))
            .into_iter()
            .filter(from_programs)
        {
            let n = seen.iter().filter(|x| **x == s.name).count();
            seen.push(s.name.clone());
            let mut row = Row::suite(arch, driver, &s);
            if n > 0 {
                row.name = format!("{}#{}", s.name, n + 1);
            }
            r.rows.push(row);
        }
    }
    let problems = out.guest.problems(steps, &out.log);
    for p in &problems {
        let mut d = format!("{arch}: {}", p.summary);
        if let Some(o) = &p.output {
            d.push_str(&format!(
                "\n  its last lines of output:\n{}",
                crate::qemu::indent(o)
            ));
        }
        r.details.push(d);
    }
    let verdict = if let Some(e) = &out.error {
        Verdict::fail(e.lines().next().unwrap_or(""))
    } else if !out.log.is_empty()
        && !out
            .log
            .lines()
            .any(|l| crate::splat::kernel_message(l).is_some())
    {
        // Splats are found by their printk timestamps.
        Verdict::fail(
            "no kernel message has a printk timestamp (printk.time=0?): splats cannot be found",
        )
    } else if out
        .splats
        .iter()
        .enumerate()
        .any(|(k, _)| !excused.contains(&k))
    {
        let kinds: Vec<String> = out
            .splats
            .iter()
            .enumerate()
            .filter(|(k, _)| !excused.contains(k))
            .map(|(_, s)| format!("{} (line {})", s.kind, s.line))
            .collect();
        Verdict::fail(format!("{} splat(s): {}", kinds.len(), kinds.join(", ")))
    } else if let Some(p) = problems.first() {
        Verdict::fail(format!(
            "{}{}",
            p.summary,
            if problems.len() > 1 {
                format!(" (and {} more problem(s) below)", problems.len() - 1)
            } else {
                String::new()
            }
        ))
    } else if !out.guest.init_done() {
        Verdict::fail("/init did not finish (see the serial log)")
    } else if !excused.is_empty() {
        Verdict::pass(format!(
            "every step ran, powered off cleanly; {} splat(s), each during an IGT test (judged in its row)",
            excused.len()
        ))
    } else {
        Verdict::pass("every step ran, powered off cleanly, no splats")
    };
    r.rows.push(Row::verdict(arch, "-", "boot", &verdict));
    r
}

/// Transcript cases on which a driver may differ from the first run's, each with its reason
/// (`qemu/uapi-differences.toml`).
#[derive(Debug, Default, serde::Deserialize)]
pub struct AllowedDifferences {
    #[serde(default)]
    allowed: Vec<Allowed>,
}

#[derive(Debug, serde::Deserialize)]
struct Allowed {
    driver: String,
    reason: String,
    cases: Vec<String>,
}

impl AllowedDifferences {
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let a: Self =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if let Some(e) = a.allowed.iter().find(|e| e.reason.trim().is_empty()) {
            bail!(
                "{}: an entry for {:?} gives no reason",
                path.display(),
                e.cases
            );
        }
        Ok(a)
    }

    /// The reason `driver` may differ on `case`, if it may.
    fn reason(&self, driver: &str, case: &str) -> Option<&str> {
        self.allowed
            .iter()
            .find(|e| e.driver == driver && e.cases.iter().any(|c| c == case))
            .map(|e| e.reason.as_str())
    }

    /// The cases allowed to `driver`.
    fn cases<'a>(&'a self, driver: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.allowed
            .iter()
            .filter(move |e| e.driver == driver)
            .flat_map(|e| e.cases.iter().map(String::as_str))
    }
}

/// Compares the transcripts (`TRANSCRIPT` lines) of every run of `program` with the first
/// run's: line for line, but for the cases `allowed` lets a run's driver answer otherwise. An
/// allowed case that does not differ fails too (the list must not outlive its reason).
pub fn differential(out: &BootOutcome, program: &str, allowed: &AllowedDifferences) -> Verdict {
    let runs: Vec<_> = out
        .guest
        .runs
        .iter()
        .filter(|r| r.program == program)
        .collect();
    if runs.len() < 2 {
        return Verdict::fail(format!(
            "{program} ran {} time(s), the comparison needs two",
            runs.len()
        ));
    }
    let transcript = |r: &crate::guest_log::ProgramRun| -> Vec<String> {
        r.output(&out.log)
            .iter()
            .filter_map(|l| {
                l.split_once(TRANSCRIPT)
                    .map(|(_, t)| t.trim_end().to_string())
            })
            .collect()
    };
    let label = |r: &crate::guest_log::ProgramRun| r.driver.map_or("no driver", Driver::name);
    let case = |line: &str| line.split_once(':').map_or(line, |(c, _)| c).to_string();
    let first = transcript(runs[0]);
    if first.is_empty() {
        return Verdict::fail(format!("{program} printed no transcript"));
    }
    let mut allowed_seen = 0;
    for r in &runs[1..] {
        let other = transcript(r);
        let driver = label(r);
        let cases_first: Vec<String> = first.iter().map(|l| case(l)).collect();
        let cases_other: Vec<String> = other.iter().map(|l| case(l)).collect();
        if cases_first != cases_other {
            let at = cases_first
                .iter()
                .zip(&cases_other)
                .position(|(a, b)| a != b)
                .unwrap_or(first.len().min(other.len()));
            return Verdict::fail(format!(
                "transcripts differ at line {} (not the same calls): {} {:?} vs {} {:?}",
                at + 1,
                label(runs[0]),
                first.get(at).map_or("(end)", String::as_str),
                driver,
                other.get(at).map_or("(end)", String::as_str),
            ));
        }
        for (i, (a, b)) in first.iter().zip(&other).enumerate() {
            let c = case(a);
            match (a == b, allowed.reason(driver, &c)) {
                (true, None) => {}
                (false, Some(_)) => allowed_seen += 1,
                (false, None) => {
                    return Verdict::fail(format!(
                        "transcripts differ at line {}: {} {a:?} vs {driver} {b:?}",
                        i + 1,
                        label(runs[0]),
                    ))
                }
                (true, Some(reason)) => {
                    return Verdict::fail(format!(
                        "{driver} no longer differs on {c} ({a:?}): drop it from the allowed differences (it was: {reason})"
                    ))
                }
            }
        }
        if let Some(c) = allowed
            .cases(driver)
            .find(|c| !cases_first.iter().any(|f| f == c))
        {
            return Verdict::fail(format!(
                "the allowed difference {c} of {driver} names no call of the transcript"
            ));
        }
    }
    let drivers: Vec<&str> = runs.iter().map(|r| label(r)).collect();
    let exact = first.len() * (runs.len() - 1) - allowed_seen;
    Verdict::pass(format!(
        "{} lines x {} runs ({}): identical but {allowed_seen} allowed difference(s) (qemu/uapi-differences.toml); {exact} compared lines equal",
        first.len(),
        runs.len(),
        drivers.join(", ")
    ))
}

/// One `cargo xtask test` run.
struct TestRun<'a> {
    ctx: &'a Ctx,
    builds: Builds,
    args: &'a BootArgs,
    filter: Option<String>,
    pattern: Option<glob::Pattern>,
    driver: Driver,
    suites_text: String,
    report: Report,
}

impl TestRun<'_> {
    fn wants(&self, name: &str) -> bool {
        self.pattern.as_ref().is_none_or(|p| p.matches(name))
    }

    fn wants_program(&self, p: &Program) -> bool {
        p.rows.iter().any(|r| self.wants(r))
    }

    /// The main boot of `arch`: KUnit, then the programs under the driver.
    fn main_boot(&mut self, arch: &str) -> Result<()> {
        let d = self.driver;
        let mut steps = Vec::new();
        let kmemleak = self.wants_program(&KMEMLEAK);
        if kmemleak {
            steps.push(Step::Run {
                program: KMEMLEAK.name.into(),
                args: vec!["clear".into()],
            });
        }
        let render = self.wants_program(&RENDER);
        if render {
            steps.extend([d.load(), run(&RENDER)]);
        }
        let uapi = self.wants_program(&UAPI);
        if uapi {
            // The same program before and after a reload of the driver (or
            // under C, then the chosen driver): transcripts must match.
            if render {
                steps.push(d.unload());
            }
            steps.extend([
                Driver::C.load(),
                run(&UAPI),
                Driver::C.unload(),
                d.load(),
                run(&UAPI),
            ]);
        }
        let mut files = Vec::new();
        let igt_items = self.igt_items(arch)?;
        let wants_libdrm = self.wants_program(&LIBDRM);
        // libdrm's tools and IGT run under the chosen driver, whatever the
        // filter left out before them (IGT without a driver would skip all).
        if (wants_libdrm || !igt_items.is_empty()) && !(render || uapi) {
            steps.push(d.load());
        }
        if wants_libdrm {
            steps.push(Step::Run {
                program: LIBDRM.name.into(),
                args: vec!["libdrm".into(), "/etc/vrs/libdrm.list".into(), "60".into()],
            });
            files.push((
                "etc/vrs/libdrm.list".to_string(),
                LIBDRM_LIST.as_bytes().to_vec(),
            ));
        }
        if !igt_items.is_empty() {
            let (step, file) = super::igt::boot_parts(&igt_items, IGT_TEST_TIMEOUT);
            steps.push(step);
            files.push(file);
        }
        let mut loaded = render || uapi || wants_libdrm || !igt_items.is_empty();
        let display = self.wants_program(&DISPLAY);
        let display_run = |d: Driver| Step::Run {
            program: DISPLAY.name.into(),
            args: vec![d.name().into()],
        };
        if display {
            if !loaded {
                steps.push(d.load());
                loaded = true;
            }
            steps.push(display_run(d));
        }
        // Under the Rust driver too when the boot's driver is C: the uapi transcript once more
        // (the differential then compares C, C reloaded and Rust) and the IGT list less the
        // Rust driver's skips (each test must end as it did under C, or pass). After
        // everything that runs under the boot's driver, since it swaps drivers.
        // The render check under the Rust driver too: the same pattern, the same screendump.
        let render_rust = render && d != Driver::Rust;
        let uapi_rust = uapi && d != Driver::Rust;
        let rust_igt_items = match d {
            Driver::Rust => Vec::new(),
            _ => self.igt_items_for(arch, Driver::Rust)?,
        };
        let display_rust = display && d != Driver::Rust;
        let swapped = render_rust || uapi_rust || !rust_igt_items.is_empty() || display_rust;
        if swapped {
            if loaded {
                steps.push(d.unload());
            }
            steps.push(Driver::Rust.load());
            if render_rust {
                steps.push(run(&RENDER));
            }
            if uapi_rust {
                steps.push(run(&UAPI));
            }
            if !rust_igt_items.is_empty() {
                let (step, file) =
                    super::igt::boot_parts_at(&rust_igt_items, IGT_TEST_TIMEOUT, RUST_IGT_LIST);
                steps.push(step);
                files.push(file);
            }
            if display_rust {
                steps.push(display_run(Driver::Rust));
            }
            steps.push(Driver::Rust.unload());
        }
        // Last, as it leaves no driver loaded: the Rust driver's binding cycles.
        if self.wants_program(&BIND) {
            if loaded && !swapped {
                steps.push(d.unload());
            }
            steps.push(run(&BIND));
        }
        // After everything: what the programs leaked, driver unloaded or not.
        if kmemleak {
            steps.push(Step::Run {
                program: KMEMLEAK.name.into(),
                args: vec!["scan".into()],
            });
        }
        let mut append = String::new();
        if let Some(f) = &self.filter {
            append.push_str(&format!("kunit.filter_glob={f} "));
        }
        append.push_str(&format!("{}=10 {}", key::RENDER_SECONDS, self.args.append));
        let run_dir = self.ctx.cache.run_dir(arch)?;
        let b = self.builds.get(self.ctx, arch, None)?;
        let out = boot::boot(
            self.ctx,
            b,
            &Boot {
                renders: usize::from(render) + usize::from(render_rust),
                packages: true,
                files,
                ..Boot::new(&run_dir, steps.clone(), append, self.args.timeout())
            },
        )?;
        let expected = expected_suites(&self.suites_text, arch);
        let judged: Vec<crate::igt::Item> =
            igt_items.iter().chain(&rust_igt_items).cloned().collect();
        let (runs, excused) = crate::igt::attributed_runs(&out, &judged);
        // The results of the runs under `driver` (libdrm's tools are runs too, whose results
        // name no IGT test).
        let under = |driver: Driver| -> Vec<virtgpu_protocol::CaseResult> {
            runs.iter()
                .filter(|(d, _)| *d == Some(driver))
                .flat_map(|(_, r)| r.iter().cloned())
                .collect()
        };
        let igt_results = under(d);
        let rust_igt_results = match d {
            Driver::Rust => Vec::new(),
            _ => under(Driver::Rust),
        };
        let mut r = boot_rows(
            arch,
            &out,
            &steps,
            &expected,
            self.pattern.as_ref(),
            &excused,
        );
        if render && self.wants("render") {
            let drivers = [Some(d), render_rust.then_some(Driver::Rust)];
            for (i, driver) in drivers.into_iter().flatten().enumerate() {
                let v = out
                    .renders
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| Verdict::fail("not run"));
                r.rows.push(Row::verdict(arch, driver.name(), "render", &v));
            }
        }
        if uapi && self.wants("differential:drm_uapi") {
            let drivers = match uapi_rust {
                true => format!("c/{}/rust", d.name()),
                false => format!("c/{}", d.name()),
            };
            r.rows.push(Row::verdict(
                arch,
                &drivers,
                "differential:drm_uapi",
                &differential(
                    &out,
                    UAPI.name,
                    &AllowedDifferences::load(
                        &self.ctx.project.join("qemu/uapi-differences.toml"),
                    )?,
                ),
            ));
        }
        if !igt_items.is_empty() || !rust_igt_items.is_empty() {
            // The boot driver's expectations: its own rows', and the Rust rows' baseline.
            let exp = crate::igt::Expectations::load(&self.ctx.project.join("qemu/igt"), d.name())?;
            r.rows.extend(super::igt::judged_rows(
                arch,
                d,
                &igt_items,
                &igt_results,
                &exp,
            ));
            r.rows.extend(super::igt::differential_rows(
                arch,
                Driver::Rust,
                &rust_igt_items,
                &igt_results,
                &rust_igt_results,
                &exp,
            ));
        }
        let failed = r.rows.iter().any(|r| r.failed > 0);
        self.report.rows.extend(r.rows);
        let details = &mut self.report.details;
        details.extend(out.problems(arch));
        details.extend(r.details);
        if failed {
            details.push(format!("{arch}: serial log {}", out.log_path.display()));
        }
        for p in &out.screenshots {
            details.push(format!("{arch}: screendump {}", p.display()));
        }
        details.push(format!(
            "{arch}: boot took {}, clocksource {}",
            ui::fmt_duration(out.duration),
            out.guest.clocksource().unwrap_or("unknown")
        ));
        if let Some(l) = out.guest.lockdep() {
            details.push(format!("{arch}: after the test boot, lockdep {l}"));
        }
        Ok(())
    }

    /// The CI list of IGT tests (`qemu/igt/ci.txt`) the filter selects,
    /// minus the skips of the boot's driver; none on architectures without IGT.
    fn igt_items(&self, arch: &str) -> Result<Vec<crate::igt::Item>> {
        self.igt_items_for(arch, self.driver)
    }

    /// As [`Self::igt_items`], minus the skips of `driver`.
    fn igt_items_for(&self, arch: &str, driver: Driver) -> Result<Vec<crate::igt::Item>> {
        if arch != "x86_64" {
            return Ok(Vec::new());
        }
        let p = self.ctx.project.join("qemu/igt/ci.txt");
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let skips = super::igt::skips(self.ctx, driver)?;
        Ok(crate::igt::read_list(&text)?
            .into_iter()
            .filter(|i| !skips.matches(&i.name()) && self.wants(&format!("igt:{}", i.name())))
            .collect())
    }

    /// The expected-splat boots of `arch` (`kunit/splats.toml`), one row each.
    fn splat_boots(&mut self, arch: &str, cases: &[splat_cases::Case]) -> Result<()> {
        for case in cases.iter().filter(|c| c.runs_on(arch)) {
            let row_name = format!("splat:{}", case.name);
            if !self.wants(&row_name) {
                continue;
            }
            let run_dir = ui::ensure_dir(
                self.ctx
                    .cache
                    .run_dir(arch)?
                    .join(format!("splat-{}", case.name)),
            )?;
            let b = self.builds.get(self.ctx, arch, case.variant.as_deref())?;
            let steps = case.steps();
            let out = boot::boot(
                self.ctx,
                b,
                &Boot::new(
                    &run_dir,
                    steps.clone(),
                    format!("{} {}", case.kunit_arg(), self.args.append),
                    self.args.timeout(),
                ),
            )?;
            let mut verdict = match case.judge(&out.log, &out.splats, out.error.as_deref()) {
                Ok(s) => Verdict::pass(s),
                Err(e) => Verdict::fail(e),
            };
            // Beyond the reports: every step ran and every program's suites passed.
            if verdict.ok {
                let rows = boot_rows(arch, &out, &steps, &[], None, &[]);
                let bad: Vec<String> = rows
                    .rows
                    .iter()
                    .filter(|r| r.name != "boot" && r.failed > 0)
                    .map(|r| format!("{} {}", r.name, r.note))
                    .chain(
                        out.guest
                            .problems(&steps, &out.log)
                            .into_iter()
                            .map(|p| p.summary),
                    )
                    .collect();
                if let Some(first) = bad.first() {
                    verdict = Verdict::fail(first.clone());
                }
            }
            if !verdict.ok {
                self.report.details.push(format!(
                    "{arch}: splat case {}: serial log {}",
                    case.name,
                    out.log_path.display()
                ));
            }
            self.report
                .rows
                .push(Row::verdict(arch, "-", &row_name, &verdict));
        }
        Ok(())
    }

    /// Whether the generated code of `Arc` users is unchanged with the
    /// option off (x86_64: one architecture is enough, and the variant and
    /// pristine builds cost CI minutes).
    fn codegen(&mut self, arch: &str) -> Result<()> {
        if arch != "x86_64" {
            return Ok(());
        }
        for row in ["arc_off_codegen", "implicit_off_codegen"] {
            if !self.wants(row) {
                continue;
            }
            let off = self.builds.get(self.ctx, arch, Some(ARC_OFF_VARIANT))?;
            let v = if row == "arc_off_codegen" {
                self.ctx.arc_off_codegen(&off.machine, &off.kernel)?
            } else {
                self.ctx.implicit_off_codegen(&off.machine, &off.kernel)?
            };
            self.report.rows.push(Row::verdict(arch, "-", row, &v));
        }
        Ok(())
    }
}

/// `cargo xtask test`.
pub fn run_all(
    cache_dir: Option<PathBuf>,
    kernel_src: Option<PathBuf>,
    args: BootArgs,
    filter: Option<String>,
    driver: Driver,
) -> Result<i32> {
    let arches = machine::arches(args.arch.as_deref().unwrap_or("all"))?;
    let pattern = match &filter {
        Some(f) => Some(
            glob::Pattern::new(f).with_context(|| format!("--filter {f:?} is not a valid glob"))?,
        ),
        None => None,
    };
    let suites_text = std::fs::read_to_string(paths::project_root().join("kunit/suites.txt"))
        .context("reading kunit/suites.txt")?;
    let started = Instant::now();
    let ctx = super::setup::prepare(cache_dir, kernel_src, &args)?;
    let cases = splat_cases::load(&ctx.project)?;
    let mut t = TestRun {
        ctx: &ctx,
        builds: Builds::default(),
        args: &args,
        filter,
        pattern,
        driver,
        suites_text,
        report: Report::default(),
    };
    for arch in &arches {
        let splat_only = t
            .pattern
            .as_ref()
            .is_some_and(|p| p.as_str().starts_with("splat:"));
        if !splat_only {
            t.main_boot(arch)?;
        }
        t.splat_boots(arch, &cases)?;
        t.codegen(arch)?;
    }
    if let Some(f) = &t.filter {
        if t.report.rows.iter().all(|r| r.name == "boot") {
            t.report.rows.push(Row::verdict(
                "-",
                "-",
                "filter",
                &Verdict::fail(format!(
                    "--filter {f:?} selects no test: no KUnit suite, guest program, splat case or check has a matching name"
                )),
            ));
        }
    }
    Ok(t.report.print(started.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suite_dot_test_glob_selects_its_suite() {
        let p = |s: &str| glob::Pattern::new(s).unwrap();
        assert!(suite_matches(
            &p("rust_arc_lockdep.thousand*"),
            "rust_arc_lockdep"
        ));
        assert!(suite_matches(&p("rust_arc*"), "rust_arc_lockdep"));
        assert!(!suite_matches(
            &p("rust_dma_fence.signal*"),
            "rust_arc_lockdep"
        ));
    }
    use std::time::Duration;
    use virtgpu_protocol::{Event, Exit};

    #[test]
    fn expected_suites_respect_arch_prefix() {
        let t = "# c\nall_a\nx86_64: only_x\narm64:only_arm\n";
        assert_eq!(expected_suites(t, "x86_64"), ["all_a", "only_x"]);
        assert_eq!(expected_suites(t, "arm64"), ["all_a", "only_arm"]);
    }

    fn outcome(log: &str) -> BootOutcome {
        BootOutcome {
            log: log.into(),
            splats: crate::splat::detect(log),
            guest: crate::guest_log::GuestLog::read(log),
            log_path: "/x".into(),
            renders: Vec::new(),
            screenshots: Vec::new(),
            error: None,
            error_source: None,
            duration: Duration::ZERO,
        }
    }

    const NO_INIT: &str = include_str!("../../tests/fixtures/x86_64-boot-no-init.log");

    #[test]
    fn missing_suite_and_missing_init_fail() {
        let r = boot_rows(
            "x86_64",
            &outcome(NO_INIT),
            &[],
            &["rust_doctests_kernel".into(), "absent".into()],
            None,
            &[],
        );
        let missing = r.rows.iter().find(|r| r.name == "absent").unwrap();
        assert_eq!(missing.failed, 1);
        let doc = r
            .rows
            .iter()
            .find(|r| r.name == "rust_doctests_kernel")
            .unwrap();
        assert_eq!((doc.passed, doc.failed), (360, 0));
        // That boot panicked for lack of an init: the boot row fails.
        let boot = r.rows.iter().find(|r| r.name == "boot").unwrap();
        assert_eq!(boot.failed, 1);
        assert!(boot.note.contains("panic"), "{}", boot.note);
    }

    #[test]
    fn filter_limits_rows() {
        let f = glob::Pattern::new("rust_net*").unwrap();
        let r = boot_rows(
            "x86_64",
            &outcome(NO_INIT),
            &[],
            &["rust_doctests_kernel".into()],
            Some(&f),
            &[],
        );
        let names: Vec<&str> = r.rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["rust_netlink", "boot"]);
    }

    fn ev(e: Event) -> String {
        format!("[    5.000000] {e}")
    }

    /// A clean guest part: `/init` ran `steps`' programs, each printing `body`.
    fn guest(runs: &[(&str, &str, Exit)]) -> String {
        let mut v = vec![ev(Event::InitStart)];
        for (p, body, exit) in runs {
            v.push(ev(Event::Started {
                program: p.to_string(),
            }));
            for l in body.lines() {
                v.push(format!("[    5.1] {p}| {l}"));
            }
            v.push(ev(Event::Ended {
                program: p.to_string(),
                exit: exit.clone(),
            }));
        }
        v.push(ev(Event::InitDone));
        v.join("\n")
    }

    const KTAP_OK: &str = "KTAP version 1\n1..1\n    KTAP version 1\n    # Subtest: prog\n    1..1\n    ok 1 works\nok 1 prog";

    fn boot_row(log: &str, steps: &str) -> Row {
        let steps = Step::parse_list(steps).unwrap();
        let r = boot_rows("x86_64", &outcome(log), &steps, &[], None, &[]);
        r.rows.into_iter().find(|r| r.name == "boot").unwrap()
    }

    #[test]
    fn a_program_exiting_1_fails_the_boot_row() {
        let log = guest(&[("prog", KTAP_OK, Exit::Code(1))]);
        let b = boot_row(&log, "run:prog");
        assert_eq!(b.failed, 1, "{b:?}");
        assert!(b.note.contains("exited with status 1"), "{}", b.note);
        let ok = guest(&[("prog", KTAP_OK, Exit::Code(0))]);
        assert_eq!(boot_row(&ok, "run:prog").failed, 0);
    }

    #[test]
    fn a_program_killed_by_a_signal_fails_the_boot_row() {
        let log = guest(&[("prog", "half a line", Exit::Signal(11))]);
        let b = boot_row(&log, "run:prog");
        assert!(
            b.note.contains("killed by signal 11 (SIGSEGV)"),
            "{}",
            b.note
        );
    }

    #[test]
    fn a_module_that_fails_to_load_fails_the_boot_row() {
        let log = [
            ev(Event::InitStart),
            ev(Event::Loaded {
                module: "virtio_gpu".into(),
                ok: false,
                status: 1,
            }),
            ev(Event::InitDone),
        ]
        .join("\n");
        let b = boot_row(&log, "load:virtio_gpu");
        assert!(b.note.contains("virtio_gpu FAILED to load"), "{}", b.note);
    }

    #[test]
    fn debug_in_program_output_is_not_a_splat() {
        let body = format!(
            "DEBUG: looking at things\nOops, a typo in a message\nBUG: not the kernel's\n{KTAP_OK}"
        );
        let log = guest(&[("prog", &body, Exit::Code(0))]);
        let b = boot_row(&log, "run:prog");
        assert_eq!((b.passed, b.failed), (1, 0), "{b:?}");
    }

    #[test]
    fn a_real_lockdep_report_fails_the_boot_row_even_when_all_passed() {
        let report = include_str!("../../tests/fixtures/splats/lockdep.log");
        let log = format!("{report}\n{}", guest(&[("prog", KTAP_OK, Exit::Code(0))]));
        let b = boot_row(&log, "run:prog");
        assert_eq!(b.failed, 1, "{b:?}");
        assert!(b.note.contains("lockdep: circular locking"), "{}", b.note);
    }

    #[test]
    fn only_splats_no_igt_test_accounts_for_fail_the_boot_row() {
        let report = include_str!("../../tests/fixtures/splats/lockdep.log");
        let log = format!("{report}\n{}", guest(&[("prog", KTAP_OK, Exit::Code(0))]));
        let steps = Step::parse_list("run:prog").unwrap();
        let o = outcome(&log);
        let boot = |excused: &[usize]| {
            let r = boot_rows("x86_64", &o, &steps, &[], None, excused);
            r.rows.into_iter().find(|r| r.name == "boot").unwrap()
        };
        assert_eq!(boot(&[]).failed, 1);
        let b = boot(&[0]);
        assert_eq!(b.failed, 0, "{b:?}");
        assert!(b.note.contains("during an IGT test"), "{}", b.note);
    }

    #[test]
    fn program_suites_become_rows_named_by_driver_and_run() {
        let mut log = vec![ev(Event::Loaded {
            module: "virtio_gpu".into(),
            ok: true,
            status: 0,
        })];
        log.push(guest(&[
            ("prog", KTAP_OK, Exit::Code(0)),
            (
                "prog",
                &KTAP_OK.replace("    ok 1 works", "    not ok 1 works"),
                Exit::Code(1),
            ),
        ]));
        let r = boot_rows("x86_64", &outcome(&log.join("\n")), &[], &[], None, &[]);
        let rows: Vec<(&str, &str, usize)> = r
            .rows
            .iter()
            .filter(|r| r.name != "boot")
            .map(|r| (r.driver.as_str(), r.name.as_str(), r.failed))
            .collect();
        assert_eq!(rows, [("c", "prog", 0), ("c", "prog#2", 1)]);
    }

    #[test]
    fn a_program_crashing_mid_suite_fails_its_row() {
        let cut =
            "KTAP version 1\n1..1\n    KTAP version 1\n    # Subtest: prog\n    1..2\n    ok 1 one";
        let log = guest(&[("prog", cut, Exit::Signal(6))]);
        let r = boot_rows("x86_64", &outcome(&log), &[], &[], None, &[]);
        let row = r.rows.iter().find(|r| r.name == "prog").unwrap();
        assert!(row.note.starts_with("CRASHED"), "{row:?}");
    }

    #[test]
    fn differential_compares_transcripts() {
        let none = AllowedDifferences::default();
        let t = |x: &str| format!("{TRANSCRIPT}version virtio_gpu\n{TRANSCRIPT}{x}");
        let same = outcome(&guest(&[
            ("drm-uapi", &t("a: ok"), Exit::Code(0)),
            ("drm-uapi", &t("a: ok"), Exit::Code(0)),
        ]));
        assert!(differential(&same, "drm-uapi", &none).ok);
        let differ = outcome(&guest(&[
            ("drm-uapi", &t("a: ok"), Exit::Code(0)),
            ("drm-uapi", &t("a: errno 22"), Exit::Code(0)),
        ]));
        let v = differential(&differ, "drm-uapi", &none);
        assert!(!v.ok && v.summary.contains("line 2"), "{v:?}");
        let once = outcome(&guest(&[("drm-uapi", &t("a: ok"), Exit::Code(0))]));
        assert!(!differential(&once, "drm-uapi", &none).ok);
    }

    #[test]
    fn allowed_differences_are_per_driver_and_must_still_differ() {
        let allowed: AllowedDifferences =
            toml::from_str("[[allowed]]\ndriver = \"no driver\"\nreason = \"r\"\ncases = [\"a\"]")
                .unwrap();
        let t = |x: &str| format!("{TRANSCRIPT}version: ok\n{TRANSCRIPT}{x}");
        let run = |a: &str, b: &str| {
            outcome(&guest(&[
                ("drm-uapi", &t(a), Exit::Code(0)),
                ("drm-uapi", &t(b), Exit::Code(0)),
            ]))
        };
        let v = differential(&run("a: ok", "a: errno 95"), "drm-uapi", &allowed);
        assert!(v.ok && v.summary.contains("1 allowed"), "{v:?}");
        // Another case differing is not allowed.
        let v = differential(&run("b: ok", "b: errno 95"), "drm-uapi", &allowed);
        assert!(!v.ok, "{v:?}");
        // An allowed case that no longer differs fails, and so does one naming no call.
        let v = differential(&run("a: ok", "a: ok"), "drm-uapi", &allowed);
        assert!(!v.ok && v.summary.contains("no longer differs"), "{v:?}");
        // Not the same calls: not a difference of answers.
        let v = differential(&run("a: ok", "c: ok"), "drm-uapi", &allowed);
        assert!(!v.ok && v.summary.contains("not the same calls"), "{v:?}");
    }

    #[test]
    fn the_project_list_of_allowed_differences_parses() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        AllowedDifferences::load(&root.join("qemu/uapi-differences.toml")).unwrap();
    }
}
