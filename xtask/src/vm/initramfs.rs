//! What each kernel boots: an initramfs with busybox, the tracer, the test binaries, `ip`, `ss`,
//! `nft`, and that kernel's own modules for veth, sock_diag and netfilter (with the
//! dependencies each module's `modinfo` names), loaded by the init script.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use super::{MODULES, SUITES};
use crate::{dist::shared_libraries, toolchain::which};

/// The host's tools the suites drive, copied in with their libraries: (program, Debian package).
pub(super) const GUEST_TOOLS: [(&str, &str); 6] = [
    ("ip", "iproute2"),
    ("ss", "iproute2"),
    ("nft", "nftables"),
    ("bpftool", "bpftool"),
    ("setpriv", "util-linux"),
    ("perf", "linux-perf"),
];

/// Where the guest has the tracer: where the .deb installs it (`TRACER_BINARY` for the tests).
pub(super) const GUEST_TRACER: &str = "/usr/sbin/tracer";

/// How a binary goes into the initramfs.
#[derive(Clone, Copy, PartialEq)]
enum Copy {
    /// Stripped: the test binaries, whose debug information only costs boot time.
    Stripped,
    /// Byte for byte: the tracer from the .deb, which is what the run claims to test.
    Unchanged,
}

/// Copies `binary` and the shared libraries it needs into the initramfs tree.
fn install(root: &Path, binary: &Path, at: &Path, copy: Copy) -> Result<()> {
    let target = root.join(at.strip_prefix("/").unwrap_or(at));
    fs::create_dir_all(target.parent().unwrap())?;
    if copy == Copy::Unchanged || !Command::new("strip").arg("-o").arg(&target).arg(binary).status()?.success() {
        fs::copy(binary, &target)?;
    }
    for library in shared_libraries(binary)? {
        let destination = root.join(library.strip_prefix("/")?);
        fs::create_dir_all(destination.parent().unwrap())?;
        fs::copy(&library, &destination)?;
    }
    Ok(())
}

fn find_module(modules: &Path, name: &str) -> Option<PathBuf> {
    let names = [".ko", ".ko.xz", ".ko.zst"].map(|suffix| format!("{name}{suffix}"));
    let mut stack = vec![modules.join("lib/modules"), modules.join("usr/lib/modules")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|file| names.iter().any(|name| file == name.as_str())) {
                return Some(path);
            }
        }
    }
    None
}

/// Whether the kernel has `name` built in (its package's modules.builtin lists it).
fn built_in(modules: &Path, name: &str) -> bool {
    let lists = [modules.join("lib/modules"), modules.join("usr/lib/modules")]
        .into_iter()
        .flat_map(|dir| fs::read_dir(dir).into_iter().flatten().flatten())
        .filter_map(|version| fs::read_to_string(version.path().join("modules.builtin")).ok());
    let wanted = format!("/{name}.ko");
    lists.into_iter().any(|list| list.lines().any(|line| line.ends_with(&wanted)))
}

fn decompressed(path: &Path) -> Result<Vec<u8>> {
    Ok(match path.extension().and_then(|e| e.to_str()) {
        Some("xz") => Command::new("xz").arg("-dc").arg(path).output()?.stdout,
        Some("zst") => Command::new("zstd").arg("-dcq").arg(path).output()?.stdout,
        _ => fs::read(path)?,
    })
}

/// A `.modinfo` entry of a module (`key=value`, NUL-terminated).
fn modinfo(module: &[u8], key: &str) -> String {
    let key = format!("\0{key}=");
    let Some(start) = module.windows(key.len()).position(|window| window == key.as_bytes()) else { return String::new() };
    let value = &module[start + key.len()..];
    String::from_utf8_lossy(&value[..value.iter().position(|byte| *byte == 0).unwrap_or(value.len())]).into_owned()
}

/// The modules a module needs first: `depends=`, then the `softdep=pre:` ones (module aliases,
/// such as `crc32c` for libcrc32c, whose init fails without it), found as the module of that
/// name or its `_generic` implementation, and left out when there is neither.
fn depends(module: &[u8]) -> (Vec<String>, Vec<String>) {
    let hard = modinfo(module, "depends").split(',').filter(|name| !name.is_empty()).map(str::to_string).collect();
    let softdep = modinfo(module, "softdep");
    let soft = softdep
        .split("pre:")
        .nth(1)
        .unwrap_or_default()
        .split("post:")
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    (hard, soft)
}

