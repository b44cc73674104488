//! Kernel configuration fragments: parse, merge, verify.
//!
//! A fragment is a list of `CONFIG_X=value` and `# CONFIG_X is not set` lines.
//! The build merges the fragments over a `tinyconfig` base, runs
//! `olddefconfig`, then [`verify`] checks that every requested option
//! survived, because Kconfig silently drops an option whose dependencies are
//! not met.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

/// A configuration: option name (with `CONFIG_`) to value; `n` for "is not set".
pub type Config = BTreeMap<String, String>;

/// Parses `.config` or fragment text. Lines that are neither an assignment
/// nor a "not set" comment are ignored; a malformed assignment is an error.
pub fn parse(text: &str) -> Result<Config> {
    let mut c = Config::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("# ") {
            if let Some(name) = rest.strip_suffix(" is not set") {
                if name.starts_with("CONFIG_") && !name.contains(' ') {
                    c.insert(name.to_string(), "n".into());
                }
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) if k.starts_with("CONFIG_") && !k.contains(' ') && !v.is_empty() => {
                c.insert(k.to_string(), v.to_string());
            }
            _ => bail!("line {}: not a Kconfig assignment: {line:?}", i + 1),
        }
    }
    Ok(c)
}

/// Renders a configuration in `.config` syntax.
pub fn render(c: &Config) -> String {
    let mut s = String::new();
    for (k, v) in c {
        if v == "n" {
            s.push_str(&format!("# {k} is not set\n"));
        } else {
            s.push_str(&format!("{k}={v}\n"));
        }
    }
    s
}

/// `base` with every fragment applied in order (later wins).
pub fn merge(base: &Config, fragments: &[Config]) -> Config {
    let mut out = base.clone();
    for f in fragments {
        for (k, v) in f {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// An option that did not get the requested value.
#[derive(Debug, PartialEq, Eq)]
pub struct Dropped {
    pub name: String,
    pub wanted: String,
    /// What the final configuration has (`n` when absent or not set).
    pub got: String,
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: wanted {}, got {}", self.name, self.wanted, self.got)
    }
}

/// The requested options whose final value differs.
pub fn verify(requested: &Config, final_config: &Config) -> Vec<Dropped> {
    requested
        .iter()
        .filter_map(|(k, want)| {
            let got = final_config.get(k).cloned().unwrap_or_else(|| "n".into());
            (got != *want).then(|| Dropped {
                name: k.clone(),
                wanted: want.clone(),
                got,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_assignments_and_not_set() {
        let c =
            parse("# comment\nCONFIG_A=y\n# CONFIG_B is not set\n\nCONFIG_S=\"x y\"\n").unwrap();
        assert_eq!(c["CONFIG_A"], "y");
        assert_eq!(c["CONFIG_B"], "n");
        assert_eq!(c["CONFIG_S"], "\"x y\"");
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("CONFIG_A\n").is_err());
        assert!(parse("FOO=y\n").is_err());
    }

    #[test]
    fn later_fragment_wins_and_render_round_trips() {
        let base = parse("CONFIG_A=y\nCONFIG_B=m\n").unwrap();
        let f1 = parse("CONFIG_B=y\n").unwrap();
        let f2 = parse("# CONFIG_A is not set\nCONFIG_C=3\n").unwrap();
        let m = merge(&base, &[f1, f2]);
        assert_eq!(parse(&render(&m)).unwrap(), m);
        assert_eq!(m["CONFIG_A"], "n");
        assert_eq!(m["CONFIG_B"], "y");
        assert_eq!(m["CONFIG_C"], "3");
    }

    #[test]
    fn verify_names_dropped_options() {
        // Real olddefconfig output: RUST requested but its dependency failed,
        // DRM_FBDEV_EMULATION requested off and absent (that counts as off).
        let requested =
            parse("CONFIG_RUST=y\nCONFIG_DRM=y\n# CONFIG_DRM_FBDEV_EMULATION is not set\nCONFIG_DRM_VIRTIO_GPU=m\n")
                .unwrap();
        let fin =
            parse("CONFIG_DRM=y\n# CONFIG_RUST is not set\nCONFIG_DRM_VIRTIO_GPU=y\n").unwrap();
        let d = verify(&requested, &fin);
        assert_eq!(
            d,
            vec![
                Dropped {
                    name: "CONFIG_DRM_VIRTIO_GPU".into(),
                    wanted: "m".into(),
                    got: "y".into()
                },
                Dropped {
                    name: "CONFIG_RUST".into(),
                    wanted: "y".into(),
                    got: "n".into()
                },
            ]
        );
        assert_eq!(d[1].to_string(), "CONFIG_RUST: wanted y, got n");
    }
}
