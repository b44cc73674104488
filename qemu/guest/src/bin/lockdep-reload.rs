//! Loads and unloads a module that makes implicit lock classes, many
//! times, and checks that lockdep's class count does not grow with the
//! count: the classes of an unloaded module are unregistered, and a reload
//! reuses their entries.
//!
//! Usage: `lockdep-reload [module] [cycles]` (defaults:
//! `rust_implicit_class_reload`, 50). After every unload, no class named
//! after the module's source file may be left in /proc/lockdep, and after
//! a warm-up, lock-classes in /proc/lockdep_stats may grow only by classes
//! of other code that appeared meanwhile (listed). Reports KTAP (suite
//! `lockdep_reload`, one case per check, the counts as diagnostics); exits
//! 0 only when every case passed.

use std::process::ExitCode;

use virtgpu_guest::run;
use virtgpu_protocol::ktap::Suite;

/// The "lock-classes:" figure of /proc/lockdep_stats.
fn lock_classes() -> Result<u64, String> {
    let text = std::fs::read_to_string("/proc/lockdep_stats")
        .map_err(|e| format!("cannot read /proc/lockdep_stats: {e} (is CONFIG_LOCKDEP on?)"))?;
    text.lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix("lock-classes:")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .ok_or_else(|| "no lock-classes line in /proc/lockdep_stats".to_string())
}

/// The class names in /proc/lockdep (the last field of each class line).
fn class_names() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/lockdep").unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_hexdigit()) && l.contains(':'))
        .filter_map(|l| l.rsplit_once(": ").map(|(_, n)| n.trim().to_string()))
        .collect()
}

/// How many classes carry each name.
fn tally(names: &[String]) -> std::collections::HashMap<String, u64> {
    let mut m = std::collections::HashMap::new();
    for n in names {
        *m.entry(n.clone()).or_insert(0) += 1;
    }
    m
}

/// Cycles run before the count is compared: the first loads may make
/// classes of their own that stay (the loader's, first-time paths).
const WARM_UP: u32 = 5;

/// What one run saw.
struct Seen {
    /// lock-classes after each cycle.
    counts: Vec<u64>,
    /// The largest number of the module's own lock classes left after an
    /// unload (its `Arc` classes, named `arc:...`, stay by design).
    leftover: usize,
    /// The smallest number of them while it was loaded.
    while_loaded: usize,
}

/// Loads and unloads `module` `cycles` times and reports the suite's cases.
fn check(k: &mut Suite, module: &str, source: &str, cycles: u32) -> Result<(), String> {
    let before = lock_classes()?;
    let mut seen = Seen {
        counts: Vec::new(),
        leftover: 0,
        while_loaded: usize::MAX,
    };
    let mut names_after_warm_up = Vec::new();
    let ours = |names: &[String]| names.iter().filter(|n| n.contains(source)).count();
    for i in 1..=cycles {
        run("modprobe", &[module])?;
        seen.while_loaded = seen.while_loaded.min(ours(&class_names()));
        run("rmmod", &[module])?;
        seen.counts.push(lock_classes()?);
        let names = class_names();
        // The classes of `Arc`s stay registered (an `Arc` may outlive its
        // module); reloading reuses them, which the counts check.
        seen.leftover = seen.leftover.max(
            names
                .iter()
                .filter(|n| n.contains(source) && !n.starts_with("arc:"))
                .count(),
        );
        if i == WARM_UP {
            names_after_warm_up = names;
        }
    }
    k.pass("load_unload_cycles");
    let at = |n: u32| seen.counts[(n - 1) as usize];
    k.diag(&format!(
        "lock-classes before={before} after 1 cycle={} after {WARM_UP}={} after {cycles}={}; \
         classes of {source} while loaded: {}, left after an unload: {}",
        at(1),
        at(WARM_UP),
        at(cycles),
        seen.while_loaded,
        seen.leftover
    ));
    if seen.while_loaded == 0 {
        k.fail(
            "classes_registered_while_loaded",
            &format!("no class of {source} was registered while the module was loaded"),
        );
    } else {
        k.pass("classes_registered_while_loaded");
    }
    if seen.leftover != 0 {
        k.fail(
            "classes_released_on_unload",
            &format!("classes of {source} stayed registered after the module unloaded"),
        );
    } else {
        k.pass("classes_released_on_unload");
    }
    // Other kernel code may register classes meanwhile (a timer's first
    // run, say); only growth those do not explain counts against reloads.
    // Names are not unique (two keys may share one), so compare counts.
    let mut added = tally(&class_names());
    for (name, n) in tally(&names_after_warm_up) {
        if let Some(now) = added.get_mut(&name) {
            *now = now.saturating_sub(n);
        }
    }
    let explained: u64 = added.values().sum();
    let unrelated: Vec<String> = added
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| {
            if n > 1 {
                format!("{name} (x{n})")
            } else {
                name
            }
        })
        .collect();
    let grew = at(cycles).saturating_sub(at(WARM_UP));
    if !unrelated.is_empty() {
        k.diag(&format!(
            "class(es) of other code appeared meanwhile: {}",
            unrelated.join(" | ")
        ));
    }
    if grew > explained {
        k.fail(
            "class_count_flat_after_warm_up",
            &format!(
                "the class count grew by {grew} after the warm-up, only {explained} of them other code's"
            ),
        );
    } else {
        k.pass("class_count_flat_after_warm_up");
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let module = args
        .next()
        .unwrap_or_else(|| "rust_implicit_class_reload".into());
    let cycles = args
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(50u32)
        .max(WARM_UP + 1);
    // The module's classes are named after its source file.
    let source = format!("{module}.rs:");
    let mut k = Suite::start("lockdep_reload", Some(4));
    if let Err(e) = check(&mut k, &module, &source, cycles) {
        k.fail("load_unload_cycles", &e);
    }
    if k.finish() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
