//! What one benchmark round measures: a tracer started and stopped around a load (its start-up,
//! CPU and final summary), the kernel programs' run counters (`kernel.bpf_stats_enabled`), and
//! bpftrace on the same hooks for comparison. Shared by every section of `cargo xtask bench`.
use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The same facts as the tracer's probes, printed per event by bpftrace.
const BPFTRACE_SCRIPT: &str = r#"
tracepoint:sock:inet_sock_set_state /args->protocol == 6/ { printf("state %p %d %d %d %d\n", args->skaddr, args->oldstate, args->newstate, args->sport, args->dport); }
tracepoint:tcp:tcp_send_reset { printf("rst_sent %p %d\n", args->skaddr, args->state); }
tracepoint:tcp:tcp_receive_reset { printf("rst_received %p\n", args->skaddr); }
tracepoint:tcp:tcp_retransmit_skb { printf("retransmit %p %d\n", args->skaddr, args->state); }
tracepoint:tcp:tcp_retransmit_synack { printf("synack %p\n", args->skaddr); }
"#;

/// A running tracer (JSON) and the moment it reported itself attached.
pub struct Traced {
    child: Child,
    pub startup: Duration,
    /// The `--events` or `--connections` stream, read (and dropped) as fast as it comes; its last line.
    events_reader: Option<thread::JoinHandle<String>>,
    /// The rest of its standard error, said when it crashes.
    stderr_reader: thread::JoinHandle<String>,
    /// Its "attached" line: which hooks, in which mode.
    pub hooks: String,
}

impl Traced {
    pub fn start(tracer: &Path, extra: &[&str]) -> Result<Traced> {
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
    pub fn cpu_ns(&self) -> u64 {
        cpu_ns(self.child.id())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it and returns its final summary; a crash is an error.
    pub fn stop(mut self) -> Result<Value> {
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

pub struct Bpftrace(Child);

impl Bpftrace {
    /// None where bpftrace is not installed.
    pub fn start() -> Result<Option<Bpftrace>> {
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

/// `kernel.bpf_stats_enabled` set for as long as this lives, then put back. Throughput is
/// measured with it off: its two clock reads around every program run are a cost of their own.
pub struct BpfStats(String);

impl BpfStats {
    pub fn set(on: bool) -> BpfStats {
        let before = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default();
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", if on { "1" } else { "0" });
        BpfStats(before.trim().to_string())
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.0);
        }
    }
}

/// Run counters of the tracer's loaded programs (`bpftool prog show`, bpf_stats on), by name.
#[derive(Clone, Default)]
pub struct ProgramStats(std::collections::BTreeMap<String, (u64, u64, u64)>);

impl ProgramStats {
    pub fn read() -> Result<ProgramStats> {
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
    pub fn since(&self, before: &ProgramStats) -> ProgramStats {
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
    pub fn firings(&self) -> u64 {
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

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
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

    /// Each round's rate over the untraced rate of the same round (the rounds interleave).
    pub fn ratios(&self, untraced: &[f64]) -> Vec<f64> {
        self.rates.iter().zip(untraced).map(|(traced, untraced)| traced / untraced).collect()
    }

    /// Σ run time of all the tracer's programs / hook firings (bpf_stats on), and the firings.
    pub fn kernel_ns_per_firing(&self) -> (f64, u64) {
        (self.programs.ns_per_firing(), self.programs.firings())
    }

    /// The tracer process's CPU (all threads, user and system) per hook firing (bpf_stats on).
    pub fn tracer_ns_per_firing(&self) -> f64 {
        self.tracer_cpu_ns as f64 / self.programs.firings().max(1) as f64
    }

    pub fn program_table(&self) -> String {
        self.programs.table()
    }

    pub fn lost_and_skipped(&self) -> (u64, u64) {
        (self.lost, self.skipped)
    }

    pub fn hooks(&self) -> &str {
        &self.hooks
    }
}
