//! Answers to `PutRecords`: each entry written (delivered, or judged by where it landed) or
//! failed (retried, failed for good, or expired), then each shard told what the answer meant.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::landings::Landed;
use super::pending::{Packing, Pending};
use super::requests::EntryMeta;
use super::shard_queue::SlotVerdict;
use super::{Engine, millis};
use crate::config::OrderingMode;
use crate::metrics::Metric;
use crate::outcome::{
    Attempt, AttemptError, AttemptList, Delivery, Event, FailureReason, Landing, RecordId, codes,
};
use crate::transport::{
    PutRecordsEntryResult, PutRecordsResponse, ShardId, TransportError, TransportErrorKind,
};

/// How long a run of `ExpiredTokenException` answers is retried before they fail records.
const EXPIRED_TOKEN_GRACE: Duration = Duration::from_secs(120);

impl Engine {
    pub(super) fn on_put_records(
        &mut self,
        si: usize,
        entries: Vec<EntryMeta>,
        result: Result<PutRecordsResponse, TransportError>,
        sent_at: Instant,
        now: Instant,
    ) {
        let mut verdicts: BTreeMap<Option<usize>, SlotVerdict> = BTreeMap::new();
        let request_ms = millis(now.saturating_duration_since(sent_at));
        self.streams[si].stats.request_time.record(request_ms);
        self.streams[si]
            .interval
            .record(Metric::RequestTime, request_ms);
        let stream_gone = match &result {
            Err(error) if error.kind() == TransportErrorKind::NotFound => Some(
                TransportError::new(error.kind(), error.code(), error.message()),
            ),
            _ => None,
        };
        match result {
            Err(error) => {
                let kind = error.kind();
                let error = AttemptError::shared(error.code(), error.message());
                self.streams[si].stats.error(error.code(), 1);
                self.streams[si].interval.error(error.code());
                // A request refused whole as invalid may hold one bad entry among good ones:
                // each is tried again alone, and only what the service still refuses fails.
                let split = kind == TransportErrorKind::Validation && entries.len() > 1;
                for entry in entries {
                    let verdict = verdicts.entry(entry.slot).or_default();
                    verdict.back_off = true;
                    if split {
                        self.retry_alone(si, entry, &error, verdict, sent_at, now);
                    } else {
                        self.on_entry_failed(si, entry, kind, &error, verdict, sent_at, now);
                    }
                }
            }
            Ok(response) if response.entries.len() != entries.len() => {
                let error = AttemptError::shared(
                    codes::RECORD_COUNT_MISMATCH,
                    format!(
                        "PutRecords sent {} records and got {} results",
                        entries.len(),
                        response.entries.len()
                    ),
                );
                self.streams[si].stats.error(error.code(), 1);
                self.streams[si].interval.error(error.code());
                for entry in entries {
                    // The shard's call is over: in ordering mode it may send again.
                    verdicts.entry(entry.slot).or_default();
                    for mut pending in entry.records {
                        self.failed_attempt(si, entry.slot, &mut pending, &error, sent_at, now);
                        self.fail(si, pending, FailureReason::RecordCountMismatch);
                    }
                }
            }
            Ok(response) => {
                for (entry, result) in entries.into_iter().zip(response.entries) {
                    let verdict = verdicts.entry(entry.slot).or_default();
                    match result {
                        PutRecordsEntryResult::Written {
                            shard_id,
                            sequence_number,
                        } => self.on_entry_written(
                            si,
                            entry,
                            shard_id,
                            sequence_number,
                            verdict,
                            sent_at,
                            now,
                        ),
                        PutRecordsEntryResult::Failed { code, message } => {
                            let kind = TransportErrorKind::from_code(&code);
                            let error = AttemptError::shared(code, message);
                            self.streams[si].stats.error(error.code(), 1);
                            let interval = self.interval(si, entry.slot);
                            interval.error(error.code());
                            interval.record(Metric::KinesisRecordsPut, 0.0);
                            self.on_entry_failed(si, entry, kind, &error, verdict, sent_at, now);
                        }
                    }
                }
            }
        }
        let ordering = self.config.ordering == OrderingMode::PerShard;
        let closed_parent_done = ordering
            && verdicts
                .keys()
                .flatten()
                .any(|&slot| !self.streams[si].shards[slot].open);
        for (slot, verdict) in verdicts {
            let Some(slot) = slot else {
                if !verdict.retried {
                    self.streams[si].unpredicted_backoff.reset();
                }
                continue;
            };
            let shard = &mut self.streams[si].shards[slot];
            shard.on_answer(verdict, ordering, &mut self.rng, sent_at, now);
            self.service_shard(si, slot, now);
        }
        if closed_parent_done {
            self.service_all_shards(si, now);
        }
        if let Some(error) = stream_gone {
            self.fail_queued(si, "PutRecords", &error, now);
        }
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one call site; the arguments are the entry's context"
    )]
    pub(super) fn on_entry_written(
        &mut self,
        si: usize,
        entry: EntryMeta,
        shard_id: ShardId,
        sequence_number: Arc<str>,
        verdict: &mut SlotVerdict,
        sent_at: Instant,
        now: Instant,
    ) {
        // The shard it was sent to took it: what its limiter measures the accepted rate by.
        if let Some(shard) = entry
            .slot
            .and_then(|slot| self.streams[si].shards.get_mut(slot))
        {
            let bytes = entry.records.iter().map(Pending::size).sum();
            shard.limiter.on_written(bytes, now);
        }
        // One shared landing per Kinesis record: its user records all point at it.
        let landing = Arc::new(Landing {
            shard_id,
            sequence_number,
        });
        if entry.records.len() > 1 {
            // The KCL drops a whole aggregate when any of its records hashes outside the shard
            // it was read from, so an aggregate counts as written only if all of them belong.
            let stream = &self.streams[si];
            match stream
                .maps
                .map
                .as_ref()
                .and_then(|map| map.range_of(&landing.shard_id))
            {
                None => {
                    verdict.held = true;
                    self.hold_landing(si, entry, landing, sent_at, now);
                    return;
                }
                Some(range) if !entry.records.iter().all(|p| range.contains(p.hash_key)) => {
                    self.invalidate_map(si, sent_at, now);
                    let landed = Landed {
                        landing: &landing,
                        slot: entry.slot,
                        sent_at,
                        landed_at: now,
                    };
                    self.resend_misplaced(si, landed, entry.records, now);
                    return;
                }
                Some(_) => {}
            }
        }
        let stream = &self.streams[si];
        if entry
            .slot
            .is_some_and(|slot| stream.shards[slot].id != landing.shard_id)
        {
            self.invalidate_map(si, sent_at, now);
        }
        verdict.written = true;
        self.streams[si].expired_token_since = None;
        self.deliver(si, entry, landing, sent_at, now);
    }

    /// Reports the records of one written Kinesis record as delivered.
    pub(super) fn deliver(
        &mut self,
        si: usize,
        entry: EntryMeta,
        landing: Arc<Landing>,
        sent_at: Instant,
        landed_at: Instant,
    ) {
        let EntryMeta {
            slot,
            size: kinesis_record_size,
            mut records,
        } = entry;
        let shard_slot = self.streams[si].slot_of.get(&landing.shard_id).copied();
        let duration = landed_at.saturating_duration_since(sent_at);
        let count = records.len() as u64;
        let mut data_bytes = 0u64;
        let mut billed_bytes = 0u64;
        // By reference: moving each (large) record out would cost a copy apiece.
        for pending in &mut records {
            let first_try = pending.attempts.is_none();
            let delay = sent_at.saturating_duration_since(pending.last_end());
            let size = pending.size();
            let data = pending.record.data().len();
            data_bytes += data as u64;
            billed_bytes += size as u64;
            if first_try {
                self.record_buffering(si, delay);
            }
            let retries = pending.failed_attempts();
            let (charge, history) = (self.record_charge(size), pending.attempts.is_some());
            self.interval(si, slot)
                .record(Metric::BufferingTime, millis(delay));
            // The KPL counts a written record on the shard it was written to.
            let interval = self.interval(si, shard_slot);
            interval.record(Metric::UserRecordsPut, 1.0);
            interval.record(Metric::UserRecordsDataPut, data as f64);
            interval.record(Metric::RetriesPerRecord, retries as f64);
            let last = Attempt::written(delay, duration, landing.clone());
            let delivery = Delivery {
                id: RecordId(pending.id),
                attempts: AttemptList::new(pending.attempts.take(), last),
            };
            self.outcomes
                .settle(Event::Delivered(delivery), pending.id, charge, history);
        }
        records.clear();
        self.interval(si, shard_slot)
            .record(Metric::KinesisRecordsDataPut, kinesis_record_size as f64);
        // And a Kinesis record on the shard it was predicted for.
        let interval = self.interval(si, slot);
        interval.record(Metric::KinesisRecordsPut, 1.0);
        interval.record(Metric::AllErrors, 0.0);
        let stream = &mut self.streams[si];
        stream.stats.user_records_pending -= count;
        if let Some(shard) = slot.and_then(|slot| stream.shards.get_mut(slot)) {
            // Reusing the emptied list spares the allocator a large block per aggregate.
            shard.keep_spare_list(records);
        }
        stream.stats.kinesis_records_put += 1;
        stream.stats.kinesis_records_data_put += billed_bytes;
        stream.stats.user_records_put += count;
        stream.stats.user_records_data_put += data_bytes;
        if let Some(slot) = shard_slot {
            let shard_stats = &mut stream.shards[slot].stats;
            shard_stats.kinesis_records_put += 1;
            shard_stats.kinesis_records_data_put += billed_bytes;
            shard_stats.user_records_put += count;
        }
    }

    /// Whether an `ExpiredTokenException` is still within its grace: at a credential rotation,
    /// a host clock behind the service's makes fresh credentials look expired for a while, so
    /// such answers are retried for [`EXPIRED_TOKEN_GRACE`] after the first of a run of them.
    pub(super) fn expired_token_grace(
        &mut self,
        si: usize,
        error: &AttemptError,
        now: Instant,
    ) -> bool {
        if !matches!(error.code(), "ExpiredTokenException" | "ExpiredToken") {
            return false;
        }
        let since = *self.streams[si].expired_token_since.get_or_insert(now);
        now.saturating_duration_since(since) < EXPIRED_TOKEN_GRACE
    }

    /// Retries an entry of a request refused whole as invalid, in a request of its own.
    pub(super) fn retry_alone(
        &mut self,
        si: usize,
        mut entry: EntryMeta,
        error: &Arc<AttemptError>,
        verdict: &mut SlotVerdict,
        sent_at: Instant,
        now: Instant,
    ) {
        for pending in &mut entry.records {
            pending.isolate = true;
        }
        // Retried as a retryable failure would be: the records keep their attempt and backoff.
        let retryable = TransportErrorKind::ServiceUnavailable;
        self.on_entry_failed(si, entry, retryable, error, verdict, sent_at, now);
    }

    #[allow(clippy::too_many_arguments, reason = "one entry's full context")]
    pub(super) fn on_entry_failed(
        &mut self,
        si: usize,
        entry: EntryMeta,
        kind: TransportErrorKind,
        error: &Arc<AttemptError>,
        verdict: &mut SlotVerdict,
        sent_at: Instant,
        now: Instant,
    ) {
        let throttled = kind == TransportErrorKind::Throttled;
        if throttled {
            verdict.throttled = true;
            if let Some(slot) = entry.slot {
                self.streams[si].shards[slot].stats.throttled += 1;
            }
        }
        let terminal = if !kind.is_retryable() && !self.expired_token_grace(si, error, now) {
            Some(FailureReason::Terminal(kind))
        } else if throttled && self.config.fail_if_throttled {
            Some(FailureReason::Throttled)
        } else {
            None
        };
        let mut retry = Vec::new();
        for mut pending in entry.records {
            self.failed_attempt(si, entry.slot, &mut pending, error, sent_at, now);
            match terminal {
                Some(reason) => self.fail(si, pending, reason),
                None if pending.expiration <= now => self.expire(si, pending, now),
                None => {
                    pending.due_for_retry(now, self.config.record_max_buffered_time);
                    retry.push(pending);
                }
            }
        }
        if retry.is_empty() {
            return;
        }
        verdict.retried = true;
        verdict.back_off |= !throttled;
        self.streams[si].stats.retries_per_record += retry.len() as u64;
        match entry.slot {
            Some(_) => self.requeue_front(si, retry, Packing::Aggregated, now),
            None => {
                let delay = self.streams[si]
                    .unpredicted_backoff
                    .next_delay(&mut self.rng);
                for mut pending in retry {
                    pending.deadline = (now + delay).min(pending.expiration);
                    self.await_map(si, pending);
                }
            }
        }
    }
}
