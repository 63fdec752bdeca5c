//! The async producer against the simulated Kinesis, on tokio's paused clock.
#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::SimProducer;

use kpl::time::Clock;
use kpl::transport::{
    DescribeStreamSummaryRequest, ListShardsRequest, ListShardsResponse, PutRecordsRequest,
    PutRecordsResponse, StreamSummary, Transport, TransportFuture,
};
use kpl::{
    Config, DeliveryErrorKind, FailureReason, KinesisProducer, Record, SendErrorKind, Stream,
    TokioClock, TransportErrorKind,
};
use kpl_sim::{Faults, SimKinesis, SimTransport};

fn stream(name: &str) -> Stream {
    Stream::new(name).unwrap()
}

/// A producer on a simulated service with the given streams (name, shards).
fn producer_with(
    config: Config,
    streams: &[(&str, u32)],
    faults: Faults,
) -> (KinesisProducer, SimTransport) {
    SimProducer::seeded(3)
        .streams(streams)
        .faults(faults)
        .config(config)
        .build()
}

fn producer(streams: &[(&str, u32)]) -> (KinesisProducer, SimTransport) {
    producer_with(Config::default(), streams, Faults::default())
}

#[tokio::test(start_paused = true)]
async fn a_sent_record_is_delivered_where_a_consumer_reads_it() {
    let (producer, transport) = producer(&[("orders", 4)]);
    let futures: Vec<_> = (0..1_000)
        .map(|i| {
            producer
                .send(Record::new(
                    stream("orders"),
                    format!("key-{i}"),
                    format!("data-{i}"),
                ))
                .unwrap()
        })
        .collect();
    let mut deliveries = Vec::new();
    for future in futures {
        deliveries.push(future.await.unwrap());
    }
    let view = transport.with_sim(|sim| sim.kcl_view("orders"));
    assert_eq!(view.records.len(), 1_000);
    for (i, delivery) in deliveries.iter().enumerate() {
        let read = view
            .records
            .iter()
            .find(|r| r.data == format!("data-{i}").as_bytes())
            .unwrap();
        assert_eq!(&read.shard_id, delivery.shard_id());
        assert_eq!(read.sequence_number, delivery.sequence_number());
        assert_eq!(delivery.attempts().len(), 1);
    }
    assert_eq!(producer.outstanding_records(), 0);
}

#[tokio::test(start_paused = true)]
async fn flush_all_resolves_once_earlier_records_are_finished() {
    let (producer, _transport) = producer(&[("s", 2)]);
    let start = TokioClock.now();
    let futures: Vec<_> = (0..500)
        .map(|i| {
            producer
                .send(Record::new(stream("s"), format!("k{i}"), vec![1; 50]))
                .unwrap()
        })
        .collect();
    assert_eq!(producer.outstanding_records(), 500);
    assert!(producer.oldest_record_age().is_some());
    producer.flush_and_wait().await;
    assert_eq!(producer.outstanding_records(), 0);
    assert_eq!(producer.oldest_record_age(), None);
    // The flush sent at once: well before the 100 ms buffering deadline plus a round trip.
    assert!(
        TokioClock.now().saturating_duration_since(start) < Duration::from_millis(100),
        "{:?}",
        TokioClock.now().saturating_duration_since(start)
    );
    for future in futures {
        assert!(future.await.is_ok());
    }
    // With nothing outstanding it returns at once.
    producer.flush_and_wait().await;
}

