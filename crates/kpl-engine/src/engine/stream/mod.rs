//! One stream's state and every transition that concerns it alone: the owner of its map, shards,
//! collector and held landings. The engine resolves a stream once per input and calls in here
//! with the shared parts ([`Shared`]) lent as `cx`; nothing in here reaches another stream.
//!
//! - [`sending`]: the path of a record from acceptance to a request;
//! - [`answers`]: what a `PutRecords` answer means for each of its entries;
//! - [`landings`]: aggregates that landed on shards the map does not know;
//! - [`map_read`]: reading the shard map and installing it.

mod answers;
mod landings;
mod map_read;
mod sending;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kpl_aggregation::{HashKeyRange, MaxAggregateSize, OuterPartitionKey, PartitionKey};

pub(super) use self::answers::Answer;
use self::landings::HeldLanding;
use crate::backoff::Backoff;
use crate::config::EngineConfig;
use crate::engine::collector::Collector;
use crate::engine::map_refresh::MapRefresh;
use crate::engine::pending::Pending;
use crate::engine::shard_queue::ShardQueue;
use crate::engine::shared::Shared;
use crate::engine::timers::Timer;
use crate::metrics::{Interval, Metric, Series};
use crate::outcome::{AttemptError, Event, Failure, FailureReason, RecordId, codes};
use crate::shard_map::ShardMap;
use crate::stats::StreamStats;
use crate::stream::Stream;
use crate::transport::ShardId;

/// A stream with nothing outstanding and no record for this many map-refresh intervals is
/// retired: its shards' state is freed and its map no longer re-read, until a record comes.
const IDLE_STREAM_REFRESHES: u32 = 5;

#[derive(Debug)]
pub(super) struct StreamState<T = ()> {
    stream: Stream,
    /// Its place among the engine's streams: the name its wake-ups and requests carry.
    index: usize,
    maps: MapRefresh<T>,
    max_record_size: usize,
    /// Every shard of the stream the map has listed open, by slot; closed ones stay (empty) so
    /// slots keep their meaning for requests in flight.
    shards: Vec<ShardQueue<T>>,
    slot_of: BTreeMap<ShardId, usize>,
    /// Aggregates that landed on shards the map did not know, waiting to be judged.
    held_landings: Vec<HeldLanding<T>>,
    /// When a run of `ExpiredTokenException` answers began; a write ends it.
    expired_token_since: Option<Instant>,
    /// Backoff of records sent without a prediction.
    unpredicted_backoff: Backoff,
    collector: Collector<T>,
    timer: Option<Instant>,
    stats: StreamStats,
    /// This interval's samples of stream-level metrics, and of shard-level ones without a shard.
    interval: Interval,
    /// When the last record for the stream was accepted.
    last_record_at: Instant,
    /// Idle for long: no map, no shards, no periodic reads (see `IDLE_STREAM_REFRESHES`).
    retired: bool,
}

impl<T> StreamState<T> {
    /// The state of `stream`, the engine's stream number `index`, with its first map read
    /// started.
    pub(super) fn new(stream: Stream, index: usize, cx: &mut Shared<T>, now: Instant) -> Self {
        let config = &cx.config;
        let mut state = Self {
            stream,
            index,
            maps: MapRefresh::new(now),
            max_record_size: config.max_user_record_size,
            shards: Vec::new(),
            slot_of: BTreeMap::new(),
            held_landings: Vec::new(),
            expired_token_since: None,
            unpredicted_backoff: Backoff::new(config.retry_backoff_base, config.retry_backoff_cap),
            collector: Collector::default(),
            timer: None,
            stats: StreamStats::default(),
            interval: Interval::default(),
            last_record_at: now,
            retired: false,
        };
        state.start_refresh(cx, now);
        state
    }

