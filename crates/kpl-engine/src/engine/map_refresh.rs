//! A stream's shard map: reading it (paged `ListShards`, retried on a backoff), the stream's
//! record-size limit (`DescribeStreamSummary`), the listing of every shard that judges landings
//! on shards the map does not know, and the records that wait for a map.

use std::collections::VecDeque;
use std::time::Instant;

use kpl_aggregation::HashKey;
use rand::Rng;

use super::Engine;
use super::pending::Pending;
use super::requests::InFlightKind;
use super::shard_queue::ShardQueue;
use super::timers::Timer;
use crate::backoff::RefreshBackoff;
use crate::config::{MAX_RECORD_SIZE_LIMIT, OrderingMode};
use crate::outcome::{AttemptError, FailureReason, codes};
use crate::shard_map::{ListingPages, NextPage, ShardMap};
use crate::stream::Stream;
use crate::transport::{
    DescribeStreamSummaryRequest, ListShardsRequest, ListShardsResponse, Request, ShardDescription,
    ShardFilter, StreamSummary, TransportError, TransportErrorKind,
};

const KIB: usize = 1024;
/// Page size of `ListShards`.
const LIST_SHARDS_PAGE: u32 = 1_000;
/// The smallest record-size limit a stream can have (the service's default, 1 MiB).
const MIN_RECORD_SIZE_LIMIT: usize = 1024 * KIB;
/// How far each periodic map read is moved at random, as a fraction of the interval, so
/// producers started together do not read together.
const REFRESH_JITTER: std::ops::RangeInclusive<f64> = 0.9..=1.1;

/// One kind of `ListShards` read of a stream, paged, retried on a backoff when it fails: the
/// open shards (the map), or every shard (to look up a landing's closed shard).
#[derive(Debug)]
pub(super) struct Listing {
    filter: ShardFilter,
    pub(super) in_flight: bool,
    pub(super) started_at: Instant,
    pages: ListingPages,
    /// When to read next: the periodic refresh, or the retry after a failure.
    pub(super) next_at: Option<Instant>,
    backoff: RefreshBackoff,
}

/// What a page of a listing leads to.
#[derive(Debug)]
pub(super) enum ListingStep {
    /// The next page is to be read with this request.
    Read(Request),
    /// The listing is whole.
    Done(Vec<ShardDescription>),
    /// The pages do not make a listing (too many, or a token that repeats).
    Malformed,
}

impl Listing {
    fn new(filter: ShardFilter, now: Instant) -> Self {
        Self {
            filter,
            in_flight: false,
            started_at: now,
            pages: ListingPages::default(),
            next_at: None,
            backoff: RefreshBackoff::new(),
        }
    }

    /// Starts a read at `now` with its first page's request, unless one is in flight.
    pub(super) fn begin(&mut self, stream: &Stream, now: Instant) -> Option<Request> {
        if self.in_flight {
            return None;
        }
        self.in_flight = true;
        self.started_at = now;
        self.pages.clear();
        self.next_at = None;
        Some(self.page_request(stream, None))
    }

    /// Takes a page's answer.
    pub(super) fn add_page(&mut self, stream: &Stream, page: ListShardsResponse) -> ListingStep {
        match self.pages.add(page.shards, page.next_token) {
            NextPage::Read(token) => ListingStep::Read(self.page_request(stream, Some(token))),
            NextPage::Done(shards) => ListingStep::Done(shards),
            NextPage::Malformed(_) => ListingStep::Malformed,
        }
    }

    fn page_request(&self, stream: &Stream, next_token: Option<String>) -> Request {
        Request::ListShards(ListShardsRequest {
            stream: stream.clone(),
            next_token,
            filter: self.filter,
            max_results: LIST_SHARDS_PAGE,
        })
    }

    /// The read completed.
    pub(super) fn succeeded(&mut self) {
        self.in_flight = false;
        self.backoff.reset();
    }

    /// The read failed: it is tried again after the backoff; returns when.
    pub(super) fn failed(&mut self, now: Instant) -> Instant {
        self.in_flight = false;
        self.pages.clear();
        let retry_at = now + self.backoff.next_delay();
        self.next_at = Some(retry_at);
        retry_at
    }

    /// Whether a read failed and waits for its retry.
    pub(super) fn is_failing(&self) -> bool {
        self.backoff.is_failing()
    }

