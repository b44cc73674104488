//! Brackets a boot's tests with kmemleak: `kmemleak clear` before them forgets what earlier
//! code (boot, KUnit) left behind; `kmemleak scan` after them scans memory and reports every
//! object suspected leaked since, with its backtrace.
//!
//! Usage: `kmemleak clear|scan`. `scan` waits until the last test is older than kmemleak's
//! minimum age (5 s), scans twice, and reports KTAP (suite `kmemleak`, case `no_suspected_leaks`,
//! the reports as diagnostics). Exits 0 only when kmemleak is there and, for `scan`, it
//! suspects nothing.

use std::fs;
use std::process::ExitCode;
use std::thread::sleep;
use std::time::Duration;

use virtgpu_protocol::ktap::Suite;

const KMEMLEAK: &str = "/sys/kernel/debug/kmemleak";
/// How long an object must be unreferenced before kmemleak reports it, plus a margin.
const MIN_AGE: Duration = Duration::from_secs(6);
/// Report lines printed as diagnostics, at most.
const SHOWN: usize = 60;

fn command(what: &str) -> Result<(), String> {
    fs::write(KMEMLEAK, what).map_err(|e| {
        format!(
            "cannot write `{what}` to {KMEMLEAK}: {e} (CONFIG_DEBUG_KMEMLEAK on, debugfs mounted?)"
        )
    })
}

/// The objects of a kmemleak report, each with its lines.
fn suspects(report: &str) -> Vec<Vec<&str>> {
    let mut objects: Vec<Vec<&str>> = Vec::new();
    for line in report.lines() {
        if line.starts_with("unreferenced object") {
            objects.push(vec![line]);
        } else if let Some(o) = objects.last_mut() {
            o.push(line);
        }
    }
    objects
}

fn scan() -> Result<(), String> {
    sleep(MIN_AGE);
    // Twice: a scan reports an unreferenced object only if its contents did not change since
    // the previous scan (the first one after its allocation only records a checksum).
    command("scan")?;
    command("scan")?;
    let report =
        fs::read_to_string(KMEMLEAK).map_err(|e| format!("cannot read {KMEMLEAK}: {e}"))?;
    let objects = suspects(&report);
    if objects.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = objects.iter().flatten().copied().take(SHOWN).collect();
    Err(format!(
        "{} object(s) suspected leaked:\n{}",
        objects.len(),
        shown.join("\n")
    ))
}

fn main() -> ExitCode {
    let mode = std::env::args().nth(1).unwrap_or_default();
    match mode.as_str() {
        "clear" => match command("clear") {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kmemleak: {e}");
                ExitCode::FAILURE
            }
        },
        "scan" => {
            let mut k = Suite::start("kmemleak", Some(1));
            k.check("no_suspected_leaks", &scan());
            ExitCode::from(u8::from(!k.finish()))
        }
        _ => {
            eprintln!("usage: kmemleak clear|scan");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::suspects;

    #[test]
    fn each_unreferenced_object_is_one_suspect() {
        let report = "unreferenced object 0xffff1 (size 64):\n  comm \"a\"\n  backtrace:\n    [<0>] f\nunreferenced object 0xffff2 (size 8):\n  comm \"b\"\n";
        let s = suspects(report);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].len(), 4);
        assert_eq!(s[1][1], "  comm \"b\"");
        assert!(suspects("").is_empty());
    }
}
