//! A parser for the KTAP that KUnit prints on the kernel console.
//!
//! It reads a whole serial log: console timestamps (`[    1.234567] `) are
//! stripped, lines that are not KTAP are skipped (other kernel messages are
//! interleaved with the results), and every top-level suite becomes a
//! [`Suite`] with its cases. A suite whose closing result line never came
//! (the kernel crashed or hung mid-suite), or that reported fewer cases than
//! its plan announced, is [`Outcome::Crashed`].
//!
//! Only two levels matter here: suites (indent 0 results, `# Subtest:` at
//! indent 4) and their cases (indent 4 results). Parameterised cases report
//! their parameters one level deeper; those lines are folded into the case.

/// How a suite or case ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    Skip,
    /// No result line: the log ended or the suite was cut short.
    Crashed,
}

/// One test case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    pub name: String,
    pub outcome: Outcome,
    /// The reason after `# SKIP`, if any.
    pub skip_reason: Option<String>,
}

/// One suite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suite {
    pub name: String,
    pub outcome: Outcome,
    /// The `1..N` plan of the suite, when it printed one.
    pub planned: Option<usize>,
    pub cases: Vec<Case>,
    /// Why the suite counts as crashed, when it does.
    pub problem: Option<String>,
}

impl Suite {
    /// Counts of (passed, failed, skipped) cases; a crashed suite adds one
    /// failure for the missing results.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for case in &self.cases {
            match case.outcome {
                Outcome::Pass => c.0 += 1,
                Outcome::Fail | Outcome::Crashed => c.1 += 1,
                Outcome::Skip => c.2 += 1,
            }
        }
        if self.outcome == Outcome::Crashed || (self.outcome == Outcome::Fail && c.1 == 0) {
            c.1 += 1;
        }
        c
    }
}

/// Removes a leading console timestamp `[    1.234567] `.
pub fn strip_timestamp(line: &str) -> &str {
    let l = line.trim_end_matches('\r');
    if let Some(rest) = l.strip_prefix('[') {
        if let Some(end) = rest.find("] ") {
            let stamp = &rest[..end];
            if stamp.trim().chars().all(|c| c.is_ascii_digit() || c == '.') {
                return &rest[end + 2..];
            }
        }
    }
    l
}

/// A parsed `ok`/`not ok` line.
#[derive(Debug, PartialEq, Eq)]
struct ResultLine {
    ok: bool,
    name: String,
    skip: Option<String>,
}