    /// Stops the read: its answers will be ignored.
    pub(super) fn abandon(&mut self) {
        self.in_flight = false;
        self.next_at = None;
    }
}

/// A stream's map and the reads that keep it current.
#[derive(Debug)]
pub(super) struct MapRefresh {
    pub(super) map: Option<ShardMap>,
    /// When the read that built `map` started; answers to requests sent before it may reflect
    /// an older layout and do not trigger another read.
    pub(super) map_started_at: Option<Instant>,
    /// For each open shard of `map`, in map order, its slot.
    open_slots: Vec<usize>,
    pub(super) refresh: Listing,
    summary_known: bool,
    summary_in_flight: bool,
    /// The listing of every shard, closed ones included, read to judge a landing on a shard
    /// that closed before the open shards could be listed.
    pub(super) history: Listing,
    /// When the last finished listing of every shard started.
    pub(super) history_read: Option<Instant>,
    /// Records waiting for a shard map (the first one, or a refresh after a wrong-shard
    /// landing), sorted by deadline.
    pub(super) waiting: VecDeque<Pending>,
    /// A flush was asked for while records waited for a map: flush again once it is installed.
    pub(super) flush_on_map: bool,
}

impl MapRefresh {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            map: None,
            map_started_at: None,
            open_slots: Vec::new(),
            refresh: Listing::new(ShardFilter::AtLatest, now),
            summary_known: false,
            summary_in_flight: false,
            history: Listing::new(ShardFilter::FromTrimHorizon, now),
            history_read: None,
            waiting: VecDeque::new(),
            flush_on_map: false,
        }
    }

    /// Starts a map read, with a summary read the first time (and until one succeeds): the
    /// requests to send, none if a read is in flight.
    pub(super) fn begin(&mut self, stream: &Stream, now: Instant) -> Vec<(InFlightKind, Request)> {
        let Some(list) = self.refresh.begin(stream, now) else {
            return Vec::new();
        };
        let mut requests = vec![(InFlightKind::ListShards, list)];
        if !self.summary_known && !self.summary_in_flight {
            self.summary_in_flight = true;
            let describe = DescribeStreamSummaryRequest {
                stream: stream.clone(),
            };
            requests.push((
                InFlightKind::DescribeStreamSummary,
                Request::DescribeStreamSummary(describe),
            ));
        }
        requests
    }

    /// Takes the summary's answer; returns the stream's record-size limit if it gave one. A
    /// failed or unhelpful answer leaves the configured limit; the next read asks again.
    pub(super) fn on_summary(&mut self, summary: Option<StreamSummary>) -> Option<usize> {
        self.summary_in_flight = false;
        let summary = summary?;
        self.summary_known = true;
        let kib = summary.max_record_size_kib?;
        let bytes = (kib as usize).saturating_mul(KIB);
        Some(bytes.clamp(MIN_RECORD_SIZE_LIMIT, MAX_RECORD_SIZE_LIMIT))
    }

    /// Installs a map read whole and consistent, routing by `open_slots` (the slot of each of its
    /// open shards, in map order); the next periodic read is due at `next_at`.
    pub(super) fn install(&mut self, map: ShardMap, open_slots: Vec<usize>, next_at: Instant) {
        self.refresh.succeeded();
        self.map_started_at = Some(self.refresh.started_at);
        self.refresh.next_at = Some(next_at);
        self.map = Some(map);
        self.open_slots = open_slots;
    }

    /// The slot of the open shard that owns `hash_key`; `None` without a map.
    #[inline(always)]
    pub(super) fn predict(&self, hash_key: HashKey) -> Option<usize> {
        let index = self.map.as_ref()?.lookup(hash_key)?;
        self.open_slots.get(index).copied()
    }

    /// Whether a landing that contradicts the map, of a request sent at `sent_at`, calls for a
    /// new read: not if the map was read after the request was sent (it already reflects what
    /// the request saw).
    pub(super) fn contradicted_by(&self, sent_at: Instant) -> bool {
        self.map_started_at.is_none_or(|read| sent_at >= read)
    }

    /// Whether a read can start now for a landing: none in flight, none failing.
    pub(super) fn can_read_now(&self) -> bool {
        !self.refresh.in_flight && !self.refresh.is_failing()
    }

    /// Whether a read is under way.
    pub(super) fn is_reading(&self) -> bool {
        self.refresh.in_flight || self.history.in_flight || self.summary_in_flight
    }

    /// Makes a record wait for a map; returns its deadline, when it stops waiting.
    pub(super) fn wait(&mut self, pending: Pending) -> Instant {
        let deadline = pending.deadline;
        // Records mostly arrive in deadline order: append without searching.
        if self
            .waiting
            .back()
            .is_none_or(|last| last.deadline <= deadline)
        {
            self.waiting.push_back(pending);
        } else {
            let at = self.waiting.partition_point(|p| p.deadline <= deadline);
            self.waiting.insert(at, pending);
        }
        deadline
    }

    /// Forgets the map of a stream gone idle, and stops reading it.
    pub(super) fn retire(&mut self) {
        self.map = None;
        self.map_started_at = None;
        self.open_slots = Vec::new();
        self.refresh.next_at = None;
        self.history.next_at = None;
        self.history_read = None;
        self.waiting = VecDeque::new();
    }

    /// Stops every read: their answers will be ignored.
    pub(super) fn abandon(&mut self) {
        self.refresh.in_flight = false;
        self.history.abandon();
        self.summary_in_flight = false;
    }
}

