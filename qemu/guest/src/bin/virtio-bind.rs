//! Loads the Rust driver, checks that it takes the virtio-gpu device and talks to it, then
//! unbinds and binds it through sysfs and reloads the module, many times.
//!
//! Usage: `virtio-bind [module] [rebinds] [reloads]` (defaults: `virtio_gpu_rs`, 50, 20). The C
//! driver must not be loaded. Every bind must end with the device bound to `module` and a new
//! display-info line of the driver in the kernel log (`<module> virtioN: scanout 0: WxH...`),
//! which proves that a command went out on the control queue and its response came back through
//! the interrupt path. While bound, the driver's DRM device must be there (a primary and a
//! render node under the virtio device), named and versioned as the C driver, and answer
//! GETPARAM as C does for the features the driver logged. Dumb buffers of several sizes must be
//! created with C's pitch and size, mapped, written and read back through the mapping, and
//! destroyed, many times, with no error answer from the host in the kernel log (a resource
//! created twice, a bad backing address or an unref of an unknown resource would give one); bad
//! arguments get C's errno. In every unbind/bind cycle a client holds the render node open with
//! a mapped, written resource: after the unbind its next ioctl must get `ENODEV` and its mapping
//! must still read back. An unbind while a client has a mode set and a page flip pending on the
//! card node gets the same `ENODEV`, and the device binds again. With the driver's fault injection holding the device's completions (a
//! device that stopped answering), a `WAIT` interrupted by a signal gets `EINTR`, and an unbind
//! while the control queue is full wakes the submitter waiting for room with `ENODEV`. The
//! module is unloaded at the end. Reports KTAP (suite
//! `virtio_bind`); exits 0 only when every case passed.

use std::fs;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread::sleep;
use std::time::{Duration, Instant};

use drm::buffer::DrmFourcc;
use drm::control::{connector, Device as ControlDevice, PageFlipFlags};
use virtgpu_guest::{
    drm_raw_ioctl, kernel_log, run, virtgpu, virtgpu_getparam, virtgpu_getparam_bad_pointer,
    VIRTGPU_PARAMS,
};
use virtgpu_protocol::ktap::Suite;

/// `VIRTIO_ID_GPU`, as sysfs prints a device type.
const GPU_TYPE: &str = "0x0010";
const DEVICES: &str = "/sys/bus/virtio/devices";

/// The virtio-gpu device's sysfs name (`virtio0`).
fn gpu_device() -> Result<String, String> {
    let entries = fs::read_dir(DEVICES).map_err(|e| format!("cannot list {DEVICES}: {e}"))?;
    for e in entries.flatten() {
        let ty = fs::read_to_string(e.path().join("device")).unwrap_or_default();
        if ty.trim() == GPU_TYPE {
            return Ok(e.file_name().to_string_lossy().into_owned());
        }
    }
    Err(format!("no virtio device of type {GPU_TYPE} in {DEVICES}"))
}

/// The driver `dev` is bound to, if any.
fn bound_driver(dev: &str) -> Option<String> {
    let link = fs::read_link(Path::new(DEVICES).join(dev).join("driver")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// The driver's display-info lines for `dev` in the kernel log.
fn display_lines(module: &str, dev: &str) -> Result<Vec<String>, String> {
    let prefix = format!("{module} {dev}: scanout 0: ");
    Ok(kernel_log()?
        .into_iter()
        .filter(|l| l.starts_with(&prefix))
        .collect())
}

/// Waits up to 10 s for `dev` to be bound to `module` with one more display-info line than
/// `before`; returns the new line.
fn wait_bound(module: &str, dev: &str, before: usize) -> Result<String, String> {
    let start = Instant::now();
    loop {
        let lines = display_lines(module, dev)?;
        let bound = bound_driver(dev);
        if bound.as_deref() == Some(module) && lines.len() > before {
            return Ok(lines[lines.len() - 1].clone());
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "after 10 s: {dev} bound to {bound:?}, {} display-info lines (had {before})",
                lines.len()
            ));
        }
        sleep(Duration::from_millis(50));
    }
}

