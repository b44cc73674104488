//! Finds kernel splats in a serial log.
//!
//! A splat fails a run even when every KUnit case passed: a WARN, a BUG, an
//! oops, a panic, any lockdep report, KASAN/UBSAN reports, hung tasks, RCU
//! stalls, soft lockups, kmemleak reports. Only kernel messages count (lines
//! with a printk timestamp), and only when the message starts with a
//! marker, so what guest programs print cannot fake or hide a report.

/// How kernel reports begin, and the kind reported for each. A marker
/// counts only at the start of a kernel message (after the printk
/// timestamp and caller id), as the kernel prints it: `DEBUG: x` or an
/// `Oops` in a program's output is not a report. More specific markers
/// come first.
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
    ("BUG: MAX_LOCK", "lockdep: table overflow"),
    ("BUG: MAX_LOCKDEP", "lockdep: table overflow"),
    ("DEBUG_LOCKS_WARN_ON", "lockdep: DEBUG_LOCKS_WARN_ON"),
    ("BUG: KASAN:", "KASAN"),
    ("BUG: KFENCE:", "KFENCE"),
    ("------------[ cut here ]------------", "WARN/BUG"),
    ("WARNING:", "WARNING"),
    ("watchdog: BUG: soft lockup", "soft lockup"),
    ("BUG:", "BUG"),
    ("kernel BUG at", "BUG"),
    ("Oops:", "Oops"),
    ("Internal error: Oops", "Oops"),
    ("general protection fault", "general protection fault"),
    ("Unable to handle kernel", "Oops"),
    ("Kernel panic", "panic"),
    ("UBSAN:", "UBSAN"),
    ("INFO: task ", "hung task"),
    ("rcu: INFO: ", "RCU stall"),
    ("refcount_t: ", "refcount"),
    ("list_add corruption", "list corruption"),
    ("list_del corruption", "list corruption"),
    ("kmemleak: ", "kmemleak"),
];

/// The inside of a bracketed field at the start of `s` and what follows the
/// closing bracket.
fn bracket(s: &str) -> Option<(&str, &str)> {
    let inner = s.strip_prefix('[')?;
    let end = inner.find(']')?;
    Some((inner[..end].trim(), &inner[end + 1..]))
}

/// The kernel message in a console line: the text after the printk
/// timestamp (`[   12.345678] `) and the caller id (`[ T123] `, `[C0] `,
/// printed right after the timestamp) when present. The timestamp may
/// follow other output on the same line (a program's unfinished line, a
/// login prompt). Lines without a timestamp are not kernel messages.
pub fn kernel_message(line: &str) -> Option<&str> {
    let line = line.trim_end_matches('\r');
    let is_stamp = |f: &str| f.contains('.') && f.chars().all(|c| c.is_ascii_digit() || c == '.');
    let is_caller = |f: &str| {
        let mut c = f.chars();
        matches!(c.next(), Some('T' | 'C'))
            && !c.as_str().is_empty()
            && c.all(|c| c.is_ascii_digit())
    };
    let mut from = 0;
    while let Some(i) = line[from..].find('[') {
        let at = from + i;
        if let Some((_, mut rest)) = bracket(&line[at..]).filter(|(f, _)| is_stamp(f)) {
            if let Some((_, after)) = bracket(rest).filter(|(f, _)| is_caller(f)) {
                rest = after;
            }
            return Some(rest.strip_prefix(' ').unwrap_or(rest));
        }
        from = at + 1;
    }
    None
}

/// One splat: its kind, the line number where it starts (1-based) and the
/// report's text (up to the end-of-trace marker or 40 lines).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Splat {
    pub kind: String,
    pub line: usize,
    pub text: String,
}

