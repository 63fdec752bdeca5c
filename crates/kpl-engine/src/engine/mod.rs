//! The producer state machine, in three layers:
//!
//! - [`Engine`] (here): the public inputs and outputs. Each input names its stream once; the
//!   engine finds that stream's state and calls into it.
//! - [`stream`]: one stream's state ([`stream::StreamState`]) and every transition that
//!   concerns it alone (sending, answers, landings, map reads), each reaching the engine's
//!   shared parts ([`shared`]) through a borrowed `cx`.
//! - The leaves, sub-state machines that own their transitions: [`outcomes`] (events,
//!   outstanding counts, the record window, flush markers), [`requests`] (the outbox and what
//!   each request in flight carries), [`timers`] (one wake-up per stream and per shard),
//!   [`map_refresh`] (a stream's map, its reads, the records waiting for it), [`shard_queue`]
//!   (a shard's open aggregate, rate-limit queue and backoff) and [`collector`] (a stream's
//!   next `PutRecords` request).
//!
//! [`Engine`], [`PreparedRecord`] and [`RequestId`] are the only public types here: inputs carry
//! `now`, outputs are polled.

mod collector;
mod error_texts;
mod map_refresh;
mod outcomes;
mod pending;
mod prepared;
mod requests;
mod shard_queue;
mod shared;
mod stream;
mod timers;

use std::collections::BTreeMap;
use std::time::Instant;

use self::outcomes::OutstandingLimits;
use self::pending::Pending;
pub use self::prepared::PreparedRecord;
use self::requests::InFlightKind;
pub use self::requests::RequestId;
use self::shared::Shared;
use self::stream::{Answer, StreamState};
use self::timers::Timer;
use crate::config::{EngineConfig, InvalidConfig};
use crate::metrics::Series;
use crate::outcome::{
    Event, FailureReason, FlushId, Record, RecordId, RejectReason, Rejected, codes,
};
use crate::shard_map::ShardMap;
use crate::stats::StreamStats;
use crate::stream::Stream;
use crate::transport::{Request, Response, TransportError, TransportErrorKind};

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
pub struct Engine<T = ()> {
    /// What every stream shares, lent to one stream at a time.
    shared: Shared<T>,
    streams: Vec<StreamState<T>>,
    stream_index: BTreeMap<Stream, usize>,
    /// The stream of the last record submitted: most records go where the previous one went.
    last_stream: Option<(Stream, usize)>,
}

impl Engine {
    /// Accepts a record, or refuses it (handing it back) when it is invalid or the outstanding
    /// limits are reached: [`submit_with`](Self::submit_with) for an engine whose records carry
    /// no token.
    pub fn submit(&mut self, record: Record, now: Instant) -> Result<RecordId, Rejected> {
        self.submit_with(record, (), now)
            .map_err(|(rejected, ())| rejected)
    }
}

