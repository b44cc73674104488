//! Times the driver's uapi paths from userspace, the same way under either driver, so that
//! `cargo xtask bench` can set the Rust driver against C in one boot.
//!
//! Prints `drm_bench: <case> ns=<ns per operation>` for each case, then `drm_bench: done`:
//!
//! - `dumb_cycle`: create a 256x256 dumb buffer, map it (ioctl and `mmap`), write a byte,
//!   unmap, destroy; the object's release (the host unref and the deferred free) included.
//!   `dumb_create`, `dumb_map_write` and `dumb_destroy` split it into its phases.
//!   `dumb_destroy_enter`, `_build`, `_queue` and `_exit` split the destroy further, timed by
//!   kprobes over [`SPLIT_CYCLES`] more cycles (medians; a diagnostic, see [`DestroySplit`]),
//!   and `dumb_destroy_on_cpu` gives how many virtqueue interrupts and driver work items ran on
//!   the destroying CPU meanwhile (means).
//! - `create_wait`: `RESOURCE_CREATE` of a 64x64 resource, then `WAIT` on it: the fenced
//!   command's round trip, from submission through the device and the interrupt handler that
//!   signals the fence to the waiter woken; then the handle is closed.
//! - `transfer_4mib`: `TRANSFER_TO_HOST` of a whole 1024x1024 (4 MiB) resource; after the
//!   last one a fenced `RESOURCE_CREATE` and its `WAIT` drain the queue (the device answers in
//!   order), inside the timed span. `mb_per_s` gives the throughput.
//! - `display_info`: the display-info round trip after the host changes the display: from the
//!   device's configuration interrupt (`virtio_config_changed`, the same function under either
//!   driver) until the driver has the answer to its `GET_DISPLAY_INFO` (sent with the EDID
//!   requests). That end is the entry of C's response callback, which runs in its dequeue work
//!   item after the interrupt, and the entry of the Rust driver's `Displays::log`, the first
//!   thing its work item does with the displays read once the interrupt handler woke it (so
//!   Rust's span also holds the decoding of the answer, and its acknowledgement of the event,
//!   which C writes after the answer). All probes are entry probes, so that neither driver pays
//!   for one on its way to the device (a return probe would fire at the function's entry too).
//!   They are kprobe events timed by the trace's monotonic clock ([`virtgpu_guest::kprobe`]); the
//!   display is resized as `display-change` does it, [`RESIZES`] times, cycling through three
//!   sizes that end at the one a bench boot starts with. `ns` is the median.
//!   `display_info_irq` is the part from the first virtqueue interrupt of the change
//!   (`vring_interrupt`; the configuration must have an MSI-X vector of its own) to the same end:
//!   where C hops to its dequeue work item, and Rust's handler wakes the waiter.
//!   `display_info_work`, `_send` and `_host` split the part before that interrupt at the
//!   driver's first configuration read (`vp_get`, the `events_read` of its work item) and its
//!   first queue kick (`virtqueue_notify`): the work item's start, the driver building and
//!   queueing its commands, the device answering the first.
//!
//! Usage: `drm-bench c|rust [card]` (default `/dev/dri/card0`): the driver names the probe for
//! `display_info`. Exits non-zero if a call fails.

use std::os::fd::{AsFd, BorrowedFd};
use std::process::ExitCode;
use std::thread::sleep;
use std::time::{Duration, Instant};

use virtgpu_guest::kprobe::{self, Hit, Probe, Probes};
use virtgpu_guest::virtgpu;
use virtgpu_protocol::DISPLAY_REQUEST;

/// Rounds of each case: enough for a stable mean under TCG, few enough to stay short.
const CYCLES: u32 = 200;
const TRANSFERS: u32 = 100;

/// Display changes timed per run, cycling through [`DISPLAY_SIZES`] (a multiple of their number,
/// so that each run leaves the display as it found it).
const RESIZES: usize = 9;

/// The sizes asked for, in turn: the last is QEMU's default, the size a bench boot starts with
/// (the host ignores a request for the size the display has, and then no interrupt comes).
const DISPLAY_SIZES: [&str; 3] = ["800x600", "1024x768", "1280x800"];

/// How long one display change may take (the host's resize, the interrupt, the driver's work
/// item and its commands, under TCG).
const DISPLAY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long no probe may fire before the next display change.
const QUIET: Duration = Duration::from_millis(150);