    /// Whether the stream has had nothing to do for `IDLE_STREAM_REFRESHES` refresh intervals:
    /// no record outstanding or accepted, no read under way.
    fn is_idle(&self, refresh_interval: Duration, now: Instant) -> bool {
        let idle_for = refresh_interval.saturating_mul(IDLE_STREAM_REFRESHES);
        self.stats.user_records_pending == 0
            && now.saturating_duration_since(self.last_record_at) >= idle_for
            && !self.maps.is_reading()
            && self.held_landings.is_empty()
            && self.maps.waiting.is_empty()
            && self.collector.is_empty()
    }

    /// Frees an idle stream's map and shards and stops re-reading its map; its statistics stay
    /// (without the per-shard part). The next record for it reads the map again.
    fn retire(&mut self, cx: &mut Shared<T>) {
        for (slot, shard) in self.shards.iter_mut().enumerate() {
            cx.timers
                .disarm(&mut shard.timer, Timer::Shard(self.index, slot));
        }
        self.retired = true;
        self.maps.retire();
        self.shards = Vec::new();
        self.slot_of = BTreeMap::new();
        self.held_landings = Vec::new();
        self.collector.release();
    }

    /// Ordering mode: whether a closed shard overlapping `slot` still has a request in flight.
    /// Its records may come back for retry, and must go before this shard's.
    fn parent_busy(&self, slot: usize) -> bool {
        let range: HashKeyRange = self.shards[slot].range;
        self.shards.iter().any(|other| other.busy_parent_of(range))
    }

    /// The size limit of the stream's aggregates: `aggregation_max_size`, but never so large
    /// that an aggregate and its outer partition key pass the stream's record limit (the
    /// service would refuse the whole request).
    fn aggregate_limit(&self, config: &EngineConfig) -> MaxAggregateSize {
        let outer_key = match config.outer_partition_key {
            OuterPartitionKey::Constant => OuterPartitionKey::CONSTANT.len(),
            _ => PartitionKey::MAX_BYTES,
        };
        let record_limit = self.max_record_size.saturating_sub(outer_key);
        let bytes = config.aggregation_max_size.get().min(record_limit);
        MaxAggregateSize::new(bytes).unwrap_or(config.aggregation_max_size)
    }
}

/// What the engine asks of a stream, and what it reads of it.
impl<T> StreamState<T> {
    /// The stream.
    pub(super) fn stream(&self) -> &Stream {
        &self.stream
    }

    /// The largest record the stream takes: the configured cap, lowered by the stream's own
    /// limit once its summary is read.
    pub(super) fn max_record_size(&self) -> usize {
        self.max_record_size
    }

    /// The map read last, if any.
    pub(super) fn shard_map(&self) -> Option<&ShardMap> {
        self.maps.map.as_ref()
    }

    /// Takes an accepted record: routes it to its shard, or makes it wait for a map (read again
    /// if the stream was retired).
    #[inline(always)]
    pub(super) fn accept(&mut self, cx: &mut Shared<T>, pending: Pending<T>, now: Instant) {
        self.last_record_at = now;
        self.observe(None, Metric::UserRecordsReceived, 1.0);
        self.stats.user_records_pending += 1;
        if self.retired {
            self.retired = false;
            self.start_refresh(cx, now);
        }
        self.route(cx, pending, now);
    }

    /// The stream's wake-up armed for `at` is due: moves the stream forward, unless a later
    /// arming replaced it.
    pub(super) fn on_stream_timer(&mut self, cx: &mut Shared<T>, at: Instant, now: Instant) {
        if self.timer == Some(at) {
            self.timer = None;
            self.service_stream(cx, now);
        }
    }

    /// Shard `slot`'s wake-up armed for `at` is due: moves the shard forward, unless a later
    /// arming replaced it or the shard was freed.
    pub(super) fn on_shard_timer(
        &mut self,
        cx: &mut Shared<T>,
        slot: usize,
        at: Instant,
        now: Instant,
    ) {
        if self
            .shards
            .get(slot)
            .is_some_and(|shard| shard.timer == Some(at))
        {
            self.shards[slot].timer = None;
            self.service_shard(cx, slot, now);
        }
    }

