//! The way out: a record is routed to its predicted shard's aggregate (or waits for a map),
//! each shard passes what its limits allow to its stream's collector, and the collector becomes
//! a `PutRecords` request.

use std::collections::BTreeMap;
use std::time::Instant;

use super::StreamState;
use crate::engine::collector::RequestShape;
use crate::engine::pending::{PackedRecord, Packing, Pending, min_instant};
use crate::engine::requests::{EntryMeta, InFlightKind};
use crate::engine::shared::Shared;
use crate::engine::timers::Timer;
use crate::metrics::Metric;
use crate::outcome::{AttemptError, FailureReason, codes};
use crate::transport::{PutRecordsRequest, Request};

impl<T> StreamState<T> {
    /// Sends a record to its predicted shard's aggregate, or makes it wait for a map.
    #[inline(always)]
    pub(super) fn route(&mut self, cx: &mut Shared<T>, pending: Pending<T>, now: Instant) {
        match self.maps.predict(pending.hash_key) {
            Some(slot) => self.aggregate(cx, slot, pending, now),
            // No map yet (the map is never torn: see `install_map`). Wait for it; at the
            // deadline the record goes alone, unpredicted, except in ordering mode.
            None => self.await_map(cx, pending),
        }
    }

    /// Makes a record wait for its stream's map, at most until its deadline.
    pub(super) fn await_map(&mut self, cx: &mut Shared<T>, pending: Pending<T>) {
        let stream = &mut *self;
        let deadline = stream.maps.wait(pending);
        stream.arm_timer(cx, deadline);
    }

    #[inline(always)]
    fn aggregate(&mut self, cx: &mut Shared<T>, slot: usize, pending: Pending<T>, now: Instant) {
        let max_count = cx.aggregate_max_count(Packing::Aggregated);
        let shard = &mut self.shards[slot];
        shard.add(pending, max_count);
        if shard.has_ready() {
            self.service_shard(cx, slot, now);
        } else if let Some(deadline) = shard.aggregate_deadline() {
            cx.timers
                .arm(&mut shard.timer, deadline, Timer::Shard(self.index, slot));
        }
    }

    /// Puts records to retry at the front of their (re-predicted) shards' queues, aggregated
    /// among themselves or each alone, so they go before anything accepted after them.
    pub(super) fn requeue_front(
        &mut self,
        cx: &mut Shared<T>,
        records: Vec<Pending<T>>,
        packing: Packing,
        now: Instant,
    ) {
        let mut by_slot: BTreeMap<usize, Vec<Pending<T>>> = BTreeMap::new();
        for pending in records {
            match self.maps.predict(pending.hash_key) {
                Some(slot) => by_slot.entry(slot).or_default().push(pending),
                None => self.await_map(cx, pending),
            }
        }
        let max_count = cx.aggregate_max_count(packing);
        let aggregate_limit = self.aggregate_limit(&cx.config);
        for (slot, records) in by_slot {
            self.shards[slot].requeue_front(
                records,
                max_count,
                aggregate_limit,
                cx.config.outer_partition_key,
            );
            self.service_shard(cx, slot, now);
        }
    }

    /// Moves a shard forward: fails expired records, passes what its limits allow to the
    /// collector, and arms the shard's next wake-up.
    pub(super) fn service_shard(&mut self, cx: &mut Shared<T>, slot: usize, now: Instant) {
        let ordering = cx.ordered();
        if let Some((expired, survivors)) = self.shards[slot].take_expired(now) {
            let error = AttemptError::shared(
                codes::EXPIRED,
                "record_ttl reached while waiting for the shard's rate limit",
            );
            for mut pending in expired {
                cx.add_failed_attempt(&mut pending, now, now, &error);
                self.fail(cx, pending, FailureReason::Expired);
            }
            if !survivors.is_empty() {
                self.requeue_front(cx, survivors, Packing::Aggregated, now);
            }
        }
        let parent_busy = ordering && self.parent_busy(slot);
        let blocked = loop {
            match self.shards[slot].next_to_send(now, ordering, parent_busy) {
                Ok(packed) => self.collect(cx, packed, now),
                Err(blocked) => break blocked,
            }
        };
        let shard = &mut self.shards[slot];
        if let Some(at) = shard.next_wake(blocked) {
            cx.timers
                .arm(&mut shard.timer, at, Timer::Shard(self.index, slot));
        }
    }

    pub(super) fn service_all_shards(&mut self, cx: &mut Shared<T>, now: Instant) {
        for slot in 0..self.shards.len() {
            if self.shards[slot].open {
                self.service_shard(cx, slot, now);
            }
        }
    }

    /// Ordering mode: frees a shard that counted as busy (its call or held landing is over).
    /// Returns whether it did.
    pub(super) fn release_busy_slot(&mut self, ordered: bool, slot: Option<usize>) -> bool {
        match slot {
            Some(slot) if ordered => {
                self.shards[slot].busy = false;
                true
            }
            _ => false,
        }
    }

    fn collect(&mut self, cx: &mut Shared<T>, packed: PackedRecord<T>, now: Instant) {
        let shape = RequestShape::of(&cx.config);
        if self.collector.must_send_before(&packed, shape) {
            self.send_collected(cx);
        }
        match self.collector.add(packed, shape, now) {
            None => self.send_collected(cx),
            Some(deadline) => self.arm_timer(cx, deadline),
        }
    }

