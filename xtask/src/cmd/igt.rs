//! `cargo xtask igt`: IGT in an x86_64 guest under one driver, judged
//! against the driver's expectations in `qemu/igt/`.
//!
//! The list is `qemu/igt/ci.txt` (what `cargo xtask test` runs), a file
//! given with `--list`, or with `--full` every subtest of the test families
//! drm-ci runs for virtio_gpu (the IGT programs `qemu/packages.toml` puts in
//! the guest), enumerated on the host with `--list-subtests`. Tests matching
//! drm-ci's skips for virtio_gpu (from the kernel tree) or the driver's own
//! skips file are not run. `--shard I/N` runs every N-th test; each shard's
//! results are kept, and the table shows every shard of the same list run
//! so far. `--record` writes the driver's fails file from a complete run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use virtgpu_protocol::{CaseResult, Status, Step};

use crate::boot::{self, Boot, Builds, Driver};
use crate::build::Ctx;
use crate::igt::{self, Expectations, Item, Patterns};
use crate::paths;
use crate::report::{Report, Row, Verdict};
use crate::BootArgs;

/// The KTAP suite `test-runner` reports IGT under; its rows are judged
/// against the expectations, not taken from KTAP.
pub const SUITE: &str = "igt";
/// Where the list goes in the guest.
const GUEST_LIST: &str = "etc/vrs/igt.list";
/// drm-ci's skips for virtio_gpu, in the kernel tree.
const DRM_CI_SKIPS: &str = "drivers/gpu/drm/ci/xfails/virtio_gpu-none-skips.txt";

/// `cargo xtask igt`'s own options.
#[derive(clap::Args)]
pub struct IgtArgs {
    #[arg(long, value_enum, default_value = "c")]
    pub driver: Driver,
    /// A list of test@subtest names (default qemu/igt/ci.txt).
    #[arg(long, conflicts_with = "full")]
    pub list: Option<PathBuf>,
    /// Every subtest of the families drm-ci runs for virtio_gpu.
    #[arg(long)]
    pub full: bool,
    /// Run shard I of N (round robin), e.g. 2/8.
    #[arg(long)]
    pub shard: Option<String>,
    /// Seconds one test may run before it is killed (a timeout).
    #[arg(long, default_value_t = 120)]
    pub test_timeout: u64,
    /// Write the fails file of the driver from these results (every shard
    /// must have run).
    #[arg(long)]
    pub record: bool,
    /// Run the listed tests even when a skips file names them (to look at
    /// a test drm-ci skips, say kms_cursor_legacy).
    #[arg(long, conflicts_with = "record")]
    pub no_skips: bool,
    /// Boot nothing: judge the kept results of every shard of the list
    /// (with `--record`, record them).
    #[arg(long, conflicts_with = "shard")]
    pub combine: bool,
}

/// The tests not to run: drm-ci's skips and the driver's.
pub fn skips(ctx: &Ctx, driver: Driver) -> Result<Patterns> {
    let p = ctx.source.dir.join(DRM_CI_SKIPS);
    let mut s = match std::fs::read_to_string(&p) {
        Ok(t) => Patterns::parse(&t).with_context(|| format!("in {}", p.display()))?,
        // A user's tree may predate drm-ci.
        Err(_) => Patterns::empty(),
    };
    s.extend(Expectations::load(&igt_dir(ctx), driver.name())?.skips);
    Ok(s)
}

fn igt_dir(ctx: &Ctx) -> PathBuf {
    ctx.project.join("qemu/igt")
}

