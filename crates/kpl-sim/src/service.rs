//! The simulated service: streams, shards, limits, reshards, faults, and what was written.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kpl_aggregation::{
    DeaggregatedRecord, HashKey, HashKeyRange, KinesisRecord, ShardDeaggregation,
    deaggregate_for_shard,
};
use kpl_engine::transport::{
    DescribeStreamSummaryRequest, ListShardsRequest, ListShardsResponse, PutRecordsEntryResult,
    PutRecordsRequest, PutRecordsResponse, ShardDescription, ShardFilter, StreamSummary,
};
use kpl_engine::{
    PUT_RECORDS_MAX_BYTES, PUT_RECORDS_MAX_ENTRIES, Request, Response, ShardId, Stream,
    TransportError, TransportErrorKind,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const SHARD_RECORDS_PER_SEC: f64 = 1_000.0;
const SHARD_BYTES_PER_SEC: f64 = 1_048_576.0;
const DEFAULT_MAX_RECORD_SIZE: usize = 1024 * 1024;

/// How the simulated service enforces each shard's write limits (1,000 records and 1 MiB per
/// second). The service documents the limits, not the mechanism; the two models bracket it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Enforcement {
    /// Token buckets holding one second of each limit, refilled continuously. A record larger
    /// than a second's bytes passes on a full bucket and leaves it in debt.
    #[default]
    TokenBucket,
    /// Fixed one-second windows: a window opens at the first write after the previous one
    /// closed and admits up to each limit. A record larger than a second's bytes passes in an
    /// empty window, which then lasts as many seconds as the record takes at 1 MiB/s.
    FixedWindow,
}

/// Random faults, as probabilities per request or per entry. All zero by default.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// A `PutRecords` entry fails with `InternalFailure`.
    pub entry_internal_failure: f64,
    /// A whole request fails with a 500 (`InternalFailure`) or 503 (`ServiceUnavailable`).
    pub request_unavailable: f64,
    /// A whole request times out. Half of the timed-out `PutRecords` calls were applied anyway.
    pub request_timeout: f64,
}

/// A fault for the next request(s), whatever the random faults say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScriptedFault {
    /// The next request fails with this code (classified as the service would).
    Error {
        /// The error code, such as `ServiceUnavailable`.
        code: String,
    },
    /// The next request times out; `applied` says whether a `PutRecords` was written anyway.
    Timeout {
        /// Whether the write happened.
        applied: bool,
    },
    /// Every entry of the next `PutRecords` is throttled.
    ThrottleAll,
}

/// A record as stored in a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    /// Its sequence number (increasing within the shard).
    pub sequence_number: String,
    /// The partition key it was sent with.
    pub partition_key: String,
    /// The explicit hash key it was sent with.
    pub explicit_hash_key: Option<HashKey>,
    /// The data (an aggregate or a plain record).
    pub data: Bytes,
    /// When it was written.
    pub written_at: Instant,
}

/// A shard as the service lists it, with its lineage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    /// Its id, such as `shardId-000000000003`.
    pub id: ShardId,
    /// The hash keys it owns.
    pub range: HashKeyRange,
    /// `false` once it was split or merged.
    pub open: bool,
    /// The shard it was split from, or the two it was merged from; empty for a shard the
    /// stream was created with.
    pub parents: Vec<ShardId>,
}

/// Everything a stream holds (shards, lineage, records), to keep it outside the service, in a
/// file say, and bring it back with [`SimKinesis::restore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSnapshot {
    /// The stream's name.
    pub name: String,
    /// Its largest record, in bytes.
    pub max_record_size: usize,
    /// Every shard, in the order they were made (parents before children), with its records.
    pub shards: Vec<(ShardInfo, Vec<StoredRecord>)>,
}

#[derive(Clone, Debug)]
struct SimShard {
    id: ShardId,
    range: HashKeyRange,
    open: bool,
    parents: Vec<ShardId>,
    records: Vec<StoredRecord>,
    /// Every entry for this shard fails with this code (a shard that is down).
    failing: Option<String>,
    record_tokens: f64,
    byte_tokens: f64,
    refilled: Instant,
    /// The open window (`Enforcement::FixedWindow`): when it closes, records and bytes in it.
    window: Option<(Instant, u32, usize)>,
}

impl SimShard {
    fn info(&self) -> ShardInfo {
        ShardInfo {
            id: self.id.clone(),
            range: self.range,
            open: self.open,
            parents: self.parents.clone(),
        }
    }

    fn new(number: u32, range: HashKeyRange, now: Instant) -> Self {
        Self {
            id: ShardId::new(format!("shardId-{number:012}")),
            range,
            open: true,
            parents: Vec::new(),
            records: Vec::new(),
            failing: None,
            record_tokens: SHARD_RECORDS_PER_SEC,
            byte_tokens: SHARD_BYTES_PER_SEC,
            refilled: now,
            window: None,
        }
    }

