//! `cargo xtask bench`: the benchmark modules in the guest, Rust against
//! the same loops in C in one boot, and the Arc lockdep option on and off.

use std::path::PathBuf;

use anyhow::Result;
use virtgpu_protocol::Step;

use crate::boot::{self, Boot, BootOutcome, Builds, Driver};
use crate::machine;
use crate::ui;
use crate::BootArgs;

/// One benchmark result: ns per operation for Rust and C.
#[derive(Debug, PartialEq)]
pub struct BenchLine {
    pub case: String,
    pub rust_ns: f64,
    pub c_ns: f64,
}

/// The Rust-against-C benchmark modules: the prefix of their lines, what
/// their table calls a case, and the line that ends their run.
const RUST_VS_C: &[(&str, &str)] = &[
    ("ww_bench", "ww_mutex case"),
    ("fence_bench", "dma_fence/dma_resv case"),
];

/// Reads `<prefix>: <case> rust_ns=<n> c_ns=<n>` lines from a serial log.
pub fn parse_bench(log: &str, prefix: &str) -> Vec<BenchLine> {
    let marker = format!("{prefix}: ");
    let mut out = Vec::new();
    for line in log.lines() {
        let l = crate::ktap::strip_timestamp(line);
        // The last occurrence: the module name before it may end with the
        // prefix too (`rust_dma_fence_bench: fence_bench: ...`).
        let Some(rest) = l.rfind(marker.as_str()).map(|i| &l[i + marker.len()..]) else {
            continue;
        };
        let Some(case) = rest.split_whitespace().next() else {
            continue;
        };
        if let (Some(rust_ns), Some(c_ns)) = (field(rest, "rust_ns="), field(rest, "c_ns=")) {
            out.push(BenchLine {
                case: case.to_string(),
                rust_ns,
                c_ns,
            });
        }
    }
    out
}

/// The value of the first `<key><value>` word of `words` (`key` ends with `=`), if it parses.
fn field<T: std::str::FromStr>(words: &str, key: &str) -> Option<T> {
    words
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key))?
        .parse()
        .ok()
}

/// Reads `arc_bench: <case> ns=<n>` lines from a serial log.
pub fn parse_arc_bench(log: &str) -> Vec<(String, f64)> {
    parse_ns_lines(log, "arc_bench")
}

/// What follows `marker` on each line of a serial log that has it (time stamps stripped).
fn after_marker<'a>(log: &'a str, marker: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    log.lines()
        .filter_map(move |line| crate::ktap::strip_timestamp(line).split(marker).nth(1))
}

/// Reads `<prefix>: <case> ns=<n> [more=<m> ...]` lines from a serial log.
pub fn parse_ns_lines(log: &str, prefix: &str) -> Vec<(String, f64)> {
    let marker = format!("{prefix}: ");
    after_marker(log, &marker)
        .filter_map(|rest| {
            let case = rest.split_whitespace().next()?;
            Some((case.to_string(), field(rest, "ns=")?))
        })
        .collect()
}

/// Whether a benchmark boot went cleanly; prints what went wrong if not.
fn bench_boot_ok(
    arch: &str,
    out: &BootOutcome,
    steps: &[Step],
    done_marker: &str,
    found: bool,
) -> bool {
    for p in out.problems(arch) {
        println!("{p}");
    }
    let step_problems = out.guest.problems(steps, &out.log);
    for p in &step_problems {
        println!("{arch}: {}", p.summary);
    }
    let ok = out.log.contains(done_marker)
        && found
        && out.splats.is_empty()
        && out.error.is_none()
        && step_problems.is_empty();
    if !ok {
        println!(
            "{arch}: the benchmark did not complete cleanly (no {done_marker:?} or no results); serial log {}",
            out.log_path.display()
        );
    }
    ok
}

/// Guest timeout of a bench boot, in seconds. One boot runs every benchmark: arm64's under TCG
/// with KASAN took 588 s in one run and over 600 s in another, the timeout of a test boot; 1800
/// leaves room for a slower host.
const BENCH_TIMEOUT: u64 = 1800;

/// The variant kernel the Arc benchmark compares with.
pub const ARC_OFF_VARIANT: &str = "arc-lockdep-off";

/// The modules a benchmark boot loads (after the driver, if any).
const BENCH_MODULES: &[&str] = &[
    "rust_ww_mutex_bench",
    "rust_dma_fence_bench",
    "rust_arc_lockdep_bench",
    "rust_irq_lock_bench",
];

