//! `cargo xtask bench`: what the tracer costs the box it watches, measured in one run.
//!
//! Churn throughput untraced / traced by `tracer` / traced by an equivalent bpftrace script,
//! interleaved A/B/C rounds on one core in a private network namespace; the kernel programs'
//! own run time per event (`kernel.bpf_stats_enabled`); ring-buffer loss by buffer size;
//! start-up time; socket snapshots across many namespaces; and the criterion benchmarks of the userspace pipeline. Prints a Markdown
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
    in_namespace(cpu, move || {
        let started = Instant::now();
        let done = churn::churn(IpAddr::V4(Ipv4Addr::LOCALHOST), amount);
        done as f64 / started.elapsed().as_secs_f64()
    })
}

/// Runs `load` on a thread inside the benchmark's namespace, pinned to `cpu`; returns its rate.
fn in_namespace(cpu: usize, load: impl FnOnce() -> f64 + Send + 'static) -> Result<f64> {
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
        Ok(load())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the load thread panicked"))?
}

/// A running tracer (JSON) and the moment it reported itself attached.
struct Traced {
    child: Child,
    startup: Duration,
    /// The `--events` or `--connections` stream, read (and dropped) as fast as it comes; its last line.
    events_reader: Option<thread::JoinHandle<String>>,
    /// The rest of its standard error, said when it crashes.
    stderr_reader: thread::JoinHandle<String>,
    hooks: String,
}

impl Traced {
    fn start(tracer: &Path, extra: &[&str]) -> Result<Traced> {
        let started = Instant::now();
        // Half the default interval: every traced round holds at least one summary and its
        // socket snapshot (summary modes only: `--events` refuses summary flags).
        let interval: &[&str] = if extra.contains(&"--events") { &[] } else { &["--interval", "5"] };
        let mut child = Command::new(tracer)
            .arg("--json")
            .args(interval)
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
        let hooks = line.trim().to_string();
        let stderr_reader = thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
        let events_reader = extra.iter().any(|arg| ["--events", "--connections"].contains(arg)).then(|| {
            let stdout = child.stdout.take().unwrap();
            thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).last().unwrap_or_default())
        });
        Ok(Traced { child, startup: started.elapsed(), events_reader, stderr_reader, hooks })
    }

    /// Sampled around a measurement, it leaves out start-up (BTF parsing) and the exit.
    fn cpu_ns(&self) -> u64 {
        cpu_ns(self.child.id())
    }

    /// Stops it and returns its final summary; a crash is an error.
    fn stop(mut self) -> Result<Value> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let last = match self.events_reader.take() {
            Some(reader) => reader.join().map_err(|_| anyhow::anyhow!("the output reader panicked"))?,
            None => BufReader::new(self.child.stdout.take().unwrap()).lines().map_while(Result::ok).last().unwrap_or_default(),
        };
        let status = self.child.wait()?;
        if !status.success() {
            let said = self.stderr_reader.join().unwrap_or_default();
            bail!("tracer crashed: {status}: {said}");
        }
        serde_json::from_str(&last).with_context(|| format!("no final summary: {last:?}"))
    }
}