type Res<T> = Result<T, String>;

/// The driver under test: it decides where the display-info answer is probed.
#[derive(Clone, Copy)]
enum Driver {
    C,
    Rust,
}

fn create(fd: BorrowedFd<'_>, w: u32, h: u32) -> Res<virtgpu::ResourceCreate> {
    virtgpu::call(
        fd,
        virtgpu::RESOURCE_CREATE,
        virtgpu::ResourceCreate::tex_2d(w, h, w * h * 4),
    )
    .map_err(|e| format!("RESOURCE_CREATE {w}x{h}: {e}"))
}

fn wait(fd: BorrowedFd<'_>, handle: u32) -> Res<()> {
    virtgpu::call(fd, virtgpu::WAIT, virtgpu::Wait { handle, flags: 0 })
        .map(drop)
        .map_err(|e| format!("WAIT: {e}"))
}

fn close(fd: BorrowedFd<'_>, handle: u32) -> Res<()> {
    drm_ffi::gem::close(fd, handle)
        .map(drop)
        .map_err(|e| format!("GEM_CLOSE: {e}"))
}

/// The phases of a dumb cycle: create, map and write (the ioctl, `mmap`, the first write's
/// fault, `munmap`), destroy (the release, up to the unref sent; the deferred free runs
/// meanwhile or during the next cycle).
const DUMB_PHASES: [&str; 3] = ["dumb_create", "dumb_map_write", "dumb_destroy"];

/// One dumb cycle; adds the time of each of its [`DUMB_PHASES`] to `phases`.
fn dumb_cycle(fd: BorrowedFd<'_>, phases: &mut [Duration; 3]) -> Res<()> {
    let t0 = Instant::now();
    let db = drm_ffi::mode::dumbbuffer::create(fd, 256, 256, 32, 0)
        .map_err(|e| format!("CREATE_DUMB: {e}"))?;
    let t1 = Instant::now();
    let map = drm_ffi::mode::dumbbuffer::map(fd, db.handle, 0, 0)
        .map_err(|e| format!("MAP_DUMB: {e}"))?;
    let mut mapping = virtgpu_guest::Mapping::new(fd, db.size as usize, map.offset)
        .map_err(|e| format!("mmap: {e}"))?;
    mapping.bytes()[0] = 1;
    drop(mapping);
    let t2 = Instant::now();
    drm_ffi::mode::dumbbuffer::destroy(fd, db.handle)
        .map(drop)
        .map_err(|e| format!("DESTROY_DUMB: {e}"))?;
    let t3 = Instant::now();
    for (phase, took) in phases.iter_mut().zip([t1 - t0, t2 - t1, t3 - t2]) {
        *phase += took;
    }
    Ok(())
}

/// `CYCLES` dumb cycles after a warm-up one: prints ns per cycle, then per phase.
fn dumb_cycles(fd: BorrowedFd<'_>) -> Res<()> {
    dumb_cycle(fd, &mut [Duration::ZERO; 3])?;
    let mut phases = [Duration::ZERO; 3];
    let start = Instant::now();
    for _ in 0..CYCLES {
        dumb_cycle(fd, &mut phases)?;
    }
    let per_op = |d: Duration| d.as_nanos() as f64 / f64::from(CYCLES);
    println!("drm_bench: dumb_cycle ns={:.0}", per_op(start.elapsed()));
    for (name, took) in DUMB_PHASES.iter().zip(phases) {
        println!("drm_bench: {name} ns={:.0}", per_op(took));
    }
    Ok(())
}

fn create_wait(fd: BorrowedFd<'_>) -> Res<()> {
    let r = create(fd, 64, 64)?;
    wait(fd, r.bo_handle)?;
    close(fd, r.bo_handle)
}

/// `TRANSFERS` transfers of a 4 MiB resource, drained; returns the time they took.
fn transfers(fd: BorrowedFd<'_>) -> Res<std::time::Duration> {
    let r = create(fd, 1024, 1024)?;
    wait(fd, r.bo_handle)?;
    let transfer = virtgpu::Transfer::whole(r.bo_handle, 1024, 1024);
    let start = Instant::now();
    for _ in 0..TRANSFERS {
        virtgpu::call(fd, virtgpu::TRANSFER_TO_HOST, transfer)
            .map_err(|e| format!("TRANSFER_TO_HOST: {e}"))?;
    }
    let marker = create(fd, 1, 1)?;
    wait(fd, marker.bo_handle)?;
    let took = start.elapsed();
    close(fd, marker.bo_handle)?;
    close(fd, r.bo_handle)?;
    Ok(took)
}

