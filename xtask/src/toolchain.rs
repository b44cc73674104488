//! Where commands run: on the host, or in a Debian trixie root (chroot).
//!
//! The host is used when its toolchain qualifies (`make LLVM=1 rustavailable`
//! passes on the kernel tree and every other tool is present). Otherwise a
//! trixie root with trixie-backports is provisioned with `debootstrap` under
//! the cache and every command runs inside it through `unshare --mount` +
//! `chroot`, with the cache, the project and the kernel tree bind-mounted at
//! the same paths they have on the host (so paths mean the same thing on both
//! sides and no mount outlives the command).
//!
//! Provisioning is idempotent and resumable: each stage leaves a stamp file
//! next to the root only after it completed. A root without the debootstrap
//! stamp is half-made and is removed and made again; the package stage repairs
//! an interrupted dpkg run (`dpkg --configure -a`) before installing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::paths::Cache;
use crate::ui::{self, Phase};

/// Debian suite of the root.
const SUITE: &str = "trixie";

/// Packages installed in the root from trixie-backports (apt falls back to
/// trixie for those not in backports).
pub const ROOT_PACKAGES: &[&str] = &[
    // kernel build
    "make",
    "bc",
    "flex",
    "bison",
    "libelf-dev",
    "libssl-dev",
    "cpio",
    "kmod",
    "python3",
    "xz-utils",
    // clang, lld and llvm come at rustc's LLVM version: see [`llvm_packages`];
    // bindgen from crates.io: see [`BINDGEN`].
    "ca-certificates",
    // guest programs, both arches (Rust's own packages are in RUST_PACKAGES)
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
    // machines
    "qemu-system-x86",
    "qemu-system-arm",
    "patch",
];

/// Packages built from Debian's `rustc` source: installed at one version,
/// the newest that the mirror has for both amd64 and arm64 ([`rust_version`]).
/// `libstd-rust-dev` of the two arches must match `rustc` exactly, and
/// trixie-backports can carry a new amd64 build for days before the arm64
/// one is published; asking apt for "the newest" then has no solution.
pub const RUST_PACKAGES: &[&str] = &[
    "rustc",
    "rust-src",
    "rustfmt",
    "rust-clippy",
    "cargo",
    "libstd-rust-dev",
    "libstd-rust-dev:arm64",
];

/// The newest version in `amd64` (`apt-cache madison rustc`) that `arm64`
/// (`apt-cache madison libstd-rust-dev:arm64`) also lists. apt lists a
/// package's versions newest first, so the first match is the newest.
pub fn rust_version(amd64: &str, arm64: &str) -> Option<String> {
    fn versions(madison: &str) -> Vec<&str> {
        madison
            .lines()
            .filter_map(|l| l.split('|').nth(1))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    }
    let arm64 = versions(arm64);
    versions(amd64)
        .into_iter()
        .find(|v| arm64.contains(v))
        .map(str::to_string)
}

/// The LLVM major version a `rustc -vV` report names (`LLVM version: 22.1.8`).
pub fn rustc_llvm_major(rustc_vv: &str) -> Option<u32> {
    rustc_vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .and_then(|v| v.trim().split('.').next())
        .and_then(|m| m.parse().ok())
}

/// The major version an LLVM tool's `--version` report names on its first line
/// (`Debian clang version 22.1.8 (1~deb13u5)`, `Debian LLVM version 22.1.8`).
pub fn llvm_tool_major(version: &str) -> Option<u32> {
    let first = version.lines().next()?;
    let rest = &first[first.find("version ")? + "version ".len()..];
    rest.split('.').next()?.trim().parse().ok()
}

/// The Debian packages of LLVM `major`: the C compiler, linker and tools the
/// kernel build uses with `LLVM=1`.
///
/// They are installed at rustc's LLVM version, not Debian's default, because
/// `CONFIG_RUST_INLINE_HELPERS` (on in `common.config`) links the C helpers'
/// bitcode into the Rust objects, and that needs Clang and rustc on one LLVM
/// (`RUSTC_CLANG_LLVM_COMPATIBLE`). Debian builds its rustc against its own
/// `llvm-toolchain-N`, so the matching `clang-N` is in the same archive.
pub fn llvm_packages(major: u32) -> Vec<String> {
    ["clang", "lld", "llvm"]
        .iter()
        .map(|p| format!("{p}-{major}"))
        .collect()
}

