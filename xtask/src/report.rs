//! Results: one [`Verdict`] type for every check, one [`Row`] per suite or
//! check, and the table `cargo xtask test` (and `igt`) prints.

use std::time::Duration;

use crate::ktap::{Outcome, Suite};
use crate::ui;

/// The outcome of one check that is not a KTAP suite (render, codegen, an
/// expected-splat boot, a differential comparison): pass or fail, and a line
/// saying what was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    pub summary: String,
}

impl Verdict {
    pub fn pass(summary: impl Into<String>) -> Verdict {
        Verdict {
            ok: true,
            summary: summary.into(),
        }
    }

    pub fn fail(summary: impl Into<String>) -> Verdict {
        Verdict {
            ok: false,
            summary: summary.into(),
        }
    }
}

/// One row of the results table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub arch: String,
    /// The driver loaded when the row's results were produced (`c`, `rust`),
    /// `-` when none was.
    pub driver: String,
    pub name: String,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub note: String,
}

impl Row {
    /// A row of one pass or one failure.
    pub fn verdict(arch: &str, driver: &str, name: &str, v: &Verdict) -> Row {
        Row {
            arch: arch.into(),
            driver: driver.into(),
            name: name.into(),
            passed: v.ok as usize,
            failed: (!v.ok) as usize,
            skipped: 0,
            note: format!("{}: {}", if v.ok { "ok" } else { "FAILED" }, v.summary),
        }
    }

    /// The row of a KTAP suite.
    pub fn suite(arch: &str, driver: &str, s: &Suite) -> Row {
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
        Row {
            arch: arch.into(),
            driver: driver.into(),
            name: s.name.clone(),
            passed: p,
            failed: f,
            skipped: k,
            note,
        }
    }
}

/// The rows and the details printed below them.
#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub details: Vec<String>,
}

impl Report {
    pub fn totals(&self) -> (usize, usize, usize) {
        self.rows.iter().fold((0, 0, 0), |a, r| {
            (a.0 + r.passed, a.1 + r.failed, a.2 + r.skipped)
        })
    }

    /// Prints the table, the details and the totals; the exit status.
    pub fn print(&self, elapsed: Duration) -> i32 {
        println!();
        println!(
            "{:<8} {:<6} {:<44} {:>6} {:>6} {:>6}  result",
            "arch", "driver", "suite", "pass", "fail", "skip"
        );
        for r in &self.rows {
            println!(
                "{:<8} {:<6} {:<44} {:>6} {:>6} {:>6}  {}",
                r.arch, r.driver, r.name, r.passed, r.failed, r.skipped, r.note
            );
        }
        println!();
        for d in &self.details {
            println!("{d}");
        }
        let (p, f, s) = self.totals();
        println!("total time {}", ui::fmt_duration(elapsed));
        if s > 0 {
            println!("{p} passed, {f} failed, {s} skipped");
        } else {
            println!("{p} passed, {f} failed");
        }
        if f == 0 {
            0
        } else {
            1
        }
    }
}
