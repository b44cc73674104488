//! The commands: setup, build, qemu, test, clean.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::build::{Ctx, Kernel};
use crate::ktap::{self, Outcome};
use crate::machine::{self, Machine};
use crate::paths::{self, Cache};
use crate::qemu::{self, BootSpec, Guest};
use crate::render;
use crate::source;
use crate::splat;
use crate::splat_cases;
use crate::toolchain::{self, Toolchain};
use crate::ui::{self, Phase};
use crate::BootArgs;

/// Provisions what is needed and returns the build context.
pub fn setup(cache_dir: Option<PathBuf>, kernel_src: Option<PathBuf>) -> Result<Ctx> {
    let cache = Cache::locate(cache_dir)?;
    let project = paths::project_root();
    let mut binds = vec![
        cache.dir.clone(),
        project.clone(),
        crate::build::cargo_home()?,
    ];
    let user_src = match &kernel_src {
        Some(d) => {
            let s = source::user_tree(d)?;
            binds.push(s.dir.clone());
            Some(s)
        }
        None => None,
    };
    // The root always provides apt (downloads); its toolchain only when the
    // host's does not qualify.
    let apt = toolchain::ensure_root_base(&cache, binds.clone())?;
    let source = match user_src {
        Some(s) => s,
        None => source::debian_tree(&cache, &apt)?,
    };
    let shortfalls = toolchain::host_shortfalls(&source.dir, &cache.dir.join("tmp/rustavailable"));
    let tc = if shortfalls.is_empty() {
        Toolchain::Host
    } else {
        if ui::verbose() {
            eprintln!(
                "  the host toolchain does not qualify: {}",
                shortfalls.join("; ")
            );
        }
        toolchain::ensure_root_packages(&apt, &cache)?;
        apt.clone()
    };
    eprintln!(
        "  kernel {} from {}; building with the {}",
        source.version,
        source.dir.display(),
        tc.describe()
    );
    let tc_identity = tc.identity().context("reading the toolchain's versions")?;
    let tree = cache.dir.join(format!("tree/{}", source.key));
    let jobs = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    Ok(Ctx {
        cache,
        project,
        tc,
        apt,
        source,
        tc_identity,
        tree,
        jobs,
    })
}

/// One architecture built and ready to boot.
struct Built {
    machine: Machine,
    kernel: Kernel,
    initrd: PathBuf,
}

fn build_arch(ctx: &Ctx, arch: &str, variant: Option<&str>) -> Result<Built> {
    let machine = Machine::load(&ctx.project, arch)?;
    let kernel = ctx.build_kernel(&machine, variant)?;
    let programs = ctx.build_guest(&machine)?;
    let busybox = ctx.busybox(&machine)?;
    let run_dir = ctx.cache.run_dir(arch)?;
    let initrd = crate::initramfs::build(
        &ctx.project,
        &busybox,
        &kernel.modroot,
        &programs,
        &run_dir.join(match variant {
            Some(v) => format!("initramfs-{v}.cpio"),
            None => "initramfs.cpio".into(),
        }),
    )?;
    Ok(Built {
        machine,
        kernel,
        initrd,
    })
}

fn prepare(
    cache_dir: Option<PathBuf>,
    kernel_src: Option<PathBuf>,
    boot: &BootArgs,
) -> Result<Ctx> {
    let mut ctx = setup(cache_dir, kernel_src)?;
    if let Some(j) = boot.jobs {
        ctx.jobs = j.max(1);
    }
    ctx.apply_overlay()?;
    Ok(ctx)
}

/// `cargo xtask build`.
pub fn build_only(
    cache_dir: Option<PathBuf>,
    kernel_src: Option<PathBuf>,
    boot: BootArgs,
) -> Result<()> {
    let arches = machine::arches(boot.arch.as_deref().unwrap_or("all"))?;
    let ctx = prepare(cache_dir, kernel_src, &boot)?;
    for a in arches {
        let b = build_arch(&ctx, &a, None)?;
        eprintln!(
            "  {a}: {} + {} (build directory {})",
            b.kernel.image.display(),
            b.initrd.display(),
            b.kernel.build_dir.display()
        );
    }
    Ok(())
}