/// Checks a display-info line names a real mode: `scanout 0: WxH+X+Y enabled`, W and H > 0.
fn check_mode(line: &str) -> Result<(), String> {
    let rest = line
        .split_once("scanout 0: ")
        .map(|(_, r)| r)
        .ok_or_else(|| format!("not a display-info line: {line:?}"))?;
    let (w, rest) = rest
        .split_once('x')
        .ok_or_else(|| format!("no WxH in {line:?}"))?;
    let h = rest.split('+').next().unwrap_or("");
    let (w, h): (u32, u32) = match (w.parse(), h.parse()) {
        (Ok(w), Ok(h)) => (w, h),
        _ => return Err(format!("no WxH in {line:?}")),
    };
    if w == 0 || h == 0 || !line.ends_with(" enabled") {
        return Err(format!("scanout 0 has no enabled mode: {line:?}"));
    }
    Ok(())
}

/// With `+edid` in the driver's feature line, the driver must have logged an EDID of scanout 0
/// of one or more 128-byte blocks.
fn check_edid(module: &str, dev: &str) -> Result<(), String> {
    let features = logged_features(module, dev)?;
    if !features.iter().any(|(f, on)| f == "edid" && *on) {
        return Err("the device offers no EDIDs (-edid): nothing to check".into());
    }
    let prefix = format!("{module} {dev}: EDID of scanout 0: ");
    let line = kernel_log()?
        .into_iter()
        .rfind(|l| l.starts_with(&prefix))
        .ok_or_else(|| format!("no `{prefix}` line"))?;
    let bytes: usize = line[prefix.len()..]
        .strip_suffix(" bytes")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no size in {line:?}"))?;
    if bytes == 0 || !bytes.is_multiple_of(128) {
        return Err(format!("{line:?}: an EDID is one or more 128-byte blocks"));
    }
    Ok(())
}

