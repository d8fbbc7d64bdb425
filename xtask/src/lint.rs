//! `cargo xtask lint`: what CI checks before any test runs. Formatting (the workspace and the
//! kernel crate, one `rustfmt.toml`) and clippy with warnings as errors on both, under one lint
//! table (a `SAFETY:` comment on every `unsafe` block; unused dependencies count for the library
//! and binaries, while test targets share the package's list), and the crates' layers.
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{run_checked, toolchain, workspace_root};

pub fn run() -> Result<()> {
    let root = workspace_root();
    let cargo = || {
        let mut command = Command::new(toolchain::cargo());
        command.current_dir(&root);
        command
    };
    eprintln!("xtask: lint: rustfmt --check");
    run_checked(cargo().args(["fmt", "--all", "--check"]))?;
    run_checked(cargo().current_dir(root.join("tracer-ebpf")).args(["fmt", "--all", "--check"]))?;
    eprintln!("xtask: lint: clippy, warnings are errors");
    run_checked(cargo().args(["clippy", "--workspace", "--lib", "--bins", "--", "-D", "warnings", "-W", "unused_crate_dependencies"]))?;
    run_checked(cargo().args([
        "clippy",
        "--workspace",
        "--tests",
        "--benches",
        "--",
        "-D",
        "warnings",
        "-A",
        "unused_crate_dependencies",
    ]))?;
    // The kernel crate has the same lint table (`undocumented_unsafe_blocks` among it): there a
    // wrong pointer is a verifier rejection at best.
    eprintln!("xtask: lint: clippy on the kernel crate, warnings are errors");
    run_checked(cargo().current_dir(root.join("tracer-ebpf")).args(["clippy", "--workspace", "--", "-D", "warnings"]))?;
    layers(&root)?;
    eprintln!("xtask: lint: clean");
    Ok(())
}

/// What each layer may not link, even through another crate: the model and the analysis are
/// pure (no kernel interface, no runtime), and the sources and the outputs do not know each other.
const FORBIDDEN: [(&str, &[&str]); 4] = [
    ("tracer-model", &["aya", "netlink-sys", "tokio", "tracer-analysis", "tracer-sources", "tracer-outputs"]),
    ("tracer-analysis", &["aya", "netlink-sys", "tokio", "tracer-sources", "tracer-outputs"]),
    ("tracer-sources", &["tracer-outputs", "prometheus-client", "tiny_http"]),
    ("tracer-outputs", &["tracer-sources", "aya", "netlink-sys"]),
];

/// `cargo tree` of each layer, against [`FORBIDDEN`].
fn layers(root: &std::path::Path) -> Result<()> {
    eprintln!("xtask: lint: the crates' layers (cargo tree)");
    for (layer, forbidden) in FORBIDDEN {
        let output = Command::new(toolchain::cargo())
            .current_dir(root)
            .args(["tree", "-p", layer, "-e", "normal", "--prefix", "none"])
            .output()
            .context("cargo tree")?;
        let tree = String::from_utf8_lossy(&output.stdout);
        let linked: Vec<&str> =
            forbidden.iter().copied().filter(|name| tree.lines().any(|line| line.split_whitespace().next() == Some(*name))).collect();
        if !output.status.success() || !linked.is_empty() {
            bail!("{layer} links {linked:?}, which its layer may not ({})", String::from_utf8_lossy(&output.stderr).trim());
        }
    }
    Ok(())
}
