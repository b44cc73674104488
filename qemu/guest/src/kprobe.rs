//! Kprobe events through tracefs (`/sys/kernel/tracing`, mounted by `vrs-init`): probes set on
//! kernel functions for the time of a measurement, and their hits read back with the monotonic
//! clock's timestamps, so that an interval inside the kernel can be timed from userspace the
//! same way for either driver. Needs `CONFIG_KPROBE_EVENTS` (`qemu/config/common.config`).

use std::fs::{self, OpenOptions};
use std::io::Write;

/// Where tracefs is mounted.
const TRACING: &str = "/sys/kernel/tracing";

/// One probe on a function's entry (`p:`): the event's name in its group, and the function.
/// (No return probes: a kretprobe fires at the function's entry too, to set its trampoline, so
/// it would cost a probe hit on the path being timed.)
#[derive(Clone, Debug)]
pub struct Probe {
    pub event: String,
    pub symbol: String,
    /// Whether the event is on every built-in function named `symbol`: static functions of
    /// different files may share a name (`vp_get` of both virtio-pci transports), which
    /// tracefs refuses as "not unique". Each is then probed by its address, as an event of its
    /// own (`event`, `event_1`, ...; tracefs compares probes set by address as if they were one,
    /// so a second address cannot join the first's event), and all hits are reported under
    /// `event`.
    pub every: bool,
}

impl Probe {
    /// A probe named `event` on the entry of `symbol`, which must name one function.
    pub fn entry(event: &str, symbol: &str) -> Probe {
        Probe {
            event: event.into(),
            symbol: symbol.into(),
            every: false,
        }
    }

    /// An event named `event` on the entry of every built-in function named `symbol`.
    pub fn entry_of_each(event: &str, symbol: &str) -> Probe {
        Probe {
            every: true,
            ..Probe::entry(event, symbol)
        }
    }

    /// Where tracefs is to set the probes: the symbol, or the address of each function of
    /// that name.
    fn places(&self) -> Result<Vec<String>, String> {
        if !self.every {
            return Ok(vec![self.symbol.clone()]);
        }
        let text = fs::read_to_string("/proc/kallsyms")
            .map_err(|e| format!("cannot read /proc/kallsyms: {e}"))?;
        let found = find_builtin_addresses(&text, &self.symbol);
        if found.is_empty() {
            return Err(format!(
                "no built-in function {} with an address in /proc/kallsyms (not built in, \
                 or addresses hidden: kptr_restrict)",
                self.symbol
            ));
        }
        Ok(found.iter().map(|a| format!("0x{a}")).collect())
    }
}

/// One hit of a probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    /// The probe's event name.
    pub event: String,
    /// When it fired: the monotonic clock, in ns (the trace prints microseconds).
    pub ns: u64,
    /// The CPU it fired on.
    pub cpu: u32,
    /// The task it fired in (0, the idle task, for an interrupt taken while idle).
    pub pid: u32,
}

fn path(file: &str) -> String {
    format!("{TRACING}/{file}")
}

fn write(file: &str, text: &str) -> Result<(), String> {
    fs::write(path(file), text).map_err(|e| format!("cannot write {text:?} to {}: {e}", path(file)))
}

/// Adds one line to `kprobe_events` (opened for appending: opening it truncated would remove
/// every probe there is). An error carries the kernel's reason, from tracefs' `error_log`.
fn define(line: &str) -> Result<(), String> {
    let file = path("kprobe_events");
    OpenOptions::new()
        .append(true)
        .open(&file)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(|e| {
            let why = fs::read_to_string(path("error_log")).unwrap_or_default();
            let why = why.lines().rev().take(3).collect::<Vec<_>>();
            format!("cannot add {line:?} to {file}: {e} ({})", why.join(" / "))
        })
}

/// A group of kprobe events, set and enabled; disabled and removed when dropped.
///
/// # Examples
///
/// ```no_run
/// use virtgpu_guest::kprobe::{Probe, Probes};
/// let probes = Probes::set("example", &[Probe::entry("config", "virtio_config_changed")])?;
/// // ... make the kernel run the function ...
/// for hit in probes.hits()? {
///     println!("{} at {} ns", hit.event, hit.ns);
/// }
/// # Ok::<(), String>(())
/// ```
pub struct Probes {
    group: String,
    events: Vec<Event>,
}

/// One event defined in tracefs.
#[derive(Clone, Debug)]
struct Event {
    /// Its name there.
    name: String,
    /// The name its hits are reported under: its [`Probe::event`].
    reports: String,
}

