//! The producer (facade) end to end on one core: to an in-process transport that acknowledges
//! everything, and through the AWS SDK over loopback HTTP to a minimal Kinesis stub running on
//! the other core. The difference is the SDK layer's cost (serialize, sign, send, parse) per
//! user record. `cargo xtask bench` prints it.

use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use kpl_benches::{
    NullTransport, aws_transport, engine_records, even_ranges, run_blocking_threads, run_producer,
    run_producer_in_batches, user_records,
};
use kpl_engine::Stream;
use kpl_sim::http::VerifyingEndpoint;

/// Records per iteration (fewer than the other benchmarks: each iteration goes through HTTP).
const PRODUCER_RECORDS: usize = 250_000;

fn producer(c: &mut Criterion) {
    let records = user_records(PRODUCER_RECORDS, 42);
    let ranges = even_ranges(4);
    let stream = Stream::new("bench").expect("valid stream name");
    let stub = VerifyingEndpoint::start(ranges.clone()).expect("the stub starts");
    let aws = aws_transport(stub.endpoint()).expect("valid settings");

    let mut group = c.benchmark_group("producer");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(PRODUCER_RECORDS as u64));

    group.bench_function("null_transport", |b| {
        b.iter_batched(
            || engine_records(&stream, &records),
            |input| {
                assert_eq!(
                    run_producer(input, NullTransport::new(ranges.clone())),
                    PRODUCER_RECORDS
                )
            },
            BatchSize::PerIteration,
        );
    });
    group.bench_function("null_transport_batches_of_500", |b| {
        b.iter_batched(
            || engine_records(&stream, &records),
            |input| {
                let transport = NullTransport::new(ranges.clone());
                assert_eq!(
                    run_producer_in_batches(input, transport, 500),
                    PRODUCER_RECORDS
                )
            },
            BatchSize::PerIteration,
        );
    });
    for threads in [1, 4] {
        group.bench_function(format!("blocking_null_transport_{threads}_threads"), |b| {
            b.iter_batched(
                || engine_records(&stream, &records),
                |input| {
                    let transport = NullTransport::new(ranges.clone());
                    let delivered = run_blocking_threads(input, transport, threads);
                    assert_eq!(delivered, PRODUCER_RECORDS)
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.bench_function("aws_sdk_http_stub", |b| {
        b.iter_batched(
            || engine_records(&stream, &records),
            |input| assert_eq!(run_producer(input, aws.clone()), PRODUCER_RECORDS),
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, producer);
criterion_main!(benches);