impl Engine {
    pub(super) fn start_refresh(&mut self, si: usize, now: Instant) {
        let stream = &mut self.streams[si];
        for (kind, request) in stream.maps.begin(&stream.stream, now) {
            self.requests.enqueue(si, kind, request);
        }
    }

    pub(super) fn on_summary(&mut self, si: usize, summary: Option<StreamSummary>) {
        let stream = &mut self.streams[si];
        if let Some(limit) = stream.maps.on_summary(summary) {
            // The configured size is a cap of the application's: the stream only lowers it.
            stream.max_record_size = limit.min(self.config.max_user_record_size);
        }
    }

    pub(super) fn on_list_shards(
        &mut self,
        si: usize,
        page: Result<ListShardsResponse, TransportError>,
        now: Instant,
    ) {
        match page {
            Ok(page) => {
                let stream = &mut self.streams[si];
                match stream.maps.refresh.add_page(&stream.stream, page) {
                    ListingStep::Read(request) => {
                        self.requests.enqueue(si, InFlightKind::ListShards, request);
                    }
                    ListingStep::Done(shards) => self.install_map(si, shards, now),
                    ListingStep::Malformed => {
                        stream.stats.error(codes::MALFORMED_LISTING, 1);
                        self.refresh_failed(si, now);
                    }
                }
            }
            Err(error) => {
                // In ordering mode records never leave without a map: when it cannot be read
                // for a reason retrying cannot fix, they fail with that reason now, not by
                // expiring later under a misleading one.
                let unroutable = self.config.ordering == OrderingMode::PerShard
                    && self.streams[si].maps.map.is_none()
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
    pub(super) fn fail_queued(
        &mut self,
        si: usize,
        operation: &str,
        error: &TransportError,
        now: Instant,
    ) {
        let stream = &mut self.streams[si];
        let mut waiting: Vec<Pending> = stream.maps.waiting.drain(..).collect();
        for packed in stream.collector.take() {
            if let Some(shard) = packed.slot.and_then(|slot| stream.shards.get_mut(slot)) {
                shard.busy = false;
            }
            waiting.extend(packed.records);
        }
        for held in stream.held_landings.drain(..) {
            if let Some(shard) = held.slot.and_then(|slot| stream.shards.get_mut(slot)) {
                shard.busy = false;
            }
            waiting.extend(held.records);
        }
        for shard in &mut stream.shards {
            shard.awaiting_refresh = false;
            waiting.append(&mut shard.take_all());
        }
        waiting.sort_by_key(|p| p.id);
        let detail =
            AttemptError::shared(error.code(), format!("{operation}: {}", error.message()));
        for mut pending in waiting {
            self.add_failed_attempt(&mut pending, now, now, &detail);
            self.fail(si, pending, FailureReason::Terminal(error.kind()));
        }
    }

    pub(super) fn start_history_read(&mut self, si: usize, now: Instant) {
        let stream = &mut self.streams[si];
        if let Some(request) = stream.maps.history.begin(&stream.stream, now) {
            self.requests
                .enqueue(si, InFlightKind::ShardHistory, request);
        }
    }

    pub(super) fn on_shard_history(
        &mut self,
        si: usize,
        page: Result<ListShardsResponse, TransportError>,
        now: Instant,
    ) {
        let stream = &mut self.streams[si];
        match page {
            Ok(page) => match stream.maps.history.add_page(&stream.stream, page) {
                ListingStep::Read(request) => {
                    self.requests
                        .enqueue(si, InFlightKind::ShardHistory, request);
                    return;
                }
                ListingStep::Done(shards) => {
                    if let Some(map) = stream.maps.map.as_mut() {
                        map.remember(&shards);
                    }
                }
                ListingStep::Malformed => {
                    stream.stats.error(codes::MALFORMED_LISTING, 1);
                    self.history_failed(si, now);
                    return;
                }
            },
            Err(error) if error.kind() == TransportErrorKind::NotFound => {
                stream.maps.history.in_flight = false;
                self.fail_queued(si, "ListShards", &error, now);
                return;
            }
            Err(_) => {
                self.history_failed(si, now);
                return;
            }
        }
        let maps = &mut self.streams[si].maps;
        maps.history.succeeded();
        maps.history_read = Some(maps.history.started_at);
        self.judge_held_landings(si, now);
    }

    /// Reads every shard again after a backoff; the landings wait, at most until their
    /// `decide_by` (armed already).
    fn history_failed(&mut self, si: usize, now: Instant) {
        let stream = &mut self.streams[si];
        let retry_at = stream.maps.history.failed(now);
        self.timers
            .arm(&mut stream.timer, retry_at, Timer::Stream(si));
    }

    fn refresh_failed(&mut self, si: usize, now: Instant) {
        let stream = &mut self.streams[si];
        stream.maps.refresh.failed(now);
        // Records held for the first map stop waiting for this read: servicing the stream
        // sends those past their deadline and arms the next wake-up (the retry included).
        stream.timer = None;
        self.service_stream(si, now);
    }

    pub(super) fn install_map(&mut self, si: usize, shards: Vec<ShardDescription>, now: Instant) {
        let interval = self.config.shard_map_refresh_interval;
        let jitter = self.rng.random_range(REFRESH_JITTER);
        let aggregate_limit = self.aggregate_limit(si);
        let outer_partition_key = self.config.outer_partition_key;
        let stream = &mut self.streams[si];
        let map = ShardMap::from_shards(&shards, stream.maps.map.as_ref());
        if !map.is_consistent() {
            // Pages read across a reshard; read again rather than route by a torn map.
            self.refresh_failed(si, now);
            return;
        }
        let mut open_slots = Vec::with_capacity(map.open_shards().len());
        for &(range, ref shard_id) in map.open_shards() {
            let slot = match stream.slot_of.get(shard_id) {
                Some(&slot) => slot,
                None => {
                    let slot = stream.shards.len();
                    stream.shards.push(ShardQueue::new(
                        slot,
                        shard_id.clone(),
                        range,
                        aggregate_limit,
                        &self.config,
                        now,
                    ));
                    stream.slot_of.insert(shard_id.clone(), slot);
                    slot
                }
            };
            open_slots.push(slot);
        }
        // Records queued on shards that closed go through the new map; those in flight are
        // judged by where they land.
        let mut displaced: Vec<Pending> = Vec::new();
        for (slot, shard) in stream.shards.iter_mut().enumerate() {
            shard.awaiting_refresh = false;
            let open = open_slots.contains(&slot);
            if !open {
                displaced.append(&mut shard.close(aggregate_limit, outer_partition_key));
            }
            shard.open = open;
        }
        displaced.extend(stream.maps.waiting.drain(..));
        displaced.sort_by_key(|p| p.id);
        let next_at = now + interval.mul_f64(jitter);
        stream.maps.install(map, open_slots, next_at);
        self.timers
            .arm(&mut stream.timer, next_at, Timer::Stream(si));
        let flush = std::mem::take(&mut stream.maps.flush_on_map);
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
            self.flush_stream_index(si, now);
        }
    }

    /// A landing that contradicts the map: read it again, unless it was read after the
    /// request was sent.
    pub(super) fn invalidate_map(&mut self, si: usize, sent_at: Instant, now: Instant) {
        if self.streams[si].maps.contradicted_by(sent_at) {
            self.start_refresh(si, now);
        }
    }

    /// Starts a map read unless one is in flight or a failing one waits for its retry.
    pub(super) fn ensure_map_read(&mut self, si: usize, now: Instant) {
        if self.streams[si].maps.can_read_now() {
            self.start_refresh(si, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::time::{Clock, SystemClock};
    use std::time::Duration;

    use kpl_aggregation::HashKeyRange;

    use super::*;
    use crate::engine::pending::tests::pending;
    use crate::transport::ShardId;

    fn stream() -> Stream {
        Stream::new("s").unwrap_or_else(|e| panic!("{e}"))
    }

    fn page(shards: &[&str], next_token: Option<&str>) -> ListShardsResponse {
        ListShardsResponse {
            shards: shards
                .iter()
                .map(|id| ShardDescription {
                    shard_id: ShardId::from(*id),
                    hash_key_range: HashKeyRange::FULL,
                    open: true,
                })
                .collect(),
            next_token: next_token.map(str::to_owned),
        }
    }

    #[test]
    fn a_read_asks_for_the_summary_until_it_is_known_and_never_twice_at_once() {
        let now = SystemClock.now();
        let mut maps = MapRefresh::new(now);
        let first = maps.begin(&stream(), now);
        assert_eq!(first.len(), 2, "the map and the summary");
        assert!(maps.begin(&stream(), now).is_empty(), "one read at a time");
        let summary = StreamSummary {
            max_record_size_kib: Some(10 * 1024),
            open_shard_count: 1,
        };
        assert_eq!(maps.on_summary(Some(summary)), Some(10 * 1024 * 1024));
        maps.refresh.succeeded();
        assert_eq!(maps.begin(&stream(), now).len(), 1, "the summary is known");
    }

    #[test]
    fn a_listing_follows_its_pages_and_retries_on_a_growing_backoff() {
        let now = SystemClock.now();
        let mut maps = MapRefresh::new(now);
        assert!(maps.refresh.begin(&stream(), now).is_some());
        let ListingStep::Read(Request::ListShards(next)) =
            maps.refresh.add_page(&stream(), page(&["a"], Some("t1")))
        else {
            panic!("a second page")
        };
        assert_eq!(next.next_token.as_deref(), Some("t1"));
        let ListingStep::Done(shards) = maps.refresh.add_page(&stream(), page(&["b"], None)) else {
            panic!("done")
        };
        assert_eq!(shards.len(), 2);
        let first_retry = maps.refresh.failed(now);
        assert!(maps.refresh.is_failing() && !maps.can_read_now());
        assert!(maps.refresh.begin(&stream(), now).is_some());
        let second_retry = maps.refresh.failed(now);
        assert!(second_retry - now > first_retry - now);
        maps.refresh.succeeded();
        assert!(!maps.refresh.is_failing());
    }

    #[test]
    fn records_wait_for_a_map_in_deadline_order_and_route_once_it_is_installed() {
        let now = SystemClock.now();
        let mut maps = MapRefresh::new(now);
        let mut late = pending(0, now, Duration::from_secs(30));
        late.deadline = now + Duration::from_millis(50);
        let early = pending(1, now, Duration::from_secs(30));
        let early_hash = early.hash_key;
        maps.wait(pending(2, now, Duration::from_secs(30)));
        maps.wait(late);
        let mut earliest = early;
        earliest.deadline = now + Duration::from_millis(10);
        maps.wait(earliest);
        let order: Vec<u64> = maps.waiting.iter().map(|p| p.id).collect();
        assert_eq!(order, [1, 0, 2]);
        assert_eq!(maps.predict(early_hash), None);
        let shards = [ShardDescription {
            shard_id: ShardId::from("a"),
            hash_key_range: HashKeyRange::FULL,
            open: true,
        }];
        maps.refresh.begin(&stream(), now);
        let read_at = now + Duration::from_secs(1);
        maps.refresh.started_at = read_at;
        maps.install(ShardMap::from_shards(&shards, None), vec![7], now);
        assert_eq!(maps.predict(early_hash), Some(7));
        assert!(!maps.contradicted_by(now), "sent before the map was read");
        assert!(maps.contradicted_by(read_at));
    }
}
