//! One predicted shard: its open aggregate, the packed records waiting for its rate limit,
//! its retry backoff, and (in ordering mode) whether it has a call out.

use std::collections::VecDeque;
use std::mem;
use std::time::Instant;

use kpl_aggregation::{
    Aggregator, HashKeyRange, KinesisRecord, MaxAggregateSize, OuterPartitionKey,
};
use rand::rngs::SmallRng;

use super::pending::{PackedRecord, Pending, min_instant};
use crate::backoff::Backoff;
use crate::config::EngineConfig;
use crate::limiter::ShardLimiter;
use crate::metrics::Interval;
use crate::stats::ShardStats;
use crate::transport::ShardId;

/// Emptied record lists kept per shard for reuse: one, as each holds room for a whole
/// aggregate's records whether or not the shard sends again.
const SPARE_RECORD_LISTS: usize = 1;

/// What one `PutRecords` answer meant for one shard's entries.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct SlotVerdict {
    pub(super) retried: bool,
    /// Records are retried for a reason the shard's rate limit does not answer (an error, a
    /// whole request refused): the shard waits out a backoff. Entries throttled by the shard's
    /// limit alone are paced by the limiter, cut on the throttle, instead of idling the shard.
    pub(super) back_off: bool,
    pub(super) throttled: bool,
    pub(super) written: bool,
    /// An aggregate of the shard landed on an unknown shard and waits to be judged.
    pub(super) held: bool,
}

/// What [`ShardQueue::take_expired`] takes out: the expired records, and the others of the
/// packed records that held them.
pub(super) type Expired<T> = (Vec<Pending<T>>, Vec<Pending<T>>);

#[derive(Debug)]
pub(super) struct ShardQueue<T = ()> {
    pub(super) id: ShardId,
    pub(super) range: HashKeyRange,
    /// Its place among its stream's shards, which its packed records carry.
    slot: usize,
    pub(super) open: bool,
    aggregator: Aggregator,
    aggregated: Vec<Pending<T>>,
    aggregate_deadline: Option<Instant>,
    /// The earliest expiration of `aggregated`.
    aggregate_expiration: Option<Instant>,
    /// Emptied record lists of delivered aggregates, kept for the next aggregates.
    spare_lists: Vec<Vec<Pending<T>>>,
    /// Records in the shard's last finished aggregate: the room a new aggregate's list starts
    /// with, so it rarely grows record by record.
    last_aggregate_len: usize,
    /// Kinesis records waiting for tokens, oldest first (retries go to the front).
    ready: VecDeque<PackedRecord<T>>,
    /// A lower bound of the earliest expiration in `ready`.
    ready_expiration: Option<Instant>,
    pub(super) limiter: ShardLimiter,
    backoff: Backoff,
    blocked_until: Option<Instant>,
    /// Ordering mode: a packed record of this shard is in the collector or in flight.
    pub(super) busy: bool,
    /// Ordering mode: one of this shard's aggregates landed elsewhere; send nothing until the
    /// map is re-read.
    pub(super) awaiting_refresh: bool,
    pub(super) timer: Option<Instant>,
    pub(super) stats: ShardStats,
    /// This interval's samples of shard-level metrics.
    pub(super) interval: Interval,
}

impl<T> ShardQueue<T> {
    pub(super) fn new(
        slot: usize,
        id: ShardId,
        range: HashKeyRange,
        aggregate_limit: MaxAggregateSize,
        config: &EngineConfig,
        now: Instant,
    ) -> Self {
        Self {
            id,
            range,
            slot,
            open: true,
            aggregator: Aggregator::new(aggregate_limit, config.outer_partition_key),
            aggregated: Vec::new(),
            aggregate_deadline: None,
            aggregate_expiration: None,
            spare_lists: Vec::new(),
            last_aggregate_len: 0,
            ready: VecDeque::new(),
            ready_expiration: None,
            limiter: ShardLimiter::new(config.rate_limit, now),
            backoff: Backoff::new(config.retry_backoff_base, config.retry_backoff_cap),
            blocked_until: None,
            busy: false,
            awaiting_refresh: false,
            timer: None,
            stats: ShardStats::default(),
            interval: Interval::default(),
        }
    }