    /// Arms the stream's wake-up for `at`, unless it is armed earlier.
    fn arm_timer(&mut self, cx: &mut Shared<T>, at: Instant) {
        cx.timers
            .arm(&mut self.timer, at, Timer::Stream(self.index));
    }

    /// When the wake-up of the stream (`None`) or of shard `slot` is armed for.
    pub(super) fn timer_at(&self, slot: Option<usize>) -> Option<Instant> {
        match slot {
            None => self.timer,
            Some(slot) => self.shards.get(slot).and_then(|shard| shard.timer),
        }
    }

    /// Takes every record the stream holds out of it and stops its reads: for the engine's
    /// `abandon`. Records written on a shard whose landing waits to be judged may have been
    /// written; the others were not.
    pub(super) fn abandon(&mut self) -> Vec<(Pending<T>, FailureReason)> {
        let mut taken: Vec<Pending<T>> = self.maps.waiting.drain(..).collect();
        for packed in self.collector.take() {
            taken.extend(packed.records);
        }
        let mut abandoned: Vec<(Pending<T>, FailureReason)> = Vec::new();
        for held in self.held_landings.drain(..) {
            abandoned.extend(
                held.records
                    .into_iter()
                    .map(|pending| (pending, FailureReason::AbandonedInFlight)),
            );
        }
        for shard in &mut self.shards {
            taken.append(&mut shard.take_all());
            shard.busy = false;
        }
        self.maps.abandon();
        abandoned.extend(
            taken
                .into_iter()
                .map(|pending| (pending, FailureReason::Abandoned)),
        );
        abandoned
    }

    /// The stream's statistics, with each shard's.
    pub(super) fn stats(&self) -> StreamStats {
        let mut stats = self.stats.clone();
        for shard in &self.shards {
            let mut shard_stats = shard.stats.clone();
            shard_stats.rate_factor = shard.limiter.rate_factor();
            stats.shards.insert(shard.id.clone(), shard_stats);
        }
        stats
    }

    /// Takes this interval's samples of the stream and its shards into `series`.
    pub(super) fn take_metrics(&mut self, series: &mut Vec<Series>) {
        self.interval.take(&self.stream, None, series);
        for shard in &mut self.shards {
            shard.interval.take(&self.stream, Some(&shard.id), series);
        }
    }

    /// Takes a sample of `UserRecordsPending`: the stream's outstanding records now.
    pub(super) fn sample_pending(&mut self) {
        let pending = self.stats.user_records_pending as f64;
        self.interval.record(Metric::UserRecordsPending, pending);
    }
}

/// What the engine's tests look at.
#[cfg(test)]
impl<T> StreamState<T> {
    pub(super) fn is_retired(&self) -> bool {
        self.retired
    }

    pub(super) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    pub(super) fn shard(&self, slot: usize) -> &ShardQueue<T> {
        &self.shards[slot]
    }
}

/// Outcomes, and what they are counted in.
impl<T> StreamState<T> {
    fn record_buffering(&mut self, waited: Duration) {
        self.stats.buffering_time.record(millis(waited));
    }

    /// This interval's samples for shard `slot`, or the stream's own when the observation has
    /// no shard.
    #[inline(always)]
    fn interval(&mut self, slot: Option<usize>) -> &mut Interval {
        match slot.and_then(|slot| self.shards.get_mut(slot)) {
            Some(shard) => &mut shard.interval,
            None => &mut self.interval,
        }
    }

    /// Records one sample of `metric` for shard `slot` (or the stream) in this interval, and
    /// folds it into the stream's cumulative statistics: both are kept from the one sample, so
    /// they cannot disagree.
    #[inline(always)]
    fn observe(&mut self, slot: Option<usize>, metric: Metric, value: f64) {
        self.interval(slot).record(metric, value);
        fold(&mut self.stats, metric, value);
    }

