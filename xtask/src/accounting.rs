//! Where the throughput a tracer takes goes. `perf` samples every CPU during an untraced and a
//! traced round of the every-CPU churn; each sample goes to one part (the tracer's programs,
//! the hooks' dispatch, the reader's wake-ups, the flushes, the tracer's process, the load in
//! the kernel and in userspace, idle, the rest), and each part becomes CPU time per connection.
//! The parts add up to the whole machine, so the difference between the two rounds is the cost
//! of tracing, part by part. The kernel's own counters (/proc/stat, /proc/interrupts) go beside.
use std::{
    collections::BTreeMap,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, Result};

use crate::{load, measure::Traced};

/// Sampling frequency per CPU: prime, so it does not beat with the tracer's 20 ms timers.
const SAMPLES_PER_SECOND: u32 = 499;

/// The part of the machine's time a sample belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    HookPrograms,
    FlushProgram,
    HookDispatch,
    Flushes,
    Wakeups,
    TracerProcess,
    LoadKernel,
    LoadUser,
    OtherProcesses,
    Idle,
}

impl Part {
    fn describe(self) -> &'static str {
        match self {
            Part::HookPrograms => "the tracer's hook programs (JIT code)",
            Part::FlushProgram => "the flush program (JIT code)",
            Part::HookDispatch => "hook dispatch (tracepoint → program, recursion guard)",
            Part::Flushes => "flush calls (BPF_PROG_TEST_RUN, its IPI to each CPU)",
            Part::Wakeups => "ring-buffer wake-ups of the reader (irq_work, epoll)",
            Part::TracerProcess => "the tracer's process (user + its other syscalls)",
            Part::LoadKernel => "the load, in the kernel (TCP, syscalls, softirq)",
            Part::LoadUser => "the load, in userspace",
            Part::OtherProcesses => "other processes (perf, daemons)",
            Part::Idle => "idle",
        }
    }
}

/// Which part a sample's stack (leaf first) belongs to, for the process it interrupted.
fn part_of(pid: u32, frames: &[(u64, &str)], tracer: Option<u32>, load: u32) -> Part {
    let any = |test: &dyn Fn(&str) -> bool| frames.iter().any(|(_, symbol)| test(symbol));
    if let Some((_, program)) = frames.iter().find(|(_, symbol)| symbol.starts_with("bpf_prog_")) {
        return if program.contains("flush") { Part::FlushProgram } else { Part::HookPrograms };
    }
    if any(&|symbol| symbol.contains("bpf_prog_test_run") || symbol.starts_with("bpf_test_run")) {
        return Part::Flushes;
    }
    if any(&|symbol| symbol.contains("bpf_ringbuf_notify")) {
        return Part::Wakeups;
    }
    if any(&|symbol| {
        symbol.starts_with("bpf_trace_run")
            || symbol.starts_with("__bpf_trace_")
            || symbol.starts_with("__bpf_prog_enter")
            || symbol.starts_with("__bpf_prog_exit")
    }) {
        return Part::HookDispatch;
    }
    match pid {
        0 => Part::Idle,
        pid if Some(pid) == tracer => Part::TracerProcess,
        pid if pid == load => {
            // Kernel text is in the top half of the address space.
            if frames.first().is_some_and(|(address, _)| *address >= 1 << 63) {
                Part::LoadKernel
            } else {
                Part::LoadUser
            }
        }
        _ => Part::OtherProcesses,
    }
}

/// Samples per part, and per leaf function within the tracer's process.
#[derive(Default, Debug, PartialEq)]
struct Samples {
    parts: BTreeMap<Part, u64>,
    tracer_leaves: BTreeMap<String, u64>,
}