    /// Moves the queue to another place among its stream's shards (see
    /// `StreamState::forget_closed_slots`): only while no packed record of it exists.
    pub(super) fn move_to(&mut self, slot: usize) {
        self.slot = slot;
    }

    /// Adds a record to the open aggregate. The aggregate is finished first when it already
    /// holds `max_count` records or the record does not fit, and after when it holds
    /// `max_count`.
    #[inline(always)]
    pub(super) fn add(&mut self, pending: Pending<T>, max_count: u64) {
        if self.aggregated.len() as u64 >= max_count {
            self.finish_aggregate();
        }
        if let Some(finished) = self.aggregator.push(&pending.record) {
            self.push_aggregate(finished);
        }
        self.aggregate_deadline = min_instant(self.aggregate_deadline, Some(pending.deadline));
        self.aggregate_expiration =
            min_instant(self.aggregate_expiration, Some(pending.expiration));
        if self.aggregated.capacity() == 0 {
            // Room is taken when a record comes, not when the last aggregate finished: a shard
            // that stops sending holds no empty list sized for a whole aggregate.
            match self.spare_lists.pop() {
                Some(list) => self.aggregated = list,
                None => self.aggregated.reserve(self.last_aggregate_len),
            }
        }
        self.aggregated.push(pending);
        if self.aggregated.len() as u64 >= max_count {
            self.finish_aggregate();
        }
    }

    /// Whether packed records wait to be sent.
    pub(super) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// When the open aggregate must close, if it holds records.
    pub(super) fn aggregate_deadline(&self) -> Option<Instant> {
        self.aggregate_deadline
    }

    /// Closes the open aggregate (if it holds records) and queues it.
    pub(super) fn finish_aggregate(&mut self) {
        if let Some(record) = self.aggregator.finish() {
            self.push_aggregate(record);
        }
        self.aggregate_deadline = None;
        self.aggregate_expiration = None;
    }

    /// Queues the finished aggregate with the records in it.
    fn push_aggregate(&mut self, record: KinesisRecord) {
        let records = mem::take(&mut self.aggregated);
        self.last_aggregate_len = records.len();
        let packed = match (
            self.aggregate_deadline.take(),
            self.aggregate_expiration.take(),
        ) {
            (Some(deadline), Some(expiration)) => {
                PackedRecord::with_times(record, records, Some(self.slot), deadline, expiration)
            }
            _ => PackedRecord::new(record, records, Some(self.slot)),
        };
        self.ready_expiration = min_instant(self.ready_expiration, Some(packed.expiration));
        self.ready.push_back(packed);
    }

    /// Takes out the records past their expiration at `now`, from the open aggregate (closed
    /// when it holds one) and from the queue. A packed record holding any of them is unpacked:
    /// the first list has the expired records, the second the others of those packed records,
    /// to be packed again. `None` when nothing has expired.
    pub(super) fn take_expired(&mut self, now: Instant) -> Option<Expired<T>> {
        // An open aggregate holding a record at its expiry is closed, so the sweep sees it.
        if self.aggregate_expiration.is_some_and(|at| at <= now) {
            self.finish_aggregate();
        }
        if self.ready_expiration.is_none_or(|at| at > now) {
            return None;
        }
        let mut expired = Vec::new();
        let mut survivors = Vec::new();
        let mut kept = VecDeque::with_capacity(self.ready.len());
        for packed in self.ready.drain(..) {
            if packed.expiration > now {
                kept.push_back(packed);
                continue;
            }
            for pending in packed.records {
                if pending.expiration <= now {
                    expired.push(pending);
                } else {
                    survivors.push(pending);
                }
            }
        }
        self.ready_expiration = kept.iter().map(|p| p.expiration).min();
        self.ready = kept;
        Some((expired, survivors))
    }