impl Probes {
    /// Sets `probes` in `group`, selects the monotonic trace clock (the default clock is per
    /// CPU, and the hits of one interval may come from two CPUs), enables the group, and
    /// clears the trace. A probe that cannot be set (no such symbol, a kernel without kprobe
    /// events) is an error, and what was set before it is removed again.
    pub fn set(group: &str, probes: &[Probe]) -> Result<Probes, String> {
        let mut planned = Vec::new();
        for p in probes {
            for (i, place) in p.places()?.into_iter().enumerate() {
                let name = match i {
                    0 => p.event.clone(),
                    _ => format!("{}_{i}", p.event),
                };
                let reports = p.event.clone();
                planned.push((Event { name, reports }, place));
            }
        }
        write("trace_clock", "mono")?;
        // What an earlier run left behind (killed before its drop) would take these probes'
        // hits too: tracefs adds a probe to an event of the same name.
        let _ = write(&format!("events/{group}/enable"), "0");
        for (e, _) in &planned {
            let _ = define(&format!("-:{group}/{}\n", e.name));
        }
        let mut this = Probes {
            group: group.to_string(),
            events: Vec::new(),
        };
        for (e, place) in planned {
            define(&format!("p:{group}/{} {place}\n", e.name))?;
            this.events.push(e);
        }
        write(&format!("events/{group}/enable"), "1")?;
        write("tracing_on", "1")?;
        this.clear()?;
        Ok(this)
    }

    /// Empties the trace: later [`Probes::hits`] only see what fires from now on.
    pub fn clear(&self) -> Result<(), String> {
        // Opening `trace` for writing with truncation empties the buffers.
        write("trace", "")
    }

    /// The hits of this group's probes since the last [`Probes::clear`], oldest first.
    pub fn hits(&self) -> Result<Vec<Hit>, String> {
        let file = path("trace");
        let text = fs::read_to_string(&file).map_err(|e| format!("cannot read {file}: {e}"))?;
        Ok(parse_hits(&text, &self.events))
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        // Best effort: a probe left behind only costs its hits, and the next `set` removes it.
        let _ = write(&format!("events/{}/enable", self.group), "0");
        for e in &self.events {
            let _ = define(&format!("-:{}/{}\n", self.group, e.name));
        }
    }
}

/// The one function of `module` whose (mangled) name holds each of `parts`, in order, and ends
/// with the last, from `/proc/kallsyms`: how a probe finds a Rust function, whose symbol carries
/// crate hashes (a name such as `["7reclaim", "8WorkItem3run"]` picks one trait method among
/// several impls). The instantiating crate that a v0 symbol of a generic function may end with
/// (`B<n>_`) does not count as the end. An error if there is none (the module is not loaded, or
/// the function was inlined) or several.
pub fn module_symbol(module: &str, parts: &[&str]) -> Result<String, String> {
    let text = fs::read_to_string("/proc/kallsyms")
        .map_err(|e| format!("cannot read /proc/kallsyms: {e}"))?;
    let found = find_module_symbol(&text, module, parts);
    match found.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(format!(
            "no function of {module} is named with {parts:?} (module not loaded, or inlined)"
        )),
        many => Err(format!(
            "{} functions of {module} are named with {parts:?}",
            many.len()
        )),
    }
}

/// Whether `rest`, what follows a symbol's path, is nothing or the instantiating crate a v0
/// symbol of a generic function may end with: a back reference to a crate named earlier
/// (`B<base-62>_`), or a crate root (`C[s<base-62>_]<length><name>`).
fn is_instantiating_crate(rest: &str) -> bool {
    let base62_then_underscore = |r: &str| {
        r.strip_suffix('_')
            .is_some_and(|digits| digits.bytes().all(|c| c.is_ascii_alphanumeric()))
    };
    if rest.is_empty() {
        return true;
    }
    if let Some(r) = rest.strip_prefix('B') {
        return base62_then_underscore(r);
    }
    let Some(mut r) = rest.strip_prefix('C') else {
        return false;
    };
    if let Some(d) = r.strip_prefix('s') {
        let Some(end) = d.find('_') else {
            return false;
        };
        if !base62_then_underscore(&d[..=end]) {
            return false;
        }
        r = &d[end + 1..];
    }
    let digits = r.bytes().take_while(u8::is_ascii_digit).count();
    r[..digits]
        .parse::<usize>()
        .is_ok_and(|len| len > 0 && r.len() == digits + len)
}

