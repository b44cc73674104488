//! `cargo xtask qemu`: boot one architecture with one driver, render the
//! test pattern and check a screendump of it.

use std::path::PathBuf;

use anyhow::{bail, Result};
use virtgpu_protocol::{key, Step};

use crate::boot::{self, Boot, Builds, Driver};
use crate::machine::Machine;
use crate::paths;
use crate::BootArgs;

pub fn run(
    cache_dir: Option<PathBuf>,
    kernel_src: Option<PathBuf>,
    boot_args: BootArgs,
    driver: Driver,
    display: bool,
) -> Result<i32> {
    let arch = boot_args.arch.clone().unwrap_or_else(|| "x86_64".into());
    if arch == "all" {
        bail!("`cargo xtask qemu` boots one architecture: --arch x86_64 or --arch arm64");
    }
    Machine::load(&paths::project_root(), &arch)?;
    let ctx = super::setup::prepare(cache_dir, kernel_src, &boot_args)?;
    let mut builds = Builds::default();
    let b = builds.get(&ctx, &arch, None)?;
    let seconds = if display { 120 } else { 10 };
    let run_dir = ctx.cache.run_dir(&b.machine.name)?;
    let steps = vec![
        driver.load(),
        Step::Run {
            program: "drm-render".into(),
            args: Vec::new(),
        },
    ];
    let out = boot::boot(
        &ctx,
        b,
        &Boot {
            renders: 1,
            display,
            ..Boot::new(
                &run_dir,
                steps.clone(),
                format!(
                    "kunit.enable=0 {}={seconds} {}",
                    key::RENDER_SECONDS,
                    boot_args.append
                ),
                boot_args.timeout(),
            )
        },
    )?;
    for p in out.problems(&arch) {
        eprintln!("{p}");
    }
    let step_problems = out.guest.problems(&steps, &out.log);
    for p in &step_problems {
        eprintln!("{arch}: {}", p.summary);
        if let Some(o) = &p.output {
            eprintln!("{}", crate::qemu::indent(o));
        }
    }
    let render_ok = out.renders.first().is_some_and(|v| v.ok);
    if let Some(v) = out.renders.first() {
        println!(
            "render ({} driver): {} {}",
            driver.name(),
            if v.ok { "ok" } else { "FAILED" },
            v.summary
        );
    }
    if let Some(p) = out.screenshots.first() {
        println!("screendump: {}", p.display());
    }
    println!("serial log: {}", out.log_path.display());
    let clean = out.splats.is_empty() && out.error.is_none() && step_problems.is_empty();
    Ok(if render_ok && clean { 0 } else { 1 })
}
