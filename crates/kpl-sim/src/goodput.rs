//! Goodput scenarios: producers send a workload as fast as back-pressure lets them to a
//! simulated stream that enforces the service's per-shard limits, in virtual time, and the run
//! reports how much of the stream's capacity they used, how many entries were throttled, how
//! often records were retried, and how long records took.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kpl_engine::time::Clock;
use kpl_engine::transport::PutRecordsEntryResult;
use kpl_engine::{
    Engine, EngineConfig, Event, InvalidConfig, Record, RecordId, Request, RequestId, Response,
    Stream, TransportError,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::service::{Enforcement, SimKinesis};

/// A shard's write capacity: records per second.
pub const SHARD_RECORDS_PER_SEC: f64 = 1_000.0;
/// A shard's write capacity: bytes (data and partition keys) per second.
pub const SHARD_BYTES_PER_SEC: f64 = 1_048_576.0;

/// What each producer sends.
#[derive(Clone, Debug)]
pub struct Workload {
    /// User records per producer.
    pub records: usize,
    /// Characters of each (random) partition key.
    pub key_chars: usize,
    /// Bytes of data of each record.
    pub data_bytes: usize,
    /// Every `every`-th record is a large one instead, of `min..=max` bytes of data.
    pub large: Option<(usize, usize, usize)>,
}

/// A stream, the producers writing to it, and what they send.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Shards of the stream.
    pub shards: u32,
    /// How the stream enforces its limits.
    pub enforcement: Enforcement,
    /// The stream's record size limit in KiB (`None`: the default 1 MiB).
    pub max_record_size_kib: Option<u32>,
    /// Each producer's engine configuration (seeds differ per producer).
    pub config: EngineConfig,
    /// Producers sharing the stream.
    pub producers: usize,
    /// What each producer sends.
    pub workload: Workload,
    /// Round-trip time of a call.
    pub latency: Duration,
    /// Seed of the workload and of the engines.
    pub seed: u64,
}

impl Scenario {
    /// One producer with `config` sending `workload` to a stream of `shards` shards that
    /// enforces its limits by token buckets, with 20 ms round trips.
    pub fn new(shards: u32, config: EngineConfig, workload: Workload) -> Self {
        Self {
            shards,
            enforcement: Enforcement::TokenBucket,
            max_record_size_kib: None,
            config,
            producers: 1,
            workload,
            latency: Duration::from_millis(20),
            seed: 11,
        }
    }
}

/// One shard's share of a run, sustained: measured between the times a tenth and nine tenths
/// of what was written to the shard had been written, so that neither the full buckets of the
/// start nor the trickle of the end count.
#[derive(Clone, Debug, Default)]
pub struct ShardGoodput {
    /// Bytes (data and partition keys of Kinesis records) written per second.
    pub bytes_per_sec: f64,
    /// Kinesis records written per second.
    pub records_per_sec: f64,
}

impl ShardGoodput {
    /// The larger of the two fractions of the shard's capacity used.
    pub fn utilization(&self) -> f64 {
        (self.bytes_per_sec / SHARD_BYTES_PER_SEC).max(self.records_per_sec / SHARD_RECORDS_PER_SEC)
    }
}

/// What a run achieved.
#[derive(Clone, Debug, Default)]
pub struct GoodputReport {
    /// From the first record sent to the last one written.
    pub elapsed: Duration,
    /// Per shard, in shard order.
    pub shards: Vec<ShardGoodput>,
    /// Each producer's user records delivered per second, until its own last delivery: equal
    /// when producers of equal workloads got equal shares.
    pub producer_records_per_sec: Vec<f64>,
    /// `PutRecords` entries sent.
    pub entries_sent: u64,
    /// Entries the stream refused as over its limits.
    pub throttled_entries: u64,
    /// Attempts beyond the first, over all records.
    pub retries: u64,
    /// User records delivered and failed.
    pub delivered: usize,
    /// User records that failed.
    pub failed: usize,
    /// The 99th percentile of the time from acceptance to delivery.
    pub p99_latency: Duration,
}

impl GoodputReport {
    /// The stream's utilization: the mean over shards of each shard's utilization.
    pub fn utilization(&self) -> f64 {
        if self.shards.is_empty() {
            return 0.0;
        }
        self.shards
            .iter()
            .map(ShardGoodput::utilization)
            .sum::<f64>()
            / self.shards.len() as f64
    }

    /// The least-used shard's utilization.
    pub fn least_shard_utilization(&self) -> f64 {
        self.shards
            .iter()
            .map(ShardGoodput::utilization)
            .fold(f64::INFINITY, f64::min)
    }

