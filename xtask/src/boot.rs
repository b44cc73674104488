//! Kernels built for a run, and booting one with a list of guest steps.
//!
//! [`Builds`] builds each (architecture, variant) kernel with its initramfs
//! at most once per xtask run. [`boot`] starts QEMU with a [`Boot`] request
//! (the `vrs.steps` `/init` carries out, extra kernel arguments, whether to
//! check a rendered frame), waits for the guest to power off and returns
//! what it saw: the serial log, the splats in it and `/init`'s reports.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use virtgpu_protocol::{Step, RENDER_READY};

use crate::build::{Ctx, Kernel};
use crate::guest_log::GuestLog;
use crate::machine::Machine;
use crate::packages::GuestPackages;
use crate::qemu::{self, BootSpec, Guest};
use crate::render;
use crate::report::Verdict;
use crate::splat;
use crate::ui::Phase;

/// Which virtio-gpu driver a boot loads: exactly one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Driver {
    /// The C driver (`virtio_gpu`), the oracle.
    C,
    /// The Rust driver (`virtio_gpu_rs`).
    Rust,
}

impl Driver {
    pub fn module(self) -> &'static str {
        match self {
            Driver::C => virtgpu_protocol::DRM_DRIVERS[0],
            Driver::Rust => virtgpu_protocol::DRM_DRIVERS[1],
        }
    }

    /// The driver a module is, if it is one of the two.
    pub fn of_module(m: &str) -> Option<Driver> {
        [Driver::C, Driver::Rust]
            .into_iter()
            .find(|d| d.module() == m)
    }

    pub fn name(self) -> &'static str {
        match self {
            Driver::C => "c",
            Driver::Rust => "rust",
        }
    }

    pub fn load(self) -> Step {
        Step::Load {
            module: self.module().into(),
            params: Vec::new(),
        }
    }

    pub fn unload(self) -> Step {
        Step::Unload {
            module: self.module().into(),
        }
    }
}

/// One architecture built and ready to boot.
pub struct Built {
    pub machine: Machine,
    pub kernel: Kernel,
    pub initrd: PathBuf,
    /// The Debian packages for the guest (main kernels only).
    pub packages: Option<GuestPackages>,
}

/// The kernels of one xtask run, each built once.
#[derive(Default)]
pub struct Builds(HashMap<(String, Option<String>), Built>);

impl Builds {
    /// The kernel and initramfs of `arch` (and `variant`), built on first use.
    pub fn get(&mut self, ctx: &Ctx, arch: &str, variant: Option<&str>) -> Result<&Built> {
        let key = (arch.to_string(), variant.map(str::to_string));
        if !self.0.contains_key(&key) {
            let b = build_arch(ctx, arch, variant)?;
            self.0.insert(key.clone(), b);
        }
        self.0.get(&key).context("kernel just built")
    }
}

fn build_arch(ctx: &Ctx, arch: &str, variant: Option<&str>) -> Result<Built> {
    let machine = Machine::load(&ctx.project, arch)?;
    let kernel = ctx.build_kernel(&machine, variant)?;
    let programs = ctx.build_guest(&machine)?;
    let busybox = ctx.busybox(&machine)?;
    let run_dir = ctx.cache.run_dir(arch)?;
    let initrd = crate::initramfs::build(
        &ctx.project,
        &busybox,
        &kernel.modroot,
        &programs,
        &run_dir.join(match variant {
            Some(v) => format!("initramfs-{v}.cpio"),
            None => "initramfs.cpio".into(),
        }),
    )?;
    let packages = match variant {
        None => ctx.guest_packages(&machine)?,
        Some(_) => None,
    };
    Ok(Built {
        machine,
        kernel,
        initrd,
        packages,
    })
}

/// What to do in one boot.
pub struct Boot<'a> {
    /// Where the serial log, QEMU's log and any screendump go.
    pub run_dir: &'a Path,
    pub steps: Vec<Step>,
    /// Other kernel arguments (KUnit's, `vrs.*` for programs, the user's).
    pub append: String,
    pub timeout: u64,
    /// How many `drm-render` runs to wait for, in order (one per driver, say): the first frame
    /// of each is checked on a screendump.
    pub renders: usize,
    /// Put the Debian packages (`qemu/packages.toml`) into the guest.
    pub packages: bool,
    /// Files for this boot only (a test list, say): guest path, contents.
    pub files: Vec<(String, Vec<u8>)>,
    /// Open a window.
    pub display: bool,
}