/// Every subtest of the IGT programs in `root` matching `programs`,
/// enumerated on the host with the packages' own loader (cached).
fn enumerate(root: &Path, programs: &[String]) -> Result<Vec<Item>> {
    let cache = root.with_file_name("subtests.txt");
    if let Ok(t) = std::fs::read_to_string(&cache) {
        return igt::read_list(&t);
    }
    let lib = root.join("usr/lib/x86_64-linux-gnu");
    let ld = lib.join("ld-linux-x86-64.so.2");
    let mut items = Vec::new();
    for g in programs {
        for p in glob::glob(&root.join(g).display().to_string())?.flatten() {
            let test = p
                .file_name()
                .context("a program without a name")?
                .to_string_lossy()
                .into_owned();
            let out = std::process::Command::new(&ld)
                .arg("--library-path")
                .arg(&lib)
                .arg(&p)
                .arg("--list-subtests")
                .output()
                .with_context(|| format!("running {} --list-subtests", p.display()))?;
            let text = String::from_utf8_lossy(&out.stdout);
            let subs: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            if subs.is_empty() {
                items.push(Item::parse(&test)?);
            }
            for s in subs {
                items.push(Item::parse(&format!("{test}@{s}"))?);
            }
        }
    }
    items.sort();
    let text: String = items.iter().map(|i| format!("{}\n", i.name())).collect();
    std::fs::write(&cache, text)?;
    Ok(items)
}

/// The steps and files that run `items` with `test-runner` in a boot.
pub fn boot_parts(items: &[Item], test_timeout: u64) -> (Step, (String, Vec<u8>)) {
    boot_parts_at(items, test_timeout, GUEST_LIST)
}

/// As [`boot_parts`], with the guest's list at `list` (relative to `/`), for
/// a second run in the same boot.
pub fn boot_parts_at(items: &[Item], test_timeout: u64, list: &str) -> (Step, (String, Vec<u8>)) {
    (
        Step::Run {
            program: "test-runner".into(),
            args: vec![SUITE.into(), format!("/{list}"), test_timeout.to_string()],
        },
        (list.into(), igt::guest_list(items).into_bytes()),
    )
}

/// Rows `igt:<test>` of `driver`'s run in a boot that ran the same tests
/// under C first: each must end as it did under C, or pass. A test C did
/// not run (filtered out) is judged against `c_exp`, the C baseline.
pub fn differential_rows(
    arch: &str,
    driver: Driver,
    items: &[Item],
    c_results: &[CaseResult],
    results: &[CaseResult],
    c_exp: &Expectations,
) -> Vec<Row> {
    rows_by_item(arch, driver, items, results, |r| {
        let got = r.status.name();
        let secs = r.millis as f64 / 1000.0;
        match c_results.iter().find(|c| c.case == r.case) {
            Some(c) if c.status == r.status => (true, format!("{got}, as under C ({secs:.1}s)")),
            Some(c) if r.status == Status::Pass => (
                true,
                format!("{got}, better than C's {} ({secs:.1}s)", c.status.name()),
            ),
            Some(c) => (
                false,
                format!(
                    "FAILED: {got}, but {} under C ({secs:.1}s)",
                    c.status.name()
                ),
            ),
            None => {
                let j = c_exp.judge(r);
                (
                    j.ok(),
                    format!("{} (C not run: judged by its baseline)", j.note()),
                )
            }
        }
    })
}

/// Rows `igt:<test>` judged against `exp`; a listed test without a result
/// fails (the guest died or the runner stopped).
pub fn judged_rows(
    arch: &str,
    driver: Driver,
    items: &[Item],
    results: &[CaseResult],
    exp: &Expectations,
) -> Vec<Row> {
    rows_by_item(arch, driver, items, results, |r| {
        let j = exp.judge(r);
        (j.ok(), j.note())
    })
}

/// One row `igt:<test>` per item, from its result and `verdict` on it
/// (whether it is fine, and the note); an item without a result fails.
fn rows_by_item(
    arch: &str,
    driver: Driver,
    items: &[Item],
    results: &[CaseResult],
    verdict: impl Fn(&CaseResult) -> (bool, String),
) -> Vec<Row> {
    let mut rows = Vec::new();
    for item in items {
        let name = item.name();
        let row = format!("igt:{name}");
        let Some(r) = results.iter().find(|r| r.case == name) else {
            rows.push(Row::verdict(
                arch,
                driver.name(),
                &row,
                &Verdict::fail("no result: the guest or the runner stopped before this test"),
            ));
            continue;
        };
        let (ok, note) = verdict(r);
        let skipped = ok && r.status == Status::Skip;
        rows.push(Row {
            arch: arch.into(),
            driver: driver.name().into(),
            name: row,
            passed: (ok && !skipped) as usize,
            failed: (!ok) as usize,
            skipped: skipped as usize,
            note,
        });
    }
    rows
}

