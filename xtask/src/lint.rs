//! `cargo xtask lint`: what CI checks before any test runs. Formatting (the workspace and the
//! kernel crate, one `rustfmt.toml`), clippy with warnings as errors (unused dependencies count
//! for the library and binaries; test targets share the package's list), and a `SAFETY:` comment
//! on every `unsafe` block of the kernel program, where a wrong pointer is a verifier rejection
//! at best.
use std::{fs, path::Path, process::Command};

use anyhow::{bail, Result};

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
    eprintln!("xtask: lint: SAFETY comments in the kernel program");
    let mut missing = Vec::new();
    for entry in fs::read_dir(root.join("tracer-ebpf/src"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|extension| extension == "rs") {
            let source = fs::read_to_string(&path)?;
            missing.extend(unsafe_without_safety(&source).into_iter().map(|line| format!("{}:{line}", relative(&root, &path))));
        }
    }
    if !missing.is_empty() {
        bail!("unsafe without a `// SAFETY:` comment just above it: {}", missing.join(", "));
    }
    eprintln!("xtask: lint: clean");
    Ok(())
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).display().to_string()
}

/// Lines (1-based) with an `unsafe` block or call whose comment lines just above hold no
/// `SAFETY:`; an `unsafe fn` needs a `# Safety` section in its doc comment instead.
fn unsafe_without_safety(source: &str) -> Vec<usize> {
    let lines: Vec<&str> = source.lines().collect();
    let mut missing = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        if !code.contains("unsafe ") && !code.contains("unsafe{") {
            continue;
        }
        let mut comments =
            lines[..index].iter().rev().take_while(|above| above.trim_start().starts_with("//") || above.trim_start().starts_with("#["));
        let wanted = if code.contains("unsafe fn") { "# Safety" } else { "SAFETY:" };
        // A statement continued from the lines above shares the comment above its first line.
        let explained = line.contains("SAFETY:")
            || comments.any(|above| above.contains(wanted))
            || (wanted == "SAFETY:" && explained_above(&lines, index));
        if !explained {
            missing.push(index + 1);
        }
    }
    missing
}

/// Whether the statement that line `index` continues has a SAFETY comment above its first line.
fn explained_above(lines: &[&str], index: usize) -> bool {
    let mut start = index;
    while start > 0 && !lines[start - 1].trim_end().ends_with([';', '{', '}']) && !lines[start - 1].trim_start().starts_with("//") {
        start -= 1;
    }
    start > 0 && lines[start - 1].contains("SAFETY:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsafe_block_needs_a_safety_comment_and_an_unsafe_fn_a_safety_section() {
        let source = "\
// SAFETY: a helper without arguments.
let a = unsafe { helper() };
let b = unsafe { helper() };
/// Reads.
///
/// # Safety
/// `p` is valid.
#[inline(always)]
unsafe fn read(p: *const u8) -> u8 { *p }
/// Reads.
unsafe fn bare(p: *const u8) -> u8 { *p }
// SAFETY: bounds checked above.
let c = some_call(
    unsafe { other() },
);
";
        assert_eq!(unsafe_without_safety(source), [3, 11]);
    }

    #[test]
    fn the_kernel_program_has_no_unexplained_unsafe() {
        let root = workspace_root().join("tracer-ebpf/src");
        for entry in fs::read_dir(&root).unwrap() {
            let path = entry.unwrap().path();
            let source = fs::read_to_string(&path).unwrap();
            assert_eq!(unsafe_without_safety(&source), Vec::<usize>::new(), "{}", path.display());
        }
    }
}
