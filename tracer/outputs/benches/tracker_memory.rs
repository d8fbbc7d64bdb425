//! Peak memory of the userspace pipeline over 10 million short connections (100 million
//! events): the RSS must stay flat, because every table is bounded.
//! `cargo bench -p tracer-outputs --bench tracker_memory [-- CONNECTIONS]`; prints RSS every
//! tenth of the run. It links the analysis and the outputs it measures, nothing of the sources.
#[path = "../../analysis/benches/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use tracer_analysis::{
    decode::Decoder,
    filter::Filter,
    find::{Context, Findings, FindingsConfig, Owners},
    pipeline::Pipeline,
    track::{reorder::WINDOW_NS, Tracker, TrackerConfig},
};
use tracer_model::{clock::Clock, sockets::NamespaceSettings};
use tracer_outputs::timeline::{Page, Timeline};

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find(|line| line.starts_with(field)).and_then(|line| line.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
}

fn main() {
    let connections: u64 = std::env::args().skip(1).find_map(|arg| arg.parse().ok()).unwrap_or(10_000_000);
    let mut decoder = Decoder::default();
    let tracker = Tracker::new(TrackerConfig::default(), Default::default());
    let mut pipeline = Pipeline::new(Filter::default(), tracker, Findings::new(FindingsConfig::default()));
    let filter = Filter::default();
    let settings = |_| NamespaceSettings::DEFAULT;
    let nobody = Owners::default();
    // The timeline keeps six hours of intervals whatever the churn: it must not grow either.
    let (clock, mut timeline) = (Clock::now(), Timeline::new(None, Page::default(), Duration::from_secs(6 * 3600)));
    let spacing = 10_000; // a new connection every 10 µs of kernel time: 100 000/s
    let started = Instant::now();
    let mut events = 0u64;
    println!("connections  events        RSS KiB  peak KiB  tracked  evicted");
    for n in 0..connections {
        let at = 1_000_000_000 + n * spacing;
        for record in common::connection(n, at, 50) {
            if let Some(event) = decoder.decode(&common::bytes(&record)) {
                pipeline.push(&event);
                events += 1;
            }
        }
        if n % 64 == 63 {
            pipeline.advance(at.saturating_sub(WINDOW_NS), |_, _, _| {});
            pipeline.report(|observation, _, _| timeline.observe(&observation));
        }
        // A summary every simulated 10 s.
        if n % 1_000_000 == 999_999 {
            pipeline.expire(at);
            pipeline.report(|observation, _, _| timeline.observe(&observation));
            let picture = pipeline.conclude(&Context {
                now_ns: at,
                snapshot: None,
                settings: &settings,
                filter: &filter,
                owners: &nobody,
                links: &[],
            });
            timeline.summary(at, Duration::from_secs(10), &picture, 0, &clock);
            std::hint::black_box(timeline.render(&clock, at));
        }
        if (n + 1) % (connections / 10).max(1) == 0 {
            println!(
                "{:>11}  {events:>11}  {:>9}  {:>8}  {:>7}  {}",
                n + 1,
                rss_kib("VmRSS:"),
                rss_kib("VmHWM:"),
                pipeline.tracker.connections().count(),
                pipeline.tracker.stats.evicted_connections
            );
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("{events} events in {seconds:.1} s: {:.2} M events/s including generation", events as f64 / seconds / 1e6);
}
