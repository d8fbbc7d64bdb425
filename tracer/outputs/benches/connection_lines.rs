//! `--connections`: what writing one line per ended connection costs the reader thread, from
//! the tracker's verdict to the human or JSON text (criterion).
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tracer_analysis::{
    decode::TcpState::*,
    track::{
        fixtures::{ended, run, Script},
        Ended, TrackerConfig,
    },
};
use tracer_model::clock::Clock;
use tracer_outputs::connections::ConnectionLine;

/// The verdicts on connections as a busy server ends them: IPv4 endpoints of every width,
/// phases from microseconds to minutes, most closed by the server first, one in ten reset.
fn verdicts(count: u64) -> Vec<Ended> {
    let mut events: Vec<_> = (0..count)
        .flat_map(|n| {
            let client = format!("10.{}.{}.{}:{}", n % 256, n / 7 % 256, n / 3 % 256, 32768 + n % 28000);
            let server = Script::new(0x1000 + n, &format!("192.168.{}.{}:443", n % 9, n % 250), &client);
            let (start, lived) = (n * 1_000_000, (n % 97).pow(3) * 50_000);
            let mut events = vec![server.state(Listen, SynRecv, start), server.state(SynRecv, Established, start + 30_000 + n % 900)];
            if n % 10 == 0 {
                events.extend([server.reset_received(start + lived), server.state(Established, Close, start + lived)]);
            } else {
                events.extend([
                    server.syscall(Established, FinWait1, start + lived),
                    server.state(FinWait1, FinWait2, start + lived + 40_000),
                    server.closed(FinWait2, true, start + lived + 90_000),
                ]);
            }
            events
        })
        .collect();
    events.sort_by_key(|event| event.timestamp_ns); // as the reorder stage hands them over
    let (_, out) = run(TrackerConfig::default(), &events);
    ended(&out).into_iter().cloned().collect()
}

fn connection_lines(c: &mut Criterion) {
    let verdicts = verdicts(10_000);
    assert_eq!(verdicts.len(), 10_000, "every connection ends with a verdict");
    let clock = Clock::now();
    let line = |ended: &Ended| ConnectionLine::new(ended, &clock, |_| None, |reason| reason.to_string());
    let mut group = c.benchmark_group("connection_lines");
    group.throughput(Throughput::Elements(verdicts.len() as u64));
    group.bench_function("human", |b| b.iter(|| verdicts.iter().map(|ended| line(ended).human().len()).sum::<usize>()));
    group.bench_function("json", |b| b.iter(|| verdicts.iter().map(|ended| line(ended).json().len()).sum::<usize>()));
    group.finish();
}

criterion_group!(benches, connection_lines);
criterion_main!(benches);