/// One shard's results, kept to be combined with the others.
#[derive(Serialize, Deserialize)]
struct ShardFile {
    index: usize,
    count: usize,
    items: Vec<String>,
    results: Vec<(String, String, u64)>,
    seconds: f64,
    /// The shard's `boot` row: `ok: ...` or `FAILED: ...`.
    #[serde(default)]
    boot: String,
    /// What it ran on (see [`build_identity`]).
    #[serde(default)]
    build: String,
}

/// A short hash of the kernel and initramfs a shard runs on, so results
/// from another build are not combined as if they were this one's.
fn build_identity(b: &boot::Built) -> Result<String> {
    Ok(paths::short_hash(&format!(
        "{}\n{}",
        paths::sha256_file(&b.kernel.image)?,
        paths::sha256_file(&b.initrd)?
    )))
}

fn counts(results: &[CaseResult]) -> String {
    Status::ALL
        .iter()
        .map(|s| {
            let n = results.iter().filter(|r| r.status == *s).count();
            format!("{} {n}", s.name().to_lowercase())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `cargo xtask igt`.
pub fn run(
    cache_dir: Option<PathBuf>,
    kernel_src: Option<PathBuf>,
    args: BootArgs,
    a: IgtArgs,
) -> Result<i32> {
    let arch = args.arch.clone().unwrap_or_else(|| "x86_64".into());
    if arch != "x86_64" {
        bail!("IGT runs on x86_64 only: Debian builds igt-gpu-tools for amd64 and i386 (see ../shared/notes/test-ecosystem.md)");
    }
    let started = Instant::now();
    let ctx = super::setup::prepare(cache_dir, kernel_src, &args)?;
    let mut builds = Builds::default();
    let b = builds.get(&ctx, &arch, None)?;
    let root = b
        .packages
        .as_ref()
        .and_then(|p| p.roots.get("igt"))
        .context("the guest packages have no `igt` set (qemu/packages.toml)")?
        .clone();
    let skip = if a.no_skips {
        Patterns::empty()
    } else {
        skips(&ctx, a.driver)?
    };
    let (source, all) = if a.full {
        let sets = crate::packages::sets(&ctx.project)?;
        let set = sets
            .iter()
            .find(|s| s.name == "igt")
            .context("no `igt` set in qemu/packages.toml")?;
        ("--full".to_string(), enumerate(&root, &set.programs)?)
    } else {
        let p = a
            .list
            .clone()
            .unwrap_or_else(|| igt_dir(&ctx).join("ci.txt"));
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        (
            p.display().to_string(),
            igt::read_list(&text).with_context(|| format!("in {}", p.display()))?,
        )
    };
    let listed = all.len();
    let all: Vec<Item> = all
        .into_iter()
        .filter(|i| !skip.matches(&i.name()))
        .collect();
    let (index, count) = match &a.shard {
        Some(s) => igt::parse_shard(s)?,
        None => (1, 1),
    };
    let items = igt::shard(&all, index, count);
    eprintln!(
        "  igt: {listed} tests in {source}, {} after skips, shard {index}/{count}: {} tests, {}s limit each",
        all.len(),
        items.len(),
        a.test_timeout
    );
    if items.is_empty() {
        bail!("the list selects no test (after skips and sharding)");
    }
    let key = paths::short_hash(&all.iter().map(Item::name).collect::<Vec<_>>().join("\n"));
    let shard_dir = crate::ui::ensure_dir(
        ctx.cache
            .dir
            .join(format!("run/igt/{}-{key}", a.driver.name())),
    )?;
    let mut report = Report::default();
    let count = if a.combine {
        shard_count(&shard_dir)?
    } else {
        let out = run_shard(&ctx, b, &args, &a, &items, index, count)?;
        let (results, excused) = igt::attributed(&out, &items);
        let br = super::test::boot_rows(&arch, &out, &run_steps(&a, &items), &[], None, &excused);
        let boot_note = br
            .rows
            .iter()
            .find(|r| r.name == "boot")
            .map_or_else(|| "FAILED: no boot row".into(), |r| r.note.clone());
        let file = ShardFile {
            index,
            count,
            items: items.iter().map(Item::name).collect(),
            results: results
                .iter()
                .map(|r| (r.case.clone(), r.status.name().to_string(), r.millis))
                .collect(),
            seconds: out.duration.as_secs_f64(),
            boot: boot_note,
            build: build_identity(b)?,
        };
        std::fs::write(
            shard_dir.join(format!("shard-{index}-of-{count}.json")),
            serde_json::to_string_pretty(&file)?,
        )?;
        report
            .rows
            .extend(br.rows.into_iter().filter(|r| r.name == "boot"));
        report.details.extend(out.problems(&arch));
        report.details.extend(br.details);
        report.details.push(format!(
            "igt ({} driver): this shard {index}/{count}: {} tests in {} ({}); serial log {}",
            a.driver.name(),
            results.len(),
            crate::ui::fmt_duration(out.duration),
            counts(&results),
            out.log_path.display()
        ));
        count
    };

    let mut combined_items = Vec::new();
    let mut combined = Vec::new();
    let mut present = Vec::new();
    let mut guest_seconds = 0.0;
    let this_build = build_identity(b)?;
    // One row a shard: it ran, its boot was clean, on this build.
    let mut shard_rows = Vec::new();
    for i in 1..=count {
        let p = shard_dir.join(format!("shard-{i}-of-{count}.json"));
        let row = format!("igt-shard:{i}/{count}");
        let Ok(text) = std::fs::read_to_string(&p) else {
            shard_rows.push(Row::verdict(
                &arch,
                a.driver.name(),
                &row,
                &Verdict::fail(format!("missing: run --shard {i}/{count}")),
            ));
            continue;
        };
        let f: ShardFile = serde_json::from_str(&text)?;
        let v = if !f.boot.starts_with("ok") {
            Verdict::fail(format!("its boot: {}", f.boot))
        } else if f.build != this_build {
            Verdict::fail("ran on another kernel or initramfs than this build: rerun it")
        } else {
            Verdict::pass(format!("{} results, {}", f.results.len(), f.boot))
        };
        shard_rows.push(Row::verdict(&arch, a.driver.name(), &row, &v));
        present.push(i);
        guest_seconds += f.seconds;
        for n in f.items {
            combined_items.push(Item::parse(&n)?);
        }
        for (case, st, millis) in f.results {
            if let Some(status) = Status::from_name(&st) {
                combined.push(CaseResult {
                    case,
                    status,
                    millis,
                });
            }
        }
    }
    combined_items.sort();

    let exp = Expectations::load(&igt_dir(&ctx), a.driver.name())?;
    let judged = judged_rows(&arch, a.driver, &combined_items, &combined, &exp);
    report.rows.splice(0..0, judged);
    let shards_ok = shard_rows.iter().all(|r| r.failed == 0);
    report.rows.extend(shard_rows);
    report.details.push(format!(
        "igt: shards present {}/{count}: {} of {} tests have results ({}); guest time {}",
        present.len(),
        combined.len(),
        all.len(),
        counts(&combined),
        crate::ui::fmt_duration(std::time::Duration::from_secs_f64(guest_seconds))
    ));
    if a.record {
        if !shards_ok || present.len() != count || combined.len() != all.len() {
            bail!(
                "--record needs every shard's results from clean boots of this build ({} of {count} shards, {} of {} tests; see the igt-shard rows); rerun those shards first",
                present.len(),
                combined.len(),
                all.len()
            );
        }
        let p = igt_dir(&ctx).join(format!("{}-fails.txt", a.driver.name()));
        std::fs::write(&p, igt::baseline(&combined))?;
        report.details.push(format!(
            "recorded {} expected non-passes in {}",
            exp_count(&p)?,
            p.display()
        ));
    }
    Ok(report.print(started.elapsed()))
}

/// The steps of an IGT boot.
fn run_steps(a: &IgtArgs, items: &[Item]) -> Vec<Step> {
    vec![a.driver.load(), boot_parts(items, a.test_timeout).0]
}

/// Boots once and runs `items`.
fn run_shard(
    ctx: &Ctx,
    b: &boot::Built,
    args: &BootArgs,
    a: &IgtArgs,
    items: &[Item],
    index: usize,
    count: usize,
) -> Result<boot::BootOutcome> {
    let (_, file) = boot_parts(items, a.test_timeout);
    // One directory a shard, so every shard's serial log is kept.
    let run_dir = crate::ui::ensure_dir(
        ctx.cache
            .run_dir(&b.machine.name)?
            .join(format!("igt-{}-shard-{index}-of-{count}", a.driver.name())),
    )?;
    // Each test is bounded; the boot gets the sum and some.
    let timeout = args
        .timeout()
        .max(items.len() as u64 * a.test_timeout + 300);
    boot::boot(
        ctx,
        b,
        &Boot {
            packages: true,
            files: vec![file],
            ..Boot::new(
                &run_dir,
                run_steps(a, items),
                format!("kunit.enable=0 {}", args.append),
                timeout,
            )
        },
    )
}

/// How many shards the kept results of a list were split into (the
/// newest shard file's N).
fn shard_count(dir: &Path) -> Result<usize> {
    let mut newest: Option<(std::time::SystemTime, usize)> = None;
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(n) = name
            .strip_suffix(".json")
            .and_then(|n| n.rsplit_once("-of-"))
            .and_then(|(_, n)| n.parse().ok())
        else {
            continue;
        };
        let t = e.metadata()?.modified()?;
        if newest.is_none_or(|(nt, _)| t > nt) {
            newest = Some((t, n));
        }
    }
    newest
        .map(|(_, n)| n)
        .with_context(|| format!("no kept results in {}: run the shards first", dir.display()))
}

fn exp_count(p: &Path) -> Result<usize> {
    Ok(igt::parse_fails(&std::fs::read_to_string(p)?)?.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::igt::tests::r;

    fn items(names: &[&str]) -> Vec<Item> {
        names.iter().map(|n| Item::parse(n).unwrap()).collect()
    }

    #[test]
    fn a_test_under_rust_ends_as_under_c_or_passes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c-fails.txt"), "t@failing,Fail\n").unwrap();
        let c_exp = Expectations::load(dir.path(), "c").unwrap();
        let list = items(&[
            "t@same",
            "t@better",
            "t@worse",
            "t@skipped",
            "t@warned",
            "t@c_not_run",
            "t@failing",
            "t@missing",
        ]);
        let c = [
            r("t@same", Status::Fail),
            r("t@better", Status::Fail),
            r("t@worse", Status::Pass),
            r("t@skipped", Status::Pass),
            r("t@warned", Status::Pass),
            r("t@missing", Status::Pass),
        ];
        let rust = [
            r("t@same", Status::Fail),
            r("t@better", Status::Pass),
            r("t@worse", Status::Fail),
            r("t@skipped", Status::Skip),
            r("t@warned", Status::Warn),
            r("t@c_not_run", Status::Pass),
            r("t@failing", Status::Fail),
        ];
        let rows = differential_rows("x86_64", Driver::Rust, &list, &c, &rust, &c_exp);
        let failed: Vec<&str> = rows
            .iter()
            .filter(|r| r.failed > 0)
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(
            failed,
            [
                "igt:t@worse",
                "igt:t@skipped",
                "igt:t@warned",
                "igt:t@missing"
            ]
        );
        assert!(rows.iter().all(|r| r.driver == "rust"));
        assert!(
            rows[1].note.contains("better than C's Fail"),
            "{}",
            rows[1].note
        );
        assert!(
            rows[2].note.contains("Fail, but Pass under C"),
            "{}",
            rows[2].note
        );
        assert!(rows[6].note.contains("baseline"), "{}", rows[6].note);
    }
}