    /// Whether the shard takes a write of `bytes` now, under `enforcement`; counts it if so.
    fn admit(&mut self, bytes: usize, now: Instant, enforcement: Enforcement) -> bool {
        match enforcement {
            Enforcement::TokenBucket => self.admit_bucket(bytes, now),
            Enforcement::FixedWindow => self.admit_window(bytes, now),
        }
    }

    fn admit_window(&mut self, bytes: usize, now: Instant) -> bool {
        const RECORDS: u32 = SHARD_RECORDS_PER_SEC as u32;
        const BYTES: usize = SHARD_BYTES_PER_SEC as usize;
        let (closes, records, taken) = match self.window {
            Some(window @ (closes, _, _)) if now < closes => window,
            _ => (now + Duration::from_secs(1), 0, 0),
        };
        let (closes, records, taken) = if records == 0 && bytes > BYTES {
            // An oversized record in an empty window: the window lasts as long as it takes.
            let seconds = bytes as f64 / SHARD_BYTES_PER_SEC;
            (now + Duration::from_secs_f64(seconds), records, taken)
        } else if records < RECORDS && taken + bytes <= BYTES {
            (closes, records, taken)
        } else {
            self.window = Some((closes, records, taken));
            return false;
        };
        self.window = Some((closes, records + 1, taken + bytes));
        true
    }

    /// The service's per-shard limit, as a one-second token bucket.
    fn admit_bucket(&mut self, bytes: usize, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = self.refilled.max(now);
        self.record_tokens =
            (self.record_tokens + elapsed * SHARD_RECORDS_PER_SEC).min(SHARD_RECORDS_PER_SEC);
        self.byte_tokens =
            (self.byte_tokens + elapsed * SHARD_BYTES_PER_SEC).min(SHARD_BYTES_PER_SEC);
        let bytes = bytes as f64;
        // A record larger than a second's allowance passes on a full bucket, as the real
        // service lets occasional large records through.
        if self.record_tokens >= 1.0 && self.byte_tokens >= bytes.min(SHARD_BYTES_PER_SEC) {
            self.record_tokens -= 1.0;
            self.byte_tokens -= bytes;
            true
        } else {
            false
        }
    }
}

#[derive(Clone, Debug)]
struct SimStream {
    arn: String,
    shards: Vec<SimShard>,
    next_shard_number: u32,
    max_record_size: usize,
    access_denied: bool,
    enforcement: Enforcement,
}

/// What the service counted, for tests to assert on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests of any kind.
    pub requests: u64,
    /// `PutRecords` requests.
    pub put_records_requests: u64,
    /// Requests that broke a service limit (entries, request size, record size, key length).
    pub limit_violations: u64,
    /// Entries refused by the per-shard rate limit.
    pub throttled_entries: u64,
    /// Entries written.
    pub written_entries: u64,
    /// Bytes of the entries written as the service counts them against a shard's limit: data
    /// and partition key.
    pub written_bytes: u64,
}

/// One user record as a KCL consumer would see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// The shard it was read from.
    pub shard_id: ShardId,
    /// The sequence number of the Kinesis record that carried it.
    pub sequence_number: String,
    /// Its position inside an aggregate (0 for a plain record).
    pub sub_sequence_number: u64,
    /// Its partition key.
    pub partition_key: String,
    /// Its effective hash key.
    pub hash_key: HashKey,
    /// Its data.
    pub data: Bytes,
}

/// An aggregate a KCL consumer would have dropped, because a sub-record hashes outside the shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedByKcl {
    /// Where it was stored.
    pub shard_id: ShardId,
    /// Its sequence number.
    pub sequence_number: String,
    /// The user records inside it.
    pub records: Vec<ConsumedRecord>,
}

/// What a KCL consumer reading every shard of a stream from the start would get.
#[derive(Clone, Debug, Default)]
pub struct KclView {
    /// The user records delivered, shard by shard, in stored order.
    pub records: Vec<ConsumedRecord>,
    /// Aggregates dropped by the KCL's shard-range rule.
    pub dropped: Vec<DroppedByKcl>,
    /// Stored records that failed to de-aggregate and were passed through whole.
    pub passed_through: usize,
}

/// A simulated Kinesis service. Deterministic: the same seed and the same calls give the same
/// answers. It reads no clock; every call carries the time.
pub struct SimKinesis {
    rng: SmallRng,
    streams: BTreeMap<String, SimStream>,
    faults: Faults,
    scripted: VecDeque<ScriptedFault>,
    list_shards_page: usize,
    next_sequence: u64,
    counters: Counters,
    /// Written records are acknowledged and counted but not stored (long memory runs).
    discard_written: bool,
    /// Failing shards' messages are this long, each different (see `set_failure_message_len`).
    failure_message_len: usize,
    /// Failure messages written so far, to make each one different.
    failure_messages: u64,
}

