//! The producer's metrics through the `metrics` facade (a debugging recorder installed for this
//! test binary) and its windowed view, at each level and granularity.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::BTreeMap;
use std::time::Duration;

use kpl::time::Clock;
use kpl::{
    Config, KinesisProducer, Metric, MetricsGranularity, MetricsLevel, Record, Stream, TokioClock,
};
use kpl_sim::{SimKinesis, SimTransport};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

const RECORDS: usize = 1_000;

/// Sends `RECORDS` records to a two-shard simulated stream through a producer with `level` and
/// `granularity`, whose series carry the dimension `run` = `name`; waits for every outcome and
/// for the metrics of that time to be taken.
async fn run(name: &str, level: MetricsLevel, granularity: MetricsGranularity) -> KinesisProducer {
    let mut config = Config::default();
    config.metrics_level = level;
    config.metrics_granularity = granularity;
    config.add_metrics_dimension("run", name, MetricsGranularity::Global);
    let mut sim = SimKinesis::new(7);
    sim.create_stream("orders", 2, TokioClock.now());
    let producer = KinesisProducer::builder()
        .config(config)
        .transport(SimTransport::new(sim, TokioClock))
        .build()
        .unwrap();
    let stream = Stream::new("orders").unwrap();
    let mut deliveries = Vec::new();
    for n in 0..RECORDS {
        let record = Record::new(stream.clone(), format!("key-{n}"), vec![3; 100]);
        deliveries.push(producer.send_wait(record).await.unwrap());
    }
    producer.flush_and_wait().await;
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    // The producer takes its metrics every second.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    producer
}

/// A recorded value: the metric's name, its labels, the value.
type Recorded = (String, Vec<(String, String)>, DebugValue);

/// Counter values by (name, labels without `run`), for the series of run `name`.
type Counters = BTreeMap<(String, Vec<(String, String)>), u64>;

fn counters_of(snapshot: &[Recorded], name: &str) -> Counters {
    let mut counters = Counters::new();
    for (metric, labels, value) in snapshot {
        if !labels.contains(&("run".to_owned(), name.to_owned())) {
            continue;
        }
        let DebugValue::Counter(value) = value else {
            continue;
        };
        let labels: Vec<(String, String)> =
            labels.iter().filter(|(k, _)| k != "run").cloned().collect();
        *counters.entry((metric.clone(), labels)).or_default() += value;
    }
    counters
}

fn total(counters: &Counters, name: &str) -> Option<u64> {
    let values: Vec<u64> = counters
        .iter()
        .filter(|((metric, _), _)| metric == name)
        .map(|(_, &value)| value)
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[tokio::test(start_paused = true)]
async fn every_level_and_granularity_reports_what_it_should_through_the_metrics_facade() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let detailed = run(
        "detailed-shard",
        MetricsLevel::Detailed,
        MetricsGranularity::Shard,
    )
    .await;
    let summary = run(
        "summary-stream",
        MetricsLevel::Summary,
        MetricsGranularity::Stream,
    )
    .await;
    let global = run(
        "detailed-global",
        MetricsLevel::Detailed,
        MetricsGranularity::Global,
    )
    .await;
    let none = run("none", MetricsLevel::None, MetricsGranularity::Shard).await;

    let snapshot: Vec<Recorded> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let labels = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            (key.name().to_owned(), labels, value)
        })
        .collect();

    // Detailed, per shard: every record counted once, split over the two shards.
    let counters = counters_of(&snapshot, "detailed-shard");
    assert_eq!(
        total(&counters, "UserRecordsReceived_sum"),
        Some(RECORDS as u64)
    );
    assert_eq!(total(&counters, "UserRecordsPut_sum"), Some(RECORDS as u64));
    assert_eq!(
        total(&counters, "UserRecordsPut_count"),
        Some(RECORDS as u64)
    );
    assert_eq!(
        total(&counters, "UserRecordsDataPut_sum"),
        Some(100 * RECORDS as u64)
    );
    assert_eq!(total(&counters, "RetriesPerRecord_sum"), Some(0));
    assert_eq!(total(&counters, "ErrorsByCode_sum"), None, "no errors");
    let put_shards: Vec<&Vec<(String, String)>> = counters
        .keys()
        .filter(|(metric, _)| metric == "UserRecordsPut_sum")
        .map(|(_, labels)| labels)
        .collect();
    assert_eq!(put_shards.len(), 2, "{put_shards:?}");
    for labels in put_shards {
        assert_eq!(labels[0], ("StreamName".to_owned(), "orders".to_owned()));
        assert_eq!(labels[1].0, "ShardId");
    }

    // Summary, per stream: only the Summary metrics, without ShardId.
    let counters = counters_of(&snapshot, "summary-stream");
    assert_eq!(total(&counters, "UserRecordsPut_sum"), Some(RECORDS as u64));
    assert!(total(&counters, "BufferingTime_count").is_some());
    assert_eq!(
        total(&counters, "UserRecordsReceived_sum"),
        None,
        "a Detailed metric"
    );
    assert_eq!(
        total(&counters, "UserRecordsDataPut_sum"),
        None,
        "a Detailed metric"
    );
    assert!(
        counters
            .keys()
            .all(|(_, labels)| labels == &[("StreamName".to_owned(), "orders".to_owned())])
    );

    // Global: no stream or shard dimension at all.
    let counters = counters_of(&snapshot, "detailed-global");
    assert_eq!(total(&counters, "UserRecordsPut_sum"), Some(RECORDS as u64));
    assert!(counters.keys().all(|(_, labels)| labels.is_empty()));

    // None: nothing through the facade.
    assert!(counters_of(&snapshot, "none").is_empty());

    // The windowed view works at every level, and reports every place: two shards, the
    // stream, and the total.
    for producer in [&detailed, &summary, &global, &none] {
        let readings = producer.metrics(Some(Metric::UserRecordsPut), Duration::from_secs(60));
        assert_eq!(readings.len(), 4, "{readings:?}");
        let whole = readings
            .iter()
            .find(|r| r.stream.is_none())
            .map(|r| (r.stat.count, r.stat.sum));
        assert_eq!(whole, Some((RECORDS as u64, RECORDS as f64)));
    }
    let received = detailed.metrics(Some(Metric::UserRecordsReceived), Duration::from_secs(60));
    assert!(
        received.iter().all(|r| r.shard.is_none()),
        "a stream-level metric"
    );
    for producer in [detailed, summary, global, none] {
        producer.shutdown(Duration::from_secs(1)).await;
    }
}
