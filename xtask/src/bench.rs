//! `cargo xtask bench`: what the tracer costs the box it watches, measured in one run.
//!
//! Churn throughput untraced / traced by `tracer` / traced by an equivalent bpftrace script,
//! interleaved A/B/C rounds on one core in a private network namespace; the kernel programs'
//! own run time per event (`kernel.bpf_stats_enabled`); ring-buffer loss by buffer size;
//! start-up time; and the criterion benchmarks of the userspace pipeline. Prints a Markdown
//! report. `--quick` is the CI smoke run: short rounds, and a failure only for a crash or for
//! events lost at a modest rate — never for timing.
use std::{
    fs::File,
    io::{BufRead, BufReader},
    net::{IpAddr, Ipv4Addr},
    os::fd::AsRawFd,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

// xtask churns for a length of time; the tests also churn for a count.
#[allow(dead_code)]
#[path = "../../tests/support/churn.rs"]
mod churn;

const NETNS: &str = "tracer-bench";

/// The same facts as the tracer's probes, printed per event by bpftrace.
const BPFTRACE_SCRIPT: &str = r#"
tracepoint:sock:inet_sock_set_state /args->protocol == 6/ { printf("state %p %d %d %d %d\n", args->skaddr, args->oldstate, args->newstate, args->sport, args->dport); }
tracepoint:tcp:tcp_send_reset { printf("rst_sent %p %d\n", args->skaddr, args->state); }
tracepoint:tcp:tcp_receive_reset { printf("rst_received %p\n", args->skaddr); }
tracepoint:tcp:tcp_retransmit_skb { printf("retransmit %p %d\n", args->skaddr, args->state); }
tracepoint:tcp:tcp_retransmit_synack { printf("synack %p\n", args->skaddr); }
"#;

pub struct Options {
    pub quick: bool,
    pub tracer: std::path::PathBuf,
}

/// The benchmark's private network namespace, deleted on drop.
struct Namespace;

impl Namespace {
    fn create() -> Result<Namespace> {
        // A namespace left by an interrupted run; usually there is none.
        let _ = Command::new("ip").args(["netns", "del", NETNS]).stderr(Stdio::null()).status();
        crate::run_checked(Command::new("ip").args(["netns", "add", NETNS]))?;
        crate::run_checked(Command::new("ip").args(["-n", NETNS, "link", "set", "lo", "up"]))?;
        Ok(Namespace)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", NETNS]).status();
    }
}

/// Churns on loopback inside the namespace from a thread pinned to `cpu`; connections/s.
fn churn_rate(cpu: usize, seconds: f64) -> Result<f64> {
    churn_in_namespace(cpu, churn::Amount::Time(Duration::from_secs_f64(seconds)))
}

fn churn_in_namespace(cpu: usize, amount: churn::Amount) -> Result<f64> {
    let file = File::open(format!("/run/netns/{NETNS}"))?;
    thread::spawn(move || -> Result<f64> {
        // SAFETY: setns/sched_setaffinity affect only this thread; the arguments are valid.
        unsafe {
            if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                bail!("setns: {}", std::io::Error::last_os_error());
            }
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
        let started = Instant::now();
        let done = churn::churn(IpAddr::V4(Ipv4Addr::LOCALHOST), amount);
        Ok(done as f64 / started.elapsed().as_secs_f64())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the churn thread panicked"))?
}

/// A running tracer (summary mode, JSON) and the moment it reported itself attached.
struct Traced {
    child: Child,
    startup: Duration,
}

impl Traced {
    fn start(tracer: &Path, extra: &[&str]) -> Result<Traced> {
        let started = Instant::now();
        let mut child = Command::new(tracer)
            .args(["--json", "--interval", "1"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start tracer")?;
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line)?;
        if !line.starts_with("tracer: attached") {
            bail!("tracer did not attach: {line}");
        }
        Ok(Traced { child, startup: started.elapsed() })
    }

    /// Stops it and returns its final summary; a crash is an error.
    fn stop(mut self) -> Result<Value> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let stdout = self.child.stdout.take().unwrap();
        let last = BufReader::new(stdout).lines().map_while(Result::ok).last().unwrap_or_default();
        let status = self.child.wait()?;
        if !status.success() {
            bail!("tracer crashed: {status}");
        }
        serde_json::from_str(&last).with_context(|| format!("no final summary: {last:?}"))
    }
}

struct Bpftrace(Child);

impl Bpftrace {
    fn start() -> Result<Option<Bpftrace>> {
        if crate::toolchain::which("bpftrace").is_none() {
            return Ok(None);
        }
        let mut child = Command::new("bpftrace")
            .args(["-e", BPFTRACE_SCRIPT])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        // Its first line says "Attaching N probes..."; the rest goes nowhere, as fast as it comes.
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        thread::sleep(Duration::from_millis(300));
        Ok(Some(Bpftrace(child)))
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Average kernel run time per invocation of the tracer's programs, from bpf_stats.
fn program_stats() -> Result<(u64, u64)> {
    let output = Command::new("bpftool").args(["-j", "prog", "show"]).output().context("bpftool (apt: bpftool) is needed")?;
    let programs: Vec<Value> = serde_json::from_slice(&output.stdout)?;
    let ours = ["inet_sock_set_state", "tcp_send_reset", "tcp_receive_reset", "tcp_retransmit_skb", "tcp_retransmit_synack"];
    let (mut time, mut count) = (0, 0);
    for program in programs.iter().filter(|p| p["type"] == "tracepoint" && ours.contains(&p["name"].as_str().unwrap_or(""))) {
        time += program["run_time_ns"].as_u64().unwrap_or(0);
        count += program["run_cnt"].as_u64().unwrap_or(0);
    }
    Ok((time, count))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

pub fn run(options: Options) -> Result<()> {
    let (rounds, seconds) = if options.quick { (2, 2.0) } else { (5, 5.0) };
    let _namespace = Namespace::create()?;
    let mut report = String::new();
    let machine = format!(
        "{} CPUs, kernel {}",
        thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim()
    );
    report += &format!("# tracer bench{}\n\nmachine: {machine}; churn on CPU 0, {rounds} rounds of {seconds} s\n\n", if options.quick { " (quick)" } else { "" });

    // 1. Churn overhead, interleaved.
    let _ = Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=1"]).status();
    let (mut untraced, mut traced, mut bpftraced) = (Vec::new(), Vec::new(), Vec::new());
    let (mut kernel_ns, mut kernel_runs) = (0u64, 0u64);
    let mut startups = Vec::new();
    let mut churn_lost = 0u64;
    for _ in 0..rounds {
        untraced.push(churn_rate(0, seconds)?);

        let tracer = Traced::start(&options.tracer, &[])?;
        startups.push(tracer.startup.as_secs_f64() * 1000.0);
        let before = program_stats()?;
        traced.push(churn_rate(0, seconds)?);
        let after = program_stats()?;
        (kernel_ns, kernel_runs) = (kernel_ns + after.0 - before.0, kernel_runs + after.1 - before.1);
        let last = tracer.stop()?;
        churn_lost += last["events"]["lost"].as_u64().unwrap_or(0);

        if let Some(bpftrace) = Bpftrace::start()? {
            bpftraced.push(churn_rate(0, seconds)?);
            drop(bpftrace);
        }
    }
    let _ = Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=0"]).status();
    let base = median(&mut untraced);
    let with_tracer = median(&mut traced);
    report += "## Churn throughput (connections/s, median of rounds)\n\n| run | conn/s | ratio to untraced |\n|---|---|---|\n";
    report += &format!("| untraced | {base:.0} | 1.000 |\n| tracer | {with_tracer:.0} | {:.3} |\n", with_tracer / base);
    if bpftraced.is_empty() {
        report += "| bpftrace | not installed (apt install bpftrace) | |\n";
    } else {
        let with_bpftrace = median(&mut bpftraced);
        report += &format!("| bpftrace (same tracepoints, printf per event) | {with_bpftrace:.0} | {:.3} |\n", with_bpftrace / base);
    }
    report += &format!(
        "\nkernel run time per event: {:.0} ns ({} program runs, kernel.bpf_stats_enabled)\n\n",
        kernel_ns as f64 / kernel_runs.max(1) as f64,
        kernel_runs
    );
    report += &format!("start-up (launch → all programs attached): median {:.0} ms\n\n", median(&mut startups));
    report += &format!("events lost during the full-speed churn rounds: {churn_lost}\n\n");

    // The correctness gate: at a modest rate nothing may be lost.
    let tracer = Traced::start(&options.tracer, &[])?;
    let rate = churn_in_namespace(0, churn::Amount::Paced(2_000, Duration::from_secs_f64(seconds)))?;
    let last = tracer.stop()?;
    let lost = last["events"]["lost"].as_u64().unwrap_or(u64::MAX);
    report += &format!("modest rate ({rate:.0} conn/s, about {:.0} events/s): {lost} lost\n\n", rate * 10.0);
    if lost > 0 {
        println!("{report}");
        bail!("the tracer lost {lost} events at a modest rate: {}", last["events"]);
    }

    // 2. Ring buffer: how many events each size carries at a two-core churn, and what is lost.
    report += "## Ring buffer (two churn threads)\n\n| ring size | events seen | lost | events/s |\n|---|---|---|---|\n";
    let sizes: &[u32] = if options.quick { &[4 << 20] } else { &[4 << 20, 256 << 10, 64 << 10, 16 << 10] };
    for size in sizes {
        let tracer = Traced::start(&options.tracer, &["--ring-buffer-size", &size.to_string()])?;
        let started = Instant::now();
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        let second = thread::spawn(move || churn_rate(1 % cpus, seconds));
        churn_rate(0, seconds)?;
        second.join().map_err(|_| anyhow::anyhow!("the churn thread panicked"))??;
        let elapsed = started.elapsed().as_secs_f64();
        let last = tracer.stop()?;
        let (seen, lost) = (last["events"]["seen"].as_u64().unwrap_or(0), last["events"]["lost"].as_u64().unwrap_or(0));
        report += &format!("| {} KiB | {seen} | {lost} | {:.0} |\n", size / 1024, (seen + lost) as f64 / elapsed);
    }

    // 3. The userspace pipeline.
    report += "\n## Aggregator (criterion, one core): see `cargo bench --bench aggregator`\n";
    println!("{report}");
    Ok(())
}
