//! Debian packages in the guest (`qemu/packages.toml`).
//!
//! For each set that applies to an architecture: apt (in the Debian root,
//! with its own state directory under the cache and the suite's signed
//! indexes) resolves the dependency closure, downloads it (apt checks every
//! .deb against the signed index) and `dpkg-deb` unpacks it, once per set
//! of resolved versions. Into the guest go only the set's programs, the
//! shared libraries they load (DT_NEEDED, followed transitively; a library
//! no package provides is an error naming it), the ELF interpreter and the
//! set's data directories, as a cpio archive appended to the initramfs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::build::Ctx;
use crate::initramfs::Initramfs;
use crate::machine::Machine;
use crate::paths;
use crate::toolchain::{self, Cmd};
use crate::ui::{self, Phase};

/// Bumped when what is unpacked or how changes.
const LAYOUT: u32 = 1;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    suite: String,
    #[serde(default)]
    set: Vec<Set>,
}

/// One set of packages and what the guest gets from it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Set {
    pub name: String,
    pub arches: Vec<String>,
    pub packages: Vec<String>,
    /// Globs relative to the unpacked root: executables for the guest.
    pub programs: Vec<String>,
    /// Directories copied whole.
    #[serde(default)]
    pub data: Vec<String>,
}

/// The guest's packages for one architecture.
pub struct GuestPackages {
    /// The cpio archive to append to the initramfs.
    pub archive: PathBuf,
    /// `name=version` of everything unpacked, per set.
    pub versions: BTreeMap<String, Vec<String>>,
    /// Where each set was unpacked.
    pub roots: BTreeMap<String, PathBuf>,
}

/// The package sets of `qemu/packages.toml`.
pub fn sets(project: &Path) -> Result<Vec<Set>> {
    Ok(load(project)?.set)
}

fn load(project: &Path) -> Result<File> {
    let p = project.join("qemu/packages.toml");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    toml::from_str(&text).with_context(|| format!("in {}", p.display()))
}

/// The multiarch triplet of a Debian architecture.
fn triplet(debian_arch: &str) -> &'static str {
    match debian_arch {
        "arm64" => "aarch64-linux-gnu",
        _ => "x86_64-linux-gnu",
    }
}

/// One package apt would install: name, version, architecture.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Resolved {
    pub name: String,
    pub version: String,
    pub arch: String,
}

/// Reads the `Inst name[:arch] (version suite [arch])` lines of
/// `apt-get -s install`.
pub fn parse_simulation(out: &str) -> Vec<Resolved> {
    out.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("Inst ")?;
            let (name, rest) = rest.split_once(' ')?;
            let inside = rest.split_once('(')?.1.split_once(')')?.0;
            let version = inside.split_whitespace().next()?;
            let arch = inside
                .split_once('[')
                .and_then(|(_, a)| a.split_once(']'))
                .map(|(a, _)| a)?;
            let name = name.split(':').next()?;
            Some(Resolved {
                name: name.to_string(),
                version: version.to_string(),
                arch: arch.to_string(),
            })
        })
        .collect()
}

impl Ctx {
    fn apt_dir(&self, suite: &str) -> PathBuf {
        self.cache.dir.join(format!("packages/apt-{suite}"))
    }

