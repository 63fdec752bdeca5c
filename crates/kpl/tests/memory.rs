//! What `MaxOutstandingBytes` counts is the memory the producer really holds: measured with a
//! counting allocator while every record waits in a call the endpoint does not answer.
#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::sync::Arc;
use std::time::Duration;
use support::SimProducer;

use kpl::transport::{
    DescribeStreamSummaryRequest, ListShardsRequest, ListShardsResponse, PutRecordsRequest,
    PutRecordsResponse, StreamSummary, Transport, TransportFuture,
};
use kpl::{Config, KinesisProducer, Record, SendErrorKind, Stream};
use kpl_sim::SimTransport;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// Holds every `PutRecords` (as a stalled network would hold the call) until opened, counting
/// the user records it holds.
#[derive(Clone, Debug)]
struct Gate {
    inner: SimTransport,
    open: Arc<watch::Sender<bool>>,
    held: Arc<watch::Sender<usize>>,
}

impl Transport for Gate {
    fn put_records(&self, request: PutRecordsRequest) -> TransportFuture<PutRecordsResponse> {
        let records: usize = request
            .entries
            .iter()
            .map(|entry| kpl_aggregation::deaggregate(entry).len())
            .sum();
        self.held.send_modify(|held| *held += records);
        let mut open = self.open.subscribe();
        let inner = self.inner.clone();
        TransportFuture::new(async move {
            let _ = open.wait_for(|&open| open).await;
            inner.put_records(request).await
        })
    }
    fn list_shards(&self, request: ListShardsRequest) -> TransportFuture<ListShardsResponse> {
        self.inner.list_shards(request)
    }
    fn describe_stream_summary(
        &self,
        request: DescribeStreamSummaryRequest,
    ) -> TransportFuture<StreamSummary> {
        self.inner.describe_stream_summary(request)
    }
}

fn record(stream: &Stream, shape: Shape, rng: &mut SmallRng) -> Record {
    let key: String = (0..shape.key)
        .map(|_| char::from(rng.random_range(b'a'..=b'z')))
        .collect();
    let mut data = vec![0u8; shape.data];
    rng.fill(&mut data[..]);
    Record::new(stream.clone(), key, data)
}

fn heap() -> dhat::HeapStats {
    dhat::HeapStats::get()
}

/// Partition key characters and data bytes of the records sent.
#[derive(Clone, Copy, Debug)]
struct Shape {
    key: usize,
    data: usize,
}

/// Sends records of `shape` until the producer refuses, with every call held unanswered, and
/// checks the heap they take against the charge; then lets everything through.
async fn fill_while_stalled(shape: Shape, aggregation: bool, check_peak: bool) {
    const LIMIT: usize = 4 * 1024 * 1024;
    let gate = Gate {
        inner: SimProducer::seeded(9).streams(&[("s", 4)]).transport(),
        open: Arc::new(watch::channel(true).0),
        held: Arc::new(watch::channel(0).0),
    };
    let mut config = Config::default();
    config.max_outstanding_bytes = LIMIT as u64;
    config.request_timeout = Duration::from_secs(600);
    config.record_ttl = Duration::from_secs(600);
    config.aggregation_enabled = aggregation;
    // Room for every call the records go in: none is answered until all are made.
    config.max_connections = 256;
    let producer = KinesisProducer::builder()
        .config(config)
        .transport(gate.clone())
        .build()
        .unwrap();
    let stream = Stream::new("s").unwrap();
    let mut rng = SmallRng::seed_from_u64(1);
    // One record through first: the shard map and the producer's fixed structures exist.
    let first = record(&stream, shape, &mut rng);
    producer.send(first).unwrap().await.unwrap();
    gate.open.send_replace(false);
    gate.held.send_replace(0);

    let before = heap().curr_bytes;
    let mut futures = Vec::with_capacity(LIMIT / 128);
    let mut payload = 0;
    loop {
        let record = record(&stream, shape, &mut rng);
        let size = record.data().len() + record.partition_key().len();
        match producer.send(record) {
            Ok(future) => {
                futures.push(future);
                payload += size;
            }
            Err(error) => {
                assert_eq!(error.kind(), SendErrorKind::BufferFull, "{error}");
                break;
            }
        }
    }
    let accepted = futures.len();
    // Every record goes into a call that is not answered: its Kinesis record is encoded and
    // held by the transport.
    gate.held
        .subscribe()
        .wait_for(|&held| held == accepted)
        .await
        .unwrap();
    let charged = producer.outstanding_bytes();
    let stats = heap();
    let futures_vec = futures.capacity() * size_of::<kpl::DeliveryFuture>();
    let held = stats.curr_bytes - before - futures_vec;
    let peak = stats.max_bytes - before - futures_vec;
    eprintln!(
        "{shape:?}, aggregation {aggregation}: {accepted} records ({payload} bytes of keys and \
         data) under {LIMIT}: charged {charged}, {held} bytes held, {peak} at the peak; per \
         record {} charged, {} held",
        charged / accepted,
        held / accepted,
    );
    assert!(charged <= LIMIT);
    // The charge covers what the producer (and the calls it made) really hold, with a margin
    // for the few structures that grow as a whole (the table of completions, one request's
    // entry list) ...
    const SLACK: usize = 256 * 1024;
    assert!(held <= charged + SLACK, "held {held} > charged {charged}");
    if check_peak {
        assert!(peak <= LIMIT + SLACK, "peak {peak} > limit {LIMIT}");
    }
    // ... and is not so far above it that the limit wastes what it allows.
    assert!(
        held * 2 >= charged,
        "held {held} is under half of {charged}"
    );

    gate.open.send_replace(true);
    for future in futures {
        future.await.unwrap();
    }
    assert_eq!(producer.outstanding_bytes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byte_limit_counts_the_memory_records_really_take() {
    let _profiler = dhat::Profiler::builder().testing().build();
    // The peak is the process's: it is checked on the first run only.
    fill_while_stalled(Shape { key: 16, data: 100 }, true, true).await;
    fill_while_stalled(Shape { key: 1, data: 1 }, true, false).await;
    fill_while_stalled(
        Shape {
            key: 64,
            data: 4_000,
        },
        true,
        false,
    )
    .await;
    fill_while_stalled(Shape { key: 16, data: 100 }, false, false).await;
}