    /// The next packed record to send at `now`, or, when nothing may go, when to look again
    /// (`None`: when something changes). The open aggregate closes at its deadline, but only
    /// once nothing waits ahead of it: while the shard is held back (rate limit, backoff,
    /// ordering), records keep joining it instead of leaving as a string of small aggregates.
    /// In ordering mode the shard sends nothing while it (or an overlapping closed parent,
    /// `parent_busy`) has a call out, and becomes busy with what it sends.
    pub(super) fn next_to_send(
        &mut self,
        now: Instant,
        ordering: bool,
        parent_busy: bool,
    ) -> Result<PackedRecord<T>, Option<Instant>> {
        if self.ready.is_empty() && self.aggregate_deadline.is_some_and(|at| at <= now) {
            self.finish_aggregate();
        }
        let Some(front) = self.ready.front() else {
            self.ready_expiration = None;
            return Err(None);
        };
        if let Some(until) = self.blocked_until {
            if until > now {
                return Err(Some(until));
            }
            self.blocked_until = None;
        }
        if ordering && (self.busy || self.awaiting_refresh || parent_busy) {
            return Err(None);
        }
        self.limiter.try_take(front.size, now).map_err(Some)?;
        let packed = self.ready.pop_front().ok_or(None)?;
        self.busy |= ordering;
        Ok(packed)
    }

    /// When the shard must be serviced next, given what stopped sending (`blocked`): with
    /// records queued that decides (the open aggregate's deadline is then past or irrelevant);
    /// without, the aggregate's deadline does; expirations always count.
    pub(super) fn next_wake(&self, blocked: Option<Instant>) -> Option<Instant> {
        let aggregate_due = if self.ready.is_empty() {
            self.aggregate_deadline
        } else {
            None
        };
        min_instant(
            min_instant(blocked, aggregate_due),
            min_instant(self.ready_expiration, self.aggregate_expiration),
        )
    }

    /// Puts records to retry at the front of the queue, packed into aggregates of at most
    /// `max_count` records (1: each alone) that fit `aggregate_limit`, so they go before
    /// anything accepted after them.
    pub(super) fn requeue_front(
        &mut self,
        records: Vec<Pending<T>>,
        max_count: u64,
        aggregate_limit: MaxAggregateSize,
        outer_partition_key: OuterPartitionKey,
    ) {
        let slot = Some(self.slot);
        let mut aggregator = Aggregator::new(aggregate_limit, outer_partition_key);
        let mut packed: Vec<PackedRecord<T>> = Vec::new();
        let mut current: Vec<Pending<T>> = Vec::new();
        for pending in records {
            if current.len() as u64 >= max_count
                && let Some(record) = aggregator.finish()
            {
                packed.push(PackedRecord::new(record, mem::take(&mut current), slot));
            }
            if let Some(record) = aggregator.push(&pending.record) {
                packed.push(PackedRecord::new(record, mem::take(&mut current), slot));
            }
            current.push(pending);
        }
        if let Some(record) = aggregator.finish() {
            packed.push(PackedRecord::new(record, current, slot));
        }
        for packed in packed.into_iter().rev() {
            self.ready_expiration = min_instant(self.ready_expiration, Some(packed.expiration));
            self.ready.push_front(packed);
        }
    }

    /// Takes every record the shard holds (open aggregate and queue), in no particular order.
    pub(super) fn take_all(&mut self) -> Vec<Pending<T>> {
        let mut taken = mem::take(&mut self.aggregated);
        self.aggregator.clear();
        self.aggregate_deadline = None;
        self.aggregate_expiration = None;
        self.ready_expiration = None;
        for packed in self.ready.drain(..) {
            taken.extend(packed.records);
        }
        taken
    }

