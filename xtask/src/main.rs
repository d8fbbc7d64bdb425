//! `cargo xtask`: everything that is not a plain `cargo build`: the BPF toolchain, the kernel
//! object, running the tracer with the privileges it needs, and the root-only test suite.
mod accounting;
mod bench;
mod bulk_bench;
mod dist;
mod kernel_parts;
mod lint;
mod load;
mod measure;
mod snapshot_bench;
mod toolchain;
mod vm;

use std::{
    ffi::OsString,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build, run and test the TCP socket tracer")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the BPF toolchain when it is missing (Debian/Ubuntu), nothing else.
    Setup,
    /// Build the kernel programs (bpfel-unknown-none).
    BuildEbpf,
    /// Build the kernel programs and the `tracer` binary (release).
    Build,
    /// Build everything and run the tracer as root (through sudo when needed).
    Run {
        /// Arguments for `tracer`, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Measure the tracer's overhead and throughput; prints a Markdown report.
    Bench {
        /// Short rounds, for CI: fails only on a crash or lost events, never on timing.
        #[arg(long)]
        quick: bool,
        /// Only the socket-snapshot section (many namespaces full of sockets).
        #[arg(long)]
        snapshots_only: bool,
        /// Only the bulk-transfer section (the per-packet hook), nine rounds of 5 s.
        #[arg(long, conflicts_with = "snapshots_only")]
        bulk_only: bool,
        /// Only the churn sections: every CPU busy, pinned, and where the difference goes.
        #[arg(long, conflicts_with_all = ["snapshots_only", "bulk_only"])]
        churn_only: bool,
        /// Only the artifacts: sizes of the package, tarball and image, start-up to "attached".
        #[arg(long, conflicts_with_all = ["snapshots_only", "bulk_only", "churn_only"])]
        dist_only: bool,
        /// Only where a state hook's time goes: the hook built cut short at each part, measured.
        #[arg(long, conflicts_with_all = ["snapshots_only", "bulk_only", "churn_only", "dist_only"])]
        kernel_parts: bool,
        /// Only the packet hooks' share of churn: with and without them, twelve paired rounds.
        #[arg(long, conflicts_with_all = ["snapshots_only", "bulk_only", "churn_only", "dist_only", "kernel_parts"])]
        hooks_share: bool,
        /// Only this build against another tracer binary (e.g. the last commit's, built in a git
        /// worktree): churn, eight paired rounds, the tracer's CPU and records per connection.
        #[arg(long, value_name = "TRACER", conflicts_with_all = ["snapshots_only", "bulk_only", "churn_only", "dist_only", "kernel_parts", "hooks_share"])]
        against: Option<PathBuf>,
        /// With `--against`: every connection from a client address of its own, as a server
        /// facing more clients than the tracer's tables hold sees them; each round starts with
        /// 8 s of that churn unmeasured, which fills the tracer's TIME_WAIT table.
        #[arg(long, requires = "against")]
        many_clients: bool,
        /// With `--against`: an option both tracers run with (repeatable), e.g.
        /// `--tracer-arg=--connections`; summary mode by default.
        #[arg(long, requires = "against", value_name = "ARG", allow_hyphen_values = true)]
        tracer_arg: Vec<String>,
    },
    /// Boot Debian kernels under QEMU and run the kernel tests in each; prints a table.
    VmTest {
        /// Kernels to test (repeatable): 5.10, 6.1, 6.12, 7.3.
        #[arg(long = "kernel", default_values = ["5.10", "6.1", "6.12", "7.3"])]
        kernels: Vec<String>,
        /// Only the tests whose names contain this (as `cargo test <filter>`), in every suite.
        #[arg(long)]
        filter: Option<String>,
    },
    /// A shell in a VM running that kernel, with the tracer and the kernel tests inside.
    VmShell {
        #[arg(long, default_value = "6.1")]
        kernel: String,
    },
    /// Shell completions (bash, zsh, fish) and a man page for `tracer`, in target/assets/.
    Completions,
    /// What a server without a toolchain installs, in target/dist/: the .deb, a tarball for
    /// other distributions and a container image built FROM scratch (saved as an archive).
    Dist,
    /// The full-size flood: 1 000 000 connections plus a SYN flood against a running tracer.
    Flood {
        #[arg(long, default_value_t = 1_000_000)]
        connections: u64,
    },
    /// Formatting, clippy (warnings are errors) and SAFETY comments in the kernel program: CI's
    /// first step.
    Lint,
    /// Build everything and run all tests, unit and kernel integration, as root.
    Test {
        /// Extra arguments for `cargo test` (a test name filter, `--nocapture`, ...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

fn main() {
    if let Err(error) = run(Cli::parse()) {
        eprintln!("xtask: error: {error:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Task::Setup => toolchain::ensure().map(|route| eprintln!("xtask: BPF route: {}", route.describe())),
        Task::BuildEbpf => build_ebpf().map(drop),
        Task::Build => build_all().map(drop),
        Task::Run { args } => {
            let tracer = build_all()?;
            let error = as_root(&tracer, &args).exec();
            Err(error).with_context(|| format!("could not start {}", tracer.display()))
        }
        Task::Bench {
            quick,
            snapshots_only,
            bulk_only,
            churn_only,
            dist_only,
            kernel_parts,
            hooks_share,
            against,
            many_clients,
            tracer_arg,
        } => {
            if !is_root() {
                bail!("benchmarks attach eBPF programs: run `sudo -E cargo xtask bench` (or as root)");
            }
            if dist_only {
                println!("{}", dist::report(&dist::build()?, 10)?);
                return Ok(());
            }
            let tracer = build_all()?;
            let (rounds, seconds) = if quick { (2, 2.0) } else { (5, 5.0) };
            if kernel_parts {
                println!("{}", kernel_parts::run(&tracer, rounds + 2, 2.0)?);
                return Ok(());
            }
            if snapshots_only {
                println!("{}", snapshot_bench::run(&tracer, quick)?);
                return Ok(());
            }
            if let Some(other) = against {
                let clients = if many_clients { load::Clients::Many } else { load::Clients::One };
                let args: Vec<&str> = tracer_arg.iter().map(String::as_str).collect();
                println!("{}", bench::against(&tracer, &other, &args, clients, if quick { 2 } else { 8 }, seconds)?);
                return Ok(());
            }
            if hooks_share {
                println!("{}", bench::hooks_share(&tracer, if quick { 2 } else { 12 }, seconds)?);
                return Ok(());
            }
            if bulk_only {
                println!("{}", bulk_bench::run(&tracer, 9, 5.0)?);
                return Ok(());
            }
            let options = bench::Options { quick, tracer };
            if churn_only {
                println!("{}", bench::churn(&options)?);
                return Ok(());
            }
            let mut report = bench::churn(&options)?;
            report += &bench::load_limits(&options)?;
            // The per-packet hook, on a bulk transfer.
            report += &bulk_bench::run(&options.tracer, rounds, seconds)?;
            report += "\n## Aggregator (criterion, one core): see `cargo bench -p tracer-analysis --bench aggregator`\n";
            if !quick {
                report += &kernel_parts::run(&options.tracer, rounds + 2, 2.0)?;
                report += &dist::report(&dist::build()?, 10)?;
            }
            println!("{report}");
            if !quick {
                run_checked(Command::new(toolchain::cargo()).current_dir(workspace_root()).args([
                    "bench",
                    "--package",
                    "tracer-analysis",
                    "--package",
                    "tracer",
                ]))?;
            }
            Ok(())
        }
        Task::Completions => {
            for written in dist::assets(&workspace_root().join("target/assets"))? {
                eprintln!("xtask: {}", written.display());
            }
            Ok(())
        }
        Task::Dist => dist::build().map(drop),
        Task::Lint => lint::run(),
        Task::VmTest { kernels, filter } => {
            if !is_root() {
                bail!("the VM tests download kernel packages with apt: run as root");
            }
            vm::test(&kernels, filter.as_deref())
        }
        Task::VmShell { kernel } => vm::shell(&kernel),
        Task::Test { args } => {
            if !is_root() {
                bail!("the kernel tests load eBPF programs and install the package in a fresh Debian root: run as root");
            }
            // The install and image tests use what an operator gets: the artifacts of `dist`.
            let artifacts = dist::build()?;
            let path = |path: &Path| path.display().to_string();
            let env = [
                ("TRACER_DEB", path(&artifacts.package.deb)),
                ("TRACER_TARBALL", path(&artifacts.tarball)),
                ("TRACER_IMAGE_CONTEXT", path(&artifacts.image_context)),
                ("TRACER_IMAGE_ARCHIVE", path(&artifacts.image_archive)),
                ("TRACER_IMAGE_TAG", artifacts.image_tag),
                ("TRACER_DEBIAN_MIRROR", toolchain::mirror()?),
            ];
            cargo_test_as_root(["test".into(), "--workspace".into()].into_iter().chain(args), &env)
        }
        Task::Flood { connections } => cargo_test_as_root(
            ["test", "--release", "--package", "tracer", "--test", "flood", "--", "--nocapture"].map(OsString::from),
            &[("FLOOD_CONNECTIONS", connections.to_string())],
        ),
    }
}

/// Runs cargo (`test ...`) with the freshly built kernel object; the kernel tests need root.
fn cargo_test_as_root(cargo_args: impl IntoIterator<Item = OsString>, env: &[(&str, String)]) -> Result<()> {
    if !is_root() {
        bail!("the kernel tests load eBPF programs: run `sudo -E cargo xtask ...` (or as root)");
    }
    let object = build_ebpf()?;
    let mut command = Command::new(toolchain::cargo());
    command.current_dir(workspace_root()).args(cargo_args).env("TRACER_EBPF_OBJECT", &object);
    command.envs(env.iter().map(|(key, value)| (key, value)));
    run_checked(&mut command)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Builds the kernel object and returns its path.
fn build_ebpf() -> Result<PathBuf> {
    build_ebpf_cut(None)
}

/// Builds the kernel programs, or with `cut` the state hook cut short at that part (the
/// `cost_cut` cfg, into a target directory of its own) for `bench --kernel-parts`.
fn build_ebpf_cut(cut: Option<&str>) -> Result<PathBuf> {
    let route = toolchain::ensure()?;
    let crate_dir = workspace_root().join("tracer-ebpf");
    let linker = toolchain::find_bpf_linker().context("bpf-linker disappeared")?;
    let mut path = OsString::from(linker.parent().expect("a file has a parent"));
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());

    let mut command = Command::new(toolchain::cargo());
    command
        .current_dir(&crate_dir)
        .env("PATH", path)
        .env("RUSTFLAGS", cut.map_or_else(String::new, |cut| format!("--cfg cost_cut=\"{cut}\" ")) + "-C debuginfo=2 -C link-arg=--btf")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    match route {
        toolchain::Route::DebianRustc => {
            command.env("RUSTC", "/usr/bin/rustc").env("RUSTC_BOOTSTRAP", "aya_ebpf").arg("build");
        }
        toolchain::Route::RustupNightly => {
            command.args(["+nightly", "build", "-Z", "build-std=core"]);
        }
    }
    command.args(["--locked", "--release", "--target", "bpfel-unknown-none"]);
    let target = match cut {
        Some(cut) => crate_dir.join("target/cost-cuts").join(cut),
        None => crate_dir.join("target"),
    };
    command.arg("--target-dir").arg(&target);
    let started = Instant::now();
    run_checked(&mut command).context("building the eBPF programs failed")?;
    let object = target.join("bpfel-unknown-none/release/tracer-ebpf");
    eprintln!("xtask: eBPF object {} ({:.1?}, {})", object.display(), started.elapsed(), route.describe());
    Ok(object)
}

/// Builds the kernel object, then `tracer` (which embeds it); returns the binary's path.
fn build_all() -> Result<PathBuf> {
    build_with(&build_ebpf()?)
}

/// Builds `tracer` (release) around the kernel object at `object`.
fn build_with(object: &Path) -> Result<PathBuf> {
    run_checked(
        Command::new(toolchain::cargo())
            .current_dir(workspace_root())
            .args(["build", "--release", "--package", "tracer"])
            .env("TRACER_EBPF_OBJECT", object),
    )?;
    Ok(workspace_root().join("target/release/tracer"))
}

fn as_root(program: &Path, args: &[OsString]) -> Command {
    if is_root() {
        let mut command = Command::new(program);
        command.args(args);
        return command;
    }
    eprintln!("xtask: the tracer needs root; re-running through sudo");
    let mut command = Command::new("sudo");
    command.arg(program).args(args);
    command
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

pub fn run_checked(command: &mut Command) -> Result<()> {
    let status = command.status().with_context(|| format!("could not start {:?}", command.get_program()))?;
    if !status.success() {
        bail!("{:?} {:?} failed ({status})", command.get_program(), command.get_args().collect::<Vec<_>>());
    }
    Ok(())
}