/// Counts samples per part in `perf script -F pid,ip,sym` output (a header line per sample,
/// then its stack, one frame per line, then a blank line).
fn count_parts(script: &str, tracer: Option<u32>, load: u32, samples: &mut Samples) {
    for sample in script.split("\n\n") {
        let mut lines = sample.lines();
        let Some(pid) = lines.next().and_then(|header| header.split_whitespace().next()?.parse::<u32>().ok()) else { continue };
        let frames: Vec<(u64, &str)> = lines
            .filter_map(|line| {
                let (address, symbol) = line.trim().split_once(' ')?;
                Some((u64::from_str_radix(address, 16).ok()?, symbol.trim()))
            })
            .collect();
        let part = part_of(pid, &frames, tracer, load);
        *samples.parts.entry(part).or_default() += 1;
        if part == Part::TracerProcess {
            let leaf = frames.first().map_or("[unknown]", |(_, symbol)| symbol);
            *samples.tracer_leaves.entry(leaf.to_string()).or_default() += 1;
        }
    }
}

/// The kernel's machine-wide counters: CPU time by kind (/proc/stat, in ticks), context
/// switches, and interrupts by kind (/proc/interrupts, summed over CPUs).
#[derive(Default)]
struct Counters {
    cpu_ticks: BTreeMap<&'static str, u64>,
    context_switches: u64,
    interrupts: BTreeMap<String, u64>,
}

const CPU_KINDS: [&str; 8] = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"];

impl Counters {
    fn read() -> Result<Counters> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let mut counters = Counters::default();
        for line in stat.lines() {
            let mut fields = line.split_whitespace();
            match fields.next() {
                Some("cpu") => {
                    for (kind, value) in CPU_KINDS.iter().zip(fields) {
                        counters.cpu_ticks.insert(kind, value.parse()?);
                    }
                }
                Some("ctxt") => counters.context_switches = fields.next().unwrap_or("0").parse()?,
                _ => {}
            }
        }
        let interrupts = std::fs::read_to_string("/proc/interrupts")?;
        let cpus = interrupts.lines().next().map_or(0, |header| header.split_whitespace().count());
        for line in interrupts.lines().skip(1) {
            let mut fields = line.split_whitespace();
            let Some(name) = fields.next() else { continue };
            let counts: u64 = fields.take(cpus).map_while(|count| count.parse::<u64>().ok()).sum();
            let description = line.split_whitespace().skip(1 + cpus).collect::<Vec<_>>().join(" ");
            counters.interrupts.insert(format!("{} {description}", name.trim_end_matches(':')), counts);
        }
        Ok(counters)
    }

    fn add(&mut self, other: &Counters) {
        for (kind, ticks) in &other.cpu_ticks {
            *self.cpu_ticks.entry(kind).or_default() += ticks;
        }
        self.context_switches += other.context_switches;
        for (name, count) in &other.interrupts {
            *self.interrupts.entry(name.clone()).or_default() += count;
        }
    }

    fn since(&self, before: &Counters) -> Counters {
        let minus = |now: u64, then: Option<&u64>| now.saturating_sub(then.copied().unwrap_or(0));
        Counters {
            cpu_ticks: self.cpu_ticks.iter().map(|(kind, now)| (*kind, minus(*now, before.cpu_ticks.get(kind)))).collect(),
            context_switches: self.context_switches - before.context_switches,
            interrupts: self.interrupts.iter().map(|(name, now)| (name.clone(), minus(*now, before.interrupts.get(name)))).collect(),
        }
    }
}

/// Profiled rounds of one kind, summed: samples, connections made, time, the counters' deltas.
#[derive(Default)]
struct Rounds {
    samples: Samples,
    connections: f64,
    seconds: f64,
    counters: Counters,
}

impl Rounds {
    fn rate(&self) -> f64 {
        self.connections / self.seconds
    }

    /// CPU ns per connection that part `part` took: its share of all samples × CPUs / rate.
    fn ns_per_connection(&self, part: Part) -> f64 {
        self.share(self.samples.parts.get(&part).copied().unwrap_or(0))
    }

    fn share(&self, samples: u64) -> f64 {
        let total: u64 = self.samples.parts.values().sum();
        samples as f64 / total.max(1) as f64 * load::cpus() as f64 / self.rate() * 1e9
    }

