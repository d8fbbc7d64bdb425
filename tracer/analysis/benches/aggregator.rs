//! Aggregator throughput: ring-buffer records decoded, reordered, tracked, classified and
//! aggregated into findings, on one core.
mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tracer_analysis::{
    decode::Decoder,
    filter::Filter,
    find::{Findings, FindingsConfig},
    pipeline::Pipeline,
    track::{
        reorder::{Reorder, WINDOW_NS},
        Tracker, TrackerConfig,
    },
};

fn pipeline(c: &mut Criterion) {
    let records = common::stream(20_000, 50_000);
    let mut group = c.benchmark_group("aggregator");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_with_input(BenchmarkId::new("decode_track_classify", records.len()), &records, |b, records| {
        b.iter(|| run_pipeline(records))
    });
    group.finish();
}

/// The pipeline on a server with more clients than its tables hold: 400 000 connections from
/// as many client addresses. Each leaves a TIME_WAIT socket, so the TIME_WAIT table (131 072)
/// stays full for the last two thirds of them and every new one evicts the oldest; then each
/// ends with a RST, so the findings' table of recent resets (4 096 peers) stays full.
fn full_tables(c: &mut Criterion) {
    let mut group = c.benchmark_group("aggregator");
    group.sample_size(10);
    for (name, reset_every) in [("full_time_wait_table", 0), ("rst_from_every_client", 1)] {
        let records = common::distinct_clients_stream(400_000, 50_000, reset_every);
        let (_, evicted_time_wait, evicted_peers) = run_pipeline(&records);
        let evicted = if reset_every == 0 { evicted_time_wait } else { evicted_peers };
        assert!(evicted > 250_000, "{name}: the tables must stay full: {evicted} evicted");
        group.throughput(Throughput::Elements(records.len() as u64));
        group.bench_with_input(BenchmarkId::new(name, records.len()), &records, |b, records| b.iter(|| run_pipeline(records)));
    }
    group.finish();
}

/// Feeds `records` through a fresh pipeline as the event loop would: the connections it
/// reported, the TIME_WAIT sockets it evicted to make room, and the peers its findings did.
fn run_pipeline(records: &[[u8; tracer_common::WireEvent::SIZE]]) -> (u64, u64, u64) {
    let mut decoder = Decoder::default();
    let tracker = Tracker::new(TrackerConfig::default(), Default::default());
    let mut pipeline = Pipeline::new(Filter::default(), tracker, Findings::new(FindingsConfig::default()));
    let mut ended = 0;
    // Batches as the ring buffer would hand them over; the horizon as the event loop sets it.
    for batch in records.chunks(512) {
        for record in batch {
            if let Some(event) = decoder.decode(record) {
                pipeline.push(&event);
            }
        }
        pipeline.advance(batch_time(batch).saturating_sub(WINDOW_NS), |_, _, _| {});
        pipeline.report(|_, _, _| ended += 1);
    }
    pipeline.advance(u64::MAX, |_, _, _| {});
    pipeline.report(|_, _, _| ended += 1);
    (ended, pipeline.tracker.stats.evicted_time_wait, pipeline.findings.evicted)
}

/// The reorder stage alone, on the same stream: the cost of putting the CPUs' interleaved
/// batches back in timestamp order.
fn reorder(c: &mut Criterion) {
    let records = common::stream(20_000, 50_000);
    let mut decoder = Decoder::default();
    let events: Vec<_> = records.iter().filter_map(|record| decoder.decode(record)).collect();
    let mut group = c.benchmark_group("reorder");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_with_input(BenchmarkId::new("push_release", events.len()), &events, |b, events| {
        b.iter(|| {
            let mut reorder = Reorder::default();
            let mut released = 0_u64;
            for batch in events.chunks(512) {
                for event in batch {
                    reorder.push(event);
                }
                let now = batch.last().map_or(0, |event| event.timestamp_ns);
                reorder.release(now.saturating_sub(WINDOW_NS), |event| released += event.timestamp_ns & 1);
            }
            reorder.release(u64::MAX, |event| released += event.timestamp_ns & 1);
            released
        })
    });
    group.finish();
}

/// The timestamp of a batch's last record: the "now" of that batch.
fn batch_time(batch: &[[u8; tracer_common::WireEvent::SIZE]]) -> u64 {
    let last = batch.last().unwrap();
    u64::from_ne_bytes(last[16..24].try_into().unwrap())
}

criterion_group!(benches, pipeline, full_tables, reorder);
criterion_main!(benches);