/// What the Arc lockdep integration adds to one case, against the floor
/// (the cost of one lockdep-tracked acquire and release in the same state).
#[derive(Debug, PartialEq)]
pub struct FloorRow {
    pub case: &'static str,
    /// ns per operation, option on minus option off.
    pub added: f64,
    /// ns of one lockdep acquire+release pair (test kernel).
    pub floor: f64,
}

impl FloorRow {
    /// The goal: at most one acquire+release pair more than without.
    pub fn met(&self) -> bool {
        self.added <= self.floor
    }
}

/// Pairs each Arc case with its floor case: nothing held, and one spinlock
/// held.
pub fn floor_rows(on: &[(String, f64)], off: &[(String, f64)]) -> Vec<FloorRow> {
    let get =
        |set: &[(String, f64)], case: &str| set.iter().find(|(c, _)| c == case).map(|(_, v)| *v);
    [
        ("clone_drop", "lockdep_pair"),
        ("clone_drop_holding_lock", "lockdep_pair_holding_lock"),
    ]
    .into_iter()
    .filter_map(|(case, floor)| {
        Some(FloorRow {
            case,
            added: get(on, case)? - get(off, case)?,
            floor: get(on, floor)?,
        })
    })
    .collect()
}

/// The guest program that times the uapi paths under a driver.
const DRIVER_BENCH: &str = "drm-bench";

/// One run of [`DRIVER_BENCH`]: (case, ns per operation), in the order printed.
pub type Round = Vec<(String, f64)>;

/// Reads `drm_bench: <case> ns=<n>` lines (the output of one run of [`DRIVER_BENCH`]).
pub fn parse_driver_bench(lines: &[&str]) -> Round {
    parse_ns_lines(&lines.join("\n"), "drm_bench")
}

/// Rounds of [`DRIVER_BENCH`] per driver, alternating C and Rust, so that a slow spell of the
/// host hits both drivers alike; each case is judged on its median.
const DRIVER_ROUNDS: usize = 9;

/// The steps that run [`DRIVER_BENCH`] under each driver, [`DRIVER_ROUNDS`] times, leaving no
/// driver loaded. The driver that goes first alternates from round to round (C first in the
/// first), so that neither always runs on a freshly booted or a just-unloaded device.
fn driver_bench_steps() -> Vec<Step> {
    let under = |d: Driver| {
        [
            d.load(),
            Step::Run {
                program: DRIVER_BENCH.into(),
                args: vec![d.name().into()],
            },
            d.unload(),
        ]
    };
    (0..DRIVER_ROUNDS)
        .flat_map(|i| {
            let (first, second) = if i % 2 == 0 {
                (Driver::C, Driver::Rust)
            } else {
                (Driver::Rust, Driver::C)
            };
            under(first).into_iter().chain(under(second))
        })
        .collect()
}

/// The median of `xs` (the mean of the middle two for an even count); NaN if empty.
fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One driver case over the rounds: each driver's median, their ratio, the lowest and
/// highest ratio of one round (round `i` of Rust against round `i` of C), and in how many of
/// those pairs Rust was faster.
#[derive(Debug, PartialEq)]
pub struct DriverCase {
    pub case: String,
    pub rust_ns: f64,
    pub c_ns: f64,
    pub ratio: f64,
    pub round_ratios: (f64, f64),
    pub rounds: usize,
    pub rust_faster: usize,
}

/// How a case stands against the goal (Rust at or above C: ratio <= 1).
#[derive(Debug, PartialEq, Clone, Copy)]
pub enum Verdict {
    /// The ratio of the medians is at most 1.
    Met,
    /// The ratio is above 1, but the paired rounds do not tell the drivers apart: a one-sided
    /// sign test gives Rust's count of faster rounds a probability above [`SIGN_TEST_LEVEL`]
    /// were the drivers equal.
    Tie,
    /// The ratio is above 1 and Rust lost so many rounds that equal drivers would do so with a
    /// probability of at most [`SIGN_TEST_LEVEL`].
    Slower,
}

/// The level of the sign test of [`Verdict`].
pub const SIGN_TEST_LEVEL: f64 = 0.05;