impl fmt::Debug for SimKinesis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimKinesis")
            .field("streams", &self.streams.keys().collect::<Vec<_>>())
            .field("faults", &self.faults)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

fn split_evenly(count: u32) -> Vec<HashKeyRange> {
    // The service's split of the 128-bit space: shard i starts at floor(2^128 × i / n).
    // With 2^128 = q·n + r: start_i = i·q + floor(i·r / n).
    let n = u128::from(count.max(1));
    if n == 1 {
        return vec![HashKeyRange::FULL];
    }
    let (q, r) = if u128::MAX % n + 1 == n {
        (u128::MAX / n + 1, 0)
    } else {
        (u128::MAX / n, u128::MAX % n + 1)
    };
    let start = |i: u128| i.wrapping_mul(q) + i * r / n;
    (0..n)
        .filter_map(|i| {
            let end = if i + 1 == n {
                u128::MAX
            } else {
                start(i + 1) - 1
            };
            HashKeyRange::new(HashKey::new(start(i)), HashKey::new(end)).ok()
        })
        .collect()
}

/// Why a stream operation of the simulator could not be done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimError(pub String);

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SimError {}

/// A snapshot's shards as the service could have made them: each id once, parents among the
/// shards before, the open shards covering every hash key exactly once.
fn check_shards(snapshot: &StreamSnapshot) -> Result<(), SimError> {
    let mut seen: Vec<&ShardId> = Vec::with_capacity(snapshot.shards.len());
    for (info, _) in &snapshot.shards {
        if seen.contains(&&info.id) {
            return Err(SimError(format!("shard {} appears twice", info.id)));
        }
        if let Some(parent) = info.parents.iter().find(|parent| !seen.contains(parent)) {
            return Err(SimError(format!(
                "shard {}'s parent {parent} is not among the shards before it",
                info.id
            )));
        }
        seen.push(&info.id);
    }
    let mut open: Vec<HashKeyRange> = snapshot
        .shards
        .iter()
        .filter(|(info, _)| info.open)
        .map(|(info, _)| info.range)
        .collect();
    open.sort_by_key(|range| range.start());
    let mut next = Some(0u128);
    for range in &open {
        if next != Some(range.start().get()) {
            return Err(SimError(format!(
                "the open shards do not cover every hash key once (at {})",
                range.start().get()
            )));
        }
        next = range.end().get().checked_add(1);
    }
    if next.is_some() {
        return Err(SimError(
            "the open shards do not cover every hash key once (the last is missing)".into(),
        ));
    }
    Ok(())
}

/// The ARN of a stream the simulated service makes (region and account are the sim's).
fn stream_arn(name: &str) -> String {
    format!("arn:aws:kinesis:us-east-1:123456789012:stream/{name}")
}

