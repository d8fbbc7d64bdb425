//! `cargo xtask bench --kernel-parts`: where a state hook's nanoseconds go. The state hook is
//! built four ways, each cut short at one more part (the `cost_cut` cfg of the kernel crate:
//! the hook alone; the record built in its batch; its context and time; its process), and each way runs the
//! same churn with bpf_stats on, in interleaved rounds. Each part costs the difference between two
//! neighbouring ways. The hook alone is what bpf_stats charges for a program that does nothing:
//! its own two clock reads, the program's entry and exit.
//!
//! Then the same question in throughput, with bpf_stats off: untraced churn against every program
//! stopped at its entry (the kernel's dispatch alone), every program whole but nothing sent (so
//! the tracer's process has nothing to do), and the tracer as built. What each layer takes from
//! the load says where a target such as 0.97 of untraced can and cannot be met.
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::{
    load::{self, Spread},
    measure::{median, BpfStats, TracedRuns},
};

/// The ways, each one part more than the one before: (cfg value or the whole program, what it adds).
const WAYS: [(Option<&str>, &str); 4] = [
    (Some("hook"), "the hook alone: bpf_stats' own clock reads, the program's entry and exit, the protocol check (the other programs stop at their entry too)"),
    (Some("record"), "the record: cleared and filled in its CPU's batch (socket, addresses, namespace), the filter"),
    (
        Some("clock"),
        "its context and time: the task, whether the hook ran on its stack, then the packet's time in softirq (else `bpf_ktime_get_ns`)",
    ),
    (None, "its process, in a task's context: pid and name"),
];

/// The throughput layers: (cfg value, or the whole tracer; what runs).
const LAYERS: [(Option<&str>, &str); 3] = [
    (Some("hook"), "every program stops at its entry: the kernel's dispatch to the tracer's hooks"),
    (Some("unsent"), "every program whole, nothing sent: the kernel side, with the tracer's process idle"),
    (None, "the tracer as built (summary mode): the kernel side and its process"),
];

/// Builds a tracer binary per cut; `None` is `tracer`, the normal build.
fn binaries(tracer: &Path, cuts: &[Option<&str>]) -> Result<Vec<PathBuf>> {
    let directory = crate::workspace_root().join("target/cost-cuts");
    std::fs::create_dir_all(&directory)?;
    let mut paths = Vec::new();
    for cut in cuts {
        let Some(cut) = cut else {
            paths.push(tracer.to_path_buf());
            continue;
        };
        let path = directory.join(format!("tracer-{cut}"));
        if !paths.contains(&path) {
            let built = crate::build_with(&crate::build_ebpf_cut(Some(cut))?)?;
            std::fs::copy(&built, &path)?;
        }
        paths.push(path);
    }
    // Put the normal build back where every other command expects it.
    crate::build_all()?;
    Ok(paths)
}

pub fn run(tracer: &Path, rounds: usize, seconds: f64) -> Result<String> {
    let cuts: Vec<Option<&str>> = WAYS.iter().chain(&LAYERS).map(|(cut, _)| *cut).collect();
    let built = binaries(tracer, &cuts)?;
    let (binaries, layers) = built.split_at(WAYS.len());
    let _namespace = load::Namespace::create()?;
    let mut report = parts(binaries, rounds, seconds)?;
    // Twice the rounds, twice as long: a layer's step is a few hundredths, this machine's noise as much.
    report += &throughput(layers, 2 * rounds + 1, 2.0 * seconds)?;
    Ok(report)
}

/// The state hook's ns per run, way by way (bpf_stats on).
fn parts(binaries: &[PathBuf], rounds: usize, seconds: f64) -> Result<String> {
    let _stats = BpfStats::set(true);
    let mut runs: Vec<TracedRuns> = WAYS.iter().map(|_| TracedRuns::default()).collect();
    let mut per_run: Vec<Vec<f64>> = WAYS.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for ((binary, runs), per_run) in binaries.iter().zip(&mut runs).zip(&mut per_run) {
            let before = runs.program("btf_set_state");
            runs.round(binary, &[], || load::churn_rate(Spread::EveryCpu, seconds))?;
            let after = runs.program("btf_set_state");
            per_run.push((after.0 - before.0) as f64 / (after.1 - before.1).max(1) as f64);
        }
    }
    let least: Vec<f64> = per_run.iter().map(|ns| ns.iter().copied().fold(f64::INFINITY, f64::min)).collect();
    let mut report = format!(
        "## Where a state hook's time goes (`btf_set_state`, bpf_stats on)\n\n\
         Command: `cargo xtask bench --kernel-parts`: the hook built {} ways, each cut short one part later \
         (`--cfg cost_cut`), {rounds} interleaved rounds of {seconds} s of churn on every CPU each; ns per run, \
         each way at its least round (noise only adds).\n\n\
         | part | ns per run | the way measured, ns per run: least (median; each round) |\n|---|---|---|\n",
        WAYS.len()
    );
    for (index, ((_, part), ns)) in WAYS.iter().zip(&per_run).enumerate() {
        let previous = if index == 0 { 0.0 } else { least[index - 1] };
        let rounds: Vec<String> = ns.iter().map(|ns| format!("{ns:.0}")).collect();
        report +=
            &format!("| {part} | **{:.0}** | {:.0} ({:.0}; {}) |\n", least[index] - previous, least[index], median(ns), rounds.join(", "));
    }
    report += &format!(
        "\nA state record costs ≈ {:.0} ns beyond the hook alone, whose own time is mostly bpf_stats' two clock reads.\n\n",
        least[WAYS.len() - 1] - least[0]
    );
    Ok(report)
}

/// Churn with each layer against untraced, interleaved (bpf_stats off): what each takes.
fn throughput(layers: &[PathBuf], rounds: usize, seconds: f64) -> Result<String> {
    let _stats = BpfStats::set(false);
    let mut untraced = Vec::new();
    let mut runs: Vec<TracedRuns> = LAYERS.iter().map(|_| TracedRuns::default()).collect();
    for _ in 0..rounds {
        untraced.push(load::churn_rate(Spread::EveryCpu, seconds)?);
        for (binary, runs) in layers.iter().zip(&mut runs) {
            runs.round(binary, &[], || load::churn_rate(Spread::EveryCpu, seconds))?;
        }
    }
    let mut report = format!(
        "### What each layer takes from the load (bpf_stats off)\n\n\
         Same command: {rounds} interleaved rounds of {seconds} s of churn on every CPU; untraced \
         {:.0} connections/s (median). Each layer's rate over the untraced rate of its round.\n\n\
         | what runs | of untraced: median (min–max) | lost to this layer (median) |\n|---|---|---|\n",
        median(&untraced)
    );
    let mut previous = 1.0;
    for ((_, what), runs) in LAYERS.iter().zip(&runs) {
        let ratios = runs.ratios(&untraced);
        let ratio = median(&ratios);
        report += &format!("| {what} | {} | {:+.3} |\n", crate::bench::spread_of(&ratios), ratio - previous);
        previous = ratio;
    }
    report += "\nThe layers' medians come from different rounds, so their steps add up only roughly.\n\n";
    Ok(report)
}