    /// The shard closed: it takes no more records, and gives back every record it holds and
    /// its buffers (an aggregate's worth, and the lists kept for reuse), so a stream that
    /// reshards often does not keep one set per shard it ever had.
    pub(super) fn close(
        &mut self,
        aggregate_limit: MaxAggregateSize,
        outer_partition_key: OuterPartitionKey,
    ) -> Vec<Pending<T>> {
        self.open = false;
        let taken = self.take_all();
        self.aggregator = Aggregator::new(aggregate_limit, outer_partition_key);
        self.spare_lists = Vec::new();
        self.ready = VecDeque::new();
        taken
    }

    /// Keeps an emptied record list of a delivered aggregate for the next one, if room is left.
    pub(super) fn keep_spare_list(&mut self, list: Vec<Pending<T>>) {
        if self.spare_lists.len() < SPARE_RECORD_LISTS {
            self.spare_lists.push(list);
        }
    }

    /// Takes what one answer meant for the shard: a throttle cuts its rate, a retry for
    /// another reason blocks it for a backoff, a write resets the backoff. In ordering mode its
    /// call is over, unless one of its aggregates is held for judging.
    pub(super) fn on_answer(
        &mut self,
        verdict: SlotVerdict,
        ordering: bool,
        rng: &mut SmallRng,
        sent_at: Instant,
        now: Instant,
    ) {
        if ordering && !verdict.held {
            self.busy = false;
        }
        if verdict.throttled {
            self.limiter.on_throttled(sent_at, now);
        }
        if verdict.retried && verdict.back_off {
            let until = now + self.backoff.next_delay(rng);
            self.blocked_until = Some(self.blocked_until.map_or(until, |b| b.max(until)));
        } else if verdict.written {
            self.backoff.reset();
        }
    }

    /// Whether this closed shard's hash keys overlap `range` while it has a call out.
    pub(super) fn busy_parent_of(&self, range: HashKeyRange) -> bool {
        !self.open
            && self.busy
            && self.range.start() <= range.end()
            && range.start() <= self.range.end()
    }

    #[cfg(test)]
    pub(super) fn holds_no_buffers(&self) -> bool {
        self.spare_lists.is_empty()
            && self.aggregated.capacity() == 0
            && self.ready.capacity() == 0
            && self.aggregator.is_empty()
    }

    #[cfg(test)]
    pub(super) fn spare_lists(&self) -> usize {
        self.spare_lists.len()
    }
}

#[cfg(test)]
mod tests {
    use crate::time::{Clock, SystemClock};
    use std::time::Duration;

    use rand::SeedableRng;

    use super::*;
    use crate::engine::pending::tests::pending;

    const MAX_COUNT: u64 = 4;

    fn queue(config: &EngineConfig, now: Instant) -> ShardQueue {
        ShardQueue::new(
            0,
            ShardId::from("shardId-0"),
            HashKeyRange::FULL,
            config.aggregation_max_size,
            config,
            now,
        )
    }

    fn ids(records: &[Pending]) -> Vec<u64> {
        records.iter().map(|p| p.id).collect()
    }

    #[test]
    fn an_aggregate_finishes_at_its_record_count_and_waits_for_its_deadline_otherwise() {
        let now = SystemClock.now();
        let config = EngineConfig::default();
        let mut shard = queue(&config, now);
        for id in 0..MAX_COUNT + 1 {
            shard.add(pending(id, now, Duration::from_secs(30)), MAX_COUNT);
        }
        let first = shard.next_to_send(now, false, false);
        assert_eq!(first.map(|p| ids(&p.records)).ok(), Some(vec![0, 1, 2, 3]));
        // The fifth waits in the open aggregate until its deadline.
        let deadline = shard.aggregate_deadline().unwrap_or(now);
        assert!(deadline > now);
        assert!(shard.next_to_send(now, false, false).is_err());
        assert_eq!(shard.next_wake(None), Some(deadline));
        let last = shard.next_to_send(deadline, false, false);
        assert_eq!(last.map(|p| ids(&p.records)).ok(), Some(vec![4]));
    }