/// Whether `name` holds each of `parts` in order and ends with the last (see [`module_symbol`]).
fn named_with(name: &str, parts: &[&str]) -> bool {
    let Some((last, before)) = parts.split_last() else {
        return false;
    };
    let mut rest = name;
    for part in before {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.rfind(last)
        .is_some_and(|i| is_instantiating_crate(&rest[i + last.len()..]))
}

/// The text symbols of `module` in a `/proc/kallsyms` text named with `parts`
/// ([`module_symbol`]).
fn find_module_symbol<'a>(kallsyms: &'a str, module: &str, parts: &[&str]) -> Vec<&'a str> {
    let tag = format!("[{module}]");
    kallsyms
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (_addr, kind, name) = (words.next()?, words.next()?, words.next()?);
            let ours = words.next() == Some(tag.as_str());
            (ours && kind.eq_ignore_ascii_case("t") && named_with(name, parts)).then_some(name)
        })
        .collect()
}

/// The addresses (hex, as listed) of the built-in text symbols named `name` in a
/// `/proc/kallsyms` text, each once (an alias may list one function twice); none that reads
/// as zero (hidden from an unprivileged reader).
fn find_builtin_addresses<'a>(kallsyms: &'a str, name: &str) -> Vec<&'a str> {
    let mut found: Vec<&str> = kallsyms
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (addr, kind, sym) = (words.next()?, words.next()?, words.next()?);
            let builtin = words.next().is_none();
            let shown = addr.bytes().any(|b| b != b'0');
            (builtin && shown && kind.eq_ignore_ascii_case("t") && sym == name).then_some(addr)
        })
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// The hits of `events` in the text of a trace: lines such as
/// `kworker/0:1-12 [000] d.h1.  44.612345: config: (virtio_config_changed+0x0/0x60)`.
fn parse_hits(text: &str, events: &[Event]) -> Vec<Hit> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            events.iter().find_map(|e| {
                let at = l.find(&format!(": {}: (", e.name))?;
                // `<comm>-<pid> [<cpu>] <flags> <seconds>.<us>`
                let words: Vec<&str> = l[..at].split_whitespace().collect();
                let c = words.iter().position(|w| w.starts_with('['))?;
                let cpu = words[c]
                    .strip_prefix('[')?
                    .strip_suffix(']')?
                    .parse()
                    .ok()?;
                let pid = words[..c].last()?.rsplit_once('-')?.1.parse().ok()?;
                Some(Hit {
                    event: e.reports.clone(),
                    ns: stamp_ns(words.last()?)?,
                    cpu,
                    pid,
                })
            })
        })
        .collect()
}