/// The bindgen the root builds from crates.io (`cargo install --locked`).
///
/// Debian's bindgen (0.71.1) cannot be used with libclang 22 (rustc 1.98's
/// LLVM): it turns structs with anonymous members into opaque blobs, which
/// the kernel's `rustavailable` check names (rust-bindgen PR 3278, fixed in
/// 0.72.1). 0.72.1 is the oldest release with the fix.
pub const BINDGEN: &str = "0.72.1";

/// Where a host keeps the CA bundle it trusts, by distribution family.
const HOST_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
];

/// Bumped when the provisioning steps change, so old roots are not reused.
/// 2: clang, lld and llvm at rustc's LLVM version.
const ROOT_LAYOUT: u32 = 2;

/// How commands are run.
#[derive(Clone, Debug)]
pub enum Toolchain {
    /// Directly on the host.
    Host,
    /// In the chroot at this path, with these host directories bind-mounted.
    Root { root: PathBuf, binds: Vec<PathBuf> },
}

/// A command to run under a [`Toolchain`].
#[derive(Clone, Debug, Default)]
pub struct Cmd {
    program: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    cwd: Option<PathBuf>,
}

impl Cmd {
    pub fn new(program: &str) -> Cmd {
        Cmd {
            program: program.into(),
            ..Default::default()
        }
    }

