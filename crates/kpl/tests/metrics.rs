//! The producer's metrics through the `metrics` facade (a debugging recorder installed for this
//! test binary) and its windowed view, at each level and granularity.
#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;
use support::SimProducer;

use kpl::time::Clock;
use kpl::{
    Config, KinesisProducer, Metric, MetricsGranularity, MetricsLevel, Record, Stream, TokioClock,
};
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
    let (producer, _) = SimProducer::seeded(7)
        .streams(&[("orders", 2)])
        .config(config)
        .build();
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

/// An exporter that keeps what it is given.
#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<kpl_engine::metrics::MetricsUpload>>>);

impl kpl::MetricsExporter for Capture {
    fn export(
        &self,
        upload: kpl_engine::metrics::MetricsUpload,
    ) -> kpl_engine::metrics::ExportFuture {
        let datums = upload.data.len();
        self.0.lock().unwrap().push(upload);
        kpl_engine::metrics::ExportFuture::new(async move {
            let mut report = kpl_engine::metrics::ExportReport::default();
            report.requests = 1;
            report.datums = datums;
            Ok(report)
        })
    }
}

/// An exporter whose uploads never finish.
struct Hang;

impl kpl::MetricsExporter for Hang {
    fn export(&self, _: kpl_engine::metrics::MetricsUpload) -> kpl_engine::metrics::ExportFuture {
        kpl_engine::metrics::ExportFuture::new(std::future::pending())
    }
}

fn producer_with(
    exporter: impl kpl::MetricsExporter,
    configure: impl FnOnce(&mut Config),
) -> KinesisProducer {
    let mut config = Config::default();
    config.metrics_upload_delay = Duration::from_secs(10);
    configure(&mut config);
    let sim = SimProducer::seeded(3).streams(&[("orders", 2)]);
    KinesisProducer::builder()
        .config(config)
        .transport(sim.transport())
        .metrics_exporter(exporter)
        .build()
        .unwrap()
}

