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
}

impl Probe {
    /// A probe named `event` on the entry of `symbol`.
    pub fn entry(event: &str, symbol: &str) -> Probe {
        Probe {
            event: event.into(),
            symbol: symbol.into(),
        }
    }
}

/// One hit of a probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    /// The probe's event name.
    pub event: String,
    /// When it fired: the monotonic clock, in ns (the trace prints microseconds).
    pub ns: u64,
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
    events: Vec<String>,
}

impl Probes {
    /// Sets `probes` in `group`, selects the monotonic trace clock (the default clock is per
    /// CPU, and the hits of one interval may come from two CPUs), enables the group, and
    /// clears the trace. A probe that cannot be set (no such symbol, a kernel without kprobe
    /// events) is an error, and what was set before it is removed again.
    pub fn set(group: &str, probes: &[Probe]) -> Result<Probes, String> {
        write("trace_clock", "mono")?;
        // What an earlier run left behind (killed before its drop) would take these probes'
        // hits too: tracefs adds a probe to an event of the same name.
        let _ = write(&format!("events/{group}/enable"), "0");
        for p in probes {
            let _ = define(&format!("-:{group}/{}\n", p.event));
        }
        let mut this = Probes {
            group: group.to_string(),
            events: Vec::new(),
        };
        for p in probes {
            define(&format!("p:{group}/{} {}\n", p.event, p.symbol))?;
            this.events.push(p.event.clone());
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
            let _ = define(&format!("-:{}/{e}\n", self.group));
        }
    }
}

/// The one function of `module` whose (mangled) name ends with `suffix`, from
/// `/proc/kallsyms`: how a probe finds a Rust function, whose symbol carries a crate hash. An
/// error if there is none (the module is not loaded, or the function was inlined) or several.
pub fn module_symbol(module: &str, suffix: &str) -> Result<String, String> {
    let text = fs::read_to_string("/proc/kallsyms")
        .map_err(|e| format!("cannot read /proc/kallsyms: {e}"))?;
    let found = find_module_symbol(&text, module, suffix);
    match found.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(format!(
            "no function of {module} ends with {suffix} (module not loaded, or inlined)"
        )),
        many => Err(format!(
            "{} functions of {module} end with {suffix}",
            many.len()
        )),
    }
}

/// The text symbols of `module` in a `/proc/kallsyms` text whose names end with `suffix`.
fn find_module_symbol<'a>(kallsyms: &'a str, module: &str, suffix: &str) -> Vec<&'a str> {
    let tag = format!("[{module}]");
    kallsyms
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (_addr, kind, name) = (words.next()?, words.next()?, words.next()?);
            let ours = words.next() == Some(tag.as_str());
            (ours && kind.eq_ignore_ascii_case("t") && name.ends_with(suffix)).then_some(name)
        })
        .collect()
}

/// The hits of `events` in the text of a trace: lines such as
/// `kworker/0:1-12 [000] d.h1.  44.612345: config: (virtio_config_changed+0x0/0x60)`.
pub fn parse_hits(text: &str, events: &[String]) -> Vec<Hit> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            events.iter().find_map(|e| {
                let at = l.find(&format!(": {e}: ("))?;
                let stamp = l[..at].split_whitespace().last()?;
                Some(Hit {
                    event: e.clone(),
                    ns: stamp_ns(stamp)?,
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
   kworker/u8:1-34      [000] .....    bad: answer: (x+0x0/0x1)\n";
        let events = ["config".to_string(), "answer".to_string()];
        assert_eq!(
            parse_hits(trace, &events),
            vec![
                Hit {
                    event: "config".into(),
                    ns: 44_612_345_000
                },
                Hit {
                    event: "answer".into(),
                    ns: 44_613_001_000
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
            find_module_symbol(kallsyms, "virtio_gpu_rs", "8Displays4read"),
            ["_RNvMNtCsX_13virtio_gpu_rs7displayNtB2_8Displays4read"]
        );
        assert!(find_module_symbol(kallsyms, "virtio_gpu_rs", "5write").is_empty());
    }

    #[test]
    fn stamps_need_microseconds() {
        assert_eq!(stamp_ns("1.000001"), Some(1_000_001_000));
        assert_eq!(stamp_ns("1.5"), None);
        assert_eq!(stamp_ns("x.000001"), None);
    }
}