impl SimKinesis {
    /// An empty service with random faults off.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed),
            streams: BTreeMap::new(),
            faults: Faults::default(),
            scripted: VecDeque::new(),
            list_shards_page: 100,
            discard_written: false,
            failure_message_len: 0,
            failure_messages: 0,
            next_sequence: 0,
            counters: Counters::default(),
        }
    }

    /// Creates a stream with `shards` shards splitting the hash space evenly, as the service does.
    pub fn create_stream(&mut self, name: &str, shards: u32, now: Instant) {
        let ranges = split_evenly(shards);
        let shards = ranges
            .into_iter()
            .zip(0u32..)
            .map(|(range, number)| SimShard::new(number, range, now))
            .collect::<Vec<_>>();
        self.streams.insert(
            name.to_owned(),
            SimStream {
                arn: stream_arn(name),
                next_shard_number: shards.len() as u32,
                shards,
                max_record_size: DEFAULT_MAX_RECORD_SIZE,
                access_denied: false,
                enforcement: Enforcement::default(),
            },
        );
    }

    /// Deletes a stream; later calls for it answer `ResourceNotFoundException`.
    pub fn delete_stream(&mut self, name: &str) {
        self.streams.remove(name);
    }

    /// Sets the stream's `MaxRecordSizeInKiB` (1024..=10240).
    pub fn set_max_record_size_kib(&mut self, name: &str, kib: u32) -> Result<(), SimError> {
        let stream = self.stream_mut(name)?;
        stream.max_record_size = kib.clamp(1024, 10240) as usize * 1024;
        Ok(())
    }

    /// Sets how the stream's shards enforce their write limits.
    pub fn set_enforcement(
        &mut self,
        name: &str,
        enforcement: Enforcement,
    ) -> Result<(), SimError> {
        self.stream_mut(name)?.enforcement = enforcement;
        Ok(())
    }

    /// Makes every call for the stream answer `AccessDeniedException` (or stop doing so).
    pub fn set_access_denied(&mut self, name: &str, denied: bool) -> Result<(), SimError> {
        self.stream_mut(name)?.access_denied = denied;
        Ok(())
    }

    /// Makes every `PutRecords` entry for one shard fail with `code` (a shard that is down, say
    /// `InternalFailure`), or, with `None`, work again.
    pub fn set_shard_failing(
        &mut self,
        name: &str,
        shard_id: &str,
        code: Option<&str>,
    ) -> Result<(), SimError> {
        let stream = self.stream_mut(name)?;
        let shard = stream
            .shards
            .iter_mut()
            .find(|shard| shard.id.as_str() == shard_id)
            .ok_or_else(|| SimError(format!("no shard {shard_id} in stream {name}")))?;
        shard.failing = code.map(str::to_owned);
        Ok(())
    }

    /// Makes the messages of failing shards' entries `len` bytes long and each one different,
    /// as no service writes them but a proxy or a broken gateway may: a test of what a producer
    /// keeps of them. 0 (the default) gives the service's short message.
    pub fn set_failure_message_len(&mut self, len: usize) {
        self.failure_message_len = len;
    }

    /// Stops storing written records (they are still acknowledged and counted), so that a long
    /// run's memory is the producer's, not the stored stream's.
    pub fn set_discard_written(&mut self, discard: bool) {
        self.discard_written = discard;
    }

    /// Sets the random faults.
    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// Queues a fault for the next request.
    pub fn script(&mut self, fault: ScriptedFault) {
        self.scripted.push_back(fault);
    }

    /// Sets the `ListShards` page size (small values exercise pagination).
    pub fn set_list_shards_page(&mut self, size: usize) {
        self.list_shards_page = size.max(1);
    }

    /// The service's counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Moves the stream to `region` (its ARN names it), as a stream of another region would be
    /// when one endpoint serves several in a test. Returns whether the stream exists.
    pub fn set_stream_region(&mut self, name: &str, region: &str) -> bool {
        let Some(stream) = self.streams.get_mut(name) else {
            return false;
        };
        stream.arn = format!("arn:aws:kinesis:{region}:123456789012:stream/{name}");
        true
    }

    /// The stream's ARN.
    pub fn stream_arn(&self, name: &str) -> Option<&str> {
        self.streams.get(name).map(|s| s.arn.as_str())
    }

    fn stream_mut(&mut self, name: &str) -> Result<&mut SimStream, SimError> {
        self.streams
            .get_mut(name)
            .ok_or_else(|| SimError(format!("no stream {name}")))
    }

    /// Splits an open shard at `new_starting_hash_key`: the parent closes, two children open.
    pub fn split_shard(
        &mut self,
        name: &str,
        shard_id: &str,
        new_starting_hash_key: HashKey,
    ) -> Result<(), SimError> {
        let stream = self.stream_mut(name)?;
        let now = stream.shards.first().map(|s| s.refilled);
        let index = stream
            .shards
            .iter()
            .position(|s| s.open && s.id.as_str() == shard_id)
            .ok_or_else(|| SimError(format!("no open shard {shard_id}")))?;
        let range = stream.shards[index].range;
        let split = new_starting_hash_key.get();
        if split <= range.start().get() || split > range.end().get() {
            return Err(SimError(
                "the split point must be inside the shard, above its start".into(),
            ));
        }
        let low = HashKeyRange::new(range.start(), HashKey::new(split - 1))
            .map_err(|e| SimError(e.to_string()))?;
        let high = HashKeyRange::new(HashKey::new(split), range.end())
            .map_err(|e| SimError(e.to_string()))?;
        stream.shards[index].open = false;
        let refilled = stream.shards[index]
            .refilled
            .max(now.unwrap_or(stream.shards[index].refilled));
        let parent = stream.shards[index].id.clone();
        for child in [low, high] {
            let number = stream.next_shard_number;
            stream.next_shard_number += 1;
            let mut child = SimShard::new(number, child, refilled);
            child.parents = vec![parent.clone()];
            stream.shards.push(child);
        }
        Ok(())
    }

    /// Merges two open, adjacent shards: both close, one child covering both opens.
    pub fn merge_shards(
        &mut self,
        name: &str,
        shard_id: &str,
        adjacent_shard_id: &str,
    ) -> Result<(), SimError> {
        let stream = self.stream_mut(name)?;
        let find = |id: &str| {
            stream
                .shards
                .iter()
                .position(|s| s.open && s.id.as_str() == id)
        };
        let (Some(a), Some(b)) = (find(shard_id), find(adjacent_shard_id)) else {
            return Err(SimError("both shards must exist and be open".into()));
        };
        let (low, high) = if stream.shards[a].range.start() < stream.shards[b].range.start() {
            (a, b)
        } else {
            (b, a)
        };
        let (low_range, high_range) = (stream.shards[low].range, stream.shards[high].range);
        if low_range.end().get().checked_add(1) != Some(high_range.start().get()) {
            return Err(SimError("the shards are not adjacent".into()));
        }
        let range = HashKeyRange::new(low_range.start(), high_range.end())
            .map_err(|e| SimError(e.to_string()))?;
        stream.shards[low].open = false;
        stream.shards[high].open = false;
        let refilled = stream.shards[low].refilled;
        let number = stream.next_shard_number;
        stream.next_shard_number += 1;
        let mut child = SimShard::new(number, range, refilled);
        child.parents = vec![
            stream.shards[low].id.clone(),
            stream.shards[high].id.clone(),
        ];
        stream.shards.push(child);
        Ok(())
    }

    /// The open shards of a stream, with their ranges.
    pub fn open_shards(&self, name: &str) -> Vec<(ShardId, HashKeyRange)> {
        self.streams
            .get(name)
            .map(|s| {
                s.shards
                    .iter()
                    .filter(|s| s.open)
                    .map(|s| (s.id.clone(), s.range))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every shard of a stream, open or closed, in the order they were made.
    pub fn shards(&self, name: &str) -> Vec<ShardInfo> {
        self.streams
            .get(name)
            .map(|stream| stream.shards.iter().map(SimShard::info).collect())
            .unwrap_or_default()
    }

    /// The names of the streams.
    pub fn stream_names(&self) -> Vec<String> {
        self.streams.keys().cloned().collect()
    }

    /// Everything the stream holds, or `None` without such a stream.
    pub fn snapshot(&self, name: &str) -> Option<StreamSnapshot> {
        let stream = self.streams.get(name)?;
        Some(StreamSnapshot {
            name: name.to_owned(),
            max_record_size: stream.max_record_size,
            shards: stream
                .shards
                .iter()
                .map(|shard| (shard.info(), shard.records.clone()))
                .collect(),
        })
    }

    /// Brings back a stream from its [`snapshot`](Self::snapshot), replacing one of the same
    /// name; its shards' limits start full at `now`. Sequence numbers go on above the highest
    /// the snapshot holds. Refused unless it is a stream the service could have made: shard
    /// ids `shardId-<number>` without repeats, parents among the shards before, sequence
    /// numbers that are numbers, and open shards that cover every hash key once.
    pub fn restore(&mut self, snapshot: StreamSnapshot, now: Instant) -> Result<(), SimError> {
        check_shards(&snapshot)?;
        let mut next_shard_number = 0u32;
        let mut next_sequence = self.next_sequence;
        let mut shards = Vec::with_capacity(snapshot.shards.len());
        for (info, records) in snapshot.shards {
            let number: u32 = info
                .id
                .as_str()
                .strip_prefix("shardId-")
                .and_then(|number| number.parse().ok())
                .filter(|number| *number < u32::MAX)
                .ok_or_else(|| SimError(format!("shard id {} is not shardId-<number>", info.id)))?;
            next_shard_number = next_shard_number.max(number + 1);
            for record in &records {
                let sequence: u64 = record
                    .sequence_number
                    .parse()
                    .ok()
                    .filter(|sequence| *sequence < u64::MAX)
                    .ok_or_else(|| {
                        SimError(format!(
                            "sequence number {} is not a number",
                            record.sequence_number
                        ))
                    })?;
                next_sequence = next_sequence.max(sequence + 1);
            }
            let mut shard = SimShard::new(number, info.range, now);
            shard.id = info.id;
            shard.open = info.open;
            shard.parents = info.parents;
            shard.records = records;
            shards.push(shard);
        }
        self.next_sequence = next_sequence;
        self.streams.insert(
            snapshot.name.clone(),
            SimStream {
                arn: stream_arn(&snapshot.name),
                shards,
                next_shard_number,
                max_record_size: snapshot.max_record_size,
                access_denied: false,
                enforcement: Enforcement::default(),
            },
        );
        Ok(())
    }

    /// Every record stored in a shard, in order.
    pub fn stored(&self, name: &str, shard_id: &str) -> &[StoredRecord] {
        self.streams
            .get(name)
            .and_then(|s| s.shards.iter().find(|s| s.id.as_str() == shard_id))
            .map_or(&[], |s| &s.records)
    }

    /// Reads every shard of the stream from the start and de-aggregates with the KCL's rules.
    pub fn kcl_view(&self, name: &str) -> KclView {
        let mut view = KclView::default();
        let Some(stream) = self.streams.get(name) else {
            return view;
        };
        for shard in &stream.shards {
            for stored in &shard.records {
                let mut record =
                    KinesisRecord::new(stored.partition_key.clone(), stored.data.clone());
                if let Some(hash_key) = stored.explicit_hash_key {
                    record = record.with_explicit_hash_key(hash_key);
                }
                let convert = |r: DeaggregatedRecord| ConsumedRecord {
                    shard_id: shard.id.clone(),
                    sequence_number: stored.sequence_number.clone(),
                    sub_sequence_number: r.sub_sequence_number(),
                    partition_key: r.partition_key().to_owned(),
                    hash_key: r.hash_key(),
                    data: r.data_bytes(),
                };
                if record.has_aggregation_magic()
                    && kpl_aggregation::deaggregate_strict(&record).is_err()
                {
                    view.passed_through += 1;
                }
                match deaggregate_for_shard(&record, shard.range) {
                    ShardDeaggregation::Kept(records) => {
                        view.records.extend(records.into_iter().map(convert))
                    }
                    ShardDeaggregation::Dropped(dropped) => view.dropped.push(DroppedByKcl {
                        shard_id: shard.id.clone(),
                        sequence_number: stored.sequence_number.clone(),
                        records: dropped.into_records().into_iter().map(convert).collect(),
                    }),
                    _ => view.passed_through += 1,
                }
            }
        }
        view
    }

    fn resolve(&self, stream: &Stream) -> Result<&str, TransportError> {
        let name = stream.name();
        let Some((key, found)) = self.streams.get_key_value(name) else {
            return Err(TransportError::from_code(
                "ResourceNotFoundException",
                format!("Stream {name} under account 123456789012 not found."),
            ));
        };
        if let Some(arn) = stream.arn()
            && arn != found.arn
        {
            return Err(TransportError::from_code(
                "ResourceNotFoundException",
                format!("Stream {arn} not found."),
            ));
        }
        if found.access_denied {
            return Err(TransportError::from_code(
                "AccessDeniedException",
                format!("User is not authorized to perform this action on stream {name}"),
            ));
        }
        Ok(key)
    }

    /// Answers a request at `now`, applying scripted and random faults.
    pub fn handle(&mut self, request: Request, now: Instant) -> Result<Response, TransportError> {
        self.counters.requests += 1;
        let mut throttle_all = false;
        if let Some(fault) = self.scripted.pop_front() {
            match fault {
                ScriptedFault::Error { code } => {
                    return Err(TransportError::from_code(code, "scripted fault"));
                }
                ScriptedFault::Timeout { applied } => {
                    if applied {
                        let _ = self.answer(request, now, false);
                    }
                    return Err(timeout());
                }
                ScriptedFault::ThrottleAll => throttle_all = true,
            }
        }
        if self.faults.request_unavailable > 0.0
            && self
                .rng
                .random_bool(self.faults.request_unavailable.min(1.0))
        {
            return Err(if self.rng.random_bool(0.5) {
                TransportError::from_code("InternalFailure", "HTTP 500: internal failure")
            } else {
                TransportError::from_code("ServiceUnavailable", "HTTP 503: service unavailable")
            });
        }
        if self.faults.request_timeout > 0.0
            && self.rng.random_bool(self.faults.request_timeout.min(1.0))
        {
            if self.rng.random_bool(0.5) {
                let _ = self.answer(request, now, false);
            }
            return Err(timeout());
        }
        self.answer(request, now, throttle_all)
    }

    fn answer(
        &mut self,
        request: Request,
        now: Instant,
        throttle_all: bool,
    ) -> Result<Response, TransportError> {
        match request {
            Request::PutRecords(request) => self
                .put_records(request, now, throttle_all)
                .map(Response::PutRecords),
            Request::ListShards(request) => self.list_shards(&request).map(Response::ListShards),
            Request::DescribeStreamSummary(request) => self
                .describe_stream_summary(&request)
                .map(Response::DescribeStreamSummary),
            _ => Err(TransportError::new(
                TransportErrorKind::Validation,
                "UnknownOperation",
                "not simulated",
            )),
        }
    }

    fn validation(&mut self, message: String) -> TransportError {
        self.counters.limit_violations += 1;
        TransportError::from_code("ValidationException", message)
    }

    fn put_records(
        &mut self,
        request: PutRecordsRequest,
        now: Instant,
        throttle_all: bool,
    ) -> Result<PutRecordsResponse, TransportError> {
        self.counters.put_records_requests += 1;
        let name = self.resolve(&request.stream)?.to_owned();
        if request.entries.is_empty() || request.entries.len() > PUT_RECORDS_MAX_ENTRIES {
            return Err(self.validation(format!(
                "{} records; a request holds 1 to 500",
                request.entries.len()
            )));
        }
        if request.billed_size() > PUT_RECORDS_MAX_BYTES {
            return Err(self.validation(format!(
                "request size {} exceeds 10 MiB",
                request.billed_size()
            )));
        }
        let max_record_size = self
            .streams
            .get(&name)
            .map_or(DEFAULT_MAX_RECORD_SIZE, |s| s.max_record_size);
        for entry in &request.entries {
            // The service counts a key's length in UTF-16 code units, as Java does.
            let key_chars = entry.partition_key().encode_utf16().count();
            if !(1..=256).contains(&key_chars) {
                return Err(self.validation(format!("partition key of {key_chars} characters")));
            }
            if entry.billed_size() > max_record_size {
                return Err(self.validation(format!(
                    "record size {} exceeds {max_record_size}",
                    entry.billed_size()
                )));
            }
        }
        let mut results = Vec::with_capacity(request.entries.len());
        for entry in request.entries {
            if self.faults.entry_internal_failure > 0.0
                && self
                    .rng
                    .random_bool(self.faults.entry_internal_failure.min(1.0))
            {
                results.push(PutRecordsEntryResult::Failed {
                    code: "InternalFailure".into(),
                    message: "Internal service failure.".into(),
                });
                continue;
            }
            let hash_key = entry
                .explicit_hash_key()
                .unwrap_or_else(|| HashKey::from_partition_key(entry.partition_key()));
            let sequence = self.next_sequence;
            let Some(stream) = self.streams.get_mut(&name) else {
                return Err(TransportError::from_code(
                    "ResourceNotFoundException",
                    "stream deleted",
                ));
            };
            let enforcement = stream.enforcement;
            let Some(shard) = stream
                .shards
                .iter_mut()
                .find(|s| s.open && s.range.contains(hash_key))
            else {
                return Err(TransportError::from_code(
                    "InternalFailure",
                    "no open shard owns the hash key",
                ));
            };
            if let Some(code) = &shard.failing {
                let mut message = format!("Shard {} is failing (injected).", shard.id);
                if self.failure_message_len > message.len() {
                    self.failure_messages += 1;
                    message = format!("{message} #{}", self.failure_messages);
                    let padding = self.failure_message_len.saturating_sub(message.len());
                    message.extend(std::iter::repeat_n('x', padding));
                }
                results.push(PutRecordsEntryResult::Failed {
                    code: code.clone(),
                    message,
                });
                continue;
            }
            if throttle_all || !shard.admit(entry.billed_size(), now, enforcement) {
                self.counters.throttled_entries += 1;
                results.push(PutRecordsEntryResult::Failed {
                    code: "ProvisionedThroughputExceededException".into(),
                    message: format!("Rate exceeded for shard {} in stream {name}.", shard.id),
                });
                continue;
            }
            self.next_sequence += 1;
            let sequence_number = format!("{sequence:056}");
            self.counters.written_bytes += entry.billed_size() as u64;
            let (partition_key, explicit_hash_key, data) = entry.into_parts();
            self.counters.written_entries += 1;
            results.push(PutRecordsEntryResult::Written {
                shard_id: shard.id.clone(),
                sequence_number: sequence_number.clone().into(),
            });
            if self.discard_written {
                continue;
            }
            shard.records.push(StoredRecord {
                sequence_number: sequence_number.clone(),
                partition_key,
                explicit_hash_key,
                data,
                written_at: now,
            });
        }
        Ok(PutRecordsResponse { entries: results })
    }

    fn list_shards(
        &mut self,
        request: &ListShardsRequest,
    ) -> Result<ListShardsResponse, TransportError> {
        // As the service's, a token stands for the whole listing: pages after the first carry
        // only the token, which remembers the stream, the filter and where the page starts.
        let (name, all, offset) = match &request.next_token {
            Some(token) => {
                let mut parts = token.rsplitn(3, '|');
                let parsed = match (parts.next(), parts.next(), parts.next()) {
                    (Some(offset), Some(filter), Some(name)) => offset
                        .parse::<usize>()
                        .ok()
                        .map(|offset| (name.to_owned(), filter == "all", offset)),
                    _ => None,
                };
                let Some(parsed) = parsed else {
                    return Err(self.validation("invalid NextToken".into()));
                };
                parsed
            }
            None => {
                let all = match request.filter {
                    ShardFilter::AtLatest => false,
                    ShardFilter::FromTrimHorizon => true,
                    other => {
                        return Err(self.validation(format!("ShardFilter {other:?}")));
                    }
                };
                (self.resolve(&request.stream)?.to_owned(), all, 0)
            }
        };
        let Some(stream) = self.streams.get(&name) else {
            return Err(TransportError::from_code(
                "ExpiredNextTokenException",
                "stream is gone",
            ));
        };
        // Nothing is ever trimmed here: every shard is after the trim horizon.
        let listed: Vec<&SimShard> = stream.shards.iter().filter(|s| all || s.open).collect();
        let page = self
            .list_shards_page
            .min(request.max_results.max(1) as usize);
        let end = (offset + page).min(listed.len());
        let shards = listed
            .get(offset..end)
            .unwrap_or_default()
            .iter()
            .map(|s| ShardDescription {
                shard_id: s.id.clone(),
                hash_key_range: s.range,
                open: s.open,
            })
            .collect();
        let filter = if all { "all" } else { "open" };
        let next_token = (end < listed.len()).then(|| format!("{name}|{filter}|{end}"));
        Ok(ListShardsResponse { shards, next_token })
    }

    fn describe_stream_summary(
        &mut self,
        request: &DescribeStreamSummaryRequest,
    ) -> Result<StreamSummary, TransportError> {
        let name = self.resolve(&request.stream)?.to_owned();
        let stream = self
            .streams
            .get(&name)
            .ok_or_else(|| TransportError::from_code("ResourceNotFoundException", "not found"))?;
        Ok(StreamSummary {
            max_record_size_kib: Some((stream.max_record_size / 1024) as u32),
            open_shard_count: stream.shards.iter().filter(|s| s.open).count() as u32,
        })
    }
}

fn timeout() -> TransportError {
    TransportError::new(
        TransportErrorKind::Timeout,
        "RequestTimeout",
        "no answer within the request timeout",
    )
}

#[cfg(test)]
mod tests {
    use kpl_engine::time::{Clock, SystemClock};

    use super::*;

    #[test]
    fn even_split_matches_the_service() {
        let ranges = split_evenly(4);
        assert_eq!(ranges.len(), 4);
        assert_eq!(ranges[0].start().get(), 0);
        assert_eq!(ranges[3].end().get(), u128::MAX);
        // The service's boundaries for 4 shards: multiples of 2^126.
        assert_eq!(ranges[1].start().get(), 1u128 << 126);
        assert_eq!(ranges[2].start().get(), 2u128 << 126);
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].end().get() + 1, pair[1].start().get());
        }
        let ranges = split_evenly(3);
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].end().get() + 1, pair[1].start().get());
        }
        assert_eq!(split_evenly(1), vec![HashKeyRange::FULL]);
    }

    fn put_to_every_shard(sim: &mut SimKinesis, now: Instant) -> Vec<PutRecordsEntryResult> {
        // Explicit hash keys at the start of each of the two shards.
        let entries = [0u128, 1 << 127]
            .into_iter()
            .map(|key| {
                KinesisRecord::new("k", Bytes::from_static(b"x"))
                    .with_explicit_hash_key(HashKey::new(key))
            })
            .collect();
        let request =
            PutRecordsRequest::new(Stream::new("s").unwrap_or_else(|e| panic!("{e}")), entries);
        match sim.handle(Request::PutRecords(request), now) {
            Ok(Response::PutRecords(response)) => response.entries,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_failing_shard_fails_its_entries_only_until_it_recovers() {
        let now = SystemClock.now();
        let mut sim = SimKinesis::new(1);
        sim.create_stream("s", 2, now);
        let first = sim.open_shards("s")[0].0.clone();
        assert!(sim.set_shard_failing("s", "shardId-9", Some("X")).is_err());
        sim.set_shard_failing("s", first.as_str(), Some("InternalFailure"))
            .unwrap_or_else(|e| panic!("{e}"));
        let results = put_to_every_shard(&mut sim, now);
        assert!(
            matches!(&results[0], PutRecordsEntryResult::Failed { code, .. } if code == "InternalFailure")
        );
        assert!(matches!(results[1], PutRecordsEntryResult::Written { .. }));
        sim.set_shard_failing("s", first.as_str(), None)
            .unwrap_or_else(|e| panic!("{e}"));
        let results = put_to_every_shard(&mut sim, now);
        assert!(matches!(results[0], PutRecordsEntryResult::Written { .. }));
        assert_eq!(sim.stored("s", first.as_str()).len(), 1);
    }

    #[test]
    fn discarding_written_records_acknowledges_and_counts_them_without_storing() {
        let now = SystemClock.now();
        let mut sim = SimKinesis::new(1);
        sim.create_stream("s", 2, now);
        sim.set_discard_written(true);
        let results = put_to_every_shard(&mut sim, now);
        assert!(
            results
                .iter()
                .all(|r| matches!(r, PutRecordsEntryResult::Written { .. }))
        );
        assert_eq!(sim.counters().written_entries, 2);
        for (shard, _) in sim.open_shards("s") {
            assert!(sim.stored("s", shard.as_str()).is_empty());
        }
    }
}
