//! A stream's side of its shard map: starting reads, taking their pages and the summary,
//! installing a map (new shards get queues, closed ones give their records back), and failing
//! what is queued when the stream is gone.

use std::time::Instant;

use rand::Rng;

use super::StreamState;
use crate::engine::map_refresh::ListingStep;
use crate::engine::pending::Pending;
use crate::engine::requests::InFlightKind;
use crate::engine::shard_queue::ShardQueue;
use crate::engine::shared::Shared;
use crate::engine::timers::Timer;
use crate::outcome::{AttemptError, FailureReason, codes};
use crate::shard_map::ShardMap;
use crate::transport::{
    ListShardsResponse, ShardDescription, StreamSummary, TransportError, TransportErrorKind,
};

/// How far each periodic map read is moved at random, as a fraction of the interval, so
/// producers started together do not read together.
const REFRESH_JITTER: std::ops::RangeInclusive<f64> = 0.9..=1.1;

impl<T> StreamState<T> {
    /// Starts a read of the map (and of the stream's summary until one is known), unless one
    /// is under way.
    pub(in crate::engine) fn start_refresh(&mut self, cx: &mut Shared<T>, now: Instant) {
        let stream = &mut *self;
        for (kind, request) in stream.maps.begin(&stream.stream, now) {
            cx.requests.enqueue(self.index, kind, request);
        }
    }

    pub(in crate::engine) fn on_summary(
        &mut self,
        cx: &mut Shared<T>,
        summary: Option<StreamSummary>,
    ) {
        let stream = &mut *self;
        if let Some(limit) = stream.maps.on_summary(summary) {
            // The configured size is a cap of the application's: the stream only lowers it.
            stream.max_record_size = limit.min(cx.config.max_user_record_size);
        }
    }

    pub(in crate::engine) fn on_list_shards(
        &mut self,
        cx: &mut Shared<T>,
        page: Result<ListShardsResponse, TransportError>,
        now: Instant,
    ) {
        match page {
            Ok(page) => {
                let stream = &mut *self;
                match stream.maps.refresh.add_page(&stream.stream, page) {
                    ListingStep::Read(request) => {
                        cx.requests
                            .enqueue(self.index, InFlightKind::ListShards, request);
                    }
                    ListingStep::Done(shards) => self.install_map(cx, shards, now),
                    ListingStep::Malformed => {
                        stream.stats.error(codes::MALFORMED_LISTING, 1);
                        self.refresh_failed(cx, now);
                    }
                }
            }
            Err(error) => {
                // In ordering mode records never leave without a map: when it cannot be read
                // for a reason retrying cannot fix, they fail with that reason now, not by
                // expiring later under a misleading one.
                let unroutable = cx.ordered() && self.maps.map.is_none() && !error.is_retryable();
                if error.kind() == TransportErrorKind::NotFound || unroutable {
                    self.fail_queued(cx, "ListShards", &error, now);
                }
                self.refresh_failed(cx, now);
            }
        }
    }

