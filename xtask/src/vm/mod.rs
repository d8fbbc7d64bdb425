//! `cargo xtask vm-test` / `vm-shell`: the kernel tests on other Debian kernels, under QEMU.
//!
//! Kernel packages come from the Debian archive apt already uses (for suites the machine does
//! not list, a private sources list on the same mirror), are extracted without installing, and
//! cached by package version under target/vm/. Each kernel boots an initramfs holding busybox,
//! the tracer from the .deb (byte for byte, at /usr/sbin/tracer), the test binaries (the kernel tests and the summary tests), `ip`, `ss`, `nft` and
//! the veth and netfilter modules (with their dependencies, read from each module's own
//! `depends=`); results come back over the serial console between markers. A panic, a hang or a
//! missing end marker fails the run.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use tracer::kernel::hooks::Announced;

use self::{
    initramfs::{initramfs, GUEST_TOOLS, GUEST_TRACER, INIT_PRELUDE},
    kernels::kernel,
};
use crate::{toolchain::ensure_tools, workspace_root};

mod initramfs;
mod kernels;

/// The kernels we claim, with the suite that carries each and the package name pattern.
const KERNELS: &[(&str, &str, &str)] = &[
    ("5.10", "bullseye", r"^linux-image-5\.10\.0-[0-9]+-amd64-unsigned$"),
    ("6.1", "bookworm", r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$"),
    ("6.12", "bookworm-security", r"^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$"),
    ("7.3", "trixie-backports", r"^linux-binary-7\.3\.[0-9]+\+deb13-amd64$"),
];
/// What booting a guest needs on the host: (program, Debian package).
const VM_TOOLS: [(&str, &str); 2] = [("qemu-system-x86_64", "qemu-system-x86"), ("busybox", "busybox-static")];
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);

/// The test binaries the guest runs, in order: every integration suite that tests the tracer
/// against the kernel. The others need what a guest has no room for (a browser, Prometheus, an
/// image builder, a Debian mirror) or are the 1 M-connection flood, and run on the host.
const SUITES: [&str; 8] =
    ["kernel_events", "summary_findings", "connections", "real_traffic", "namespaces", "reliability", "teardown", "command_line"];

/// What the tests need of the kernel beyond the tracer: veth pairs, sock_diag for TCP (the
/// snapshots; a booted system loads it on demand through modprobe, which the guest lacks), and
/// nftables rules that drop, reset, NAT and match conntrack state (their dependencies are added).
const MODULES: [&str; 7] = ["veth", "tcp_diag", "nf_tables", "nft_reject_inet", "nft_chain_nat", "nft_nat", "nft_ct"];

fn vm_dir() -> PathBuf {
    workspace_root().join("target/vm")
}

/// Builds what the guest runs: the test binaries of [`SUITES`] (with the eBPF object) and the
/// tracer from the .deb.
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
    Ok((executables, tracer_from_package()?))
}

/// The tracer as the .deb ships it, extracted from the package: one binary for every kernel.
fn tracer_from_package() -> Result<PathBuf> {
    let package = crate::dist::package()?;
    let extracted = vm_dir().join("package");
    let _ = fs::remove_dir_all(&extracted);
    // A clean clone has no target/vm yet: the kernels are fetched after the binaries are built.
    fs::create_dir_all(&extracted)?;
    let status = Command::new("dpkg-deb").arg("-x").arg(&package.deb).arg(&extracted).status()?;
    if !status.success() {
        bail!("dpkg-deb -x {} failed", package.deb.display());
    }
    eprintln!("xtask: the guests run {}'s {GUEST_TRACER}", package.deb.display());
    Ok(extracted.join(GUEST_TRACER.trim_start_matches('/')))
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

pub fn test(kernels: &[String], filter: Option<&str>) -> Result<()> {
    ensure_tools(&VM_TOOLS)?;
    ensure_tools(&GUEST_TOOLS)?;
    let (test_binaries, tracer) = test_binaries()?;
    // Fetch every kernel and build every initramfs first (apt and disk), then boot the guests
    // side by side: each is one emulated vCPU, so as many run at once as the host has CPUs.
    let mut guests = Vec::new();
    for version in kernels {
        let (vmlinux, modules, package) = kernel(version)?;
        let initrd = vm_dir().join(format!("{package}.initrd.gz"));
        let init = format!(
            "{INIT_PRELUDE}echo \"VMTEST-TRACER $({GUEST_TRACER} --duration 0.2 2>&1 >/dev/null | grep attached)\"\necho VMTEST-BOOTED\n{}echo VMTEST-END\npoweroff -f\n",
            SUITES.map(|suite| format!("/{suite} --test-threads=1 {} 2>&1\necho \"VMTEST-RC {suite} $?\"\n", filter.unwrap_or_default())).concat()
        );
        initramfs(&modules, &test_binaries, &tracer, &init, &initrd)?;
        guests.push((version.clone(), vmlinux, initrd, package));
    }
    let at_once = std::thread::available_parallelism().map_or(1, usize::from);
    let mut outcomes = Vec::new();
    for batch in guests.chunks(at_once) {
        let booted: Vec<Result<Outcome>> = std::thread::scope(|scope| {
            let running: Vec<_> = batch
                .iter()
                .map(|(version, vmlinux, initrd, package)| {
                    scope.spawn(move || -> Result<Outcome> {
                        eprintln!("xtask: booting {package}");
                        let started = Instant::now();
                        let console = run_with_timeout(qemu(vmlinux, initrd), BOOT_TIMEOUT)?;
                        fs::write(vm_dir().join(format!("{package}.console.log")), &console)?;
                        eprintln!("xtask: {package} done in {:.0?}", started.elapsed());
                        Ok(outcome(version, &console, started.elapsed(), filter.is_some()))
                    })
                })
                .collect();
            running.into_iter().map(|guest| guest.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a guest's thread panicked")))).collect()
        });
        for outcome in booted {
            outcomes.push(outcome?);
        }
    }
    println!(
        "\n| kernel | {} | hook modes available | tracer's TCP hooks (default) | tracer's TIME_WAIT hooks | seconds |\n|---|{}---|---|---|---|",
        SUITES.map(|suite| format!("{suite} passed/run")).join(" | "),
        "---|".repeat(SUITES.len())
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

/// `filtered`: a suite may have run no test at all.
fn outcome(kernel: &str, console: &str, elapsed: Duration, filtered: bool) -> Outcome {
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
        .filter(|((_, status), (passed, failed))| status != "0" || *failed > 0 || (*passed == 0 && !filtered))
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
    ensure_tools(&VM_TOOLS)?;
    ensure_tools(&GUEST_TOOLS)?;
    let (test_binaries, tracer) = test_binaries()?;
    let (vmlinux, modules, package) = kernel(version)?;
    let initrd = vm_dir().join(format!("{package}.shell.initrd.gz"));
    let suites = SUITES.map(|suite| format!("/{suite}")).join(" ");
    let init = format!("{INIT_PRELUDE}echo \"tracer: {GUEST_TRACER} (from the .deb); tests: {suites}; exit the shell to power off\"\nsetsid sh -c 'exec sh </dev/ttyS0 >/dev/ttyS0 2>&1'\npoweroff -f\n");
    initramfs(&modules, &test_binaries, &tracer, &init, &initrd)?;
    let status = qemu(&vmlinux, &initrd).status()?;
    if !status.success() {
        bail!("qemu exited with {status}");
    }
    Ok(())
}