    /// Records a failed attempt of `pending`, sent for shard `slot` at `sent_at` and answered
    /// at `now`: in its history, and in the buffering statistics.
    fn failed_attempt(
        &mut self,
        cx: &mut Shared<T>,
        slot: Option<usize>,
        pending: &mut Pending<T>,
        error: &Arc<AttemptError>,
        answer: Answer,
    ) {
        let (first_wait, delay) = cx.add_failed_attempt(pending, answer.sent_at, answer.now, error);
        if let Some(waited) = first_wait {
            self.record_buffering(waited);
        }
        self.interval(slot)
            .record(Metric::BufferingTime, millis(delay));
    }

    /// Fails `pending` as expired (`record_ttl` reached).
    fn expire(&mut self, cx: &mut Shared<T>, mut pending: Pending<T>, now: Instant) {
        let error = AttemptError::shared(
            codes::EXPIRED,
            "record_ttl reached before the record could be written",
        );
        cx.add_failed_attempt(&mut pending, now, now, &error);
        self.fail(cx, pending, FailureReason::Expired);
    }

    /// Settles `pending` as failed for `reason`, handing the record back.
    pub(super) fn fail(
        &mut self,
        cx: &mut Shared<T>,
        mut pending: Pending<T>,
        reason: FailureReason,
    ) {
        // A failed record counts against the shard it was predicted for, as in the KPL.
        let predicted = self.maps.predict(pending.hash_key);
        let retries = pending.failed_attempts().saturating_sub(1);
        self.observe(predicted, Metric::UserRecordsPut, 0.0);
        self.interval(predicted)
            .record(Metric::RetriesPerRecord, retries as f64);
        if reason == FailureReason::Expired {
            self.observe(predicted, Metric::UserRecordExpired, 1.0);
        }
        self.stats.user_records_pending -= 1;
        let (id, charge) = (pending.id, cx.record_charge(pending.size()));
        let history = pending.attempts.is_some();
        let (attempts, omitted_attempts) = pending
            .attempts
            .take()
            .map_or((Vec::new(), 0), |history| history.into_parts());
        let (record, token) = pending.into_record(self.stream.clone());
        let failure = Failure {
            id: RecordId(id),
            reason,
            record,
            attempts,
            omitted_attempts,
            token,
        };
        cx.outcomes
            .settle(Event::Failed(Box::new(failure)), id, charge, history);
    }
}

/// Folds one metric sample into the cumulative statistics it has a counter for. A written
/// record is a `UserRecordsPut` sample of 1 and a failed one of 0; a Kinesis record's bytes are
/// what `KinesisRecordsDataPut` samples (its data and partition key as sent).
#[inline(always)]
fn fold(stats: &mut StreamStats, metric: Metric, value: f64) {
    let written = value > 0.0;
    match metric {
        Metric::UserRecordsReceived => stats.user_records_received += 1,
        Metric::UserRecordsPut if written => stats.user_records_put += 1,
        Metric::UserRecordsPut => stats.user_records_failed += 1,
        Metric::UserRecordsDataPut => stats.user_records_data_put += value as u64,
        Metric::UserRecordExpired => stats.user_records_expired += 1,
        Metric::KinesisRecordsPut if written => stats.kinesis_records_put += 1,
        Metric::KinesisRecordsDataPut => stats.kinesis_records_data_put += value as u64,
        Metric::RequestTime => stats.request_time.record(value),
        Metric::UserRecordsPerKinesisRecord => stats.user_records_per_kinesis_record.record(value),
        Metric::KinesisRecordsPerPutRecordsRequest => {
            stats.kinesis_records_per_request.record(value)
        }
        _ => {}
    }
}

/// A duration in the milliseconds the metrics are reported in.
fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}
