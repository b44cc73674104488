//! Expected-splat boots: the cases of `kunit/splats.toml` and how a boot's
//! serial log is judged against one.

use crate::splat::Splat;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::Path;
use virtgpu_protocol::Step;

/// One expected-splat case.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    /// The module `/init` loads (with `args`); it prints the case markers.
    #[serde(default)]
    pub module: Option<String>,
    #[serde(default)]
    pub args: String,
    /// A guest program `/init` runs after loading `module`, if any.
    #[serde(default)]
    pub run: Option<String>,
    /// KUnit suites (a glob) to run in this boot; every matching suite must
    /// report and pass. Without it KUnit is off.
    #[serde(default)]
    pub kunit: Option<String>,
    /// How many reports the log must hold (0: the pattern must stay silent).
    pub splats: usize,
    /// Strings the log must show, in order, between the case's markers.
    #[serde(default)]
    pub expect: Vec<String>,
    /// The case blocks forever after the report (a real deadlock), so only
    /// its start marker is required.
    #[serde(default)]
    pub hangs: bool,
    /// The name the module prints in its markers, when it differs from
    /// `name` (the same module case run on another kernel).
    #[serde(default)]
    pub marker: Option<String>,
    /// Boot a variant kernel (`qemu/config/variants/<name>.config`).
    #[serde(default)]
    pub variant: Option<String>,
    /// Architectures the case runs on (all when empty).
    #[serde(default)]
    pub arches: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    case: Vec<Case>,
}

/// Parses the text of `kunit/splats.toml`.
pub fn parse(text: &str) -> Result<Vec<Case>> {
    let f: File = toml::from_str(text)?;
    let mut seen = std::collections::HashSet::new();
    for c in &f.case {
        if !seen.insert(c.name.as_str()) {
            bail!("case {:?} is listed twice", c.name);
        }
        if c.splats > 0 && c.expect.is_empty() {
            bail!(
                "case {:?} expects a report but names nothing in it (`expect`)",
                c.name
            );
        }
        if c.module.is_none() && c.run.is_none() && c.kunit.is_none() {
            bail!(
                "case {:?} has no `module`, no program to `run` and no `kunit` suites",
                c.name
            );
        }
        if let Some(g) = &c.kunit {
            glob::Pattern::new(g)
                .with_context(|| format!("case {:?}: `kunit` {g:?} is not a valid glob", c.name))?;
        }
        if c.module.is_none() && c.kunit.is_none() && c.expect.is_empty() {
            bail!(
                "case {:?} has no module markers, so it needs `expect` lines to show it ran",
                c.name
            );
        }
    }
    Ok(f.case)
}

/// Reads `kunit/splats.toml` under `project`.
pub fn load(project: &Path) -> Result<Vec<Case>> {
    let p = project.join("kunit/splats.toml");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    parse(&text).with_context(|| format!("in {}", p.display()))
}

impl Case {
    /// Whether the case runs on `arch`.
    pub fn runs_on(&self, arch: &str) -> bool {
        self.arches.is_empty() || self.arches.iter().any(|a| a == arch)
    }

    /// KUnit's kernel argument for the case: its suites, or KUnit off.
    pub fn kunit_arg(&self) -> String {
        match &self.kunit {
            Some(g) => format!("kunit.filter_glob={g}"),
            None => "kunit.enable=0".to_string(),
        }
    }

    /// What `/init` does for the case: load the module, run the program.
    pub fn steps(&self) -> Vec<Step> {
        let mut steps = Vec::new();
        if let Some(module) = &self.module {
            steps.push(Step::Load {
                module: module.clone(),
                params: self.args.split_whitespace().map(str::to_string).collect(),
            });
        }
        if let Some(p) = &self.run {
            steps.push(Step::Run {
                program: p.clone(),
                args: Vec::new(),
            });
        }
        steps
    }

    fn marker(&self, what: &str) -> String {
        let name = self.marker.as_deref().unwrap_or(&self.name);
        format!("lockdep_splats: {name}: {what}")
    }