    /// The stream does not exist: every record queued for it (not those in requests already
    /// made) fails now with the service's answer, instead of each waiting for its own.
    pub(super) fn fail_queued(
        &mut self,
        cx: &mut Shared<T>,
        operation: &str,
        error: &TransportError,
        now: Instant,
    ) {
        let stream = &mut *self;
        let mut waiting: Vec<Pending<T>> = stream.maps.waiting.drain(..).collect();
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
            cx.add_failed_attempt(&mut pending, now, now, &detail);
            self.fail(cx, pending, FailureReason::Terminal(error.kind()));
        }
    }

    pub(super) fn start_history_read(&mut self, cx: &mut Shared<T>, now: Instant) {
        let stream = &mut *self;
        if let Some(request) = stream.maps.history.begin(&stream.stream, now) {
            cx.requests
                .enqueue(self.index, InFlightKind::ShardHistory, request);
        }
    }

    pub(in crate::engine) fn on_shard_history(
        &mut self,
        cx: &mut Shared<T>,
        page: Result<ListShardsResponse, TransportError>,
        now: Instant,
    ) {
        let stream = &mut *self;
        match page {
            Ok(page) => match stream.maps.history.add_page(&stream.stream, page) {
                ListingStep::Read(request) => {
                    cx.requests
                        .enqueue(self.index, InFlightKind::ShardHistory, request);
                    return;
                }
                ListingStep::Done(shards) => {
                    if let Some(map) = stream.maps.map.as_mut() {
                        map.remember(&shards);
                    }
                }
                ListingStep::Malformed => {
                    stream.stats.error(codes::MALFORMED_LISTING, 1);
                    self.history_failed(cx, now);
                    return;
                }
            },
            Err(error) if error.kind() == TransportErrorKind::NotFound => {
                stream.maps.history.in_flight = false;
                self.fail_queued(cx, "ListShards", &error, now);
                return;
            }
            Err(_) => {
                self.history_failed(cx, now);
                return;
            }
        }
        let maps = &mut self.maps;
        maps.history.succeeded();
        maps.history_read = Some(maps.history.started_at);
        self.judge_held_landings(cx, now);
    }

    /// Reads every shard again after a backoff; the landings wait, at most until their
    /// `decide_by` (armed already).
    fn history_failed(&mut self, cx: &mut Shared<T>, now: Instant) {
        let stream = &mut *self;
        let retry_at = stream.maps.history.failed(now);
        stream.arm_timer(cx, retry_at);
    }

    fn refresh_failed(&mut self, cx: &mut Shared<T>, now: Instant) {
        let stream = &mut *self;
        stream.maps.refresh.failed(now);
        // Records held for the first map stop waiting for this read: servicing the stream
        // sends those past their deadline and arms the next wake-up (the retry included).
        stream.timer = None;
        self.service_stream(cx, now);
    }

    pub(super) fn install_map(
        &mut self,
        cx: &mut Shared<T>,
        shards: Vec<ShardDescription>,
        now: Instant,
    ) {
        let interval = cx.config.shard_map_refresh_interval;
        let jitter = cx.rng.random_range(REFRESH_JITTER);
        let aggregate_limit = self.aggregate_limit(&cx.config);
        let outer_partition_key = cx.config.outer_partition_key;
        let map = ShardMap::from_shards(&shards, self.maps.map.as_ref());
        if !map.is_consistent() {
            // Pages read across a reshard; read again rather than route by a torn map.
            self.refresh_failed(cx, now);
            return;
        }
        // Before the new map's slots are found: the old routing by slot is replaced below.
        self.forget_closed_slots(cx);
        let stream = &mut *self;
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
                        &cx.config,
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
        let mut displaced: Vec<Pending<T>> = Vec::new();
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
        stream.arm_timer(cx, next_at);
        let flush = std::mem::take(&mut stream.maps.flush_on_map);
        // Records that waited (in ordering mode, possibly until their expiration) leave within one
        // buffering time of the map's arrival.
        let latest = now + cx.config.record_max_buffered_time;
        for mut pending in displaced {
            pending.deadline = pending.deadline.min(latest);
            self.route(cx, pending, now);
        }
        // After the routing above: records re-sent from held landings go to the head of their
        // shards, ahead of the records that were queued behind them.
        self.judge_held_landings(cx, now);
        if flush {
            self.flush(cx, now);
        }
    }

    /// Drops the queues of shards that were closed by an earlier map, once nothing refers to
    /// their places (no record of the stream outstanding, none waiting for a map or a
    /// judgement, the collector empty): a stream resharded over and over keeps only its open
    /// shards and the parents of the latest reshard. The open shards' queues move down, their
    /// wake-ups with them.
    fn forget_closed_slots(&mut self, cx: &mut Shared<T>) {
        let unreferenced = self.stats.user_records_pending == 0
            && self.held_landings.is_empty()
            && self.maps.waiting.is_empty()
            && self.collector.is_empty();
        if !unreferenced || self.shards.iter().all(|shard| shard.open) {
            return;
        }
        let queues = std::mem::take(&mut self.shards);
        self.slot_of.clear();
        for (old_slot, mut shard) in queues.into_iter().enumerate() {
            let wake_at = shard.timer;
            cx.timers
                .disarm(&mut shard.timer, Timer::Shard(self.index, old_slot));
            if !shard.open {
                continue;
            }
            let slot = self.shards.len();
            shard.move_to(slot);
            if let Some(at) = wake_at {
                cx.timers
                    .arm(&mut shard.timer, at, Timer::Shard(self.index, slot));
            }
            self.slot_of.insert(shard.id.clone(), slot);
            self.shards.push(shard);
        }
    }

    /// A landing that contradicts the map: read it again, unless it was read after the
    /// request was sent.
    pub(super) fn invalidate_map(&mut self, cx: &mut Shared<T>, sent_at: Instant, now: Instant) {
        if self.maps.contradicted_by(sent_at) {
            self.start_refresh(cx, now);
        }
    }

    /// Starts a map read unless one is in flight or a failing one waits for its retry.
    pub(super) fn ensure_map_read(&mut self, cx: &mut Shared<T>, now: Instant) {
        if self.maps.can_read_now() {
            self.start_refresh(cx, now);
        }
    }
}
