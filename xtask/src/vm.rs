//! `cargo xtask vm-test` / `vm-shell`: the kernel tests on other Debian kernels, under QEMU.
//!
//! Kernel packages come from the Debian archive apt already uses (for suites the machine does
//! not list, a private sources list on the same mirror), are extracted without installing, and
//! cached by package version under target/vm/. Each kernel boots an initramfs holding busybox,
//! the tracer, the kernel test binary, `ip` and the veth module; results come back over the
//! serial console between markers. A panic, a hang or a missing end marker fails the run.
use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{run_checked, toolchain::which, workspace_root};

/// The kernels we claim, with the suite that carries each and the package name pattern.
const KERNELS: &[(&str, &str, &str)] = &[
    ("5.10", "bullseye", r"^linux-image-5\.10\.0-[0-9]+-amd64-unsigned$"),
    ("6.1", "bookworm", r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$"),
    ("6.12", "bookworm-security", r"^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$"),
    ("7.3", "trixie-backports", r"^linux-binary-7\.3\.[0-9]+\+deb13-amd64$"),
];
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);

fn vm_dir() -> PathBuf {
    workspace_root().join("target/vm")
}

/// The main archive's URI, read from the machine's own apt configuration.
fn mirror() -> Result<String> {
    let mut text = String::new();
    for path in ["/etc/apt/sources.list"].into_iter().map(PathBuf::from).chain(
        fs::read_dir("/etc/apt/sources.list.d").into_iter().flatten().flatten().map(|entry| entry.path()),
    ) {
        text += &fs::read_to_string(path).unwrap_or_default();
        text.push('\n');
    }
    let uri = text
        .lines()
        .filter_map(|line| line.strip_prefix("URIs:").map(str::trim).or_else(|| line.strip_prefix("deb ").and_then(|rest| rest.split_whitespace().next())))
        .find(|uri| !uri.contains("security") && uri.contains("debian"))
        .context("no Debian archive found in /etc/apt sources")?;
    Ok(uri.to_string())
}

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
fn kernel(version: &str) -> Result<(PathBuf, PathBuf, String)> {
    let (_, suite, pattern) = KERNELS.iter().find(|(v, _, _)| *v == version).with_context(|| format!("unknown kernel {version}; choose from 5.10, 6.1, 6.12, 7.3"))?;
    let configured = ["bookworm", "bookworm-security"].contains(suite);
    let options = if configured { Vec::new() } else { private_apt(suite)? };
    let search = Command::new("apt-cache").args(&options).args(["search", "--names-only", pattern]).output()?;
    let mut names: Vec<String> = String::from_utf8_lossy(&search.stdout).lines().filter_map(|line| line.split(' ').next()).map(str::to_string).collect();
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
        let mut child = Command::new(tool).args(["-dc", "-q"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().with_context(|| format!("{tool} is needed"))?;
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

/// Copies `binary` (stripped) and the shared libraries it needs into the initramfs tree.
fn install(root: &Path, binary: &Path, at: &Path) -> Result<()> {
    let target = root.join(at.strip_prefix("/").unwrap_or(at));
    fs::create_dir_all(target.parent().unwrap())?;
    if !Command::new("strip").arg("-o").arg(&target).arg(binary).status()?.success() {
        fs::copy(binary, &target)?;
    }
    let ldd = Command::new("ldd").arg(binary).output()?;
    for library in String::from_utf8_lossy(&ldd.stdout).split_whitespace().filter(|word| word.starts_with('/')) {
        let destination = root.join(library.trim_start_matches('/'));
        fs::create_dir_all(destination.parent().unwrap())?;
        fs::copy(library, &destination)?;
    }
    Ok(())
}

fn find_module(modules: &Path, name: &str) -> Option<PathBuf> {
    let mut stack = vec![modules.join("lib/modules"), modules.join("usr/lib/modules")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == format!("{name}.ko").as_str() || n == format!("{name}.ko.xz").as_str() || n == format!("{name}.ko.zst").as_str()) {
                return Some(path);
            }
        }
    }
    None
}

/// Builds the initramfs; `init` is the script PID 1 runs.
fn initramfs(modules: &Path, test_binary: &Path, tracer: &Path, init: &str, out: &Path) -> Result<()> {
    let root = out.with_extension("d");
    let _ = fs::remove_dir_all(&root);
    // No tmpfs over /tmp: the tracer may live under it (a checkout in /tmp), at the same path
    // as on the host; the initramfs itself is writable.
    for dir in ["bin", "sbin", "proc", "sys", "dev", "run", "tmp", "lib/modules"] {
        fs::create_dir_all(root.join(dir))?;
    }
    let busybox = which("busybox").context("busybox (apt: busybox-static) is needed")?;
    fs::copy(&busybox, root.join("bin/busybox"))?;
    for applet in ["sh", "mount", "poweroff", "echo", "cat", "insmod", "mkdir", "ls", "test", "[", "grep", "uname", "setsid"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    install(&root, tracer, tracer)?;
    install(&root, test_binary, Path::new("/kernel_events"))?;
    install(&root, &which("ip").context("ip (apt: iproute2) is needed")?, Path::new("/sbin/ip"))?;
    let veth = find_module(modules, "veth").context("no veth module in the kernel package")?;
    let destination = root.join("lib/modules/veth.ko");
    match veth.extension().and_then(|e| e.to_str()) {
        Some("xz") => fs::write(&destination, Command::new("xz").arg("-dc").arg(&veth).output()?.stdout)?,
        Some("zst") => fs::write(&destination, Command::new("zstd").arg("-dcq").arg(&veth).output()?.stdout)?,
        _ => {
            fs::copy(&veth, &destination)?;
        }
    }
    let init_path = root.join("init");
    fs::write(&init_path, init)?;
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

const INIT_PRELUDE: &str = r#"#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs run /run; mkdir -p /run/netns
insmod /lib/modules/veth.ko
ip link set lo up
modes="tracepoint"
[ -e /sys/kernel/btf/vmlinux ] && modes="$modes tp_btf"
mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null
[ -e /sys/kernel/tracing/kprobe_events ] && modes="$modes kprobe"
[ -e /sys/kernel/tracing/available_filter_functions ] && modes="$modes fentry"
echo "VMTEST-MODES $modes"
"#;

/// Builds what the guest runs: the tracer and the kernel test binary (with the eBPF object).
fn test_binaries() -> Result<(PathBuf, PathBuf)> {
    let object = crate::build_ebpf()?;
    let output = Command::new(crate::toolchain::cargo())
        .current_dir(workspace_root())
        .args(["test", "--package", "tracer", "--test", "kernel_events", "--no-run", "--message-format=json"])
        .env("TRACER_EBPF_OBJECT", &object)
        .stderr(Stdio::inherit())
        .output()?;
    let executable = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact" && message["target"]["name"] == "kernel_events")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .context("cargo did not report the kernel_events test binary")?;
    Ok((executable, workspace_root().join("target/debug/tracer")))
}

fn ensure_tools() -> Result<()> {
    let missing: Vec<&str> = [("qemu-system-x86_64", "qemu-system-x86"), ("busybox", "busybox-static")]
        .into_iter()
        .filter(|(tool, _)| which(tool).is_none())
        .map(|(_, package)| package)
        .collect();
    if !missing.is_empty() {
        eprintln!("xtask: installing {}", missing.join(" "));
        run_checked(Command::new("apt-get").args(["install", "-y", "-q", "--no-install-recommends"]).args(&missing))?;
    }
    Ok(())
}

fn qemu(vmlinux: &Path, initrd: &Path) -> Command {
    let mut command = Command::new("qemu-system-x86_64");
    command
        // One vCPU: under TCG, 7.x kernels oops in early text patching (int3) with two.
        .args(["-accel", "tcg", "-m", "2048", "-smp", "1", "-nographic", "-no-reboot", "-kernel"])
        .arg(vmlinux)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet rdinit=/init"]);
    command
}

struct Outcome {
    kernel: String,
    passed: u64,
    failed: u64,
    modes: String,
    /// How the tracer attached the TCP hooks by default (tp_btf or tracepoint), and batches.
    tcp_hooks: String,
    /// What the tracer itself attached for TIME_WAIT (fentry/fexit or unavailable).
    timewait_hooks: String,
    seconds: f64,
    error: Option<String>,
}

pub fn test(kernels: &[String]) -> Result<()> {
    ensure_tools()?;
    let (test_binary, tracer) = test_binaries()?;
    let mut outcomes = Vec::new();
    for version in kernels {
        let started = Instant::now();
        let (vmlinux, modules, package) = kernel(version)?;
        let initrd = vm_dir().join(format!("{package}.initrd.gz"));
        let init = format!(
            "{INIT_PRELUDE}echo \"VMTEST-TRACER $({} --duration 0.2 2>&1 >/dev/null | grep attached)\"\necho VMTEST-BOOTED\n/kernel_events --test-threads=1 2>&1\necho \"VMTEST-END rc=$?\"\npoweroff -f\n",
            tracer.display()
        );
        initramfs(&modules, &test_binary, &tracer, &init, &initrd)?;
        eprintln!("xtask: booting {package}");
        let console = run_with_timeout(qemu(&vmlinux, &initrd), BOOT_TIMEOUT)?;
        fs::write(vm_dir().join(format!("{package}.console.log")), &console)?;
        outcomes.push(outcome(version, &console, started.elapsed()));
    }
    println!(
        "\n| kernel | passed | failed | hook modes available | tracer's TCP hooks (default) | tracer's TIME_WAIT hooks | seconds |\n|---|---|---|---|---|---|---|"
    );
    for outcome in &outcomes {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.0} |",
            outcome.kernel, outcome.passed, outcome.failed, outcome.modes, outcome.tcp_hooks, outcome.timewait_hooks, outcome.seconds
        );
    }
    let failures: Vec<&Outcome> = outcomes.iter().filter(|outcome| outcome.error.is_some()).collect();
    for outcome in &failures {
        eprintln!("\nxtask: kernel {}: {}", outcome.kernel, outcome.error.as_deref().unwrap_or_default());
    }
    if !failures.is_empty() {
        bail!("{} of {} kernels failed", failures.len(), outcomes.len());
    }
    Ok(())
}

fn outcome(kernel: &str, console: &str, elapsed: Duration) -> Outcome {
    let count = |word: &str| {
        console
            .lines()
            .filter_map(|line| line.strip_prefix("test result: "))
            .filter_map(|line| line.split(';').find_map(|part| part.trim().strip_suffix(word)?.split_whitespace().last()?.parse::<u64>().ok()))
            .sum::<u64>()
    };
    let (passed, failed) = (count("passed"), count("failed"));
    // The marker may share a line with the firmware's last words.
    let modes = console.lines().find_map(|line| line.split("VMTEST-MODES ").nth(1)).unwrap_or("?").trim().to_string();
    let announced = console.lines().find_map(|line| line.split("VMTEST-TRACER ").nth(1)).unwrap_or_default();
    let words = |keep: &dyn Fn(&str) -> bool| {
        let found: Vec<&str> = announced.split([' ', ';']).filter(|word| keep(word)).collect();
        if found.is_empty() {
            "?".to_string()
        } else {
            found.join(" ")
        }
    };
    let timewait_hooks = words(&|word| word.starts_with("tcp_time"));
    // The five TCP hooks share a mode on every kernel tested; name each when they do not.
    let mut tcp_modes: Vec<&str> = announced
        .split([' ', ';'])
        .filter(|word| word.contains('=') && !word.starts_with("tcp_time"))
        .filter_map(|word| word.split('=').nth(1))
        .collect();
    tcp_modes.dedup();
    let tcp_hooks = match tcp_modes.as_slice() {
        [] => "?".to_string(),
        [mode] => format!("all {mode}, batches {}", if announced.contains("batches: per-CPU") { "per-CPU" } else { "off" }),
        _ => words(&|word| word.contains('=') && !word.starts_with("tcp_time")),
    };
    let end = console.lines().find_map(|line| line.strip_prefix("VMTEST-END rc="));
    let tail: Vec<&str> = console.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
    let error = match end {
        _ if console.contains("Kernel panic") => Some(format!("kernel panic; console tail:\n{}", tail.join("\n"))),
        None => Some(format!("no end marker (hang or crash); console tail:\n{}", tail.join("\n"))),
        Some(rc) if rc.trim() != "0" || failed > 0 || passed == 0 => Some(format!("tests failed (rc={rc}); console tail:\n{}", tail.join("\n"))),
        Some(_) => None,
    };
    Outcome { kernel: kernel.to_string(), passed, failed, modes, tcp_hooks, timewait_hooks, seconds: elapsed.as_secs_f64(), error }
}

/// Runs QEMU, returning its console output; kills it after `limit`.
fn run_with_timeout(mut command: Command, limit: Duration) -> Result<String> {
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().context("cannot start qemu")?;
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut text);
        text
    });
    let started = Instant::now();
    while child.try_wait()?.is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.wait();
    Ok(String::from_utf8_lossy(&reader.join().unwrap_or_default()).to_string())
}

pub fn shell(version: &str) -> Result<()> {
    ensure_tools()?;
    let (test_binary, tracer) = test_binaries()?;
    let (vmlinux, modules, package) = kernel(version)?;
    let initrd = vm_dir().join(format!("{package}.shell.initrd.gz"));
    let init = format!("{INIT_PRELUDE}echo \"tracer: {}; tests: /kernel_events; exit the shell to power off\"\nsetsid sh -c 'exec sh </dev/ttyS0 >/dev/ttyS0 2>&1'\npoweroff -f\n", tracer.display());
    initramfs(&modules, &test_binary, &tracer, &init, &initrd)?;
    let status = qemu(&vmlinux, &initrd).status()?;
    if !status.success() {
        bail!("qemu exited with {status}");
    }
    Ok(())
}
