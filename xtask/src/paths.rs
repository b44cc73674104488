//! The project's directories and the cache layout.
//!
//! The cache lives outside the clone: `$VIRTGPU_RS_CACHE`, else
//! `$XDG_CACHE_HOME/virtgpu-rs`, else `~/.cache/virtgpu-rs`. Everything in it
//! is keyed by what produced it (kernel source hash, toolchain identity,
//! configuration), so a change of any of them never reuses stale output.
//!
//! ```text
//! root/trixie-<key>/          Debian root (when the host toolchain does not qualify)
//! root/trixie-<key>.state/    its stamps and setup.log
//! downloads/                  verified .deb files
//! src/linux-<ver>-<sha>/      pristine kernel source (never modified)
//! tree/<src-key>/             build tree: hard links to the source + overlay
//! build/<arch>-<key>/         O= build directory, build.log, modules
//! guest/                      cargo target dir of the guest programs
//! run/<arch>/                 initramfs, serial logs, QMP sockets, screenshots
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// The cache directory.
#[derive(Clone, Debug)]
pub struct Cache {
    pub dir: PathBuf,
}

impl Cache {
    /// Resolves the cache directory from the option or the environment.
    pub fn locate(explicit: Option<PathBuf>) -> Result<Cache> {
        let dir = match explicit.or_else(|| std::env::var_os("VIRTGPU_RS_CACHE").map(PathBuf::from))
        {
            Some(d) => d,
            None => match std::env::var_os("XDG_CACHE_HOME") {
                Some(x) if !x.is_empty() => PathBuf::from(x).join("virtgpu-rs"),
                _ => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
                    .join(".cache/virtgpu-rs"),
            },
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the cache directory {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        Ok(Cache { dir })
    }

    /// `run/<arch>`, created.
    pub fn run_dir(&self, arch: &str) -> Result<PathBuf> {
        crate::ui::ensure_dir(self.dir.join("run").join(arch))
    }
}

/// The workspace root (the clone).
pub fn project_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The first 12 hex digits of the SHA-256 of `s`: a short cache key.
pub fn short_hash(s: &str) -> String {
    sha256_hex(s.as_bytes())[..12].to_string()
}

/// SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(short_hash("abc"), "ba7816bf8f01");
    }
}