/// `cargo xtask fmt`.
pub fn fmt(cache_dir: Option<PathBuf>, kernel_src: Option<PathBuf>, check: bool) -> Result<i32> {
    let ctx = setup(cache_dir, kernel_src)?;
    let mut files = Vec::new();
    for dir in ["abstractions/rust", "driver"] {
        collect_rs(&ctx.project.join(dir), &mut files)?;
    }
    let mut c = crate::toolchain::Cmd::new("rustfmt")
        .args(["--edition", "2021", "--config-path"])
        .arg(ctx.source.dir.join(".rustfmt.toml"));
    if check {
        c = c.arg("--check");
    }
    let out = ctx.tc.command(&c.args(&files)).status()?;
    Ok(if out.success() { 0 } else { 1 })
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for e in std::fs::read_dir(dir)?.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_rs(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    Ok(())
}

/// `cargo xtask clean`.
pub fn clean(cache_dir: Option<PathBuf>) -> Result<()> {
    let cache = Cache::locate(cache_dir)?;
    toolchain::remove_tree(&cache.dir)?;
    eprintln!("removed {}", cache.dir.display());
    Ok(())
}

/// What one boot produced.
struct BootOutcome {
    log: String,
    /// Splats found in `log`.
    splats: Vec<splat::Splat>,
    log_path: PathBuf,
    render: Option<render::Verdict>,
    screenshot: Option<PathBuf>,
    error: Option<String>,
    duration: Duration,
}

impl BootOutcome {
    /// The splats (with their text) and the boot error, one message each,
    /// prefixed with `arch`.
    fn problems(&self, arch: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .splats
            .iter()
            .map(|s| {
                format!(
                    "{arch}: splat ({}) at serial log line {}:\n{}",
                    s.kind,
                    s.line,
                    qemu::indent(&s.text)
                )
            })
            .collect();
        v.extend(self.error.iter().map(|e| format!("{arch}: {e}")));
        v
    }
}

/// Boots `b`; if `render` is set, waits for the guest's render program and
/// checks a screendump while it runs.
/// `run_dir` receives the serial log, QEMU's log and any screendump.
#[allow(clippy::too_many_arguments)]
fn boot(
    ctx: &Ctx,
    b: &Built,
    run_dir: &Path,
    append: &str,
    timeout: u64,
    render: bool,
    display: bool,
) -> Result<BootOutcome> {
    let run_dir = run_dir.to_path_buf();
    let spec = BootSpec {
        machine: &b.machine,
        kernel: &b.kernel.image,
        initrd: &b.initrd,
        append: append.to_string(),
        run_dir: &run_dir,
        timeout: Duration::from_secs(timeout),
        display,
    };
    let phase = Phase::start(format!("boot {}", b.machine.name));
    let mut guest = Guest::start(&ctx.tc, &spec)?;
    let mut out = BootOutcome {
        log: String::new(),
        splats: Vec::new(),
        log_path: guest.log.clone(),
        render: None,
        screenshot: None,
        error: None,
        duration: Duration::ZERO,
    };
    let r = (|| -> Result<()> {
        if render {
            match guest.wait_line("virtgpu-rs: render ready", &phase)? {
                Some(line) => {
                    let size = line
                        .rsplit(' ')
                        .next()
                        .and_then(|s| s.trim().split_once('x'))
                        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
                        .context("cannot read the mode from the render-ready line")?;
                    let png = run_dir.join("screendump.png");
                    out.render = Some(capture(&guest, &png, &b.machine.name, size, &phase)?);
                    out.screenshot = Some(png);
                }
                None => {
                    out.render = Some(render::Verdict {
                        ok: false,
                        summary: "the guest never reported `render ready` (see the serial log for the render program's error)".into(),
                    })
                }
            }
        }
        guest.wait_exit(&phase)
    })();
    out.duration = guest.elapsed();
    out.log = guest.log_text();
    out.splats = splat::detect(&out.log);
    match r {
        Ok(()) => {
            phase.done(&format!("serial log {}", out.log_path.display()));
        }
        Err(e) => {
            phase.fail();
            out.error = Some(format!("{e:#}"));
        }
    }
    Ok(out)
}

/// Takes screendumps until one matches the pattern (the first flush may lag
/// the guest's commit by a moment), for up to ten tries.
fn capture(
    guest: &Guest,
    png: &Path,
    arch: &str,
    size: (u32, u32),
    phase: &Phase,
) -> Result<render::Verdict> {
    let mut last = None;
    for _ in 0..10 {
        phase.status("screendump");
        guest.screendump(png)?;
        let v = render::check(&render::load_png(png)?, arch, size);
        if v.ok {
            return Ok(v);
        }
        last = Some(v);
        std::thread::sleep(Duration::from_millis(500));
    }
    last.context("no screendump taken")
}

/// `cargo xtask qemu`.
pub fn qemu(
    cache_dir: Option<PathBuf>,
    kernel_src: Option<PathBuf>,
    boot_args: BootArgs,
    display: bool,
) -> Result<i32> {
    let arch = boot_args.arch.clone().unwrap_or_else(|| "x86_64".into());
    if arch == "all" {
        bail!("`cargo xtask qemu` boots one architecture: --arch x86_64 or --arch arm64");
    }
    machine::Machine::load(&paths::project_root(), &arch)?;
    let ctx = prepare(cache_dir, kernel_src, &boot_args)?;
    let b = build_arch(&ctx, &arch, None)?;
    let seconds = if display { 120 } else { 10 };
    let append = format!(
        "kunit.enable=0 vrs.modules=virtio_gpu vrs.run=drm-render vrs.render_seconds={seconds} {}",
        boot_args.append
    );
    let run_dir = ctx.cache.run_dir(&b.machine.name)?;
    let out = boot(
        &ctx,
        &b,
        &run_dir,
        &append,
        boot_args.timeout,
        true,
        display,
    )?;
    for p in out.problems(&arch) {
        eprintln!("{p}");
    }
    let render_ok = out.render.as_ref().is_some_and(|v| v.ok);
    if let Some(v) = &out.render {
        println!(
            "render: {} {}",
            if v.ok { "ok" } else { "FAILED" },
            v.summary
        );
    }
    if let Some(p) = &out.screenshot {
        println!("screendump: {}", p.display());
    }
    println!("serial log: {}", out.log_path.display());
    Ok(
        if render_ok && out.splats.is_empty() && out.error.is_none() {
            0
        } else {
            1
        },
    )
}

/// One benchmark result: ns per operation for Rust and C.
#[derive(Debug, PartialEq)]
pub struct BenchLine {
    pub case: String,
    pub rust_ns: f64,
    pub c_ns: f64,
}

/// Reads `ww_bench: <case> rust_ns=<n> c_ns=<n>` lines from a serial log.
pub fn parse_bench(log: &str) -> Vec<BenchLine> {
    let mut out = Vec::new();
    for line in log.lines() {
        let l = crate::ktap::strip_timestamp(line);
        let Some(rest) = l.split("ww_bench: ").nth(1) else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let Some(case) = words.next() else { continue };
        let mut rust = None;
        let mut c = None;
        for w in words {
            if let Some(v) = w.strip_prefix("rust_ns=") {
                rust = v.parse().ok();
            } else if let Some(v) = w.strip_prefix("c_ns=") {
                c = v.parse().ok();
            }
        }
        if let (Some(rust_ns), Some(c_ns)) = (rust, c) {
            out.push(BenchLine {
                case: case.to_string(),
                rust_ns,
                c_ns,
            });
        }
    }
    out
}

/// Reads `arc_bench: <case> ns=<n>` lines from a serial log.
pub fn parse_arc_bench(log: &str) -> Vec<(String, f64)> {
    log.lines()
        .filter_map(|line| {
            let rest = crate::ktap::strip_timestamp(line)
                .split("arc_bench: ")
                .nth(1)?;
            let (case, ns) = rest.trim().split_once(" ns=")?;
            Some((case.to_string(), ns.trim().parse().ok()?))
        })
        .collect()
}

/// Whether a benchmark boot went cleanly; prints what went wrong if not.
fn bench_boot_ok(arch: &str, out: &BootOutcome, done_marker: &str, found: bool) -> bool {
    for p in out.problems(arch) {
        println!("{p}");
    }
    let ok = out.log.contains(done_marker) && found && out.splats.is_empty() && out.error.is_none();
    if !ok {
        println!(
            "{arch}: the benchmark did not complete cleanly (no {done_marker:?} or no results); serial log {}",
            out.log_path.display()
        );
    }
    ok
}

/// The variant kernel the Arc benchmark compares with.
const ARC_OFF_VARIANT: &str = "arc-lockdep-off";

/// `cargo xtask bench`.
pub fn bench(
    cache_dir: Option<PathBuf>,
    kernel_src: Option<PathBuf>,
    boot_args: BootArgs,
) -> Result<i32> {
    let arches = machine::arches(boot_args.arch.as_deref().unwrap_or("x86_64"))?;
    let ctx = prepare(cache_dir, kernel_src, &boot_args)?;
    let mut failed = false;
    let mut records = Vec::new();
    for arch in &arches {
        let b = build_arch(&ctx, arch, None)?;
        let append = format!(
            "kunit.enable=0 vrs.modules=rust_ww_mutex_bench,rust_arc_lockdep_bench {}",
            boot_args.append
        );
        let run_dir = ctx.cache.run_dir(&b.machine.name)?;
        let out = boot(&ctx, &b, &run_dir, &append, boot_args.timeout, false, false)?;
        let lines = parse_bench(&out.log);
        let arc_on = parse_arc_bench(&out.log);
        failed |= !bench_boot_ok(arch, &out, "ww_bench: done", !lines.is_empty());
        failed |= !bench_boot_ok(arch, &out, "arc_bench: done", !arc_on.is_empty());

        let off = build_arch(&ctx, arch, Some(ARC_OFF_VARIANT))?;
        let off_dir = ui::ensure_dir(run_dir.join(format!("bench-{ARC_OFF_VARIANT}")))?;
        let append = format!(
            "kunit.enable=0 vrs.modules=rust_ww_mutex_bench,rust_arc_lockdep_bench {}",
            boot_args.append
        );
        let out_off = boot(
            &ctx,
            &off,
            &off_dir,
            &append,
            boot_args.timeout,
            false,
            false,
        )?;
        let arc_off = parse_arc_bench(&out_off.log);
        failed |= !bench_boot_ok(arch, &out_off, "arc_bench: done", !arc_off.is_empty());

        let lines_off = parse_bench(&out_off.log);
        for (kernel, lines) in [("", &lines), (" (arc-lockdep-off kernel)", &lines_off)] {
            println!(
                "\n{arch}{kernel} (TCG, debug config: PROVE_LOCKING, DEBUG_WW_MUTEX_SLOWPATH)"
            );
            println!(
                "{:<26} {:>12} {:>12} {:>8}",
                "ww_mutex case", "rust ns/op", "c ns/op", "ratio"
            );
            for l in lines.iter() {
                let ratio = if l.c_ns > 0.0 {
                    l.rust_ns / l.c_ns
                } else {
                    f64::NAN
                };
                println!(
                    "{:<26} {:>12.0} {:>12.0} {:>8.3}",
                    l.case, l.rust_ns, l.c_ns, ratio
                );
                records.push(serde_json::json!({
                    "arch": arch, "kernel": if kernel.is_empty() { "test" } else { ARC_OFF_VARIANT },
                    "bench": "ww_mutex", "case": l.case, "rust_ns": l.rust_ns, "c_ns": l.c_ns, "ratio": ratio,
                }));
            }
        }
        println!(
            "\n{:<26} {:>12} {:>12} {:>8}",
            "Arc / implicit class case", "off ns/op", "on ns/op", "on/off"
        );
        for (case, on) in &arc_on {
            let off = arc_off.iter().find(|(c, _)| c == case).map(|(_, v)| *v);
            let ratio = off.filter(|o| *o > 0.0).map_or(f64::NAN, |o| on / o);
            let off_s = off.map_or("-".to_string(), |o| format!("{o:.0}"));
            println!("{case:<26} {off_s:>12} {on:>12.0} {ratio:>8.3}");
            records.push(serde_json::json!({
                "arch": arch, "bench": "arc_lockdep", "case": case, "off_ns": off, "on_ns": on, "ratio": ratio,
            }));
        }
    }
    let json = ctx.cache.dir.join("run/bench.json");
    std::fs::write(&json, serde_json::to_string_pretty(&records)?)?;
    println!("\nresults: {}", json.display());
    Ok(if failed { 1 } else { 0 })
}

/// One row of the results table.
struct Row {
    arch: String,
    name: String,
    passed: usize,
    failed: usize,
    skipped: usize,
    note: String,
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

/// Turns one boot into table rows.
fn rows_for(
    arch: &str,
    out: &BootOutcome,
    expected: &[String],
    filter: &Option<glob::Pattern>,
    want_render: bool,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let suites = ktap::parse(&out.log);
    for s in &suites {
        if filter.as_ref().is_some_and(|f| !f.matches(&s.name)) {
            continue;
        }
        let (p, f, k) = s.counts();
        let note = match s.outcome {
            Outcome::Pass => "ok".to_string(),
            Outcome::Skip => "skipped".to_string(),
            Outcome::Fail => {
                let failed: Vec<&str> = s
                    .cases
                    .iter()
                    .filter(|c| matches!(c.outcome, Outcome::Fail | Outcome::Crashed))
                    .map(|c| c.name.as_str())
                    .collect();
                format!("FAILED: {}", failed.join(", "))
            }
            Outcome::Crashed => format!("CRASHED: {}", s.problem.clone().unwrap_or_default()),
        };
        rows.push(Row {
            arch: arch.into(),
            name: s.name.clone(),
            passed: p,
            failed: f,
            skipped: k,
            note,
        });
    }
    for e in expected {
        if filter.as_ref().is_some_and(|f| !f.matches(e)) {
            continue;
        }
        if !suites.iter().any(|s| &s.name == e) {
            rows.push(Row {
                arch: arch.into(),
                name: e.clone(),
                passed: 0,
                failed: 1,
                skipped: 0,
                note: "MISSING: expected suite did not report (kunit/suites.txt)".into(),
            });
        }
    }
    if want_render {
        let (ok, note) = match &out.render {
            Some(v) => (v.ok, v.summary.clone()),
            None => (false, "not run".into()),
        };
        rows.push(Row {
            arch: arch.into(),
            name: "render".into(),
            passed: ok as usize,
            failed: (!ok) as usize,
            skipped: 0,
            note: if ok {
                format!("ok: {note}")
            } else {
                format!("FAILED: {note}")
            },
        });
    }
    let splats = &out.splats;
    let init_done = out.log.contains("virtgpu-rs: init done");
    let mut boot_failed = 0;
    let mut note = "ok: powered off cleanly, no splats".to_string();
    if let Some(e) = &out.error {
        boot_failed = 1;
        note = format!("FAILED: {}", e.lines().next().unwrap_or(""));
    } else if !init_done {
        boot_failed = 1;
        note = "FAILED: /init did not finish (see the serial log)".into();
    }
    if !splats.is_empty() {
        let kinds: Vec<String> = splats
            .iter()
            .map(|s| format!("{} (line {})", s.kind, s.line))
            .collect();
        note = format!("FAILED: {} splat(s): {}", splats.len(), kinds.join(", "));
    }
    rows.push(Row {
        arch: arch.into(),
        name: "boot".into(),
        passed: (boot_failed == 0 && splats.is_empty()) as usize,
        failed: boot_failed.max((!splats.is_empty()) as usize),
        skipped: 0,
        note,
    });
    rows
}

/// The main test boot of `arch`: KUnit, the render check, no splats.
#[allow(clippy::too_many_arguments)]
fn main_boot(
    ctx: &Ctx,
    b: &Built,
    arch: &str,
    boot_args: &BootArgs,
    filter: &Option<String>,
    pattern: &Option<glob::Pattern>,
    want_render: bool,
    suites_text: &str,
    rows: &mut Vec<Row>,
    details: &mut Vec<String>,
) -> Result<()> {
    let mut append = String::new();
    if let Some(f) = &filter {
        append.push_str(&format!("kunit.filter_glob={f} "));
    }
    if want_render {
        append.push_str("vrs.modules=virtio_gpu,virtio_gpu_rs vrs.run=drm-render ");
    }
    append.push_str(&boot_args.append);
    let run_dir = ctx.cache.run_dir(arch)?;
    let out = boot(
        ctx,
        b,
        &run_dir,
        &append,
        boot_args.timeout,
        want_render,
        false,
    )?;
    let expected = expected_suites(suites_text, arch);
    let r = rows_for(arch, &out, &expected, pattern, want_render);
    details.extend(out.problems(arch));
    if r.iter().any(|r| r.failed > 0) {
        details.push(format!("{arch}: serial log {}", out.log_path.display()));
    }
    if let Some(p) = &out.screenshot {
        details.push(format!("{arch}: screendump {}", p.display()));
    }
    details.push(format!(
        "{arch}: boot took {}",
        ui::fmt_duration(out.duration)
    ));
    if let Some(l) = out
        .log
        .lines()
        .find_map(|l| l.split("virtgpu-rs: lockdep ").nth(1))
    {
        details.push(format!("{arch}: after the test boot, lockdep {}", l.trim()));
    }
    rows.extend(r);

    Ok(())
}

/// The expected-splat boots of `arch` (`kunit/splats.toml`), one row each.
#[allow(clippy::too_many_arguments)]
fn splat_boots(
    ctx: &Ctx,
    main: &Built,
    arch: &str,
    boot_args: &BootArgs,
    pattern: &Option<glob::Pattern>,
    cases: &[splat_cases::Case],
    rows: &mut Vec<Row>,
    details: &mut Vec<String>,
) -> Result<()> {
    let mut variants: Vec<(String, Built)> = Vec::new();
    for case in cases.iter().filter(|c| c.runs_on(arch)) {
        let row_name = format!("splat:{}", case.name);
        if pattern.as_ref().is_some_and(|p| !p.matches(&row_name)) {
            continue;
        }
        let b = match &case.variant {
            None => main,
            Some(v) => {
                if !variants.iter().any(|(n, _)| n == v) {
                    variants.push((v.clone(), build_arch(ctx, arch, Some(v))?));
                }
                &variants
                    .iter()
                    .find(|(n, _)| n == v)
                    .context("variant just built")?
                    .1
            }
        };
        let mut append = case.append();
        if !boot_args.append.is_empty() {
            append = format!("{append} {}", boot_args.append);
        }
        let run_dir = ui::ensure_dir(
            ctx.cache
                .run_dir(arch)?
                .join(format!("splat-{}", case.name)),
        )?;
        let out = boot(ctx, b, &run_dir, &append, boot_args.timeout, false, false)?;
        let saved = out.log_path.clone();
        let verdict = case.judge(&out.log, &out.splats, out.error.as_deref());
        let ok = verdict.is_ok();
        if !ok {
            details.push(format!(
                "{arch}: splat case {}: serial log {}",
                case.name,
                saved.display()
            ));
        }
        rows.push(Row {
            arch: arch.into(),
            name: row_name,
            passed: ok as usize,
            failed: (!ok) as usize,
            skipped: 0,
            note: match verdict {
                Ok(s) => format!("ok: {s}"),
                Err(e) => format!("FAILED: {e}"),
            },
        });
    }
    Ok(())
}

/// `cargo xtask test`.
pub fn test(
    cache_dir: Option<PathBuf>,
    kernel_src: Option<PathBuf>,
    boot_args: BootArgs,
    filter: Option<String>,
) -> Result<i32> {
    let arches = machine::arches(boot_args.arch.as_deref().unwrap_or("all"))?;
    let pattern = match &filter {
        Some(f) => Some(
            glob::Pattern::new(f).with_context(|| format!("--filter {f:?} is not a valid glob"))?,
        ),
        None => None,
    };
    let want_render = pattern.as_ref().is_none_or(|p| p.matches("render"));
    let suites_text = std::fs::read_to_string(paths::project_root().join("kunit/suites.txt"))
        .context("reading kunit/suites.txt")?;
    let started = std::time::Instant::now();
    let ctx = prepare(cache_dir, kernel_src, &boot_args)?;

    let cases = splat_cases::load(&ctx.project)?;
    let mut rows = Vec::new();
    let mut details = Vec::new();
    for arch in &arches {
        let b = build_arch(&ctx, arch, None)?;
        let run_main = pattern
            .as_ref()
            .is_none_or(|p| !p.as_str().starts_with("splat:"));
        if run_main {
            main_boot(
                &ctx,
                &b,
                arch,
                &boot_args,
                &filter,
                &pattern,
                want_render,
                &suites_text,
                &mut rows,
                &mut details,
            )?;
        }
        splat_boots(
            &ctx,
            &b,
            arch,
            &boot_args,
            &pattern,
            &cases,
            &mut rows,
            &mut details,
        )?;
        // One architecture is enough to compare code generation, and the
        // variant and pristine builds it needs cost CI minutes.
        let codegen_row = "arc_off_codegen";
        if arch == "x86_64" && pattern.as_ref().is_none_or(|p| p.matches(codegen_row)) {
            let off = build_arch(&ctx, arch, Some(ARC_OFF_VARIANT))?;
            let v = ctx.arc_off_codegen(&off.machine, &off.kernel)?;
            rows.push(Row {
                arch: arch.clone(),
                name: codegen_row.into(),
                passed: v.ok as usize,
                failed: (!v.ok) as usize,
                skipped: 0,
                note: if v.ok {
                    format!("ok: {}", v.summary)
                } else {
                    format!("FAILED: {}", v.summary)
                },
            });
        }
    }

    println!();
    println!(
        "{:<8} {:<44} {:>6} {:>6} {:>6}  result",
        "arch", "suite", "pass", "fail", "skip"
    );
    for r in &rows {
        println!(
            "{:<8} {:<44} {:>6} {:>6} {:>6}  {}",
            r.arch, r.name, r.passed, r.failed, r.skipped, r.note
        );
    }
    println!();
    for d in &details {
        println!("{d}");
    }
    let (p, f, s) = rows.iter().fold((0, 0, 0), |a, r| {
        (a.0 + r.passed, a.1 + r.failed, a.2 + r.skipped)
    });
    println!("total time {}", ui::fmt_duration(started.elapsed()));
    if s > 0 {
        println!("{p} passed, {f} failed, {s} skipped");
    } else {
        println!("{p} passed, {f} failed");
    }
    Ok(if f == 0 { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arc_bench_lines_are_parsed() {
        let log = "[    2.0] rust_arc_lockdep_bench: arc_bench: clone_drop ns=48\n[    2.1] arc_bench: done\nnoise ns=3\n";
        assert_eq!(parse_arc_bench(log), vec![("clone_drop".to_string(), 48.0)]);
    }

    #[test]
    fn bench_lines_are_parsed() {
        let log = "[ 3.1] rust_ww_mutex_bench: ww_bench: lock_unlock rust_ns=812 c_ns=790\n\
                   [ 3.2] ww_bench: lock_all_16 rust_ns=9000 c_ns=8800\n\
                   [ 3.3] ww_bench: broken rust_ns=x\n";
        let v = parse_bench(log);
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0],
            BenchLine {
                case: "lock_unlock".into(),
                rust_ns: 812.0,
                c_ns: 790.0
            }
        );
        assert_eq!(v[1].case, "lock_all_16");
    }

    #[test]
    fn expected_suites_respect_arch_prefix() {
        let t = "# c\nall_a\nx86_64: only_x\narm64:only_arm\n";
        assert_eq!(expected_suites(t, "x86_64"), ["all_a", "only_x"]);
        assert_eq!(expected_suites(t, "arm64"), ["all_a", "only_arm"]);
    }

    fn outcome(log: &str) -> BootOutcome {
        BootOutcome {
            log: log.into(),
            splats: splat::detect(log),
            log_path: "/x".into(),
            render: None,
            screenshot: None,
            error: None,
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn missing_suite_and_missing_init_fail() {
        let log = include_str!("../tests/fixtures/x86_64-boot-no-init.log");
        let rows = rows_for(
            "x86_64",
            &outcome(log),
            &["rust_doctests_kernel".into(), "absent".into()],
            &None,
            false,
        );
        let missing = rows.iter().find(|r| r.name == "absent").unwrap();
        assert_eq!(missing.failed, 1);
        let doc = rows
            .iter()
            .find(|r| r.name == "rust_doctests_kernel")
            .unwrap();
        assert_eq!((doc.passed, doc.failed), (360, 0));
        // That boot panicked for lack of an init: the boot row fails.
        let boot = rows.iter().find(|r| r.name == "boot").unwrap();
        assert_eq!(boot.failed, 1);
        assert!(boot.note.contains("panic"), "{}", boot.note);
    }

    #[test]
    fn filter_limits_rows() {
        let log = include_str!("../tests/fixtures/x86_64-boot-no-init.log");
        let f = Some(glob::Pattern::new("rust_net*").unwrap());
        let rows = rows_for(
            "x86_64",
            &outcome(log),
            &["rust_doctests_kernel".into()],
            &f,
            false,
        );
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["rust_netlink", "boot"]);
    }
}
