//! Aggregator throughput: ring-buffer records decoded, reordered, tracked, classified and
//! aggregated into findings, on one core.
mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tracer::{
    decode::Decoder,
    filter::Filter,
    findings::{Findings, FindingsConfig},
    reorder::Reorder,
    tracker::{Tracker, TrackerConfig},
};

fn pipeline(c: &mut Criterion) {
    let records = common::stream(20_000, 50_000);
    let mut group = c.benchmark_group("aggregator");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_with_input(BenchmarkId::new("decode_track_classify", records.len()), &records, |b, records| {
        b.iter(|| {
            let mut decoder = Decoder::default();
            let mut reorder = Reorder::default();
            let mut tracker = Tracker::new(TrackerConfig::default(), Default::default());
            let mut findings = Findings::new(FindingsConfig::default());
            let filter = Filter::default();
            let mut observations = Vec::new();
            // Batches as the ring buffer would hand them over.
            for batch in records.chunks(512) {
                for record in batch {
                    if let Some(event) = decoder.decode(record) {
                        reorder.push(event);
                    }
                }
                reorder.release(batch_time(batch).saturating_sub(tracer::reorder::WINDOW_NS), |event| tracker.observe(event, &mut observations));
                tracker.settle(batch_time(batch), &mut observations);
                for observation in observations.drain(..) {
                    findings.observe(&observation, &filter, |_| None);
                }
            }
            tracker.settle(u64::MAX, &mut observations);
            observations.len()
        })
    });
    group.finish();
}

/// The timestamp of a batch's last record: the "now" of that batch.
fn batch_time(batch: &[[u8; tracer_common::WireEvent::SIZE]]) -> u64 {
    let last = batch.last().unwrap();
    u64::from_ne_bytes(last[16..24].try_into().unwrap())
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