/// The DRM nodes of `dev` (`card0`, `renderD128`), from sysfs.
fn drm_nodes(dev: &str) -> Result<Vec<String>, String> {
    let dir = Path::new(DEVICES).join(dev).join("drm");
    let mut nodes: Vec<String> = fs::read_dir(&dir)
        .map_err(|e| format!("no DRM device under {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("card") || n.starts_with("renderD"))
        .collect();
    nodes.sort();
    Ok(nodes)
}

/// Opens `dev`'s DRM node whose name starts with `kind` (`card`, `renderD`).
fn open_node(dev: &str, kind: &str) -> Result<fs::File, String> {
    let nodes = drm_nodes(dev)?;
    let node = nodes
        .iter()
        .find(|n| n.starts_with(kind))
        .ok_or_else(|| format!("{dev} has no {kind} node: {nodes:?}"))?;
    let path = format!("/dev/dri/{node}");
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {path}: {e}"))
}

/// Opens `dev`'s render node, once it has a primary node too.
fn open_render(dev: &str) -> Result<fs::File, String> {
    if !drm_nodes(dev)?.iter().any(|n| n.starts_with("card")) {
        return Err(format!("{dev} has no primary node"));
    }
    open_node(dev, "renderD")
}

/// Opens `dev`'s primary node (dumb buffers are not render-node ioctls).
fn open_primary(dev: &str) -> Result<fs::File, String> {
    open_node(dev, "card")
}

/// Checks the DRM version: what the C driver reports (name, description, 0.1.0).
fn check_version(f: &fs::File) -> Result<String, String> {
    let (mut name, mut date, mut desc) = (Vec::new(), Vec::new(), Vec::new());
    let v = drm_ffi::get_version(f.as_fd(), Some(&mut name), Some(&mut date), Some(&mut desc))
        .map_err(|e| format!("DRM_IOCTL_VERSION: {e}"))?;
    let text = |b: &[i8]| b.iter().map(|&c| c as u8 as char).collect::<String>();
    let got = format!(
        "{} {}.{}.{} {:?}",
        text(&name),
        v.version_major,
        v.version_minor,
        v.version_patchlevel,
        text(&desc)
    );
    if got != "virtio_gpu 0.1.0 \"virtio GPU\"" {
        return Err(format!(
            "version is {got}, C reports virtio_gpu 0.1.0 \"virtio GPU\""
        ));
    }
    Ok(got)
}

/// The `+name`/`-name` features of the driver's last "features:" lines for `dev`.
fn logged_features(module: &str, dev: &str) -> Result<Vec<(String, bool)>, String> {
    let prefix = format!("{module} {dev}: features: ");
    let lines: Vec<String> = kernel_log()?
        .into_iter()
        .filter(|l| l.starts_with(&prefix))
        .collect();
    let last_two = lines.iter().rev().take(2);
    let mut out = Vec::new();
    for l in last_two {
        for w in l[prefix.len()..].split_whitespace() {
            let (on, name) = w.split_at(1);
            out.push((name.to_string(), on == "+"));
        }
    }
    if out.is_empty() {
        return Err(format!("no \"{prefix}\" line in the kernel log"));
    }
    Ok(out)
}

/// Checks GETPARAM against what the C driver answers for the features the driver logged.
fn check_getparam(f: &fs::File, features: &[(String, bool)]) -> Result<(), String> {
    let has = |n: &str| features.iter().any(|(name, on)| name == n && *on);
    for (name, param) in VIRTGPU_PARAMS {
        let want: Result<i32, i32> = match *name {
            // The driver says 0 for features whose ioctls it does not have yet (3D, blob
            // resources, context init), where C says whether the device has them; on QEMU's
            // 2D device both say 0.
            "3D_FEATURES" | "RESOURCE_BLOB" | "CONTEXT_INIT" | "EXPLICIT_DEBUG_NAME" => Ok(0),
            "CAPSET_QUERY_FIX" => Ok(1),
            "HOST_VISIBLE" => Ok(has("host_visible").into()),
            "CROSS_DEVICE" => Ok(has("resource_uuid").into()),
            // QEMU's 2D device has no capsets.
            "SUPPORTED_CAPSET_IDs" => Ok(0),
            "BLOB_ALIGNMENT" if !has("blob_alignment") => Err(libc::ENOENT),
            "BLOB_ALIGNMENT" => continue,
            _ => Err(libc::EINVAL),
        };
        let got = virtgpu_getparam(f.as_fd(), *param);
        match (&want, &got) {
            (Ok(v), Ok(g)) if g.value == *v && g.wrote_int => {}
            (Err(e), Err(g)) if g.raw_os_error() == Some(*e) => {}
            _ => return Err(format!("GETPARAM {name}: want {want:?}, got {got:?}")),
        }
    }
    match virtgpu_getparam_bad_pointer(f.as_fd(), 1) {
        Err(e) if e.raw_os_error() == Some(libc::EFAULT) => {}
        other => {
            return Err(format!(
                "GETPARAM to a bad pointer: want EFAULT, got {other:?}"
            ))
        }
    }
    // The empty first slot of the virtgpu table, and a number past its end: EINVAL, as C.
    for nr in [0x40, 0x4c] {
        match drm_raw_ioctl(f.as_fd(), nr) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            other => return Err(format!("ioctl 0x{nr:x}: want EINVAL, got {other:?}")),
        }
    }
    Ok(())
}

/// A dumb buffer or resource mapped into this process; unmapped and closed when dropped.
struct Mapped<'a> {
    fd: std::os::fd::BorrowedFd<'a>,
    handle: u32,
    mapping: Option<virtgpu_guest::Mapping>,
}

impl<'a> Mapped<'a> {
    /// Creates a `width` x `height` XRGB8888 dumb buffer and maps it, checking the pitch and
    /// size against what C returns: `width * 4` and `width * 4 * height` rounded up to a page.
    fn new(fd: std::os::fd::BorrowedFd<'a>, width: u32, height: u32) -> Result<Self, String> {
        let what = format!("{width}x{height}");
        let db = drm_ffi::mode::dumbbuffer::create(fd, width, height, 32, 0)
            .map_err(|e| format!("create {what}: {e}"))?;
        let want_size = (u64::from(width) * 4 * u64::from(height)).next_multiple_of(4096);
        if db.handle == 0 || db.pitch != width * 4 || db.size != want_size {
            let _ = drm_ffi::mode::dumbbuffer::destroy(fd, db.handle);
            return Err(format!(
                "create {what}: handle {}, pitch {}, size {}; C gives a handle, pitch {}, size {want_size}",
                db.handle,
                db.pitch,
                db.size,
                width * 4
            ));
        }
        let map = drm_ffi::mode::dumbbuffer::map(fd, db.handle, 0, 0)
            .map_err(|e| format!("map {what}: {e}"))?;
        Self::map(fd, db.handle, db.size as usize, map.offset, &what)
    }

