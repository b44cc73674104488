//! Finds kernel splats in a serial log.
//!
//! A splat fails a run even when every KUnit case passed: a WARN, a BUG, an
//! oops, a panic, any lockdep report, KASAN/UBSAN reports, hung tasks.

use crate::ktap::strip_timestamp;

/// Markers that start a splat, and the kind reported for each.
const MARKERS: &[(&str, &str)] = &[
    (
        "WARNING: possible circular locking dependency",
        "lockdep: circular locking",
    ),
    (
        "WARNING: possible recursive locking",
        "lockdep: recursive locking",
    ),
    (
        "WARNING: inconsistent lock state",
        "lockdep: inconsistent lock state",
    ),
    (
        "WARNING: possible irq lock inversion",
        "lockdep: irq lock inversion",
    ),
    ("WARNING: bad unlock balance", "lockdep: bad unlock balance"),
    (
        "WARNING: suspicious RCU usage",
        "lockdep: suspicious RCU usage",
    ),
    (
        "WARNING: lock held when returning to user space",
        "lockdep: lock held at return to user",
    ),
    ("WARNING: held lock freed", "lockdep: held lock freed"),
    ("BUG: MAX_LOCKDEP", "lockdep: table overflow"),
    ("DEBUG_LOCKS_WARN_ON", "lockdep: DEBUG_LOCKS_WARN_ON"),
    ("------------[ cut here ]------------", "WARN/BUG"),
    ("WARNING:", "WARNING"),
    ("BUG:", "BUG"),
    ("kernel BUG at", "BUG"),
    ("Oops", "Oops"),
    ("general protection fault", "general protection fault"),
    ("Unable to handle kernel", "Oops"),
    ("Kernel panic", "panic"),
    ("KASAN:", "KASAN"),
    ("UBSAN:", "UBSAN"),
    ("INFO: task ", "hung task"),
    ("refcount_t: ", "refcount"),
    ("list_add corruption", "list corruption"),
    ("list_del corruption", "list corruption"),
];

/// One splat: its kind, the line number where it starts (1-based) and the
/// report's text (up to the end-of-trace marker or 40 lines).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Splat {
    pub kind: String,
    pub line: usize,
    pub text: String,
}

fn marker(line: &str) -> Option<&'static str> {
    let l = strip_timestamp(line);
    if l.starts_with("INFO: task ") && !l.contains("blocked for more than") {
        return None;
    }
    MARKERS.iter().find(|(m, _)| l.contains(m)).map(|(_, k)| *k)
}

/// Every splat in `log`. Lines that belong to an earlier splat's report are
/// not reported again.
pub fn detect(log: &str) -> Vec<Splat> {
    let lines: Vec<&str> = log.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(kind) = marker(lines[i]) else {
            i += 1;
            continue;
        };
        let start = i;
        let mut end = (i + 40).min(lines.len());
        let mut kind = kind.to_string();
        for (j, l) in lines.iter().enumerate().take(end).skip(i + 1) {
            let s = strip_timestamp(l);
            if s.contains("---[ end trace") || s.contains("---[ end Kernel panic") {
                end = j + 1;
                break;
            }
            match marker(l) {
                // A "cut here" block names its kind on the next lines.
                Some(k) if kind == "WARN/BUG" && j <= start + 2 => kind = k.to_string(),
                // Another report starts: this one ends here.
                Some(_) => {
                    end = j;
                    break;
                }
                _ => {}
            }
        }
        out.push(Splat {
            kind,
            line: start + 1,
            text: lines[start..end]
                .iter()
                .map(|l| strip_timestamp(l))
                .collect::<Vec<_>>()
                .join("\n"),
        });
        i = end.max(start + 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_real_boot_has_only_the_expected_panic() {
        // The fixture boots without an init, so the kernel panics at the end:
        // exactly one splat, and nothing from the 360 doctests.
        let log = include_str!("../tests/fixtures/x86_64-boot-no-init.log");
        let s = detect(log);
        assert_eq!(s.len(), 1, "{s:#?}");
        assert_eq!(s[0].kind, "panic");
        assert!(s[0].text.contains("No working init found"));
    }

    #[test]
    fn lockdep_report_is_one_splat_with_its_kind() {
        let log = "\
[    2.0] ======================================================
[    2.0] WARNING: possible circular locking dependency detected
[    2.0] 7.3.4 #1 Not tainted
[    2.0] ------------------------------------------------------
[    2.0] kworker/0:1/20 is trying to acquire lock:
[    2.1] ok 5 next_case
";
        let s = detect(log);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].kind, "lockdep: circular locking");
        assert_eq!(s[0].line, 2);
    }

    #[test]
    fn warn_block_counts_once_and_ends_at_trace_end() {
        let log = "\
[ 1.0] ------------[ cut here ]------------
[ 1.0] WARNING: CPU: 0 PID: 1 at drivers/x.c:10 f+0x1/0x2
[ 1.0] Call Trace:
[ 1.0] ---[ end trace 0000000000000000 ]---
[ 1.1] BUG: sleeping function called from invalid context at x.c:1
[ 1.2] INFO: task kworker:1 blocked for more than 120 seconds.
[ 1.3] INFO: task list printed by sysrq
";
        let s = detect(log);
        let kinds: Vec<&str> = s.iter().map(|s| s.kind.as_str()).collect();
        assert_eq!(kinds, ["WARNING", "BUG", "hung task"]);
        assert!(s[0].text.ends_with("---[ end trace 0000000000000000 ]---"));
    }

    #[test]
    fn ordinary_lines_are_not_splats() {
        let log = "[ 0.0] Kernel command line: console=ttyS0 panic=-1\n[ 0.1] ok 1 warning_free\n";
        assert!(detect(log).is_empty());
    }
}