impl<'a> Boot<'a> {
    /// A boot that runs `steps` with `append` and nothing else: no render
    /// check, no window, no packages, no extra files.
    pub fn new(run_dir: &'a Path, steps: Vec<Step>, append: String, timeout: u64) -> Boot<'a> {
        Boot {
            run_dir,
            steps,
            append,
            timeout,
            renders: 0,
            display: false,
            packages: false,
            files: Vec::new(),
        }
    }
}

/// What one boot produced.
pub struct BootOutcome {
    pub log: String,
    /// Splats found in `log`.
    pub splats: Vec<splat::Splat>,
    pub guest: GuestLog,
    pub log_path: PathBuf,
    /// The render checks, in the order of the `drm-render` runs (one per [`Boot::renders`]).
    pub renders: Vec<Verdict>,
    pub screenshots: Vec<PathBuf>,
    /// A hang or a QEMU failure.
    pub error: Option<String>,
    /// The same error, for telling its kind ([`crate::qemu::EarlyStall`]).
    pub error_source: Option<anyhow::Error>,
    pub duration: Duration,
}

impl BootOutcome {
    /// The splats (with their text) and the boot error, one message each,
    /// prefixed with `arch`.
    pub fn problems(&self, arch: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .splats
            .iter()
            .map(|s| {
                format!(
                    "{arch}: splat ({}) at serial log line {}:\n{}",
                    s.kind,
                    s.line,
                    qemu::indent(&s.text)
                )
            })
            .collect();
        v.extend(self.error.iter().map(|e| format!("{arch}: {e}")));
        v
    }
}

/// Boots `b` with `req`.
pub fn boot(ctx: &Ctx, b: &Built, req: &Boot<'_>) -> Result<BootOutcome> {
    let first = boot_once(ctx, b, req)?;
    let stalled = first
        .error_source
        .as_ref()
        .is_some_and(|e| e.downcast_ref::<crate::qemu::EarlyStall>().is_some());
    if !stalled {
        return Ok(first);
    }
    // A kernel that stops printing before /init runs has not reached our
    // code; TCG was seen to stall that way once. Keep its log, boot again,
    // and say so.
    let kept = first.log_path.with_file_name("serial.stalled.log");
    let _ = std::fs::rename(&first.log_path, &kept);
    eprintln!(
        "warning: {}: {}\n  booting again (the stalled log is {})",
        b.machine.name,
        first.error.as_deref().unwrap_or("stalled"),
        kept.display()
    );
    boot_once(ctx, b, req)
}

fn boot_once(ctx: &Ctx, b: &Built, req: &Boot<'_>) -> Result<BootOutcome> {
    let append = format!("{} {}", Step::cmdline(&req.steps), req.append);
    let initrd = boot_initrd(b, req)?;
    let spec = BootSpec {
        machine: &b.machine,
        kernel: &b.kernel.image,
        initrd: &initrd,
        append: append.trim().to_string(),
        run_dir: req.run_dir,
        timeout: Duration::from_secs(req.timeout),
        display: req.display,
    };
    let phase = Phase::start(format!("boot {}", b.machine.name));
    let mut guest = Guest::start(&ctx.tc, &spec)?;
    let mut out = BootOutcome {
        log: String::new(),
        splats: Vec::new(),
        guest: GuestLog::default(),
        log_path: guest.log.clone(),
        renders: Vec::new(),
        screenshots: Vec::new(),
        error: None,
        error_source: None,
        duration: Duration::ZERO,
    };
    let r = (|| -> Result<()> {
        for i in 0..req.renders {
            match guest.wait_line(RENDER_READY, &phase)? {
                Some(line) => {
                    let size = line
                        .split(RENDER_READY)
                        .nth(1)
                        .and_then(|s| s.trim().split_once('x'))
                        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
                        .context("cannot read the mode from the render-ready line")?;
                    let png = match i {
                        0 => req.run_dir.join("screendump.png"),
                        _ => req.run_dir.join(format!("screendump-{}.png", i + 1)),
                    };
                    out.renders
                        .push(capture(&guest, &png, &b.machine.name, size, &phase)?);
                    out.screenshots.push(png);
                }
                None => {
                    out.renders.push(Verdict::fail(
                        "the guest never reported `render ready` (see the drm_render rows and the serial log)",
                    ));
                    break;
                }
            }
        }
        guest.wait_exit(&phase)
    })();
    out.duration = guest.elapsed();
    out.log = guest.log_text();
    out.splats = splat::detect(&out.log);
    out.guest = GuestLog::read(&out.log);
    match r {
        Ok(()) => {
            phase.done(&format!("serial log {}", out.log_path.display()));
        }
        Err(e) => {
            phase.fail();
            out.error = Some(format!("{e:#}"));
            out.error_source = Some(e);
        }
    }
    Ok(out)
}

/// The initramfs of one boot: the kernel's, then the packages' archive and
/// the boot's own files when asked for (the kernel unpacks concatenated
/// archives in order).
fn boot_initrd(b: &Built, req: &Boot<'_>) -> Result<PathBuf> {
    let with_packages = req.packages && b.packages.is_some();
    if !with_packages && req.files.is_empty() {
        return Ok(b.initrd.clone());
    }
    let mut bytes = std::fs::read(&b.initrd)?;
    if let Some(p) = b.packages.as_ref().filter(|_| req.packages) {
        bytes.extend(std::fs::read(&p.archive)?);
    }
    if !req.files.is_empty() {
        let mut ird = crate::initramfs::Initramfs::default();
        for (path, data) in &req.files {
            ird.file(path, data.clone(), 0o644);
        }
        bytes.extend(ird.to_cpio()?);
    }
    let out = req.run_dir.join("initrd-boot.cpio");
    crate::ui::write_atomic(&out, &bytes)?;
    Ok(out)
}

/// Takes screendumps until one matches the pattern (the first flush may lag
/// the guest's commit by a moment), for up to ten tries.
fn capture(
    guest: &Guest,
    png: &Path,
    arch: &str,
    size: (u32, u32),
    phase: &Phase,
) -> Result<Verdict> {
    let mut last = None;
    for _ in 0..10 {
        phase.status("screendump");
        guest.screendump(png)?;
        let v = render::check(&render::load_png(png)?, arch, size);
        if v.ok {
            return Ok(v);
        }
        last = Some(v);
        std::thread::sleep(Duration::from_millis(500));
    }
    last.context("no screendump taken")
}