    /// Turns what the stream's collector holds into a `PutRecords` request.
    fn send_collected(&mut self, cx: &mut Shared<T>) {
        let packed = self.collector.take();
        if packed.is_empty() {
            return;
        }
        let mut entries = Vec::with_capacity(packed.len());
        let mut metas = Vec::with_capacity(packed.len());
        let kinesis_records = packed.len() as f64;
        let mut user_records = 0;
        for packed in packed {
            let per_kinesis_record = packed.records.len() as f64;
            user_records += packed.records.len();
            self.observe(
                packed.slot,
                Metric::UserRecordsPerKinesisRecord,
                per_kinesis_record,
            );
            entries.push(packed.kinesis_record);
            metas.push(EntryMeta {
                slot: packed.slot,
                size: packed.size,
                records: packed.records,
            });
        }
        self.observe(
            None,
            Metric::KinesisRecordsPerPutRecordsRequest,
            kinesis_records,
        );
        self.interval
            .record(Metric::UserRecordsPerPutRecordsRequest, user_records as f64);
        let request = Request::PutRecords(PutRecordsRequest {
            stream: self.stream.clone(),
            entries,
        });
        cx.requests
            .enqueue(self.index, InFlightKind::PutRecords(metas), request);
    }

    /// Sends what is buffered now, without waiting for deadlines (see `Engine::flush`).
    pub(in crate::engine) fn flush(&mut self, cx: &mut Shared<T>, now: Instant) {
        let stream = &mut *self;
        stream.maps.flush_on_map |= !stream.maps.waiting.is_empty();
        for slot in 0..self.shards.len() {
            let shard = &mut self.shards[slot];
            shard.finish_aggregate();
            // Forget the old wake-up; servicing arms the one that is still needed.
            shard.timer = None;
            self.service_shard(cx, slot, now);
        }
        self.send_collected(cx);
        self.timer = None;
        self.service_stream(cx, now);
    }

    /// Entries taken out of a request about to leave because they hold expired records: those
    /// expire, the others go back to the head of their shards, to be packed again.
    pub(in crate::engine) fn drop_expired_entries(
        &mut self,
        cx: &mut Shared<T>,
        dropped: Vec<EntryMeta<T>>,
        now: Instant,
    ) {
        let mut requeued = false;
        for meta in dropped {
            let (expired, survivors): (Vec<Pending<T>>, Vec<Pending<T>>) =
                meta.records.into_iter().partition(|p| p.expiration <= now);
            for pending in expired {
                self.expire(cx, pending, now);
            }
            if !survivors.is_empty() {
                self.requeue_front(cx, survivors, Packing::Aggregated, now);
                requeued = true;
            }
            // Ordering mode: its shard no longer has a call coming.
            if let Some(slot) = meta.slot
                && self.release_busy_slot(cx.ordered(), Some(slot))
            {
                self.service_shard(cx, slot, now);
            }
        }
        if requeued {
            self.service_all_shards(cx, now);
        }
    }

    /// Moves a stream forward: records whose map wait is over, held landings overdue, the
    /// collector at its deadline, the periodic map read (or retirement when idle), the listing
    /// of every shard; then arms the stream's next wake-up.
    pub(super) fn service_stream(&mut self, cx: &mut Shared<T>, now: Instant) {
        // Before the first map exists, records wait for it while it is being read (past their
        // deadline if need be, but not past their expiry): sent unpredicted they could not be
        // aggregated. In ordering mode they always wait, as a record sent unpredicted would
        // escape the one-request-per-shard rule. Otherwise, once the wait is over, they go
        // alone, unaggregated and unlimited, as the KPL sends records it cannot predict.
        let hold = {
            let maps = &self.maps;
            maps.map.is_none() && (maps.refresh.in_flight || cx.ordered())
        };
        loop {
            let maps = &mut self.maps;
            let Some(front) = maps.waiting.front() else {
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
            let Some(pending) = maps.waiting.pop_front() else {
                break;
            };
            // Held records come out only at their expiry.
            if hold {
                self.expire(cx, pending, now);
                continue;
            }
            match maps.predict(pending.hash_key) {
                Some(slot) => self.aggregate(cx, slot, pending, now),
                None if pending.expiration <= now => self.expire(cx, pending, now),
                None => self.collect(cx, PackedRecord::unpredicted(pending), now),
            }
        }
        self.give_up_overdue_landings(cx, now);
        if self.collector.deadline().is_some_and(|at| at <= now) {
            self.send_collected(cx);
        }
        let stream = &*self;
        if stream.maps.refresh.next_at.is_some_and(|at| at <= now) {
            if stream.is_idle(cx.config.shard_map_refresh_interval, now) {
                self.retire(cx);
            } else {
                self.start_refresh(cx, now);
            }
        }
        let maps = &mut self.maps;
        if maps.history.next_at.is_some_and(|at| at <= now) {
            // Only landings still waiting need it; give-ups above may have settled them all.
            maps.history.next_at = None;
            if !self.held_landings.is_empty() {
                self.start_history_read(cx, now);
            }
        }
        let stream = &mut *self;
        let awaiting = stream
            .maps
            .waiting
            .front()
            .map(|p| if hold { p.expiration } else { p.deadline });
        let held = stream.held_landings.iter().map(|held| held.decide_by).min();
        let next = min_instant(
            min_instant(awaiting, stream.collector.deadline()),
            min_instant(
                min_instant(stream.maps.refresh.next_at, held),
                stream.maps.history.next_at,
            ),
        );
        if let Some(at) = next {
            stream.arm_timer(cx, at);
        }
    }
}
