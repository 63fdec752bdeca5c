//! The producer state machine.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::mem;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kpl_aggregation::{
    Aggregator, HashKey, HashKeyRange, KinesisRecord, MaxAggregateSize, OuterPartitionKey,
    PartitionKey, UserRecord,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::backoff::{Backoff, RefreshBackoff};
use crate::config::{EngineConfig, InvalidConfig, MAX_RECORD_SIZE_LIMIT, OrderingMode};
use crate::limiter::ShardLimiter;
use crate::memory::record_charge;
use crate::outcome::{
    Attempt, AttemptError, AttemptHistory, AttemptList, Delivery, Event, Failure, FailureReason,
    FlushId, Landing, Record, RecordId, RejectReason, Rejected,
};
use crate::shard_map::{ListingPages, NextPage, ShardMap};
use crate::stats::{ShardStats, StreamStats};
use crate::stream::Stream;
use crate::transport::{
    DescribeStreamSummaryRequest, ListShardsRequest, ListShardsResponse, PutRecordsEntryResult,
    PutRecordsRequest, PutRecordsResponse, Request, Response, ShardDescription, ShardFilter,
    ShardId, StreamSummary, TransportError, TransportErrorKind,
};

/// When a shard has this many bytes waiting in its stream's collector, the collector sends at
/// once, so one busy shard does not build up bursts (the KPL's constant).
const SHARD_COLLECTED_BYTES_TRIGGER: usize = 256 * 1024;
/// Emptied record lists kept per shard for reuse: one, as each holds room for a whole
/// aggregate's records whether or not the shard sends again.
const SPARE_RECORD_LISTS: usize = 1;
/// How long a run of `ExpiredTokenException` answers is retried before they fail records.
const EXPIRED_TOKEN_GRACE: Duration = Duration::from_secs(120);
/// The record window is compacted when it is longer than this and four times the outstanding
/// records: one record unfinished for long then costs an entry, not one per record accepted since.
const WINDOW_COMPACTION: usize = 65_536;
/// A stream with nothing outstanding and no record for this many map-refresh intervals is
/// retired: its shards' state is freed and its map no longer re-read, until a record comes.
const IDLE_STREAM_REFRESHES: u32 = 5;
/// Page size of `ListShards`.
const LIST_SHARDS_PAGE: u32 = 1_000;

/// Identifies a request the engine asked to send, so its answer can be handed back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(u64);

/// A user record accepted and not yet finished.
#[derive(Debug)]
struct Pending {
    id: u64,
    record: UserRecord,
    hash_key: HashKey,
    arrival: Instant,
    /// Latest time to leave the aggregation (or map-wait) stage this round.
    deadline: Instant,
    expiration: Instant,
    /// Failed attempts so far; `None` until the first.
    attempts: Option<Box<AttemptHistory>>,
    /// A request holding it was refused whole as invalid: it now goes in a request of its own,
    /// so that only the entry the service objects to fails.
    isolate: bool,
}

impl Pending {
    fn size(&self) -> usize {
        self.record.data().len() + self.record.partition_key().len()
    }

    fn into_record(self, stream: Stream) -> Record {
        let (key, explicit_hash_key, data) = self.record.into_parts();
        let record = Record::new(stream, key.into_string(), data);
        match explicit_hash_key {
            Some(hash_key) => record.with_explicit_hash_key(hash_key.to_string()),
            None => record,
        }
    }

    /// The end of the previous attempt, or the arrival: where the next attempt's delay starts.
    fn last_end(&self) -> Instant {
        self.attempts
            .as_ref()
            .map_or(self.arrival, |history| history.last_end())
    }

    /// Records a failed attempt; returns the time the record had waited if this was its first.
    fn add_failed_attempt(
        &mut self,
        sent_at: Instant,
        now: Instant,
        error: &Arc<AttemptError>,
    ) -> Option<Duration> {
        let first_wait = self
            .attempts
            .is_none()
            .then(|| sent_at.saturating_duration_since(self.arrival));
        let last_end = self.last_end();
        let delay = sent_at.saturating_duration_since(last_end);
        let duration = now.saturating_duration_since(sent_at);
        let attempt = Attempt::failed(delay, duration, error.clone());
        self.attempts
            .get_or_insert_with(|| Box::new(AttemptHistory::new(self.arrival)))
            .push(attempt, last_end + delay + duration);
        first_wait
    }
}

/// A Kinesis record ready to send, with the user records it carries.
#[derive(Debug)]
struct Batch {
    kinesis_record: KinesisRecord,
    records: Vec<Pending>,
    /// The predicted shard (slot); `None` when sent without a prediction.
    slot: Option<usize>,
    deadline: Instant,
    expiration: Instant,
    size: usize,
    /// Goes in a `PutRecords` request of its own (see `Pending::isolate`).
    alone_in_request: bool,
}

impl Batch {
    /// `records` is never empty: batches are made from finished aggregates, which hold at least
    /// one record, or from a single record.
    fn new(kinesis_record: KinesisRecord, records: Vec<Pending>, slot: Option<usize>) -> Self {
        let mut times = records.iter().map(|p| (p.deadline, p.expiration));
        let first = times.next().expect("a batch holds at least one record");
        let (deadline, expiration) = times.fold(first, |(d, e), (pd, pe)| (d.min(pd), e.min(pe)));
        Self::with_times(kinesis_record, records, slot, deadline, expiration)
    }

    /// A batch whose earliest deadline and expiration are already known.
    fn with_times(
        kinesis_record: KinesisRecord,
        records: Vec<Pending>,
        slot: Option<usize>,
        deadline: Instant,
        expiration: Instant,
    ) -> Self {
        let size = kinesis_record.billed_size();
        let alone_in_request = records.iter().any(|p| p.isolate);
        // A list that grew by doubling can hold twice its records' room until delivered, more
        // than each record's bookkeeping charge allows for (see `crate::memory`).
        let mut records = records;
        if records.capacity() - records.len() > records.len() / 8 {
            records.shrink_to_fit();
        }
        Self {
            kinesis_record,
            records,
            slot,
            deadline,
            expiration,
            size,
            alone_in_request,
        }
    }
}

/// An aggregate written to a shard the map has never listed (a child after a split or merge).
/// A KCL consumer keeps it only if the shard owns every record in it, which needs that shard's
/// range: the records keep their landing and wait, without being re-sent, for a map read that
/// knows the shard.
#[derive(Debug)]
struct HeldLanding {
    landing: Arc<Landing>,
    records: Vec<Pending>,
    /// The shard the aggregate was predicted for (in ordering mode it stays busy meanwhile).
    slot: Option<usize>,
    sent_at: Instant,
    landed_at: Instant,
    /// Past this, the landing is given up on and the records are re-sent alone: half of the
    /// shortest remaining lifetime, so the re-send still has time.
    decide_by: Instant,
}

impl HeldLanding {
    /// Whether a map read that started at `read_started` reflects the shards that existed when
    /// the aggregate was written: a read sent after the answer arrived saw the write.
    fn read_saw_the_write(&self, read_started: Option<Instant>) -> bool {
        read_started.is_some_and(|at| at >= self.landed_at)
    }

    fn landed(&self) -> Landed<'_> {
        Landed {
            landing: &self.landing,
            slot: self.slot,
            sent_at: self.sent_at,
            landed_at: self.landed_at,
        }
    }
}

/// Where and when an entry was written, for judging its landing.
#[derive(Clone, Copy, Debug)]
struct Landed<'a> {
    landing: &'a Arc<Landing>,
    /// The shard it was predicted for.
    slot: Option<usize>,
    sent_at: Instant,
    landed_at: Instant,
}

/// One predicted shard: its open aggregate, its rate-limit queue and its retry state.
#[derive(Debug)]
struct ShardState {
    id: ShardId,
    range: HashKeyRange,
    open: bool,
    aggregator: Aggregator,
    aggregated: Vec<Pending>,
    aggregate_deadline: Option<Instant>,
    /// The earliest expiration of `aggregated`.
    aggregate_expiration: Option<Instant>,
    /// Emptied record lists of delivered aggregates, kept for the next aggregates.
    spare_lists: Vec<Vec<Pending>>,
    /// Records in the shard's last finished aggregate: the room a new aggregate's list starts
    /// with, so it rarely grows record by record.
    last_aggregate_len: usize,
    /// Kinesis records waiting for tokens, oldest first (retries go to the front).
    ready: VecDeque<Batch>,
    /// A lower bound of the earliest expiration in `ready`.
    ready_expiration: Option<Instant>,
    limiter: ShardLimiter,
    backoff: Backoff,
    blocked_until: Option<Instant>,
    /// Ordering mode: a batch of this shard is in the collector or in flight.
    busy: bool,
    /// Ordering mode: one of this shard's aggregates landed elsewhere; send nothing until the
    /// map is re-read.
    awaiting_refresh: bool,
    collected_bytes: usize,
    timer: Option<Instant>,
    stats: ShardStats,
}

#[derive(Debug)]
struct Collector {
    batches: Vec<Batch>,
    size: usize,
    deadline: Option<Instant>,
}

/// One kind of `ListShards` read of a stream, paged, retried on a backoff when it fails: the
/// open shards (the map), or every shard (to look up a landing's closed shard).
#[derive(Debug)]
struct Listing {
    in_flight: bool,
    started_at: Instant,
    pages: ListingPages,
    /// When to read next: the periodic refresh, or the retry after a failure.
    next_at: Option<Instant>,
    backoff: RefreshBackoff,
}

impl Listing {
    fn new(now: Instant) -> Self {
        Self {
            in_flight: false,
            started_at: now,
            pages: ListingPages::default(),
            next_at: None,
            backoff: RefreshBackoff::new(),
        }
    }

    /// Starts a read at `now`, unless one is in flight. Returns whether it started.
    fn begin(&mut self, now: Instant) -> bool {
        if self.in_flight {
            return false;
        }
        self.in_flight = true;
        self.started_at = now;
        self.pages.clear();
        self.next_at = None;
        true
    }

    /// The read completed.
    fn succeeded(&mut self) {
        self.in_flight = false;
        self.backoff.reset();
    }

    /// The read failed: it is tried again after the backoff; returns when.
    fn failed(&mut self, now: Instant) -> Instant {
        self.in_flight = false;
        self.pages.clear();
        let retry_at = now + self.backoff.next_delay();
        self.next_at = Some(retry_at);
        retry_at
    }
}

#[derive(Debug)]
struct StreamState {
    stream: Stream,
    map: Option<ShardMap>,
    /// When the refresh that built `map` started; answers to requests sent before it may
    /// reflect an older layout and do not trigger another refresh.
    map_started_at: Option<Instant>,
    refresh: Listing,
    summary_known: bool,
    summary_in_flight: bool,
    max_record_size: usize,
    slots: Vec<ShardState>,
    slot_of: BTreeMap<ShardId, usize>,
    /// For each open shard of `map`, in map order, its slot.
    open_slots: Vec<usize>,
    /// Records waiting for a shard map (the first one, or a refresh after a wrong-shard
    /// landing), sorted by deadline.
    awaiting_map: VecDeque<Pending>,
    /// Aggregates that landed on shards the map did not know, waiting to be judged.
    held_landings: Vec<HeldLanding>,
    /// When a run of `ExpiredTokenException` answers began; a write ends it.
    expired_token_since: Option<Instant>,
    /// The listing of every shard, closed ones included, read to judge a landing on a shard
    /// that closed before the open shards could be listed.
    history: Listing,
    /// When the last finished listing of every shard started.
    history_read: Option<Instant>,
    /// Backoff of records sent without a prediction.
    unpredicted_backoff: Backoff,
    /// A flush was asked for while records waited for a map: flush again once it is installed.
    flush_on_map: bool,
    collector: Collector,
    timer: Option<Instant>,
    stats: StreamStats,
    /// When the last record for the stream was accepted.
    last_record_at: Instant,
    /// Idle for long: no map, no shards, no periodic reads (see `IDLE_STREAM_REFRESHES`).
    retired: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Stream(usize),
    Shard(usize, usize),
}

