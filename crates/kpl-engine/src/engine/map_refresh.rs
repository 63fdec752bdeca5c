//! A stream's shard map: reading it (paged `ListShards`, retried on a backoff), the stream's
//! record-size limit (`DescribeStreamSummary`), the listing of every shard that judges landings
//! on shards the map does not know, and the records that wait for a map.

use std::collections::VecDeque;
use std::time::Instant;

use kpl_aggregation::HashKey;

use super::pending::Pending;
use super::requests::InFlightKind;
use crate::backoff::RefreshBackoff;
use crate::config::MAX_RECORD_SIZE_LIMIT;
use crate::shard_map::{ListingPages, NextPage, ShardMap};
use crate::stream::Stream;
use crate::transport::{
    DescribeStreamSummaryRequest, ListShardsRequest, ListShardsResponse, Request, ShardDescription,
    ShardFilter, StreamSummary,
};

const KIB: usize = 1024;
/// Page size of `ListShards`.
const LIST_SHARDS_PAGE: u32 = 1_000;
/// The smallest record-size limit a stream can have (the service's default, 1 MiB).
const MIN_RECORD_SIZE_LIMIT: usize = 1024 * KIB;

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
pub(super) struct MapRefresh<T = ()> {
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
    pub(super) waiting: VecDeque<Pending<T>>,
    /// A flush was asked for while records waited for a map: flush again once it is installed.
    pub(super) flush_on_map: bool,
}

impl<T> MapRefresh<T> {
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
    pub(super) fn begin(
        &mut self,
        stream: &Stream,
        now: Instant,
    ) -> Vec<(InFlightKind<T>, Request)> {
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
    pub(super) fn wait(&mut self, pending: Pending<T>) -> Instant {
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
        let mut maps: MapRefresh = MapRefresh::new(now);
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
        let mut maps: MapRefresh = MapRefresh::new(now);
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
        let mut maps: MapRefresh = MapRefresh::new(now);
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