/// `seconds.microseconds` in ns.
fn stamp_ns(stamp: &str) -> Option<u64> {
    let (s, us) = stamp.split_once('.')?;
    if us.len() != 6 {
        return None;
    }
    let s: u64 = s.parse().ok()?;
    let us: u64 = us.parse().ok()?;
    s.checked_mul(1_000_000_000)?.checked_add(us * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_are_read_from_a_trace() {
        let trace = "# tracer: nop\n\
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION\n\
          <idle>-0       [001] d.h2.    44.612345: config: (virtio_config_changed+0x0/0x60)\n\
   kworker/u8:1-34      [000] .....    44.613001: answer: (changed+0x3c/0x90 <- _RNvMNtCs_13virtio_gpu_rs7displayNtB2_8Displays4read)\n\
   kworker/u8:1-34      [000] .....    44.613002: other: (x+0x0/0x1)\n\
   kworker/u8:1-34      [000] .....    44.613003: read_1: (0xffffffff81a80e90)\n\
   kworker/u8:1-34      [000] .....    bad: answer: (x+0x0/0x1)\n";
        let event = |name: &str, reports: &str| Event {
            name: name.into(),
            reports: reports.into(),
        };
        let events = [
            event("config", "config"),
            event("answer", "answer"),
            event("read_1", "read"),
        ];
        assert_eq!(
            parse_hits(trace, &events),
            vec![
                Hit {
                    event: "config".into(),
                    ns: 44_612_345_000,
                    cpu: 1,
                    pid: 0
                },
                Hit {
                    event: "answer".into(),
                    ns: 44_613_001_000,
                    cpu: 0,
                    pid: 34
                },
                Hit {
                    event: "read".into(),
                    ns: 44_613_003_000,
                    cpu: 0,
                    pid: 34
                },
            ]
        );
    }

    #[test]
    fn module_symbols_are_found_by_suffix() {
        let kallsyms = "ffffffffc0001000 t _RNvMNtCsX_13virtio_gpu_rs7displayNtB2_8Displays4read\t[virtio_gpu_rs]\n\
ffffffffc0002000 t _RNvMNtCsX_13virtio_gpu_rs7displayNtB2_8Displays3log\t[virtio_gpu_rs]\n\
ffffffffc0003000 d _RNvCsX_13virtio_gpu_rs8Displays4read\t[virtio_gpu_rs]\n\
ffffffffc0004000 t _RNvMNtCsY_5other7displayNtB2_8Displays4read\t[other]\n\
ffffffff81000000 T virtio_config_changed\n";
        assert_eq!(
            find_module_symbol(kallsyms, "virtio_gpu_rs", &["8Displays4read"]),
            ["_RNvMNtCsX_13virtio_gpu_rs7displayNtB2_8Displays4read"]
        );
        assert!(find_module_symbol(kallsyms, "virtio_gpu_rs", &["5write"]).is_empty());
        assert!(find_module_symbol(kallsyms, "virtio_gpu_rs", &[]).is_empty());
    }

    #[test]
    fn module_symbols_are_found_by_parts_past_the_instantiating_crate() {
        let kallsyms = "ffffffffc0001000 t _RNvMs1_NtCsK_6kernel5shmemINtB5_6ObjectNtCsX_13virtio_gpu_rs2BoE13free_callbackB11_\t[virtio_gpu_rs]\n\
ffffffffc0002000 t _RNvMs1_NtCsK_6kernel5shmemINtB5_6ObjectNtCsX_13virtio_gpu_rs2BoE13free_callback0B11_\t[virtio_gpu_rs]\n\
ffffffffc0003000 T _RNvXs0_NtCsX_13virtio_gpu_rs7reclaimNtB5_10DeviceDataNtNtCsK_6kernel9workqueue8WorkItem3run\t[virtio_gpu_rs]\n\
ffffffffc0004000 T _RNvXs_NtCsX_13virtio_gpu_rs7displayNtB4_10ConfigWorkNtNtCsK_6kernel9workqueue8WorkItem3run\t[virtio_gpu_rs]\n";
        assert_eq!(
            find_module_symbol(kallsyms, "virtio_gpu_rs", &["2BoE13free_callback"]),
            ["_RNvMs1_NtCsK_6kernel5shmemINtB5_6ObjectNtCsX_13virtio_gpu_rs2BoE13free_callbackB11_"]
        );
        assert_eq!(
            find_module_symbol(kallsyms, "virtio_gpu_rs", &["7reclaim", "8WorkItem3run"]),
            ["_RNvXs0_NtCsX_13virtio_gpu_rs7reclaimNtB5_10DeviceDataNtNtCsK_6kernel9workqueue8WorkItem3run"]
        );
        assert_eq!(
            find_module_symbol(kallsyms, "virtio_gpu_rs", &["8WorkItem3run"]).len(),
            2
        );
        // A crate root instead of a back reference, with or without a disambiguator.
        let spelled = "ffffffffc0005000 t _RNvMNtCsK_6kernel5queueINtB2_4ListNtCsK_6kernel4ItemE4pushCsX_13virtio_gpu_rs\t[virtio_gpu_rs]\n\
ffffffffc0006000 t _RNvMNtCsK_6kernel5queueINtB2_4ListNtCsK_6kernel4ItemE4pushC13virtio_gpu_rs\t[virtio_gpu_rs]\n\
ffffffffc0007000 t _RNvMNtCsK_6kernel5queueINtB2_4ListNtCsK_6kernel4ItemE4pushC13virtio_gpu\t[virtio_gpu_rs]\n";
        assert_eq!(
            find_module_symbol(spelled, "virtio_gpu_rs", &["4ItemE4push"]).len(),
            2
        );
        // In order: the impl's module comes before the method.
        assert!(
            find_module_symbol(kallsyms, "virtio_gpu_rs", &["8WorkItem3run", "7reclaim"])
                .is_empty()
        );
    }

    #[test]
    fn builtin_functions_of_one_name_are_all_found() {
        let kallsyms = "ffffffff81d2da10 t vp_get\n\
ffffffff81d2a000 t vp_get\n\
ffffffff81d2da10 t vp_get\n\
ffffffff81d2db00 t vp_get_status\n\
ffffffff81e00000 d vp_get\n\
ffffffffc0001000 t vp_get\t[other]\n\
0000000000000000 t vp_set\n";
        assert_eq!(
            find_builtin_addresses(kallsyms, "vp_get"),
            ["ffffffff81d2a000", "ffffffff81d2da10"]
        );
        assert!(find_builtin_addresses(kallsyms, "vp_set").is_empty());
    }

    #[test]
    fn stamps_need_microseconds() {
        assert_eq!(stamp_ns("1.000001"), Some(1_000_001_000));
        assert_eq!(stamp_ns("1.5"), None);
        assert_eq!(stamp_ns("x.000001"), None);
    }
}
