//! Aggregation encode and decode throughput, with a same-run baseline (MD5 + memcpy of the same
//! bytes) so the ratio is meaningful on a noisy machine. `cargo xtask bench` prints the ratios.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use kpl_aggregation::{
    Aggregator, HashKey, KinesisRecord, deaggregate, deaggregate_borrowed,
    deaggregate_many_borrowed,
};
use kpl_benches::{RECORDS, aggregate_all, aggregate_each, md5_and_memcpy, user_records};

/// A decoder, as the number of user records it reads out of a Kinesis record.
type RecordsIn = fn(&KinesisRecord) -> usize;

fn aggregation(c: &mut Criterion) {
    let records = user_records(RECORDS, 42);
    let aggregates = aggregate_all(&mut Aggregator::default(), &records);

    let mut group = c.benchmark_group("aggregation");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6))
        .throughput(Throughput::Elements(RECORDS as u64));

    group.bench_function("baseline_md5_memcpy", |b| {
        let mut scratch = Vec::with_capacity(64 * 1024);
        b.iter(|| black_box(md5_and_memcpy(black_box(&aggregates), &mut scratch)));
    });

    group.bench_function("encode", |b| {
        let mut aggregator = Aggregator::default();
        b.iter(|| {
            // Each aggregate is dropped as soon as it is made, as a producer sends it on: the
            // allocator then reuses its memory, as in a long-running process.
            let mut bytes = 0;
            aggregate_each(&mut aggregator, black_box(&records), |record| {
                bytes += black_box(record).data().len();
            });
            bytes
        });
    });

    // Each decoder over every aggregate, one Kinesis record at a time.
    let decoders: [(&str, RecordsIn); 2] = [
        ("decode", |record| deaggregate(record).len()),
        ("decode_borrowed", |record| {
            deaggregate_borrowed(record).len()
        }),
    ];
    for (name, decode) in decoders {
        group.bench_function(name, |b| {
            b.iter(|| {
                let count: usize = aggregates.iter().map(|r| decode(black_box(r))).sum();
                assert_eq!(count, RECORDS);
            });
        });
    }
    // As a consumer reads a `GetRecords` batch: about 5 MB of aggregates at once.
    group.bench_function("decode_many_borrowed", |b| {
        b.iter(|| {
            let mut count = 0;
            for batch in aggregates.chunks(100) {
                count += deaggregate_many_borrowed(black_box(batch))
                    .iter()
                    .map(Vec::len)
                    .sum::<usize>();
            }
            assert_eq!(count, RECORDS);
        });
    });
    // Hash keys of the partition keys: one MD5 at a time, and several side by side.
    let keys: Vec<&str> = records.iter().map(|r| r.partition_key().as_str()).collect();
    group.bench_function("hash_keys_one_at_a_time", |b| {
        b.iter(|| {
            keys.iter()
                .map(|key| HashKey::from_partition_key(black_box(key)).get() as u64)
                .fold(0u64, u64::wrapping_add)
        });
    });
    group.bench_function("hash_keys_side_by_side", |b| {
        b.iter(|| {
            keys.chunks(500)
                .flat_map(|chunk| HashKey::from_partition_keys(black_box(chunk)))
                .map(|key| key.get() as u64)
                .fold(0u64, u64::wrapping_add)
        });
    });
    group.finish();
}

criterion_group!(benches, aggregation);
criterion_main!(benches);
