//! The kernels themselves: found in the Debian archive apt already uses (a private sources list
//! for suites the machine does not list), fetched, extracted without installing, and cached by
//! package version under target/vm/.
use std::{
    fs,
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use super::{vm_dir, KERNELS};
use crate::{run_checked, toolchain::mirror};

/// apt options that point at a private sources list for `suite` (one not configured here).
fn private_apt(suite: &str) -> Result<Vec<String>> {
    let dir = vm_dir().join("apt").join(suite);
    let lists = dir.join("lists");
    fs::create_dir_all(lists.join("partial"))?;
    let list = dir.join("sources.list");
    let uri = if suite.ends_with("-security") { mirror()?.replace("/debian", "/debian-security") } else { mirror()? };
    fs::write(&list, format!("deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {uri} {suite} main\n"))?;
    let options = vec![
        format!("-oDir::Etc::SourceList={}", list.display()),
        "-oDir::Etc::SourceParts=/dev/null".to_string(),
        format!("-oDir::State::Lists={}", lists.display()),
    ];
    if !lists.read_dir()?.any(|entry| entry.is_ok_and(|e| e.file_name().to_string_lossy().contains("Packages"))) {
        eprintln!("xtask: apt-get update for {suite} ({uri})");
        run_checked(Command::new("apt-get").args(&options).args(["update", "-q"]))?;
    }
    Ok(options)
}

/// Downloads (once) and extracts the newest package for `version`; returns (vmlinux, modules root, package).
pub(super) fn kernel(version: &str) -> Result<(PathBuf, PathBuf, String)> {
    let (_, suite, pattern) = KERNELS
        .iter()
        .find(|(v, _, _)| *v == version)
        .with_context(|| format!("unknown kernel {version}; choose from 5.10, 6.1, 6.12, 7.3"))?;
    let configured = ["bookworm", "bookworm-security"].contains(suite);
    let options = if configured { Vec::new() } else { private_apt(suite)? };
    let search = Command::new("apt-cache").args(&options).args(["search", "--names-only", pattern]).output()?;
    let mut names: Vec<String> =
        String::from_utf8_lossy(&search.stdout).lines().filter_map(|line| line.split(' ').next()).map(str::to_string).collect();
    names.sort_by_key(|name| version_key(name));
    let package = names.pop().with_context(|| format!("no package matches {pattern} in {suite}"))?;
    let cache = vm_dir().join(&package);
    let vmlinux = cache.join("vmlinux");
    let modules = cache.join("root");
    if !vmlinux.exists() {
        fs::create_dir_all(&cache)?;
        eprintln!("xtask: downloading {package} ({suite})");
        let mut packages = vec![package.clone()];
        if package.starts_with("linux-binary-") {
            packages.push(package.replace("linux-binary-", "linux-modules-"));
        }
        for name in &packages {
            run_checked(Command::new("apt-get").current_dir(&cache).args(&options).args(["download", "-q", name]))?;
        }
        for deb in fs::read_dir(&cache)?.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "deb")) {
            run_checked(Command::new("dpkg-deb").arg("-x").arg(deb.path()).arg(&modules))?;
            fs::remove_file(deb.path())?;
        }
        // /boot/vmlinuz-* up to Debian 12; /usr/lib/modules/*/vmlinuz in the newer split packages.
        let boot = fs::read_dir(modules.join("boot")).into_iter().flatten().flatten().map(|e| e.path());
        let usr = fs::read_dir(modules.join("usr/lib/modules")).into_iter().flatten().flatten().map(|e| e.path().join("vmlinuz"));
        let vmlinuz = boot
            .chain(usr)
            .find(|p| p.exists() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz")))
            .context("no vmlinuz in the package")?;
        fs::write(&vmlinux, extract_vmlinux(&fs::read(vmlinuz)?)?)?;
    }
    Ok((vmlinux, modules, package))
}

fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit()).filter_map(|part| part.parse().ok()).collect()
}

/// The ELF kernel inside a bzImage (xz or zstd payload), for QEMU's direct PVH boot.
fn extract_vmlinux(bzimage: &[u8]) -> Result<Vec<u8>> {
    for (magic, tool) in [(&b"\xfd7zXZ\x00"[..], "xz"), (&b"\x28\xb5\x2f\xfd"[..], "zstd")] {
        let Some(start) = bzimage.windows(magic.len()).position(|window| window == magic) else { continue };
        let mut child = Command::new(tool)
            .args(["-dc", "-q"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("{tool} is needed"))?;
        let payload = bzimage[start..].to_vec();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(&payload));
        let output = child.wait_with_output()?;
        let _ = writer.join();
        // Trailing garbage after the stream makes the tool complain; the ELF is what counts.
        if output.stdout.starts_with(b"\x7fELF") {
            return Ok(output.stdout);
        }
    }
    bail!("no xz or zstd kernel payload found in the bzImage")
}