    pub fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Cmd {
        self.args.push(a.as_ref().to_string_lossy().into_owned());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(mut self, it: I) -> Cmd {
        for a in it {
            self = self.arg(a);
        }
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Cmd {
        self.envs
            .push((k.into(), v.as_ref().to_string_lossy().into_owned()));
        self
    }

    pub fn cwd(mut self, dir: &Path) -> Cmd {
        self.cwd = Some(dir.to_path_buf());
        self
    }
}

/// The shell script that sets up the mount namespace and enters the root.
/// Arguments: root, number of binds, the bind paths, then the command.
const ENTER_ROOT: &str = r#"
R=$1; n=$2; shift 2
for d in /proc /sys /dev; do mount --rbind "$d" "$R$d" || exit 125; done
while [ "$n" -gt 0 ]; do
  mkdir -p "$R$1" && mount --rbind "$1" "$R$1" || exit 125
  shift; n=$((n - 1))
done
exec chroot "$R" "$@"
"#;

impl Toolchain {
    /// Builds the `std::process::Command` for `c`.
    pub fn command(&self, c: &Cmd) -> Command {
        match self {
            Toolchain::Host => {
                let mut cmd = Command::new(&c.program);
                cmd.args(&c.args);
                for (k, v) in &c.envs {
                    cmd.env(k, v);
                }
                if let Some(d) = &c.cwd {
                    cmd.current_dir(d);
                }
                cmd
            }
            Toolchain::Root { root, binds } => {
                let mut cmd = Command::new("unshare");
                cmd.args([
                    "--mount",
                    "--propagation",
                    "private",
                    "--fork",
                    "--kill-child",
                    "--",
                ]);
                cmd.args(["sh", "-c", ENTER_ROOT, "enter-root"]);
                cmd.arg(root);
                cmd.arg(binds.len().to_string());
                cmd.args(binds);
                cmd.args(["/usr/bin/env", "-i"]);
                if let Some(d) = &c.cwd {
                    cmd.arg(format!("--chdir={}", d.display()));
                }
                cmd.args([
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "HOME=/root",
                    "LANG=C.UTF-8",
                    "DEBIAN_FRONTEND=noninteractive",
                ]);
                for (k, v) in &c.envs {
                    cmd.arg(format!("{k}={v}"));
                }
                cmd.arg(&c.program);
                cmd.args(&c.args);
                cmd
            }
        }
    }

    /// A short description for messages.
    pub fn describe(&self) -> String {
        match self {
            Toolchain::Host => "host toolchain".into(),
            Toolchain::Root { root, .. } => format!("Debian {SUITE} root at {}", root.display()),
        }
    }

    /// Output of a command run under this toolchain.
    pub fn output(&self, c: &Cmd) -> Result<String> {
        ui::output(&mut self.command(c))
    }

    /// A string identifying the compilers, for cache keys.
    pub fn identity(&self) -> Result<String> {
        let mut id = String::new();
        for (prog, arg) in [
            ("rustc", "--version"),
            ("clang", "--version"),
            ("bindgen", "--version"),
        ] {
            let out = self.output(&Cmd::new(prog).arg(arg))?;
            id.push_str(out.lines().next().unwrap_or(""));
            id.push('\n');
        }
        Ok(id)
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// The Debian mirror for debootstrap and the root's apt: `VIRTGPU_RS_MIRROR`,
/// else the first Debian archive the host's apt is configured with.
pub fn mirror() -> Result<String> {
    if let Ok(m) = std::env::var("VIRTGPU_RS_MIRROR") {
        return Ok(m);
    }
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        if let Some(m) = mirror_from_sources(&text) {
            return Ok(m);
        }
    }
    bail!(
        "cannot tell which Debian mirror to use: the host's apt sources name none.\n  \
         hint: set VIRTGPU_RS_MIRROR to a Debian archive URL"
    )
}

/// Finds a Debian archive URI (path ending in `/debian`) in apt sources text,
/// one-line (`deb URI suite ...`) or deb822 (`URIs: URI`) style.
pub fn mirror_from_sources(text: &str) -> Option<String> {
    for line in text.lines() {
        let line = line.trim();
        let uri = if let Some(rest) = line.strip_prefix("URIs:") {
            rest.split_whitespace().next()
        } else if let Some(rest) = line.strip_prefix("deb ") {
            rest.split_whitespace().find(|w| w.contains("://"))
        } else {
            None
        };
        if let Some(u) = uri {
            if u.trim_end_matches('/').ends_with("/debian") {
                return Some(u.trim_end_matches('/').to_string());
            }
        }
    }
    None
}

/// The trixie root, provisioned up to its base stage (debootstrap and apt
/// configured). It is what downloads packages, whichever toolchain builds.
pub fn ensure_root_base(cache: &Cache, binds: Vec<PathBuf>) -> Result<Toolchain> {
    let (root, stamps) = root_paths(cache);
    let tc = Toolchain::Root {
        root: root.clone(),
        binds,
    };
    let base_done = stamps.join("base.done");
    if base_done.exists() {
        return Ok(tc);
    }
    need_privileges()?;
    ui::ensure_dir(stamps.clone())?;
    let log = stamps.join("setup.log");
    let mirror = mirror()?;
    Phase::start("setup: debootstrap").run(
        |phase| {
            ensure_host_tool("debootstrap", "debootstrap", &log, phase)?;
            if root.exists() {
                phase.status("removing a half-made root");
                remove_tree(&root)?;
            }
            let tmp = root.with_extension("partial");
            if tmp.exists() {
                remove_tree(&tmp)?;
            }
            let mut cmd = Command::new("debootstrap");
            cmd.args(["--variant=minbase", SUITE])
                .arg(&tmp)
                .arg(&mirror);
            ui::run_logged(
                &mut cmd,
                &log,
                phase,
                "check the network access to the Debian mirror, then rerun",
            )?;
            std::fs::write(
                tmp.join("etc/apt/sources.list"),
                format!("deb {mirror} {SUITE} main\ndeb {mirror} {SUITE}-backports main\n"),
            )?;
            // The mirror served here is a frozen snapshot whose Release files are
            // past Valid-Until.
            std::fs::write(
                tmp.join("etc/apt/apt.conf.d/99virtgpu-rs"),
                "Acquire::Check-Valid-Until \"false\";\nAPT::Install-Recommends \"false\";\n",
            )?;
            std::fs::rename(&tmp, &root)?;
            for s in [
                Cmd::new("dpkg").arg("--add-architecture").arg("arm64"),
                Cmd::new("apt-get").arg("update"),
                // What unpacking the kernel source and applying the overlay need.
                Cmd::new("apt-get").args(["-y", "install", "xz-utils", "patch"]),
            ] {
                ui::run_logged(
                    &mut tc.command(&s),
                    &log,
                    phase,
                    "rerun `cargo xtask setup`: it resumes",
                )?;
            }
            std::fs::write(&base_done, "")?;
            Ok(())
        },
        |_| root.display().to_string(),
    )?;
    Ok(tc)
}

/// The trixie root with the whole toolchain installed ([`ROOT_PACKAGES`]).
pub fn ensure_root_packages(tc: &Toolchain, cache: &Cache) -> Result<()> {
    let (root, stamps) = root_paths(cache);
    let done = stamps.join("packages.done");
    if done.exists() {
        return Ok(());
    }
    need_privileges()?;
    let log = stamps.join("setup.log");
    let hint = RESUME_HINT;
    Phase::start("setup: packages").run(
        |phase| {
            // Repairs an interrupted earlier run.
            for s in [
                Cmd::new("dpkg").arg("--configure").arg("-a"),
                Cmd::new("apt-get").args(["-y", "-f", "install"]),
            ] {
                ui::run_logged(&mut tc.command(&s), &log, phase, hint)?;
            }
            let madison = |p: &str| tc.output(&Cmd::new("apt-cache").args(["madison", p]));
            let (amd64, arm64) = (madison("rustc")?, madison("libstd-rust-dev:arm64")?);
            let Some(rust) = rust_version(&amd64, &arm64) else {
                bail!(
                    "the Debian mirror has no rustc version built for both amd64 and arm64\n\
                     amd64 rustc:\n{amd64}arm64 libstd-rust-dev:\n{arm64}\
                     hint: check the mirror in the root's /etc/apt/sources.list, then rerun"
                );
            };
            phase.status(&format!("Rust {rust}"));
            let install = apt_install(ROOT_PACKAGES)
                .args(RUST_PACKAGES.iter().map(|p| format!("{p}={rust}")));
            ui::run_logged(&mut tc.command(&install), &log, phase, hint)?;
            install_llvm(tc, &log, phase)?;
            install_bindgen(tc, &root, &log, phase)?;
            std::fs::write(&done, "")?;
            Ok(tc
                .output(&Cmd::new("rustc").arg("--version"))
                .unwrap_or_default())
        },
        |rustc| rustc.trim().to_string(),
    )?;
    Ok(())
}

/// What to do after a provisioning step failed.
const RESUME_HINT: &str = "rerun `cargo xtask setup`: it resumes where it stopped";

/// `apt-get install` of `packages` in the root, backports preferred.
fn apt_install<S: AsRef<std::ffi::OsStr>>(packages: impl IntoIterator<Item = S>) -> Cmd {
    Cmd::new("apt-get")
        .args(["-y", "install", "-t", &format!("{SUITE}-backports")])
        .args(packages)
}

/// Installs [`llvm_packages`] at the LLVM version of the root's rustc and puts
/// them first on PATH.
fn install_llvm(tc: &Toolchain, log: &Path, phase: &Phase) -> Result<()> {
    let vv = tc.output(&Cmd::new("rustc").arg("-vV"))?;
    let Some(major) = rustc_llvm_major(&vv) else {
        bail!(
            "`rustc -vV` in the root names no LLVM version:\n{vv}hint: rerun `cargo xtask setup`"
        );
    };
    phase.status(&format!("LLVM {major}, as rustc's"));
    ui::run_logged(
        &mut tc.command(&apt_install(llvm_packages(major))),
        log,
        phase,
        &format!(
            "the mirror must carry clang-{major}, lld-{major} and llvm-{major} (rustc's \
             LLVM); check the root's /etc/apt/sources.list, then rerun `cargo xtask setup`"
        ),
    )?;
    // `clang`, `ld.lld`, `llvm-ar`, ... on PATH (before /usr/bin) are
    // that version's; `llvm-config` then leads bindgen to its libclang.
    let link = Cmd::new("sh").args([
        "-c",
        &format!("ln -sf /usr/lib/llvm-{major}/bin/* /usr/local/bin/"),
    ]);
    ui::run_logged(&mut tc.command(&link), log, phase, RESUME_HINT)
}

/// Builds bindgen [`BINDGEN`] from crates.io into the root's /usr/local,
/// reaching crates.io as the host does.
fn install_bindgen(tc: &Toolchain, root: &Path, log: &Path, phase: &Phase) -> Result<()> {
    phase.status(&format!("building bindgen {BINDGEN} (about 2 min)"));
    let mut cargo = Cmd::new("cargo").args([
        "install",
        "--locked",
        "--root",
        "/usr/local",
        &format!("bindgen-cli@{BINDGEN}"),
    ]);
    // With the CAs the host trusts (a proxy's own CA, for one).
    if let Some(ca) = HOST_CA_BUNDLES.iter().map(Path::new).find(|p| p.is_file()) {
        let inside = "etc/ssl/certs/host-ca-bundle.crt";
        std::fs::copy(ca, root.join(inside))
            .with_context(|| format!("copying {} into the root", ca.display()))?;
        cargo = cargo.env("CARGO_HTTP_CAINFO", format!("/{inside}"));
    }
    // The root's commands start from an empty environment: hand on the host's proxy.
    for var in ["https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"] {
        if let Some(v) = std::env::var_os(var) {
            cargo = cargo.env(var, v);
        }
    }
    ui::run_logged(
        &mut tc.command(&cargo),
        log,
        phase,
        "check access to crates.io (the host's cargo reaches it?), then rerun `cargo xtask setup`",
    )
}

fn root_paths(cache: &Cache) -> (PathBuf, PathBuf) {
    let key = crate::paths::short_hash(&format!(
        "{ROOT_LAYOUT}\n{SUITE}\n{} {}\nbindgen {BINDGEN}",
        ROOT_PACKAGES.join(" "),
        RUST_PACKAGES.join(" ")
    ));
    (
        cache.dir.join(format!("root/{SUITE}-{key}")),
        cache.dir.join(format!("root/{SUITE}-{key}.state")),
    )
}

fn need_privileges() -> Result<()> {
    if is_root() {
        return Ok(());
    }
    bail!(
        "the Debian {SUITE} root is not provisioned yet and provisioning it (debootstrap, chroot) needs root.\n  \
         hint: run `sudo cargo xtask setup` once, or install a qualifying toolchain on the host: \
         rustc >= 1.85 with rust-src, bindgen >= 0.71.1 (>= 0.72.1 with libclang 22), clang, lld and llvm of rustc's LLVM version, make, bc, flex, \
         bison, libelf-dev, libssl-dev, cpio, kmod, qemu-system-x86, qemu-system-arm, \
         gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and libstd-rust-dev:arm64 matching rustc"
    )
}

/// Installs a host tool with apt-get when it is missing.
fn ensure_host_tool(tool: &str, package: &str, log: &Path, phase: &Phase) -> Result<()> {
    if which(tool).is_some() {
        return Ok(());
    }
    if which("apt-get").is_none() {
        bail!("`{tool}` is missing and this host has no apt-get.\n  hint: install the `{package}` package");
    }
    phase.status(&format!("installing {package} on the host"));
    ui::run_logged(
        Command::new("apt-get").arg("update"),
        log,
        phase,
        "check apt's configuration",
    )?;
    ui::run_logged(
        Command::new("apt-get").args(["-y", "install", package]),
        log,
        phase,
        &format!("install `{package}` by hand"),
    )
    .context(format!("installing {package}"))
}

/// Finds a program on the host's PATH.
pub fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// Removes a directory tree that may hold read-only directories.
pub fn remove_tree(path: &Path) -> Result<()> {
    let status = Command::new("rm")
        .arg("-rf")
        .arg("--one-file-system")
        .arg(path)
        .status()
        .context("running rm")?;
    if !status.success() {
        bail!("could not remove {}", path.display());
    }
    Ok(())
}

/// Why the host toolchain does not qualify, or `None` when it does.
pub fn host_shortfalls(src: &Path, scratch: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    for (tool, pkg) in [
        ("make", "make"),
        ("clang", "clang"),
        ("ld.lld", "lld"),
        ("llvm-link", "llvm"),
        ("bindgen", "bindgen"),
        ("rustc", "rustc + rust-src"),
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("qemu-system-aarch64", "qemu-system-arm"),
        ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
    ] {
        if which(tool).is_none() {
            missing.push(format!("{tool} (package {pkg})"));
        }
    }
    if missing.is_empty() {
        let _ = std::fs::create_dir_all(scratch);
        let ok = Command::new("make")
            .arg("-C")
            .arg(src)
            .arg(format!("O={}", scratch.display()))
            .args(["LLVM=1", "rustavailable"])
            .stdin(std::process::Stdio::null())
            .output()
            // Its warnings (`***` lines) name pairs known to build wrong
            // bindings, such as bindgen < 0.72.1 with libclang 22.
            .map(|o| o.status.success() && !String::from_utf8_lossy(&o.stderr).contains("***"))
            .unwrap_or(false);
        if !ok {
            missing.push(
                "`make LLVM=1 rustavailable` fails or warns (rustc with rust-src, bindgen >= 0.71.1, \
                 >= 0.72.1 with libclang 22)"
                    .into(),
            );
        }
    }
    // CONFIG_RUST_INLINE_HELPERS needs Clang on rustc's LLVM.
    if missing.is_empty() {
        let version = |prog: &str, arg: &str| {
            Command::new(prog)
                .arg(arg)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let major = |m: Option<u32>| m.map_or("?".into(), |m| m.to_string());
        let rustc = rustc_llvm_major(&version("rustc", "-vV"));
        // llvm-link joins the helpers' bitcode to rustc's; clang compiles the result.
        for tool in ["clang", "llvm-link"] {
            let theirs = llvm_tool_major(&version(tool, "--version"));
            if rustc.is_none() || rustc != theirs {
                missing.push(format!(
                    "{tool} on rustc's LLVM (rustc's LLVM {}, {tool} {}): inline helpers need them equal",
                    major(rustc),
                    major(theirs),
                ));
            }
        }
    }
    // The aarch64 guest programs need Rust's std for that target.
    if missing.is_empty() {
        let ok = Command::new("rustc")
            .args([
                "--print",
                "target-libdir",
                "--target",
                "aarch64-unknown-linux-gnu",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| {
                let dir = String::from_utf8_lossy(&o.stdout).trim().to_string();
                std::fs::read_dir(dir)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(false)
            })
            .unwrap_or(false);
        if !ok {
            missing.push("Rust std for aarch64-unknown-linux-gnu (libstd-rust-dev:arm64)".into());
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_version_is_the_newest_both_arches_have() {
        let amd64 = "     rustc | 1.98.1+dfsg1-1~bpo13+1 | http://m trixie-backports/main amd64 Packages\n\
                     \x20    rustc | 1.85.1+dfsg1-1+deb13u1 | http://m trixie/main amd64 Packages\n";
        let arm64 = "libstd-rust-dev:arm64 | 1.97.1+dfsg1-1~bpo13+1 | http://m trixie-backports/main arm64 Packages\n\
                     libstd-rust-dev:arm64 | 1.85.1+dfsg1-1+deb13u1 | http://m trixie/main arm64 Packages\n";
        assert_eq!(
            rust_version(amd64, arm64).as_deref(),
            Some("1.85.1+dfsg1-1+deb13u1")
        );
        let arm64_caught_up = "libstd-rust-dev:arm64 | 1.98.1+dfsg1-1~bpo13+1 | x\n";
        assert_eq!(
            rust_version(amd64, arm64_caught_up).as_deref(),
            Some("1.98.1+dfsg1-1~bpo13+1")
        );
        assert_eq!(rust_version(amd64, ""), None);
    }

    #[test]
    fn llvm_majors_of_rustc_and_clang() {
        let vv = "rustc 1.98.1 (48a229cea 2026-09-01) (built from a source tarball)\n\
                  binary: rustc\nhost: x86_64-unknown-linux-gnu\nrelease: 1.98.1\n\
                  LLVM version: 22.1.8\n";
        assert_eq!(rustc_llvm_major(vv), Some(22));
        assert_eq!(rustc_llvm_major("rustc 1.85.1\nrelease: 1.85.1\n"), None);
        let clang = "Debian clang version 22.1.8 (1~deb13u5)\nTarget: x86_64-pc-linux-gnu\n";
        assert_eq!(llvm_tool_major(clang), Some(22));
        assert_eq!(llvm_tool_major("clang version 19.1.7\n"), Some(19));
        let link = "Debian LLVM version 22.1.8\n  Optimized build.\n";
        assert_eq!(llvm_tool_major(link), Some(22));
        assert_eq!(llvm_tool_major("gcc (Debian 14.2.0) 14.2.0\n"), None);
        assert_eq!(llvm_packages(22), ["clang-22", "lld-22", "llvm-22"]);
    }

    #[test]
    fn mirror_from_deb822() {
        let t = "Types: deb\n# comment\nURIs: http://example.org/debian\nSuites: bookworm\n";
        assert_eq!(
            mirror_from_sources(t).as_deref(),
            Some("http://example.org/debian")
        );
    }

    #[test]
    fn mirror_from_one_line_and_skip_others() {
        let t = "deb [arch=amd64] https://packages.example.com/apt stable main\n\
                 deb http://mirror.example.net/debian/ bookworm main\n";
        assert_eq!(
            mirror_from_sources(t).as_deref(),
            Some("http://mirror.example.net/debian")
        );
        assert_eq!(
            mirror_from_sources("deb https://x.example/node nodistro main"),
            None
        );
    }

    #[test]
    fn root_command_passes_env_and_cwd_inside() {
        let tc = Toolchain::Root {
            root: "/r".into(),
            binds: vec!["/c".into()],
        };
        let cmd = tc.command(
            &Cmd::new("make")
                .arg("-j2")
                .env("ARCH", "arm64")
                .cwd(Path::new("/w")),
        );
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(cmd.get_program(), "unshare");
        assert!(args.contains(&"--chdir=/w".to_string()));
        assert!(args.ends_with(&["ARCH=arm64".into(), "make".into(), "-j2".into()]));
        assert!(args.contains(&"/c".to_string()));
    }
}