/// Dumb cycles whose destroy phase [`destroy_split`] splits.
const SPLIT_CYCLES: usize = 40;

/// The driver's GEM free callback and the work item that finishes a release after the
/// device answered the unref (C's dequeue work, Rust's reclaim work).
fn release_symbols(driver: Driver) -> Res<(String, String)> {
    match driver {
        Driver::C => Ok((
            "virtio_gpu_free_object".into(),
            "virtio_gpu_dequeue_ctrl_func".into(),
        )),
        Driver::Rust => Ok((
            kprobe::module_symbol("virtio_gpu_rs", &["2BoE13free_callback"])?,
            kprobe::module_symbol("virtio_gpu_rs", &["7reclaim", "8WorkItem3run"])?,
        )),
    }
}

/// One destroy, split at the entries of the ioctl (`destroy`), the driver's free callback
/// (`free`), the unref's `virtqueue_add_sgs` (`add`) and `virtqueue_notify` (`kick`), and
/// the next cycle's create ioctl (`next`, the end: userspace took its time stamp just before),
/// all in the destroying task. `irqs` and `works` count the virtqueue interrupts and the
/// driver's work items that ran on the destroying CPU meanwhile: they delay the return to
/// userspace.
#[derive(Debug, PartialEq, Eq)]
struct DestroySplit {
    enter: u64,
    build: u64,
    queue: u64,
    exit: u64,
    irqs: u64,
    works: u64,
}

