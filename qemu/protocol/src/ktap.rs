//! KTAP output for guest test programs: one suite per program, one case per
//! check, so xtask turns their results into rows exactly like KUnit's.
//!
//! A program that dies before [`Suite::finish`] leaves its suite without a
//! result line, which xtask reports as crashed.
//!
//! ```
//! let mut s = virtgpu_protocol::ktap::Suite::start("example", Some(2));
//! s.pass("opens");
//! s.skip("atomic", "the driver has no atomic modesetting");
//! assert!(s.finish());
//! ```

use std::io::Write;

/// One suite being reported on stdout.
pub struct Suite {
    name: String,
    cases: usize,
    failed: usize,
    out: Box<dyn Write>,
}

impl Suite {
    /// Prints the headers of suite `name`, with its plan if known.
    pub fn start(name: &str, plan: Option<usize>) -> Suite {
        Self::start_on(name, plan, Box::new(std::io::stdout()))
    }

    /// Like [`Suite::start`], writing to `out`.
    pub fn start_on(name: &str, plan: Option<usize>, out: Box<dyn Write>) -> Suite {
        let mut s = Suite {
            name: name.to_string(),
            cases: 0,
            failed: 0,
            out,
        };
        s.line(0, "KTAP version 1");
        s.line(0, "1..1");
        s.line(4, "KTAP version 1");
        s.line(4, &format!("# Subtest: {name}"));
        if let Some(n) = plan {
            s.line(4, &format!("1..{n}"));
        }
        s
    }

    fn line(&mut self, indent: usize, text: &str) {
        // Output that cannot be written has nowhere else to go.
        let _ = writeln!(self.out, "{:indent$}{text}", "");
        let _ = self.out.flush();
    }

    /// A diagnostic line (`# ...`) inside the suite, one per line of `text`.
    pub fn diag(&mut self, text: &str) {
        for l in text.lines() {
            self.line(4, &format!("# {l}"));
        }
    }

    /// Reports a case that passed.
    pub fn pass(&mut self, case: &str) {
        self.cases += 1;
        let n = self.cases;
        self.line(4, &format!("ok {n} {case}"));
    }

    /// Reports a case that failed, with the reason as diagnostics.
    pub fn fail(&mut self, case: &str, why: &str) {
        self.diag(&format!("{case}: {why}"));
        self.cases += 1;
        self.failed += 1;
        let n = self.cases;
        self.line(4, &format!("not ok {n} {case}"));
    }

    /// Reports a case that did not run, and why.
    pub fn skip(&mut self, case: &str, reason: &str) {
        self.cases += 1;
        let n = self.cases;
        let reason = reason.replace('\n', " ");
        self.line(4, &format!("ok {n} {case} # SKIP {reason}"));
    }

    /// Reports `result`: a pass, or a failure with the error.
    pub fn check<T, E: std::fmt::Display>(&mut self, case: &str, result: &Result<T, E>) -> bool {
        match result {
            Ok(_) => self.pass(case),
            Err(e) => self.fail(case, &e.to_string()),
        }
        result.is_ok()
    }

    /// How many cases failed so far.
    pub fn failures(&self) -> usize {
        self.failed
    }

    /// Prints the suite's result line; true when no case failed.
    pub fn finish(mut self) -> bool {
        let ok = self.failed == 0;
        let name = self.name.clone();
        self.line(0, &format!("{} 1 {name}", if ok { "ok" } else { "not ok" }));
        ok
    }
}

/// Cases that build on each other, reported in order: after one fails, the
/// rest are reported as skipped, so the plan always adds up.
pub struct Chain {
    suite: Suite,
    names: Vec<&'static str>,
    done: usize,
    broken: bool,
}

impl Chain {
    /// Starts suite `name` with the cases `names`, in the order they will run.
    pub fn start(name: &str, names: &[&'static str]) -> Chain {
        Self::with(Suite::start(name, Some(names.len())), names)
    }

    fn with(suite: Suite, names: &[&'static str]) -> Chain {
        Chain {
            suite,
            names: names.to_vec(),
            done: 0,
            broken: false,
        }
    }

    /// Reports the next case from `result`; its value if it passed.
    pub fn case<T, E: std::fmt::Display>(&mut self, result: Result<T, E>) -> Option<T> {
        let name = self
            .names
            .get(self.done)
            .copied()
            .unwrap_or("unplanned_case");
        self.done += 1;
        match result {
            Ok(v) => {
                self.suite.pass(name);
                Some(v)
            }
            Err(e) => {
                self.suite.fail(name, &e.to_string());
                self.broken = true;
                None
            }
        }
    }

    /// The suite, for diagnostics.
    pub fn suite(&mut self) -> &mut Suite {
        &mut self.suite
    }

    /// Skips the cases that did not run and prints the result line; true
    /// when every case passed.
    pub fn finish(mut self) -> bool {
        for name in self.names.iter().skip(self.done) {
            let why = if self.broken {
                "an earlier case failed"
            } else {
                "not reached"
            };
            self.suite.skip(name, why);
        }
        let complete = self.done >= self.names.len();
        let ok = self.suite.finish();
        ok && complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_case_fails_the_suite() {
        let b = Buf::default();
        let mut s = Suite::start_on("drm_render", Some(3), Box::new(b.clone()));
        s.pass("open");
        s.fail("modeset", "EINVAL\nsecond line");
        s.skip("flip", "no\nvblank");
        assert!(!s.finish());
        let text = String::from_utf8(b.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "KTAP version 1\n1..1\n    KTAP version 1\n    # Subtest: drm_render\n    1..3\n    \
             ok 1 open\n    # modeset: EINVAL\n    # second line\n    not ok 2 modeset\n    \
             ok 3 flip # SKIP no vblank\nnot ok 1 drm_render\n"
        );
    }

    #[test]
    fn a_chain_skips_after_a_failure_and_unreached_cases_fail_it() {
        let b = Buf::default();
        let suite = Suite::start_on("c", Some(3), Box::new(b.clone()));
        let mut c = Chain::with(suite, &["one", "two", "three"]);
        assert_eq!(c.case::<_, String>(Ok(5)), Some(5));
        assert_eq!(c.case::<u8, _>(Err("boom")), None);
        assert!(!c.finish());
        let text = String::from_utf8(b.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("ok 3 three # SKIP an earlier case failed"),
            "{text}"
        );

        let suite = Suite::start_on("c", Some(2), Box::new(Buf::default()));
        let mut c = Chain::with(suite, &["one", "two"]);
        c.case::<_, String>(Ok(()));
        // Stopping early without a failure still fails the suite.
        assert!(!c.finish());
    }
}