    /// Creates a `width` x `height` 2D resource with `DRM_IOCTL_VIRTGPU_RESOURCE_CREATE` (a
    /// render-node ioctl) and maps it through `DRM_IOCTL_VIRTGPU_MAP`.
    fn resource(fd: std::os::fd::BorrowedFd<'a>, width: u32, height: u32) -> Result<Self, String> {
        let what = format!("resource {width}x{height}");
        let size = width * height * 4;
        let rc = virtgpu::call(
            fd,
            virtgpu::RESOURCE_CREATE,
            virtgpu::ResourceCreate::tex_2d(width, height, size),
        )
        .map_err(|e| format!("create {what}: {e}"))?;
        let map = virtgpu::Map {
            handle: rc.bo_handle,
            ..Default::default()
        };
        let map = match virtgpu::call(fd, virtgpu::MAP, map) {
            Ok(m) => m,
            Err(e) => {
                let _ = drm_ffi::gem::close(fd, rc.bo_handle);
                return Err(format!("map {what}: {e}"));
            }
        };
        Self::map(fd, rc.bo_handle, size as usize, map.offset, &what)
    }

    /// Maps `len` bytes of object `handle` at the fake offset `offset`; the object is closed on
    /// failure.
    fn map(
        fd: std::os::fd::BorrowedFd<'a>,
        handle: u32,
        len: usize,
        offset: u64,
        what: &str,
    ) -> Result<Self, String> {
        let mut this = Self {
            fd,
            handle,
            mapping: None,
        };
        let mapping = virtgpu_guest::Mapping::new(fd, len, offset)
            .map_err(|e| format!("mmap {what}: {e}"))?;
        this.mapping = Some(mapping);
        Ok(this)
    }

    fn bytes(&mut self) -> &mut [u8] {
        self.mapping.as_mut().map_or(&mut [], |m| m.bytes())
    }

    /// Fills the buffer with a pattern of `seed` and checks it reads back.
    fn write_and_check(&mut self, seed: u8) -> Result<(), String> {
        let pattern = |i: usize| (i as u8).wrapping_mul(31).wrapping_add(seed);
        for (i, b) in self.bytes().iter_mut().enumerate() {
            *b = pattern(i);
        }
        self.check(seed)
    }

    /// Checks the buffer holds the pattern of `seed`.
    fn check(&mut self, seed: u8) -> Result<(), String> {
        let pattern = |i: usize| (i as u8).wrapping_mul(31).wrapping_add(seed);
        match self
            .bytes()
            .iter()
            .enumerate()
            .find(|(i, b)| **b != pattern(*i))
        {
            Some((i, b)) => Err(format!("byte {i} reads {b}, {} was written", pattern(i))),
            None => Ok(()),
        }
    }
}

impl Drop for Mapped<'_> {
    fn drop(&mut self) {
        self.mapping = None;
        let _ = drm_ffi::gem::close(self.fd, self.handle);
    }
}

/// The host's error answers the driver logged (`<module>: response 0x... (command 0x...)`).
fn host_errors(module: &str) -> Result<Vec<String>, String> {
    let prefix = format!("{module}: response ");
    Ok(kernel_log()?
        .into_iter()
        .filter(|l| l.starts_with(&prefix))
        .collect())
}

