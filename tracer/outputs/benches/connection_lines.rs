//! `--connections`: what writing one line per ended connection costs the reader thread, human
//! and JSON, for a mix of endpoints, durations and sizes (criterion).
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tracer_analysis::track::{FirstFin, Role};
use tracer_outputs::connections::ConnectionLine;

/// Lines as a busy server ends them: IPv4 endpoints of every width, sub-millisecond to
/// minute-long phases, a few bytes to megabytes, most graceful, some reset.
fn lines(count: u32) -> Vec<ConnectionLine> {
    (0..count)
        .map(|n| {
            let spread = f64::from(n % 97);
            ConnectionLine {
                ts: format!("2026-11-27T07:{:02}:{:02}.{:06}Z", n / 60 % 60, n % 60, n * 7 % 1_000_000),
                netns: 4026531840,
                pid: (n % 3 == 0).then_some(4242),
                comm: (n % 3 == 0).then(|| "nginx".to_string()),
                role: if n % 2 == 0 { Role::Server } else { Role::Client },
                local: format!("10.{}.{}.{}:{}", n % 256, n / 7 % 256, n / 3 % 256, if n % 2 == 0 { 443 } else { 32768 + n % 28000 })
                    .parse()
                    .unwrap(),
                remote: format!("192.168.{}.{}:{}", n % 9, n % 250, if n % 2 == 0 { 32768 + n % 28000 } else { 8080 }).parse().unwrap(),
                close: if n % 10 == 0 { "reset_by_peer" } else { "graceful" },
                detail: "".into(),
                silent_cause: None,
                first_fin: Some(if n % 2 == 0 { FirstFin::Us } else { FirstFin::Peer }),
                rst: (n % 10 == 0).then_some("received"),
                rst_reason: None,
                icmp_from: None,
                icmp_hops: None,
                rst_from: (n % 10 == 0).then_some("peer"),
                rst_hops: (n % 10 == 0).then_some(2),
                peer_hops: (n % 10 == 0).then_some(2),
                rst_segment: None,
                peer_segment: None,
                idle_before_ms: None,
                refused_rsts: 0,
                dropped_in: 0,
                dropped_out: 0,
                drop_reasons: Vec::new(),
                handshake_ms: Some(0.031 + spread / 40.0),
                established_ms: Some(spread * spread * 7.3),
                closing_ms: Some(0.012 * spread),
                duration_ms: Some(spread * spread * 7.3 + 1.0),
                syn_retransmits: 0,
                retransmits: n % 5,
                bytes_sent: Some(u64::from(n) * 977 % 5_000_000),
                bytes_received: Some(u64::from(n % 700)),
                error: None,
            }
        })
        .collect()
}

fn connection_lines(c: &mut Criterion) {
    let lines = lines(10_000);
    let mut group = c.benchmark_group("connection_lines");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function("human", |b| b.iter(|| lines.iter().map(|line| line.human().len()).sum::<usize>()));
    group.bench_function("json", |b| b.iter(|| lines.iter().map(|line| line.json().len()).sum::<usize>()));
    group.finish();
}

criterion_group!(benches, connection_lines);
criterion_main!(benches);
