//! `cargo xtask`: build, boot and test virtgpu-rs on QEMU.
//!
//! See README.md for the commands and what they print.

mod boot;
mod build;
mod cmd;
mod codegen;
mod guest_log;
mod igt;
mod initramfs;
mod kconfig;
mod ktap;
mod machine;
mod overlay;
mod packages;
mod paths;
mod qemu;
mod render;
mod report;
mod source;
mod splat;
mod splat_cases;
mod toolchain;
mod ui;
mod vnc;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use boot::Driver;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, boot and test virtgpu-rs on QEMU"
)]
struct Cli {
    /// Show every command's full output.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Use this kernel tree instead of Debian's linux-source-7.3
    /// (also VIRTGPU_RS_KERNEL_SRC). It is never modified.
    #[arg(long, global = true, env = "VIRTGPU_RS_KERNEL_SRC")]
    kernel_src: Option<PathBuf>,
    /// Cache directory (default $XDG_CACHE_HOME/virtgpu-rs; also VIRTGPU_RS_CACHE).
    #[arg(long, global = true)]
    cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Clone, clap::Args)]
pub struct BootArgs {
    /// Architecture: x86_64, arm64 or all.
    #[arg(long)]
    arch: Option<String>,
    /// Extra kernel command line arguments for the guest.
    #[arg(long, default_value = "")]
    append: String,
    /// Seconds before a guest that has not powered off counts as hung
    /// (default 600; `bench` 1800, whose one boot runs every benchmark).
    #[arg(long)]
    timeout: Option<u64>,
    /// Parallel make jobs (default: the number of CPUs).
    #[arg(long)]
    jobs: Option<usize>,
}

/// Guest timeout in seconds of the boots that run the test suites (and `qemu`'s).
const BOOT_TIMEOUT: u64 = 600;

impl BootArgs {
    /// The guest timeout in seconds: `--timeout`, else the command's `default`.
    pub fn timeout_or(&self, default: u64) -> u64 {
        self.timeout.unwrap_or(default)
    }

    /// The guest timeout for commands whose boots run the test suites.
    pub fn timeout(&self) -> u64 {
        self.timeout_or(BOOT_TIMEOUT)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Provision the toolchain (Debian trixie root when the host's does not
    /// qualify) and fetch the kernel source. Run implicitly by the others.
    Setup,
    /// Build everything, boot one architecture with virtio-gpu, render the
    /// test pattern and check a screendump of it.
    Qemu {
        #[command(flatten)]
        boot: BootArgs,
        /// Open a QEMU window instead of running headless.
        #[arg(long)]
        display: bool,
        /// The driver that draws.
        #[arg(long, value_enum, default_value = "rust")]
        driver: Driver,
    },
    /// Build and boot every architecture, run every KUnit suite and the
    /// render check; exit 0 only if all pass.
    Test {
        #[command(flatten)]
        boot: BootArgs,
        /// Only run suites matching this glob (KUnit's filter_glob; also
        /// matched against every other row: `render`, `drm_render`,
        /// `splat:<case>`, ...). A glob that selects nothing fails.
        #[arg(long)]
        filter: Option<String>,
        /// The driver the guest programs run under.
        #[arg(long, value_enum, default_value = "c")]
        driver: Driver,
    },
    /// Run the benchmarks in the guest (Rust API against the same C loops,
    /// same boot) and print ns per operation with the Rust/C ratio.
    Bench {
        #[command(flatten)]
        boot: BootArgs,
        /// Load this driver in the benchmark boot.
        #[arg(long, value_enum)]
        driver: Option<Driver>,
    },
    /// Run IGT in an x86_64 guest under one driver and judge the results
    /// against the driver's expectations (qemu/igt/<driver>-*.txt).
    Igt {
        #[command(flatten)]
        boot: BootArgs,
        #[command(flatten)]
        igt: cmd::igt::IgtArgs,
    },
    /// Build the kernels and guest programs without booting.
    Build {
        #[command(flatten)]
        boot: BootArgs,
    },
    /// Format (or with --check, check) the kernel Rust of abstractions/ and
    /// driver/ with the kernel's rustfmt configuration.
    Fmt {
        /// Only report files that are not formatted; exit 1 if any.
        #[arg(long)]
        check: bool,
    },
    /// Remove the cache directory.
    Clean,
}

fn main() {
    let cli = Cli::parse();
    ui::set_verbose(cli.verbose);
    let r = match cli.cmd {
        Command::Setup => cmd::setup::setup(cli.cache_dir, cli.kernel_src).map(|_| 0),
        Command::Qemu {
            boot,
            display,
            driver,
        } => cmd::qemu::run(cli.cache_dir, cli.kernel_src, boot, driver, display),
        Command::Test {
            boot,
            filter,
            driver,
        } => cmd::test::run_all(cli.cache_dir, cli.kernel_src, boot, filter, driver),
        Command::Bench { boot, driver } => {
            cmd::bench::run(cli.cache_dir, cli.kernel_src, boot, driver)
        }
        Command::Igt { boot, igt } => cmd::igt::run(cli.cache_dir, cli.kernel_src, boot, igt),
        Command::Build { boot } => {
            cmd::setup::build_only(cli.cache_dir, cli.kernel_src, boot).map(|_| 0)
        }
        Command::Fmt { check } => cmd::setup::fmt(cli.cache_dir, cli.kernel_src, check),
        Command::Clean => cmd::setup::clean(cli.cache_dir).map(|_| 0),
    };
    match r {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
