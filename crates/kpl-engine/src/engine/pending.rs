//! A user record while the engine holds it, and the Kinesis record that carries it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kpl_aggregation::{HashKey, KinesisRecord, UserRecord};

use crate::outcome::{Attempt, AttemptError, AttemptHistory, Record};
use crate::stream::Stream;

/// A retried record waits this fraction of `record_max_buffered_time` for companions.
const RETRY_BUFFERING_DIVISOR: u32 = 2;

/// A user record accepted and not yet finished.
#[derive(Debug)]
pub(super) struct Pending<T = ()> {
    pub(super) id: u64,
    pub(super) record: UserRecord,
    pub(super) hash_key: HashKey,
    pub(super) arrival: Instant,
    /// Latest time to leave the aggregation (or map-wait) stage this round.
    pub(super) deadline: Instant,
    pub(super) expiration: Instant,
    /// Failed attempts so far; `None` until the first.
    pub(super) attempts: Option<Box<AttemptHistory>>,
    /// A request holding it was refused whole as invalid: it now goes in a request of its own,
    /// so that only the entry the service objects to fails.
    pub(super) isolate: bool,
    /// The owner's token, handed back with the outcome.
    pub(super) token: T,
}

impl<T> Pending<T> {
    /// The size the service counts: data plus partition key.
    pub(super) fn size(&self) -> usize {
        self.record.data().len() + self.record.partition_key().len()
    }

    /// The record as the application handed it over, for a failure report, and its token.
    pub(super) fn into_record(self, stream: Stream) -> (Record, T) {
        let (key, explicit_hash_key, data) = self.record.into_parts();
        let record = Record::new(stream, key.into_string(), data);
        let record = match explicit_hash_key {
            Some(hash_key) => record.with_explicit_hash_key(hash_key.to_string()),
            None => record,
        };
        (record, self.token)
    }

    /// The end of the previous attempt, or the arrival: where the next attempt's delay starts.
    pub(super) fn last_end(&self) -> Instant {
        self.attempts
            .as_ref()
            .map_or(self.arrival, |history| history.last_end())
    }

    /// Records a failed attempt; returns the time the record had waited if this was its first,
    /// and the time it waited before this attempt.
    pub(super) fn add_failed_attempt(
        &mut self,
        sent_at: Instant,
        now: Instant,
        error: &Arc<AttemptError>,
    ) -> (Option<Duration>, Duration) {
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
        (first_wait, delay)
    }

    /// Failed attempts so far.
    pub(super) fn failed_attempts(&self) -> usize {
        self.attempts.as_ref().map_or(0, |history| history.count())
    }

    /// Due again soon after a failed attempt: within half a buffering time (it has waited once
    /// already), never past expiry.
    pub(super) fn due_for_retry(&mut self, now: Instant, max_buffered_time: Duration) {
        self.deadline = (now + max_buffered_time / RETRY_BUFFERING_DIVISOR).min(self.expiration);
    }
}

/// One Kinesis record (one `PutRecords` entry) ready to send, with the user records it carries:
/// an aggregate of a shard's records, or a single record.
#[derive(Debug)]
pub(super) struct PackedRecord<T = ()> {
    pub(super) kinesis_record: KinesisRecord,
    pub(super) records: Vec<Pending<T>>,
    /// The predicted shard (slot); `None` when sent without a prediction.
    pub(super) slot: Option<usize>,
    pub(super) deadline: Instant,
    pub(super) expiration: Instant,
    pub(super) size: usize,
    /// Goes in a `PutRecords` request of its own (see `Pending::isolate`).
    pub(super) alone_in_request: bool,
}

/// A record list whose unused room is more than this fraction of its records' is shrunk.
const LIST_SLACK_DIVISOR: usize = 8;

impl<T> PackedRecord<T> {
    /// `records` is never empty: packed records are made from finished aggregates, which hold
    /// at least one record, or from a single record.
    pub(super) fn new(
        kinesis_record: KinesisRecord,
        records: Vec<Pending<T>>,
        slot: Option<usize>,
    ) -> Self {
        let mut times = records.iter().map(|p| (p.deadline, p.expiration));
        let first = times
            .next()
            .expect("a packed record holds at least one record");
        let (deadline, expiration) = times.fold(first, |(d, e), (pd, pe)| (d.min(pd), e.min(pe)));
        Self::with_times(kinesis_record, records, slot, deadline, expiration)
    }

    /// A packed record whose earliest deadline and expiration are already known.
    pub(super) fn with_times(
        kinesis_record: KinesisRecord,
        records: Vec<Pending<T>>,
        slot: Option<usize>,
        deadline: Instant,
        expiration: Instant,
    ) -> Self {
        let size = kinesis_record.billed_size();
        let alone_in_request = records.iter().any(|p| p.isolate);
        // A list that grew by doubling can hold twice its records' room until delivered, more
        // than each record's bookkeeping charge allows for (see `crate::memory`).
        let mut records = records;
        if records.capacity() - records.len() > records.len() / LIST_SLACK_DIVISOR {
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

    /// A record sent by itself, without a shard prediction: routed by its hash key.
    pub(super) fn unpredicted(pending: Pending<T>) -> Self {
        let record = KinesisRecord::new(
            pending.record.partition_key().as_str(),
            pending.record.data().clone(),
        )
        .with_explicit_hash_key(pending.hash_key);
        Self::new(record, vec![pending], None)
    }
}

/// How records re-sent from the head of their shards are packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Packing {
    /// Aggregated among themselves, as usual.
    Aggregated,
    /// One Kinesis record each: a plain record is kept by a KCL consumer on whatever shard it
    /// lands, so its landing needs no judging.
    Alone,
}

/// The earlier of two optional times.
pub(super) fn min_instant(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use kpl_aggregation::PartitionKey;

    use super::*;

    /// A 10-byte record `id`, accepted at `now`, due within 100 ms, expiring after `ttl`.
    pub(crate) fn pending(id: u64, now: Instant, ttl: Duration) -> Pending {
        let key = PartitionKey::new(format!("k{id}")).unwrap_or_else(|e| panic!("{e}"));
        let record = UserRecord::new(key, vec![1; 10]);
        let expiration = now + ttl;
        Pending {
            id,
            hash_key: record.hash_key(),
            record,
            arrival: now,
            deadline: (now + Duration::from_millis(100)).min(expiration),
            expiration,
            attempts: None,
            isolate: false,
            token: (),
        }
    }
}