fn marker(line: &str) -> Option<&'static str> {
    let l = kernel_message(line)?;
    if l.starts_with("INFO: task ") && !l.contains("blocked for more than") {
        return None;
    }
    if l.starts_with("rcu: INFO: ") && !l.contains("stall") {
        return None;
    }
    // kmemleak's start-up notices; its reports, errors and self-disabling still count.
    if l.starts_with("kmemleak: ")
        && (l.contains("memory leak detector initialized")
            || l.contains("Automatic memory scanning thread"))
    {
        return None;
    }
    // Reports may be among the lost lines.
    if l.starts_with("** ") && l.contains("printk messages dropped") {
        return Some("console: messages dropped");
    }
    MARKERS
        .iter()
        .find(|(m, _)| l.starts_with(m))
        .map(|(_, k)| *k)
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
            let s = kernel_message(l).unwrap_or(l);
            if s.contains("---[ end trace") || s.contains("---[ end Kernel panic") {
                end = j + 1;
                break;
            }
            match marker(l) {
                // A "cut here" block names its kind on the next lines.
                Some(k) if kind == "WARN/BUG" && j <= start + 2 => kind = k.to_string(),
                // A fault's BUG line is followed by its Oops line.
                Some("Oops") if j <= start + 8 => {}
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
                .map(|l| kernel_message(l).unwrap_or(l))
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
    fn kmemleak_notices_are_not_splats_but_its_reports_are() {
        let log = "\
[    5.7] kmemleak: Kernel memory leak detector initialized (mem pool available: 14988)
[    5.8] kmemleak: Automatic memory scanning thread started
[   60.0] kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)
[   61.0] kmemleak: Kernel memory leak detector disabled
";
        let s = detect(log);
        assert_eq!(s.len(), 2, "{s:#?}");
        assert!(s.iter().all(|s| s.kind == "kmemleak"));
        assert_eq!((s[0].line, s[1].line), (3, 4));
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

    /// Real reports published elsewhere (see tests/fixtures/splats/SOURCES.md),
    /// with their timestamps, caller ids, CRLF endings and a login prompt.
    #[test]
    fn real_reports_are_one_splat_each_with_their_kind() {
        let cases = [
            (
                "kasan",
                include_str!("../tests/fixtures/splats/kasan.log"),
                "KASAN",
            ),
            (
                "warn",
                include_str!("../tests/fixtures/splats/warn.log"),
                "WARNING",
            ),
            (
                "bug",
                include_str!("../tests/fixtures/splats/bug.log"),
                "BUG",
            ),
            (
                "hung_task",
                include_str!("../tests/fixtures/splats/hung_task.log"),
                "hung task",
            ),
            (
                "rcu_stall",
                include_str!("../tests/fixtures/splats/rcu_stall.log"),
                "RCU stall",
            ),
            (
                "lockdep",
                include_str!("../tests/fixtures/splats/lockdep.log"),
                "lockdep: circular locking",
            ),
            (
                "soft_lockup",
                include_str!("../tests/fixtures/splats/soft_lockup.log"),
                "soft lockup",
            ),
        ];
        for (name, log, kind) in cases {
            let s = detect(log);
            let kinds: Vec<&str> = s.iter().map(|s| s.kind.as_str()).collect();
            assert_eq!(kinds, [kind], "{name}");
        }
    }

    #[test]
    fn words_inside_lines_and_program_output_are_not_reports() {
        let log = "\
[    1.0] virtio_gpu: DEBUG: not a BUG: at all
[    1.1] usb 1-1: new device, ignoring Oops in its name
DEBUG: printed by a program
BUG: printed by a program without a timestamp
Oops: so is this
[    1.2] rcu: INFO: some other RCU message
[    1.3] INFO: task list printed by sysrq
";
        assert!(detect(log).is_empty(), "{:#?}", detect(log));
    }

    #[test]
    fn a_report_after_unfinished_program_output_is_found() {
        let log = "half a line[    2.5] BUG: sleeping function called from invalid context\n";
        let s = detect(log);
        assert_eq!(s.len(), 1);
        assert!(s[0].text.starts_with("BUG: sleeping"), "{}", s[0].text);
    }

    #[test]
    fn dropped_console_messages_count_as_a_report() {
        let s = detect("[    3.0] ** 12 printk messages dropped **\n");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].kind, "console: messages dropped");
    }

    #[test]
    fn kernel_messages_lose_stamp_and_caller() {
        assert_eq!(kernel_message("[    1.000000] hi"), Some("hi"));
        assert_eq!(kernel_message("[  649.6][ T6659] BUG: x"), Some("BUG: x"));
        assert_eq!(kernel_message("[ 2710.2][T75672] x"), Some("x"));
        assert_eq!(kernel_message("[    1.0] [ C1] x"), Some("[ C1] x"));
        assert_eq!(kernel_message("no stamp [abc] x"), None);
        assert_eq!(kernel_message("[1] not a stamp"), None);
    }

    #[test]
    fn ordinary_lines_are_not_splats() {
        let log = "[ 0.0] Kernel command line: console=ttyS0 panic=-1\n[ 0.1] ok 1 warning_free\n";
        assert!(detect(log).is_empty());
    }
}