/// Dumb buffers: sizes, mapping, C's errnos, and `cycles` create/map/write/destroy rounds, with
/// no error answer from the host meanwhile.
fn check_dumb_buffers(module: &str, f: &fs::File, cycles: u32) -> Result<String, String> {
    let fd = f.as_fd();
    let errors_before = host_errors(module)?.len();
    for (w, h) in [(64, 64), (1, 1), (1280, 800), (4097, 3)] {
        Mapped::new(fd, w, h)?
            .write_and_check(w as u8)
            .map_err(|e| format!("{w}x{h}: {e}"))?;
    }
    // C refuses any bpp but 32 with EINVAL; the core refuses a zero width with EINVAL.
    for (w, h, bpp, what) in [(64, 64, 24, "bpp 24"), (0, 64, 32, "width 0")] {
        match drm_ffi::mode::dumbbuffer::create(fd, w, h, bpp, 0) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Ok(db) => {
                let _ = drm_ffi::mode::dumbbuffer::destroy(fd, db.handle);
                return Err(format!("create with {what}: succeeded, C gives EINVAL"));
            }
            Err(e) => return Err(format!("create with {what}: {e}, C gives EINVAL")),
        }
    }
    // Several alive at once, then freed in another order than created.
    for round in 0..cycles {
        let mut live = Vec::new();
        for i in 0..4u32 {
            let mut m = Mapped::new(fd, 256 + i, 64)?;
            m.write_and_check((round + i) as u8)
                .map_err(|e| format!("round {round}: {e}"))?;
            live.push(m);
        }
        live.swap(0, 3);
    }
    let errors = host_errors(module)?;
    if errors.len() > errors_before {
        return Err(format!(
            "the host answered with errors: {:?}",
            &errors[errors_before..]
        ));
    }
    Ok(format!(
        "4 sizes, 2 bad arguments, {cycles} rounds of 4 buffers; no host error"
    ))
}

fn write_attr(path: PathBuf, value: &str) -> Result<(), String> {
    fs::write(&path, value).map_err(|e| format!("cannot write {value} to {}: {e}", path.display()))
}

/// Makes the driver of `dev` hold the device's completions, as a device that stopped answering,
/// or complete what it held (`CONFIG_DRM_VIRTIO_GPU_RS_FAULT_INJECTION`).
fn hold_completions(dev: &str, hold: bool) -> Result<(), String> {
    let knob = PathBuf::from(format!(
        "/sys/kernel/debug/virtio_gpu_rs-{dev}/hold_completions"
    ));
    write_attr(knob, if hold { "1" } else { "0" })
}

/// An ioctl's errno, for messages.
fn errno<T: std::fmt::Debug>(r: &std::io::Result<T>) -> String {
    match r {
        Ok(v) => format!("success ({v:?})"),
        Err(e) => format!("{e}"),
    }
}

extern "C" fn on_alarm(_: libc::c_int) {}