#[tokio::test(start_paused = true)]
async fn concurrent_and_abandoned_flushes_all_end_once_their_records_do() {
    let (producer, _transport) = producer(&[("s", 1)]);
    let first = producer
        .send(Record::new(stream("s"), "k1", vec![1]))
        .unwrap();
    // Callers that give up waiting, then two that wait, with nothing accepted in between:
    // they share one marker.
    for _ in 0..10 {
        let gave_up = tokio::time::timeout(Duration::ZERO, producer.flush_and_wait()).await;
        assert!(gave_up.is_err());
    }
    tokio::join!(producer.flush_and_wait(), producer.flush_and_wait());
    assert_eq!(producer.outstanding_records(), 0);
    assert!(first.await.is_ok());
    // A record accepted after a flush is waited for by the next one.
    let second = producer
        .send(Record::new(stream("s"), "k2", vec![2]))
        .unwrap();
    producer.flush_and_wait().await;
    assert_eq!(producer.outstanding_records(), 0);
    assert!(second.await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn shutdown_returns_what_could_not_be_sent_by_the_deadline() {
    let faults = Faults {
        request_unavailable: 1.0,
        ..Faults::default()
    };
    let (producer, _transport) = producer_with(Config::default(), &[("s", 1)], faults);
    let futures: Vec<_> = (0..20)
        .map(|i| {
            producer
                .send(Record::new(stream("s"), format!("k{i}"), vec![i as u8]))
                .unwrap()
        })
        .collect();
    let start = TokioClock.now();
    let report = producer.shutdown(Duration::from_secs(2)).await;
    assert!(TokioClock.now().saturating_duration_since(start) >= Duration::from_secs(2));
    assert_eq!(report.unsent.len(), 20);
    let error = producer
        .send(Record::new(stream("s"), "late", vec![0]))
        .unwrap_err();
    assert_eq!(error.kind(), SendErrorKind::ShuttingDown);
    for future in futures {
        let error = future.await.unwrap_err();
        assert_eq!(error.kind(), DeliveryErrorKind::ShutDown);
        assert!(error.record().is_some(), "shutdown hands records back");
        assert!(!error.attempts().is_empty());
        assert!(error.to_string().contains("shut down"), "{error}");
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_tells_records_never_sent_from_records_whose_call_was_in_flight() {
    let mut config = Config::default();
    config.request_timeout = Duration::from_secs(600);
    config.record_ttl = Duration::from_secs(3_600);
    let (producer, transport) = slow_producer(config, 1, Duration::from_secs(300));
    // The shard map takes one slow call; then the first record's PutRecords hangs in flight.
    let first = producer
        .send(Record::new(stream("s"), "first", vec![1]))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(301)).await;
    assert_eq!(
        transport.in_flight.load(Ordering::SeqCst),
        1,
        "the put is in flight"
    );
    // The second is still being aggregated when the deadline passes: no call carried it.
    let second = producer
        .send(Record::new(stream("s"), "second", vec![2]))
        .unwrap();
    let report = producer.shutdown(Duration::ZERO).await;
    assert_eq!(report.in_flight.len(), 1);
    assert_eq!(report.in_flight[0].partition_key(), "first");
    assert_eq!(report.unsent.len(), 1);
    assert_eq!(report.unsent[0].partition_key(), "second");
    let error = first.await.unwrap_err();
    assert_eq!(error.kind(), DeliveryErrorKind::ShutDownInFlight);
    assert!(
        error.to_string().contains("may have been written"),
        "{error}"
    );
    assert!(error.record().is_some());
    let error = second.await.unwrap_err();
    assert_eq!(error.kind(), DeliveryErrorKind::ShutDown);
    assert!(error.to_string().contains("not written"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn send_works_from_a_thread_without_a_runtime_and_huge_timeouts_mean_no_limit() {
    let mut config = Config::default();
    config.user_record_timeout = Duration::from_secs(60);
    let (producer, _transport) = producer_with(config, &[("s", 1)], Faults::default());
    let sender = producer.clone();
    // A plain thread: the record's timer is made on the producer's runtime, not this thread's.
    let future = std::thread::spawn(move || {
        sender
            .send(Record::new(stream("s"), "from-a-thread", vec![1]))
            .unwrap()
    })
    .join()
    .expect("send from a plain thread does not panic");
    assert!(future.await.is_ok());
    // A timeout past what an instant can hold is no limit, not an overflow.
    let future = producer
        .send_wait_timeout(Record::new(stream("s"), "k", vec![2]), Duration::MAX)
        .await
        .unwrap();
    assert!(future.await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_large_record_waiting_for_space_is_not_starved_by_smaller_ones() {
    let mut config = Config::default();
    config.max_outstanding_bytes = 64 * 1024;
    config.max_user_record_size = 32 * 1024;
    let (producer, _transport) = producer_with(config, &[("s", 1)], Faults::default());
    let first = producer
        .send(Record::new(stream("s"), "first", vec![1; 10_000]))
        .unwrap();
    // Three copies of 15 KB (the record and its encoded copies) do not fit beside the first.
    let large = Record::new(stream("s"), "large", vec![2; 15_000]);
    assert_eq!(
        producer.send(large.clone()).unwrap_err().kind(),
        SendErrorKind::BufferFull
    );
    let waiting = producer.clone();
    let large = tokio::spawn(async move { waiting.send_wait(large).await });
    tokio::task::yield_now().await;
    assert!(!large.is_finished(), "the large record waits");
    // A small record would fit in what is left, but the large one waits first.
    let small = Record::new(stream("s"), "small", vec![3; 100]);
    let error = producer.send(small.clone()).unwrap_err();
    assert_eq!(error.kind(), SendErrorKind::BufferFull, "{error}");
    assert!(error.to_string().contains("send_wait"), "{error}");
    // Once the first is delivered, the large record goes in, then anything else may.
    first.await.unwrap();
    let large = large.await.unwrap().unwrap();
    let small = producer.send(small).unwrap();
    large.await.unwrap();
    small.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn back_pressure_refuses_then_waits_for_space() {
    let mut config = Config::default();
    config.max_outstanding_records = 10;
    let (producer, _transport) = producer_with(config, &[("s", 1)], Faults::default());
    let mut futures: Vec<_> = (0..10)
        .map(|i| {
            producer
                .send(Record::new(stream("s"), format!("k{i}"), vec![1]))
                .unwrap()
        })
        .collect();
    let record = Record::new(stream("s"), "k10", vec![1]);
    let error = producer.send(record.clone()).unwrap_err();
    assert_eq!(error.kind(), SendErrorKind::BufferFull);
    assert_eq!(error.into_record(), record);

    let waiting = producer.clone();
    let sent = tokio::spawn(async move { waiting.send_wait(record).await });
    tokio::task::yield_now().await;
    assert!(
        !sent.is_finished(),
        "send_wait waits while the buffer is full"
    );
    futures.push(sent.await.unwrap().unwrap());
    for future in futures {
        assert!(future.await.is_ok());
    }

    // With a timeout, it gives up and hands the record back.
    for i in 0..10 {
        drop(
            producer
                .send(Record::new(stream("s"), format!("again{i}"), vec![1]))
                .unwrap(),
        );
    }
    let record = Record::new(stream("s"), "late", vec![1]);
    let error = producer
        .send_wait_timeout(record.clone(), Duration::from_millis(1))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), SendErrorKind::TimedOut);
    assert_eq!(error.into_record(), record);
    // It left the queue for space: once the buffer drains, a plain send goes in.
    producer.flush_and_wait().await;
    assert!(producer.send(record).is_ok());
}

#[tokio::test(start_paused = true)]
async fn dropping_the_producer_cancels_pending_deliveries_without_blocking() {
    let faults = Faults {
        request_unavailable: 1.0,
        ..Faults::default()
    };
    let (producer, _transport) = producer_with(Config::default(), &[("s", 1)], faults);
    let future = producer
        .send(Record::new(stream("s"), "k", vec![1]))
        .unwrap();
    let clone = producer.clone();
    drop(producer);
    // A clone keeps it alive.
    assert_eq!(clone.outstanding_records(), 1);
    drop(clone);
    let error = future.await.unwrap_err();
    assert_eq!(error.kind(), DeliveryErrorKind::Cancelled);
    assert!(error.to_string().contains("dropped"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn one_producer_writes_to_several_streams() {
    let (producer, transport) = producer(&[("a", 1), ("b", 2)]);
    let a = producer
        .send(Record::new(stream("a"), "k", "to a"))
        .unwrap();
    let b = producer
        .send(Record::new(stream("b"), "k", "to b"))
        .unwrap();
    let arn = transport.with_sim(|sim| sim.stream_arn("b").unwrap().to_owned());
    let by_arn = producer
        .send(Record::new(Stream::new(arn).unwrap(), "k", "to b by arn"))
        .unwrap();
    assert!(a.await.is_ok());
    assert!(b.await.is_ok());
    assert!(by_arn.await.is_ok());
    assert_eq!(transport.with_sim(|sim| sim.kcl_view("a").records.len()), 1);
    assert_eq!(transport.with_sim(|sim| sim.kcl_view("b").records.len()), 2);
    assert_eq!(producer.stats().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn invalid_records_are_refused_with_the_record_back() {
    let (producer, _transport) = producer(&[("s", 1)]);
    let record = Record::new(stream("s"), "", vec![1]);
    let error = producer.send(record.clone()).unwrap_err();
    assert_eq!(error.kind(), SendErrorKind::InvalidRecord);
    assert!(error.to_string().contains("partition_key"), "{error}");
    assert_eq!(error.into_record(), record);
    let record = Record::new(stream("s"), "k", vec![0; 2 * 1024 * 1024]);
    let error = producer.send(record).unwrap_err();
    assert_eq!(error.kind(), SendErrorKind::TooLarge);
    let error = producer
        .send(Record::new(stream("s"), "k", vec![1]).with_explicit_hash_key("-1"))
        .unwrap_err();
    assert_eq!(error.kind(), SendErrorKind::InvalidRecord);
    assert!(error.to_string().contains("explicit_hash_key"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn failures_say_why_and_can_carry_the_record() {
    let mut config = Config::default();
    config.return_user_record_on_failure = true;
    let (producer, _transport) = producer_with(config, &[], Faults::default());
    let record = Record::new(stream("missing"), "k", vec![1]);
    let error = producer.send(record.clone()).unwrap().await.unwrap_err();
    assert_eq!(
        error.kind(),
        DeliveryErrorKind::Failed(FailureReason::Terminal(TransportErrorKind::NotFound))
    );
    assert_eq!(error.error_code(), Some("ResourceNotFoundException"));
    assert_eq!(error.record(), Some(&record));
    let text = error.to_string();
    assert!(
        text.contains("not_found") && text.contains("ResourceNotFoundException"),
        "{text}"
    );
    // The last attempt's error is the error's source, for error reporters that walk the chain.
    let source = std::error::Error::source(&error).map(ToString::to_string);
    assert!(
        source.is_some_and(|source| source.starts_with("ResourceNotFoundException: ")),
        "{error:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn user_record_timeout_stops_waiting_but_not_the_record() {
    let mut config = Config::default();
    config.user_record_timeout = Duration::from_millis(500);
    let faults = Faults {
        request_unavailable: 1.0,
        ..Faults::default()
    };
    let (producer, _transport) = producer_with(config, &[("s", 1)], faults);
    let error = producer
        .send(Record::new(stream("s"), "k", vec![1]))
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), DeliveryErrorKind::TimedOut);
    assert_eq!(
        producer.outstanding_records(),
        1,
        "the producer keeps trying"
    );
}

/// The simulator with a round-trip time, counting how many calls are in flight at once.
#[derive(Debug, Clone)]
struct SlowTransport {
    inner: SimTransport,
    latency: Duration,
    in_flight: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
}

impl SlowTransport {
    fn delayed<T: Send + 'static>(&self, call: TransportFuture<T>) -> TransportFuture<T> {
        let (latency, in_flight, most) = (
            self.latency,
            self.in_flight.clone(),
            self.most_in_flight.clone(),
        );
        TransportFuture::new(async move {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(latency).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            call.await
        })
    }
}

impl Transport for SlowTransport {
    fn put_records(&self, request: PutRecordsRequest) -> TransportFuture<PutRecordsResponse> {
        self.delayed(self.inner.put_records(request))
    }
    fn list_shards(&self, request: ListShardsRequest) -> TransportFuture<ListShardsResponse> {
        self.delayed(self.inner.list_shards(request))
    }
    fn describe_stream_summary(
        &self,
        request: DescribeStreamSummaryRequest,
    ) -> TransportFuture<StreamSummary> {
        self.delayed(self.inner.describe_stream_summary(request))
    }
}

/// A producer on a simulated stream `s` of `shards` shards, every call taking `latency`.
fn slow_producer(
    config: Config,
    shards: u32,
    latency: Duration,
) -> (KinesisProducer, SlowTransport) {
    let mut sim = SimKinesis::new(3);
    sim.create_stream("s", shards, TokioClock.now());
    let transport = SlowTransport {
        inner: SimTransport::new(sim, TokioClock),
        latency,
        in_flight: Arc::default(),
        most_in_flight: Arc::default(),
    };
    let producer = KinesisProducer::builder()
        .config(config)
        .transport(transport.clone())
        .build()
        .unwrap();
    (producer, transport)
}

async fn most_calls_in_flight(max_connections: u64) -> usize {
    let mut config = Config::default();
    config.max_connections = max_connections;
    config.collection_max_count = 1;
    config.aggregation_enabled = false;
    let (producer, transport) = slow_producer(config, 4, Duration::from_millis(20));
    let futures: Vec<_> = (0..40)
        .map(|i| {
            producer
                .send(Record::new(stream("s"), format!("k{i}"), vec![1]))
                .unwrap()
        })
        .collect();
    for future in futures {
        future.await.unwrap();
    }
    transport.most_in_flight.load(Ordering::SeqCst)
}

#[tokio::test(start_paused = true)]
async fn max_connections_bounds_the_calls_in_flight() {
    assert_eq!(most_calls_in_flight(2).await, 2);
    assert!(most_calls_in_flight(24).await > 2);
}

#[tokio::test(start_paused = true)]
async fn request_timeout_ends_a_hung_call_and_the_record_is_retried() {
    let mut config = Config::default();
    config.request_timeout = Duration::from_millis(200);
    let (producer, _transport) = slow_producer(config, 1, Duration::from_millis(500));
    let future = producer
        .send(Record::new(stream("s"), "k", vec![1]))
        .unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(5), future).await;
    // Every call takes longer than the timeout, so no outcome comes while the test waits; the
    // statistics show the calls were cut at the timeout and classified.
    assert!(
        waited.is_err(),
        "no call can finish within the request timeout"
    );
    let stats = producer.stats();
    let timeouts = stats[0]
        .1
        .errors_by_code
        .get("RequestTimeout")
        .copied()
        .unwrap_or(0);
    assert!(timeouts >= 2, "{timeouts} timed-out calls");
}

#[test]
fn build_needs_a_runtime_and_a_transport() {
    // The probes' panics reach no hook of the application's (a crash reporter would record
    // them): this one counts the panics of this thread, and passes the others on.
    let reported = Arc::new(AtomicUsize::new(0));
    let this_thread = std::thread::current().id();
    let previous = std::panic::take_hook();
    let counted = Arc::clone(&reported);
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() == this_thread {
            counted.fetch_add(1, Ordering::SeqCst);
        } else {
            previous(info);
        }
    }));
    build_is_refused_where_it_cannot_run();
    drop(std::panic::take_hook());
    assert_eq!(reported.load(Ordering::SeqCst), 0);
}

fn build_is_refused_where_it_cannot_run() {
    let error = KinesisProducer::builder()
        .transport(SimTransport::new(SimKinesis::new(1), TokioClock))
        .build()
        .unwrap_err();
    assert!(matches!(error, kpl::BuildError::NoRuntime));
    let no_timers = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    {
        let _entered = no_timers.enter();
        let error = KinesisProducer::builder()
            .transport(SimTransport::new(SimKinesis::new(1), TokioClock))
            .build()
            .unwrap_err();
        assert!(matches!(error, kpl::BuildError::RuntimeWithoutTimers));
        assert!(error.to_string().contains("enable_time"), "{error}");
    }
    #[cfg(feature = "aws")]
    {
        // The AWS transport needs the IO driver as well.
        let no_io = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _entered = no_io.enter();
        let mut config = Config::default();
        config.region = "us-east-1".into();
        let error = KinesisProducer::builder()
            .config(config)
            .build()
            .unwrap_err();
        assert!(
            matches!(error, kpl::BuildError::RuntimeWithoutIo),
            "{error}"
        );
        assert!(error.to_string().contains("enable_io"), "{error}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    #[cfg(not(feature = "aws"))]
    {
        let error = KinesisProducer::builder().build().unwrap_err();
        assert!(matches!(error, kpl::BuildError::NoTransport));
    }
    #[cfg(feature = "aws")]
    {
        // The AWS transport is the default; it loads the SDK configuration on first use.
        let mut config = Config::default();
        config.region = "us-east-1".into();
        assert!(KinesisProducer::builder().config(config).build().is_ok());
        let mut config = Config::default();
        config.region = "us-east-1".into();
        config.ca_cert_file = "ca.pem".into();
        config.ca_cert_path = "certificates".into();
        let error = KinesisProducer::builder()
            .config(config)
            .build()
            .unwrap_err();
        assert!(matches!(&error, kpl::BuildError::UnsupportedSetting(source)
                if matches!(source.downcast_ref(), Some(kpl::AwsSettingsError::CustomCa(_)))));
    }
    let mut config = Config::default();
    config.rate_limit = 0;
    let error = KinesisProducer::builder()
        .config(config)
        .transport(SimTransport::new(SimKinesis::new(1), TokioClock))
        .build()
        .unwrap_err();
    assert!(matches!(error, kpl::BuildError::Config(ref e) if e.key() == Some("RateLimit")));
}

#[test]
fn a_runtime_shutting_down_under_the_producer_cancels_pending_deliveries() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let faults = Faults {
        request_unavailable: 1.0,
        ..Faults::default()
    };
    let (producer, future) = runtime.block_on(async {
        let (producer, _transport) = producer_with(Config::default(), &[("s", 1)], faults);
        let future = producer
            .send(Record::new(stream("s"), "k", vec![1]))
            .unwrap();
        tokio::task::yield_now().await;
        (producer, future)
    });
    drop(runtime);
    // The driver is gone with its runtime: the producer refuses records, the future is cancelled.
    let error = producer
        .send(Record::new(stream("s"), "k2", vec![1]))
        .unwrap_err();
    assert_eq!(error.kind(), SendErrorKind::ShuttingDown);
    assert_eq!(
        producer.outstanding_records(),
        0,
        "nothing can finish them any more"
    );
    assert_eq!(producer.oldest_record_age(), None);
    let other = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = other.block_on(future).unwrap_err();
    assert_eq!(outcome.kind(), DeliveryErrorKind::Cancelled);
}