    #[test]
    fn expired_records_are_taken_and_their_companions_repacked_at_the_front() {
        let now = SystemClock.now();
        let config = EngineConfig::default();
        let mut shard = queue(&config, now);
        shard.add(pending(0, now, Duration::from_secs(1)), MAX_COUNT);
        shard.add(pending(1, now, Duration::from_secs(60)), MAX_COUNT);
        shard.finish_aggregate();
        shard.add(pending(2, now, Duration::from_secs(60)), MAX_COUNT);
        assert!(shard.take_expired(now).is_none());
        let later = now + Duration::from_secs(2);
        let Some((expired, survivors)) = shard.take_expired(later) else {
            panic!("record 0 expired")
        };
        assert_eq!((ids(&expired), ids(&survivors)), (vec![0], vec![1]));
        shard.requeue_front(
            survivors,
            MAX_COUNT,
            config.aggregation_max_size,
            config.outer_partition_key,
        );
        // Record 1 goes before record 2, which was accepted after it.
        let sent = shard.next_to_send(later, false, false);
        assert_eq!(sent.map(|p| ids(&p.records)).ok(), Some(vec![1]));
    }

    #[test]
    fn ordering_mode_sends_one_packed_record_at_a_time() {
        let made = SystemClock.now();
        let config = EngineConfig::default();
        let mut shard = queue(&config, made);
        // Once its rate limiter holds its tenth of a second.
        let now = made + Duration::from_secs(1);
        for id in 0..2 * MAX_COUNT {
            shard.add(pending(id, now, Duration::from_secs(30)), MAX_COUNT);
        }
        assert!(shard.next_to_send(now, true, false).is_ok());
        assert!(shard.busy);
        assert_eq!(shard.next_to_send(now, true, false).err(), Some(None));
        let mut rng = SmallRng::seed_from_u64(1);
        let written = SlotVerdict {
            written: true,
            ..SlotVerdict::default()
        };
        shard.on_answer(written, true, &mut rng, now, now);
        assert!(!shard.busy);
        assert!(
            shard.next_to_send(now, true, true).is_err(),
            "a parent is busy"
        );
        assert!(shard.next_to_send(now, true, false).is_ok());
    }

    #[test]
    fn a_failed_call_blocks_the_shard_for_a_backoff_and_a_throttle_alone_does_not() {
        let now = SystemClock.now();
        let config = EngineConfig::default();
        let mut shard = queue(&config, now);
        let mut rng = SmallRng::seed_from_u64(1);
        for id in 0..MAX_COUNT {
            shard.add(pending(id, now, Duration::from_secs(30)), MAX_COUNT);
        }
        let throttled = SlotVerdict {
            retried: true,
            throttled: true,
            ..SlotVerdict::default()
        };
        shard.on_answer(throttled, false, &mut rng, now, now);
        assert!(shard.blocked_until.is_none());
        let failed = SlotVerdict {
            retried: true,
            back_off: true,
            ..SlotVerdict::default()
        };
        shard.on_answer(failed, false, &mut rng, now, now);
        let Err(Some(until)) = shard.next_to_send(now, false, false) else {
            panic!("blocked")
        };
        assert!(until > now);
        assert!(shard.next_to_send(until, false, false).is_ok());
    }

    #[test]
    fn a_closed_shard_gives_back_its_records_and_buffers() {
        let now = SystemClock.now();
        let config = EngineConfig::default();
        let mut shard = queue(&config, now);
        for id in 0..MAX_COUNT + 2 {
            shard.add(pending(id, now, Duration::from_secs(30)), MAX_COUNT);
        }
        shard.keep_spare_list(Vec::with_capacity(8));
        let mut taken = shard.close(config.aggregation_max_size, config.outer_partition_key);
        taken.sort_by_key(|p| p.id);
        assert_eq!(ids(&taken), (0..MAX_COUNT + 2).collect::<Vec<_>>());
        assert!(!shard.open);
        assert!(shard.holds_no_buffers());
        assert_eq!(shard.next_wake(None), None);
    }
}
