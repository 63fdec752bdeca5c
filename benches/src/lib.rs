//! Workloads and baselines shared by the criterion benchmarks (`cargo xtask bench`).
//!
//! The workload is the one `shared/spec/performance.md` fixes for every measurement: user records
//! with a random 16-character `[A-Za-z0-9]` partition key and 100 random bytes of data.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kpl_aggregation::{Aggregator, HashKey, HashKeyRange, KinesisRecord, PartitionKey, UserRecord};
use kpl_engine::time::{Clock, SystemClock};
use kpl_engine::transport::{
    DescribeStreamSummaryRequest, ListShardsRequest, ListShardsResponse, PutRecordsEntryResult,
    PutRecordsRequest, PutRecordsResponse, ShardDescription, StreamSummary, TransportFuture,
};
use kpl_engine::{Engine, EngineConfig, Event, Record, Request, Response, ShardId, Stream};
use md5::{Digest, Md5};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Records in one benchmark iteration.
pub const RECORDS: usize = 1_000_000;
/// Length of each partition key, in characters.
pub const KEY_LEN: usize = 16;
/// Length of each record's data, in bytes.
pub const DATA_LEN: usize = 100;

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `count` user records of the standard workload, the same for the same `seed`.
pub fn user_records(count: usize, seed: u64) -> Vec<UserRecord> {
    workload(count, seed, |key, data| {
        let key = PartitionKey::new(key).expect("16 ASCII characters are a valid key");
        UserRecord::new(key, data)
    })
}

/// `count` records of the standard workload, each made by `make` from its partition key and its
/// data (a slice of one buffer), the same for the same `seed`.
pub fn workload<T>(count: usize, seed: u64, mut make: impl FnMut(String, Bytes) -> T) -> Vec<T> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut payload = vec![0u8; count * DATA_LEN];
    rng.fill(&mut payload[..]);
    let payload = Bytes::from(payload);
    (0..count)
        .map(|i| {
            let key: String = (0..KEY_LEN)
                .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
                .collect();
            make(key, payload.slice(i * DATA_LEN..(i + 1) * DATA_LEN))
        })
        .collect()
}

/// Aggregates `records` in order, starting a new aggregate whenever the next record does not fit,
/// and hands each finished Kinesis record to `sink` (as a producer hands it to the transport).
pub fn aggregate_each(
    aggregator: &mut Aggregator,
    records: &[UserRecord],
    mut sink: impl FnMut(KinesisRecord),
) {
    for record in records {
        aggregator.push(record).into_iter().for_each(&mut sink);
    }
    aggregator.finish().into_iter().for_each(sink);
}

/// [`aggregate_each`], collecting the Kinesis records.
pub fn aggregate_all(aggregator: &mut Aggregator, records: &[UserRecord]) -> Vec<KinesisRecord> {
    let mut out = Vec::with_capacity(records.len() / 300 + 1);
    aggregate_each(aggregator, records, |record| out.push(record));
    out
}

/// The floor for encoding: copy every aggregate's bytes once and MD5 them, nothing else.
/// Returns a value derived from all digests so the work cannot be optimised away.
pub fn md5_and_memcpy(aggregates: &[KinesisRecord], scratch: &mut Vec<u8>) -> u8 {
    let mut fold = 0u8;
    for record in aggregates {
        scratch.clear();
        scratch.extend_from_slice(record.data());
        let digest = Md5::digest(&scratch[..]);
        fold ^= digest[0];
    }
    fold
}

/// The hash ranges of `shards` shards splitting the hash key space evenly.
pub fn even_ranges(shards: u32) -> Vec<HashKeyRange> {
    let shards = u128::from(shards.max(1));
    let step = u128::MAX / shards;
    (0..shards)
        .map(|i| {
            let start = step * i;
            let end = if i + 1 == shards {
                u128::MAX
            } else {
                step * (i + 1) - 1
            };
            HashKeyRange::new(HashKey::new(start), HashKey::new(end))
                .expect("start <= end by construction")
        })
        .collect()
}

/// The engine's floor: what any shard-aware aggregating producer must do per record — MD5 of
/// the partition key, a search of the shard ranges, encoding into that shard's aggregate, and the
/// aggregate's MD5 trailer. Returns the number of Kinesis records made.
pub fn core_work_baseline(records: &[UserRecord], ranges: &[HashKeyRange]) -> usize {
    let mut aggregators: Vec<Aggregator> = ranges.iter().map(|_| Aggregator::default()).collect();
    let mut made = 0;
    for record in records {
        let hash_key = HashKey::from_partition_key(record.partition_key().as_str());
        let shard = ranges.partition_point(|range| range.end() < hash_key);
        if let Some(aggregator) = aggregators.get_mut(shard) {
            // Reading the data computes the trailer, as sending it would.
            made += aggregator
                .push(record)
                .map_or(0, |r| usize::from(!r.data().is_empty()));
        }
    }
    made + aggregators
        .iter_mut()
        .filter_map(Aggregator::finish)
        .filter(|r| !r.data().is_empty())
        .count()
}

