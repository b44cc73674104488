//! Building the kernel, the guest programs and fetching busybox.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::kconfig;
use crate::machine::Machine;
use crate::overlay;
use crate::paths::{self, Cache};
use crate::source::Source;
use crate::toolchain::{Cmd, Toolchain};
use crate::ui::{self, Phase};

/// Bumped when the build steps change in a way that invalidates old builds.
const BUILD_LAYOUT: u32 = 1;

/// Checks that every option of `requested` survived in the `.config` at `cfg`.
fn verify_config(requested: &kconfig::Config, cfg: &Path, arch: &str) -> Result<()> {
    let dropped = kconfig::verify(requested, &kconfig::parse(&std::fs::read_to_string(cfg)?)?);
    if dropped.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = dropped.iter().map(|d| format!("    {d}")).collect();
    bail!(
        "olddefconfig dropped {} requested option(s) for {arch}:\n{}\n  hint: an option's dependencies are not met; see `make menuconfig` in {}",
        dropped.len(),
        list.join("\n"),
        cfg.parent().unwrap_or(cfg).display()
    )
}

/// Everything a build needs.
pub struct Ctx {
    pub cache: Cache,
    pub project: PathBuf,
    pub tc: Toolchain,
    /// The root that downloads Debian packages.
    pub apt: Toolchain,
    pub source: Source,
    pub tc_identity: String,
    /// The hard-link farm with the overlay.
    pub tree: PathBuf,
    pub jobs: usize,
}

/// A built kernel.
pub struct Kernel {
    pub build_dir: PathBuf,
    pub image: PathBuf,
    pub modroot: PathBuf,
    pub release: String,
}

/// The fragments that make up a machine's configuration, in merge order:
/// common, per-arch, the kunitconfigs, then the variant's (if any), so a
/// variant can switch off what the others switch on.
pub fn fragments(project: &Path, arch: &str, variant: Option<&str>) -> Result<Vec<PathBuf>> {
    let mut v = vec![
        project.join("qemu/config/common.config"),
        project.join(format!("qemu/config/{arch}.config")),
    ];
    let mut ku: Vec<PathBuf> = std::fs::read_dir(project.join("kunit"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "kunitconfig"))
        .collect();
    ku.sort();
    v.extend(ku);
    if let Some(name) = variant {
        let f = project.join(format!("qemu/config/variants/{name}.config"));
        if !f.is_file() {
            bail!(
                "unknown kernel variant {name:?}: {} does not exist",
                f.display()
            );
        }
        v.push(f);
    }
    Ok(v)
}

impl Ctx {
    /// Applies the overlay to the build tree (creating the tree if needed).
    pub fn apply_overlay(&self) -> Result<Vec<PathBuf>> {
        let log = self.cache.dir.join("tree/overlay.log");
        let _ = std::fs::remove_file(&log);
        Phase::start("overlay").run(
            |phase| {
                overlay::ensure_tree(&self.source.dir, &self.tree, phase)?;
                let scratch = self.cache.dir.join("tree/scratch");
                let files = overlay::compute(
                    &self.project,
                    &self.source.dir,
                    &scratch,
                    &self.tc,
                    &log,
                    phase,
                )?;
                overlay::reconcile(&files, &self.source.dir, &self.tree)
            },
            |changed| format!("{} file(s) changed", changed.len()),
        )
    }

    fn make(&self, m: &Machine, build_dir: &Path) -> Cmd {
        self.make_in(&self.tree, m, build_dir)
    }

    /// `make` on the kernel tree `src` (the overlay's build tree, or the
    /// pristine source) with the output in `build_dir`.
    pub fn make_in(&self, src: &Path, m: &Machine, build_dir: &Path) -> Cmd {
        Cmd::new("make")
            .arg("-C")
            .arg(src)
            .arg(format!("O={}", build_dir.display()))
            .arg(format!("ARCH={}", m.kernel_arch))
            .arg("LLVM=1")
            .arg(format!("-j{}", self.jobs))
    }