impl Verdict {
    /// A ratio against its goal (at most 1), `won` of `rounds` paired rounds having gone the
    /// goal's way. No rounds, or no ratio, is `Slower`: no evidence is no pass.
    pub fn of(ratio: f64, won: usize, rounds: usize) -> Verdict {
        if rounds == 0 || ratio.is_nan() {
            return Verdict::Slower;
        }
        if ratio <= 1.0 {
            return Verdict::Met;
        }
        if binomial_half_cdf(won, rounds) <= SIGN_TEST_LEVEL {
            Verdict::Slower
        } else {
            Verdict::Tie
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::Tie => "tie",
            Self::Slower => "SLOWER",
        }
    }
}

/// The probability of at most `k` successes in `n` fair coin tosses.
fn binomial_half_cdf(k: usize, n: usize) -> f64 {
    // C(n, i) built up term by term; n is a handful of rounds, so f64 is exact enough.
    let mut term = 1.0;
    let mut sum = 0.0;
    for i in 0..=k.min(n) {
        if i > 0 {
            term = term * (n + 1 - i) as f64 / i as f64;
        }
        sum += term;
    }
    sum / 2f64.powi(n as i32)
}

impl DriverCase {
    /// The case against the goal: see [`Verdict::of`].
    pub fn verdict(&self) -> Verdict {
        Verdict::of(self.ratio, self.rust_faster, self.rounds)
    }
}

/// The `drm-bench` cases the issue sets a goal for (Rust at or above C): the display-info round
/// trip, a dumb buffer's create+map+destroy, a 4 MiB transfer, and a fenced command's round trip
/// to its waiter. The other cases are parts of these (`dumb_destroy`, `display_info_irq`, ...),
/// printed to explain them.
const GOAL_CASES: [&str; 4] = ["display_info", "dumb_cycle", "transfer_4mib", "create_wait"];

/// Whether `case` is one of the [`GOAL_CASES`].
pub fn is_goal_case(case: &str) -> bool {
    GOAL_CASES.contains(&case)
}

/// The pairs of `rust_irq_lock_bench` cases compared round by round (the sample's `PAIRS`, in
/// the same order): the first case, the second, a title, and whether the pair has a goal (the
/// first at most the second). The C control has none: it shows what the C functions cost on
/// this machine, without the Rust wrapper.
pub const IRQ_LOCK_PAIRS: [(&str, &str, &str, bool); 3] = [
    ("lock_with", "lock", "lock_with vs lock (Rust)", true),
    (
        "lock_with",
        "c_spin_lock",
        "lock_with vs spin_lock (C)",
        true,
    ),
    (
        "c_spin_lock",
        "c_spin_lock_irq_disable",
        "C control: spin_lock vs _irq_disable",
        false,
    ),
];

/// Reads `irqlock_bench: rounds <first>_vs_<other> won=<k> of=<n>`: in how many of its rounds
/// case `first` was faster than `other`.
pub fn parse_irq_lock_rounds(log: &str, first: &str, other: &str) -> Option<(usize, usize)> {
    let marker = format!("irqlock_bench: rounds {first}_vs_{other} ");
    let found = after_marker(log, &marker)
        .find_map(|rest| Some((field(rest, "won=")?, field(rest, "of=")?)));
    found
}

/// Sets the rounds of the Rust driver against those of C, case by case (in C's order). A case
/// only one driver reported keeps NaN for the other.
pub fn driver_cases(c: &[Round], rust: &[Round]) -> Vec<DriverCase> {
    let value = |round: &[(String, f64)], case: &str| {
        round.iter().find(|(k, _)| k == case).map(|(_, v)| *v)
    };
    let mut cases: Vec<&str> = Vec::new();
    for (case, _) in c.iter().flatten() {
        if !cases.contains(&case.as_str()) {
            cases.push(case);
        }
    }
    cases
        .into_iter()
        .map(|case| {
            let of = |runs: &[Vec<(String, f64)>]| -> Vec<f64> {
                runs.iter().filter_map(|r| value(r, case)).collect()
            };
            let (cs, rs) = (of(c), of(rust));
            let ratios: Vec<f64> = cs.iter().zip(&rs).map(|(c, r)| r / c).collect();
            let lo = ratios.iter().copied().fold(f64::NAN, f64::min);
            let hi = ratios.iter().copied().fold(f64::NAN, f64::max);
            let (c_ns, rust_ns) = (median(&cs), median(&rs));
            DriverCase {
                case: case.to_string(),
                rust_ns,
                c_ns,
                ratio: rust_ns / c_ns,
                round_ratios: (lo, hi),
                rounds: ratios.len(),
                rust_faster: ratios.iter().filter(|r| **r < 1.0).count(),
            }
        })
        .collect()
}