/// The standard workload as engine input for `stream`.
pub fn engine_records(stream: &Stream, records: &[UserRecord]) -> Vec<Record> {
    records
        .iter()
        .map(|record| {
            Record::new(
                stream.clone(),
                record.partition_key().as_str(),
                record.data().clone(),
            )
        })
        .collect()
}

fn shard_name(index: usize) -> ShardId {
    ShardId::new(format!("shardId-{index:012}"))
}

/// Runs `records` through an [`Engine`] whose transport acknowledges everything at once, on the
/// shards `ranges`, in virtual time (1 µs per record). Rate limits are lifted so that only the
/// engine's own work is measured. Returns the number of records delivered.
pub fn run_engine(records: Vec<Record>, ranges: &[HashKeyRange]) -> usize {
    let mut config = EngineConfig::default();
    config.rate_limit = 100_000_000;
    let mut engine = Engine::new(config).expect("valid configuration");
    let Some(start) = records.first().map(|_| SystemClock.now()) else {
        return 0;
    };
    let mut now = start;
    let mut delivered = 0;
    let transport = NullTransport::new(ranges.to_vec());
    let serve = |engine: &mut Engine, now: Instant, delivered: &mut usize| {
        while let Some((id, request)) = engine.poll_request(now) {
            engine.handle_response(id, Ok(transport.answer(&request)), now);
        }
        while let Some(event) = engine.poll_event() {
            *delivered += usize::from(matches!(event, Event::Delivered(_)));
        }
    };
    for (i, record) in records.into_iter().enumerate() {
        if engine.submit(record, now).is_err() {
            continue;
        }
        now += Duration::from_micros(1);
        if engine.has_requests() || i % 1024 == 0 {
            engine.handle_timeout(now);
            serve(&mut engine, now, &mut delivered);
        }
    }
    engine.flush(now);
    while engine.outstanding_records() > 0 {
        serve(&mut engine, now, &mut delivered);
        match engine.poll_timeout() {
            Some(at) => {
                now = now.max(at);
                engine.handle_timeout(now);
            }
            None => break,
        }
    }
    delivered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_producer_benchmarks_deliver_every_record() {
        let records = user_records(5_000, 2);
        let stream = Stream::new("bench").expect("valid name");
        let ranges = even_ranges(4);
        let null = NullTransport::new(ranges.clone());
        assert_eq!(
            run_producer(engine_records(&stream, &records), null.clone()),
            5_000
        );
        let batched = run_producer_in_batches(engine_records(&stream, &records), null.clone(), 500);
        assert_eq!(batched, 5_000);
        let threads = run_blocking_threads(engine_records(&stream, &records), null, 4);
        assert_eq!(threads, 5_000);
        let stub = kpl_sim::http::VerifyingEndpoint::start(ranges).expect("stub starts");
        let aws = aws_transport(stub.endpoint()).expect("valid settings");
        assert_eq!(run_producer(engine_records(&stream, &records), aws), 5_000);
    }

    #[test]
    fn the_engine_benchmark_delivers_every_record() {
        let records = user_records(20_000, 1);
        let stream = Stream::new("bench").expect("valid name");
        let ranges = even_ranges(4);
        assert_eq!(
            run_engine(engine_records(&stream, &records), &ranges),
            20_000
        );
        let made = core_work_baseline(&records, &ranges);
        assert!((4..200).contains(&made), "{made}");
    }
}

pub mod scoreboard;

/// A transport that acknowledges every entry at once, each on the shard owning its hash key.
#[derive(Debug, Clone)]
pub struct NullTransport {
    ranges: std::sync::Arc<Vec<HashKeyRange>>,
    sequence: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl NullTransport {
    /// For a stream with these shard ranges.
    pub fn new(ranges: Vec<HashKeyRange>) -> Self {
        Self {
            ranges: std::sync::Arc::new(ranges),
            sequence: std::sync::Arc::default(),
        }
    }
}

impl NullTransport {
    /// The answer to any request, at once.
    pub fn answer(&self, request: &Request) -> Response {
        match request {
            Request::PutRecords(put) => Response::PutRecords(self.written(put)),
            Request::ListShards(_) => Response::ListShards(self.shards()),
            _ => Response::DescribeStreamSummary(self.summary()),
        }
    }

    fn written(&self, put: &PutRecordsRequest) -> PutRecordsResponse {
        // As a real transport must before sending: the aggregates' trailers.
        KinesisRecord::seal_all(&put.entries);
        let first = self.sequence.fetch_add(
            put.entries.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let entries = put
            .entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let hash_key = entry
                    .explicit_hash_key()
                    .unwrap_or_else(|| HashKey::from_partition_key(entry.partition_key()));
                let shard = self.ranges.partition_point(|range| range.end() < hash_key);
                PutRecordsEntryResult::Written {
                    shard_id: shard_name(shard),
                    sequence_number: (first + i as u64).to_string().into(),
                }
            })
            .collect();
        PutRecordsResponse { entries }
    }

    fn shards(&self) -> ListShardsResponse {
        let shards = self
            .ranges
            .iter()
            .enumerate()
            .map(|(index, range)| ShardDescription {
                shard_id: shard_name(index),
                hash_key_range: *range,
                open: true,
            })
            .collect();
        ListShardsResponse {
            shards,
            next_token: None,
        }
    }

