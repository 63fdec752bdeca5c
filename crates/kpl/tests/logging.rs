//! The producer's log events are emitted outside its lock: a `tracing` subscriber may use the
//! producer it observes (an application that ships its own logs to Kinesis) without a deadlock.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::Duration;

use kpl::time::Clock;
use kpl::{Config, KinesisProducer, Record, Stream, TokioClock};
use kpl_sim::{SimKinesis, SimTransport};
use tracing::span::{Attributes, Id, Record as SpanRecord};
use tracing::{Event, Metadata, Subscriber};

/// A subscriber that, on every event, asks the producer for its statistics (which takes the
/// producer's lock).
struct UsesTheProducer {
    producer: Arc<OnceLock<KinesisProducer>>,
    events: Arc<AtomicUsize>,
}

impl Subscriber for UsesTheProducer {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &SpanRecord<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {
        if let Some(producer) = self.producer.get() {
            let _ = producer.stats();
            let _ = producer.outstanding_records();
            let _ = producer.metrics_exports();
        }
        self.events.fetch_add(1, Ordering::SeqCst);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn a_subscriber_that_uses_the_producer_does_not_deadlock_it() {
    let producer_slot: Arc<OnceLock<KinesisProducer>> = Arc::default();
    let events = Arc::new(AtomicUsize::new(0));
    let subscriber = UsesTheProducer {
        producer: producer_slot.clone(),
        events: events.clone(),
    };
    let (done, finished) = mpsc::channel();
    // On a thread of its own, so that a deadlock fails this test instead of hanging it.
    std::thread::spawn(move || {
        let _default = tracing::subscriber::set_default(subscriber);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut sim = SimKinesis::new(1);
            sim.create_stream("s", 1, TokioClock.now());
            let producer = KinesisProducer::builder()
                .config(Config::default())
                .transport(SimTransport::new(sim, TokioClock))
                .build()
                .unwrap();
            producer_slot.set(producer.clone()).ok().unwrap();
            // Failures are logged (per record, and in the periodic summary).
            let missing = Stream::new("missing").unwrap();
            for round in 0..2 {
                let futures: Vec<_> = (0..5)
                    .map(|i| {
                        producer
                            .send(Record::new(missing.clone(), format!("k{i}"), vec![round]))
                            .unwrap()
                    })
                    .collect();
                for future in futures {
                    assert!(future.await.is_err());
                }
                tokio::time::sleep(Duration::from_secs(61)).await;
            }
            producer
                .send(Record::new(Stream::new("s").unwrap(), "k", vec![1]))
                .unwrap()
                .await
                .unwrap();
            let report = producer.shutdown(Duration::from_secs(1)).await;
            assert!(report.unsent.is_empty());
        });
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(Duration::from_secs(120))
        .expect("the producer deadlocked under a subscriber that uses it");
    assert!(events.load(Ordering::SeqCst) > 0, "no event was logged");
}

/// A `metrics` recorder that, on every metric it is handed, asks the producer for its metrics
/// and how their uploads went (each takes a lock of the producer's).
struct RecorderUsingTheProducer {
    producer: Arc<OnceLock<KinesisProducer>>,
    calls: Arc<AtomicUsize>,
}

impl RecorderUsingTheProducer {
    fn use_the_producer(&self) {
        if let Some(producer) = self.producer.get() {
            let _ = producer.metrics(None, Duration::from_secs(1));
            let _ = producer.metrics_exports();
            let _ = producer.stats();
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

impl metrics::Recorder for RecorderUsingTheProducer {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        self.use_the_producer();
        metrics::Counter::noop()
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        self.use_the_producer();
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

/// Every upload fails, so that a warning is logged for each.
struct RefusingExporter;

impl kpl::MetricsExporter for RefusingExporter {
    fn export(
        &self,
        upload: kpl_engine::metrics::MetricsUpload,
    ) -> kpl_engine::metrics::ExportFuture {
        let lost = upload.data.len();
        kpl_engine::metrics::ExportFuture::new(async move {
            Err(kpl_engine::metrics::ExportError::new("refused", lost, None))
        })
    }
}

/// A recorder that reads the producer while it is handed the producer's metrics, and a
/// subscriber that reads how the uploads went while an upload's failure is logged, through a
/// run and a shutdown: the producer hands both over with no lock held, so neither deadlocks.
#[test]
fn a_recorder_and_a_subscriber_that_read_the_metrics_do_not_deadlock_the_producer() {
    let producer_slot: Arc<OnceLock<KinesisProducer>> = Arc::default();
    let events = Arc::new(AtomicUsize::new(0));
    let recorded = Arc::new(AtomicUsize::new(0));
    let subscriber = UsesTheProducer {
        producer: producer_slot.clone(),
        events: events.clone(),
    };
    let recorder = RecorderUsingTheProducer {
        producer: producer_slot.clone(),
        calls: recorded.clone(),
    };
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let _default = tracing::subscriber::set_default(subscriber);
        let _recorder = metrics::set_default_local_recorder(&recorder);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut sim = SimKinesis::new(1);
            sim.create_stream("s", 1, TokioClock.now());
            let mut config = Config::default();
            config.set("MetricsLevel", "summary").unwrap();
            config.set("MetricsUploadDelay", "1000").unwrap();
            let producer = KinesisProducer::builder()
                .config(config)
                .transport(SimTransport::new(sim, TokioClock))
                .metrics_exporter(RefusingExporter)
                .build()
                .unwrap();
            producer_slot.set(producer.clone()).ok().unwrap();
            let stream = Stream::new("s").unwrap();
            for round in 0..3u8 {
                producer
                    .send(Record::new(stream.clone(), "k", vec![round]))
                    .unwrap()
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            producer.shutdown(Duration::from_secs(1)).await;
        });
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(Duration::from_secs(120))
        .expect("the producer deadlocked under a recorder or a subscriber that reads it");
    assert!(recorded.load(Ordering::SeqCst) > 0, "nothing was recorded");
    assert!(
        events.load(Ordering::SeqCst) > 0,
        "no failed upload was logged"
    );
}