/// Delivers SIGALRM to this thread's process after `after`, with a handler installed without
/// `SA_RESTART`: an interrupted ioctl returns `EINTR` instead of restarting.
fn alarm_in(after: Duration) -> Result<(), String> {
    // SAFETY: A zeroed `sigaction` is valid; the handler is a no-op, async-signal-safe.
    let installed = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut())
    };
    if installed != 0 {
        return Err(format!("sigaction: {}", std::io::Error::last_os_error()));
    }
    let timer = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: libc::timeval {
            tv_sec: after.as_secs() as libc::time_t,
            tv_usec: after.subsec_micros() as libc::suseconds_t,
        },
    };
    // SAFETY: `timer` is a valid `itimerval`; the old value is not wanted.
    if unsafe { libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) } != 0 {
        return Err(format!("setitimer: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// A `WAIT` on a resource whose creation the device has not answered: `NOWAIT` gets `EBUSY`,
/// a blocking wait interrupted by a signal gets `EINTR` (well before WAIT's 15 s), and once the
/// answers come the same wait succeeds.
fn check_interrupted_wait(dev: &str) -> Result<String, String> {
    let f = open_render(dev)?;
    let fd = f.as_fd();
    hold_completions(dev, true)?;
    let res = (|| {
        let rc = virtgpu::call(
            fd,
            virtgpu::RESOURCE_CREATE,
            virtgpu::ResourceCreate::tex_2d(64, 64, 64 * 64 * 4),
        )
        .map_err(|e| format!("RESOURCE_CREATE: {e}"))?;
        let wait = |flags| {
            virtgpu::call(
                fd,
                virtgpu::WAIT,
                virtgpu::Wait {
                    handle: rc.bo_handle,
                    flags,
                },
            )
        };
        let busy = wait(virtgpu::WAIT_NOWAIT);
        if busy.as_ref().err().and_then(|e| e.raw_os_error()) != Some(libc::EBUSY) {
            return Err(format!(
                "WAIT NOWAIT while unanswered: {}, want EBUSY",
                errno(&busy)
            ));
        }
        alarm_in(Duration::from_millis(300))?;
        let start = Instant::now();
        let interrupted = wait(0);
        let took = start.elapsed();
        if interrupted.as_ref().err().and_then(|e| e.raw_os_error()) != Some(libc::EINTR) {
            return Err(format!(
                "WAIT interrupted by SIGALRM after {took:?}: {}, want EINTR",
                errno(&interrupted)
            ));
        }
        hold_completions(dev, false)?;
        let done = wait(0);
        let _ = drm_ffi::gem::close(fd, rc.bo_handle);
        done.map_err(|e| format!("WAIT once answered: {e}"))?;
        Ok(format!(
            "WAIT interrupted after {} ms with EINTR; succeeded once the answers came",
            took.as_millis()
        ))
    })();
    let _ = hold_completions(dev, false);
    res
}

/// This thread's id, to read its state in /proc.
fn gettid() -> i32 {
    // SAFETY: `gettid` has no preconditions.
    unsafe { libc::gettid() }
}

/// The state letter of thread `tid` of this process (`D`: uninterruptible sleep).
fn thread_state(tid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Removal while the control queue is full and a submitter waits for room: with completions
/// held, a thread submits `TRANSFER_TO_HOST` until it sleeps in the driver; then the device is
/// unbound. The submitter must wake with `ENODEV`, the unbind must finish, and a bind after it
/// must work.
fn check_full_queue_removal(module: &str, dev: &str, drv: &Path) -> Result<String, String> {
    let f = open_render(dev)?;
    let rc = virtgpu::call(
        f.as_fd(),
        virtgpu::RESOURCE_CREATE,
        virtgpu::ResourceCreate::tex_2d(64, 64, 64 * 64 * 4),
    )
    .map_err(|e| format!("RESOURCE_CREATE: {e}"))?;
    hold_completions(dev, true)?;
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let tid = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
    let submitter = {
        let (sent, tid) = (sent.clone(), tid.clone());
        let f = f.try_clone().map_err(|e| format!("dup: {e}"))?;
        std::thread::spawn(move || {
            tid.store(gettid(), std::sync::atomic::Ordering::SeqCst);
            let transfer = virtgpu::Transfer::whole(rc.bo_handle, 64, 64);
            loop {
                if let Err(e) = virtgpu::call(f.as_fd(), virtgpu::TRANSFER_TO_HOST, transfer) {
                    return e;
                }
                sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    // Asleep in the driver: the count stands still and the thread is in uninterruptible sleep.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = u32::MAX;
    let asleep = loop {
        sleep(Duration::from_millis(500));
        let now = sent.load(std::sync::atomic::Ordering::SeqCst);
        let state = thread_state(tid.load(std::sync::atomic::Ordering::SeqCst));
        if now == last && state == Some('D') {
            break Ok(now);
        }
        if submitter.is_finished() || Instant::now() > deadline {
            break Err(format!(
                "the submitter did not sleep for room: {now} transfers sent, state {state:?}"
            ));
        }
        last = now;
    };
    let before = display_lines(module, dev)?.len();
    // Unbind even if the submitter never slept: it must not be left holding the device.
    let unbound = write_attr(drv.join("unbind"), dev);
    let woke = submitter
        .join()
        .map_err(|_| "the submitter panicked".to_string())?;
    let sent = asleep?;
    unbound?;
    drop(f);
    write_attr(drv.join("bind"), dev)?;
    let line = wait_bound(module, dev, before)?;
    check_mode(&line)?;
    if woke.raw_os_error() != Some(libc::ENODEV) {
        return Err(format!("the waiting submitter got {woke}, want ENODEV"));
    }
    Ok(format!(
        "{sent} transfers filled the queue; the submitter waiting for room woke with ENODEV at unbind"
    ))
}

/// The card node of the device, for the `drm` crate's modesetting calls.
struct Card(fs::File);

impl AsFd for Card {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl drm::Device for Card {}
impl ControlDevice for Card {}

/// An unbind while a client has a mode set and a page flip pending on the card node (the CRTC's
/// vblank timer running, an event armed): the client's next ioctl gets `ENODEV`, closing the
/// card afterwards (its framebuffers and buffers) is fine, and the device binds again. The
/// driver switches the output off after the unplug; the boot's splat check and kmemleak scan
/// judge that teardown.
fn check_unbind_with_active_mode(module: &str, dev: &str, drv: &Path) -> Result<String, String> {
    let card = Card(open_primary(dev)?);
    let res = card
        .resource_handles()
        .map_err(|e| format!("GETRESOURCES: {e}"))?;
    let (con, mode) = res
        .connectors()
        .iter()
        .filter_map(|&c| card.get_connector(c, false).ok())
        .filter(|info| info.state() == connector::State::Connected)
        .find_map(|info| Some((info.handle(), *info.modes().first()?)))
        .ok_or("no connected connector with a mode")?;
    let crtc = *res.crtcs().first().ok_or("no CRTC")?;
    let (w, h) = mode.size();
    let mut fbs = Vec::new();
    for _ in 0..2 {
        let db = card
            .create_dumb_buffer((w.into(), h.into()), DrmFourcc::Xrgb8888, 32)
            .map_err(|e| format!("CREATE_DUMB {w}x{h}: {e}"))?;
        let fb = card
            .add_framebuffer(&db, 24, 32)
            .map_err(|e| format!("ADDFB: {e}"))?;
        fbs.push(fb);
    }
    card.set_crtc(crtc, Some(fbs[0]), (0, 0), &[con], Some(mode))
        .map_err(|e| format!("SETCRTC {w}x{h}: {e}"))?;
    card.page_flip(crtc, fbs[1], PageFlipFlags::EVENT, None)
        .map_err(|e| format!("PAGE_FLIP: {e}"))?;
    let before = display_lines(module, dev)?.len();
    write_attr(drv.join("unbind"), dev)?;
    let after = card.resource_handles().map(drop);
    drop(card);
    write_attr(drv.join("bind"), dev)?;
    wait_bound(module, dev, before)?;
    match after {
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(format!(
            "{w}x{h} set and a flip pending at the unbind; GETRESOURCES then got ENODEV"
        )),
        other => Err(format!(
            "GETRESOURCES after unbind: want ENODEV, got {other:?}"
        )),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let module = args
        .first()
        .cloned()
        .unwrap_or_else(|| "virtio_gpu_rs".into());
    let rebinds: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(50);
    let reloads: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    let mut k = Suite::start("virtio_bind", None);

    let dev = match gpu_device() {
        Ok(d) => d,
        Err(e) => {
            k.fail("device", &e);
            return ExitCode::from(u8::from(!k.finish()));
        }
    };
    if let Some(d) = bound_driver(&dev) {
        k.fail("device", &format!("{dev} is already bound to {d}"));
        return ExitCode::from(u8::from(!k.finish()));
    }
    k.pass("device");

    let before = display_lines(&module, &dev).map(|l| l.len()).unwrap_or(0);
    let probe = run("/bin/modprobe", &[&module]).and_then(|()| wait_bound(&module, &dev, before));
    if k.check("probe", &probe) {
        if let Ok(line) = &probe {
            k.diag(line);
            k.check("display_info", &check_mode(line));
            k.check("edid", &check_edid(&module, &dev));
        }
    }

    let drm = open_render(&dev);
    if k.check("drm_nodes", &drm) {
        if let Ok(f) = &drm {
            if let Ok(v) = check_version(f).inspect_err(|e| k.fail("drm_version", e)) {
                k.diag(&v);
                k.pass("drm_version");
            }
            let params = logged_features(&module, &dev).and_then(|fs| check_getparam(f, &fs));
            k.check("getparam", &params);
        }
    }

    let dumb = open_primary(&dev).and_then(|f| check_dumb_buffers(&module, &f, 50));
    if k.check("dumb_buffers", &dumb) {
        if let Ok(d) = &dumb {
            k.diag(d);
        }
    }

    let drv = Path::new("/sys/bus/virtio/drivers").join(&module);

    // A file open across an unbind: its ioctls fail with ENODEV, and closing it later is fine.
    // A dumb buffer mapped before the unbind still reads what was written.
    drop(drm);
    let held = open_render(&dev).and_then(|f| {
        let primary = open_primary(&dev)?;
        let mut mapped = Mapped::new(primary.as_fd(), 640, 480)?;
        mapped.write_and_check(7)?;
        let before = display_lines(&module, &dev)?.len();
        write_attr(drv.join("unbind"), &dev)?;
        let r = virtgpu_getparam(f.as_fd(), 1);
        let kept = mapped.check(7);
        drop(mapped);
        write_attr(drv.join("bind"), &dev)?;
        wait_bound(&module, &dev, before)?;
        drop(f);
        kept.map_err(|e| format!("mapping after unbind: {e}"))?;
        match r {
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            other => Err(format!("GETPARAM after unbind: want ENODEV, got {other:?}")),
        }
    });
    k.check("unbind_with_open_file", &held);

    let active = check_unbind_with_active_mode(&module, &dev, &drv);
    if k.check("unbind_with_active_mode", &active) {
        if let Ok(d) = &active {
            k.diag(d);
        }
    }

    let interrupted = check_interrupted_wait(&dev);
    if k.check("interrupted_wait", &interrupted) {
        if let Ok(d) = &interrupted {
            k.diag(d);
        }
    }
    let full = check_full_queue_removal(&module, &dev, &drv);
    if k.check("full_queue_removal", &full) {
        if let Ok(d) = &full {
            k.diag(d);
        }
    }

    // Each cycle with a client holding the render node open and a mapped, written resource:
    // after the unbind its next ioctl fails with ENODEV and its mapping still reads back.
    let cycles = (0..rebinds).try_for_each(|i| {
        let at = |e: String| format!("cycle {i}: {e}");
        let client = open_render(&dev).map_err(at)?;
        let mut mapped = Mapped::resource(client.as_fd(), 64, 64).map_err(at)?;
        mapped.write_and_check(i as u8).map_err(at)?;
        let before = display_lines(&module, &dev)?.len();
        write_attr(drv.join("unbind"), &dev)?;
        if let Some(d) = bound_driver(&dev) {
            return Err(at(format!("still bound to {d} after unbind")));
        }
        match virtgpu_getparam(client.as_fd(), 1) {
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {}
            other => return Err(at(format!("GETPARAM after unbind: {other:?}, want ENODEV"))),
        }
        mapped
            .check(i as u8)
            .map_err(|e| at(format!("mapping after unbind: {e}")))?;
        drop(mapped);
        drop(client);
        write_attr(drv.join("bind"), &dev)?;
        let line = wait_bound(&module, &dev, before).map_err(at)?;
        check_mode(&line).map_err(at)
    });
    if k.check("rebind_cycles", &cycles) {
        k.diag(&format!(
            "{rebinds} unbind/bind cycles, each with a client holding a mapped, written resource, each bind answered by the device"
        ));
    }

    let reload = (0..reloads).try_for_each(|i| {
        let before = display_lines(&module, &dev)?.len();
        run("/bin/rmmod", &[&module]).map_err(|e| format!("cycle {i}: {e}"))?;
        if let Some(d) = bound_driver(&dev) {
            return Err(format!("cycle {i}: still bound to {d} after rmmod"));
        }
        run("/bin/modprobe", &[&module]).map_err(|e| format!("cycle {i}: {e}"))?;
        wait_bound(&module, &dev, before)
            .map(drop)
            .map_err(|e| format!("cycle {i}: {e}"))
    });
    if k.check("reload_cycles", &reload) {
        k.diag(&format!("{reloads} rmmod/modprobe cycles"));
    }

    let unload = run("/bin/rmmod", &[&module]).and_then(|()| match bound_driver(&dev) {
        Some(d) => Err(format!("{dev} still bound to {d} after rmmod")),
        None => Ok(()),
    });
    k.check("unload", &unload);

    ExitCode::from(u8::from(!k.finish()))
}