    fn per_thousand_connections(&self, count: u64) -> f64 {
        count as f64 / self.connections * 1000.0
    }

    /// Churns on every CPU for `seconds` under `perf record -a -g`, traced by `tracer` or not.
    /// `Ok(false)`: perf could not sample here (the round is not counted).
    fn add_round(&mut self, tracer: Option<&Path>, seconds: f64) -> Result<bool> {
        let data = std::env::temp_dir().join(format!("tracer-bench-{}.perf", std::process::id()));
        let traced = tracer.map(|tracer| Traced::start(tracer, &[])).transpose()?;
        let before = Counters::read()?;
        let mut perf = Command::new("perf")
            .args(["record", "-a", "-g", "-F", &SAMPLES_PER_SECOND.to_string(), "-o"])
            .arg(&data)
            .args(["--", "sleep", &seconds.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("perf (apt: linux-perf) is needed for the accounting")?;
        let rate = load::churn_rate(load::Spread::EveryCpu, seconds)?;
        if !perf.wait()?.success() {
            if let Some(traced) = traced {
                traced.stop()?;
            }
            return Ok(false);
        }
        self.counters.add(&Counters::read()?.since(&before));
        // Symbolised while the tracer still runs: its programs' names come from /proc/kallsyms.
        let script = Command::new("perf").args(["script", "-F", "pid,ip,sym", "-i"]).arg(&data).stderr(Stdio::null()).output()?;
        let _ = std::fs::remove_file(&data);
        let tracer_pid = traced.as_ref().map(Traced::pid);
        if let Some(traced) = traced {
            traced.stop()?;
        }
        count_parts(&String::from_utf8_lossy(&script.stdout), tracer_pid, std::process::id(), &mut self.samples);
        self.connections += rate * seconds;
        self.seconds += seconds;
        Ok(true)
    }
}

/// The accounting section: CPU per connection by part, untraced against traced (summary mode),
/// and the kernel's counters per thousand connections.
pub fn run(tracer: &Path, rounds: usize, seconds: f64) -> Result<String> {
    if crate::toolchain::which("perf").is_none() {
        return Ok("## Where the lost throughput goes\n\nnot measured: perf is not installed (apt install linux-perf)\n\n".to_string());
    }
    let (mut untraced, mut traced) = (Rounds::default(), Rounds::default());
    for _ in 0..rounds {
        // A machine where perf cannot sample gets no accounting, not a failed benchmark (its
        // gates are crashes and losses; a tracer that crashes here still fails it).
        if !untraced.add_round(None, seconds)? || !traced.add_round(Some(tracer), seconds)? {
            return Ok("## Where the lost throughput goes\n\nnot measured: perf record failed (kernel.perf_event_paranoid, or no permission to sample)\n\n".to_string());
        }
    }
    let mut report = format!(
        "## Where the lost throughput goes (every CPU busy, summary mode, bpf_stats off)\n\n\
         Command: `cargo xtask bench` (this section: `perf record -a -g -F {SAMPLES_PER_SECOND}` on every CPU during {rounds} \
         interleaved untraced and traced rounds of {seconds} s; each sample is charged to the first part its stack matches).\n\n\
         untraced {:.0} conn/s, traced {:.0} conn/s: **{:.3}** of untraced in these rounds.\n\n\
         | part | untraced ns per connection | traced ns per connection | difference |\n|---|---|---|---|\n",
        untraced.rate(),
        traced.rate(),
        traced.rate() / untraced.rate()
    );
    let (mut sum_untraced, mut sum_traced) = (0.0, 0.0);
    for part in [
        Part::HookPrograms,
        Part::FlushProgram,
        Part::HookDispatch,
        Part::Flushes,
        Part::Wakeups,
        Part::TracerProcess,
        Part::LoadKernel,
        Part::LoadUser,
        Part::OtherProcesses,
        Part::Idle,
    ] {
        let (before, after) = (untraced.ns_per_connection(part), traced.ns_per_connection(part));
        sum_untraced += before;
        sum_traced += after;
        report += &format!("| {} | {before:.0} | {after:.0} | {:+.0} |\n", part.describe(), after - before);
    }
    report += &format!(
        "| **all CPUs' time per connection** | **{sum_untraced:.0}** | **{sum_traced:.0}** | **{:+.0}** ({:+.1} %) |\n\n",
        sum_traced - sum_untraced,
        (sum_traced / sum_untraced - 1.0) * 100.0
    );
    report += "Kernel counters per 1 000 connections (/proc/stat, /proc/interrupts; rows that moved):\n\n\
               | counter | untraced | traced |\n|---|---|---|\n";
    report += &format!(
        "| context switches | {:.0} | {:.0} |\n",
        untraced.per_thousand_connections(untraced.counters.context_switches),
        traced.per_thousand_connections(traced.counters.context_switches)
    );
    for kind in CPU_KINDS {
        let ticks = |round: &Rounds| round.per_thousand_connections(round.counters.cpu_ticks.get(kind).copied().unwrap_or(0));
        if ticks(&untraced) + ticks(&traced) > 0.0 {
            report += &format!("| CPU ticks: {kind} | {:.2} | {:.2} |\n", ticks(&untraced), ticks(&traced));
        }
    }
    for (name, count) in &traced.counters.interrupts {
        let before = untraced.per_thousand_connections(untraced.counters.interrupts.get(name).copied().unwrap_or(0));
        let after = traced.per_thousand_connections(*count);
        if before.max(after) >= 0.5 {
            report += &format!("| interrupts: {name} | {before:.1} | {after:.1} |\n");
        }
    }
    let mut leaves: Vec<_> = traced.samples.tracer_leaves.iter().collect();
    leaves.sort_by(|a, b| b.1.cmp(a.1));
    report += "\nThe tracer's process, by the function each sample was in (the ten largest):\n\n\
               | function | ns per connection |\n|---|---|\n";
    for (function, samples) in leaves.into_iter().take(10) {
        report += &format!("| `{function}` | {:.0} |\n", traced.share(*samples));
    }
    Ok(report + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "    0 \n\tffffffff821f4dab pv_native_safe_halt\n\tffffffff813c59a6 do_idle\n\n\
                          \x20  42 \n\tffffffffa0001234 bpf_prog_6deef7357e7b4530_btf_set_state\n\tffffffff81aaaaaa bpf_trace_run4\n\tffffffff81bbbbbb tcp_set_state\n\n\
                          \x20  42 \n\tffffffff81aaaaaa bpf_trace_run4\n\tffffffff81bbbbbb tcp_set_state\n\n\
                          \x20  42 \n\t55d0c0ffee11 churn\n\n\
                          \x20  42 \n\tffffffff81cccccc tcp_v4_connect\n\n\
                          \x20   7 \n\tffffffff81dddddd _raw_spin_unlock\n\tffffffff81eeeeee bpf_ringbuf_notify\n\tffffffff81ffffff irq_work_run\n\n\
                          \x20   7 \n\t55d0c0ffee22 tracer::decode\n\n\
                          \x20   9 \n\tffffffffa0005678 bpf_prog_aa_flush_batch\n\tffffffff81123456 bpf_test_run\n";

    #[test]
    fn each_sample_goes_to_the_first_part_its_stack_matches() {
        let mut samples = Samples::default();
        count_parts(SCRIPT, Some(7), 42, &mut samples);
        let expected = [
            (Part::HookPrograms, 1),
            (Part::FlushProgram, 1),
            (Part::HookDispatch, 1),
            (Part::Wakeups, 1),
            (Part::TracerProcess, 1),
            (Part::LoadKernel, 1),
            (Part::LoadUser, 1),
            (Part::Idle, 1),
        ];
        assert_eq!(samples.parts, expected.into_iter().collect());
        assert_eq!(samples.tracer_leaves, [("tracer::decode".to_string(), 1)].into_iter().collect());
    }
}
