//! Everything the engine keeps for one stream.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kpl_aggregation::{HashKeyRange, MaxAggregateSize, OuterPartitionKey, PartitionKey};

use super::collector::Collector;
use super::landings::HeldLanding;
use super::map_refresh::MapRefresh;
use super::shard_queue::ShardQueue;
use super::timers::{Timer, Timers};
use crate::backoff::Backoff;
use crate::config::EngineConfig;
use crate::metrics::Interval;
use crate::stats::StreamStats;
use crate::stream::Stream;
use crate::transport::ShardId;

/// A stream with nothing outstanding and no record for this many map-refresh intervals is
/// retired: its shards' state is freed and its map no longer re-read, until a record comes.
const IDLE_STREAM_REFRESHES: u32 = 5;

#[derive(Debug)]
pub(super) struct StreamState {
    pub(super) stream: Stream,
    pub(super) maps: MapRefresh,
    pub(super) max_record_size: usize,
    /// Every shard of the stream the map has listed open, by slot; closed ones stay (empty) so
    /// slots keep their meaning for requests in flight.
    pub(super) shards: Vec<ShardQueue>,
    pub(super) slot_of: BTreeMap<ShardId, usize>,
    /// Aggregates that landed on shards the map did not know, waiting to be judged.
    pub(super) held_landings: Vec<HeldLanding>,
    /// When a run of `ExpiredTokenException` answers began; a write ends it.
    pub(super) expired_token_since: Option<Instant>,
    /// Backoff of records sent without a prediction.
    pub(super) unpredicted_backoff: Backoff,
    pub(super) collector: Collector,
    pub(super) timer: Option<Instant>,
    pub(super) stats: StreamStats,
    /// This interval's samples of stream-level metrics, and of shard-level ones without a shard.
    pub(super) interval: Interval,
    /// When the last record for the stream was accepted.
    pub(super) last_record_at: Instant,
    /// Idle for long: no map, no shards, no periodic reads (see `IDLE_STREAM_REFRESHES`).
    pub(super) retired: bool,
}

impl StreamState {
    pub(super) fn new(stream: Stream, config: &EngineConfig, now: Instant) -> Self {
        Self {
            stream,
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
        }
    }

    /// Whether the stream has had nothing to do for `IDLE_STREAM_REFRESHES` refresh intervals:
    /// no record outstanding or accepted, no read under way.
    pub(super) fn is_idle(&self, refresh_interval: Duration, now: Instant) -> bool {
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
    pub(super) fn retire(&mut self, si: usize, timers: &mut Timers) {
        for (slot, shard) in self.shards.iter_mut().enumerate() {
            timers.disarm(&mut shard.timer, Timer::Shard(si, slot));
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
    pub(super) fn parent_busy(&self, slot: usize) -> bool {
        let range: HashKeyRange = self.shards[slot].range;
        self.shards.iter().any(|other| other.busy_parent_of(range))
    }

    /// The size limit of the stream's aggregates: `aggregation_max_size`, but never so large
    /// that an aggregate and its outer partition key pass the stream's record limit (the
    /// service would refuse the whole request).
    pub(super) fn aggregate_limit(&self, config: &EngineConfig) -> MaxAggregateSize {
        let outer_key = match config.outer_partition_key {
            OuterPartitionKey::Constant => OuterPartitionKey::CONSTANT.len(),
            _ => PartitionKey::MAX_BYTES,
        };
        let record_limit = self.max_record_size.saturating_sub(outer_key);
        let bytes = config.aggregation_max_size.get().min(record_limit);
        MaxAggregateSize::new(bytes).unwrap_or(config.aggregation_max_size)
    }
}
