//! `cargo xtask lint`: what CI checks before any test runs. Formatting (the workspace and the
//! kernel crate, one `rustfmt.toml`) and clippy with warnings as errors on both, under one lint
//! table (a `SAFETY:` comment on every `unsafe` block; unused dependencies count for the library
//! and binaries, while test targets share the package's list).
use std::process::Command;

use anyhow::Result;

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
    run_checked(cargo().args(["clippy", "--workspace", "--lib", "--bins", "--", "-D", "warnings"]))?;
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
    eprintln!("xtask: lint: clean");
    Ok(())
}
