//! Applying the project's overlay to a build tree.
//!
//! The build tree is a hard-link farm of the pristine source (`cp -al`), made
//! once per source. The overlay is then reconciled into it:
//!
//! - every file under `abstractions/` but `abstractions/patches/` is copied
//!   to the same path in the tree (`abstractions/rust/kernel/x.rs` becomes
//!   `rust/kernel/x.rs`);
//! - `driver/**` is copied to `drivers/gpu/drm/virtio_rs/**`;
//! - the patches listed in `abstractions/patches/series` are applied, in
//!   order, with GNU `patch` and no fuzz.
//!
//! Everything is computed first in a scratch directory (patches run against
//! pristine copies of the files they touch), so a failing hunk leaves the
//! tree exactly as it was. Then each overlay path is written only when its
//! content changed, always by unlinking first (a write through a hard link
//! would modify the pristine source). Paths the previous overlay touched and
//! this one does not are restored from the pristine source. The result does
//! not depend on how often the overlay is applied, and unchanged files keep
//! their timestamps so `make` rebuilds only what really changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::toolchain::{Cmd, Toolchain};
use crate::ui::{self, Phase};

/// Where the driver lands in the kernel tree.
pub const DRIVER_DEST: &str = "drivers/gpu/drm/virtio_rs";
const MANIFEST: &str = ".virtgpu-overlay-manifest";

/// The desired content of every path the overlay touches.
pub type Files = BTreeMap<PathBuf, Vec<u8>>;

/// Collects the files below `dir` as (source, path in the tree below `rel`)
/// pairs, in name order, skipping hidden files and directories and a
/// top-level `patches` directory.
fn walk(dir: &Path, rel: &Path, out: &mut Vec<(PathBuf, PathBuf)>) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let entries = walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            let name = e.file_name().to_string_lossy();
            e.depth() == 0 || !(name.starts_with('.') || (e.depth() == 1 && name == "patches"))
        });
    for e in entries {
        let e = e.with_context(|| format!("walking {}", dir.display()))?;
        if e.file_type().is_dir() {
            continue;
        }
        let below = e.path().strip_prefix(dir)?;
        out.push((e.path().to_path_buf(), rel.join(below)));
    }
    Ok(())
}

/// The patch files in series order.
pub fn series(project: &Path) -> Result<Vec<PathBuf>> {
    let dir = project.join("abstractions/patches");
    let series = dir.join("series");
    if !series.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&series)?;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let p = dir.join(line);
        if !p.exists() {
            bail!("{} lists {line}, which does not exist", series.display());
        }
        out.push(p);
    }
    Ok(out)
}