/// How records re-sent from the head of their shards are packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Packing {
    /// Aggregated among themselves, as usual.
    Aggregated,
    /// One Kinesis record each: a plain record is kept by a KCL consumer on whatever shard it
    /// lands, so its landing needs no judging.
    Alone,
}

#[derive(Debug)]
struct EntryMeta {
    slot: Option<usize>,
    records: Vec<Pending>,
}

#[derive(Debug)]
enum InFlightKind {
    PutRecords(Vec<EntryMeta>),
    ListShards,
    /// A page of the listing of every shard (see `StreamState::history`).
    ShardHistory,
    DescribeStreamSummary,
}

#[derive(Debug)]
struct InFlight {
    stream: usize,
    sent_at: Option<Instant>,
    kind: InFlightKind,
}

/// Per-slot consequences of one `PutRecords` answer.
#[derive(Debug, Default, Clone, Copy)]
struct SlotVerdict {
    retried: bool,
    /// Records are retried for a reason the shard's rate limit does not answer (an error, a
    /// whole request refused): the shard waits out a backoff. Entries throttled by the shard's
    /// limit alone are paced by the limiter, cut on the throttle, instead of idling the shard.
    back_off: bool,
    throttled: bool,
    written: bool,
    /// An aggregate of the shard landed on an unknown shard and waits to be judged.
    held: bool,
}

/// The deterministic heart of the producer: shard maps, per-shard aggregation, collection into
/// `PutRecords` calls, per-shard rate limiting, retries and outcomes. It does no IO and reads no
/// clock; it is driven by method calls that carry the current time.
///
/// # Driving the engine
///
/// *Inputs* are [`submit`](Self::submit), [`flush`](Self::flush),
/// [`flush_marker`](Self::flush_marker), [`abandon`](Self::abandon),
/// [`handle_response`](Self::handle_response) and [`handle_timeout`](Self::handle_timeout).
/// After any input, the driver polls the *outputs* in this order until each is empty:
///
/// 1. [`poll_request`](Self::poll_request): requests to send (at most as many as it can have in
///    flight; the rest wait in the engine and meanwhile keep growing fuller);
/// 2. [`poll_event`](Self::poll_event): per-record outcomes and flush completions;
/// 3. [`poll_timeout`](Self::poll_timeout): when to call `handle_timeout` next.
///
/// Every accepted record ends in exactly one [`Event::Delivered`] or [`Event::Failed`].
/// The same configuration and the same inputs give the same outputs, byte for byte.
///
/// ```
/// use std::time::{Duration, Instant};
/// use kpl_engine::{Engine, EngineConfig, Event, Record, Request, Response, Stream};
/// use kpl_engine::transport::{ListShardsResponse, PutRecordsEntryResult, PutRecordsResponse, ShardDescription, ShardId};
/// use kpl_aggregation::HashKeyRange;
///
/// let start = Instant::now();
/// let mut engine = Engine::new(EngineConfig::default())?;
/// let stream = Stream::new("orders")?;
/// engine.submit(Record::new(stream.clone(), "customer-1", &b"hello"[..]), start)?;
///
/// // The first request lists the stream's shards; answer with one shard.
/// let mut now = start;
/// let mut delivered = 0;
/// while delivered == 0 {
///     while let Some((id, request)) = engine.poll_request(now) {
///         let response = match request {
///             Request::ListShards(_) => Response::ListShards(ListShardsResponse {
///                 shards: vec![ShardDescription { shard_id: ShardId::from("shardId-0"), hash_key_range: HashKeyRange::FULL, open: true }],
///                 next_token: None,
///             }),
///             Request::PutRecords(put) => Response::PutRecords(PutRecordsResponse {
///                 entries: put.entries.iter().map(|_| PutRecordsEntryResult::Written {
///                     shard_id: ShardId::from("shardId-0"),
///                     sequence_number: "1".into(),
///                 }).collect(),
///             }),
///             _ => continue,
///         };
///         engine.handle_response(id, Ok(response), now);
///     }
///     while let Some(event) = engine.poll_event() {
///         if let Event::Delivered(delivery) = event {
///             assert_eq!(delivery.shard_id().as_str(), "shardId-0");
///             delivered += 1;
///         }
///     }
///     now = engine.poll_timeout().unwrap_or(now + Duration::from_millis(1));
///     engine.handle_timeout(now);
/// }
/// assert_eq!(engine.outstanding_records(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    rng: SmallRng,
    streams: Vec<StreamState>,
    stream_index: BTreeMap<Stream, usize>,
    /// The stream of the last record submitted: most records go where the previous one went.
    last_stream: Option<(Stream, usize)>,
    timers: BTreeSet<(Instant, Timer)>,
    outbox: VecDeque<(RequestId, Request)>,
    requests: BTreeMap<RequestId, InFlight>,
    next_request: u64,
    events: VecDeque<Event>,
    next_record: u64,
    /// Arrival times of records from `window_start` on; `None` once finished.
    window: VecDeque<Option<Instant>>,
    window_start: u64,
    /// Unfinished records from before `window_start`: when a few records stay unfinished for
    /// long, the window is compacted into here, so its size follows the outstanding records,
    /// not the records accepted since the oldest one.
    stragglers: BTreeMap<u64, Instant>,
    markers: VecDeque<(u64, FlushId)>,
    next_marker: u64,
    outstanding_records: usize,
    /// Memory charged for the outstanding records (see `crate::memory`).
    outstanding_bytes: usize,
}

fn arm(
    timers: &mut BTreeSet<(Instant, Timer)>,
    armed: &mut Option<Instant>,
    at: Instant,
    timer: Timer,
) {
    if armed.is_none_or(|current| at < current) {
        // The superseded wake-up goes now: left in the set, a far one (an expiry) would stay
        // until its time, one per re-arming.
        if let Some(superseded) = armed.replace(at) {
            timers.remove(&(superseded, timer));
        }
        timers.insert((at, timer));
    }
}

/// A `ListShards` page request: the first (`next_token` `None`) or a later one.
fn list_shards(stream: &Stream, next_token: Option<String>, filter: ShardFilter) -> Request {
    Request::ListShards(ListShardsRequest {
        stream: stream.clone(),
        next_token,
        filter,
        max_results: LIST_SHARDS_PAGE,
    })
}

