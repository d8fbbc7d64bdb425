//! Peak memory of the userspace pipeline over 10 million short connections (100 million
//! events): the RSS must stay flat, because every table is bounded.
//! `cargo bench --bench tracker_memory [-- CONNECTIONS]`; prints RSS every tenth of the run.
mod common;

use std::time::Instant;

use tracer::{
    decode::Decoder,
    filter::Filter,
    findings::{Findings, FindingsConfig},
    reorder::Reorder,
    snapshot::NamespaceSettings,
    tracker::{Tracker, TrackerConfig},
};

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find(|line| line.starts_with(field)).and_then(|line| line.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
}

fn main() {
    let connections: u64 = std::env::args().skip(1).find_map(|arg| arg.parse().ok()).unwrap_or(10_000_000);
    let mut decoder = Decoder::default();
    let mut reorder = Reorder::default();
    let mut tracker = Tracker::new(TrackerConfig::default(), Default::default());
    let mut findings = Findings::new(FindingsConfig::default());
    let filter = Filter::default();
    let settings = |_| NamespaceSettings { ephemeral_ports: (32768, 60999), fin_timeout_s: 60 };
    let mut observations = Vec::new();
    let spacing = 10_000; // a new connection every 10 µs of kernel time: 100 000/s
    let started = Instant::now();
    let mut events = 0u64;
    println!("connections  events        RSS KiB  peak KiB  tracked  evicted");
    for n in 0..connections {
        let at = 1_000_000_000 + n * spacing;
        for record in common::connection(n, at, 50) {
            if let Some(event) = decoder.decode(&common::bytes(&record)) {
                reorder.push(event);
                events += 1;
            }
        }
        if n % 64 == 63 {
            reorder.release(at.saturating_sub(tracer::reorder::WINDOW_NS), |event| tracker.observe(event, &mut observations));
            tracker.settle(at, &mut observations);
            for observation in observations.drain(..) {
                findings.observe(&observation, &filter, |_| None);
            }
        }
        // A summary every simulated 10 s.
        if n % 1_000_000 == 999_999 {
            tracker.expire(at, &mut observations);
            let _ = findings.conclude(at, &mut tracker, None, &settings, &filter);
        }
        if (n + 1) % (connections / 10).max(1) == 0 {
            println!(
                "{:>11}  {events:>11}  {:>9}  {:>8}  {:>7}  {}",
                n + 1,
                rss_kib("VmRSS:"),
                rss_kib("VmHWM:"),
                tracker.connections().count(),
                tracker.stats.evicted_connections
            );
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("{events} events in {seconds:.1} s: {:.2} M events/s including generation", events as f64 / seconds / 1e6);
}