    fn summary(&self) -> StreamSummary {
        StreamSummary {
            max_record_size_kib: None,
            open_shard_count: self.ranges.len() as u32,
        }
    }
}

impl kpl_engine::Transport for NullTransport {
    fn put_records(&self, request: PutRecordsRequest) -> TransportFuture<PutRecordsResponse> {
        TransportFuture::ready(Ok(self.written(&request)))
    }

    fn list_shards(&self, _: ListShardsRequest) -> TransportFuture<ListShardsResponse> {
        TransportFuture::ready(Ok(self.shards()))
    }

    fn describe_stream_summary(
        &self,
        _: DescribeStreamSummaryRequest,
    ) -> TransportFuture<StreamSummary> {
        TransportFuture::ready(Ok(self.summary()))
    }
}

/// The producer benchmarks' configuration: the defaults, with rate limits lifted (the
/// transports have no shard limits), a short buffering time and a fixed seed.
fn producer_config() -> kpl::Config {
    let mut config = kpl::Config::default();
    config.rate_limit = 100_000_000;
    config.record_max_buffered_time = Duration::from_millis(10);
    config.rng_seed = Some(1);
    config
}

/// Runs `records` through a [`kpl::KinesisProducer`] on a single-threaded runtime (one core),
/// awaiting every outcome. Rate limits are lifted. Returns the number delivered.
pub fn run_producer(records: Vec<Record>, transport: impl kpl_engine::Transport) -> usize {
    run_producer_in_batches(records, transport, 1)
}

/// [`run_producer`], handing the records over `batch` at a time (`send_all`) instead of one
/// by one (`send_wait`).
pub fn run_producer_in_batches(
    records: Vec<Record>,
    transport: impl kpl_engine::Transport,
    batch: usize,
) -> usize {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return 0;
    };
    runtime.block_on(produce(records, transport, batch))
}

/// Runs `records` through a new [`kpl::KinesisProducer`] on the current runtime, handing them
/// over one by one (`send_wait`) when `batch` is 1, else `batch` at a time (`send_all`), then
/// awaits every outcome. Returns the number delivered.
pub async fn produce(
    records: Vec<Record>,
    transport: impl kpl_engine::Transport,
    batch: usize,
) -> usize {
    let config = producer_config();
    let Ok(producer) = kpl::KinesisProducer::builder()
        .config(config)
        .transport(transport)
        .build()
    else {
        return 0;
    };
    let mut pending = Vec::with_capacity(records.len());
    if batch <= 1 {
        for record in records {
            match producer.send_wait(record).await {
                Ok(future) => pending.push(future),
                Err(_) => return 0,
            }
        }
    } else {
        let mut records = records.into_iter();
        loop {
            let chunk: Vec<Record> = records.by_ref().take(batch).collect();
            if chunk.is_empty() {
                break;
            }
            for result in producer.send_all(chunk).await {
                match result {
                    Ok(future) => pending.push(future),
                    Err(_) => return 0,
                }
            }
        }
    }
    producer.flush_and_wait().await;
    let mut delivered = 0;
    for future in pending {
        delivered += usize::from(future.await.is_ok());
    }
    delivered
}

/// Runs `records` through a [`kpl::BlockingProducer`] from `threads` application threads, each
/// sending its share one record at a time (`send_wait`), then awaits every outcome. Rate limits
/// are lifted. Returns the number delivered.
pub fn run_blocking_threads(
    records: Vec<Record>,
    transport: impl kpl_engine::Transport,
    threads: usize,
) -> usize {
    let config = producer_config();
    let Ok(producer) = kpl::BlockingProducer::builder()
        .config(config)
        .transport(transport)
        .build()
    else {
        return 0;
    };
    let share = records.len().div_ceil(threads.max(1));
    let mut shares: Vec<Vec<Record>> = Vec::new();
    let mut records = records.into_iter();
    loop {
        let chunk: Vec<Record> = records.by_ref().take(share).collect();
        if chunk.is_empty() {
            break;
        }
        shares.push(chunk);
    }
    let pending: Vec<kpl::BlockingDelivery> = std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|chunk| {
                let producer = &producer;
                scope.spawn(move || {
                    chunk
                        .into_iter()
                        .filter_map(|record| producer.send_wait(record).ok())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().unwrap_or_default())
            .collect()
    });
    producer.flush_and_wait();
    pending
        .into_iter()
        .map(|delivery| usize::from(delivery.wait().is_ok()))
        .sum()
}

/// The AWS transport to `endpoint` with static local credentials.
pub fn aws_transport(endpoint: String) -> Option<kpl_aws::AwsTransport> {
    let mut settings = kpl_aws::AwsSettings::default();
    settings.sdk.region = Some("us-east-1".to_owned());
    settings.sdk.endpoint_url = Some(endpoint);
    settings.sdk.credentials = Some(kpl::aws::Credentials::new(
        "AKIDBENCH",
        "bench-secret",
        None,
        None,
        "bench",
    ));
    kpl_aws::AwsTransport::new(settings).ok()
}
