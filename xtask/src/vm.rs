//! `cargo xtask vm-test` / `vm-shell`: the kernel tests on other Debian kernels, under QEMU.
//!
//! Kernel packages come from the Debian archive apt already uses (for suites the machine does
//! not list, a private sources list on the same mirror), are extracted without installing, and
//! cached by package version under target/vm/. Each kernel boots an initramfs holding busybox,
//! the tracer, the test binaries (the kernel tests and the summary tests), `ip`, `ss`, `nft` and
//! the veth and netfilter modules (with their dependencies, read from each module's own
//! `depends=`); results come back over the serial console between markers. A panic, a hang or a
//! missing end marker fails the run.
use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use tracer::kernel::hooks::Announced;

use crate::{run_checked, toolchain::which, workspace_root};

/// The kernels we claim, with the suite that carries each and the package name pattern.
const KERNELS: &[(&str, &str, &str)] = &[
    ("5.10", "bullseye", r"^linux-image-5\.10\.0-[0-9]+-amd64-unsigned$"),
    ("6.1", "bookworm", r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$"),
    ("6.12", "bookworm-security", r"^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$"),
    ("7.3", "trixie-backports", r"^linux-binary-7\.3\.[0-9]+\+deb13-amd64$"),
];
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);

/// The test binaries the guest runs, in order.
const SUITES: [&str; 2] = ["kernel_events", "summary_findings"];

/// What the tests need of the kernel beyond the tracer: veth pairs, sock_diag for TCP (the
/// snapshots; a booted system loads it on demand through modprobe, which the guest lacks), and
/// nftables rules that drop, reset, NAT and match conntrack state (their dependencies are added).
const MODULES: [&str; 7] = ["veth", "tcp_diag", "nf_tables", "nft_reject_inet", "nft_chain_nat", "nft_nat", "nft_ct"];

fn vm_dir() -> PathBuf {
    workspace_root().join("target/vm")
}

