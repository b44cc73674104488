//! Runs a list of test commands (IGT subtests, libdrm's tools) and reports
//! each as a KTAP case and a `result:` line xtask judges against the
//! expectations.
//!
//! Usage: `test-runner SUITE LIST TIMEOUT_SECS`. LIST holds one test per
//! line, `CASE<TAB>PROGRAM [ARG...]`; `env KEY=VALUE` lines set the
//! environment of the tests after them; `#` starts a comment. Each test runs
//! in its own process group with its output captured: exit 0 passes, 77
//! (IGT's skip) skips, a signal is a crash, any other status a failure, and
//! a test still running after TIMEOUT_SECS is killed (with its group) and
//! reported as a timeout, after which the list goes on. The last lines of a
//! test that did not pass are printed as KTAP diagnostics.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use virtgpu_guest::kill_group;
use virtgpu_protocol::ktap::Suite;
use virtgpu_protocol::{CaseResult, Status};

/// IGT's exit status for a skipped test.
const EXIT_SKIP: i32 = 77;
/// Output lines kept for the diagnostics of a test that did not pass.
const TAIL: usize = 30;

struct Test {
    case: String,
    argv: Vec<String>,
    env: Vec<(String, String)>,
}

fn parse(list: &str) -> Result<Vec<Test>, String> {
    let mut env = Vec::new();
    let mut tests = Vec::new();
    for (n, line) in list.lines().enumerate() {
        let line = line.trim_end();
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if let Some(kv) = line.strip_prefix("env ") {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("line {}: `env` needs KEY=VALUE", n + 1))?;
            env.push((k.to_string(), v.to_string()));
            continue;
        }
        let (case, cmd) = line
            .split_once('\t')
            .ok_or_else(|| format!("line {}: expected CASE<TAB>COMMAND", n + 1))?;
        let argv: Vec<String> = cmd.split_whitespace().map(str::to_string).collect();
        if argv.is_empty() {
            return Err(format!("line {}: no command", n + 1));
        }
        tests.push(Test {
            case: case.to_string(),
            argv,
            env: env.clone(),
        });
    }
    Ok(tests)
}

/// Runs one test; its status and its output.
fn run(t: &Test, limit: Duration) -> (Status, String) {
    let mut cmd = Command::new(&t.argv[0]);
    cmd.args(&t.argv[1..])
        .envs(t.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (Status::Fail, format!("cannot start {}: {e}", t.argv[0])),
    };
    // Both pipes are drained on threads so a chatty test cannot block.
    let (tx, rx) = mpsc::channel();
    for mut pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    }
    drop(tx);
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() > limit => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    // On a timeout the test itself, and in any case the helpers it left
    // behind, which would run into the next test.
    kill_group(child.id());
    if status.is_none() {
        let _ = child.wait();
    }
    let mut out = Vec::new();
    while let Ok(chunk) = rx.recv_timeout(Duration::from_secs(5)) {
        out.extend(chunk);
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let st = match status {
        None => Status::Timeout,
        Some(s) => match (s.code(), s.signal()) {
            (Some(0), _) => Status::Pass,
            (Some(EXIT_SKIP), _) => Status::Skip,
            (Some(_), _) => Status::Fail,
            (None, _) => Status::Crash,
        },
    };
    let text = match (st, status) {
        (Status::Timeout, _) => format!("{text}\nkilled after {}s", limit.as_secs()),
        (Status::Crash, Some(s)) => format!("{text}\nkilled by signal {}", s.signal().unwrap_or(0)),
        (Status::Fail, Some(s)) => format!("{text}\nexit status {}", s.code().unwrap_or(-1)),
        _ => text,
    };
    (st, text)
}

/// Why a test skipped, from its output.
fn skip_reason(out: &str) -> String {
    let last = |what: &str| out.lines().rev().find(|l| l.contains(what));
    last("Test requirement:")
        .or_else(|| last("requirement not met"))
        .or_else(|| last("SKIP"))
        .or_else(|| out.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("exit status 77")
        .trim()
        .to_string()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, suite, list, timeout] = args.as_slice() else {
        eprintln!("usage: test-runner SUITE LIST TIMEOUT_SECS");
        return ExitCode::from(2);
    };
    let Ok(secs) = timeout.parse::<u64>() else {
        eprintln!("test-runner: TIMEOUT_SECS {timeout:?} is not a number");
        return ExitCode::from(2);
    };
    let tests = match std::fs::read_to_string(list)
        .map_err(|e| format!("cannot read {list}: {e}"))
        .and_then(|t| parse(&t))
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("test-runner: {e}");
            return ExitCode::from(2);
        }
    };
    let mut k = Suite::start(suite, Some(tests.len()));
    for t in &tests {
        let start = Instant::now();
        let (status, out) = run(t, Duration::from_secs(secs));
        println!(
            "{}",
            CaseResult {
                case: t.case.clone(),
                status,
                millis: start.elapsed().as_millis() as u64,
            }
        );
        match status {
            Status::Pass => k.pass(&t.case),
            Status::Skip => k.skip(&t.case, &skip_reason(&out)),
            _ => {
                let lines: Vec<&str> = out.lines().collect();
                let tail = lines[lines.len().saturating_sub(TAIL)..].join("\n");
                k.fail(&t.case, &format!("{}\n{tail}", status.name()));
            }
        }
    }
    // The suite's verdict is xtask's (expected failures); the run itself
    // succeeded when every test was run.
    k.finish();
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_with_env_and_reject_nonsense() {
        let t = parse("# c\nenv A=1\na@b\t/bin/a --run-subtest b\n\nenv B=2\nc\t/bin/c\n").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].argv, ["/bin/a", "--run-subtest", "b"]);
        assert_eq!(t[0].env, [("A".to_string(), "1".to_string())]);
        assert_eq!(t[1].env.len(), 2);
        assert!(parse("no tab here").is_err());
        assert!(parse("env NOEQUALS").is_err());
    }

    #[test]
    fn statuses_follow_exit_codes_signals_and_time() {
        let t = |cmd: &str| Test {
            case: "c".into(),
            argv: vec!["/bin/sh".into(), "-c".into(), cmd.into()],
            env: vec![],
        };
        let limit = Duration::from_secs(2);
        assert_eq!(run(&t("echo hi"), limit).0, Status::Pass);
        assert_eq!(run(&t("exit 77"), limit).0, Status::Skip);
        let (s, out) = run(&t("echo boom; exit 98"), limit);
        assert_eq!(s, Status::Fail);
        assert!(
            out.contains("boom") && out.contains("exit status 98"),
            "{out}"
        );
        assert_eq!(run(&t("kill -SEGV $$"), limit).0, Status::Crash);
        let (s, _) = run(&t("sleep 30"), Duration::from_millis(300));
        assert_eq!(s, Status::Timeout);
    }
}