/// `cargo xtask bench`.
pub fn run(
    cache_dir: Option<PathBuf>,
    kernel_src: Option<PathBuf>,
    boot_args: BootArgs,
    driver: Option<Driver>,
) -> Result<i32> {
    let arches = machine::arches(boot_args.arch.as_deref().unwrap_or("x86_64"))?;
    let ctx = super::setup::prepare(cache_dir, kernel_src, &boot_args)?;
    let mut builds = Builds::default();
    let mut failed = false;
    let mut records = Vec::new();
    let mut steps = driver_bench_steps();
    steps.extend(driver.map(Driver::load));
    steps.extend(BENCH_MODULES.iter().map(|m| Step::Load {
        module: m.to_string(),
        params: Vec::new(),
    }));
    for arch in &arches {
        let run_dir = ctx.cache.run_dir(arch)?;
        let b = builds.get(&ctx, arch, None)?;
        let out = boot::boot(
            &ctx,
            b,
            &Boot::new(
                &run_dir,
                steps.clone(),
                format!("kunit.enable=0 {}", boot_args.append),
                boot_args.timeout_or(BENCH_TIMEOUT),
            ),
        )?;
        let arc_on = parse_arc_bench(&out.log);
        let irq_lock = parse_ns_lines(&out.log, "irqlock_bench");
        let irq_lock_rounds: Vec<Option<(usize, usize)>> = IRQ_LOCK_PAIRS
            .iter()
            .map(|(a, b, ..)| parse_irq_lock_rounds(&out.log, a, b))
            .collect();
        failed |= !bench_boot_ok(
            arch,
            &out,
            &steps,
            "irqlock_bench: done",
            irq_lock.len() == 4 && irq_lock_rounds.iter().all(Option::is_some),
        );
        for (prefix, _) in RUST_VS_C {
            let found = !parse_bench(&out.log, prefix).is_empty();
            failed |= !bench_boot_ok(arch, &out, &steps, &format!("{prefix}: done"), found);
        }
        failed |= !bench_boot_ok(arch, &out, &steps, "arc_bench: done", !arc_on.is_empty());
        let driver_runs: Vec<(Option<Driver>, Round)> = out
            .guest
            .runs
            .iter()
            .filter(|r| r.program == DRIVER_BENCH)
            .map(|r| (r.driver, parse_driver_bench(&r.output(&out.log))))
            .collect();
        let of = |d: Driver| -> Vec<Round> {
            driver_runs
                .iter()
                .filter(|(rd, v)| *rd == Some(d) && !v.is_empty())
                .map(|(_, v)| v.clone())
                .collect()
        };
        let (c_rounds, rust_rounds) = (of(Driver::C), of(Driver::Rust));
        let cases = driver_cases(&c_rounds, &rust_rounds);
        failed |= !bench_boot_ok(
            arch,
            &out,
            &steps,
            "drm_bench: done",
            c_rounds.len() == DRIVER_ROUNDS
                && rust_rounds.len() == DRIVER_ROUNDS
                && cases.iter().all(|c| c.rounds == DRIVER_ROUNDS),
        );

        // The option-off kernel is built without DRM: no driver there, so nothing that needs one.
        let off_steps: Vec<Step> = steps
            .iter()
            .filter(|s| match s {
                Step::Load { module, .. } | Step::Unload { module } => {
                    Driver::of_module(module).is_none()
                }
                Step::Run { program, .. } => program != DRIVER_BENCH,
            })
            .cloned()
            .collect();
        let off = builds.get(&ctx, arch, Some(ARC_OFF_VARIANT))?;
        let off_dir = ui::ensure_dir(run_dir.join(format!("bench-{ARC_OFF_VARIANT}")))?;
        let out_off = boot::boot(
            &ctx,
            off,
            &Boot::new(
                &off_dir,
                off_steps.clone(),
                format!("kunit.enable=0 {}", boot_args.append),
                boot_args.timeout_or(BENCH_TIMEOUT),
            ),
        )?;
        let arc_off = parse_arc_bench(&out_off.log);
        failed |= !bench_boot_ok(
            arch,
            &out_off,
            &off_steps,
            "arc_bench: done",
            !arc_off.is_empty(),
        );
        let clock = |o: &BootOutcome| o.guest.clocksource().unwrap_or("unknown").to_string();
        println!(
            "\n{arch}: clocksource {} (test kernel), {} ({ARC_OFF_VARIANT} kernel)",
            clock(&out),
            clock(&out_off)
        );

        for (kernel, log) in [("", &out.log), (" (arc-lockdep-off kernel)", &out_off.log)] {
            for (prefix, title) in RUST_VS_C {
                let lines = parse_bench(log, prefix);
                println!(
                    "\n{arch}{kernel} (TCG, debug config: PROVE_LOCKING, \
                     DEBUG_WW_MUTEX_SLOWPATH, DEBUG_KMEMLEAK, KASAN)"
                );
                println!(
                    "{:<26} {:>12} {:>12} {:>8}",
                    title, "rust ns/op", "c ns/op", "ratio"
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
                    "arch": arch, "clocksource": clock(&out), "kernel": if kernel.is_empty() { "test" } else { ARC_OFF_VARIANT },
                    "bench": prefix, "case": l.case, "rust_ns": l.rust_ns, "c_ns": l.c_ns, "ratio": ratio,
                }));
                }
            }
        }
        println!(
            "\n{arch}: the drivers' uapi paths from userspace ({DRIVER_BENCH}, C and Rust alternating \
             in one boot, {DRIVER_ROUNDS} rounds each, medians; goal: ratio <= 1; \
             won: rounds Rust was faster in; above 1, a one-sided sign test at \
             {SIGN_TEST_LEVEL} tells a tie from SLOWER; kind: a goal case, or a part of one \
             that explains it)"
        );
        println!(
            "{:<26} {:>12} {:>12} {:>8} {:>15} {:>5} {:>7} {:>5}",
            "driver case",
            "rust ns/op",
            "c ns/op",
            "ratio",
            "round ratios",
            "won",
            "verdict",
            "kind"
        );
        for c in &cases {
            let (lo, hi) = c.round_ratios;
            println!(
                "{:<26} {:>12.0} {:>12.0} {:>8.3} {:>7.3}-{:<7.3} {:>5} {:>7} {:>5}",
                c.case,
                c.rust_ns,
                c.c_ns,
                c.ratio,
                lo,
                hi,
                format!("{}/{}", c.rust_faster, c.rounds),
                c.verdict().name(),
                if is_goal_case(&c.case) {
                    "goal"
                } else {
                    "part"
                }
            );
            records.push(serde_json::json!({
                "arch": arch, "clocksource": clock(&out), "bench": "drm_bench", "case": c.case,
                "rust_ns": c.rust_ns, "c_ns": c.c_ns, "ratio": c.ratio,
                "round_ratio_min": lo, "round_ratio_max": hi, "rounds": c.rounds,
                "rust_faster_rounds": c.rust_faster, "verdict": c.verdict().name(),
                "goal": is_goal_case(&c.case),
            }));
        }
        let ns_of = |case: &str| irq_lock.iter().find(|(c, _)| c == case).map(|(_, v)| *v);
        println!(
            "\n{arch}: a SpinLockIrq taken in hard IRQ (rust_irq_lock_bench with the C loops of \
             irq_lock_bench_c in the same blocks; best round of each; goal: the first at most \
             the second; won: rounds the first was faster in, sign test as above)"
        );
        println!(
            "{:<38} {:>10} {:>10} {:>8} {:>5} {:>7}",
            "lock+unlock pair", "first ns", "second ns", "ratio", "won", "goal"
        );
        for ((first, other, title, has_goal), rounds) in
            IRQ_LOCK_PAIRS.into_iter().zip(&irq_lock_rounds)
        {
            let (Some(a), Some(b)) = (ns_of(first), ns_of(other)) else {
                continue;
            };
            let (won, rounds) = rounds.unwrap_or((0, 0));
            let verdict = Verdict::of(a / b, won, rounds);
            let goal = if has_goal { verdict.name() } else { "-" };
            println!(
                "{title:<38} {a:>10.1} {b:>10.1} {:>8.3} {:>5} {goal:>7}",
                a / b,
                format!("{won}/{rounds}"),
            );
            records.push(serde_json::json!({
                "arch": arch, "clocksource": clock(&out), "bench": "irq_lock",
                "case": format!("{first}_vs_{other}"), "first_ns": a, "second_ns": b,
                "ratio": a / b, "first_faster_rounds": won, "rounds": rounds,
                "verdict": if has_goal { Some(verdict.name()) } else { None },
            }));
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
                "arch": arch, "clocksource": clock(&out), "bench": "arc_lockdep", "case": case, "off_ns": off, "on_ns": on, "ratio": ratio,
            }));
        }
        println!(
            "\nArc cost against the floor (one lockdep-tracked acquire+release, test kernel; goal: added <= floor)"
        );
        println!(
            "{:<26} {:>12} {:>12} {:>8}",
            "case", "added ns", "floor ns", "met"
        );
        for f in floor_rows(&arc_on, &arc_off) {
            println!(
                "{:<26} {:>12.0} {:>12.0} {:>8}",
                f.case,
                f.added,
                f.floor,
                if f.met() { "yes" } else { "no" }
            );
            records.push(serde_json::json!({
                "arch": arch, "bench": "arc_floor", "case": f.case, "added_ns": f.added, "floor_ns": f.floor, "met": f.met(),
            }));
        }
    }
    let json = ctx.cache.dir.join("run/bench.json");
    std::fs::write(&json, serde_json::to_string_pretty(&records)?)?;
    println!("\nresults: {}", json.display());
    Ok(if failed { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arc_cases_are_held_against_their_floor() {
        let v = |xs: &[(&str, f64)]| {
            xs.iter()
                .map(|(c, n)| (c.to_string(), *n))
                .collect::<Vec<_>>()
        };
        let on = v(&[
            ("clone_drop", 50.0),
            ("clone_drop_holding_lock", 300.0),
            ("lockdep_pair", 100.0),
            ("lockdep_pair_holding_lock", 150.0),
        ]);
        let off = v(&[("clone_drop", 40.0), ("clone_drop_holding_lock", 80.0)]);
        let rows = floor_rows(&on, &off);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].added, rows[0].floor, rows[0].met()),
            (10.0, 100.0, true)
        );
        assert_eq!(
            (rows[1].added, rows[1].floor, rows[1].met()),
            (220.0, 150.0, false)
        );
        // A case missing on either kernel gives no row, not a pass.
        assert!(floor_rows(&on, &[]).is_empty());
    }

    #[test]
    fn driver_bench_lines_are_parsed() {
        let lines = [
            "drm_bench: dumb_cycle ns=1200",
            "drm_bench: transfer_4mib ns=90000 mb_per_s=44.4",
            "drm_bench: done",
            "drm_bench: broken ns=x",
        ];
        assert_eq!(
            parse_driver_bench(&lines),
            vec![
                ("dumb_cycle".to_string(), 1200.0),
                ("transfer_4mib".to_string(), 90000.0)
            ]
        );
    }

    #[test]
    fn driver_cases_take_medians_over_rounds() {
        let round = |xs: &[(&str, f64)]| {
            xs.iter()
                .map(|(c, n)| (c.to_string(), *n))
                .collect::<Vec<_>>()
        };
        let c = vec![
            round(&[("a", 100.0), ("b", 10.0)]),
            round(&[("a", 300.0), ("b", 10.0)]),
            round(&[("a", 200.0), ("b", 10.0)]),
        ];
        let rust = vec![
            round(&[("a", 110.0), ("b", 5.0)]),
            round(&[("a", 150.0), ("b", 20.0)]),
            round(&[("a", 1000.0)]),
        ];
        let cases = driver_cases(&c, &rust);
        assert_eq!(cases.len(), 2);
        // Medians: C 200, Rust 150 (not the means, 200 and 420).
        assert_eq!((cases[0].c_ns, cases[0].rust_ns), (200.0, 150.0));
        assert_eq!(cases[0].ratio, 0.75);
        assert_eq!(cases[0].round_ratios, (0.5, 5.0));
        assert_eq!(cases[0].rounds, 3);
        // A round without the case counts as missing, and is seen in `rounds`.
        assert_eq!(
            (cases[1].c_ns, cases[1].rust_ns, cases[1].rounds),
            (10.0, 12.5, 2)
        );
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn driver_cases_above_one_are_sign_tested() {
        // Exact tails of 9 fair tosses: P(X <= 1) = 10/512, P(X <= 2) = 46/512.
        assert!((binomial_half_cdf(1, 9) - 10.0 / 512.0).abs() < 1e-12);
        assert!((binomial_half_cdf(2, 9) - 46.0 / 512.0).abs() < 1e-12);
        assert_eq!(binomial_half_cdf(9, 9), 1.0);
        let rounds = |c: &[f64], r: &[f64]| -> Vec<DriverCase> {
            let of = |xs: &[f64]| -> Vec<Round> {
                xs.iter().map(|n| vec![("a".to_string(), *n)]).collect()
            };
            driver_cases(&of(c), &of(r))
        };
        let c = [100.0; 9];
        // Faster in 2 of 9 rounds, slower by a median 10%: not told apart from equal.
        let tie = &rounds(
            &c,
            &[90.0, 95.0, 110.0, 110.0, 110.0, 110.0, 110.0, 120.0, 130.0],
        )[0];
        assert_eq!((tie.rust_faster, tie.rounds), (2, 9));
        assert_eq!(tie.verdict(), Verdict::Tie);
        // Faster in 1 of 9: equal drivers would do so with p = 0.02.
        let slower = &rounds(
            &c,
            &[90.0, 101.0, 101.0, 101.0, 101.0, 101.0, 101.0, 101.0, 101.0],
        )[0];
        assert_eq!(slower.rust_faster, 1);
        assert_eq!(slower.verdict(), Verdict::Slower);
        // At or below 1 is met whatever the rounds say.
        let met = &rounds(
            &c,
            &[
                100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0,
            ],
        )[0];
        assert_eq!((met.rust_faster, met.verdict()), (0, Verdict::Met));
        // No rounds is no pass.
        assert_eq!(rounds(&[], &[]).len(), 0);
        let none = DriverCase {
            case: "a".into(),
            rust_ns: f64::NAN,
            c_ns: 1.0,
            ratio: f64::NAN,
            round_ratios: (f64::NAN, f64::NAN),
            rounds: 0,
            rust_faster: 0,
        };
        assert_eq!(none.verdict(), Verdict::Slower);
    }

    #[test]
    fn irq_lock_rounds_are_parsed() {
        let log = "[ 1.0] rust_irq_lock_bench: irqlock_bench: lock_with ns=1400.2\n\
                   [ 1.1] rust_irq_lock_bench: irqlock_bench: rounds lock_with_vs_lock won=7 of=10\n\
                   [ 1.1] rust_irq_lock_bench: irqlock_bench: rounds lock_with_vs_c_spin_lock won=4 of=10\n";
        assert_eq!(
            parse_irq_lock_rounds(log, "lock_with", "lock"),
            Some((7, 10))
        );
        assert_eq!(
            parse_irq_lock_rounds(log, "lock_with", "c_spin_lock"),
            Some((4, 10))
        );
        assert_eq!(parse_irq_lock_rounds(log, "lock", "c_spin_lock"), None);
        assert_eq!(
            parse_irq_lock_rounds(
                "irqlock_bench: rounds lock_with_vs_lock won=7",
                "lock_with",
                "lock"
            ),
            None
        );
        // Ten rounds: lock_with faster in 1 is SLOWER (p = 11/1024), in 2 a tie (p = 56/1024).
        assert_eq!(Verdict::of(1.04, 1, 10), Verdict::Slower);
        assert_eq!(Verdict::of(1.04, 2, 10), Verdict::Tie);
        assert_eq!(Verdict::of(0.9, 0, 10), Verdict::Met);
        assert_eq!(Verdict::of(0.9, 0, 0), Verdict::Slower);
    }

    #[test]
    fn arc_bench_lines_are_parsed() {
        let log = "[    2.0] rust_arc_lockdep_bench: arc_bench: clone_drop ns=48\n[    2.1] arc_bench: done\nnoise ns=3\n";
        assert_eq!(parse_arc_bench(log), vec![("clone_drop".to_string(), 48.0)]);
    }

    #[test]
    fn bench_lines_are_parsed() {
        let log = "[ 3.1] rust_ww_mutex_bench: ww_bench: lock_unlock rust_ns=812 c_ns=790\n\
                   [ 3.2] ww_bench: lock_all_16 rust_ns=9000 c_ns=8800\n\
                   [ 3.3] ww_bench: broken rust_ns=x\n\
                   [ 3.4] rust_dma_fence_bench: fence_bench: fence_signal rust_ns=300 c_ns=290\n";
        let v = parse_bench(log, "ww_bench");
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
        let f = parse_bench(log, "fence_bench");
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].rust_ns, f[0].c_ns), (300.0, 290.0));
    }
}