/// The main archive's URI, read from the machine's own apt configuration.
fn mirror() -> Result<String> {
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
fn initramfs(modules: &Path, test_binaries: &[PathBuf], tracer: &Path, init: &str, out: &Path) -> Result<()> {
    let root = out.with_extension("d");
    let _ = fs::remove_dir_all(&root);
    // No tmpfs over /tmp: the tracer may live under it (a checkout in /tmp), at the same path
    // as on the host; the initramfs itself is writable.
    for dir in ["bin", "sbin", "proc", "sys", "dev", "run", "tmp", "lib/modules"] {
        fs::create_dir_all(root.join(dir))?;
    }
    let busybox = which("busybox").context("busybox (apt: busybox-static) is needed")?;
    fs::copy(&busybox, root.join("bin/busybox"))?;
    for applet in ["sh", "mount", "poweroff", "echo", "cat", "insmod", "mkdir", "ls", "test", "[", "grep", "uname", "setsid", "sysctl"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    install(&root, tracer, tracer)?;
    for (suite, binary) in SUITES.iter().zip(test_binaries) {
        install(&root, binary, &Path::new("/").join(suite))?;
    }
    for (tool, package) in [("ip", "iproute2"), ("ss", "iproute2"), ("nft", "nftables")] {
        install(&root, &which(tool).with_context(|| format!("{tool} (apt: {package}) is needed"))?, &Path::new("/sbin").join(tool))?;
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

const INIT_PRELUDE: &str = r#"#!/bin/sh
export PATH=/bin:/sbin
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

/// Builds what the guest runs: the test binaries of [`SUITES`] (with the eBPF object) and the tracer.
fn test_binaries() -> Result<(Vec<PathBuf>, PathBuf)> {
    let object = crate::build_ebpf()?;
    let mut command = Command::new(crate::toolchain::cargo());
    command.current_dir(workspace_root()).args(["test", "--package", "tracer", "--no-run", "--message-format=json"]);
    for suite in SUITES {
        command.args(["--test", suite]);
    }
    let output = command.env("TRACER_EBPF_OBJECT", &object).stderr(Stdio::inherit()).output()?;
    let messages: Vec<serde_json::Value> =
        String::from_utf8_lossy(&output.stdout).lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    let executables = SUITES
        .iter()
        .map(|suite| {
            messages
                .iter()
                .filter(|message| message["reason"] == "compiler-artifact" && message["target"]["name"] == *suite)
                .find_map(|message| message["executable"].as_str().map(PathBuf::from))
                .with_context(|| format!("cargo did not report the {suite} test binary"))
        })
        .collect::<Result<_>>()?;
    Ok((executables, workspace_root().join("target/debug/tracer")))
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
    /// Per suite of [`SUITES`]: passed and failed.
    results: Vec<(u64, u64)>,
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
    let (test_binaries, tracer) = test_binaries()?;
    let mut outcomes = Vec::new();
    for version in kernels {
        let started = Instant::now();
        let (vmlinux, modules, package) = kernel(version)?;
        let initrd = vm_dir().join(format!("{package}.initrd.gz"));
        let init = format!(
            "{INIT_PRELUDE}echo \"VMTEST-TRACER $({} --duration 0.2 2>&1 >/dev/null | grep attached)\"\necho VMTEST-BOOTED\n{}echo VMTEST-END\npoweroff -f\n",
            tracer.display(),
            SUITES.map(|suite| format!("/{suite} --test-threads=1 2>&1\necho \"VMTEST-RC {suite} $?\"\n")).concat()
        );
        initramfs(&modules, &test_binaries, &tracer, &init, &initrd)?;
        eprintln!("xtask: booting {package}");
        let console = run_with_timeout(qemu(&vmlinux, &initrd), BOOT_TIMEOUT)?;
        fs::write(vm_dir().join(format!("{package}.console.log")), &console)?;
        outcomes.push(outcome(version, &console, started.elapsed()));
    }
    println!(
        "\n| kernel | kernel tests passed/run | summary tests passed/run | hook modes available | tracer's TCP hooks (default) | tracer's TIME_WAIT hooks | seconds |\n|---|---|---|---|---|---|---|"
    );
    for outcome in &outcomes {
        let results: Vec<String> = outcome.results.iter().map(|(passed, failed)| format!("{passed}/{}", passed + failed)).collect();
        println!(
            "| {} | {} | {} | {} | {} | {:.0} |",
            outcome.kernel,
            results.join(" | "),
            outcome.modes,
            outcome.tcp_hooks,
            outcome.timewait_hooks,
            outcome.seconds
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
    // Each suite's "test result" lines come before its "VMTEST-RC <suite> <status>" marker.
    let mut results = Vec::new();
    let mut statuses = Vec::new();
    let (mut passed, mut failed) = (0, 0);
    for line in console.lines() {
        if let Some(result) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                result
                    .split(';')
                    .find_map(|part| part.trim().strip_suffix(word)?.split_whitespace().last()?.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            passed += count("passed");
            failed += count("failed");
        } else if let Some(marker) = line.split("VMTEST-RC ").nth(1) {
            let mut words = marker.split_whitespace();
            statuses.push((words.next().unwrap_or("?").to_string(), words.next().unwrap_or("?").to_string()));
            results.push((std::mem::take(&mut passed), std::mem::take(&mut failed)));
        }
    }
    // The marker may share a line with the firmware's last words.
    let modes = console.lines().find_map(|line| line.split("VMTEST-MODES ").nth(1)).unwrap_or("?").trim().to_string();
    let announced = console.lines().find_map(|line| line.split_once("VMTEST-TRACER ").and_then(|(_, line)| Announced::parse(line)));
    type HookMode = (String, String);
    let (timewait, tcp): (Vec<&HookMode>, Vec<&HookMode>) =
        announced.iter().flat_map(|announced| &announced.hooks).partition(|(hook, _)| hook.starts_with("tcp_time"));
    let named = |hooks: &[&HookMode]| {
        let pairs: Vec<String> = hooks.iter().map(|(hook, mode)| format!("{hook}={mode}")).collect();
        if pairs.is_empty() {
            "?".to_string()
        } else {
            pairs.join(" ")
        }
    };
    // The TCP hooks share a mode on every kernel tested; name each when they do not.
    let mut tcp_modes: Vec<&str> = tcp.iter().map(|(_, mode)| mode.as_str()).collect();
    tcp_modes.sort_unstable();
    tcp_modes.dedup();
    let tcp_hooks = match (tcp_modes.as_slice(), &announced) {
        ([mode], Some(announced)) => format!("all {mode}, batches {}", if announced.batched { "per-CPU" } else { "off" }),
        _ => named(&tcp),
    };
    let timewait_hooks = named(&timewait);
    let ended = console.lines().any(|line| line.contains("VMTEST-END"));
    let tail: Vec<&str> = console.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect();
    let failing: Vec<String> = statuses
        .iter()
        .zip(&results)
        .filter(|((_, status), (passed, failed))| status != "0" || *failed > 0 || *passed == 0)
        .map(|((suite, status), _)| format!("{suite} (exit {status})"))
        .collect();
    let error = if console.contains("Kernel panic") {
        Some(format!("kernel panic; console tail:\n{}", tail.join("\n")))
    } else if !ended || results.len() < SUITES.len() {
        Some(format!("no end marker (hang or crash); console tail:\n{}", tail.join("\n")))
    } else if !failing.is_empty() {
        Some(format!("{} failed; console tail:\n{}", failing.join(", "), tail.join("\n")))
    } else {
        None
    };
    results.resize(SUITES.len(), (0, 0));
    Outcome { kernel: kernel.to_string(), results, modes, tcp_hooks, timewait_hooks, seconds: elapsed.as_secs_f64(), error }
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
    let (test_binaries, tracer) = test_binaries()?;
    let (vmlinux, modules, package) = kernel(version)?;
    let initrd = vm_dir().join(format!("{package}.shell.initrd.gz"));
    let init = format!("{INIT_PRELUDE}echo \"tracer: {}; tests: /kernel_events /summary_findings; exit the shell to power off\"\nsetsid sh -c 'exec sh </dev/ttyS0 >/dev/ttyS0 2>&1'\npoweroff -f\n", tracer.display());
    initramfs(&modules, &test_binaries, &tracer, &init, &initrd)?;
    let status = qemu(&vmlinux, &initrd).status()?;
    if !status.success() {
        bail!("qemu exited with {status}");
    }
    Ok(())
}