/// The tree paths a unified diff modifies (from its `+++ b/...` lines).
pub fn patched_paths(diff: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = diff
        .lines()
        .filter_map(|l| l.strip_prefix("+++ "))
        .map(|p| p.split('\t').next().unwrap_or(p).trim())
        .filter(|p| *p != "/dev/null")
        .map(|p| PathBuf::from(p.strip_prefix("b/").unwrap_or(p)))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Computes the overlay's files: copies plus patched files. Patches are
/// applied in `scratch` against pristine copies of their targets.
pub fn compute(
    project: &Path,
    pristine: &Path,
    scratch: &Path,
    tc: &Toolchain,
    log: &Path,
    phase: &Phase,
) -> Result<Files> {
    let mut files = Files::new();
    let mut copies = Vec::new();
    walk(&project.join("abstractions"), Path::new(""), &mut copies)?;
    walk(&project.join("driver"), Path::new(DRIVER_DEST), &mut copies)?;
    for (src, rel) in copies {
        let content = std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
        files.insert(rel, content);
    }

    let patches = series(project)?;
    if patches.is_empty() {
        return Ok(files);
    }
    if scratch.exists() {
        crate::toolchain::remove_tree(scratch)?;
    }
    ui::ensure_dir(scratch.to_path_buf())?;
    for patch in &patches {
        let diff = std::fs::read_to_string(patch)?;
        for rel in patched_paths(&diff) {
            let dst = scratch.join(&rel);
            if dst.exists() {
                continue;
            }
            if let Some(d) = dst.parent() {
                std::fs::create_dir_all(d)?;
            }
            // Patches apply to the pristine tree plus the copied files.
            if let Some(content) = files.get(&rel) {
                std::fs::write(&dst, content)?;
            } else if pristine.join(&rel).exists() {
                std::fs::copy(pristine.join(&rel), &dst)?;
            }
        }
        let name = patch
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let res = ui::run_logged(
            &mut tc.command(
                &Cmd::new("patch")
                    .args(["-p1", "--batch", "--forward", "--fuzz=0", "--no-backup-if-mismatch", "-r", "-", "-i"])
                    .arg(patch)
                    .cwd(scratch),
            ),
            log,
            phase,
            &format!("the hunk in abstractions/patches/{name} does not match this kernel tree; refresh the patch"),
        );
        res.with_context(|| {
            format!("applying abstractions/patches/{name}: the build tree was left unchanged")
        })?;
        for rel in patched_paths(&diff) {
            let p = scratch.join(&rel);
            files.insert(rel, std::fs::read(&p)?);
        }
    }
    Ok(files)
}

/// Makes the build tree for `pristine` at `tree` (a hard-link farm) if it
/// does not exist yet.
pub fn ensure_tree(pristine: &Path, tree: &Path, phase: &Phase) -> Result<()> {
    if tree.join(".virtgpu-tree").exists() {
        return Ok(());
    }
    phase.status("linking the build tree");
    let partial = tree.with_extension("partial");
    if partial.exists() {
        crate::toolchain::remove_tree(&partial)?;
    }
    if let Some(p) = partial.parent() {
        std::fs::create_dir_all(p)?;
    }
    let linked = std::process::Command::new("cp")
        .arg("-al")
        .arg(pristine)
        .arg(&partial)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !linked {
        // Another filesystem: fall back to a copy.
        if partial.exists() {
            crate::toolchain::remove_tree(&partial)?;
        }
        let ok = std::process::Command::new("cp")
            .arg("-a")
            .arg(pristine)
            .arg(&partial)
            .status()?
            .success();
        if !ok {
            bail!(
                "could not copy {} to {}",
                pristine.display(),
                partial.display()
            );
        }
    }
    std::fs::write(
        partial.join(".virtgpu-tree"),
        pristine.display().to_string(),
    )?;
    if tree.exists() {
        crate::toolchain::remove_tree(tree)?;
    }
    std::fs::rename(&partial, tree)?;
    Ok(())
}

/// Replaces `path` with `content` without writing through a hard link.
fn replace(path: &Path, content: &[u8]) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = path.with_file_name(format!(
        ".{}.virtgpu-new",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::write(&tmp, content)?;
    // rename() replaces the directory entry, never the linked inode.
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Reconciles `files` into `tree`. Returns the paths that changed.
pub fn reconcile(files: &Files, pristine: &Path, tree: &Path) -> Result<Vec<PathBuf>> {
    let manifest_path = tree.join(MANIFEST);
    let old: Vec<PathBuf> = std::fs::read_to_string(&manifest_path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(PathBuf::from)
        .collect();
    let mut changed = Vec::new();
    for rel in &old {
        if files.contains_key(rel) {
            continue;
        }
        // No longer part of the overlay: back to the pristine state.
        let p = tree.join(rel);
        let _ = std::fs::remove_file(&p);
        if pristine.join(rel).exists() {
            std::fs::hard_link(pristine.join(rel), &p)
                .or_else(|_| std::fs::copy(pristine.join(rel), &p).map(|_| ()))?;
        }
        changed.push(rel.clone());
    }
    for (rel, content) in files {
        let p = tree.join(rel);
        if std::fs::read(&p).ok().as_deref() == Some(content.as_slice()) {
            continue;
        }
        replace(&p, content)?;
        changed.push(rel.clone());
    }
    let listing: String = files.keys().map(|p| format!("{}\n", p.display())).collect();
    ui::write_atomic(&manifest_path, listing.as_bytes())?;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patched_paths_reads_plus_lines() {
        let d = "--- a/x/Kconfig\n+++ b/x/Kconfig\t2026-01-01\n@@ -1 +1 @@\n--- /dev/null\n+++ b/new.c\n";
        assert_eq!(
            patched_paths(d),
            vec![PathBuf::from("new.c"), PathBuf::from("x/Kconfig")]
        );
    }

    #[test]
    fn walk_skips_hidden_entries_and_only_the_top_patches_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in [
            "b",
            ".hidden",
            "patches/p",
            "a/.cmd",
            "a/c",
            "a/patches/q",
            ".git/x",
        ] {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, f).unwrap();
        }
        let mut out = Vec::new();
        walk(root, Path::new("dest"), &mut out).unwrap();
        let rels: Vec<_> = out.iter().map(|(_, rel)| rel.to_str().unwrap()).collect();
        assert_eq!(rels, ["dest/a/c", "dest/a/patches/q", "dest/b"]);
        assert!(out
            .iter()
            .all(|(src, rel)| src.ends_with(rel.strip_prefix("dest").unwrap())));
    }

    #[test]
    fn reconcile_never_writes_through_links_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let pristine = root.join("pristine");
        std::fs::create_dir_all(pristine.join("d")).unwrap();
        std::fs::write(pristine.join("d/f"), b"orig").unwrap();
        let tree = root.join("tree");
        let phase = Phase::start("test");
        ensure_tree(&pristine, &tree, &phase).unwrap();
        phase.done("");

        let mut files = Files::new();
        files.insert("d/f".into(), b"new".to_vec());
        files.insert("d/added".into(), b"a".to_vec());
        let changed = reconcile(&files, &pristine, &tree).unwrap();
        assert_eq!(changed.len(), 2);
        assert_eq!(std::fs::read(pristine.join("d/f")).unwrap(), b"orig");
        assert_eq!(std::fs::read(tree.join("d/f")).unwrap(), b"new");
        // Applying again changes nothing.
        assert!(reconcile(&files, &pristine, &tree).unwrap().is_empty());
        // Dropping a file from the overlay restores the pristine state.
        files.remove(Path::new("d/f"));
        files.remove(Path::new("d/added"));
        let changed = reconcile(&files, &pristine, &tree).unwrap();
        assert_eq!(changed.len(), 2);
        assert_eq!(std::fs::read(tree.join("d/f")).unwrap(), b"orig");
        assert!(!tree.join("d/added").exists());
    }
}