/// Copies `wanted` and everything they depend on into the initramfs's /lib/modules; returns
/// the file names in an order `insmod` accepts (dependencies first).
fn add_modules(modules: &Path, root: &Path, wanted: &[&str]) -> Result<Vec<String>> {
    fn visit(modules: &Path, root: &Path, name: &str, order: &mut Vec<String>, seen: &mut Vec<String>) -> Result<()> {
        if seen.iter().any(|done| done == name) {
            return Ok(());
        }
        seen.push(name.to_string());
        let Some(path) = find_module(modules, name).or_else(|| find_module(modules, &name.replace('_', "-"))) else {
            if built_in(modules, name) {
                return Ok(());
            }
            bail!("the kernel package has no module {name}, and it is not built in");
        };
        let bytes = decompressed(&path)?;
        let (hard, soft) = depends(&bytes);
        for dependency in hard {
            visit(modules, root, &dependency, order, seen)?;
        }
        for alias in soft {
            if let Some(name) = [alias.clone(), format!("{alias}_generic")].into_iter().find(|name| find_module(modules, name).is_some()) {
                visit(modules, root, &name, order, seen)?;
            }
        }
        let file = format!("{name}.ko");
        fs::write(root.join("lib/modules").join(&file), bytes)?;
        order.push(file);
        Ok(())
    }
    let (mut order, mut seen) = (Vec::new(), Vec::new());
    for name in wanted {
        visit(modules, root, name, &mut order, &mut seen)?;
    }
    Ok(order)
}

/// Builds the initramfs; `init` is the script PID 1 runs.
pub(super) fn initramfs(modules: &Path, test_binaries: &[PathBuf], tracer: &Path, init: &str, out: &Path) -> Result<()> {
    let root = out.with_extension("d");
    let _ = fs::remove_dir_all(&root);
    for dir in ["bin", "sbin", "proc", "sys", "dev", "run", "tmp", "lib/modules"] {
        fs::create_dir_all(root.join(dir))?;
    }
    let busybox = which("busybox").context("busybox (apt: busybox-static) is needed")?;
    fs::copy(&busybox, root.join("bin/busybox"))?;
    for applet in ["sh", "mount", "poweroff", "echo", "cat", "insmod", "mkdir", "ls", "test", "[", "grep", "uname", "setsid", "sysctl"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    install(&root, tracer, Path::new(GUEST_TRACER), Copy::Unchanged)?;
    for (suite, binary) in SUITES.iter().zip(test_binaries) {
        install(&root, binary, &Path::new("/").join(suite), Copy::Stripped)?;
    }
    for (tool, package) in GUEST_TOOLS {
        let binary = which(tool).with_context(|| format!("{tool} (apt: {package}) is needed"))?;
        install(&root, &binary, &Path::new("/sbin").join(tool), Copy::Stripped)?;
    }
    let loads: String = add_modules(modules, &root, &MODULES)?.iter().map(|file| format!("insmod /lib/modules/{file}\n")).collect();
    let init_path = root.join("init");
    fs::write(&init_path, init.replace(LOAD_MODULES, &loads))?;
    fs::set_permissions(&init_path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let archive = Command::new("sh")
        .current_dir(&root)
        .arg("-c")
        .arg(format!("find . | {} cpio -o -H newc 2>/dev/null | gzip -1 > {}", busybox.display(), out.display()))
        .status()?;
    if !archive.success() {
        bail!("building the initramfs failed");
    }
    Ok(())
}

pub(super) const INIT_PRELUDE: &str = r#"#!/bin/sh
export PATH=/bin:/sbin TRACER_BINARY=/usr/sbin/tracer
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs run /run; mkdir -p /run/netns
LOAD_MODULES
ip link set lo up
modes="tracepoint"
[ -e /sys/kernel/btf/vmlinux ] && modes="$modes tp_btf"
mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null
[ -e /sys/kernel/tracing/kprobe_events ] && modes="$modes kprobe"
[ -e /sys/kernel/tracing/available_filter_functions ] && modes="$modes fentry"
echo "VMTEST-MODES $modes"
"#;

/// Where the init script loads the modules (replaced by one `insmod` per module).
const LOAD_MODULES: &str = "LOAD_MODULES";