    /// apt-get with the packages' own configuration (sources, state, cache).
    fn apt_get(&self, suite: &str) -> Result<Cmd> {
        let d = self.apt_dir(suite);
        for sub in ["state/lists/partial", "cache/archives/partial", "etc"] {
            ui::ensure_dir(d.join(sub))?;
        }
        let sources = d.join("etc/sources.list");
        let mirror = toolchain::mirror()?;
        let want = format!("deb [arch=amd64,arm64] {mirror} {suite} main\n");
        if std::fs::read_to_string(&sources).ok().as_deref() != Some(&want) {
            std::fs::write(&sources, want)?;
        }
        let status = d.join("status");
        if !status.exists() {
            std::fs::write(&status, "")?;
        }
        let o = |k: &str, v: &Path| format!("{k}={}", v.display());
        Ok(Cmd::new("apt-get").args([
            "-o".into(),
            o("Dir::Etc::SourceList", &sources),
            "-o".into(),
            "Dir::Etc::SourceParts=/nonexistent".into(),
            "-o".into(),
            o("Dir::State", &d.join("state")),
            "-o".into(),
            o("Dir::Cache", &d.join("cache")),
            "-o".into(),
            o("Dir::State::status", &status),
            "-o".into(),
            "APT::Architectures::=amd64".into(),
            "-o".into(),
            "APT::Architectures::=arm64".into(),
            // The mirror served here is a frozen snapshot, past Valid-Until.
            "-o".into(),
            "Acquire::Check-Valid-Until=false".into(),
            "-o".into(),
            "APT::Sandbox::User=root".into(),
        ]))
    }

    fn apt_update(&self, suite: &str, log: &Path, phase: &Phase) -> Result<()> {
        phase.status(&format!("apt-get update ({suite})"));
        ui::run_logged(
            &mut self.apt.command(&self.apt_get(suite)?.arg("update")),
            log,
            phase,
            "check access to the Debian mirror (and that it carries this suite)",
        )
    }

    /// Resolves, downloads and unpacks `set` for `arch`; its root.
    fn unpack_set(
        &self,
        suite: &str,
        set: &Set,
        debian_arch: &str,
        phase: &Phase,
    ) -> Result<(PathBuf, Vec<Resolved>)> {
        let log = self.cache.dir.join("packages/packages.log");
        let lists = self.apt_dir(suite).join("state/lists");
        let has_lists = std::fs::read_dir(&lists)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with("Packages"))
            })
            .unwrap_or(false);
        if !has_lists {
            self.apt_update(suite, &log, phase)?;
        }
        let names: Vec<String> = set
            .packages
            .iter()
            .map(|p| format!("{p}:{debian_arch}"))
            .collect();
        let simulate = || -> Result<Vec<Resolved>> {
            let out = self.apt.output(
                &self
                    .apt_get(suite)?
                    .args(["-s", "install", "--no-install-recommends"])
                    .args(&names),
            )?;
            Ok(parse_simulation(&out))
        };
        let mut resolved = simulate()?;
        if resolved.is_empty() {
            bail!(
                "apt resolved nothing for {} ({suite}, {debian_arch}); see {}",
                names.join(" "),
                log.display()
            );
        }
        resolved.sort();
        let key = paths::short_hash(&format!(
            "{LAYOUT}\n{}",
            resolved
                .iter()
                .map(|r| format!("{}={}:{}", r.name, r.version, r.arch))
                .collect::<Vec<_>>()
                .join("\n")
        ));
        let dir = self
            .cache
            .dir
            .join(format!("packages/{debian_arch}-{}-{key}", set.name));
        let root = dir.join("root");
        if dir.join("done").exists() {
            return Ok((root, resolved));
        }
        if dir.exists() {
            toolchain::remove_tree(&dir)?;
        }
        let debs = ui::ensure_dir(dir.join("debs"))?;
        let download = |resolved: &[Resolved]| -> Result<()> {
            let specs: Vec<String> = resolved
                .iter()
                .map(|r| format!("{}:{}={}", r.name, r.arch, r.version))
                .collect();
            ui::run_logged(
                &mut self
                    .apt
                    .command(&self.apt_get(suite)?.arg("download").args(&specs).cwd(&debs)),
                &log,
                phase,
                "check access to the Debian mirror",
            )
        };
        phase.status(&format!("downloading {} packages", resolved.len()));
        if download(&resolved).is_err() {
            // Stale indexes name versions the mirror no longer has.
            self.apt_update(suite, &log, phase)?;
            resolved = simulate()?;
            resolved.sort();
            download(&resolved)?;
        }
        phase.status("unpacking");
        ui::ensure_dir(root.clone())?;
        let script = format!(
            "set -e; for d in '{}'/*.deb; do dpkg-deb -x \"$d\" '{}'; done",
            debs.display(),
            root.display()
        );
        ui::run_logged(
            &mut self.apt.command(&Cmd::new("sh").args(["-c", &script])),
            &log,
            phase,
            "see the log for the package that did not unpack",
        )?;
        toolchain::remove_tree(&debs)?;
        std::fs::write(dir.join("done"), "")?;
        Ok((root, resolved))
    }

    /// The package archive for `m`, or `None` when no set applies.
    pub fn guest_packages(&self, m: &Machine) -> Result<Option<GuestPackages>> {
        let file = load(&self.project)?;
        let sets: Vec<&Set> = file
            .set
            .iter()
            .filter(|s| s.arches.iter().any(|a| a == &m.name))
            .collect();
        if sets.is_empty() {
            return Ok(None);
        }
        Phase::start(format!("guest packages {}", m.name))
            .run(
                |phase| {
                    let mut ird = Initramfs::default();
                    let mut versions = BTreeMap::new();
                    let mut roots = BTreeMap::new();
                    for set in sets {
                        let (root, resolved) =
                            self.unpack_set(&file.suite, set, &m.debian_arch, phase)?;
                        add_set(&mut ird, &root, set, triplet(&m.debian_arch))
                            .with_context(|| format!("package set {:?}", set.name))?;
                        versions.insert(
                            set.name.clone(),
                            resolved
                                .iter()
                                .map(|r| format!("{}={}", r.name, r.version))
                                .collect(),
                        );
                        roots.insert(set.name.clone(), root);
                    }
                    let archive = self.cache.run_dir(&m.name)?.join("packages.cpio");
                    ui::write_atomic(&archive, &ird.to_cpio()?)?;
                    Ok(GuestPackages {
                        archive,
                        versions,
                        roots,
                    })
                },
                |g| {
                    let size = std::fs::metadata(&g.archive).map(|m| m.len()).unwrap_or(0);
                    let sets: Vec<String> = g
                        .versions
                        .iter()
                        .map(|(k, v)| format!("{k} ({} packages)", v.len()))
                        .collect();
                    format!("{}, {:.1} MiB", sets.join(", "), size as f64 / 1048576.0)
                },
            )
            .map(Some)
    }
}