impl DestroySplit {
    /// Each timed part with the case name it is printed under.
    fn parts(&self) -> [(&'static str, u64); 4] {
        [
            ("dumb_destroy_enter", self.enter),
            ("dumb_destroy_build", self.build),
            ("dumb_destroy_queue", self.queue),
            ("dumb_destroy_exit", self.exit),
        ]
    }
}

/// The destroys in `hits`: the [`DestroySplit`] of each that has every point, in order, before
/// the task's next create; and how many had no kick (the driver found the device did not need
/// a notification, as `virtqueue_kick_prepare` may) or missed another point.
fn destroy_splits(hits: &[Hit]) -> (Vec<DestroySplit>, usize) {
    let mut out = Vec::new();
    let mut incomplete = 0;
    for (d, hit) in hits
        .iter()
        .enumerate()
        .filter(|(_, h)| h.event == "destroy")
    {
        let (pid, cpu) = (hit.pid, hit.cpu);
        let Some(end) = hits[d..]
            .iter()
            .position(|h| h.event == "next" && h.pid == pid)
            .map(|i| d + i)
        else {
            continue;
        };
        let after = |from: usize, event: &str| {
            hits[from..end]
                .iter()
                .position(|h| h.event == event && h.pid == pid)
                .map(|i| from + i)
        };
        let Some((free, add, kick)) = after(d, "free").and_then(|free| {
            let add = after(free, "add")?;
            Some((free, add, after(add, "kick")?))
        }) else {
            incomplete += 1;
            continue;
        };
        let on_cpu = |event: &str| {
            hits[d..end]
                .iter()
                .filter(|h| h.event == event && h.cpu == cpu)
                .count() as u64
        };
        let ns = |i: usize| hits[i].ns;
        out.push(DestroySplit {
            enter: ns(free).saturating_sub(ns(d)),
            build: ns(add).saturating_sub(ns(free)),
            queue: ns(kick).saturating_sub(ns(add)),
            exit: ns(end).saturating_sub(ns(kick)),
            irqs: on_cpu("irq"),
            works: on_cpu("work"),
        });
    }
    (out, incomplete)
}

/// [`SPLIT_CYCLES`] dumb cycles under kprobes: prints the median of each part of the destroy
/// ([`DestroySplit`]) and the mean interrupts and work items on its CPU. A diagnostic: the
/// probes' own cost is in every part.
fn destroy_split(fd: BorrowedFd<'_>, driver: Driver) -> Res<()> {
    let (free, work) = release_symbols(driver)?;
    let probes = Probes::set(
        "drm_bench",
        &[
            Probe::entry("destroy", "drm_mode_destroy_dumb_ioctl"),
            Probe::entry("free", &free),
            Probe::entry("add", "virtqueue_add_sgs"),
            Probe::entry("kick", "virtqueue_notify"),
            Probe::entry("next", "drm_mode_create_dumb_ioctl"),
            Probe::entry("irq", "vring_interrupt"),
            Probe::entry("work", &work),
        ],
    )?;
    for _ in 0..SPLIT_CYCLES {
        dumb_cycle(fd, &mut [Duration::ZERO; 3])?;
    }
    // The last destroy's end.
    let db = drm_ffi::mode::dumbbuffer::create(fd, 1, 1, 32, 0)
        .map_err(|e| format!("CREATE_DUMB: {e}"))?;
    let (splits, incomplete) = destroy_splits(&probes.hits()?);
    drop(probes);
    drm_ffi::mode::dumbbuffer::destroy(fd, db.handle).map_err(|e| format!("DESTROY_DUMB: {e}"))?;
    if splits.len() < SPLIT_CYCLES / 2 {
        return Err(format!(
            "destroy split: {} of {SPLIT_CYCLES} destroys had every probe hit in order \
             ({incomplete} without a kick or another point)",
            splits.len()
        ));
    }
    let parts: Vec<_> = splits.iter().map(DestroySplit::parts).collect();
    print_medians(&parts, &format!("destroys={}", splits.len()));
    let mean = |f: fn(&DestroySplit) -> u64| {
        splits.iter().map(f).sum::<u64>() as f64 / splits.len() as f64
    };
    println!(
        "drm_bench: dumb_destroy_on_cpu irqs={:.2} works={:.2} incomplete={incomplete}",
        mean(|s| s.irqs),
        mean(|s| s.works)
    );
    Ok(())
}

/// The function whose entry shows that `driver` has the display-info answer in hand.
fn answer_symbol(driver: Driver) -> Res<String> {
    match driver {
        Driver::C => Ok("virtio_gpu_cmd_get_display_info_cb".into()),
        Driver::Rust => kprobe::module_symbol("virtio_gpu_rs", &["8Displays3log"]),
    }
}

/// The spans of one display change, in ns, from the hits of its probes.
#[derive(Debug, PartialEq, Eq)]
struct Spans {
    /// From the first configuration interrupt to the first answer after it.
    whole: u64,
    /// From the first virtqueue interrupt between the two to the answer: the driver's path from
    /// the interrupt that brings the first of its answers (an EDID's) to the code that takes the
    /// display info. (Not the last interrupt: C's handler leaves the used ring to its work item,
    /// so the display-info answer often raises none of its own, where Rust's handler has taken
    /// the EDID answer and the next one interrupts again.)
    from_irq: u64,
    /// The first half, split in three. `work`: from the configuration interrupt to the driver's
    /// first configuration read (`events_read`, in its work item).
    work: u64,
    /// From that read to the first kick of a virtqueue: the event read, acknowledged (Rust) and
    /// the commands built and queued.
    send: u64,
    /// From the kick to the first virtqueue interrupt: the device (QEMU) at work.
    host: u64,
}

impl Spans {
    /// Each span with the case name it is printed under.
    fn cases(&self) -> [(&'static str, u64); 5] {
        [
            ("display_info", self.whole),
            ("display_info_irq", self.from_irq),
            ("display_info_work", self.work),
            ("display_info_send", self.send),
            ("display_info_host", self.host),
        ]
    }
}

/// The [`Spans`] of the first display change in `hits`; None until every point is there, in
/// order: `config`, `read`, `kick`, `irq`, `answer`.
fn spans(hits: &[Hit]) -> Option<Spans> {
    let after = |from: usize, event: &str| {
        hits[from..]
            .iter()
            .position(|h| h.event == event)
            .map(|i| from + i)
    };
    let config = after(0, "config")?;
    let read = after(config, "read")?;
    let kick = after(read, "kick")?;
    let irq = after(kick, "irq")?;
    let answer = after(irq, "answer")?;
    let ns = |i: usize| hits[i].ns;
    Some(Spans {
        whole: ns(answer).checked_sub(ns(config))?,
        from_irq: ns(answer).checked_sub(ns(irq))?,
        work: ns(read).checked_sub(ns(config))?,
        send: ns(kick).checked_sub(ns(read))?,
        host: ns(irq).checked_sub(ns(kick))?,
    })
}

/// Asks the host for `size`, then waits for the configuration interrupt and the answer after
/// it; returns its [`Spans`].
fn display_change(probes: &Probes, size: &str) -> Res<Spans> {
    probes.clear()?;
    println!("{DISPLAY_REQUEST}{size}");
    let start = Instant::now();
    while start.elapsed() < DISPLAY_TIMEOUT {
        sleep(Duration::from_millis(10));
        if let Some(spans) = spans(&probes.hits()?) {
            return Ok(spans);
        }
    }
    Err(format!(
        "asked for {size}: no configuration interrupt, configuration read, kick, virtqueue \
         interrupt and display-info answer within {}s (a bench boot's display must start at {})",
        DISPLAY_TIMEOUT.as_secs(),
        DISPLAY_SIZES[DISPLAY_SIZES.len() - 1]
    ))
}

/// Waits until the driver is done with a change (its log, C's hotplug probe, a second
/// configuration interrupt the host may raise): until no probe fires for [`QUIET`], so that no
/// hit of this change is taken for one of the next.
fn settle(probes: &Probes) -> Res<()> {
    let start = Instant::now();
    let mut seen = probes.hits()?.len();
    while start.elapsed() < DISPLAY_TIMEOUT {
        sleep(QUIET);
        let now = probes.hits()?.len();
        if now == seen {
            return Ok(());
        }
        seen = now;
    }
    Err(format!(
        "the probes kept firing for {}s after a display change",
        DISPLAY_TIMEOUT.as_secs()
    ))
}

/// Prints `drm_bench: <case> ns=<median> <count>` for each case of `rows`, one row per
/// measurement, every row naming the same cases in the same order.
fn print_medians<const N: usize>(rows: &[[(&'static str, u64); N]], count: &str) {
    let Some(first) = rows.first() else {
        return;
    };
    for (i, (case, _)) in first.iter().enumerate() {
        let ns = median(rows.iter().map(|r| r[i].1).collect());
        println!("drm_bench: {case} ns={ns} {count}");
    }
}

/// The median of `xs` (the upper middle one for an even count); 0 if empty.
fn median(mut xs: Vec<u64>) -> u64 {
    xs.sort_unstable();
    xs.get(xs.len() / 2).copied().unwrap_or(0)
}

/// Whether the virtio device's configuration changes come on an MSI-X vector of their own (a
/// `virtioN-config` line in `/proc/interrupts`). On a shared line, every configuration interrupt
/// also runs `vring_interrupt` for each queue, and [`spans`] would take that for an answer's.
fn own_config_vector() -> Res<bool> {
    let text = std::fs::read_to_string("/proc/interrupts")
        .map_err(|e| format!("cannot read /proc/interrupts: {e}"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .any(|name| name.starts_with("virtio") && name.ends_with("-config")))
}

/// [`RESIZES`] display changes; prints the median of each span.
fn display_info(driver: Driver) -> Res<()> {
    if !own_config_vector()? {
        return Err("display_info: the virtio interrupts share a line (no MSI-X)".into());
    }
    let probes = Probes::set(
        "drm_bench",
        &[
            Probe::entry("config", "virtio_config_changed"),
            // The virtio-pci transports' configuration read (legacy and modern both have a
            // `vp_get`) and the queue kick: shared code.
            Probe::entry_of_each("read", "vp_get"),
            Probe::entry("kick", "virtqueue_notify"),
            Probe::entry("irq", "vring_interrupt"),
            Probe::entry("answer", &answer_symbol(driver)?),
        ],
    )?;
    let mut changes = Vec::new();
    for size in DISPLAY_SIZES.iter().cycle().take(RESIZES) {
        changes.push(display_change(&probes, size)?);
        settle(&probes)?;
    }
    let cases: Vec<_> = changes.iter().map(Spans::cases).collect();
    print_medians(&cases, &format!("resizes={RESIZES}"));
    Ok(())
}

/// Runs `op` `n` times; prints and returns ns per run.
fn timed(case: &str, n: u32, mut op: impl FnMut() -> Res<()>) -> Res<f64> {
    op()?; // warm-up, not timed
    let start = Instant::now();
    for _ in 0..n {
        op()?;
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
    println!("drm_bench: {case} ns={ns:.0}");
    Ok(ns)
}

fn run(fd: BorrowedFd<'_>, driver: Driver) -> Res<()> {
    dumb_cycles(fd)?;
    timed("create_wait", CYCLES, || create_wait(fd))?;
    transfers(fd)?; // warm-up
    let took = transfers(fd)?;
    let ns = took.as_nanos() as f64 / f64::from(TRANSFERS);
    let mb_per_s = 4.0 * f64::from(TRANSFERS) / took.as_secs_f64();
    println!("drm_bench: transfer_4mib ns={ns:.0} mb_per_s={mb_per_s:.1}");
    display_info(driver)?;
    destroy_split(fd, driver)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let driver = match args.next().as_deref() {
        Some("c") => Driver::C,
        Some("rust") => Driver::Rust,
        _ => {
            eprintln!("usage: drm-bench c|rust [card]");
            return ExitCode::FAILURE;
        }
    };
    let card = args.next().unwrap_or_else(|| "/dev/dri/card0".into());
    let r = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&card)
        .map_err(|e| format!("opening {card}: {e}"))
        .and_then(|f| run(f.as_fd(), driver));
    match r {
        Ok(()) => {
            println!("drm_bench: done");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("drm-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hits of (event, ns), all in one task on one CPU.
    fn hits(xs: &[(&str, u64)]) -> Vec<Hit> {
        let xs: Vec<_> = xs.iter().map(|&(e, ns)| (e, ns, 0, 1)).collect();
        hits_in(&xs)
    }

    /// Hits of (event, ns, cpu, pid).
    fn hits_in(xs: &[(&str, u64, u32, u32)]) -> Vec<Hit> {
        xs.iter()
            .map(|(e, ns, cpu, pid)| Hit {
                event: e.to_string(),
                ns: *ns,
                cpu: *cpu,
                pid: *pid,
            })
            .collect()
    }

    #[test]
    fn destroys_are_split_within_their_task_and_cycle() {
        let h = hits_in(&[
            ("next", 1, 0, 7),
            ("destroy", 10, 0, 7),
            // Another task's, on the other CPU and on this one: not this destroy's.
            ("add", 12, 1, 9),
            ("free", 15, 0, 9),
            ("free", 20, 0, 7),
            ("irq", 25, 1, 0),
            ("add", 30, 0, 7),
            ("kick", 35, 1, 9),
            ("kick", 40, 0, 7),
            ("irq", 45, 0, 7),
            ("work", 50, 0, 30),
            ("next", 55, 1, 9),
            ("irq", 58, 0, 7),
            ("next", 60, 0, 7),
            ("work", 61, 0, 30),
            // No kick before its task's next create: incomplete, and the later kick is not
            // borrowed.
            ("destroy", 70, 1, 7),
            ("free", 71, 1, 7),
            ("add", 72, 1, 7),
            ("next", 74, 1, 7),
            ("destroy", 80, 1, 7),
            ("free", 81, 1, 7),
            ("add", 82, 1, 7),
            ("kick", 83, 1, 7),
            ("next", 90, 1, 7),
        ]);
        let (splits, incomplete) = destroy_splits(&h);
        assert_eq!(
            splits,
            vec![
                DestroySplit {
                    enter: 10,
                    build: 10,
                    queue: 10,
                    exit: 20,
                    irqs: 2,
                    works: 1,
                },
                DestroySplit {
                    enter: 1,
                    build: 1,
                    queue: 1,
                    exit: 7,
                    irqs: 0,
                    works: 0,
                },
            ]
        );
        assert_eq!(incomplete, 1);
    }

    #[test]
    fn spans_run_from_the_config_and_the_first_irq_to_the_answer() {
        let h = hits(&[
            ("irq", 5),
            ("answer", 6),
            ("config", 10),
            ("irq", 12),
            ("read", 20),
            ("read", 22),
            ("irq", 25),
            ("kick", 30),
            ("irq", 40),
            ("irq", 70),
            ("answer", 100),
            ("irq", 120),
            ("answer", 130),
        ]);
        let whole = Spans {
            whole: 90,
            from_irq: 60,
            work: 10,
            send: 10,
            host: 10,
        };
        assert_eq!(spans(&h), Some(whole));
        // Not yet complete: no answer, or no interrupt before it.
        assert_eq!(spans(&h[..10]), None);
        assert_eq!(spans(&hits(&[("config", 1), ("answer", 2)])), None);
        assert_eq!(
            spans(&hits(&[
                ("config", 1),
                ("read", 2),
                ("kick", 3),
                ("answer", 4)
            ])),
            None
        );
        assert_eq!(median(vec![3, 1, 2, 9]), 3);
    }
}
