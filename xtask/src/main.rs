//! `cargo xtask`: build, boot and test virtgpu-rs on QEMU.
//!
//! See README.md for the commands and what they print.

mod build;
mod codegen;
mod initramfs;
mod kconfig;
mod ktap;
mod machine;
mod overlay;
mod paths;
mod qemu;
mod render;
mod run;
mod source;
mod splat;
mod splat_cases;
mod toolchain;
mod ui;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
    /// Seconds before a guest that has not powered off counts as hung.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Parallel make jobs (default: the number of CPUs).
    #[arg(long)]
    jobs: Option<usize>,
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
    },
    /// Build and boot every architecture, run every KUnit suite and the
    /// render check; exit 0 only if all pass.
    Test {
        #[command(flatten)]
        boot: BootArgs,
        /// Only run suites matching this glob (KUnit's filter_glob; `render`
        /// names the render check).
        #[arg(long)]
        filter: Option<String>,
    },
    /// Run the benchmarks in the guest (Rust API against the same C loops,
    /// same boot) and print ns per operation with the Rust/C ratio.
    Bench {
        #[command(flatten)]
        boot: BootArgs,
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
        Command::Setup => run::setup(cli.cache_dir, cli.kernel_src).map(|_| 0),
        Command::Qemu { boot, display } => run::qemu(cli.cache_dir, cli.kernel_src, boot, display),
        Command::Test { boot, filter } => run::test(cli.cache_dir, cli.kernel_src, boot, filter),
        Command::Bench { boot } => run::bench(cli.cache_dir, cli.kernel_src, boot),
        Command::Build { boot } => run::build_only(cli.cache_dir, cli.kernel_src, boot).map(|_| 0),
        Command::Fmt { check } => run::fmt(cli.cache_dir, cli.kernel_src, check),
        Command::Clean => run::clean(cli.cache_dir).map(|_| 0),
    };
    match r {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
