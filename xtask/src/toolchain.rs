//! Finds (and on Debian/Ubuntu installs) what compiling the kernel programs needs: a rustc that
//! has `core` for `bpfel-unknown-none`, and `bpf-linker` built against a matching LLVM.
//!
//! Two routes exist: Debian's `rustc-web` with its precompiled BPF `core` (works with stable
//! cargo through `RUSTC=/usr/bin/rustc`), or rustup's nightly with `rust-src` and `-Z build-std`.
//! Installing is idempotent: when the pieces are there, nothing runs.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::{is_root, run_checked};

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_BPF_CORE: &str = "/usr/lib/rustlib/bpfel-unknown-none";
const APT_PACKAGES: &[&str] = &["rustc-web", "cargo-web", "libstd-rust-web-dev-bpf", "llvm-22-dev"];
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPF_LINKER: &str = "bpf-linker@0.13.0";

/// How to invoke cargo for the BPF target.
pub enum Route {
    /// Debian's rustc with its precompiled `core`; `RUSTC_BOOTSTRAP` unlocks aya-ebpf's asm feature.
    DebianRustc,
    /// rustup nightly with `rust-src`, building `core` from source.
    RustupNightly,
}

impl Route {
    pub fn describe(&self) -> &'static str {
        match self {
            Route::DebianRustc => "Debian rustc-web with its precompiled bpfel core",
            Route::RustupNightly => "rustup nightly with rust-src (-Z build-std=core)",
        }
    }
}

/// Returns the route to use, installing the toolchain first when it is missing and this is a
/// Debian-like system.
pub fn ensure() -> Result<Route> {
    let (route, linker) = match (detect_route(), find_bpf_linker()) {
        (Some(route), Some(_)) => return Ok(route),
        missing => missing,
    };
    if !Path::new("/etc/debian_version").exists() || which("apt-get").is_none() {
        let mut missing = Vec::new();
        if route.is_none() {
            missing.push("a Rust compiler with the bpfel-unknown-none core (rustup nightly + the rust-src component)");
        }
        if linker.is_none() {
            missing.push("bpf-linker (`cargo install bpf-linker`, built against your LLVM)");
        }
        bail!("the BPF toolchain is missing and this is not a Debian-like system; install: {}", missing.join("; "));
    }
    eprintln!("xtask: the BPF toolchain is incomplete; installing it (about 5 minutes on a fresh machine)");
    let total = Instant::now();
    if route.is_none() || !Path::new(LLVM_PREFIX).join("bin/llvm-config").exists() {
        step("apt-get update", || sudo_apt(&["update", "-q"]))?;
        step(&format!("apt-get install {}", APT_PACKAGES.join(" ")), || {
            let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
            args.extend_from_slice(APT_PACKAGES);
            sudo_apt(&args)
        })?;
    }
    if find_bpf_linker().is_none() {
        step(&format!("cargo install {BPF_LINKER} (LLVM 22)"), || {
            run_checked(
                Command::new(cargo())
                    .args(["install", BPF_LINKER, "--locked", "--no-default-features", "--features", "llvm-22"])
                    .env("LLVM_PREFIX", LLVM_PREFIX),
            )
        })?;
    }
    eprintln!("xtask: BPF toolchain ready in {:.0?}", total.elapsed());
    let route = detect_route().context("rustc-web was installed but its bpfel core is still missing")?;
    find_bpf_linker().context("bpf-linker was installed but is not on PATH nor in ~/.cargo/bin")?;
    Ok(route)
}

/// The main archive's URI, read from the machine's own apt configuration.
pub fn mirror() -> Result<String> {
    let mut text = String::new();
    for path in ["/etc/apt/sources.list"]
        .into_iter()
        .map(PathBuf::from)
        .chain(fs::read_dir("/etc/apt/sources.list.d").into_iter().flatten().flatten().map(|entry| entry.path()))
    {
        text += &fs::read_to_string(path).unwrap_or_default();
        text.push('\n');
    }
    let uri = text
        .lines()
        .filter_map(|line| {
            line.strip_prefix("URIs:").map(str::trim).or_else(|| line.strip_prefix("deb ").and_then(|rest| rest.split_whitespace().next()))
        })
        .find(|uri| !uri.contains("security") && uri.contains("debian"))
        .context("no Debian archive found in /etc/apt sources")?;
    Ok(uri.to_string())
}

/// Installs, through apt, the packages of the `(program, package)` pairs whose program is missing:
/// the tools the VM tests and the packaging drive.
pub fn ensure_tools(tools: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = tools.iter().filter(|(program, _)| which(program).is_none()).map(|(_, package)| *package).collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!("apt-get install {}", missing.join(" ")), || {
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend_from_slice(&missing);
        sudo_apt(&args)
    })
}

fn step(what: &str, action: impl FnOnce() -> Result<()>) -> Result<()> {
    eprintln!("xtask: → {what}");
    let started = Instant::now();
    action().with_context(|| format!("installing failed at: {what}"))?;
    eprintln!("xtask: ✓ {what} ({:.1?})", started.elapsed());
    Ok(())
}

fn sudo_apt(args: &[&str]) -> Result<()> {
    let mut command = if is_root() {
        Command::new("apt-get")
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("apt-get");
        sudo
    };
    run_checked(command.args(args).env("DEBIAN_FRONTEND", "noninteractive"))
}

fn detect_route() -> Option<Route> {
    if Path::new(DEBIAN_RUSTC).exists() && Path::new(DEBIAN_BPF_CORE).exists() {
        return Some(Route::DebianRustc);
    }
    // Never make rustup download a toolchain: only look at a nightly that is already installed.
    let toolchains = Command::new("rustup").args(["toolchain", "list"]).output().ok()?;
    if !String::from_utf8_lossy(&toolchains.stdout).lines().any(|line| line.starts_with("nightly")) {
        return None;
    }
    let sysroot = Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]).output().ok()?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    sysroot.join("lib/rustlib/src/rust/library/core").exists().then_some(Route::RustupNightly)
}

/// bpf-linker's directory, to put on PATH for the BPF build.
pub fn find_bpf_linker() -> Option<PathBuf> {
    which("bpf-linker").or_else(|| {
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))?;
        let candidate = home.join("bin/bpf-linker");
        candidate.exists().then_some(candidate)
    })
}

pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}