impl<T> Engine<T> {
    /// An engine with `config`, checked first.
    pub fn new(config: EngineConfig) -> Result<Self, InvalidConfig> {
        config.validate()?;
        Ok(Self {
            shared: Shared::new(config),
            streams: Vec::new(),
            stream_index: BTreeMap::new(),
            last_stream: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    // ----------------------------------------------------------------------------------------
    // Inputs
    // ----------------------------------------------------------------------------------------

    /// Accepts a record with `token`, handed back with its outcome ([`Delivery::token`],
    /// [`Failure::token`](crate::Failure::token)), or refuses it (handing both back) when it is
    /// invalid or the outstanding limits are reached. The same as [`PreparedRecord::prepare`]
    /// then [`submit_prepared`](Self::submit_prepared).
    ///
    /// [`Delivery::token`]: crate::Delivery::token
    pub fn submit_with(
        &mut self,
        record: Record,
        token: T,
        now: Instant,
    ) -> Result<RecordId, (Rejected, T)> {
        match PreparedRecord::prepare(record) {
            Ok(prepared) => self.submit_prepared(prepared, token, now),
            Err(rejected) => Err((rejected, token)),
        }
    }

    /// Accepts a record checked and hashed beforehand (outside whatever lock guards the engine)
    /// with `token`, handed back with its outcome, or refuses it, handing both back, when it is
    /// too large for its stream or the outstanding limits are reached.
    pub fn submit_prepared(
        &mut self,
        prepared: PreparedRecord,
        token: T,
        now: Instant,
    ) -> Result<RecordId, (Rejected, T)> {
        let size = prepared.size();
        let cx = &mut self.shared;
        let charge = cx.record_charge(size);
        let limits = OutstandingLimits {
            records: cx.config.max_outstanding_records,
            bytes: cx.config.max_outstanding_bytes,
        };
        if let Err(reason) = cx.outcomes.check_room(charge, limits) {
            return Err((Rejected::new(reason, prepared.into_record()), token));
        }
        let known = match &self.last_stream {
            Some((stream, si)) if stream.same_allocation(&prepared.stream) => Some(*si),
            _ => self.stream_index.get(&prepared.stream).copied(),
        };
        let limit = known.map_or(self.shared.config.max_user_record_size, |si| {
            self.streams[si].max_record_size()
        });
        if size > limit {
            let reason = RejectReason::TooLarge { size, limit };
            return Err((Rejected::new(reason, prepared.into_record()), token));
        }
        let PreparedRecord {
            stream,
            record: user_record,
            hash_key,
            ..
        } = prepared;
        let si = match known {
            Some(si) => si,
            None => self.stream_slot(&stream, now),
        };
        self.last_stream = Some((stream, si));
        let cx = &mut self.shared;
        let id = cx.outcomes.accept(charge, now);
        let expiration = now + cx.config.record_ttl;
        let pending = Pending {
            id,
            hash_key,
            record: user_record,
            arrival: now,
            deadline: (now + cx.config.record_max_buffered_time).min(expiration),
            expiration,
            attempts: None,
            isolate: false,
            token,
        };
        self.streams[si].accept(cx, pending, now);
        Ok(RecordId(id))
    }

    /// The index of `stream`'s state, made (and its map read started) on its first record.
    fn stream_slot(&mut self, stream: &Stream, now: Instant) -> usize {
        if let Some(&si) = self.stream_index.get(stream) {
            return si;
        }
        let si = self.streams.len();
        let state = StreamState::new(stream.clone(), si, &mut self.shared, now);
        self.streams.push(state);
        self.stream_index.insert(stream.clone(), si);
        si
    }

    /// Sends what is buffered for every stream now, without waiting for deadlines. Rate limits
    /// still apply. Records waiting for a shard map keep waiting for it and are sent as soon as
    /// it arrives.
    pub fn flush(&mut self, now: Instant) {
        for stream in &mut self.streams {
            stream.flush(&mut self.shared, now);
        }
    }

    /// [`flush`](Self::flush) for one stream; a stream the engine has not seen has nothing to
    /// send.
    pub fn flush_stream(&mut self, stream: &Stream, now: Instant) {
        if let Some(&si) = self.stream_index.get(stream) {
            self.streams[si].flush(&mut self.shared, now);
        }
    }

    /// Flushes every stream and returns a marker: [`Event::Flushed`] with this id comes once
    /// every record accepted before this call has its outcome (the KPL's `flushSync`).
    pub fn flush_marker(&mut self, now: Instant) -> FlushId {
        let id = self.shared.outcomes.add_marker();
        self.flush(now);
        id
    }

    /// Drops a flush marker no one waits for any more: no [`Event::Flushed`] comes for it, and
    /// the engine does not keep it until its records finish.
    pub fn forget_flush_marker(&mut self, id: FlushId) {
        self.shared.outcomes.forget_marker(id);
    }

    /// Flush markers whose records have not all finished.
    pub fn pending_flush_markers(&self) -> usize {
        self.shared.outcomes.pending_markers()
    }

    /// Fails every outstanding record at once and forgets every request in flight; their
    /// answers will be ignored. Used at shutdown. Records that no call has carried yet fail with
    /// [`FailureReason::Abandoned`]; records of calls in flight (or written on a shard whose
    /// landing waits to be judged) with [`FailureReason::AbandonedInFlight`], as they may have
    /// been written.
    pub fn abandon(&mut self) {
        let mut abandoned: Vec<(usize, Pending<T>, FailureReason)> = Vec::new();
        for (si, stream) in self.streams.iter_mut().enumerate() {
            let taken = stream.abandon();
            abandoned.extend(
                taken
                    .into_iter()
                    .map(|(pending, reason)| (si, pending, reason)),
            );
        }
        for in_flight in self.shared.requests.abandon() {
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
        abandoned.sort_by_key(|(_, p, _)| p.id);
        for (si, pending, reason) in abandoned {
            self.streams[si].fail(&mut self.shared, pending, reason);
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
        let cx = &mut self.shared;
        let Some(in_flight) = cx.requests.complete(id) else {
            return;
        };
        let stream = &mut self.streams[in_flight.stream];
        let sent_at = in_flight.sent_at.unwrap_or(now);
        let unexpected = |operation: &str| {
            TransportError::new(
                TransportErrorKind::Other,
                codes::UNEXPECTED_RESPONSE,
                format!("the transport answered {operation} with another operation's response"),
            )
        };
        match (in_flight.kind, result) {
            (InFlightKind::PutRecords(entries), result) => {
                let result = match result {
                    Ok(Response::PutRecords(response)) => Ok(response),
                    Ok(_) => Err(unexpected("PutRecords")),
                    Err(error) => Err(error),
                };
                stream.on_put_records(cx, entries, result, Answer { sent_at, now });
            }
            (kind @ (InFlightKind::ListShards | InFlightKind::ShardHistory), result) => {
                let page = match result {
                    Ok(Response::ListShards(page)) => Ok(page),
                    Ok(_) => Err(unexpected("ListShards")),
                    Err(error) => Err(error),
                };
                if matches!(kind, InFlightKind::ShardHistory) {
                    stream.on_shard_history(cx, page, now);
                } else {
                    stream.on_list_shards(cx, page, now);
                }
            }
            (InFlightKind::DescribeStreamSummary, result) => {
                let summary = match result {
                    Ok(Response::DescribeStreamSummary(summary)) => Some(summary),
                    _ => None,
                };
                stream.on_summary(cx, summary);
            }
        }
    }

    /// Runs everything that was due at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let cx = &mut self.shared;
        while let Some((at, timer)) = cx.timers.pop_due(now) {
            match timer {
                Timer::Stream(si) => self.streams[si].on_stream_timer(cx, at, now),
                Timer::Shard(si, slot) => self.streams[si].on_shard_timer(cx, slot, at, now),
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
            let cx = &mut self.shared;
            let (id, mut request) = cx.requests.pop_outbox()?;
            if let Request::PutRecords(put) = &mut request {
                // A request waits in the outbox while the driver's connections are busy; records
                // that reached their `record_ttl` meanwhile are not sent: they expire.
                if let Some((si, dropped)) = cx.requests.take_expired_entries(id, put, now) {
                    self.streams[si].drop_expired_entries(cx, dropped, now);
                }
                if put.entries.is_empty() {
                    cx.requests.complete(id);
                    continue;
                }
            }
            cx.requests.mark_sent(id, now);
            return Some((id, request));
        }
    }

    /// The next outcome or flush completion.
    pub fn poll_event(&mut self) -> Option<Event<T>> {
        self.shared.outcomes.poll_event()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let streams = &self.streams;
        self.shared.timers.next(|timer| match timer {
            Timer::Stream(si) => streams[si].timer_at(None),
            Timer::Shard(si, slot) => streams[si].timer_at(Some(slot)),
        })
    }

    /// Whether events are waiting for [`poll_event`](Self::poll_event).
    pub fn has_events(&self) -> bool {
        self.shared.outcomes.has_events()
    }

    /// Whether requests are waiting for [`poll_request`](Self::poll_request).
    pub fn has_requests(&self) -> bool {
        self.shared.requests.has_outbox()
    }

    /// Records accepted so far (finished or not).
    pub fn records_accepted(&self) -> u64 {
        self.shared.outcomes.records_accepted()
    }

    /// Records accepted and not finished.
    pub fn outstanding_records(&self) -> usize {
        self.shared.outcomes.outstanding_records()
    }

    /// The memory charged against `max_outstanding_bytes` for the records accepted and not
    /// finished: each one's key, data, encoded copies and bookkeeping (see [`crate::memory`]).
    pub fn outstanding_bytes(&self) -> usize {
        self.shared.outcomes.outstanding_bytes()
    }

    /// When the oldest unfinished record was accepted.
    pub fn oldest_outstanding(&self) -> Option<Instant> {
        self.shared.outcomes.oldest_outstanding()
    }

    /// Statistics per stream.
    pub fn stats(&self) -> impl Iterator<Item = (&Stream, StreamStats)> {
        self.streams
            .iter()
            .map(|stream| (stream.stream(), stream.stats()))
    }

    /// Takes the samples of every metric since the last call, as one series per metric and
    /// place (stream, shard, error code), and starts a new interval. Exporters call this
    /// periodically; see [`crate::metrics`].
    pub fn take_metrics(&mut self) -> Vec<Series> {
        let mut series = Vec::new();
        for stream in &mut self.streams {
            stream.take_metrics(&mut series);
        }
        series
    }

    /// Takes a sample of `UserRecordsPending` for every stream: its outstanding records now.
    pub fn sample_pending(&mut self) {
        for stream in &mut self.streams {
            stream.sample_pending();
        }
    }

    /// The current shard map of `stream`, if one has been read.
    pub fn shard_map(&self, stream: &Stream) -> Option<&ShardMap> {
        let &si = self.stream_index.get(stream)?;
        self.streams[si].shard_map()
    }
}

/// The size of a record's entry, for the memory module's check of its bookkeeping charge.
#[cfg(test)]
pub(crate) const PENDING_SIZE: usize = size_of::<Pending>();

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kpl_aggregation::{HashKey, HashKeyRange};

    use super::outcomes::WINDOW_COMPACTION;
    use super::*;
    use crate::time::{Clock, SystemClock};
    use crate::transport::{
        ListShardsResponse, PutRecordsEntryResult, PutRecordsResponse, ShardDescription, ShardId,
        StreamSummary,
    };

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
    fn records_prepared_together_are_prepared_as_one_at_a_time() {
        let stream = Stream::new("s").unwrap_or_else(|e| panic!("{e}"));
        let record = |key: &str| Record::new(stream.clone(), key, "data");
        let mut records: Vec<Record> = (0..20).map(|i| record(&format!("key-{i}"))).collect();
        records.insert(3, record(""));
        records.insert(7, record("routed").with_explicit_hash_key("12345"));
        records.insert(9, record("bad").with_explicit_hash_key("-1"));
        let one_by_one: Vec<_> = records
            .iter()
            .cloned()
            .map(PreparedRecord::prepare)
            .collect();
        let together = PreparedRecord::prepare_many(records);
        assert_eq!(together.len(), one_by_one.len());
        for (many, one) in together.iter().zip(&one_by_one) {
            match (many, one) {
                (Ok(many), Ok(one)) => {
                    assert_eq!(many.hash_key, one.hash_key);
                    assert_eq!(many.record, one.record);
                }
                (Err(many), Err(one)) => assert_eq!(many.reason(), one.reason()),
                _ => panic!("{many:?} but {one:?}"),
            }
        }
        assert!(together[3].is_err() && together[9].is_err());
        let routed = together[7].as_ref().map(|p| p.hash_key.get());
        assert_eq!(routed.ok(), Some(12345));
    }

    #[test]
    fn a_retried_record_is_charged_its_history_until_it_finishes() {
        let now = SystemClock.now();
        let mut engine = Engine::new(EngineConfig::default()).unwrap_or_else(|e| panic!("{e}"));
        let stream = Stream::new("s").unwrap_or_else(|e| panic!("{e}"));
        let map = listing(&[("shardId-0", 0, u128::MAX, true)]);
        assert!(
            engine
                .submit(Record::new(stream, "k", vec![1; 10]), now)
                .is_ok()
        );
        let accepted = engine.outstanding_bytes();
        assert_eq!(accepted, engine.shared.record_charge(11));
        engine.flush(now);
        // The map, then the put, answered with a throttled entry: retried, with a history.
        let mut throttled = false;
        for _ in 0..4 {
            while let Some((id, request)) = engine.poll_request(now) {
                let response = match request {
                    Request::PutRecords(put) => {
                        throttled = true;
                        Response::PutRecords(PutRecordsResponse {
                            entries: put
                                .entries
                                .iter()
                                .map(|_| PutRecordsEntryResult::Failed {
                                    code: "ProvisionedThroughputExceededException".to_owned(),
                                    message: "slow down".to_owned(),
                                })
                                .collect(),
                        })
                    }
                    Request::ListShards(_) => map.clone(),
                    _ => continue,
                };
                engine.handle_response(id, Ok(response), now);
            }
            if throttled {
                break;
            }
        }
        assert!(throttled, "the record was sent");
        assert_eq!(engine.outstanding_records(), 1);
        assert_eq!(
            engine.outstanding_bytes(),
            accepted + crate::memory::HISTORY_BYTES
        );
        // Written at the next try: nothing is charged any more.
        let mut later = now + Duration::from_secs(5);
        for _ in 0..3 {
            // The retry leaves once the shard's rate and the collection grace let it.
            engine.handle_timeout(later);
            answer_all(&mut engine, &map, "shardId-0", later);
            later = engine.poll_timeout().unwrap_or(later).max(later);
        }
        assert_eq!(engine.outstanding_records(), 0);
        assert_eq!(engine.outstanding_bytes(), 0);
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
        engine.flush(start);
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
        assert!(engine.streams[0].is_retired());
        assert!(engine.streams[0].shard_count() == 0);
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
        engine.flush(now);
        answer_all(&mut engine, &one, "shardId-0", now);
        assert!(matches!(engine.poll_event(), Some(Event::Delivered(_))));
        assert!(!engine.streams[0].is_retired());
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
            // A second apart: the shard's rate lets an aggregate through each time.
            let now = now + Duration::from_secs(u64::from(round));
            for i in 0..200 {
                let record = Record::new(stream.clone(), format!("k{round}-{i}"), vec![round; 100]);
                assert!(engine.submit(record, now).is_ok());
            }
            engine.flush(now);
            answer_all(&mut engine, &one, "shardId-0", now);
        }
        assert_eq!(engine.outstanding_records(), 0);
        assert_eq!(
            engine.streams[0].shard(0).spare_lists(),
            1,
            "lists kept for reuse"
        );
        // The shard splits; the next map read closes it.
        let split = listing(&[
            ("shardId-0", 0, u128::MAX, false),
            ("shardId-1", 0, u128::MAX / 2, true),
            ("shardId-2", u128::MAX / 2 + 1, u128::MAX, true),
        ]);
        engine.streams[0].start_refresh(&mut engine.shared, now);
        answer_all(&mut engine, &split, "shardId-1", now);
        let closed = &engine.streams[0].shard(0);
        assert!(!closed.open);
        assert!(closed.holds_no_buffers());
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
        engine.flush(t0);
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
                engine.flush(now);
                answer_all(&mut engine, &one, "shardId-0", now);
            }
        }
        let marker = engine.flush_marker(now);
        answer_all(&mut engine, &one, "shardId-0", now);
        assert_eq!(engine.outstanding_records(), 1);
        assert!(engine.shared.outcomes.window_entries() <= WINDOW_COMPACTION + 1);
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
        assert_eq!(engine.shared.outcomes.window_entries(), 0);
    }
}