/// `path` under `root` with symlinks followed inside `root`.
fn resolve(root: &Path, rel: &Path) -> Result<PathBuf> {
    let mut p = root.join(rel);
    for _ in 0..16 {
        match std::fs::read_link(&p) {
            Ok(t) if t.is_absolute() => {
                p = root.join(t.strip_prefix("/").unwrap_or(&t));
            }
            Ok(t) => {
                p = p.parent().context("symlink without a parent")?.join(t);
            }
            Err(_) => return Ok(p),
        }
    }
    bail!("too many symlinks at {}", rel.display())
}

/// The library directories of the unpacked root, searched in this order.
fn lib_dirs(triplet: &str) -> Vec<String> {
    vec![
        format!("usr/lib/{triplet}"),
        format!("lib/{triplet}"),
        "usr/lib".into(),
        "lib".into(),
        format!("usr/lib/{triplet}/igt-gpu-tools"),
    ]
}

/// What an ELF file needs: its DT_NEEDED sonames and its interpreter.
fn elf_needs(bytes: &[u8]) -> Option<(Vec<String>, Option<String>)> {
    let elf = goblin::elf::Elf::parse(bytes).ok()?;
    Some((
        elf.libraries.iter().map(|s| s.to_string()).collect(),
        elf.interpreter.map(str::to_string),
    ))
}

