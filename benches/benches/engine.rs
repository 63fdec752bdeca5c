//! The engine alone, to a transport that acknowledges everything, next to a same-run baseline
//! of the core work every shard-aware aggregating producer must do. `cargo xtask bench` prints the
//! ratio.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use kpl_benches::{
    RECORDS, core_work_baseline, engine_records, even_ranges, run_engine, user_records,
};
use kpl_engine::Stream;

fn engine(c: &mut Criterion) {
    let records = user_records(RECORDS, 42);
    let ranges = even_ranges(4);
    let stream = Stream::new("bench").expect("valid stream name");

    let mut group = c.benchmark_group("engine");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(RECORDS as u64));

    group.bench_function("baseline_core_work", |b| {
        b.iter(|| black_box(core_work_baseline(black_box(&records), &ranges)));
    });

    group.bench_function("engine_null_transport", |b| {
        b.iter_batched(
            || engine_records(&stream, &records),
            |input| {
                let delivered = run_engine(input, &ranges);
                assert_eq!(delivered, RECORDS);
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
