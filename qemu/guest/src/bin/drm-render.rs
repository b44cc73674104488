//! Shows the virtgpu-rs test pattern on the first connected DRM connector.
//!
//! Opens a DRM card, picks the connected connector and its preferred mode,
//! draws the pattern from `virtgpu-pattern` into two dumb buffers, sets the
//! mode (atomic when the driver offers it, legacy `SETCRTC` otherwise) and then
//! keeps flipping between the buffers, bumping the frame counter each time.
//!
//! It reports KTAP (suite `drm_render`, one case per stage; after a failed
//! stage the rest are skipped) and prints `virtgpu-rs: render ready <w>x<h>`
//! once the first frame is on screen (xtask takes its screendump then).
//! Exit status 0 only when every case passed.
//!
//! Usage: `drm-render [--card PATH] [--arch NAME] [--seconds N]`; without
//! `--seconds` it runs for `vrs.render_seconds=N` from the kernel command line,
//! or 10 seconds.

use std::os::fd::{AsFd, BorrowedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use drm::buffer::{Buffer as _, DrmFourcc};
use drm::control::dumbbuffer::DumbBuffer;
use drm::control::{
    atomic, connector, crtc, framebuffer, property, AtomicCommitFlags, ClipRect,
    Device as ControlDevice, Mode, PlaneType,
};
use drm::{ClientCapability, Device};
use virtgpu_protocol::ktap::Chain;
use virtgpu_protocol::{cmdline_value, key, RENDER_READY};

type Result<T> = std::result::Result<T, String>;

struct Card(std::fs::File);

impl AsFd for Card {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Device for Card {}
impl ControlDevice for Card {}

struct Options {
    card: String,
    arch: String,
    seconds: u64,
}

fn parse_args() -> Result<Options> {
    let mut o = Options {
        card: "/dev/dri/card0".into(),
        arch: std::env::consts::ARCH.replace("aarch64", "arm64"),
        seconds: seconds_from_cmdline().unwrap_or(10),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--card" => o.card = value()?,
            "--arch" => o.arch = value()?,
            "--seconds" => o.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    Ok(o)
}

/// `vrs.render_seconds=N` from the kernel command line, if present.
fn seconds_from_cmdline() -> Option<u64> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").ok()?;
    cmdline_value(&cmdline, key::RENDER_SECONDS).and_then(|v| v.parse().ok())
}

/// One scanout buffer: the dumb buffer and its framebuffer object.
struct Buffer {
    db: DumbBuffer,
    fb: framebuffer::Handle,
}

fn ctx<T, E: std::fmt::Display>(r: std::result::Result<T, E>, what: &str) -> Result<T> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// Draws frame `frame` of the pattern into `buf` (XRGB8888, `pitch` bytes a row).
fn draw(card: &Card, buf: &mut Buffer, arch: &str, frame: u64, full: bool) -> Result<()> {
    let (w, h) = buf.db.size();
    let pitch = buf.db.pitch() as usize;
    let cb = virtgpu_pattern::counter_box(h);
    let mut map = ctx(card.map_dumb_buffer(&mut buf.db), "mapping the dumb buffer")?;
    let pixels = map.as_mut();
    // After the first full draw only the counter changes.
    let (y0, y1, x0, x1) = if full {
        (0, h, 0, w)
    } else {
        (cb.y, (cb.y + cb.h).min(h), cb.x, (cb.x + cb.w).min(w))
    };
    for y in y0..y1 {
        let row = &mut pixels[y as usize * pitch..];
        for x in x0..x1 {
            let [r, g, b] = virtgpu_pattern::pixel(w, h, arch, frame, x, y);
            let o = x as usize * 4;
            row[o..o + 4].copy_from_slice(&[b, g, r, 0]);
        }
    }
    Ok(())
}

/// Finds a property handle by name on a KMS object.
fn prop<H: drm::control::ResourceHandle>(
    card: &Card,
    handle: H,
    name: &str,
) -> Result<property::Handle> {
    let props = ctx(card.get_properties(handle), "reading properties")?;
    let map = ctx(props.as_hashmap(card), "reading property names")?;
    map.get(name)
        .map(|p| p.handle())
        .ok_or_else(|| format!("object has no {name:?} property"))
}

/// The primary plane usable on `crtc`.
fn primary_plane(card: &Card, crtc: crtc::Handle) -> Result<drm::control::plane::Handle> {
    let res = ctx(card.resource_handles(), "reading resources")?;
    for plane in ctx(card.plane_handles(), "listing planes")? {
        let info = ctx(card.get_plane(plane), "reading a plane")?;
        if !res.filter_crtcs(info.possible_crtcs()).contains(&crtc) {
            continue;
        }
        let props = ctx(card.get_properties(plane), "reading plane properties")?;
        let type_prop = prop(card, plane, "type")?;
        let is_primary = props
            .iter()
            .any(|(&id, &val)| id == type_prop && val == PlaneType::Primary as u64);
        if is_primary {
            return Ok(plane);
        }
    }
    Err("no primary plane for the CRTC".into())
}

/// A mode setter: atomic when the driver supports it, legacy otherwise.
enum Scanout {
    Atomic {
        plane: drm::control::plane::Handle,
        fb_id: property::Handle,
    },
    Legacy,
}

impl Scanout {
    fn set_mode(
        card: &Card,
        con: connector::Handle,
        crtc: crtc::Handle,
        mode: Mode,
        fb: framebuffer::Handle,
    ) -> Result<Scanout> {
        if card
            .set_client_capability(ClientCapability::UniversalPlanes, true)
            .is_ok()
            && card
                .set_client_capability(ClientCapability::Atomic, true)
                .is_ok()
        {
            let plane = primary_plane(card, crtc)?;
            let (w, h) = mode.size();
            let blob = ctx(card.create_property_blob(&mode), "creating the mode blob")?;
            let mut req = atomic::AtomicModeReq::new();
            req.add_property(
                con,
                prop(card, con, "CRTC_ID")?,
                property::Value::CRTC(Some(crtc)),
            );
            req.add_property(crtc, prop(card, crtc, "MODE_ID")?, blob);
            req.add_property(
                crtc,
                prop(card, crtc, "ACTIVE")?,
                property::Value::Boolean(true),
            );
            let fb_id = prop(card, plane, "FB_ID")?;
            req.add_property(plane, fb_id, property::Value::Framebuffer(Some(fb)));
            req.add_property(
                plane,
                prop(card, plane, "CRTC_ID")?,
                property::Value::CRTC(Some(crtc)),
            );
            for (name, v) in [
                ("SRC_X", 0),
                ("SRC_Y", 0),
                ("SRC_W", u64::from(w) << 16),
                ("SRC_H", u64::from(h) << 16),
                ("CRTC_W", u64::from(w)),
                ("CRTC_H", u64::from(h)),
            ] {
                req.add_property(
                    plane,
                    prop(card, plane, name)?,
                    property::Value::UnsignedRange(v),
                );
            }
            for name in ["CRTC_X", "CRTC_Y"] {
                req.add_property(
                    plane,
                    prop(card, plane, name)?,
                    property::Value::SignedRange(0),
                );
            }
            ctx(
                card.atomic_commit(AtomicCommitFlags::ALLOW_MODESET, req),
                "atomic modeset",
            )?;
            println!("    # modeset atomic");
            Ok(Scanout::Atomic { plane, fb_id })
        } else {
            ctx(
                card.set_crtc(crtc, Some(fb), (0, 0), &[con], Some(mode)),
                "legacy SETCRTC",
            )?;
            println!("    # modeset legacy");
            Ok(Scanout::Legacy)
        }
    }

    /// Puts `fb` on screen and makes sure the host sees its contents.
    fn show(&self, card: &Card, fb: framebuffer::Handle, w: u16, h: u16) -> Result<()> {
        match self {
            Scanout::Atomic { plane, fb_id } => {
                let mut req = atomic::AtomicModeReq::new();
                req.add_property(*plane, *fb_id, property::Value::Framebuffer(Some(fb)));
                ctx(
                    card.atomic_commit(AtomicCommitFlags::empty(), req),
                    "atomic flip",
                )
            }
            Scanout::Legacy => {
                let clip = ClipRect::new(0, 0, w, h);
                ctx(card.dirty_framebuffer(fb, &[clip]), "DIRTYFB")
            }
        }
    }
}

/// The cases of the `drm_render` suite, in the order they run.
const CASES: &[&str] = &[
    "open_card",
    "driver_version",
    "connector_and_mode",
    "dumb_buffers",
    "draw_pattern",
    "modeset",
    "first_frame",
    "flips",
    "cleanup",
];

fn open(card: &str) -> Result<Card> {
    let file = ctx(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(card),
        &format!("opening {card}"),
    )?;
    Ok(Card(file))
}

/// The connected connector, its preferred mode and the first CRTC.
fn pick(card: &Card) -> Result<(connector::Info, Mode, crtc::Handle)> {
    let res = ctx(card.resource_handles(), "reading resources")?;
    let con = res
        .connectors()
        .iter()
        .filter_map(|&c| card.get_connector(c, true).ok())
        .find(|c| c.state() == connector::State::Connected)
        .ok_or("no connected connector")?;
    let mode = con
        .modes()
        .iter()
        .find(|m| {
            m.mode_type()
                .contains(drm::control::ModeTypeFlags::PREFERRED)
        })
        .or_else(|| con.modes().first())
        .copied()
        .ok_or("the connector has no modes")?;
    let crtc = *res.crtcs().first().ok_or("no CRTC")?;
    Ok((con, mode, crtc))
}

fn buffers(card: &Card, w: u16, h: u16) -> Result<Vec<Buffer>> {
    let mut bufs = Vec::new();
    for _ in 0..2 {
        let db = ctx(
            card.create_dumb_buffer((w.into(), h.into()), DrmFourcc::Xrgb8888, 32),
            "creating a dumb buffer",
        )?;
        let fb = ctx(card.add_framebuffer(&db, 24, 32), "ADDFB")?;
        bufs.push(Buffer { db, fb });
    }
    Ok(bufs)
}

/// Runs the suite; false if a case failed.
fn run(o: &Options) -> bool {
    let mut k = Chain::start("drm_render", CASES);
    let ok = run_cases(o, &mut k).is_some();
    k.finish() && ok
}

fn run_cases(o: &Options, k: &mut Chain) -> Option<()> {
    let card = k.case(open(&o.card))?;
    let driver = k.case(ctx(card.get_driver(), "DRM_IOCTL_VERSION"))?;
    let name = driver.name().to_string_lossy().into_owned();
    k.suite().diag(&format!("driver {name}"));
    let (con, mode, crtc) = k.case(pick(&card))?;
    let (w, h) = mode.size();
    k.suite()
        .diag(&format!("mode {w}x{h} on {:?}", con.interface()));
    let mut bufs = k.case(buffers(&card, w, h))?;
    k.case(
        bufs.iter_mut()
            .try_for_each(|b| draw(&card, b, &o.arch, 0, true)),
    )?;
    let scanout = k.case(Scanout::set_mode(
        &card,
        con.handle(),
        crtc,
        mode,
        bufs[0].fb,
    ))?;
    k.case(scanout.show(&card, bufs[0].fb, w, h))?;
    println!("{RENDER_READY}{w}x{h}");

    let start = Instant::now();
    let mut frame = 0u64;
    let flips = (|| -> Result<u64> {
        while start.elapsed() < Duration::from_secs(o.seconds) {
            frame += 1;
            let b = &mut bufs[(frame % 2) as usize];
            draw(&card, b, &o.arch, frame, false)?;
            scanout.show(&card, b.fb, w, h)?;
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(frame)
    })();
    let frames = k.case(flips)?;
    k.suite().diag(&format!("{frames} frames"));
    k.case(bufs.into_iter().try_for_each(|b| -> Result<()> {
        ctx(card.destroy_framebuffer(b.fb), "RMFB")?;
        ctx(card.destroy_dumb_buffer(b.db), "destroying a dumb buffer")
    }))
}

fn main() -> ExitCode {
    match parse_args() {
        Ok(o) if run(&o) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("drm-render: {e}");
            ExitCode::from(2)
        }
    }
}
