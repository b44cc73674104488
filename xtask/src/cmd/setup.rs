//! `cargo xtask setup`, `build`, `fmt` and `clean`, and the provisioning
//! every other command starts with.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::boot::Builds;
use crate::build::Ctx;
use crate::machine;
use crate::paths::{self, Cache};
use crate::source;
use crate::toolchain::{self, Toolchain};
use crate::ui;
use crate::BootArgs;

/// Provisions what is needed and returns the build context.
pub fn setup(cache_dir: Option<PathBuf>, kernel_src: Option<PathBuf>) -> Result<Ctx> {
    let cache = Cache::locate(cache_dir)?;
    let project = paths::project_root();
    let mut binds = vec![
        cache.dir.clone(),
        project.clone(),
        crate::build::cargo_home()?,
    ];
    let user_src = match &kernel_src {
        Some(d) => {
            let s = source::user_tree(d)?;
            binds.push(s.dir.clone());
            Some(s)
        }
        None => None,
    };
    // The root always provides apt (downloads); its toolchain only when the
    // host's does not qualify.
    let apt = toolchain::ensure_root_base(&cache, binds.clone())?;
    let source = match user_src {
        Some(s) => s,
        None => source::debian_tree(&cache, &apt)?,
    };
    let shortfalls = toolchain::host_shortfalls(&source.dir, &cache.dir.join("tmp/rustavailable"));
    let tc = if shortfalls.is_empty() {
        Toolchain::Host
    } else {
        if ui::verbose() {
            eprintln!(
                "  the host toolchain does not qualify: {}",
                shortfalls.join("; ")
            );
        }
        toolchain::ensure_root_packages(&apt, &cache)?;
        apt.clone()
    };
    eprintln!(
        "  kernel {} from {}; building with the {}",
        source.version,
        source.dir.display(),
        tc.describe()
    );
    let tc_identity = tc.identity().context("reading the toolchain's versions")?;
    let tree = cache.dir.join(format!("tree/{}", source.key));
    let jobs = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    Ok(Ctx {
        cache,
        project,
        tc,
        apt,
        source,
        tc_identity,
        tree,
        jobs,
    })
}

pub fn prepare(
    cache_dir: Option<PathBuf>,
    kernel_src: Option<PathBuf>,
    boot: &BootArgs,
) -> Result<Ctx> {
    let mut ctx = setup(cache_dir, kernel_src)?;
    if let Some(j) = boot.jobs {
        ctx.jobs = j.max(1);
    }
    ctx.apply_overlay()?;
    Ok(ctx)
}

/// `cargo xtask build`.
pub fn build_only(
    cache_dir: Option<PathBuf>,
    kernel_src: Option<PathBuf>,
    boot: BootArgs,
) -> Result<()> {
    let arches = machine::arches(boot.arch.as_deref().unwrap_or("all"))?;
    let ctx = prepare(cache_dir, kernel_src, &boot)?;
    let mut builds = Builds::default();
    for a in arches {
        let b = builds.get(&ctx, &a, None)?;
        eprintln!(
            "  {a}: {} + {} (build directory {})",
            b.kernel.image.display(),
            b.initrd.display(),
            b.kernel.build_dir.display()
        );
    }
    Ok(())
}

/// `cargo xtask fmt`.
pub fn fmt(cache_dir: Option<PathBuf>, kernel_src: Option<PathBuf>, check: bool) -> Result<i32> {
    let ctx = setup(cache_dir, kernel_src)?;
    let mut files = Vec::new();
    for dir in ["abstractions", "driver", "qemu/arc-user"] {
        collect_rs(&ctx.project.join(dir), &mut files)?;
    }
    let mut c = crate::toolchain::Cmd::new("rustfmt")
        .args(["--edition", "2021", "--config-path"])
        .arg(ctx.source.dir.join(".rustfmt.toml"));
    if check {
        c = c.arg("--check");
    }
    let out = ctx.tc.command(&c.args(&files)).status()?;
    Ok(if out.success() { 0 } else { 1 })
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for e in std::fs::read_dir(dir)?.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_rs(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    Ok(())
}

/// `cargo xtask clean`.
pub fn clean(cache_dir: Option<PathBuf>) -> Result<()> {
    let cache = Cache::locate(cache_dir)?;
    toolchain::remove_tree(&cache.dir)?;
    eprintln!("removed {}", cache.dir.display());
    Ok(())
}