    /// Configures and builds the kernel for `m`, or for one of its variants
    /// (`qemu/config/variants/<name>.config` merged last).
    pub fn build_kernel(&self, m: &Machine, variant: Option<&str>) -> Result<Kernel> {
        let frags = fragments(&self.project, &m.name, variant)?;
        // The directory is keyed by what cannot change in place; the
        // fragments are not part of the key, so editing one reconfigures the
        // same directory and kbuild rebuilds only what the change touches.
        let key_src = format!(
            "{BUILD_LAYOUT}\n{}\n{}\n{}\n",
            m.name, self.source.key, self.tc_identity
        );
        let mut config_src = String::new();
        for f in &frags {
            config_src.push_str(&std::fs::read_to_string(f)?);
        }
        let config_hash = paths::short_hash(&config_src);
        let name = match variant {
            Some(v) => format!("{}-{v}", m.name),
            None => m.name.clone(),
        };
        let key = paths::short_hash(&key_src);
        let dir = self.cache.dir.join(format!("build/{name}-{key}"));
        if variant.is_some() && !dir.exists() {
            // A variant's first build starts from a copy of the machine's own
            // build: kbuild then rebuilds only what depends on the options the
            // variant changes (fixdep tracks each object's CONFIG_ symbols),
            // not the whole kernel.
            let base = self.cache.dir.join(format!("build/{}-{key}", m.name));
            if base.join("vmlinux").exists() {
                seed_build_dir(&base, &dir, &name)?;
            }
        }
        let build_dir = ui::ensure_dir(dir)?;
        let log = build_dir.join("build.log");
        let _ = std::fs::remove_file(&log);

        let hint = format!(
            "fix the error shown above (full log: {}); the cache stays usable, rerun when fixed",
            log.display()
        );
        Phase::start(format!("build {name}")).run(
            |phase| {
                let mut parsed = Vec::new();
                for f in &frags {
                    let c = kconfig::parse(&std::fs::read_to_string(f)?)
                        .with_context(|| format!("in {}", f.display()))?;
                    parsed.push(c);
                }
                let requested = kconfig::merge(&kconfig::Config::new(), &parsed);
                let cfg = build_dir.join(".config");
                // The configuration is made again only when the fragments
                // change (the stamp holds their hash); changes to Kconfig
                // files of the overlay are picked up by kbuild itself.
                let configured = build_dir.join("configured.stamp");
                let make = |target: &str| {
                    phase.status(target);
                    ui::run_logged(
                        &mut self.tc.command(&self.make(m, &build_dir).arg(target)),
                        &log,
                        phase,
                        &hint,
                    )
                };
                let stamp = std::fs::read_to_string(&configured).unwrap_or_default();
                if stamp.trim() != config_hash {
                    make("tinyconfig")?;
                    let base = kconfig::parse(&std::fs::read_to_string(&cfg)?)?;
                    std::fs::write(&cfg, kconfig::render(&kconfig::merge(&base, &parsed)))?;
                    make("olddefconfig")?;
                    verify_config(&requested, &cfg, &m.name)?;
                    std::fs::write(&configured, &config_hash)?;
                }
                make("all")?;
                // The build syncs .config with the tree's Kconfig files.
                verify_config(&requested, &cfg, &m.name)?;
                let modroot = build_dir.join("modroot");
                if modroot.exists() {
                    crate::toolchain::remove_tree(&modroot)?;
                }
                phase.status("modules_install");
                ui::run_logged(
                    &mut self.tc.command(
                        &self
                            .make(m, &build_dir)
                            .arg(format!("INSTALL_MOD_PATH={}", modroot.display()))
                            .arg("INSTALL_MOD_STRIP=1")
                            .arg("modules_install"),
                    ),
                    &log,
                    phase,
                    &hint,
                )?;
                let release = self
                    .tc
                    .output(&self.make(m, &build_dir).arg("-s").arg("kernelrelease"))?
                    .trim()
                    .to_string();
                Ok(Kernel {
                    image: build_dir.join(&m.kernel_image),
                    build_dir: build_dir.clone(),
                    modroot,
                    release,
                })
            },
            |k| format!("{} ({})", k.image.display(), k.release),
        )
    }

    /// Builds the guest programs for `m`; returns the directory holding them.
    pub fn build_guest(&self, m: &Machine) -> Result<PathBuf> {
        let log = self.cache.dir.join(format!("guest/{}.log", m.name));
        let _ = std::fs::remove_file(&log);
        // One target directory per toolchain and clone: cargo would take another clone's
        // artifacts for fresh (its dep-info names that clone's files, which did not change).
        let key = format!("{}\n{}", self.tc_identity, self.project.display());
        let target_dir = self
            .cache
            .dir
            .join(format!("guest/{}", paths::short_hash(&key)));
        let cargo_home = cargo_home()?;
        Phase::start(format!("guest programs {}", m.name)).run(
            |phase| {
                // Fetch with the host's cargo (it has the network configuration),
                // build offline in the toolchain.
                let host_cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                ui::run_logged(
                    std::process::Command::new(host_cargo)
                        .args(["fetch", "--locked", "--manifest-path"])
                        .arg(self.project.join("Cargo.toml")),
                    &log,
                    phase,
                    "check access to crates.io",
                )?;
                let linker_var = format!(
                    "CARGO_TARGET_{}_LINKER",
                    m.rust_target.to_uppercase().replace('-', "_")
                );
                let linker = if m.rust_target.starts_with("aarch64") {
                    "aarch64-linux-gnu-gcc"
                } else {
                    "cc"
                };
                ui::run_logged(
                    &mut self.tc.command(
                        &Cmd::new("cargo")
                            .args([
                                "build",
                                "--release",
                                "--offline",
                                "--locked",
                                "-p",
                                "virtgpu-guest",
                                "--target",
                            ])
                            .arg(&m.rust_target)
                            .arg("--target-dir")
                            .arg(&target_dir)
                            .env("CARGO_HOME", &cargo_home)
                            .env("RUSTFLAGS", "-C target-feature=+crt-static")
                            .env(&linker_var, linker)
                            .cwd(&self.project),
                    ),
                    &log,
                    phase,
                    "fix the guest program build error shown above",
                )?;
                Ok(target_dir.join(&m.rust_target).join("release"))
            },
            |_| String::new(),
        )
    }