fn parse_result(s: &str) -> Option<ResultLine> {
    let (ok, rest) = if let Some(r) = s.strip_prefix("ok ") {
        (true, r)
    } else if let Some(r) = s.strip_prefix("not ok ") {
        (false, r)
    } else {
        return None;
    };
    let (num, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (name, directive) = match rest.split_once(" # ") {
        Some((n, d)) => (n, Some(d)),
        None => match rest.strip_suffix(" #") {
            Some(n) => (n, None),
            None => (rest, None),
        },
    };
    let name = name.strip_prefix("- ").unwrap_or(name).trim().to_string();
    let skip = directive.and_then(|d| {
        let d = d.trim();
        if d.len() >= 4 && d[..4].eq_ignore_ascii_case("skip") {
            Some(d[4..].trim().to_string())
        } else {
            None
        }
    });
    Some(ResultLine { ok, name, skip })
}

fn outcome_of(r: &ResultLine) -> Outcome {
    match (r.ok, &r.skip) {
        (_, Some(_)) => Outcome::Skip,
        (true, None) => Outcome::Pass,
        (false, None) => Outcome::Fail,
    }
}

/// Parses every KTAP suite in `log`.
pub fn parse(log: &str) -> Vec<Suite> {
    let mut suites: Vec<Suite> = Vec::new();
    let mut open: Option<Suite> = None;

    fn close_crashed(s: &mut Suite, why: &str) {
        s.outcome = Outcome::Crashed;
        s.problem.get_or_insert_with(|| why.to_string());
    }

    for raw in log.lines() {
        let line = strip_timestamp(raw);
        let indent = line.len() - line.trim_start_matches(' ').len();
        let body = line.trim_start_matches(' ');
        match indent {
            0 => {
                if let Some(r) = parse_result(body) {
                    let mut s = match open.take() {
                        Some(s) if s.name == r.name => s,
                        other => {
                            if let Some(mut o) = other {
                                close_crashed(&mut o, "no result line");
                                suites.push(o);
                            }
                            // A result for a suite whose header we missed.
                            Suite {
                                name: r.name.clone(),
                                outcome: Outcome::Pass,
                                planned: None,
                                cases: Vec::new(),
                                problem: None,
                            }
                        }
                    };
                    s.outcome = outcome_of(&r);
                    if let Some(p) = s.planned {
                        if s.cases.len() < p && s.outcome != Outcome::Skip {
                            let why = format!("{} of {p} planned cases reported", s.cases.len());
                            close_crashed(&mut s, &why);
                        }
                    }
                    suites.push(s);
                }
            }
            4 => {
                if let Some(name) = body.strip_prefix("# Subtest: ") {
                    if let Some(mut o) = open.take() {
                        close_crashed(&mut o, "a new suite started before its result line");
                        suites.push(o);
                    }
                    open = Some(Suite {
                        name: name.trim().to_string(),
                        outcome: Outcome::Crashed,
                        planned: None,
                        cases: Vec::new(),
                        problem: None,
                    });
                } else if let Some(s) = open.as_mut() {
                    if let Some(plan) = body.strip_prefix("1..") {
                        s.planned = plan.trim().parse().ok();
                    } else if let Some(r) = parse_result(body) {
                        s.cases.push(Case {
                            outcome: outcome_of(&r),
                            skip_reason: r.skip.clone(),
                            name: r.name,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(mut o) = open.take() {
        close_crashed(&mut o, "the log ended inside this suite");
        suites.push(o);
    }
    suites
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT: &str = include_str!("../tests/fixtures/x86_64-boot-no-init.log");

    #[test]
    fn real_boot_log_parses_every_suite() {
        let s = parse(BOOT);
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "rust_kernel_fmt",
                "rust_netlink",
                "rust_spinlock_irq_condvar",
                "rust_doctests_kernel"
            ]
        );
        let doc = &s[3];
        assert_eq!(doc.planned, Some(360));
        assert_eq!(doc.cases.len(), 360);
        assert_eq!(doc.outcome, Outcome::Pass);
        assert_eq!(doc.counts(), (360, 0, 0));
        assert_eq!(
            doc.cases[0].name,
            "rust_doctest_kernel_alloc_allocator_rs_0"
        );
    }

    #[test]
    fn truncated_log_marks_the_open_suite_crashed() {
        let cut = BOOT
            .find("ok 100 rust_doctest")
            .expect("fixture has case 100");
        let s = parse(&BOOT[..cut]);
        let doc = s.last().unwrap();
        assert_eq!(doc.name, "rust_doctests_kernel");
        assert_eq!(doc.outcome, Outcome::Crashed);
        assert_eq!(doc.cases.len(), 99);
        let (p, f, _) = doc.counts();
        assert_eq!((p, f), (99, 1));
    }

    #[test]
    fn failures_skips_and_nesting() {
        let log = "\
[    0.1] KTAP version 1
[    0.1] 1..2
[    0.1]     KTAP version 1
[    0.1]     # Subtest: alpha
[    0.1]     1..3
[    0.1]     ok 1 one
[    0.1]         KTAP version 1
[    0.1]         # Subtest: param
[    0.1]         ok 1 p=1
[    0.1]         not ok 2 p=2
[    0.1]     not ok 2 param
[    0.1] some unrelated kernel message
[    0.1]     ok 3 three # SKIP not on this arch
[    0.1] # alpha: pass:1 fail:1 skip:1 total:3
[    0.1] not ok 1 alpha
[    0.1]     KTAP version 1
[    0.1]     # Subtest: beta
[    0.1]     1..1
[    0.1]     ok 1 b # SKIP
[    0.1] ok 2 beta # SKIP all skipped
";
        let s = parse(log);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].outcome, Outcome::Fail);
        assert_eq!(s[0].cases.len(), 3);
        assert_eq!(s[0].cases[1].outcome, Outcome::Fail);
        assert_eq!(
            s[0].cases[2].skip_reason.as_deref(),
            Some("not on this arch")
        );
        assert_eq!(s[0].counts(), (1, 1, 1));
        assert_eq!(s[1].outcome, Outcome::Skip);
        assert_eq!(s[1].counts(), (0, 0, 1));
    }

    #[test]
    fn short_suite_is_crashed_even_with_result_line() {
        let log = "    # Subtest: s\n    1..3\n    ok 1 a\nok 1 s\n";
        let s = parse(log);
        assert_eq!(s[0].outcome, Outcome::Crashed);
        assert!(s[0].problem.as_deref().unwrap().contains("1 of 3"));
    }

    #[test]
    fn timestamp_stripping() {
        assert_eq!(strip_timestamp("[    1.080032]     ok 1 x"), "    ok 1 x");
        assert_eq!(strip_timestamp("[not a stamp] x"), "[not a stamp] x");
    }
}
