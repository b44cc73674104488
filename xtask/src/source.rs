//! The kernel source: Debian's `linux-source-7.3`, or the user's own tree.
//!
//! The Debian package is downloaded with apt (in the trixie root), checked
//! against a pinned SHA-256 and unpacked once into `src/` of the cache. The
//! unpacked tree is never modified: builds use a hard-link farm of it with the
//! overlay applied (see `overlay.rs`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::paths::{self, Cache};
use crate::toolchain::{Cmd, Toolchain};
use crate::ui::{self, Phase};

/// The Debian source package and the exact version we build.
pub const PACKAGE: &str = "linux-source-7.3";
pub const DEB_VERSION: &str = "7.3.4-1~bpo13+1";
/// SHA-256 of `linux-source-7.3_7.3.4-1~bpo13+1_all.deb`.
pub const DEB_SHA256: &str = "703e369ddd4cce971452f5a593ee55df3a5c10c83caf0fa0df039633ed181ee3";
/// The tarball inside the package and its top-level directory.
const TARBALL: &str = "./usr/src/linux-source-7.3.tar.xz";
const TOPDIR: &str = "linux-source-7.3";

/// A pristine kernel tree.
#[derive(Clone, Debug)]
pub struct Source {
    pub dir: PathBuf,
    /// `7.3.4`-style version from the Makefile.
    pub version: String,
    /// Cache key: what identifies this tree's contents.
    pub key: String,
}

/// Reads `VERSION.PATCHLEVEL.SUBLEVEL` from a kernel Makefile, or explains
/// why `dir` is not a kernel tree.
pub fn kernel_version(dir: &Path) -> Result<String> {
    let makefile = dir.join("Makefile");
    let text = std::fs::read_to_string(&makefile).map_err(|_| {
        anyhow::anyhow!(
            "{} is not a Linux kernel tree: it has no readable Makefile",
            dir.display()
        )
    })?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|r| r.trim().strip_prefix('='))
            })
            .map(|v| v.trim().to_string())
    };
    let (Some(v), Some(p), Some(s)) = (field("VERSION"), field("PATCHLEVEL"), field("SUBLEVEL"))
    else {
        bail!(
            "{} is not a Linux kernel tree: its Makefile has no VERSION/PATCHLEVEL/SUBLEVEL",
            dir.display()
        );
    };
    for needed in [
        "Kconfig",
        "rust/kernel/lib.rs",
        "scripts/kconfig",
        "drivers/gpu/drm/Kconfig",
    ] {
        if !dir.join(needed).exists() {
            bail!(
                "{} is not a usable Linux kernel tree: {needed} is missing (Rust support needs 6.x or later)",
                dir.display()
            );
        }
    }
    Ok(format!("{v}.{p}.{s}"))
}

/// The user's tree given with `--kernel-src` / `VIRTGPU_RS_KERNEL_SRC`.
pub fn user_tree(dir: &Path) -> Result<Source> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("--kernel-src {}: no such directory", dir.display()))?;
    let version = kernel_version(&dir)?;
    if dir.join(".config").exists() {
        bail!(
            "{} has a .config: out-of-tree (O=) builds need a clean source tree.\n  hint: run `make mrproper` in it",
            dir.display()
        );
    }
    let key = paths::short_hash(&format!("user\n{}\n{version}", dir.display()));
    Ok(Source { dir, version, key })
}

/// Debian's linux-source, downloaded, verified and unpacked (once).
pub fn debian_tree(cache: &Cache, apt: &Toolchain) -> Result<Source> {
    let key = DEB_SHA256[..12].to_string();
    let dir = cache.dir.join(format!("src/linux-7.3.4-{key}"));
    if dir.join(".virtgpu-unpacked").exists() {
        let version = kernel_version(&dir)?;
        return Ok(Source { dir, version, key });
    }
    let version = Phase::start("source: linux-source-7.3").run(
        |phase| {
            fetch_and_unpack(cache, apt, &dir, phase)?;
            kernel_version(&dir)
        },
        |version| format!("{version} at {}", dir.display()),
    )?;
    Ok(Source { dir, version, key })
}

fn fetch_and_unpack(cache: &Cache, apt: &Toolchain, dir: &Path, phase: &Phase) -> Result<()> {
    let dl = ui::ensure_dir(cache.dir.join("downloads"))?;
    let log = dl.join("download.log");
    let deb = dl.join(format!(
        "{PACKAGE}_{}_all.deb",
        DEB_VERSION.replace(':', "%3a")
    ));
    let verified =
        |p: &Path| p.exists() && paths::sha256_file(p).ok().as_deref() == Some(DEB_SHA256);
    if !verified(&deb) {
        let _ = std::fs::remove_file(&deb);
        phase.status("downloading");
        ui::run_logged(
            &mut apt.command(
                &Cmd::new("apt-get")
                    .args(["download", &format!("{PACKAGE}={DEB_VERSION}")])
                    .cwd(&dl),
            ),
            &log,
            phase,
            "check that the Debian mirror serves trixie-backports, then rerun",
        )?;
        if !deb.exists() {
            bail!("apt-get download did not produce {}", deb.display());
        }
        let got = paths::sha256_file(&deb)?;
        if got != DEB_SHA256 {
            let _ = std::fs::remove_file(&deb);
            bail!(
                "{} has SHA-256 {got}, expected {DEB_SHA256}: the download is corrupt or not the pinned version; it was deleted, rerun to fetch it again",
                deb.display()
            );
        }
    }
    phase.status("unpacking");
    let partial = PathBuf::from(format!("{}.partial", dir.display()));
    if partial.exists() {
        crate::toolchain::remove_tree(&partial)?;
    }
    ui::ensure_dir(partial.clone())?;
    let script = format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -xOf - '{TARBALL}' | tar -xJf - -C '{}'",
        deb.display(),
        partial.display()
    );
    ui::run_logged(
        &mut apt.command(&Cmd::new("sh").args(["-c", &script])),
        &log,
        phase,
        "see the log for why unpacking failed (disk space?); rerun to retry",
    )?;
    let top = partial.join(TOPDIR);
    if !top.join("Makefile").exists() {
        bail!("the package did not contain {TOPDIR}/Makefile");
    }
    if dir.exists() {
        crate::toolchain::remove_tree(dir)?;
    }
    std::fs::rename(&top, dir)?;
    crate::toolchain::remove_tree(&partial)?;
    std::fs::write(dir.join(".virtgpu-unpacked"), DEB_SHA256)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_kernel_directory_is_rejected_with_reason() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let e = kernel_version(d).unwrap_err().to_string();
        assert!(e.contains("not a Linux kernel tree"), "{e}");
        std::fs::write(
            d.join("Makefile"),
            "VERSION = 7\nPATCHLEVEL = 3\nSUBLEVEL = 4\n",
        )
        .unwrap();
        let e = kernel_version(d).unwrap_err().to_string();
        assert!(e.contains("Kconfig is missing"), "{e}");
    }
}