/// CPU time process `pid` has used so far, all threads (`/proc/PID/task/*/schedstat`, ns).
pub fn cpu_ns(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
    tasks
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

struct Bpftrace(Child);

impl Bpftrace {
    fn start() -> Result<Option<Bpftrace>> {
        if crate::toolchain::which("bpftrace").is_none() {
            return Ok(None);
        }
        let mut child = Command::new("bpftrace").args(["-e", BPFTRACE_SCRIPT]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
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

/// Run counters of the tracer's loaded programs (`bpftool prog show`, bpf_stats on), by name.
#[derive(Clone, Default)]
struct ProgramStats(std::collections::BTreeMap<String, (u64, u64, u64)>);

impl ProgramStats {
    fn read() -> Result<ProgramStats> {
        let output = Command::new("bpftool").args(["-j", "prog", "show"]).output().context("bpftool (apt: bpftool) is needed")?;
        let programs: Vec<Value> = serde_json::from_slice(&output.stdout)?;
        let mut stats = ProgramStats::default();
        for program in &programs {
            let name = program["name"].as_str().unwrap_or("");
            let Some((ours, _)) = tracer::kernel::hooks::program_named(name) else { continue };
            let entry = stats.0.entry(ours.to_string()).or_default();
            entry.0 += program["run_time_ns"].as_u64().unwrap_or(0);
            entry.1 += program["run_cnt"].as_u64().unwrap_or(0);
            entry.2 += program["recursion_misses"].as_u64().unwrap_or(0);
        }
        Ok(stats)
    }

    /// What happened between `before` and now.
    fn since(&self, before: &ProgramStats) -> ProgramStats {
        let mut delta = self.clone();
        for (name, (time, runs, misses)) in &mut delta.0 {
            if let Some((time0, runs0, misses0)) = before.0.get(name) {
                *time = time.saturating_sub(*time0);
                *runs = runs.saturating_sub(*runs0);
                *misses = misses.saturating_sub(*misses0);
            }
        }
        delta
    }

    fn add(&mut self, other: &ProgramStats) {
        for (name, (time, runs, misses)) in &other.0 {
            let entry = self.0.entry(name.clone()).or_default();
            entry.0 += time;
            entry.1 += runs;
            entry.2 += misses;
        }
    }

    /// Hook firings (runs of the TCP hook programs, plus the ones the kernel skipped as nested).
    fn firings(&self) -> u64 {
        self.0
            .iter()
            .filter(|(name, _)| tracer::kernel::hooks::program_named(name).is_some_and(|(_, hook)| hook))
            .map(|(_, (_, runs, misses))| runs + misses)
            .sum()
    }

    fn total_ns(&self) -> u64 {
        self.0.values().map(|(time, _, _)| time).sum()
    }

    /// Σ run time of every program / hook firings.
    fn ns_per_firing(&self) -> f64 {
        self.total_ns() as f64 / self.firings().max(1) as f64
    }

    fn table(&self) -> String {
        let mut table = String::from("| program | runs | ns per run | recursion misses |\n|---|---|---|---|\n");
        for (name, (time, runs, misses)) in self.0.iter().filter(|(_, (_, runs, misses))| runs + misses > 0) {
            table += &format!("| {name} | {runs} | {:.0} | {misses} |\n", *time as f64 / (*runs).max(1) as f64);
        }
        table
    }
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

/// One traced churn round: the rate, and what the tracer cost in the kernel and in userspace.
#[derive(Default)]
pub struct TracedRuns {
    pub rates: Vec<f64>,
    programs: ProgramStats,
    tracer_cpu_ns: u64,
    lost: u64,
    skipped: u64,
    hooks: String,
}

impl TracedRuns {
    /// Σ run time and runs of one of the tracer's programs over the rounds.
    pub fn program(&self, name: &str) -> (u64, u64) {
        self.programs.0.get(name).map_or((0, 0), |(time, runs, _)| (*time, *runs))
    }

    pub fn round(&mut self, tracer: &Path, extra: &[&str], work: impl FnOnce() -> Result<f64>) -> Result<Duration> {
        let traced = Traced::start(tracer, extra)?;
        let before = (ProgramStats::read()?, traced.cpu_ns());
        self.rates.push(work()?);
        let after = (ProgramStats::read()?, traced.cpu_ns());
        self.programs.add(&after.0.since(&before.0));
        self.tracer_cpu_ns += after.1 - before.1;
        self.hooks = traced.hooks.clone();
        let startup = traced.startup;
        let last = traced.stop()?;
        self.lost += last["events"]["lost"].as_u64().unwrap_or(u64::MAX);
        self.skipped += last["events"]["skipped"].as_u64().unwrap_or(u64::MAX);
        Ok(startup)
    }

    fn report(&mut self, title: &str, base: f64) -> String {
        let firings = self.programs.firings().max(1) as f64;
        let rate = median(&mut self.rates);
        format!(
            "### {title}\n\n{}\n\nchurn {rate:.0} conn/s, **{:.3}** of untraced (median)\n\n\
             kernel: **{:.0} ns per hook firing** (Σ run time of all the tracer's programs / {} firings)\n\n{}\n\
             tracer CPU: **{:.0} ns per hook firing** ({:.3} s)\n\nlost: {}, skipped (nested): {}\n\n",
            self.hooks,
            rate / base,
            self.programs.ns_per_firing(),
            firings as u64,
            self.programs.table(),
            self.tracer_cpu_ns as f64 / firings,
            self.tracer_cpu_ns as f64 / 1e9,
            self.lost,
            self.skipped,
        )
    }
}

/// Churns on every core at once for `seconds`: one churn thread per CPU. Returns hook firings
/// offered per second and the final summary's events.
fn saturate(tracer: &Path, seconds: f64, refused_too: bool) -> Result<(f64, Value)> {
    let traced = Traced::start(tracer, &[])?;
    let before = ProgramStats::read()?;
    let started = Instant::now();
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let churners: Vec<_> =
        (0..cpus)
            .map(|cpu| {
                thread::spawn(move || {
                    if refused_too {
                        refused_in_namespace(cpu, Duration::from_secs_f64(seconds))
                    } else {
                        churn_rate(cpu, seconds)
                    }
                })
            })
            .collect();
    for churner in churners {
        churner.join().map_err(|_| anyhow::anyhow!("a churn thread panicked"))??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let firings = ProgramStats::read()?.since(&before).firings();
    let last = traced.stop()?;
    Ok((firings as f64 / elapsed, last["events"].clone()))
}

/// Connects to a closed port as fast as it can, from a thread pinned to `cpu`: each attempt is
/// four firings (SYN_SENT, the peer's reset sent and received, CLOSE) for little work.
fn refused_in_namespace(cpu: usize, length: Duration) -> Result<f64> {
    in_namespace(cpu, move || {
        let closed = std::net::SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9);
        let started = Instant::now();
        let mut attempts = 0u64;
        while started.elapsed() < length {
            let _ = std::net::TcpStream::connect(closed);
            attempts += 1;
        }
        attempts as f64 / started.elapsed().as_secs_f64()
    })
}

/// The churn, saturation and snapshot sections of the report (the caller adds the bulk transfer).
pub fn run(options: &Options) -> Result<String> {
    let (rounds, seconds, saturated_seconds) = if options.quick { (2, 2.0, 5.0) } else { (5, 5.0, 30.0) };
    let _namespace = Namespace::create()?;
    let mut report = String::new();
    let machine = format!(
        "{} CPUs, kernel {}",
        thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim()
    );
    report += &format!(
        "# tracer bench{}\n\nmachine: {machine}; churn on CPU 0, {rounds} interleaved rounds of {seconds} s\n\n",
        if options.quick { " (quick)" } else { "" }
    );

    // 1. Churn overhead, interleaved: untraced, summary mode, --events, each hook mode, bpftrace.
    let _ = Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=1"]).status();
    let mut untraced = Vec::new();
    let mut bpftraced = Vec::new();
    let mut startups = Vec::new();
    let (mut summary, mut events, mut classic, mut connections) =
        (TracedRuns::default(), TracedRuns::default(), TracedRuns::default(), TracedRuns::default());
    for _ in 0..rounds {
        untraced.push(churn_rate(0, seconds)?);
        startups.push(summary.round(&options.tracer, &[], || churn_rate(0, seconds))?.as_secs_f64() * 1000.0);
        events.round(&options.tracer, &["--events"], || churn_rate(0, seconds))?;
        classic.round(&options.tracer, &["--hook-mode", "tracepoint"], || churn_rate(0, seconds))?;
        connections.round(&options.tracer, &["--connections"], || churn_rate(0, seconds))?;
        if let Some(bpftrace) = Bpftrace::start()? {
            bpftraced.push(churn_rate(0, seconds)?);
            drop(bpftrace);
        }
    }
    let base = median(&mut untraced);
    report += &format!("## Churn overhead\n\nuntraced: {base:.0} conn/s (median)\n\n");
    report += &summary.report("tracer, summary mode (default: tp_btf where allowed, per-CPU batches, snapshots on)", base);
    report += &events.report("tracer --events (every event to userspace at once, no batches)", base);
    report += &classic.report("tracer --hook-mode tracepoint (the classic fallback, batches)", base);
    report += &connections.report("tracer --connections (a JSON line per ended connection, read as fast as it comes)", base);
    if bpftraced.is_empty() {
        report += "bpftrace: not installed (apt install bpftrace)\n\n";
    } else {
        report += &format!("bpftrace, same tracepoints, printf per event: **{:.3}** of untraced\n\n", median(&mut bpftraced) / base);
    }
    report += &format!("start-up (launch → all programs attached): median {:.0} ms\n\n", median(&mut startups));

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

    // 2. Every core saturated, default ring buffer: churn, then refused connects (more firings).
    report += &format!(
        "## Every core saturated ({saturated_seconds} s each, default ring buffer, summary mode)\n\n| load | hook firings/s offered | seen | lost | skipped (nested) |\n|---|---|---|---|---|\n"
    );
    for (load, refused) in [("churn on every core", false), ("refused connects on every core", true)] {
        let (offered, events) = saturate(&options.tracer, saturated_seconds, refused)?;
        report += &format!("| {load} | {offered:.0} | {} | {} | {} |\n", events["seen"], events["lost"], events["skipped"]);
    }
    let _ = Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=0"]).status();

    // 3. Socket snapshots with many namespaces.
    report += "\n";
    report += &crate::snapshot_bench::run(&options.tracer, options.quick)?;

    // 4. The userspace pipeline.
    Ok(report)
}