    /// Throttled entries as a fraction of entries sent.
    pub fn throttled_fraction(&self) -> f64 {
        if self.entries_sent == 0 {
            return 0.0;
        }
        self.throttled_entries as f64 / self.entries_sent as f64
    }
}

struct Producer {
    engine: Engine,
    in_flight: BTreeMap<(Instant, u64), (RequestId, Result<Response, TransportError>)>,
    rng: SmallRng,
    sent: usize,
    waiting: Option<Record>,
    accepted_at: BTreeMap<RecordId, Instant>,
    latencies: Vec<Duration>,
    last_delivery: Option<Instant>,
    delivered: usize,
    failed: usize,
    retries: u64,
}

const STREAM: &str = "goodput";

/// Runs `scenario` to the end (every record delivered or failed) and reports.
pub fn run(scenario: &Scenario) -> Result<GoodputReport, InvalidConfig> {
    let start = kpl_engine::time::SystemClock.now();
    let mut sim = SimKinesis::new(scenario.seed);
    sim.create_stream(STREAM, scenario.shards, start);
    sim.set_discard_written(true);
    let _ = sim.set_enforcement(STREAM, scenario.enforcement);
    if let Some(kib) = scenario.max_record_size_kib {
        let _ = sim.set_max_record_size_kib(STREAM, kib);
    }
    let stream = Stream::new(STREAM).map_err(|e| InvalidConfig::new("stream", e, "a name"))?;
    let mut producers = Vec::with_capacity(scenario.producers);
    for n in 0..scenario.producers {
        let mut config = scenario.config.clone();
        config.rng_seed = scenario.seed.wrapping_add(n as u64);
        producers.push(Producer {
            engine: Engine::new(config)?,
            in_flight: BTreeMap::new(),
            rng: SmallRng::seed_from_u64(scenario.seed.wrapping_mul(31).wrapping_add(n as u64)),
            sent: 0,
            waiting: None,
            accepted_at: BTreeMap::new(),
            latencies: Vec::new(),
            last_delivery: None,
            delivered: 0,
            failed: 0,
            retries: 0,
        });
    }
    let mut written_by_shard: BTreeMap<String, Vec<Write>> = BTreeMap::new();
    let mut entries_sent = 0u64;
    let mut call = 0u64;
    let mut now = start;
    let workload = &scenario.workload;
    loop {
        // Producers take turns going first, so that none is favoured when both write at the
        // same instant.
        if producers.len() > 1 {
            producers.rotate_left(1);
        }
        for producer in &mut producers {
            feed(producer, workload, &stream, now);
            pump(
                producer,
                &mut sim,
                now,
                scenario.latency,
                &mut call,
                &mut entries_sent,
                &mut written_by_shard,
            );
        }
        let done = producers.iter().all(|p| {
            p.sent == workload.records
                && p.waiting.is_none()
                && p.engine.outstanding_records() == 0
                && p.in_flight.is_empty()
        });
        if done {
            break;
        }
        let next = producers
            .iter_mut()
            .filter_map(|p| {
                let answer = p.in_flight.keys().next().map(|&(at, _)| at);
                match (answer, p.engine.poll_timeout()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            })
            .min();
        let Some(next) = next else { break };
        if next > start + Duration::from_secs(3_600) {
            break;
        }
        now = now.max(next);
        for producer in &mut producers {
            while let Some(entry) = producer.in_flight.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let (id, result) = entry.remove();
                producer.engine.handle_response(id, result, now);
            }
            producer.engine.handle_timeout(now);
        }
    }
    let end = producers
        .iter()
        .filter_map(|p| p.last_delivery)
        .max()
        .unwrap_or(start);
    let elapsed = end.saturating_duration_since(start);
    let shards = sim
        .open_shards(STREAM)
        .iter()
        .map(|(id, _)| {
            let writes = written_by_shard
                .get(id.as_str())
                .map_or(&[][..], Vec::as_slice);
            ShardGoodput {
                bytes_per_sec: sustained_rate(writes, |w| w.bytes),
                records_per_sec: sustained_rate(writes, |_| 1),
            }
        })
        .collect();
    let mut latencies: Vec<Duration> = producers
        .iter()
        .flat_map(|p| p.latencies.iter().copied())
        .collect();
    latencies.sort_unstable();
    let p99_latency = latencies
        .get((latencies.len() * 99).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or_default();
    Ok(GoodputReport {
        elapsed,
        shards,
        producer_records_per_sec: producers
            .iter()
            .map(|p| {
                let own = p.last_delivery.map_or(0.0, |at| (at - start).as_secs_f64());
                if own > 0.0 {
                    p.delivered as f64 / own
                } else {
                    0.0
                }
            })
            .collect(),
        entries_sent,
        throttled_entries: sim.counters().throttled_entries,
        retries: producers.iter().map(|p| p.retries).sum(),
        delivered: producers.iter().map(|p| p.delivered).sum(),
        failed: producers.iter().map(|p| p.failed).sum(),
        p99_latency,
    })
}

/// Kinesis records written to a shard at one time.
#[derive(Clone, Copy, Debug)]
struct Write {
    at: Instant,
    bytes: u64,
}

/// The rate of `amount` between the writes that brought the total to a tenth and to nine
/// tenths of the whole.
fn sustained_rate(writes: &[Write], amount: impl Fn(&Write) -> u64) -> f64 {
    let total: u64 = writes.iter().map(&amount).sum();
    let (low, high) = (total / 10, total - total / 10);
    let mut sum = 0;
    let (mut from, mut to) = (None, None);
    for write in writes {
        sum += amount(write);
        if from.is_none() && sum >= low {
            from = Some((write.at, sum));
        }
        if to.is_none() && sum >= high {
            to = Some((write.at, sum));
        }
    }
    match (from, to) {
        (Some((start, at_start)), Some((end, at_end))) if end > start => {
            (at_end - at_start) as f64 / (end - start).as_secs_f64()
        }
        _ => 0.0,
    }
}

/// Submits the producer's next records until back-pressure refuses one.
fn feed(producer: &mut Producer, workload: &Workload, stream: &Stream, now: Instant) {
    loop {
        let record = match producer.waiting.take() {
            Some(record) => record,
            None if producer.sent < workload.records => {
                producer.sent += 1;
                next_record(producer, workload, stream)
            }
            None => return,
        };
        match producer.engine.submit(record, now) {
            Ok(id) => {
                producer.accepted_at.insert(id, now);
            }
            Err(rejected) if rejected.reason().is_back_pressure() => {
                producer.waiting = Some(rejected.into_record());
                return;
            }
            Err(_) => producer.failed += 1,
        }
    }
}

fn next_record(producer: &mut Producer, workload: &Workload, stream: &Stream) -> Record {
    let key: String = (0..workload.key_chars)
        .map(|_| char::from(producer.rng.random_range(b'a'..=b'z')))
        .collect();
    let size = match workload.large {
        Some((every, min, max)) if every > 0 && producer.sent.is_multiple_of(every) => {
            producer.rng.random_range(min..=max)
        }
        _ => workload.data_bytes,
    };
    Record::new(stream.clone(), key, vec![0x5a; size])
}

/// Hands the producer's requests to the service and collects its outcomes.
fn pump(
    producer: &mut Producer,
    sim: &mut SimKinesis,
    now: Instant,
    latency: Duration,
    call: &mut u64,
    entries_sent: &mut u64,
    written_by_shard: &mut BTreeMap<String, Vec<Write>>,
) {
    while let Some((id, request)) = producer.engine.poll_request(now) {
        let sizes: Vec<u64> = match &request {
            Request::PutRecords(put) => {
                *entries_sent += put.entries.len() as u64;
                put.entries.iter().map(|e| e.billed_size() as u64).collect()
            }
            _ => Vec::new(),
        };
        let result = sim.handle(request, now);
        if let Ok(Response::PutRecords(put)) = &result {
            for (entry, size) in put.entries.iter().zip(sizes) {
                if let PutRecordsEntryResult::Written { shard_id, .. } = entry {
                    written_by_shard
                        .entry(shard_id.as_str().to_owned())
                        .or_default()
                        .push(Write {
                            at: now,
                            bytes: size,
                        });
                }
            }
        }
        producer
            .in_flight
            .insert((now + latency, *call), (id, result));
        *call += 1;
    }
    while let Some(event) = producer.engine.poll_event() {
        match event {
            Event::Delivered(delivery) => {
                producer.delivered += 1;
                producer.retries += delivery.attempt_count().saturating_sub(1) as u64;
                producer.last_delivery = Some(now);
                if let Some(at) = producer.accepted_at.remove(&delivery.id()) {
                    producer.latencies.push(now.saturating_duration_since(at));
                }
            }
            Event::Failed(failure) => {
                producer.failed += 1;
                producer.retries += failure.attempt_count().saturating_sub(1) as u64;
                producer.accepted_at.remove(&failure.id());
            }
            _ => {}
        }
    }
}
