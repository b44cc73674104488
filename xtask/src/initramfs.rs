//! The test initramfs: busybox, `/init`, kernel modules and guest programs.
//!
//! Written as an uncompressed newc cpio (the kernel always understands it).
//! What goes in:
//!
//! - `/init`: the guest crate's `vrs-init` (see it for what it does);
//! - `/bin/busybox` (the init installs the applet links at boot);
//! - `/lib/modules/<release>/` from `modules_install`;
//! - every program listed in `qemu/initramfs/programs`, from the guest build,
//!   into `/usr/bin/`.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use cpio::newc::{Builder, ModeFileType};

/// One archive member.
enum Member {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
}

/// An initramfs being assembled: archive path to member.
#[derive(Default)]
pub struct Initramfs {
    members: std::collections::BTreeMap<String, Member>,
}

impl Initramfs {
    /// Adds a directory and its parents.
    pub fn dir(&mut self, path: &str) {
        let mut cur = String::new();
        for part in path.trim_matches('/').split('/').filter(|p| !p.is_empty()) {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(part);
            self.members.entry(cur.clone()).or_insert(Member::Dir);
        }
    }

    fn parent(&mut self, path: &str) {
        if let Some((p, _)) = path.trim_matches('/').rsplit_once('/') {
            self.dir(p);
        }
    }

    /// Adds a file with contents.
    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.parent(path);
        self.members.insert(
            path.trim_matches('/').to_string(),
            Member::File { data, mode },
        );
    }

    /// Adds a symlink.
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.parent(path);
        self.members.insert(
            path.trim_matches('/').to_string(),
            Member::Symlink(target.into()),
        );
    }

    /// Adds a host directory tree below `dest`, keeping symlinks.
    pub fn tree(&mut self, src: &Path, dest: &str) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        self.dir(dest);
        let mut entries: Vec<_> = std::fs::read_dir(src)
            .with_context(|| format!("reading {}", src.display()))?
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let target = format!("{}/{}", dest.trim_end_matches('/'), name);
            let ft = e.file_type()?;
            if ft.is_symlink() {
                let t = std::fs::read_link(e.path())?;
                self.symlink(&target, &t.to_string_lossy());
            } else if ft.is_dir() {
                self.tree(&e.path(), &target)?;
            } else {
                let mode = e.metadata()?.permissions().mode() & 0o7777;
                self.file(&target, std::fs::read(e.path())?, mode);
            }
        }
        Ok(())
    }

    /// Whether the archive has `path`.
    #[cfg(test)]
    pub fn has(&self, path: &str) -> bool {
        self.members.contains_key(path.trim_matches('/'))
    }

    /// The cpio archive.
    pub fn to_cpio(&self) -> Result<Vec<u8>> {
        let inputs = self.members.iter().map(|(path, m)| {
            let b = Builder::new(path).uid(0).gid(0).nlink(1);
            match m {
                Member::Dir => (
                    b.mode(0o755)
                        .set_mode_file_type(ModeFileType::Directory)
                        .nlink(2),
                    Cursor::new(Vec::new()),
                ),
                Member::File { data, mode } => (
                    b.mode(*mode).set_mode_file_type(ModeFileType::Regular),
                    Cursor::new(data.clone()),
                ),
                Member::Symlink(t) => (
                    b.mode(0o777).set_mode_file_type(ModeFileType::Symlink),
                    Cursor::new(t.as_bytes().to_vec()),
                ),
            }
        });
        Ok(cpio::write_cpio(inputs, Vec::new())?)
    }
}

/// The guest programs named in `qemu/initramfs/programs`.
pub fn program_names(project: &Path) -> Result<Vec<String>> {
    let p = project.join("qemu/initramfs/programs");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// Builds the initramfs and writes it to `out`.
pub fn build(
    project: &Path,
    busybox: &Path,
    modroot: &Path,
    programs: &Path,
    out: &Path,
) -> Result<PathBuf> {
    let mut ird = Initramfs::default();
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "etc", "root",
    ] {
        ird.dir(d);
    }
    let init = programs.join("vrs-init");
    ird.file(
        "init",
        std::fs::read(&init)
            .with_context(|| format!("reading /init's program {}", init.display()))?,
        0o755,
    );
    ird.file("bin/busybox", std::fs::read(busybox)?, 0o755);
    let lib = modroot.join("lib");
    if lib.exists() {
        ird.tree(&lib, "lib")?;
    }
    for name in program_names(project)? {
        let p = programs.join(&name);
        if !p.exists() {
            bail!(
                "guest program {name} was not built ({} is missing)",
                p.display()
            );
        }
        ird.file(&format!("usr/bin/{name}"), std::fs::read(&p)?, 0o755);
    }
    crate::ui::write_atomic(out, &ird.to_cpio()?)?;
    Ok(out.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_round_trips_with_parents_and_symlinks() {
        let mut ird = Initramfs::default();
        ird.file("usr/bin/prog", b"\x7fELF".to_vec(), 0o755);
        ird.symlink("lib/modules/x/build", "/nowhere");
        let bytes = ird.to_cpio().unwrap();
        let mut names = Vec::new();
        let mut r = Cursor::new(bytes);
        loop {
            let entry = cpio::NewcReader::new(r).unwrap();
            if entry.entry().is_trailer() {
                break;
            }
            names.push((
                entry.entry().name().to_string(),
                entry.entry().mode() & 0o170000,
            ));
            r = entry.skip().unwrap();
        }
        let get = |n: &str| names.iter().find(|(x, _)| x == n).map(|(_, m)| *m);
        assert_eq!(get("usr"), Some(0o040000));
        assert_eq!(get("usr/bin"), Some(0o040000));
        assert_eq!(get("usr/bin/prog"), Some(0o100000));
        assert_eq!(get("lib/modules/x/build"), Some(0o120000));
        assert!(ird.has("/lib/modules"));
    }
}
