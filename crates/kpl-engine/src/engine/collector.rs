//! A stream's collector: packed records of any of its shards gathered into one `PutRecords`
//! request, which leaves when it is full, when one shard has much in it, or at its deadline.

use std::mem;
use std::time::{Duration, Instant};

use super::pending::{PackedRecord, min_instant};
use crate::config::{EngineConfig, OrderingMode};

/// When a shard has this many bytes waiting in its stream's collector, the collector sends at
/// once, so one busy shard does not build up bursts (the KPL's constant).
const SHARD_COLLECTED_BYTES_TRIGGER: usize = 256 * 1024;

/// What shapes a request, from the configuration.
#[derive(Clone, Copy, Debug)]
pub(super) struct RequestShape {
    max_count: usize,
    max_size: usize,
    /// Time every packed record is given to be joined by others, past its own deadline.
    grace: Duration,
    /// Ordering mode: a request holds at most one packed record per shard.
    one_per_shard: bool,
}

impl RequestShape {
    pub(super) fn of(config: &EngineConfig) -> Self {
        Self {
            max_count: config.request_max_count(),
            max_size: config.request_max_size(),
            grace: config.collection_grace(),
            one_per_shard: config.ordering == OrderingMode::PerShard,
        }
    }
}

#[derive(Debug)]
pub(super) struct Collector<T = ()> {
    records: Vec<PackedRecord<T>>,
    size: usize,
    deadline: Option<Instant>,
    /// Bytes collected per shard slot.
    shard_bytes: Vec<usize>,
}

impl<T> Default for Collector<T> {
    fn default() -> Self {
        Self {
            records: Vec::new(),
            size: 0,
            deadline: None,
            shard_bytes: Vec::new(),
        }
    }
}

impl<T> Collector<T> {
    /// Whether what is collected must leave before `packed` joins: the request would pass a
    /// limit, break ordering's one-per-shard rule, or mix a record that goes alone with others.
    pub(super) fn must_send_before(&self, packed: &PackedRecord<T>, shape: RequestShape) -> bool {
        !self.records.is_empty()
            && (self.records.len() + 1 > shape.max_count
                || self.size + packed.size > shape.max_size
                || packed.alone_in_request
                || self.records.iter().any(|p| p.alone_in_request)
                || (shape.one_per_shard
                    && packed.slot.is_some()
                    && self.records.iter().any(|p| p.slot == packed.slot)))
    }

    /// Adds a packed record. Returns `None` when the request should leave now, otherwise the
    /// time by which it must leave for this record's sake (its deadline, or a short grace).
    pub(super) fn add(
        &mut self,
        packed: PackedRecord<T>,
        shape: RequestShape,
        now: Instant,
    ) -> Option<Instant> {
        let mut shard_full = false;
        if let Some(slot) = packed.slot {
            if self.shard_bytes.len() <= slot {
                self.shard_bytes.resize(slot + 1, 0);
            }
            self.shard_bytes[slot] += packed.size;
            shard_full = self.shard_bytes[slot] >= SHARD_COLLECTED_BYTES_TRIGGER;
        }
        let alone = packed.alone_in_request;
        let deadline = packed.deadline.max(now + shape.grace);
        self.deadline = min_instant(self.deadline, Some(deadline));
        self.size += packed.size;
        self.records.push(packed);
        let full = shard_full
            || alone
            || self.records.len() >= shape.max_count
            || self.size >= shape.max_size;
        (!full).then_some(deadline)
    }

    /// Takes everything collected, for a request.
    pub(super) fn take(&mut self) -> Vec<PackedRecord<T>> {
        for packed in &self.records {
            if let Some(bytes) = packed.slot.and_then(|slot| self.shard_bytes.get_mut(slot)) {
                *bytes = 0;
            }
        }
        self.size = 0;
        self.deadline = None;
        mem::take(&mut self.records)
    }

    /// When the collected request must leave.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub(super) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Frees the collector's buffers (an idle stream's).
    pub(super) fn release(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use crate::time::{Clock, SystemClock};
    use kpl_aggregation::KinesisRecord;

    use super::*;
    use crate::engine::pending::tests::pending;

    fn packed(id: u64, slot: usize, data: usize, now: Instant) -> PackedRecord {
        let record = KinesisRecord::new("k", vec![0u8; data]);
        let pending = pending(id, now, Duration::from_secs(30));
        PackedRecord::new(record, vec![pending], Some(slot))
    }

    #[test]
    fn a_request_leaves_when_full_and_otherwise_at_its_deadline() {
        let now = SystemClock.now();
        let config = EngineConfig {
            collection_max_count: 3,
            ..EngineConfig::default()
        };
        let shape = RequestShape::of(&config);
        let mut collector = Collector::default();
        let due = now + Duration::from_millis(100).max(config.collection_grace());
        assert_eq!(collector.add(packed(0, 0, 10, now), shape, now), Some(due));
        assert_eq!(collector.deadline(), Some(due));
        assert!(collector.add(packed(1, 1, 10, now), shape, now).is_some());
        let full = collector.add(packed(2, 0, 10, now), shape, now);
        assert!(full.is_none(), "three: full");
        assert_eq!(collector.take().len(), 3);
        assert!(collector.is_empty());
        assert_eq!(collector.deadline(), None);
    }

    #[test]
    fn one_busy_shard_sends_the_request_early() {
        let now = SystemClock.now();
        let shape = RequestShape::of(&EngineConfig::default());
        let mut collector = Collector::default();
        let big = SHARD_COLLECTED_BYTES_TRIGGER / 2;
        assert!(collector.add(packed(0, 2, big, now), shape, now).is_some());
        assert!(collector.add(packed(1, 1, big, now), shape, now).is_some());
        assert!(collector.add(packed(2, 2, big, now), shape, now).is_none());
        collector.take();
        // Taking the request resets the shard's count.
        assert!(collector.add(packed(3, 2, big, now), shape, now).is_some());
    }

    #[test]
    fn ordering_mode_keeps_one_packed_record_per_shard_in_a_request() {
        let now = SystemClock.now();
        let config = EngineConfig {
            ordering: OrderingMode::PerShard,
            ..EngineConfig::default()
        };
        let shape = RequestShape::of(&config);
        let mut collector = Collector::default();
        collector.add(packed(0, 0, 10, now), shape, now);
        assert!(!collector.must_send_before(&packed(1, 1, 10, now), shape));
        assert!(collector.must_send_before(&packed(2, 0, 10, now), shape));
        let unordered = RequestShape::of(&EngineConfig::default());
        assert!(!collector.must_send_before(&packed(2, 0, 10, now), unordered));
    }
}