fn min_instant(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

impl Engine {
    /// An engine with `config`, checked first.
    pub fn new(config: EngineConfig) -> Result<Self, InvalidConfig> {
        config.validate()?;
        Ok(Self {
            rng: SmallRng::seed_from_u64(config.rng_seed),
            config,
            streams: Vec::new(),
            stream_index: BTreeMap::new(),
            last_stream: None,
            timers: BTreeSet::new(),
            outbox: VecDeque::new(),
            requests: BTreeMap::new(),
            next_request: 0,
            events: VecDeque::new(),
            next_record: 0,
            window: VecDeque::new(),
            window_start: 0,
            stragglers: BTreeMap::new(),
            markers: VecDeque::new(),
            next_marker: 0,
            outstanding_records: 0,
            outstanding_bytes: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    // ----------------------------------------------------------------------------------------
    // Inputs
    // ----------------------------------------------------------------------------------------

    /// Accepts a record, or refuses it (handing it back) when it is invalid or the outstanding
    /// limits are reached.
    pub fn submit(&mut self, record: Record, now: Instant) -> Result<RecordId, Rejected> {
        let size = record.size();
        let charge = self.record_charge(size);
        if self.outstanding_records >= self.config.max_outstanding_records {
            let limit = self.config.max_outstanding_records;
            return Err(Rejected::new(
                RejectReason::TooManyRecords { limit },
                record,
            ));
        }
        if self.outstanding_records > 0
            && self.outstanding_bytes.saturating_add(charge) > self.config.max_outstanding_bytes
        {
            let reason = RejectReason::TooManyBytes {
                outstanding: self.outstanding_bytes,
                charge,
                limit: self.config.max_outstanding_bytes,
            };
            return Err(Rejected::new(reason, record));
        }
        let known = match &self.last_stream {
            Some((stream, si)) if stream.same_allocation(record.stream()) => Some(*si),
            _ => self.stream_index.get(record.stream()).copied(),
        };
        let limit = known.map_or(self.config.max_user_record_size, |si| {
            self.streams[si].max_record_size
        });
        if size > limit {
            return Err(Rejected::new(
                RejectReason::TooLarge { size, limit },
                record,
            ));
        }
        let explicit_hash_key = match record.explicit_hash_key().map(HashKey::parse_decimal) {
            None => None,
            Some(Ok(hash_key)) => Some(hash_key),
            Some(Err(error)) => {
                return Err(Rejected::new(RejectReason::ExplicitHashKey(error), record));
            }
        };
        let (stream, key, ehk_text, data) = record.into_parts();
        let key = match PartitionKey::new(key) {
            Ok(key) => key,
            Err(error) => {
                let chars = error.char_count();
                let mut record = Record::new(stream, error.into_key(), data);
                if let Some(text) = ehk_text {
                    record = record.with_explicit_hash_key(text);
                }
                return Err(Rejected::new(RejectReason::PartitionKey { chars }, record));
            }
        };
        let mut user_record = UserRecord::new(key, data);
        if let Some(hash_key) = explicit_hash_key {
            user_record = user_record.with_explicit_hash_key(hash_key);
        }

        let si = match known {
            Some(si) => si,
            None => self.stream_slot(&stream, now),
        };
        self.last_stream = Some((stream, si));
        let id = self.next_record;
        self.next_record += 1;
        self.window.push_back(Some(now));
        if self.window.len() > WINDOW_COMPACTION.max(4 * self.outstanding_records) {
            self.compact_window();
        }
        self.outstanding_records += 1;
        self.outstanding_bytes += charge;
        let expiration = now + self.config.record_ttl;
        let pending = Pending {
            id,
            hash_key: user_record.hash_key(),
            record: user_record,
            arrival: now,
            deadline: (now + self.config.record_max_buffered_time).min(expiration),
            expiration,
            attempts: None,
            isolate: false,
        };
        let stream = &mut self.streams[si];
        stream.last_record_at = now;
        stream.stats.user_records_received += 1;
        stream.stats.user_records_pending += 1;
        if stream.retired {
            stream.retired = false;
            self.start_refresh(si, now);
        }
        self.route(si, pending, now);
        Ok(RecordId(id))
    }

    /// Sends what is buffered for `stream` (or every stream) now, without waiting for deadlines.
    /// Rate limits still apply. Records waiting for a shard map keep waiting for it and are
    /// sent as soon as it arrives.
    pub fn flush(&mut self, stream: Option<&Stream>, now: Instant) {
        let selected: Vec<usize> = match stream {
            Some(stream) => self.stream_index.get(stream).copied().into_iter().collect(),
            None => (0..self.streams.len()).collect(),
        };
        for si in selected {
            let stream = &mut self.streams[si];
            stream.flush_on_map |= !stream.awaiting_map.is_empty();
            for slot in 0..self.streams[si].slots.len() {
                self.finish_aggregate(si, slot);
                // Forget the old wake-up; servicing arms the one that is still needed.
                self.streams[si].slots[slot].timer = None;
                self.service_shard(si, slot, now);
            }
            self.flush_collector(si);
            self.streams[si].timer = None;
            self.service_stream(si, now);
        }
    }

    /// Flushes every stream and returns a marker: [`Event::Flushed`] with this id comes once
    /// every record accepted before this call has its outcome.
    pub fn flush_marker(&mut self, now: Instant) -> FlushId {
        let id = FlushId(self.next_marker);
        self.next_marker += 1;
        self.markers.push_back((self.next_record, id));
        self.retire_window();
        self.flush(None, now);
        id
    }

    /// Drops a flush marker no one waits for any more: no [`Event::Flushed`] comes for it, and
    /// the engine does not keep it until its records finish.
    pub fn forget_flush_marker(&mut self, id: FlushId) {
        self.markers.retain(|&(_, marker)| marker != id);
    }

    /// Flush markers whose records have not all finished.
    pub fn pending_flush_markers(&self) -> usize {
        self.markers.len()
    }

    /// Fails every outstanding record at once and forgets every request in flight; their
    /// answers will be ignored. Used at shutdown. Records that no call has carried yet fail with
    /// [`FailureReason::Abandoned`]; records of calls in flight (or written on a shard whose
    /// landing waits to be judged) with [`FailureReason::AbandonedInFlight`], as they may have
    /// been written.
    pub fn abandon(&mut self) {
        let mut abandoned: Vec<(usize, Pending, FailureReason)> = Vec::new();
        for (si, stream) in self.streams.iter_mut().enumerate() {
            let mut taken: Vec<Pending> = stream.awaiting_map.drain(..).collect();
            for batch in stream.collector.batches.drain(..) {
                taken.extend(batch.records);
            }
            for held in stream.held_landings.drain(..) {
                abandoned.extend(
                    held.records
                        .into_iter()
                        .map(|pending| (si, pending, FailureReason::AbandonedInFlight)),
                );
            }
            stream.collector.size = 0;
            stream.collector.deadline = None;
            for shard in &mut stream.slots {
                shard.aggregator.clear();
                taken.append(&mut shard.aggregated);
                shard.aggregate_deadline = None;
                shard.aggregate_expiration = None;
                for batch in shard.ready.drain(..) {
                    taken.extend(batch.records);
                }
                shard.busy = false;
                shard.collected_bytes = 0;
            }
            stream.refresh.in_flight = false;
            stream.history.in_flight = false;
            stream.history.next_at = None;
            stream.summary_in_flight = false;
            abandoned.extend(
                taken
                    .into_iter()
                    .map(|pending| (si, pending, FailureReason::Abandoned)),
            );
        }
        for (_, in_flight) in mem::take(&mut self.requests) {
            if let InFlightKind::PutRecords(entries) = in_flight.kind {
                // A request still in the outbox was never handed out: not written.
                let reason = if in_flight.sent_at.is_some() {
                    FailureReason::AbandonedInFlight
                } else {
                    FailureReason::Abandoned
                };
                for entry in entries {
                    abandoned.extend(
                        entry
                            .records
                            .into_iter()
                            .map(|pending| (in_flight.stream, pending, reason)),
                    );
                }
            }
        }
        self.outbox.clear();
        abandoned.sort_by_key(|(_, p, _)| p.id);
        for (si, pending, reason) in abandoned {
            self.fail(si, pending, reason);
        }
    }

    /// Hands the engine the answer to a request from [`poll_request`](Self::poll_request).
    /// Answers to unknown or abandoned requests are ignored.
    pub fn handle_response(
        &mut self,
        id: RequestId,
        result: Result<Response, TransportError>,
        now: Instant,
    ) {
        let Some(in_flight) = self.requests.remove(&id) else {
            return;
        };
        let si = in_flight.stream;
        let sent_at = in_flight.sent_at.unwrap_or(now);
        match (in_flight.kind, result) {
            (InFlightKind::PutRecords(entries), Ok(Response::PutRecords(response))) => {
                self.on_put_records(si, entries, Ok(response), sent_at, now);
            }
            (InFlightKind::PutRecords(entries), Ok(_)) => {
                let error = TransportError::new(
                    TransportErrorKind::Other,
                    "UnexpectedResponse",
                    "the transport answered PutRecords with another operation's response",
                );
                self.on_put_records(si, entries, Err(error), sent_at, now);
            }
            (InFlightKind::PutRecords(entries), Err(error)) => {
                self.on_put_records(si, entries, Err(error), sent_at, now);
            }
            (kind @ (InFlightKind::ListShards | InFlightKind::ShardHistory), result) => {
                let page = match result {
                    Ok(Response::ListShards(page)) => Ok(page),
                    Ok(_) => Err(TransportError::new(
                        TransportErrorKind::Other,
                        "UnexpectedResponse",
                        "not a ListShards response",
                    )),
                    Err(error) => Err(error),
                };
                if matches!(kind, InFlightKind::ShardHistory) {
                    self.on_shard_history(si, page, now);
                } else {
                    self.on_list_shards(si, page, now);
                }
            }
            (InFlightKind::DescribeStreamSummary, result) => {
                let summary = match result {
                    Ok(Response::DescribeStreamSummary(summary)) => Some(summary),
                    _ => None,
                };
                self.on_summary(si, summary);
            }
        }
    }

    /// Runs everything that was due at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Stream(si) => {
                    if self.streams[si].timer == Some(at) {
                        self.streams[si].timer = None;
                        self.service_stream(si, now);
                    }
                }
                Timer::Shard(si, slot) => {
                    let Some(shard) = self.streams[si].slots.get_mut(slot) else {
                        continue;
                    };
                    if shard.timer == Some(at) {
                        shard.timer = None;
                        self.service_shard(si, slot, now);
                    }
                }
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // Outputs
    // ----------------------------------------------------------------------------------------

    /// The next request to send. The driver should call this only when it can send (it may keep
    /// requests in the engine while its connections are busy).
    pub fn poll_request(&mut self, now: Instant) -> Option<(RequestId, Request)> {
        loop {
            let (id, mut request) = self.outbox.pop_front()?;
            if let Request::PutRecords(put) = &mut request {
                self.drop_expired_entries(id, put, now);
                if put.entries.is_empty() {
                    self.requests.remove(&id);
                    continue;
                }
            }
            if let Some(in_flight) = self.requests.get_mut(&id) {
                in_flight.sent_at = Some(now);
            }
            return Some((id, request));
        }
    }

    /// A request waits in the outbox while the driver's connections are busy; records that
    /// reached their `record_ttl` meanwhile are not sent: they expire. An entry that holds any
    /// of them leaves the request (its encoded aggregate carries them); the rest of its records
    /// go back to the head of their shards, to be packed again.
    fn drop_expired_entries(&mut self, id: RequestId, put: &mut PutRecordsRequest, now: Instant) {
        let Some(in_flight) = self.requests.get_mut(&id) else {
            return;
        };
        let si = in_flight.stream;
        let InFlightKind::PutRecords(metas) = &mut in_flight.kind else {
            return;
        };
        let holds_expired = |meta: &EntryMeta| meta.records.iter().any(|p| p.expiration <= now);
        if !metas.iter().any(holds_expired) {
            return;
        }
        let mut dropped = Vec::new();
        let mut kept_metas = Vec::with_capacity(metas.len());
        let mut kept_entries = Vec::with_capacity(metas.len());
        for (meta, entry) in mem::take(metas)
            .into_iter()
            .zip(mem::take(&mut put.entries))
        {
            if holds_expired(&meta) {
                dropped.push(meta);
            } else {
                kept_metas.push(meta);
                kept_entries.push(entry);
            }
        }
        *metas = kept_metas;
        put.entries = kept_entries;
        let mut requeued = false;
        for meta in dropped {
            let (expired, survivors): (Vec<Pending>, Vec<Pending>) =
                meta.records.into_iter().partition(|p| p.expiration <= now);
            for pending in expired {
                self.expire(si, pending, now);
            }
            if !survivors.is_empty() {
                self.requeue_front(si, survivors, Packing::Aggregated, now);
                requeued = true;
            }
            // Ordering mode: its shard no longer has a call coming.
            if let Some(slot) = meta.slot
                && self.release_busy_slot(si, Some(slot))
            {
                self.service_shard(si, slot, now);
            }
        }
        if requeued {
            self.service_all_shards(si, now);
        }
    }

    /// The next outcome or flush completion.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        // Wake-ups superseded by earlier ones (or disarmed) are dropped here, so the driver
        // does not wake for nothing.
        while let Some(&(at, timer)) = self.timers.first() {
            let armed = match timer {
                Timer::Stream(si) => self.streams[si].timer,
                Timer::Shard(si, slot) => self.streams[si].slots.get(slot).and_then(|s| s.timer),
            };
            if armed == Some(at) {
                return Some(at);
            }
            self.timers.pop_first();
        }
        None
    }

    /// Whether events are waiting for [`poll_event`](Self::poll_event).
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Whether requests are waiting for [`poll_request`](Self::poll_request).
    pub fn has_requests(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Records accepted so far (finished or not).
    pub fn records_accepted(&self) -> u64 {
        self.next_record
    }

    /// Records accepted and not finished.
    pub fn outstanding_records(&self) -> usize {
        self.outstanding_records
    }

    /// The memory charged against `max_outstanding_bytes` for the records accepted and not
    /// finished: each one's key, data, encoded copies and bookkeeping (see [`crate::memory`]).
    pub fn outstanding_bytes(&self) -> usize {
        self.outstanding_bytes
    }

    /// What one record of `size` bytes (key and data) is charged while outstanding.
    fn record_charge(&self, size: usize) -> usize {
        record_charge(size, self.config.record_overhead_bytes)
    }

    /// When the oldest unfinished record was accepted.
    pub fn oldest_outstanding(&self) -> Option<Instant> {
        match self.stragglers.first_key_value() {
            Some((_, &arrival)) => Some(arrival),
            None => self.window.front().copied().flatten(),
        }
    }

    /// Statistics per stream.
    pub fn stats(&self) -> impl Iterator<Item = (&Stream, StreamStats)> {
        self.streams.iter().map(|stream| {
            let mut stats = stream.stats.clone();
            for shard in &stream.slots {
                let mut shard_stats = shard.stats.clone();
                shard_stats.rate_factor = shard.limiter.rate_factor();
                stats.shards.insert(shard.id.clone(), shard_stats);
            }
            (&stream.stream, stats)
        })
    }

    /// The current shard map of `stream`, if one has been read.
    pub fn shard_map(&self, stream: &Stream) -> Option<&ShardMap> {
        let &si = self.stream_index.get(stream)?;
        self.streams[si].map.as_ref()
    }

    // ----------------------------------------------------------------------------------------
    // Streams and shard maps
    // ----------------------------------------------------------------------------------------

    fn stream_slot(&mut self, stream: &Stream, now: Instant) -> usize {
        if let Some(&si) = self.stream_index.get(stream) {
            return si;
        }
        let si = self.streams.len();
        self.streams.push(StreamState {
            stream: stream.clone(),
            map: None,
            map_started_at: None,
            refresh: Listing::new(now),
            summary_known: false,
            summary_in_flight: false,
            max_record_size: self.config.max_user_record_size,
            slots: Vec::new(),
            slot_of: BTreeMap::new(),
            open_slots: Vec::new(),
            awaiting_map: VecDeque::new(),
            held_landings: Vec::new(),
            expired_token_since: None,
            history: Listing::new(now),
            history_read: None,
            unpredicted_backoff: Backoff::new(
                self.config.retry_backoff_base,
                self.config.retry_backoff_cap,
            ),
            flush_on_map: false,
            collector: Collector {
                batches: Vec::new(),
                size: 0,
                deadline: None,
            },
            timer: None,
            stats: StreamStats::default(),
            last_record_at: now,
            retired: false,
        });
        self.stream_index.insert(stream.clone(), si);
        self.start_refresh(si, now);
        si
    }

    fn enqueue(&mut self, si: usize, kind: InFlightKind, request: Request) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.requests.insert(
            id,
            InFlight {
                stream: si,
                sent_at: None,
                kind,
            },
        );
        self.outbox.push_back((id, request));
        id
    }

    /// Whether the stream has had nothing to do for `IDLE_STREAM_REFRESHES` refresh intervals:
    /// no record outstanding or accepted, no read under way.
    fn is_idle(&self, si: usize, now: Instant) -> bool {
        let stream = &self.streams[si];
        let idle_for = self
            .config
            .shard_map_refresh_interval
            .saturating_mul(IDLE_STREAM_REFRESHES);
        stream.stats.user_records_pending == 0
            && now.saturating_duration_since(stream.last_record_at) >= idle_for
            && !stream.refresh.in_flight
            && !stream.history.in_flight
            && !stream.summary_in_flight
            && stream.held_landings.is_empty()
            && stream.awaiting_map.is_empty()
            && stream.collector.batches.is_empty()
    }

    /// Frees an idle stream's map and shards and stops re-reading its map; its statistics stay
    /// (without the per-shard part). The next record for it reads the map again.
    fn retire(&mut self, si: usize) {
        let stream = &mut self.streams[si];
        for (slot, shard) in stream.slots.iter().enumerate() {
            if let Some(at) = shard.timer {
                self.timers.remove(&(at, Timer::Shard(si, slot)));
            }
        }
        stream.retired = true;
        stream.map = None;
        stream.map_started_at = None;
        stream.refresh.next_at = None;
        stream.history.next_at = None;
        stream.history_read = None;
        stream.slots = Vec::new();
        stream.slot_of = BTreeMap::new();
        stream.open_slots = Vec::new();
        stream.awaiting_map = VecDeque::new();
        stream.held_landings = Vec::new();
        stream.collector.batches = Vec::new();
    }

    fn start_refresh(&mut self, si: usize, now: Instant) {
        let stream = &mut self.streams[si];
        if !stream.refresh.begin(now) {
            return;
        }
        let request = list_shards(&stream.stream, None, ShardFilter::AtLatest);
        let describe = (!stream.summary_known && !stream.summary_in_flight).then(|| {
            stream.summary_in_flight = true;
            Request::DescribeStreamSummary(DescribeStreamSummaryRequest {
                stream: stream.stream.clone(),
            })
        });
        self.enqueue(si, InFlightKind::ListShards, request);
        if let Some(describe) = describe {
            self.enqueue(si, InFlightKind::DescribeStreamSummary, describe);
        }
    }

    fn on_summary(&mut self, si: usize, summary: Option<StreamSummary>) {
        let stream = &mut self.streams[si];
        stream.summary_in_flight = false;
        // A failed or unhelpful answer leaves the configured limit; the next refresh asks again.
        if let Some(summary) = summary {
            stream.summary_known = true;
            if let Some(kib) = summary.max_record_size_kib {
                let bytes = (kib as usize).saturating_mul(1024);
                stream.max_record_size = bytes.clamp(1024 * 1024, MAX_RECORD_SIZE_LIMIT);
            }
        }
    }

    fn on_list_shards(
        &mut self,
        si: usize,
        page: Result<ListShardsResponse, TransportError>,
        now: Instant,
    ) {
        match page {
            Ok(page) => {
                let stream = &mut self.streams[si];
                match stream.refresh.pages.add(page.shards, page.next_token) {
                    NextPage::Read(token) => {
                        let request =
                            list_shards(&stream.stream, Some(token), ShardFilter::AtLatest);
                        self.enqueue(si, InFlightKind::ListShards, request);
                    }
                    NextPage::Done(shards) => self.install_map(si, shards, now),
                    NextPage::Malformed(_) => {
                        stream.stats.error("MalformedListing", 1);
                        self.refresh_failed(si, now);
                    }
                }
            }
            Err(error) => {
                // In ordering mode records never leave without a map: when it cannot be read
                // for a reason retrying cannot fix, they fail with that reason now, not by
                // expiring later under a misleading one.
                let unroutable = self.config.ordering == OrderingMode::PerShard
                    && self.streams[si].map.is_none()
                    && !error.is_retryable();
                if error.kind() == TransportErrorKind::NotFound || unroutable {
                    self.fail_queued(si, "ListShards", &error, now);
                }
                self.refresh_failed(si, now);
            }
        }
    }

    /// The stream does not exist: every record queued for it (not those in requests already
    /// made) fails now with the service's answer, instead of each waiting for its own.
    fn fail_queued(&mut self, si: usize, operation: &str, error: &TransportError, now: Instant) {
        let stream = &mut self.streams[si];
        let mut waiting: Vec<Pending> = stream.awaiting_map.drain(..).collect();
        for batch in stream.collector.batches.drain(..) {
            if let Some(shard) = batch.slot.and_then(|slot| stream.slots.get_mut(slot)) {
                shard.collected_bytes = shard.collected_bytes.saturating_sub(batch.size);
                shard.busy = false;
            }
            waiting.extend(batch.records);
        }
        for held in stream.held_landings.drain(..) {
            if let Some(shard) = held.slot.and_then(|slot| stream.slots.get_mut(slot)) {
                shard.busy = false;
            }
            waiting.extend(held.records);
        }
        stream.collector.size = 0;
        stream.collector.deadline = None;
        for shard in &mut stream.slots {
            shard.awaiting_refresh = false;
            shard.aggregator.clear();
            shard.aggregate_deadline = None;
            shard.aggregate_expiration = None;
            shard.ready_expiration = None;
            for batch in shard.ready.drain(..) {
                waiting.extend(batch.records);
            }
            waiting.append(&mut shard.aggregated);
        }
        waiting.sort_by_key(|p| p.id);
        let detail =
            AttemptError::shared(error.code(), format!("{operation}: {}", error.message()));
        for mut pending in waiting {
            pending.add_failed_attempt(now, now, &detail);
            self.fail(si, pending, FailureReason::Terminal(error.kind()));
        }
    }

    fn start_history_read(&mut self, si: usize, now: Instant) {
        let stream = &mut self.streams[si];
        if !stream.history.begin(now) {
            return;
        }
        let request = list_shards(&stream.stream, None, ShardFilter::FromTrimHorizon);
        self.enqueue(si, InFlightKind::ShardHistory, request);
    }

    fn on_shard_history(
        &mut self,
        si: usize,
        page: Result<ListShardsResponse, TransportError>,
        now: Instant,
    ) {
        let stream = &mut self.streams[si];
        match page {
            Ok(page) => match stream.history.pages.add(page.shards, page.next_token) {
                NextPage::Read(token) => {
                    let request =
                        list_shards(&stream.stream, Some(token), ShardFilter::FromTrimHorizon);
                    self.enqueue(si, InFlightKind::ShardHistory, request);
                    return;
                }
                NextPage::Done(shards) => {
                    if let Some(map) = stream.map.as_mut() {
                        map.remember(&shards);
                    }
                }
                NextPage::Malformed(_) => {
                    stream.stats.error("MalformedListing", 1);
                    self.history_failed(si, now);
                    return;
                }
            },
            Err(error) if error.kind() == TransportErrorKind::NotFound => {
                stream.history.in_flight = false;
                self.fail_queued(si, "ListShards", &error, now);
                return;
            }
            Err(_) => {
                self.history_failed(si, now);
                return;
            }
        }
        let stream = &mut self.streams[si];
        stream.history.succeeded();
        stream.history_read = Some(stream.history.started_at);
        self.judge_held_landings(si, now);
    }

    /// Reads every shard again after a backoff; the landings wait, at most until their
    /// `decide_by` (armed already).
    fn history_failed(&mut self, si: usize, now: Instant) {
        let stream = &mut self.streams[si];
        let retry_at = stream.history.failed(now);
        arm(
            &mut self.timers,
            &mut stream.timer,
            retry_at,
            Timer::Stream(si),
        );
    }

    fn refresh_failed(&mut self, si: usize, now: Instant) {
        let stream = &mut self.streams[si];
        stream.refresh.failed(now);
        // Records held for the first map stop waiting for this read: servicing the stream
        // sends those past their deadline and arms the next wake-up (the retry included).
        stream.timer = None;
        self.service_stream(si, now);
    }

    fn install_map(&mut self, si: usize, shards: Vec<ShardDescription>, now: Instant) {
        let interval = self.config.shard_map_refresh_interval;
        let jitter = self.rng.random_range(0.9..=1.1);
        let aggregate_limit = self.aggregate_limit(si);
        let outer_partition_key = self.config.outer_partition_key;
        let stream = &mut self.streams[si];
        let map = ShardMap::from_shards(&shards, stream.map.as_ref());
        if !map.is_consistent() {
            // Pages read across a reshard; read again rather than route by a torn map.
            self.refresh_failed(si, now);
            return;
        }
        stream.refresh.succeeded();
        stream.map_started_at = Some(stream.refresh.started_at);
        let next_at = now + interval.mul_f64(jitter);
        stream.refresh.next_at = Some(next_at);

        let mut open_slots = Vec::with_capacity(map.open_shards().len());
        for &(range, ref shard_id) in map.open_shards() {
            let slot = match stream.slot_of.get(shard_id) {
                Some(&slot) => slot,
                None => {
                    let slot = stream.slots.len();
                    stream.slots.push(ShardState {
                        id: shard_id.clone(),
                        range,
                        open: true,
                        aggregator: Aggregator::new(
                            aggregate_limit,
                            self.config.outer_partition_key,
                        ),
                        aggregated: Vec::new(),
                        aggregate_deadline: None,
                        aggregate_expiration: None,
                        spare_lists: Vec::new(),
                        last_aggregate_len: 0,
                        ready: VecDeque::new(),
                        ready_expiration: None,
                        limiter: ShardLimiter::new(self.config.rate_limit, now),
                        backoff: Backoff::new(
                            self.config.retry_backoff_base,
                            self.config.retry_backoff_cap,
                        ),
                        blocked_until: None,
                        busy: false,
                        awaiting_refresh: false,
                        collected_bytes: 0,
                        timer: None,
                        stats: ShardStats::default(),
                    });
                    stream.slot_of.insert(shard_id.clone(), slot);
                    slot
                }
            };
            open_slots.push(slot);
        }
        // Records queued on shards that closed go through the new map; those in flight are
        // judged by where they land.
        let mut displaced: Vec<Pending> = Vec::new();
        for (slot, shard) in stream.slots.iter_mut().enumerate() {
            shard.open = open_slots.contains(&slot);
            shard.awaiting_refresh = false;
            if !shard.open {
                shard.aggregate_deadline = None;
                shard.aggregate_expiration = None;
                for batch in shard.ready.drain(..) {
                    displaced.extend(batch.records);
                }
                displaced.append(&mut shard.aggregated);
                shard.ready_expiration = None;
                // A closed shard takes no more records: its buffers (an aggregate's worth, and
                // the record lists kept for reuse) go, so a stream that reshards often does not
                // keep one set per shard it ever had.
                shard.aggregator = Aggregator::new(aggregate_limit, outer_partition_key);
                shard.aggregated = Vec::new();
                shard.spare_lists = Vec::new();
                shard.ready = VecDeque::new();
            }
        }
        displaced.extend(stream.awaiting_map.drain(..));
        displaced.sort_by_key(|p| p.id);
        stream.map = Some(map);
        stream.open_slots = open_slots;
        arm(
            &mut self.timers,
            &mut stream.timer,
            next_at,
            Timer::Stream(si),
        );
        let flush = mem::take(&mut stream.flush_on_map);
        // Records that waited (in ordering mode, possibly until their expiration) leave within one
        // buffering time of the map's arrival.
        let latest = now + self.config.record_max_buffered_time;
        for mut pending in displaced {
            pending.deadline = pending.deadline.min(latest);
            self.route(si, pending, now);
        }
        // After the routing above: records re-sent from held landings go to the head of their
        // shards, ahead of the records that were queued behind them.
        self.judge_held_landings(si, now);
        if flush {
            let stream = self.streams[si].stream.clone();
            self.flush(Some(&stream), now);
        }
    }

    /// A landing that contradicts the map: refresh, unless the map was read after the request
    /// was sent (then it already reflects what the request saw).
    fn invalidate_map(&mut self, si: usize, sent_at: Instant, now: Instant) {
        let stream = &self.streams[si];
        if stream.map_started_at.is_none_or(|read| sent_at >= read) {
            self.start_refresh(si, now);
        }
    }

    // ----------------------------------------------------------------------------------------
    // Aggregation and limiting
    // ----------------------------------------------------------------------------------------

    fn predict(&self, si: usize, hash_key: HashKey) -> Option<usize> {
        let stream = &self.streams[si];
        let index = stream.map.as_ref()?.lookup(hash_key)?;
        stream.open_slots.get(index).copied()
    }

    /// Sends a record to its predicted shard's aggregate, to the map wait, or alone.
    #[inline(always)]
    fn route(&mut self, si: usize, pending: Pending, now: Instant) {
        if let Some(slot) = self.predict(si, pending.hash_key) {
            self.aggregate(si, slot, pending, now);
            return;
        }
        // No map yet (the map is never torn: see `install_map`). Wait for it; at the deadline
        // the record goes alone, unpredicted, except in ordering mode.
        let stream = &mut self.streams[si];
        Self::await_map(&mut self.timers, si, stream, pending);
    }

    fn await_map(
        timers: &mut BTreeSet<(Instant, Timer)>,
        si: usize,
        stream: &mut StreamState,
        pending: Pending,
    ) {
        let deadline = pending.deadline;
        // Records mostly arrive in deadline order: append without searching.
        if stream
            .awaiting_map
            .back()
            .is_none_or(|last| last.deadline <= deadline)
        {
            stream.awaiting_map.push_back(pending);
        } else {
            let at = stream
                .awaiting_map
                .partition_point(|p| p.deadline <= deadline);
            stream.awaiting_map.insert(at, pending);
        }
        arm(timers, &mut stream.timer, deadline, Timer::Stream(si));
    }

    fn send_unpredicted(&mut self, si: usize, pending: Pending, now: Instant) {
        let mut record = KinesisRecord::new(
            pending.record.partition_key().as_str(),
            pending.record.data().clone(),
        );
        record = record.with_explicit_hash_key(pending.hash_key);
        let batch = Batch::new(record, vec![pending], None);
        self.collect(si, batch, now);
    }

    #[inline(always)]
    fn aggregate(&mut self, si: usize, slot: usize, pending: Pending, now: Instant) {
        let max_count = if self.config.aggregation_enabled {
            self.config.aggregation_max_count
        } else {
            1
        };
        let shard = &mut self.streams[si].slots[slot];
        if shard.aggregated.len() as u64 >= max_count {
            Self::finish_shard_aggregate(shard, slot);
        }
        if let Some(finished) = shard.aggregator.push(&pending.record) {
            Self::push_aggregate(shard, slot, finished);
        }
        shard.aggregate_deadline = min_instant(shard.aggregate_deadline, Some(pending.deadline));
        shard.aggregate_expiration =
            min_instant(shard.aggregate_expiration, Some(pending.expiration));
        if shard.aggregated.capacity() == 0 {
            // Room is taken when a record comes, not when the last aggregate finished: a shard
            // that stops sending holds no empty list sized for a whole aggregate.
            match shard.spare_lists.pop() {
                Some(list) => shard.aggregated = list,
                None => shard.aggregated.reserve(shard.last_aggregate_len),
            }
        }
        shard.aggregated.push(pending);
        let due_now = shard.aggregated.len() as u64 >= max_count;
        if due_now {
            Self::finish_shard_aggregate(shard, slot);
        }
        if shard.ready.is_empty() {
            if let Some(deadline) = shard.aggregate_deadline {
                arm(
                    &mut self.timers,
                    &mut shard.timer,
                    deadline,
                    Timer::Shard(si, slot),
                );
            }
        } else {
            self.service_shard(si, slot, now);
        }
    }

    /// The size limit of the stream's aggregates: `aggregation_max_size`, but never so large
    /// that an aggregate and its outer partition key pass the stream's record limit (the
    /// service would refuse the whole request).
    fn aggregate_limit(&self, si: usize) -> MaxAggregateSize {
        let outer_key = match self.config.outer_partition_key {
            OuterPartitionKey::Constant => OuterPartitionKey::CONSTANT.len(),
            _ => PartitionKey::MAX_BYTES,
        };
        let record_limit = self.streams[si].max_record_size.saturating_sub(outer_key);
        let bytes = self.config.aggregation_max_size.get().min(record_limit);
        MaxAggregateSize::new(bytes).unwrap_or(self.config.aggregation_max_size)
    }

    fn push_ready(shard: &mut ShardState, batch: Batch) {
        shard.ready_expiration = min_instant(shard.ready_expiration, Some(batch.expiration));
        shard.ready.push_back(batch);
    }

    fn finish_shard_aggregate(shard: &mut ShardState, slot: usize) {
        if let Some(record) = shard.aggregator.finish() {
            Self::push_aggregate(shard, slot, record);
        }
        shard.aggregate_deadline = None;
        shard.aggregate_expiration = None;
    }

    /// Queues the shard's finished aggregate with the records in it.
    fn push_aggregate(shard: &mut ShardState, slot: usize, record: KinesisRecord) {
        let records = mem::take(&mut shard.aggregated);
        shard.last_aggregate_len = records.len();
        let batch = match (
            shard.aggregate_deadline.take(),
            shard.aggregate_expiration.take(),
        ) {
            (Some(deadline), Some(expiration)) => {
                Batch::with_times(record, records, Some(slot), deadline, expiration)
            }
            _ => Batch::new(record, records, Some(slot)),
        };
        Self::push_ready(shard, batch);
    }

    fn finish_aggregate(&mut self, si: usize, slot: usize) {
        Self::finish_shard_aggregate(&mut self.streams[si].slots[slot], slot);
    }

    /// Puts records to retry at the front of their (re-predicted) shards' queues, aggregated
    /// among themselves or each alone, so they go before anything accepted after them.
    fn requeue_front(&mut self, si: usize, records: Vec<Pending>, packing: Packing, now: Instant) {
        let mut by_slot: BTreeMap<usize, Vec<Pending>> = BTreeMap::new();
        for pending in records {
            match self.predict(si, pending.hash_key) {
                Some(slot) => by_slot.entry(slot).or_default().push(pending),
                None => {
                    let stream = &mut self.streams[si];
                    Self::await_map(&mut self.timers, si, stream, pending);
                }
            }
        }
        let max_count = if self.config.aggregation_enabled && packing == Packing::Aggregated {
            self.config.aggregation_max_count
        } else {
            1
        };
        for (slot, records) in by_slot {
            let mut aggregator =
                Aggregator::new(self.aggregate_limit(si), self.config.outer_partition_key);
            let mut batches: Vec<Batch> = Vec::new();
            let mut current: Vec<Pending> = Vec::new();
            for pending in records {
                if current.len() as u64 >= max_count
                    && let Some(record) = aggregator.finish()
                {
                    batches.push(Batch::new(record, mem::take(&mut current), Some(slot)));
                }
                if let Some(record) = aggregator.push(&pending.record) {
                    batches.push(Batch::new(record, mem::take(&mut current), Some(slot)));
                }
                current.push(pending);
            }
            if let Some(record) = aggregator.finish() {
                batches.push(Batch::new(record, current, Some(slot)));
            }
            let shard = &mut self.streams[si].slots[slot];
            for batch in batches.into_iter().rev() {
                shard.ready_expiration =
                    min_instant(shard.ready_expiration, Some(batch.expiration));
                shard.ready.push_front(batch);
            }
            self.service_shard(si, slot, now);
        }
    }

    /// Moves a shard forward: closes a due aggregate, fails expired records, passes what the
    /// limiter allows to the collector, and arms the shard's next wake-up.
    fn service_shard(&mut self, si: usize, slot: usize, now: Instant) {
        let ordering = self.config.ordering == OrderingMode::PerShard;
        {
            // An open aggregate holding a record at its expiry is closed, so the sweep sees it.
            let shard = &mut self.streams[si].slots[slot];
            if shard.aggregate_expiration.is_some_and(|at| at <= now) {
                Self::finish_shard_aggregate(shard, slot);
            }
        }
        self.sweep_expired(si, slot, now);
        let parent_busy = ordering && self.parent_busy(si, slot);
        let mut wake: Option<Instant> = None;
        loop {
            let shard = &mut self.streams[si].slots[slot];
            if shard.ready.is_empty() {
                // The open aggregate closes at its deadline, but only once nothing waits ahead
                // of it: while the shard is held back (rate limit, backoff, ordering), records
                // keep joining it instead of leaving as a string of small aggregates.
                if shard
                    .aggregate_deadline
                    .is_some_and(|deadline| deadline <= now)
                {
                    Self::finish_shard_aggregate(shard, slot);
                }
            }
            let Some(front) = shard.ready.front() else {
                shard.ready_expiration = None;
                break;
            };
            if let Some(until) = shard.blocked_until {
                if until > now {
                    wake = Some(until);
                    break;
                }
                shard.blocked_until = None;
            }
            if ordering && (shard.busy || shard.awaiting_refresh || parent_busy) {
                break;
            }
            if let Err(at) = shard.limiter.try_take(front.size, now) {
                wake = Some(at);
                break;
            }
            let Some(batch) = shard.ready.pop_front() else {
                break;
            };
            if ordering {
                shard.busy = true;
            }
            self.collect(si, batch, now);
        }
        let shard = &mut self.streams[si].slots[slot];
        // With batches waiting, the blocker decides the next wake-up (the open aggregate's
        // deadline is then already past or irrelevant); without, the aggregate's deadline does.
        let aggregate_due = if shard.ready.is_empty() {
            shard.aggregate_deadline
        } else {
            None
        };
        let next = min_instant(
            min_instant(wake, aggregate_due),
            min_instant(shard.ready_expiration, shard.aggregate_expiration),
        );
        if let Some(at) = next {
            arm(
                &mut self.timers,
                &mut shard.timer,
                at,
                Timer::Shard(si, slot),
            );
        }
    }

    /// Ordering mode: whether a closed shard overlapping this one still has a request in
    /// flight. Its records may come back for retry, and must go before this shard's.
    fn parent_busy(&self, si: usize, slot: usize) -> bool {
        let stream = &self.streams[si];
        let range = stream.slots[slot].range;
        stream.slots.iter().any(|other| {
            !other.open
                && other.busy
                && other.range.start() <= range.end()
                && range.start() <= other.range.end()
        })
    }

    fn sweep_expired(&mut self, si: usize, slot: usize, now: Instant) {
        let shard = &mut self.streams[si].slots[slot];
        if shard.ready_expiration.is_none_or(|at| at > now) {
            return;
        }
        let mut expired: Vec<Pending> = Vec::new();
        let mut survivors: Vec<Pending> = Vec::new();
        let mut kept: VecDeque<Batch> = VecDeque::with_capacity(shard.ready.len());
        for batch in shard.ready.drain(..) {
            if batch.expiration > now {
                kept.push_back(batch);
                continue;
            }
            for pending in batch.records {
                if pending.expiration <= now {
                    expired.push(pending);
                } else {
                    survivors.push(pending);
                }
            }
        }
        shard.ready_expiration = kept.iter().map(|b| b.expiration).min();
        shard.ready = kept;
        let error = AttemptError::shared(
            "Expired",
            "record_ttl reached while waiting for the shard's rate limit",
        );
        for mut pending in expired {
            pending.add_failed_attempt(now, now, &error);
            self.fail(si, pending, FailureReason::Expired);
        }
        if !survivors.is_empty() {
            self.requeue_front(si, survivors, Packing::Aggregated, now);
        }
    }

    // ----------------------------------------------------------------------------------------
    // Collection
    // ----------------------------------------------------------------------------------------

    fn collect(&mut self, si: usize, batch: Batch, now: Instant) {
        let max_count = self.config.request_max_count();
        let max_size = self.config.request_max_size();
        let grace = self.config.collection_grace();
        let ordering = self.config.ordering == OrderingMode::PerShard;
        let collector = &self.streams[si].collector;
        let one_per_shard_conflict = ordering
            && batch.slot.is_some()
            && collector.batches.iter().any(|b| b.slot == batch.slot);
        let alone = batch.alone_in_request;
        if !collector.batches.is_empty()
            && (collector.batches.len() + 1 > max_count
                || collector.size + batch.size > max_size
                || one_per_shard_conflict
                || alone
                || collector.batches.iter().any(|b| b.alone_in_request))
        {
            self.flush_collector(si);
        }
        let stream = &mut self.streams[si];
        let deadline = batch.deadline.max(now + grace);
        let mut shard_full = false;
        if let Some(slot) = batch.slot {
            let shard = &mut stream.slots[slot];
            shard.collected_bytes += batch.size;
            shard_full = shard.collected_bytes >= SHARD_COLLECTED_BYTES_TRIGGER;
        }
        let collector = &mut stream.collector;
        collector.size += batch.size;
        collector.batches.push(batch);
        collector.deadline = min_instant(collector.deadline, Some(deadline));
        if shard_full || alone || collector.batches.len() >= max_count || collector.size >= max_size
        {
            self.flush_collector(si);
        } else {
            arm(
                &mut self.timers,
                &mut stream.timer,
                deadline,
                Timer::Stream(si),
            );
        }
    }

    fn flush_collector(&mut self, si: usize) {
        let stream = &mut self.streams[si];
        if stream.collector.batches.is_empty() {
            return;
        }
        let batches = mem::take(&mut stream.collector.batches);
        stream.collector.size = 0;
        stream.collector.deadline = None;
        let mut entries = Vec::with_capacity(batches.len());
        let mut metas = Vec::with_capacity(batches.len());
        stream
            .stats
            .kinesis_records_per_request
            .record(batches.len() as f64);
        for batch in batches {
            if let Some(slot) = batch.slot {
                let shard = &mut stream.slots[slot];
                shard.collected_bytes = shard.collected_bytes.saturating_sub(batch.size);
            }
            stream
                .stats
                .user_records_per_kinesis_record
                .record(batch.records.len() as f64);
            entries.push(batch.kinesis_record);
            metas.push(EntryMeta {
                slot: batch.slot,
                records: batch.records,
            });
        }
        let request = Request::PutRecords(PutRecordsRequest {
            stream: stream.stream.clone(),
            entries,
        });
        self.enqueue(si, InFlightKind::PutRecords(metas), request);
    }

    fn service_stream(&mut self, si: usize, now: Instant) {
        // Before the first map exists, records wait for it while it is being read (past their
        // deadline if need be, but not past their expiry): sent unpredicted they could not be
        // aggregated. In ordering mode they always wait, as a record sent unpredicted would
        // escape the one-request-per-shard rule. Otherwise, once the wait is over, they go
        // alone, unaggregated and unlimited, as the KPL sends records it cannot predict.
        let hold = {
            let stream = &self.streams[si];
            stream.map.is_none()
                && (stream.refresh.in_flight || self.config.ordering == OrderingMode::PerShard)
        };
        loop {
            let stream = &mut self.streams[si];
            let Some(front) = stream.awaiting_map.front() else {
                break;
            };
            let due = if hold {
                front.expiration
            } else {
                front.deadline
            };
            if due > now {
                break;
            }
            let Some(pending) = stream.awaiting_map.pop_front() else {
                break;
            };
            // Held records come out only at their expiry.
            if hold {
                self.expire(si, pending, now);
                continue;
            }
            match self.predict(si, pending.hash_key) {
                Some(slot) => self.aggregate(si, slot, pending, now),
                None if pending.expiration <= now => self.expire(si, pending, now),
                None => self.send_unpredicted(si, pending, now),
            }
        }
        self.give_up_overdue_landings(si, now);
        if self.streams[si]
            .collector
            .deadline
            .is_some_and(|at| at <= now)
        {
            self.flush_collector(si);
        }
        if self.streams[si].refresh.next_at.is_some_and(|at| at <= now) {
            if self.is_idle(si, now) {
                self.retire(si);
            } else {
                self.start_refresh(si, now);
            }
        }
        if self.streams[si].history.next_at.is_some_and(|at| at <= now) {
            // Only landings still waiting need it; give-ups above may have settled them all.
            self.streams[si].history.next_at = None;
            if !self.streams[si].held_landings.is_empty() {
                self.start_history_read(si, now);
            }
        }
        let stream = &mut self.streams[si];
        let awaiting = stream
            .awaiting_map
            .front()
            .map(|p| if hold { p.expiration } else { p.deadline });
        let held = stream.held_landings.iter().map(|held| held.decide_by).min();
        let next = min_instant(
            min_instant(awaiting, stream.collector.deadline),
            min_instant(
                min_instant(stream.refresh.next_at, held),
                stream.history.next_at,
            ),
        );
        if let Some(at) = next {
            arm(&mut self.timers, &mut stream.timer, at, Timer::Stream(si));
        }
    }

    // ----------------------------------------------------------------------------------------
    // Answers
    // ----------------------------------------------------------------------------------------

    fn on_put_records(
        &mut self,
        si: usize,
        entries: Vec<EntryMeta>,
        result: Result<PutRecordsResponse, TransportError>,
        sent_at: Instant,
        now: Instant,
    ) {
        let mut verdicts: BTreeMap<Option<usize>, SlotVerdict> = BTreeMap::new();
        let request_ms = now.saturating_duration_since(sent_at).as_secs_f64() * 1_000.0;
        self.streams[si].stats.request_time.record(request_ms);
        let stream_gone = match &result {
            Err(error) if error.kind() == TransportErrorKind::NotFound => Some(
                TransportError::new(error.kind(), error.code(), error.message()),
            ),
            _ => None,
        };
        match result {
            Err(error) => {
                let kind = error.kind();
                let error = AttemptError::shared(error.code(), error.message());
                self.streams[si].stats.error(error.code(), 1);
                // A request refused whole as invalid may hold one bad entry among good ones:
                // each is tried again alone, and only what the service still refuses fails.
                let split = kind == TransportErrorKind::Validation && entries.len() > 1;
                for entry in entries {
                    let verdict = verdicts.entry(entry.slot).or_default();
                    verdict.back_off = true;
                    if split {
                        self.retry_alone(si, entry, &error, verdict, sent_at, now);
                    } else {
                        self.on_entry_failed(si, entry, kind, &error, verdict, sent_at, now);
                    }
                }
            }
            Ok(response) if response.entries.len() != entries.len() => {
                let error = AttemptError::shared(
                    "RecordCountMismatch",
                    format!(
                        "PutRecords sent {} records and got {} results",
                        entries.len(),
                        response.entries.len()
                    ),
                );
                self.streams[si].stats.error(error.code(), 1);
                for entry in entries {
                    // The shard's call is over: in ordering mode it may send again.
                    verdicts.entry(entry.slot).or_default();
                    for mut pending in entry.records {
                        if let Some(waited) = pending.add_failed_attempt(sent_at, now, &error) {
                            self.record_buffering(si, waited);
                        }
                        self.fail(si, pending, FailureReason::RecordCountMismatch);
                    }
                }
            }
            Ok(response) => {
                for (entry, result) in entries.into_iter().zip(response.entries) {
                    let verdict = verdicts.entry(entry.slot).or_default();
                    match result {
                        PutRecordsEntryResult::Written {
                            shard_id,
                            sequence_number,
                        } => self.on_entry_written(
                            si,
                            entry,
                            shard_id,
                            sequence_number,
                            verdict,
                            sent_at,
                            now,
                        ),
                        PutRecordsEntryResult::Failed { code, message } => {
                            let kind = TransportErrorKind::from_code(&code);
                            let error = AttemptError::shared(code, message);
                            self.streams[si].stats.error(error.code(), 1);
                            self.on_entry_failed(si, entry, kind, &error, verdict, sent_at, now);
                        }
                    }
                }
            }
        }
        let ordering = self.config.ordering == OrderingMode::PerShard;
        let closed_parent_done = ordering
            && verdicts
                .keys()
                .flatten()
                .any(|&slot| !self.streams[si].slots[slot].open);
        for (slot, verdict) in verdicts {
            let Some(slot) = slot else {
                if !verdict.retried {
                    self.streams[si].unpredicted_backoff.reset();
                }
                continue;
            };
            let shard = &mut self.streams[si].slots[slot];
            // A held landing keeps its shard busy until it is judged.
            if ordering && !verdict.held {
                shard.busy = false;
            }
            if verdict.throttled {
                shard.limiter.on_throttled(sent_at, now);
            }
            if verdict.retried && verdict.back_off {
                let delay = shard.backoff.next_delay(&mut self.rng);
                let until = now + delay;
                shard.blocked_until = Some(shard.blocked_until.map_or(until, |b| b.max(until)));
            } else if verdict.written {
                shard.backoff.reset();
            }
            self.service_shard(si, slot, now);
        }
        if closed_parent_done {
            self.service_all_shards(si, now);
        }
        if let Some(error) = stream_gone {
            self.fail_queued(si, "PutRecords", &error, now);
        }
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one call site; the arguments are the entry's context"
    )]
    fn on_entry_written(
        &mut self,
        si: usize,
        entry: EntryMeta,
        shard_id: ShardId,
        sequence_number: Arc<str>,
        verdict: &mut SlotVerdict,
        sent_at: Instant,
        now: Instant,
    ) {
        // The shard it was sent to took it: what its limiter measures the accepted rate by.
        if let Some(shard) = entry
            .slot
            .and_then(|slot| self.streams[si].slots.get_mut(slot))
        {
            let bytes = entry.records.iter().map(Pending::size).sum();
            shard.limiter.on_written(bytes, now);
        }
        // One shared landing per Kinesis record: its user records all point at it.
        let landing = Arc::new(Landing {
            shard_id,
            sequence_number,
        });
        if entry.records.len() > 1 {
            // The KCL drops a whole aggregate when any of its records hashes outside the shard
            // it was read from, so an aggregate counts as written only if all of them belong.
            let stream = &self.streams[si];
            match stream
                .map
                .as_ref()
                .and_then(|map| map.range_of(&landing.shard_id))
            {
                None => {
                    verdict.held = true;
                    self.hold_landing(si, entry, landing, sent_at, now);
                    return;
                }
                Some(range) if !entry.records.iter().all(|p| range.contains(p.hash_key)) => {
                    self.invalidate_map(si, sent_at, now);
                    let landed = Landed {
                        landing: &landing,
                        slot: entry.slot,
                        sent_at,
                        landed_at: now,
                    };
                    self.resend_misplaced(si, landed, entry.records, now);
                    return;
                }
                Some(_) => {}
            }
        }
        let stream = &self.streams[si];
        if entry
            .slot
            .is_some_and(|slot| stream.slots[slot].id != landing.shard_id)
        {
            self.invalidate_map(si, sent_at, now);
        }
        verdict.written = true;
        self.streams[si].expired_token_since = None;
        self.deliver(si, entry.slot, entry.records, landing, sent_at, now);
    }

    /// Reports the records of one written Kinesis record as delivered.
    fn deliver(
        &mut self,
        si: usize,
        slot: Option<usize>,
        mut records: Vec<Pending>,
        landing: Arc<Landing>,
        sent_at: Instant,
        landed_at: Instant,
    ) {
        let shard_slot = self.streams[si].slot_of.get(&landing.shard_id).copied();
        let duration = landed_at.saturating_duration_since(sent_at);
        let count = records.len() as u64;
        let mut data_bytes = 0u64;
        let mut billed_bytes = 0u64;
        // By reference: moving each (large) record out would cost a copy apiece.
        for pending in &mut records {
            let first_try = pending.attempts.is_none();
            let delay = sent_at.saturating_duration_since(pending.last_end());
            let size = pending.size();
            data_bytes += pending.record.data().len() as u64;
            billed_bytes += size as u64;
            if first_try {
                self.record_buffering(si, delay);
            }
            let last = Attempt::written(delay, duration, landing.clone());
            // The outcome first: finishing may complete a flush marker, which comes after it.
            self.events.push_back(Event::Delivered(Delivery {
                id: RecordId(pending.id),
                attempts: AttemptList::new(pending.attempts.take(), last),
            }));
            self.finish(pending.id, size, si);
        }
        records.clear();
        let stream = &mut self.streams[si];
        if let Some(shard) = slot.and_then(|slot| stream.slots.get_mut(slot)) {
            // Reusing the emptied list spares the allocator a large block per aggregate.
            if shard.spare_lists.len() < SPARE_RECORD_LISTS {
                shard.spare_lists.push(records);
            }
        }
        stream.stats.kinesis_records_put += 1;
        stream.stats.kinesis_records_data_put += billed_bytes;
        stream.stats.user_records_put += count;
        stream.stats.user_records_data_put += data_bytes;
        if let Some(slot) = shard_slot {
            let shard_stats = &mut stream.slots[slot].stats;
            shard_stats.kinesis_records_put += 1;
            shard_stats.kinesis_records_data_put += billed_bytes;
            shard_stats.user_records_put += count;
        }
    }

    /// An aggregate landed on a shard that does not own all of its records: a KCL consumer drops
    /// it there, so every record is re-sent.
    fn resend_misplaced(
        &mut self,
        si: usize,
        landed: Landed<'_>,
        records: Vec<Pending>,
        now: Instant,
    ) {
        let why = "which does not own all of their hash keys; all are re-sent";
        let retry = self.prepare_resend(si, &landed, records, ("WrongShard", why), now);
        if retry.is_empty() {
            return;
        }
        if !self.streams[si].refresh.in_flight {
            // The map was re-read after this request left: it already knows where the
            // records belong, so they go to the head of their shards now.
            self.requeue_front(si, retry, Packing::Aggregated, now);
            return;
        }
        if let (OrderingMode::PerShard, Some(slot)) = (self.config.ordering, landed.slot) {
            // Ordering mode: the records go back to the head of their shard, which
            // sends nothing more until the new map says where everything belongs.
            self.streams[si].slots[slot].awaiting_refresh = true;
            self.requeue_front(si, retry, Packing::Aggregated, now);
            return;
        }
        let stream = &mut self.streams[si];
        for pending in retry {
            // Wait for the refreshed map (or the deadline) instead of landing wrong again.
            Self::await_map(&mut self.timers, si, stream, pending);
        }
    }

    /// Records the landing as a failed attempt of each record, with the error `(code, why)`;
    /// fails those past their expiry and returns the others, due again soon.
    fn prepare_resend(
        &mut self,
        si: usize,
        landed: &Landed<'_>,
        records: Vec<Pending>,
        (code, why): (&str, &str),
        now: Instant,
    ) -> Vec<Pending> {
        let error = AttemptError::shared(
            code,
            format!(
                "an aggregate of {} records landed on {}, {why}",
                records.len(),
                landed.landing.shard_id
            ),
        );
        self.streams[si].stats.error(code, 1);
        let mut retry = Vec::with_capacity(records.len());
        for mut pending in records {
            if let Some(waited) =
                pending.add_failed_attempt(landed.sent_at, landed.landed_at, &error)
            {
                self.record_buffering(si, waited);
            }
            if pending.expiration <= now {
                self.expire(si, pending, now);
            } else {
                pending.deadline =
                    (now + self.config.record_max_buffered_time / 2).min(pending.expiration);
                retry.push(pending);
            }
        }
        self.streams[si].stats.retries_per_record += retry.len() as u64;
        retry
    }

    /// Holds an aggregate that landed on a shard the map does not know until a map read can
    /// judge it, and makes sure one is on its way.
    fn hold_landing(
        &mut self,
        si: usize,
        entry: EntryMeta,
        landing: Arc<Landing>,
        sent_at: Instant,
        now: Instant,
    ) {
        let decide_by = entry
            .records
            .iter()
            .map(|p| now + p.expiration.saturating_duration_since(now) / 2)
            .min()
            .unwrap_or(now);
        let stream = &mut self.streams[si];
        stream.stats.unknown_shard_landings += 1;
        stream.held_landings.push(HeldLanding {
            landing,
            records: entry.records,
            slot: entry.slot,
            sent_at,
            landed_at: now,
            decide_by,
        });
        arm(
            &mut self.timers,
            &mut stream.timer,
            decide_by,
            Timer::Stream(si),
        );
        self.ensure_map_read(si, now);
    }

    /// Starts a map read unless one is in flight or a failing one waits for its retry.
    fn ensure_map_read(&mut self, si: usize, now: Instant) {
        let refresh = &self.streams[si].refresh;
        if !refresh.in_flight && !refresh.backoff.is_failing() {
            self.start_refresh(si, now);
        }
    }

    /// After a map or history read: judges every held landing whose shard is now known. A
    /// landing on a shard that a map read made after the write does not list (closed again by
    /// a second reshard) waits for a listing of every shard; if even that does not know it, it
    /// is given up on. The others wait for a map read made after their write.
    fn judge_held_landings(&mut self, si: usize, now: Instant) {
        let stream = &mut self.streams[si];
        if stream.held_landings.is_empty() {
            return;
        }
        let map_read = stream.map_started_at;
        let history_read = stream.history_read;
        let mut released = false;
        for mut held in mem::take(&mut stream.held_landings) {
            let stream = &mut self.streams[si];
            let range = stream
                .map
                .as_ref()
                .and_then(|map| map.range_of(&held.landing.shard_id));
            if range.is_none() && !held.read_saw_the_write(history_read) {
                stream.held_landings.push(held);
                continue;
            }
            released |= self.release_busy_slot(si, held.slot);
            let records = mem::take(&mut held.records);
            let landed = held.landed();
            match range {
                Some(range) if records.iter().all(|p| range.contains(p.hash_key)) => {
                    let landing = landed.landing.clone();
                    self.deliver(
                        si,
                        held.slot,
                        records,
                        landing,
                        held.sent_at,
                        held.landed_at,
                    );
                }
                Some(_) => self.resend_misplaced(si, landed, records, now),
                None => self.resend_alone(si, landed, records, now),
            }
        }
        let stream = &self.streams[si];
        let (need_history, need_map) =
            stream
                .held_landings
                .iter()
                .fold((false, false), |(history, map), held| {
                    let seen = held.read_saw_the_write(map_read);
                    (history || seen, map || !seen)
                });
        // A failing listing is read again on its own backoff.
        if need_history && self.streams[si].history.next_at.is_none() {
            self.start_history_read(si, now);
        }
        if need_map {
            self.ensure_map_read(si, now);
        }
        if released {
            self.service_all_shards(si, now);
        }
    }

    /// Gives up on held landings whose decision time has come: their records are re-sent alone.
    fn give_up_overdue_landings(&mut self, si: usize, now: Instant) {
        let stream = &mut self.streams[si];
        if stream.held_landings.iter().all(|held| held.decide_by > now) {
            return;
        }
        let (overdue, waiting): (Vec<HeldLanding>, Vec<HeldLanding>) =
            mem::take(&mut stream.held_landings)
                .into_iter()
                .partition(|held| held.decide_by <= now);
        stream.held_landings = waiting;
        let mut released = false;
        for mut held in overdue {
            released |= self.release_busy_slot(si, held.slot);
            let records = mem::take(&mut held.records);
            self.resend_alone(si, held.landed(), records, now);
        }
        if released {
            self.service_all_shards(si, now);
        }
    }

    /// The safe side for a landing that cannot be judged: re-send every record alone (a plain
    /// record counts wherever it lands). The first copy may be readable too, so this is counted.
    fn resend_alone(&mut self, si: usize, landed: Landed<'_>, records: Vec<Pending>, now: Instant) {
        let why = "a shard no shard map read in time has listed; each record is re-sent alone, \
                   and a consumer may read the first copy too";
        let retry = self.prepare_resend(si, &landed, records, ("UnjudgedLanding", why), now);
        self.streams[si].stats.unjudged_landings_resent += retry.len() as u64;
        if !retry.is_empty() {
            self.requeue_front(si, retry, Packing::Alone, now);
        }
    }

    /// Whether an `ExpiredTokenException` is still within its grace: at a credential rotation,
    /// a host clock behind the service's makes fresh credentials look expired for a while, so
    /// such answers are retried for [`EXPIRED_TOKEN_GRACE`] after the first of a run of them.
    fn expired_token_grace(&mut self, si: usize, error: &AttemptError, now: Instant) -> bool {
        if !matches!(error.code(), "ExpiredTokenException" | "ExpiredToken") {
            return false;
        }
        let since = *self.streams[si].expired_token_since.get_or_insert(now);
        now.saturating_duration_since(since) < EXPIRED_TOKEN_GRACE
    }

    /// Ordering mode: frees a shard that counted as busy (its call or held landing is over).
    /// Returns whether it did.
    fn release_busy_slot(&mut self, si: usize, slot: Option<usize>) -> bool {
        match slot {
            Some(slot) if self.config.ordering == OrderingMode::PerShard => {
                self.streams[si].slots[slot].busy = false;
                true
            }
            _ => false,
        }
    }

    fn service_all_shards(&mut self, si: usize, now: Instant) {
        for slot in 0..self.streams[si].slots.len() {
            if self.streams[si].slots[slot].open {
                self.service_shard(si, slot, now);
            }
        }
    }

    /// Retries an entry of a request refused whole as invalid, in a request of its own.
    fn retry_alone(
        &mut self,
        si: usize,
        mut entry: EntryMeta,
        error: &Arc<AttemptError>,
        verdict: &mut SlotVerdict,
        sent_at: Instant,
        now: Instant,
    ) {
        for pending in &mut entry.records {
            pending.isolate = true;
        }
        // Retried as a retryable failure would be: the records keep their attempt and backoff.
        let retryable = TransportErrorKind::ServiceUnavailable;
        self.on_entry_failed(si, entry, retryable, error, verdict, sent_at, now);
    }

    #[allow(clippy::too_many_arguments, reason = "one entry's full context")]
    fn on_entry_failed(
        &mut self,
        si: usize,
        entry: EntryMeta,
        kind: TransportErrorKind,
        error: &Arc<AttemptError>,
        verdict: &mut SlotVerdict,
        sent_at: Instant,
        now: Instant,
    ) {
        let throttled = kind == TransportErrorKind::Throttled;
        if throttled {
            verdict.throttled = true;
            if let Some(slot) = entry.slot {
                self.streams[si].slots[slot].stats.throttled += 1;
            }
        }
        let terminal = if !kind.is_retryable() && !self.expired_token_grace(si, error, now) {
            Some(FailureReason::Terminal(kind))
        } else if throttled && self.config.fail_if_throttled {
            Some(FailureReason::Throttled)
        } else {
            None
        };
        let mut retry = Vec::new();
        for mut pending in entry.records {
            if let Some(waited) = pending.add_failed_attempt(sent_at, now, error) {
                self.record_buffering(si, waited);
            }
            match terminal {
                Some(reason) => self.fail(si, pending, reason),
                None if pending.expiration <= now => self.expire(si, pending, now),
                None => {
                    pending.deadline =
                        (now + self.config.record_max_buffered_time / 2).min(pending.expiration);
                    retry.push(pending);
                }
            }
        }
        if retry.is_empty() {
            return;
        }
        verdict.retried = true;
        verdict.back_off |= !throttled;
        self.streams[si].stats.retries_per_record += retry.len() as u64;
        match entry.slot {
            Some(_) => self.requeue_front(si, retry, Packing::Aggregated, now),
            None => {
                let delay = self.streams[si]
                    .unpredicted_backoff
                    .next_delay(&mut self.rng);
                let stream = &mut self.streams[si];
                for mut pending in retry {
                    pending.deadline = (now + delay).min(pending.expiration);
                    Self::await_map(&mut self.timers, si, stream, pending);
                }
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // Outcomes
    // ----------------------------------------------------------------------------------------

    fn record_buffering(&mut self, si: usize, waited: Duration) {
        let stats = &mut self.streams[si].stats;
        stats.buffering_time.record(waited.as_secs_f64() * 1_000.0);
    }

    fn expire(&mut self, si: usize, mut pending: Pending, now: Instant) {
        let error = AttemptError::shared(
            "Expired",
            "record_ttl reached before the record could be written",
        );
        pending.add_failed_attempt(now, now, &error);
        self.fail(si, pending, FailureReason::Expired);
    }

    fn fail(&mut self, si: usize, mut pending: Pending, reason: FailureReason) {
        let stats = &mut self.streams[si].stats;
        stats.user_records_failed += 1;
        if reason == FailureReason::Expired {
            stats.user_records_expired += 1;
        }
        let (id, size) = (pending.id, pending.size());
        let (attempts, omitted_attempts) = pending
            .attempts
            .take()
            .map_or((Vec::new(), 0), |history| history.into_parts());
        let record = pending.into_record(self.streams[si].stream.clone());
        // The outcome first: finishing may complete a flush marker, which comes after it.
        self.events.push_back(Event::Failed(Box::new(Failure {
            id: RecordId(id),
            reason,
            record,
            attempts,
            omitted_attempts,
        })));
        self.finish(id, size, si);
    }

    fn finish(&mut self, id: u64, size: usize, si: usize) {
        self.outstanding_records -= 1;
        self.outstanding_bytes -= self.record_charge(size);
        self.streams[si].stats.user_records_pending -= 1;
        if let Some(offset) = id.checked_sub(self.window_start) {
            if let Some(slot) = self.window.get_mut(offset as usize) {
                *slot = None;
            }
            // Only finishing the oldest record moves the window (and can complete a marker).
            if offset == 0 {
                self.retire_window();
            }
        } else {
            let oldest = self.stragglers.first_key_value().map(|(&first, _)| first);
            self.stragglers.remove(&id);
            if oldest == Some(id) {
                self.retire_window();
            }
        }
    }

    /// Moves the window's unfinished records aside and empties it (see `stragglers`).
    fn compact_window(&mut self) {
        for (offset, arrival) in self.window.drain(..).enumerate() {
            if let Some(arrival) = arrival {
                self.stragglers
                    .insert(self.window_start + offset as u64, arrival);
            }
        }
        self.window_start = self.next_record;
    }

    fn retire_window(&mut self) {
        while let Some(None) = self.window.front() {
            self.window.pop_front();
            self.window_start += 1;
        }
        let first_unfinished = match self.stragglers.first_key_value() {
            Some((&id, _)) => id,
            None if self.window.is_empty() => self.next_record,
            None => self.window_start,
        };
        while let Some(&(bound, id)) = self.markers.front() {
            if bound > first_unfinished {
                break;
            }
            self.markers.pop_front();
            self.events.push_back(Event::Flushed(id));
        }
    }
}

/// The size of a record's entry, for the memory module's check of its bookkeeping charge.
#[cfg(test)]
pub(crate) const PENDING_SIZE: usize = size_of::<Pending>();

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{Clock, SystemClock};

    fn listing(shards: &[(&str, u128, u128, bool)]) -> Response {
        Response::ListShards(ListShardsResponse {
            shards: shards
                .iter()
                .map(|&(id, start, end, open)| ShardDescription {
                    shard_id: ShardId::from(id),
                    hash_key_range: HashKeyRange::new(HashKey::new(start), HashKey::new(end))
                        .unwrap_or(HashKeyRange::FULL),
                    open,
                })
                .collect(),
            next_token: None,
        })
    }

    /// Answers every request handed out now: maps with `map`, puts as written to `shard`.
    fn answer_all(engine: &mut Engine, map: &Response, shard: &str, now: Instant) {
        while let Some((id, request)) = engine.poll_request(now) {
            let response = match request {
                Request::ListShards(_) => map.clone(),
                Request::PutRecords(put) => Response::PutRecords(PutRecordsResponse {
                    entries: put
                        .entries
                        .iter()
                        .map(|_| PutRecordsEntryResult::Written {
                            shard_id: ShardId::from(shard),
                            sequence_number: "1".into(),
                        })
                        .collect(),
                }),
                _ => continue,
            };
            engine.handle_response(id, Ok(response), now);
        }
    }

    #[test]
    fn an_idle_stream_is_retired_and_comes_back_with_its_next_record() {
        let start = SystemClock.now();
        let config = EngineConfig {
            shard_map_refresh_interval: Duration::from_secs(10),
            ..EngineConfig::default()
        };
        let mut engine = Engine::new(config).unwrap_or_else(|e| panic!("{e}"));
        let stream = Stream::new("s").unwrap_or_else(|e| panic!("{e}"));
        let one = listing(&[("shardId-0", 0, u128::MAX, true)]);
        let record = |n: u8| Record::new(stream.clone(), format!("k{n}"), vec![n; 10]);
        assert!(engine.submit(record(1), start).is_ok());
        // The map read, and the stream summary read with it.
        for (id, request) in std::iter::from_fn(|| engine.poll_request(start)).collect::<Vec<_>>() {
            let response = match request {
                Request::ListShards(_) => one.clone(),
                _ => Response::DescribeStreamSummary(StreamSummary {
                    max_record_size_kib: Some(1024),
                    open_shard_count: 1,
                }),
            };
            engine.handle_response(id, Ok(response), start);
        }
        engine.flush(None, start);
        answer_all(&mut engine, &one, "shardId-0", start);
        assert!(matches!(engine.poll_event(), Some(Event::Delivered(_))));
        // The map is re-read every interval (± 10 %) while the stream is young; once it has been
        // idle for five intervals, the next due read does not happen.
        let mut reads = 0;
        let mut now = start;
        while let Some(at) = engine.poll_timeout() {
            assert!(
                at < start + Duration::from_secs(80),
                "still reading at {at:?}"
            );
            now = at;
            engine.handle_timeout(now);
            while let Some((id, request)) = engine.poll_request(now) {
                assert!(matches!(request, Request::ListShards(_)));
                reads += 1;
                engine.handle_response(id, Ok(one.clone()), now);
            }
        }
        assert!((4..=6).contains(&reads), "{reads} reads");
        assert!(engine.streams[0].retired);
        assert!(engine.streams[0].slots.is_empty());
        assert!(engine.shard_map(&stream).is_none());
        assert_eq!(
            engine.stats().next().map(|(_, s)| s.user_records_put),
            Some(1)
        );
        // A record brings it back: the map is read, and the record delivered.
        now += Duration::from_secs(3_600);
        assert!(engine.submit(record(2), now).is_ok());
        let Some((id, Request::ListShards(_))) = engine.poll_request(now) else {
            panic!("expected a map read")
        };
        engine.handle_response(id, Ok(one.clone()), now);
        engine.flush(None, now);
        answer_all(&mut engine, &one, "shardId-0", now);
        assert!(matches!(engine.poll_event(), Some(Event::Delivered(_))));
        assert!(!engine.streams[0].retired);
        assert_eq!(engine.outstanding_records(), 0);
        assert!(
            engine.poll_timeout().is_some(),
            "the map is re-read periodically again"
        );
    }

    #[test]
    fn a_closed_shard_gives_its_buffers_back() {
        let now = SystemClock.now();
        let mut engine = Engine::new(EngineConfig::default()).unwrap_or_else(|e| panic!("{e}"));
        let stream = Stream::new("s").unwrap_or_else(|e| panic!("{e}"));
        let one = listing(&[("shardId-0", 0, u128::MAX, true)]);
        for round in 0..3u8 {
            for i in 0..200 {
                let record = Record::new(stream.clone(), format!("k{round}-{i}"), vec![round; 100]);
                assert!(engine.submit(record, now).is_ok());
            }
            engine.flush(None, now);
            answer_all(&mut engine, &one, "shardId-0", now);
        }
        assert_eq!(engine.outstanding_records(), 0);
        assert!(
            !engine.streams[0].slots[0].spare_lists.is_empty(),
            "lists kept for reuse"
        );
        // The shard splits; the next map read closes it.
        let split = listing(&[
            ("shardId-0", 0, u128::MAX, false),
            ("shardId-1", 0, u128::MAX / 2, true),
            ("shardId-2", u128::MAX / 2 + 1, u128::MAX, true),
        ]);
        engine.start_refresh(0, now);
        answer_all(&mut engine, &split, "shardId-1", now);
        let closed = &engine.streams[0].slots[0];
        assert!(!closed.open);
        assert!(closed.spare_lists.is_empty());
        assert_eq!(closed.aggregated.capacity(), 0);
        assert_eq!(closed.ready.capacity(), 0);
        assert!(closed.aggregator.is_empty());
    }

    #[test]
    fn one_stuck_record_keeps_one_entry_not_a_window_of_every_record_since() {
        let t0 = SystemClock.now();
        let mut engine = Engine::new(EngineConfig::default()).unwrap_or_else(|e| panic!("{e}"));
        let stream = Stream::new("s").unwrap_or_else(|e| panic!("{e}"));
        let one = listing(&[("shardId-0", 0, u128::MAX, true)]);
        let record = |i: usize| Record::new(stream.clone(), format!("k{i}"), vec![1; 10]);
        assert!(engine.submit(record(0), t0).is_ok());
        answer_all(&mut engine, &one, "shardId-0", t0);
        engine.flush(None, t0);
        // Record 0's call is in flight and never answered.
        let stuck = engine.poll_request(t0);
        assert!(matches!(stuck, Some((_, Request::PutRecords(_)))));
        let total = 100_000;
        let mut now = t0;
        for i in 1..=total {
            assert!(engine.submit(record(i), now).is_ok());
            if i % 5_000 == 0 {
                // A second per batch: the shard's rate limit lets each through.
                now += Duration::from_secs(1);
                engine.flush(None, now);
                answer_all(&mut engine, &one, "shardId-0", now);
            }
        }
        let marker = engine.flush_marker(now);
        answer_all(&mut engine, &one, "shardId-0", now);
        assert_eq!(engine.outstanding_records(), 1);
        assert!(engine.window.len() + engine.stragglers.len() <= WINDOW_COMPACTION + 1);
        assert_eq!(engine.oldest_outstanding(), Some(t0));
        let flushed = |engine: &mut Engine| {
            std::iter::from_fn(|| engine.poll_event())
                .any(|event| matches!(event, Event::Flushed(id) if id == marker))
        };
        assert!(!flushed(&mut engine), "record 0 is not finished");
        // Its answer comes at last: the marker completes, and nothing is left.
        let Some((id, Request::PutRecords(put))) = stuck else {
            unreachable!()
        };
        let written = Response::PutRecords(PutRecordsResponse {
            entries: put
                .entries
                .iter()
                .map(|_| PutRecordsEntryResult::Written {
                    shard_id: ShardId::from("shardId-0"),
                    sequence_number: "1".into(),
                })
                .collect(),
        });
        engine.handle_response(id, Ok(written), now);
        assert!(flushed(&mut engine));
        assert_eq!(engine.outstanding_records(), 0);
        assert_eq!(engine.oldest_outstanding(), None);
        assert!(engine.stragglers.is_empty());
    }

    #[test]
    fn arming_an_earlier_wake_up_removes_the_superseded_one() {
        let now = SystemClock.now();
        let mut timers = BTreeSet::new();
        let mut armed = None;
        let timer = Timer::Shard(0, 3);
        arm(
            &mut timers,
            &mut armed,
            now + Duration::from_secs(3_600),
            timer,
        );
        for ms in (1..=100).rev() {
            arm(
                &mut timers,
                &mut armed,
                now + Duration::from_millis(ms),
                timer,
            );
        }
        // A later time does not replace an earlier one.
        arm(&mut timers, &mut armed, now + Duration::from_secs(5), timer);
        assert_eq!(timers.len(), 1);
        assert_eq!(armed, Some(now + Duration::from_millis(1)));
        assert!(timers.contains(&(now + Duration::from_millis(1), timer)));
    }
}
