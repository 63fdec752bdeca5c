//! Answers to `PutRecords`: each entry written (delivered, or judged by where it landed) or
//! failed (retried, failed for good, or expired), then each shard told what the answer meant.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::landings::Landed;
use super::{StreamState, millis};
use crate::engine::pending::{Packing, Pending};
use crate::engine::requests::EntryMeta;
use crate::engine::shard_queue::SlotVerdict;
use crate::engine::shared::Shared;
use crate::metrics::Metric;
use crate::outcome::{
    Attempt, AttemptError, AttemptList, Delivery, Event, FailureReason, Landing, RecordId, codes,
};
use crate::transport::{
    PutRecordsEntryResult, PutRecordsResponse, TransportError, TransportErrorKind,
};

/// How long a run of `ExpiredTokenException` answers is retried before they fail records.
const EXPIRED_TOKEN_GRACE: Duration = Duration::from_secs(120);

/// When the request being answered was sent, and when its answer came.
#[derive(Clone, Copy, Debug)]
pub(in crate::engine) struct Answer {
    pub(in crate::engine) sent_at: Instant,
    pub(in crate::engine) now: Instant,
}

impl<T> StreamState<T> {
    /// Takes the answer to a `PutRecords` request of this stream: each entry is delivered,
    /// held, retried or failed, and each shard that had entries in it hears its verdict.
    pub(in crate::engine) fn on_put_records(
        &mut self,
        cx: &mut Shared<T>,
        entries: Vec<EntryMeta<T>>,
        result: Result<PutRecordsResponse, TransportError>,
        answer: Answer,
    ) {
        let Answer { sent_at, now } = answer;
        let mut verdicts: BTreeMap<Option<usize>, SlotVerdict> = BTreeMap::new();
        let request_ms = millis(now.saturating_duration_since(sent_at));
        self.observe(None, Metric::RequestTime, request_ms);
        let stream_gone = match &result {
            Err(error) if error.kind() == TransportErrorKind::NotFound => Some(
                TransportError::new(error.kind(), error.code(), error.message()),
            ),
            _ => None,
        };
        match result {
            Err(error) => {
                let kind = error.kind();
                let error = cx.error_texts.error(error.code(), error.message());
                self.stats.error(error.code(), 1);
                self.interval.error(error.code());
                // A request refused whole as invalid may hold one bad entry among good ones:
                // each is tried again alone, and only what the service still refuses fails.
                let split = kind == TransportErrorKind::Validation && entries.len() > 1;
                for entry in entries {
                    let verdict = verdicts.entry(entry.slot).or_default();
                    verdict.back_off = true;
                    if split {
                        self.retry_alone(cx, entry, &error, verdict, answer);
                    } else {
                        self.on_entry_failed(cx, entry, kind, &error, verdict, answer);
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
                self.stats.error(error.code(), 1);
                self.interval.error(error.code());
                for entry in entries {
                    // The shard's call is over: in ordering mode it may send again.
                    verdicts.entry(entry.slot).or_default();
                    for mut pending in entry.records {
                        self.failed_attempt(cx, entry.slot, &mut pending, &error, answer);
                        self.fail(cx, pending, FailureReason::RecordCountMismatch);
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
                        } => {
                            let landing = Arc::new(Landing {
                                shard_id,
                                sequence_number,
                            });
                            self.on_entry_written(cx, entry, landing, verdict, answer);
                        }
                        PutRecordsEntryResult::Failed { code, message } => {
                            let kind = TransportErrorKind::from_code(&code);
                            // One error per distinct code and message, shared by its entries.
                            let error = cx.error_texts.error(&code, &message);
                            self.stats.error(error.code(), 1);
                            self.interval(entry.slot).error(error.code());
                            self.observe(entry.slot, Metric::KinesisRecordsPut, 0.0);
                            self.on_entry_failed(cx, entry, kind, &error, verdict, answer);
                        }
                    }
                }
            }
        }
        let ordering = cx.ordered();
        let closed_parent_done = ordering
            && verdicts
                .keys()
                .flatten()
                .any(|&slot| !self.shards[slot].open);
        for (slot, verdict) in verdicts {
            let Some(slot) = slot else {
                if !verdict.retried {
                    self.unpredicted_backoff.reset();
                }
                continue;
            };
            let shard = &mut self.shards[slot];
            shard.on_answer(verdict, ordering, &mut cx.rng, sent_at, now);
            self.service_shard(cx, slot, now);
        }
        if closed_parent_done {
            self.service_all_shards(cx, now);
        }
        if let Some(error) = stream_gone {
            self.fail_queued(cx, "PutRecords", &error, now);
        }
    }

    /// An entry was written where `landing` says: delivered, unless it is an aggregate whose
    /// shard does not own all its records (re-sent) or that the map cannot judge yet (held).
    fn on_entry_written(
        &mut self,
        cx: &mut Shared<T>,
        entry: EntryMeta<T>,
        landing: Arc<Landing>,
        verdict: &mut SlotVerdict,
        answer: Answer,
    ) {
        let Answer { sent_at, now } = answer;
        // The shard it was sent to took it: what its limiter measures the accepted rate by.
        if let Some(shard) = entry.slot.and_then(|slot| self.shards.get_mut(slot)) {
            let bytes = entry.records.iter().map(Pending::size).sum();
            shard.limiter.on_written(bytes, now);
        }
        if entry.records.len() > 1 {
            // The KCL drops a whole aggregate when any of its records hashes outside the shard
            // it was read from, so an aggregate counts as written only if all of them belong.
            let stream = &*self;
            match stream
                .maps
                .map
                .as_ref()
                .and_then(|map| map.range_of(&landing.shard_id))
            {
                None => {
                    verdict.held = true;
                    self.hold_landing(cx, entry, landing, sent_at, now);
                    return;
                }
                Some(range) if !entry.records.iter().all(|p| range.contains(p.hash_key)) => {
                    self.invalidate_map(cx, sent_at, now);
                    let landed = Landed {
                        landing: &landing,
                        slot: entry.slot,
                        sent_at,
                        landed_at: now,
                    };
                    self.resend_misplaced(cx, landed, entry.records, now);
                    return;
                }
                Some(_) => {}
            }
        }
        let stream = &*self;
        if entry
            .slot
            .is_some_and(|slot| stream.shards[slot].id != landing.shard_id)
        {
            self.invalidate_map(cx, sent_at, now);
        }
        verdict.written = true;
        self.expired_token_since = None;
        self.deliver(cx, entry, landing, sent_at, now);
    }

    /// Reports the records of one written Kinesis record as delivered.
    pub(super) fn deliver(
        &mut self,
        cx: &mut Shared<T>,
        entry: EntryMeta<T>,
        landing: Arc<Landing>,
        sent_at: Instant,
        landed_at: Instant,
    ) {
        let EntryMeta {
            slot,
            size: kinesis_record_size,
            mut records,
        } = entry;
        let shard_slot = self.slot_of.get(&landing.shard_id).copied();
        let duration = landed_at.saturating_duration_since(sent_at);
        let count = records.len() as u64;
        // Drained, to hand each record's token back; the emptied list is kept for reuse.
        for mut pending in records.drain(..) {
            let first_try = pending.attempts.is_none();
            let delay = sent_at.saturating_duration_since(pending.last_end());
            let size = pending.size();
            let data = pending.record.data().len();
            if first_try {
                self.record_buffering(delay);
            }
            let retries = pending.failed_attempts();
            let (charge, history) = (cx.record_charge(size), pending.attempts.is_some());
            self.interval(slot)
                .record(Metric::BufferingTime, millis(delay));
            // The KPL counts a written record on the shard it was written to.
            self.observe(shard_slot, Metric::UserRecordsPut, 1.0);
            self.observe(shard_slot, Metric::UserRecordsDataPut, data as f64);
            self.interval(shard_slot)
                .record(Metric::RetriesPerRecord, retries as f64);
            let last = Attempt::written(delay, duration, landing.clone());
            let delivery = Delivery {
                id: RecordId(pending.id),
                attempts: AttemptList::new(pending.attempts.take(), last),
                token: pending.token,
            };
            cx.outcomes
                .settle(Event::Delivered(delivery), pending.id, charge, history);
        }
        self.observe(
            shard_slot,
            Metric::KinesisRecordsDataPut,
            kinesis_record_size as f64,
        );
        // And a Kinesis record on the shard it was predicted for.
        self.observe(slot, Metric::KinesisRecordsPut, 1.0);
        self.interval(slot).record(Metric::AllErrors, 0.0);
        self.stats.user_records_pending -= count;
        if let Some(shard) = slot.and_then(|slot| self.shards.get_mut(slot)) {
            // Reusing the emptied list spares the allocator a large block per aggregate.
            shard.keep_spare_list(records);
        }
        // The shard it was written to counts what the stream counts of it.
        if let Some(slot) = shard_slot {
            let shard_stats = &mut self.shards[slot].stats;
            shard_stats.kinesis_records_put += 1;
            shard_stats.kinesis_records_data_put += kinesis_record_size as u64;
            shard_stats.user_records_put += count;
        }
    }

    /// Whether an `ExpiredTokenException` is still within its grace: at a credential rotation,
    /// a host clock behind the service's makes fresh credentials look expired for a while, so
    /// such answers are retried for [`EXPIRED_TOKEN_GRACE`] after the first of a run of them.
    fn expired_token_grace(&mut self, error: &AttemptError, now: Instant) -> bool {
        if !matches!(error.code(), "ExpiredTokenException" | "ExpiredToken") {
            return false;
        }
        let since = *self.expired_token_since.get_or_insert(now);
        now.saturating_duration_since(since) < EXPIRED_TOKEN_GRACE
    }

    /// Retries an entry of a request refused whole as invalid, in a request of its own.
    fn retry_alone(
        &mut self,
        cx: &mut Shared<T>,
        mut entry: EntryMeta<T>,
        error: &Arc<AttemptError>,
        verdict: &mut SlotVerdict,
        answer: Answer,
    ) {
        for pending in &mut entry.records {
            pending.isolate = true;
        }
        // Retried as a retryable failure would be: the records keep their attempt and backoff.
        let retryable = TransportErrorKind::ServiceUnavailable;
        self.on_entry_failed(cx, entry, retryable, error, verdict, answer);
    }

    /// An entry failed with `error` of `kind`: its records are retried, or fail for good.
    fn on_entry_failed(
        &mut self,
        cx: &mut Shared<T>,
        entry: EntryMeta<T>,
        kind: TransportErrorKind,
        error: &Arc<AttemptError>,
        verdict: &mut SlotVerdict,
        answer: Answer,
    ) {
        let now = answer.now;
        let throttled = kind == TransportErrorKind::Throttled;
        if throttled {
            verdict.throttled = true;
            if let Some(slot) = entry.slot {
                self.shards[slot].stats.throttled += 1;
            }
        }
        let terminal = if !kind.is_retryable() && !self.expired_token_grace(error, now) {
            Some(FailureReason::Terminal(kind))
        } else if throttled && cx.config.fail_if_throttled {
            Some(FailureReason::Throttled)
        } else {
            None
        };
        let mut retry = Vec::new();
        for mut pending in entry.records {
            self.failed_attempt(cx, entry.slot, &mut pending, error, answer);
            match terminal {
                Some(reason) => self.fail(cx, pending, reason),
                None if pending.expiration <= now => self.expire(cx, pending, now),
                None => {
                    pending.due_for_retry(now, cx.config.record_max_buffered_time);
                    retry.push(pending);
                }
            }
        }
        if retry.is_empty() {
            return;
        }
        verdict.retried = true;
        verdict.back_off |= !throttled;
        self.stats.retries_per_record += retry.len() as u64;
        match entry.slot {
            Some(_) => self.requeue_front(cx, retry, Packing::Aggregated, now),
            None => {
                let delay = self.unpredicted_backoff.next_delay(&mut cx.rng);
                for mut pending in retry {
                    pending.deadline = (now + delay).min(pending.expiration);
                    self.await_map(cx, pending);
                }
            }
        }
    }
}