/// Adds a set's programs, their library closure and data to `ird`.
fn add_set(ird: &mut Initramfs, root: &Path, set: &Set, triplet: &str) -> Result<()> {
    let mut programs = Vec::new();
    for g in &set.programs {
        let pattern = root.join(g).display().to_string();
        let mut found = 0;
        for p in glob::glob(&pattern)?.flatten() {
            let real = resolve(root, p.strip_prefix(root)?)?;
            if real.is_file() {
                programs.push((p.strip_prefix(root)?.to_path_buf(), real));
                found += 1;
            }
        }
        if found == 0 {
            bail!("no file in the packages matches {g:?}");
        }
    }
    let libdir = format!("usr/lib/{triplet}");
    let mut queue: Vec<PathBuf> = programs.iter().map(|(_, real)| real.clone()).collect();
    let mut seen_libs = BTreeSet::new();
    let mut missing = BTreeSet::new();
    let mut interpreters = BTreeSet::new();
    while let Some(file) = queue.pop() {
        let bytes = std::fs::read(&file)?;
        let Some((needed, interp)) = elf_needs(&bytes) else {
            continue;
        };
        interpreters.extend(interp);
        for so in needed {
            if !seen_libs.insert(so.clone()) {
                continue;
            }
            let hit = lib_dirs(triplet)
                .into_iter()
                .map(|d| root.join(d).join(&so))
                .find(|p| p.exists() || p.is_symlink());
            match hit {
                Some(p) => {
                    let real = resolve(root, p.strip_prefix(root)?)?;
                    ird.file(&format!("{libdir}/{so}"), std::fs::read(&real)?, 0o755);
                    queue.push(real);
                }
                None => {
                    missing.insert(so);
                }
            }
        }
    }
    if !missing.is_empty() {
        bail!(
            "no package of the closure provides {}; add the package that does to qemu/packages.toml",
            missing.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    for (rel, real) in &programs {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(real)?.permissions().mode() & 0o7777;
        ird.file(&rel.display().to_string(), std::fs::read(real)?, mode);
    }
    for interp in interpreters {
        let name = Path::new(&interp)
            .file_name()
            .context("interpreter without a name")?
            .to_string_lossy()
            .into_owned();
        let real = lib_dirs(triplet)
            .into_iter()
            .map(|d| root.join(d).join(&name))
            .find(|p| p.exists())
            .with_context(|| format!("no package provides the ELF interpreter {interp}"))?;
        let real = resolve(root, real.strip_prefix(root)?)?;
        ird.file(&format!("{libdir}/{name}"), std::fs::read(&real)?, 0o755);
        if interp.trim_start_matches('/') != format!("{libdir}/{name}") {
            ird.symlink(&interp, &format!("/{libdir}/{name}"));
        }
    }
    for d in &set.data {
        let src = root.join(d);
        if !src.is_dir() {
            bail!("the packages have no directory {d}");
        }
        ird.tree(&src, d)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulation_lines_are_read() {
        let out = "NOTE: This is only a simulation!\n\
                   Inst libc6:arm64 (2.43-7 Debian:unstable [arm64])\n\
                   Inst libdrm-common (2.4.134-3 Debian:unstable [all])\n\
                   Inst igt-gpu-tools (2.5-1 Debian:unstable [amd64]) []\n\
                   Conf libc6:arm64 (2.43-7 Debian:unstable [arm64])\n";
        let r = parse_simulation(out);
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[0],
            Resolved {
                name: "libc6".into(),
                version: "2.43-7".into(),
                arch: "arm64".into()
            }
        );
        assert_eq!(r[1].arch, "all");
        assert_eq!(r[2].name, "igt-gpu-tools");
    }

    #[test]
    fn the_project_package_file_parses() {
        let f = load(&crate::paths::project_root()).unwrap();
        assert!(f.set.iter().any(|s| s.name == "igt"));
    }

    #[test]
    fn a_missing_library_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        // This test binary itself needs libc, which the empty root lacks.
        std::fs::copy(std::env::current_exe().unwrap(), root.join("usr/bin/prog")).unwrap();
        let set = Set {
            name: "t".into(),
            arches: vec![],
            packages: vec![],
            programs: vec!["usr/bin/prog".into()],
            data: vec![],
        };
        let e = add_set(&mut Initramfs::default(), root, &set, "x86_64-linux-gnu").unwrap_err();
        assert!(e.to_string().contains("libc.so.6"), "{e}");
    }
}