async fn send_all(producer: &KinesisProducer, count: usize) {
    let stream = Stream::new("orders").unwrap();
    let mut deliveries = Vec::new();
    for n in 0..count {
        let record = Record::new(stream.clone(), format!("key-{n}"), vec![1; 50]);
        deliveries.push(producer.send_wait(record).await.unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn uploads_carry_every_place_up_to_the_granularity_every_upload_delay_and_at_shutdown() {
    let capture = Capture::default();
    let producer = producer_with(capture.clone(), |config| {
        config.metrics_level = MetricsLevel::Summary;
        config.metrics_granularity = MetricsGranularity::Stream;
        config.metrics_namespace = "Orders".to_owned();
        config.add_metrics_dimension("app", "shop", MetricsGranularity::Global);
    });
    send_all(&producer, 300).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    send_all(&producer, 200).await;
    producer.shutdown(Duration::from_secs(5)).await;

    let uploads = capture.0.lock().unwrap();
    assert_eq!(uploads.len(), 2, "one after ten seconds, one at shutdown");
    let put = |upload: &kpl_engine::metrics::MetricsUpload, with_stream: bool| {
        upload
            .data
            .iter()
            .filter(|d| d.metric == Metric::UserRecordsPut)
            .filter(|d| d.dimensions.iter().any(|(n, _)| n == "StreamName") == with_stream)
            .map(|d| (d.stat.count, d.stat.sum, d.dimensions.clone()))
            .collect::<Vec<_>>()
    };
    let app = ("app".to_owned(), "shop".to_owned());
    let stream = ("StreamName".to_owned(), "orders".to_owned());
    assert_eq!(uploads[0].namespace, "Orders");
    // The global total and the stream's, each with every record of the interval; no shard.
    assert_eq!(put(&uploads[0], false), [(300, 300.0, vec![app.clone()])]);
    assert_eq!(
        put(&uploads[0], true),
        [(300, 300.0, vec![app.clone(), stream.clone()])]
    );
    assert_eq!(put(&uploads[1], false), [(200, 200.0, vec![app.clone()])]);
    for upload in uploads.iter() {
        assert!(upload.data.iter().all(|d| d.stat.count > 0));
        assert!(
            upload
                .data
                .iter()
                .all(|d| d.metric.level() == kpl_engine::metrics::Level::Summary)
        );
        assert!(
            upload
                .data
                .iter()
                .all(|d| d.dimensions.iter().all(|(n, _)| n != "ShardId"))
        );
    }
    drop(uploads);
    let exports = producer.metrics_exports().unwrap();
    assert_eq!((exports.uploads, exports.failed_uploads), (2, 0));
}

#[tokio::test(start_paused = true)]
async fn an_exporter_that_never_answers_holds_up_neither_records_nor_shutdown() {
    let producer = producer_with(Hang, |config| {
        config.metrics_upload_delay = Duration::from_secs(2);
    });
    for _ in 0..5 {
        send_all(&producer, 100).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let started = TokioClock.now();
    let report = producer.shutdown(Duration::from_secs(5)).await;
    assert!(report.unsent.is_empty() && report.in_flight.is_empty());
    let took = TokioClock.now().saturating_duration_since(started);
    assert!(
        took <= Duration::from_millis(250),
        "shutdown waits a moment for the last upload, then leaves it to its task: {took:?}"
    );
    // Each upload was given up on after an interval's length and counted, and the next one
    // went: none piled up behind it, and the last went at shutdown beside one under way.
    let exports = producer.metrics_exports().unwrap();
    assert_eq!(exports.uploads, 0);
    assert!(exports.failed_uploads >= 4, "{exports:?}");
    assert!(exports.lost_datums > 0);
}

#[tokio::test(start_paused = true)]
async fn a_tenth_throttled_once_gives_exact_statistics_in_the_window_and_the_upload() {
    let capture = Capture::default();
    let mut config = Config::default();
    // One user record per Kinesis record and a hundred per call: the throttled call is a tenth.
    config.aggregation_enabled = false;
    config.collection_max_count = 100;
    config.metrics_upload_delay = Duration::from_secs(60);
    // No map re-read, which would take the scripted throttle for itself.
    config.shard_map_refresh_interval = Duration::from_secs(3_600);
    config.rng_seed = Some(1);
    let transport = SimProducer::seeded(11)
        .streams(&[("orders", 1)])
        .transport();
    let producer = KinesisProducer::builder()
        .config(config)
        .transport(transport.clone())
        .metrics_exporter(capture.clone())
        .build()
        .unwrap();
    let stream = Stream::new("orders").unwrap();
    // A first record reads the map, so that the next call is the first of the thousand's.
    let warm = producer
        .send(Record::new(stream.clone(), "warm", vec![0]))
        .unwrap();
    producer.flush_and_wait().await;
    warm.await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = producer.metrics(None, Duration::from_secs(60)).len();
    assert!(before > 0);
    // An upload goes with the first record's statistics; the thousand go in the last one.
    tokio::time::sleep(Duration::from_secs(60)).await;
    transport.with_sim(|sim| sim.script(kpl_sim::ScriptedFault::ThrottleAll));
    let mut deliveries = Vec::new();
    for n in 0..1_000 {
        let record = Record::new(stream.clone(), format!("key-{n}"), vec![5; 10]);
        deliveries.push(producer.send(record).unwrap());
    }
    producer.flush_and_wait().await;
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let window = producer.metrics(None, Duration::from_secs(30));
    let global = |metric: Metric, code: Option<&str>| {
        window
            .iter()
            .find(|r| r.metric == metric && r.stream.is_none() && r.error_code.as_deref() == code)
            .map(|r| (r.stat.count, r.stat.sum))
    };
    assert_eq!(global(Metric::UserRecordsPut, None), Some((1_000, 1_000.0)));
    assert_eq!(global(Metric::RetriesPerRecord, None), Some((1_000, 100.0)));
    let throttled = Some("ProvisionedThroughputExceededException");
    assert_eq!(global(Metric::ErrorsByCode, throttled), Some((100, 100.0)));
    assert_eq!(global(Metric::AllErrors, None), Some((1_100, 100.0)));
    assert_eq!(
        global(Metric::KinesisRecordsPut, None),
        Some((1_100, 1_000.0))
    );
    assert_eq!(
        global(Metric::KinesisRecordsPerPutRecordsRequest, None).map(|(_, sum)| sum),
        Some(1_100.0)
    );
    // The upload at shutdown carries the same statistics.
    producer.shutdown(Duration::from_secs(5)).await;
    let uploads = capture.0.lock().unwrap();
    let last = uploads.last().unwrap();
    let uploaded = |metric: Metric, code: Option<&str>| {
        last.data
            .iter()
            .find(|d| {
                d.metric == metric
                    && d.dimensions.iter().all(|(n, _)| n == "ErrorCode")
                    && d.dimensions
                        .iter()
                        .find(|(n, _)| n == "ErrorCode")
                        .map(|(_, v)| v.as_str())
                        == code
            })
            .map(|d| (d.stat.count, d.stat.sum))
    };
    assert_eq!(
        uploaded(Metric::UserRecordsPut, None),
        Some((1_000, 1_000.0))
    );
    assert_eq!(
        uploaded(Metric::ErrorsByCode, throttled),
        Some((100, 100.0))
    );
    assert_eq!(
        uploaded(Metric::RetriesPerRecord, None),
        Some((1_000, 100.0))
    );
}