    /// The static busybox binary for `m`, from Debian's busybox-static.
    pub fn busybox(&self, m: &Machine) -> Result<PathBuf> {
        let dir = self
            .cache
            .dir
            .join(format!("downloads/busybox-{}", m.debian_arch));
        let bin = dir.join("usr/bin/busybox");
        if bin.exists() {
            return Ok(bin);
        }
        let dl = ui::ensure_dir(self.cache.dir.join("downloads"))?;
        let log = dl.join("download.log");
        let script = format!(
            "set -e; rm -f busybox-static_*_{a}.deb; apt-get download busybox-static:{a}; \
             rm -rf '{d}.partial'; dpkg-deb -x busybox-static_*_{a}.deb '{d}.partial'; \
             rm -rf '{d}'; mv '{d}.partial' '{d}'",
            a = m.debian_arch,
            d = dir.display()
        );
        Phase::start(format!("busybox-static {}", m.debian_arch)).run(
            |phase| {
                ui::run_logged(
                    &mut self
                        .apt
                        .command(&Cmd::new("sh").args(["-c", &script]).cwd(&dl)),
                    &log,
                    phase,
                    "check access to the Debian mirror",
                )?;
                if !bin.exists() {
                    bail!(
                        "busybox-static:{} did not contain usr/bin/busybox",
                        m.debian_arch
                    );
                }
                Ok(bin)
            },
            |_| String::new(),
        )
    }
}

/// The host's cargo home (bind-mounted into the root so the guest build
/// can use the crates the host fetched).
pub fn cargo_home() -> Result<PathBuf> {
    if let Some(h) = std::env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(h));
    }
    Ok(PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".cargo"))
}

/// Makes `dir`, the build directory of variant `name`, a copy of `base`, the
/// machine's complete build directory (without its installed modules).
fn seed_build_dir(base: &Path, dir: &Path, name: &str) -> Result<()> {
    let tmp = dir.with_extension("partial");
    if tmp.exists() {
        crate::toolchain::remove_tree(&tmp)?;
    }
    Phase::start(format!("seed build {name}")).run(
        |phase| {
            let mut cp = std::process::Command::new("cp");
            cp.args(["-a", "--reflink=auto"]).arg(base).arg(&tmp);
            let log = dir.parent().unwrap_or(dir).join("seed.log");
            ui::run_logged(
                &mut cp,
                &log,
                phase,
                "check the free space in the cache, then rerun",
            )?;
            let modroot = tmp.join("modroot");
            if modroot.exists() {
                crate::toolchain::remove_tree(&modroot)?;
            }
            // The host tools' build (objtool) records its output by absolute
            // path; a changed command line rebuilds objtool, and every object
            // depends on objtool. Point the records at the copy.
            repoint_text_files(&tmp.join("tools"), base, dir)?;
            std::fs::rename(&tmp, dir)?;
            Ok(())
        },
        |_| format!("from {}", base.display()),
    )
}

/// Replaces `from` by `to` in every text file under `dir` that names `from`,
/// keeping its modification time (ELF files, whose strings are only debug
/// information, are left alone).
fn repoint_text_files(dir: &Path, from: &Path, to: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let (from, to) = (from.to_string_lossy(), to.to_string_lossy());
    for entry in walk(dir)? {
        let Ok(bytes) = std::fs::read(&entry) else {
            continue;
        };
        if bytes.starts_with(b"\x7fELF") {
            continue;
        }
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        if text.contains(from.as_ref()) {
            // make compares times: the rewritten file keeps its own.
            let mtime = std::fs::metadata(&entry)?.modified()?;
            std::fs::write(&entry, text.replace(from.as_ref(), to.as_ref()))
                .with_context(|| format!("rewriting {}", entry.display()))?;
            std::fs::File::options()
                .write(true)
                .open(&entry)?
                .set_modified(mtime)?;
        }
    }
    Ok(())
}

/// Every regular file under `dir`, recursively, hidden ones too (kbuild's
/// `.cmd` files); symbolic links are not followed.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for e in walkdir::WalkDir::new(dir) {
        let e = e.with_context(|| format!("walking {}", dir.display()))?;
        if e.file_type().is_file() {
            files.push(e.into_path());
        }
    }
    Ok(files)
}