    /// Judges a finished boot: `Ok(summary)` if the log is what the case
    /// expects, else `Err(what is wrong)`.
    pub fn judge(
        &self,
        log: &str,
        splats: &[Splat],
        boot_error: Option<&str>,
    ) -> Result<String, String> {
        if let Some(e) = boot_error {
            return Err(format!("boot failed: {}", e.lines().next().unwrap_or("")));
        }
        if !crate::guest_log::GuestLog::read(log).init_done() {
            return Err("/init did not finish".into());
        }
        let region = if self.module.is_none() {
            log
        } else {
            let start = self.marker("start");
            let Some(from) = log.find(&start) else {
                return Err(format!(
                    "the case never started (no {start:?}; did the module load?)"
                ));
            };
            let done = self.marker("done");
            // A hanging case's report may be printed after its done marker.
            match log[from..].find(&done) {
                _ if self.hangs => &log[from..],
                Some(to) => &log[from..from + to],
                None => return Err(format!("the case did not finish (no {done:?})")),
            }
        };
        if let Some(g) = &self.kunit {
            let pattern = glob::Pattern::new(g).map_err(|e| format!("bad glob {g:?}: {e}"))?;
            let suites: Vec<_> = crate::ktap::parse(log)
                .into_iter()
                .filter(|s| pattern.matches(&s.name))
                .collect();
            if suites.is_empty() {
                return Err(format!("no KUnit suite matching {g:?} reported"));
            }
            let bad: Vec<&str> = suites
                .iter()
                .filter(|s| !matches!(s.outcome, crate::ktap::Outcome::Pass))
                .map(|s| s.name.as_str())
                .collect();
            if !bad.is_empty() {
                return Err(format!("KUnit suite(s) did not pass: {}", bad.join(", ")));
            }
        }
        if splats.len() != self.splats {
            let kinds: Vec<String> = splats
                .iter()
                .map(|s| format!("{} (line {})", s.kind, s.line))
                .collect();
            return Err(format!(
                "expected {} report(s), found {}{}{}",
                self.splats,
                splats.len(),
                if kinds.is_empty() { "" } else { ": " },
                kinds.join(", ")
            ));
        }
        let mut rest = region;
        for e in &self.expect {
            match rest.find(e.as_str()) {
                Some(i) => rest = &rest[i + e.len()..],
                None => {
                    return Err(format!(
                        "the report lacks {e:?} (after the earlier expected lines)"
                    ))
                }
            }
        }
        Ok(match self.splats {
            0 if self.kunit.is_some() => "suites passed, no report".into(),
            0 => "no report, as expected".into(),
            n => format!(
                "{n} report(s) ({}) with all {} expected lines",
                splats[0].kind,
                self.expect.len()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::splat;

    const CASE: &str = r#"
[[case]]
name = "two"
module = "m"
args = "case=2 x=1"
splats = 1
expect = ["possible recursive locking", "(A_acquire", "(A_acquire"]
"#;

    fn log(report: &str) -> String {
        format!(
            "[    1.0] virtgpu-rs: init start\n[    1.1] lockdep_splats: two: start\n{report}[    1.3] lockdep_splats: two: done\n[    1.4] virtgpu-rs: init done\n"
        )
    }

    const REPORT: &str = "[    1.2] ============================================\n[    1.2] WARNING: possible recursive locking detected\n[    1.2] x is trying to acquire lock:\n[    1.2] ffff (A_acquire){+.+.}-{0:0}, at: f\n[    1.2] but task is already holding lock:\n[    1.2] ffff (A_acquire){+.+.}-{0:0}, at: f\n";

    #[test]
    fn the_project_cases_parse() {
        let cases = load(&crate::paths::project_root()).unwrap();
        assert!(cases.len() >= 2);
    }

    #[test]
    fn parses_and_builds_the_command_line() {
        let c = &parse(CASE).unwrap()[0];
        assert_eq!(c.kunit_arg(), "kunit.enable=0");
        assert_eq!(Step::cmdline(&c.steps()), "vrs.steps=load:m:case=2:x=1");
        assert!(c.runs_on("arm64"));
        assert!(parse("[[case]]\nname='a'\nmodule='m'\nsplats=1\n").is_err());
        assert!(parse("[[case]]\nname='a'\nsplats=0\n").is_err());
        let r = &parse("[[case]]\nname='r'\nrun='p'\nsplats=0\nexpect=['p: ok']\n").unwrap()[0];
        assert_eq!(Step::cmdline(&r.steps()), "vrs.steps=run:p");
        let k = &parse("[[case]]\nname='k'\nkunit='rust_*'\nsplats=0\n").unwrap()[0];
        assert_eq!(k.kunit_arg(), "kunit.filter_glob=rust_*");
        assert!(k.steps().is_empty());
        let log = "KTAP version 1\n1..1\n    KTAP version 1\n    # Subtest: rust_a\n    1..1\n    ok 1 t\nok 1 rust_a\nvirtgpu-rs: init done\n";
        assert!(k.judge(log, &[], None).is_ok());
        let failing = log
            .replace("    ok 1 t", "    not ok 1 t")
            .replace("ok 1 rust_a", "not ok 1 rust_a");
        assert!(k.judge(&failing, &[], None).is_err());
        assert!(k.judge("virtgpu-rs: init done\n", &[], None).is_err());
        assert!(parse(&format!("{CASE}{CASE}")).is_err());
    }

    #[test]
    fn the_expected_report_passes() {
        let c = &parse(CASE).unwrap()[0];
        let l = log(REPORT);
        let s = splat::detect(&l);
        assert_eq!(s.len(), 1);
        assert!(c.judge(&l, &s, None).is_ok());
    }

    #[test]
    fn missing_wrong_or_extra_reports_fail() {
        let c = &parse(CASE).unwrap()[0];
        // No report at all.
        let l = log("");
        assert!(c
            .judge(&l, &splat::detect(&l), None)
            .unwrap_err()
            .contains("expected 1"));
        // A report naming other locks.
        let l = log(&REPORT.replace("A_acquire", "B_mutex"));
        assert!(c
            .judge(&l, &splat::detect(&l), None)
            .unwrap_err()
            .contains("lacks"));
        // The case never finished.
        let l = log(REPORT).replace("lockdep_splats: two: done", "");
        assert!(c
            .judge(&l, &splat::detect(&l), None)
            .unwrap_err()
            .contains("did not finish"));
        // A hung guest.
        assert!(c.judge(&log(REPORT), &[], Some("guest hung")).is_err());
    }
}
