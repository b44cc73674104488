//! Machine definitions (`qemu/machines/<arch>.json`).

use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

/// Architectures the project supports, in the order `--arch all` runs them.
pub const ARCHES: &[&str] = &["x86_64", "arm64"];

/// One QEMU machine and how to build for it.
#[derive(Clone, Debug, Deserialize)]
pub struct Machine {
    /// Our name (`x86_64`, `arm64`); not in the file, taken from its name.
    #[serde(skip)]
    pub name: String,
    /// The kernel's `ARCH=`.
    pub kernel_arch: String,
    /// The boot image, relative to the build directory.
    pub kernel_image: String,
    /// Rust target of the guest programs.
    pub rust_target: String,
    /// Debian architecture (for busybox-static).
    pub debian_arch: String,
    /// QEMU binary.
    pub qemu: String,
    /// Machine arguments (everything but kernel, initrd, append, serial, QMP).
    pub args: Vec<String>,
    /// Serial console device for `console=`.
    pub console: String,
}

impl Machine {
    /// Loads `qemu/machines/<arch>.json`.
    pub fn load(project: &Path, arch: &str) -> Result<Machine> {
        if !ARCHES.contains(&arch) {
            anyhow::bail!(
                "unknown architecture {arch:?}: use one of {} or all",
                ARCHES.join(", ")
            );
        }
        let p = project.join(format!("qemu/machines/{arch}.json"));
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let mut m: Machine =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        m.name = arch.to_string();
        Ok(m)
    }
}

/// Expands `all` and validates names.
pub fn arches(spec: &str) -> Result<Vec<String>> {
    if spec == "all" {
        return Ok(ARCHES.iter().map(|s| s.to_string()).collect());
    }
    let mut v = Vec::new();
    for a in spec.split(',') {
        if !ARCHES.contains(&a) {
            anyhow::bail!(
                "unknown architecture {a:?}: use one of {} or all",
                ARCHES.join(", ")
            );
        }
        v.push(a.to_string());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_machines_load() {
        let root = crate::paths::project_root();
        for a in ARCHES {
            let m = Machine::load(&root, a).unwrap();
            assert_eq!(&m.name, a);
            assert!(m.args.iter().any(|x| x == "virtio-gpu-pci"));
        }
    }

    #[test]
    fn unknown_arch_is_an_error() {
        let e = arches("riscv").unwrap_err().to_string();
        assert!(e.contains("unknown architecture \"riscv\""), "{e}");
        assert_eq!(arches("all").unwrap(), ["x86_64", "arm64"]);
    }
}
