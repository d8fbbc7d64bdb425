//! `cargo xtask bench`: what the tracer costs the box it watches, measured in one run.
//!
//! The headline is connection churn with every CPU busy (a client and a server thread per CPU,
//! the tracer unpinned: a busy server leaves it no idle core to hide on), untraced against each
//! mode of the tracer and against bpftrace on the same hooks, in interleaved rounds with
//! bpf_stats off; then one round per mode with bpf_stats on for the kernel programs' run time;
//! the same load pinned to one CPU for comparison; where the lost throughput goes (`perf` on
//! every CPU); loss with every core saturated; socket snapshots across many namespaces. Prints
//! a Markdown report. `--quick` is the CI smoke run: short rounds, and a failure only for a
//! crash or for events lost at a modest rate — never for timing.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use serde_json::Value;

use crate::{
    load::{self, Spread},
    measure::{median, BpfStats, Bpftrace, ProgramStats, Traced, TracedRuns},
};

pub struct Options {
    pub quick: bool,
    pub tracer: std::path::PathBuf,
}

/// A way of running the tracer, compared against untraced.
struct Mode {
    title: &'static str,
    args: &'static [&'static str],
}

impl Mode {
    const fn of(title: &'static str, args: &'static [&'static str]) -> Mode {
        Mode { title, args }
    }

    /// One round of churn in this mode (the tracer already running): its rate.
    fn churn(&self, spread: Spread, seconds: f64) -> Result<f64> {
        load::churn_rate(spread, seconds)
    }
}

const MODES: [Mode; 5] = [
    Mode::of("tracer, summary mode (default: tp_btf, per-CPU batches, snapshots on, every packet hook)", &[]),
    Mode::of(
        "tracer, summary mode without the packet hooks of RST provenance, drops and idle gaps (`--skip-hook tcp_probe --skip-hook kfree_skb --skip-hook netif_receive_skb`)",
        &["--skip-hook", "tcp_probe", "--skip-hook", "kfree_skb", "--skip-hook", "netif_receive_skb"],
    ),
    Mode::of("tracer `--connections` (a JSON line per ended connection: the harness runs every mode with `--json`)", &["--connections"]),
    Mode::of("tracer `--events` (every event to userspace at once, no batches)", &["--events"]),
    Mode::of("tracer `--hook-mode tracepoint` (the classic fallback, batches)", &["--hook-mode", "tracepoint"]),
];

/// Interleaved rounds on one spread of the load: untraced, each mode, bpftrace.
struct Comparison {
    untraced: Vec<f64>,
    modes: Vec<TracedRuns>,
    bpftrace: Vec<f64>,
    startups_ms: Vec<f64>,
}

fn compare(tracer: &Path, spread: Spread, modes: &[Mode], rounds: usize, seconds: f64, with_bpftrace: bool) -> Result<Comparison> {
    let _stats = BpfStats::set(false);
    let mut comparison = Comparison {
        untraced: Vec::new(),
        modes: modes.iter().map(|_| TracedRuns::default()).collect(),
        bpftrace: Vec::new(),
        startups_ms: Vec::new(),
    };
    for _ in 0..rounds {
        comparison.untraced.push(load::churn_rate(spread, seconds)?);
        for (mode, runs) in modes.iter().zip(&mut comparison.modes) {
            let startup = runs.round(tracer, mode.args, || mode.churn(spread, seconds))?;
            comparison.startups_ms.push(startup.as_secs_f64() * 1000.0);
        }
        if with_bpftrace {
            if let Some(bpftrace) = Bpftrace::start()? {
                comparison.bpftrace.push(load::churn_rate(spread, seconds)?);
                drop(bpftrace);
            }
        }
    }
    Ok(comparison)
}

/// "median (min–max)" of per-round ratios.
pub(crate) fn spread_of(ratios: &[f64]) -> String {
    let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let high = ratios.iter().copied().fold(0.0, f64::max);
    format!("**{:.3}** ({low:.3}–{high:.3})", median(ratios))
}

/// The load of a saturation run.
#[derive(Clone, Copy, PartialEq)]
enum Saturation {
    Churn,
    Refused,
    /// Churn, with the tracer's process stopped 95 ms of every 100 (SIGSTOP/SIGCONT): a reader
    /// that cannot keep up, as one reader thread would be on a host with many more cores.
    StarvedReader,
}

/// Runs `load` on every core at once for `seconds` (bpf_stats on, to count firings). Returns
/// the load's rate, hook firings offered per second and the final summary's events.
fn saturate(tracer: &Path, seconds: f64, load: Saturation) -> Result<(f64, f64, Value)> {
    let traced = Traced::start(tracer, &[])?;
    let before = ProgramStats::read()?;
    let started = Instant::now();
    let rate = match load {
        Saturation::Refused => load::refused_rate(Spread::EveryCpu, Duration::from_secs_f64(seconds))?,
        Saturation::Churn => load::churn_rate(Spread::EveryCpu, seconds)?,
        Saturation::StarvedReader => {
            let pid = traced.pid() as i32;
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let starver = {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        // SAFETY: signalling our own child.
                        unsafe { libc::kill(pid, libc::SIGSTOP) };
                        std::thread::sleep(Duration::from_millis(95));
                        // SAFETY: as above.
                        unsafe { libc::kill(pid, libc::SIGCONT) };
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            };
            let rate = load::churn_rate(Spread::EveryCpu, seconds);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            starver.join().map_err(|_| anyhow::anyhow!("the starving thread panicked"))?;
            rate?
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let firings = ProgramStats::read()?.since(&before).firings();
    let last = traced.stop()?;
    Ok((rate, firings as f64 / elapsed, last["events"].clone()))
}

/// What the packet hooks (RST provenance, drops, idle gaps) take from churn with every CPU
/// busy: summary mode with them and without them, back to back in each round (their order
/// alternating, so neither always runs on a warmer machine), and the ratio of the pair round by
/// round; untraced alongside for scale. The criterion issues 20 and 21 set: at least 0.97.
pub fn hooks_share(tracer: &Path, rounds: usize, seconds: f64) -> Result<String> {
    let _namespace = load::Namespace::create()?;
    let _stats = BpfStats::set(false);
    let (with, without) = (&MODES[0], &MODES[1]);
    let (mut untraced, mut with_runs, mut without_runs) = (Vec::new(), TracedRuns::default(), TracedRuns::default());
    for round in 0..rounds {
        untraced.push(load::churn_rate(Spread::EveryCpu, seconds)?);
        let mut pair = [(with, &mut with_runs), (without, &mut without_runs)];
        if round % 2 == 1 {
            pair.reverse();
        }
        for (mode, runs) in pair {
            runs.round(tracer, mode.args, || mode.churn(Spread::EveryCpu, seconds))?;
        }
    }
    let mut shares: Vec<f64> = with_runs.rates.iter().zip(&without_runs.rates).map(|(with, without)| with / without).collect();
    shares.sort_by(f64::total_cmp);
    let quartile = |q: usize| shares[(shares.len() - 1) * q / 4];
    let (lost, _) = with_runs.lost_and_skipped();
    Ok(format!(
        "## The packet hooks' share of churn, every CPU busy\n\nload: {}; {rounds} rounds of {seconds} s, each: untraced, then summary \
         mode with and without `--skip-hook tcp_probe --skip-hook kfree_skb --skip-hook netif_receive_skb`, in alternating order\n\n\
         | run | conn/s (median) |\n|---|---|\n| untraced | {:.0} |\n| summary mode | {:.0} |\n| summary mode without the packet hooks | {:.0} |\n\n\
         with over without, round by round: median **{:.3}**, quartiles {:.3}–{:.3}, min–max {:.3}–{:.3}; {} of {rounds} rounds at 0.97 or \
         more; lost {lost}\n",
        Spread::EveryCpu.describe(),
        median(&untraced),
        median(&with_runs.rates),
        median(&without_runs.rates),
        median(&shares),
        quartile(1),
        quartile(3),
        shares[0],
        shares[shares.len() - 1],
        shares.iter().filter(|share| **share >= 0.97).count()
    ))
}

/// Unmeasured churn at the start of each `--against --many-clients` round: at 20 000
/// connections/s or more, enough to fill the tracer's TIME_WAIT table (131 072 tuples).
const FILL_SECONDS: f64 = 8.0;

/// This build against another one (the last commit's, built in a git worktree, say): churn
/// with every CPU busy, the two tracers back to back in each round (their order alternating),
/// and what each took per connection of the load: its process's CPU and the records it was
/// sent. How a cut to the tracer is measured on its own. With [`load::Clients::Many`], each
/// round first fills the tracer's tables, unmeasured.
pub fn against(tracer: &Path, other: &Path, args: &[&str], clients: load::Clients, rounds: usize, seconds: f64) -> Result<String> {
    let _namespace = load::Namespace::create()?;
    let _stats = BpfStats::set(false);
    // Per build: each round's conn/s, tracer CPU ns per connection, records per connection.
    let mut runs: [Vec<(f64, f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let mut order = [(0, tracer), (1, other)];
        if round % 2 == 1 {
            order.reverse();
        }
        for (build, binary) in order {
            let traced = Traced::start(binary, args)?;
            let churn = |seconds| load::churn_amount(Spread::EveryCpu, clients, load::Amount::Time(Duration::from_secs_f64(seconds)));
            let filled = if clients == load::Clients::Many { churn(FILL_SECONDS)? * FILL_SECONDS } else { 0.0 };
            let before = traced.cpu_ns();
            let rate = churn(seconds)?;
            let cpu_ns = traced.cpu_ns() - before;
            let last = traced.stop()?;
            let connections = (rate * seconds).max(1.0);
            // Records over the tracer's whole life, the unmeasured connections in.
            let records = last["events"]["seen"].as_f64().unwrap_or(f64::NAN);
            runs[build].push((rate, cpu_ns as f64 / connections, records / (connections + filled)));
        }
    }
    let column = |build: usize, pick: fn(&(f64, f64, f64)) -> f64| {
        let values: Vec<f64> = runs[build].iter().map(pick).collect();
        let rounds: Vec<String> = values.iter().map(|value| format!("{value:.0}")).collect();
        (median(&values), rounds.join(" "))
    };
    let mut table = String::from(
        "| build | conn/s: median (rounds) | tracer CPU ns per connection: median (rounds) | records per connection |\n|---|---|---|---|\n",
    );
    for (build, binary) in [(0, tracer), (1, other)] {
        let (rate, rates) = column(build, |run| run.0);
        let (cpu, cpus) = column(build, |run| run.1);
        let records = median(&runs[build].iter().map(|run| run.2).collect::<Vec<_>>());
        table += &format!("| `{}` | {rate:.0} ({rates}) | **{cpu:.0}** ({cpus}) | {records:.2} |\n", binary.display());
    }
    Ok(format!(
        "## This build against another, churn with every CPU busy\n\nload: {}{}; {rounds} rounds of {seconds} s, the two tracers back to \
         back in each (alternating order), {}\n\n{table}",
        Spread::EveryCpu.describe(),
        match clients {
            load::Clients::One => String::new(),
            load::Clients::Many => format!(
                ", every connection from a client address of its own (127.0.0.0/8), after {FILL_SECONDS} s of that churn unmeasured in each round"
            ),
        },
        if args.is_empty() { "summary mode".to_string() } else { format!("`{}`", args.join(" ")) }
    ))
}

/// The churn sections of the report: every CPU busy, pinned, and where the difference goes.
pub fn churn(options: &Options) -> Result<String> {
    let (rounds, seconds) = if options.quick { (2, 2.0) } else { (5, 5.0) };
    let tracer = options.tracer.as_path();
    let _namespace = load::Namespace::create()?;
    let machine =
        format!("{} CPUs, kernel {}", load::cpus(), std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim());
    let mut report = format!(
        "# tracer bench{}\n\nmachine: {machine}; {rounds} interleaved rounds of {seconds} s\n\n",
        if options.quick { " (quick)" } else { "" }
    );

    // 1. The headline: every CPU busy, each mode and bpftrace against untraced.
    let busy = compare(tracer, Spread::EveryCpu, &MODES, rounds, seconds, true)?;
    let base = median(&busy.untraced);
    report += &format!(
        "## Churn with every CPU busy\n\nload: {} (connect, read the server's byte, close; the server writes one byte and closes first); \
         throughput with bpf_stats off; the cost columns from one more round per mode with bpf_stats on\n\n\
         untraced: {base:.0} conn/s (median)\n\n\
         | run | conn/s (median) | of untraced: median (min–max of rounds) | kernel ns per hook firing | tracer CPU ns per hook firing | lost | skipped (nested) |\n\
         |---|---|---|---|---|---|---|\n",
        Spread::EveryCpu.describe()
    );
    let mut costed: Vec<TracedRuns> = MODES.iter().map(|_| TracedRuns::default()).collect();
    {
        let _stats = BpfStats::set(true);
        for (mode, runs) in MODES.iter().zip(&mut costed) {
            runs.round(tracer, mode.args, || mode.churn(Spread::EveryCpu, seconds))?;
        }
    }
    for ((mode, runs), costed) in MODES.iter().zip(&busy.modes).zip(&costed) {
        let (kernel_ns, _) = costed.kernel_ns_per_firing();
        let (lost, skipped) = runs.lost_and_skipped();
        let (costed_lost, costed_skipped) = costed.lost_and_skipped();
        report += &format!(
            "| {} | {:.0} | {} | {kernel_ns:.0} | {:.0} | {} | {} |\n",
            mode.title,
            median(&runs.rates),
            spread_of(&runs.ratios(&busy.untraced)),
            costed.tracer_ns_per_firing(),
            lost + costed_lost,
            skipped + costed_skipped
        );
    }
    if busy.bpftrace.is_empty() {
        report += "| bpftrace | not installed (apt install bpftrace) | | | | | |\n";
    } else {
        let ratios: Vec<f64> = busy.bpftrace.iter().zip(&busy.untraced).map(|(traced, untraced)| traced / untraced).collect();
        report += &format!(
            "| bpftrace, same tracepoints, `printf` per event | {:.0} | {} | | | | |\n",
            median(&busy.bpftrace),
            spread_of(&ratios)
        );
    }
    // Rounds are interleaved, so each round's pair saw the same moment of the machine.
    let hooks_share: Vec<f64> = busy.modes[0].rates.iter().zip(&busy.modes[1].rates).map(|(with, without)| with / without).collect();
    report += &format!("\nthe packet hooks' share: summary mode over the same without them, round by round: {}\n", spread_of(&hooks_share));
    let (_, firings) = costed[0].kernel_ns_per_firing();
    report += &format!("\n{}\n\nsummary mode, per program ({firings} hook firings):\n\n{}\n", costed[0].hooks(), costed[0].program_table());
    report += &format!("start-up (launch → all programs attached): median {:.0} ms\n\n", median(&busy.startups_ms));

    // 2. The same load pinned to one CPU, as measured before: the other CPU is the tracer's.
    let pinned = compare(tracer, Spread::Pinned(0), &MODES[..1], rounds, seconds, false)?;
    report += &format!(
        "## Churn pinned to CPU 0 (for comparison: the tracer has CPU 1 to itself)\n\nload: {}; untraced {:.0} conn/s, summary mode {}\n\n",
        Spread::Pinned(0).describe(),
        median(&pinned.untraced),
        spread_of(&pinned.modes[0].ratios(&pinned.untraced))
    );

    // 3. Where the difference goes.
    report += &crate::accounting::run(tracer, rounds.min(3), seconds)?;
    Ok(report)
}

/// Loss at a modest rate (the gate), loss with every core saturated, and socket snapshots
/// across many namespaces.
pub fn load_limits(options: &Options) -> Result<String> {
    let (seconds, saturated_seconds) = if options.quick { (2.0, 5.0) } else { (5.0, 30.0) };
    let tracer = options.tracer.as_path();
    let _namespace = load::Namespace::create()?;
    let mut report = String::new();

    // The correctness gate: at a modest rate nothing may be lost.
    let traced = Traced::start(tracer, &[])?;
    let rate = load::churn_amount(Spread::Pinned(0), load::Clients::One, load::Amount::Paced(2_000, Duration::from_secs_f64(seconds)))?;
    let last = traced.stop()?;
    let lost = last["events"]["lost"].as_u64().unwrap_or(u64::MAX);
    report += &format!("modest rate ({rate:.0} conn/s, about {:.0} events/s): {lost} lost\n\n", rate * 10.0);
    if lost > 0 {
        println!("{report}");
        bail!("the tracer lost {lost} events at a modest rate: {}", last["events"]);
    }

    // 4. Every core saturated, default ring buffer: churn, then refused connects (more firings).
    let untraced = load::churn_rate(Spread::EveryCpu, saturated_seconds)?;
    report += &format!(
        "## Every core saturated ({saturated_seconds} s each, default ring buffer, summary mode)\n\n\
         untraced churn on every core just before: {untraced:.0} conn/s\n\n\
         | load | load's rate (of untraced churn) | hook firings/s offered | seen | lost | skipped (nested) |\n|---|---|---|---|---|---|\n"
    );
    {
        let _stats = BpfStats::set(true);
        for (name, load) in [
            ("churn on every core", Saturation::Churn),
            ("refused connects on every core", Saturation::Refused),
            ("churn on every core, the reader starved (tracer stopped 95 ms of every 100)", Saturation::StarvedReader),
        ] {
            let (rate, offered, events) = saturate(tracer, saturated_seconds, load)?;
            let of_untraced = if load == Saturation::Refused { "attempts".to_string() } else { format!("{:.3}", rate / untraced) };
            report += &format!(
                "| {name} | {rate:.0} ({of_untraced}) | {offered:.0} | {} | {} | {} |\n",
                events["seen"], events["lost"], events["skipped"]
            );
        }
    }

    // 5. Socket snapshots with many namespaces.
    report += "\n";
    report += &crate::snapshot_bench::run(tracer, options.quick)?;
    Ok(report)
}
