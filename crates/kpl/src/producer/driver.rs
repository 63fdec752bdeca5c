//! The driver task: runs the engine's timers, sends its requests, hands it their answers and
//! dispatches its events; the metrics task beside it; what is logged on the way.

use std::collections::BTreeMap;
use std::mem;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use kpl_engine::time::Clock;
use kpl_engine::transport::{SharedTransport, send_request};
use kpl_engine::{
    Attempt, Engine, FailureReason, RecordId, Request, RequestId, Response, TransportError,
    TransportErrorKind,
};
use tokio::task::JoinSet;

use super::state::Shared;
use crate::metrics::{PENDING_SAMPLE_PERIOD, SAMPLES_PER_SECOND};

/// Samples `UserRecordsPending` every 200 ms and takes the engine's metrics every second, for
/// the window and the `metrics` recorder, until the producer is finished (its last second
/// included).
pub(super) async fn collect_metrics(shared: Weak<Shared>, upload_timeout: Duration) {
    let mut tick = tokio::time::interval(PENDING_SAMPLE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut samples = 0u32;
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let due = {
            let mut state = shared.lock();
            if state.finished {
                // `shutdown` takes and uploads the last interval itself; a producer dropped
                // without it leaves its last second unreported, as nothing is left to wait for
                // an upload.
                return;
            }
            state.engine.sample_pending();
            samples += 1;
            if !samples.is_multiple_of(SAMPLES_PER_SECOND) {
                continue;
            }
            // The hub is locked before the state is let go (always in this order), so that
            // `shutdown` cannot take the last interval between the two.
            let series = state.engine.take_metrics();
            let mut hub = shared.metrics();
            drop(state);
            let emissions = hub.add_second(series);
            let due = hub.due_upload(shared.clock.system_time(), false);
            drop(hub);
            // With no lock held: a recorder may call back into the producer.
            emissions.emit();
            due
        };
        if let Some(upload) = due {
            tokio::spawn(upload.send(upload_timeout));
        }
    }
}

/// Runs the engine: feeds it time and answers, sends its requests (at most `MaxConnections` at
/// once, each within `RequestTimeout`), hands out outcomes, and sleeps until its next deadline.
pub(super) async fn drive(shared: Arc<Shared>, transport: SharedTransport) {
    let _stopped = DriverStopped(Arc::clone(&shared));
    let mut calls: JoinSet<(RequestId, Result<Response, TransportError>)> = JoinSet::new();
    let mut call_ids: BTreeMap<tokio::task::Id, RequestId> = BTreeMap::new();
    let mut log = DriverLog::default();
    loop {
        let (requests, next, freed, stop, failures) = {
            let mut state = shared.lock();
            if state.dropped && !state.finished {
                state.engine.abandon();
                state.dispatch(shared.return_records);
                state.finished = true;
            }
            if state.finished {
                (Vec::new(), None, true, true, Vec::new())
            } else {
                let now = shared.clock.now();
                state.engine.handle_timeout(now);
                let mut requests = Vec::new();
                while state.in_flight < shared.max_connections {
                    let Some(request) = state.engine.poll_request(now) else {
                        break;
                    };
                    state.in_flight += 1;
                    requests.push(request);
                }
                let freed = state.dispatch(shared.return_records);
                let next = state.engine.poll_timeout();
                state.driver_sleeps_until = next;
                let failures = mem::take(&mut state.failures_to_log);
                (requests, next, freed, false, failures)
            }
        };
        log_failures(failures);
        if freed {
            shared.space.notify_waiters();
        }
        if stop {
            calls.abort_all();
            return;
        }
        for (id, request) in requests {
            if let Request::ListShards(list) = &request {
                tracing::debug!(stream = %list.stream, page = ?list.next_token, "reading the shard map");
            }
            let call = send_request(&transport, request);
            let timeout = shared.request_timeout;
            let handle = calls.spawn(async move {
                let result = match tokio::time::timeout(timeout, call).await {
                    Ok(result) => result,
                    Err(_) => Err(TransportError::new(
                        TransportErrorKind::Timeout,
                        "RequestTimeout",
                        format!("no answer within {} ms", timeout.as_millis()),
                    )),
                };
                (id, result)
            });
            call_ids.insert(handle.id(), id);
        }
        let sleep = next.map(|at| tokio::time::sleep_until(tokio::time::Instant::from_std(at)));
        tokio::select! {
            () = shared.driver_wake.notified() => {}
            Some(joined) = calls.join_next_with_id(), if !calls.is_empty() => {
                let (task, answer) = match joined {
                    Ok((task, (id, result))) => (task, Some((id, result))),
                    Err(error) => (error.id(), None),
                };
                let Some(id) = call_ids.remove(&task) else { continue };
                let result = match answer {
                    Some((_, result)) => result,
                    None => Err(TransportError::new(
                        TransportErrorKind::Other,
                        kpl_engine::codes::TRANSPORT_PANICKED,
                        "the transport's call panicked or was cancelled",
                    )),
                };
                let now = shared.clock.now();
                log.answer(&result, now);
                let (summary, freed) = {
                    let mut state = shared.lock();
                    state.in_flight = state.in_flight.saturating_sub(1);
                    let charged = state.engine.outstanding_bytes();
                    state.engine.handle_response(id, result, now);
                    // An answer gives back its encoded records' charge even when every record
                    // in it is retried: room for those waiting to send.
                    let freed = state.engine.outstanding_bytes() < charged;
                    (log.take_summary(&state.engine, now), freed)
                };
                if freed {
                    shared.space.notify_waiters();
                }
                if let Some(summary) = summary {
                    summary.log();
                }
            }
            () = async { if let Some(sleep) = sleep { sleep.await } }, if next.is_some() => {}
        }
    }
}

/// Runs when the driver ends for any reason, including its runtime shutting down under it:
/// nothing can make progress any more, so the producer refuses records and every pending
/// future resolves as cancelled instead of waiting forever.
pub(super) struct DriverStopped(Arc<Shared>);

impl Drop for DriverStopped {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.accepting = false;
        state.finished = true;
        // Nothing can finish the records any more: the engine lets them go, so the producer
        // does not report them outstanding (and ageing) for the rest of its life, and each ends
        // cancelled where its outcome is awaited (a future, or a slot in an outcome channel).
        state.dropped = true;
        state.cancel_waiters();
        state.flushes.clear();
        state.failures_to_log.clear();
        drop(state);
        self.0.space.notify_waiters();
    }
}

/// What the driver logs: throttling when it starts, a summary of retries and errors now and
/// then, and every terminal or failed call. Never credentials: errors carry service messages.
#[derive(Default)]
pub(super) struct DriverLog {
    last_throttled: Option<Instant>,
    next_summary: Option<Instant>,
    reported_retries: u64,
    reported_errors: u64,
    reported_failed: u64,
    reported_unjudged: u64,
}

/// The longest the last upload of the metrics may take before it is counted lost.
pub(super) const LAST_UPLOAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `shutdown` waits for the last metrics upload, beyond the records' outcomes.
pub(super) const LAST_UPLOAD_WAIT: Duration = Duration::from_millis(250);

/// Throttling after this long without any counts as starting again.
const THROTTLING_QUIET: Duration = Duration::from_secs(10);
/// Retries and errors are summarized at most this often.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);

impl DriverLog {
    fn answer(&mut self, result: &Result<Response, TransportError>, now: Instant) {
        match result {
            Err(error) if !error.is_retryable() => {
                tracing::warn!(%error, "call failed with an error retrying cannot fix");
            }
            Err(error) => tracing::debug!(%error, "call failed; its records will be retried"),
            Ok(Response::PutRecords(put)) => {
                let throttled = put
                    .entries
                    .iter()
                    .filter(|entry| {
                        matches!(entry, kpl_engine::transport::PutRecordsEntryResult::Failed { code, .. }
                            if TransportErrorKind::from_code(code) == TransportErrorKind::Throttled)
                    })
                    .count();
                if throttled > 0 {
                    let starting = self
                        .last_throttled
                        .is_none_or(|last| now.saturating_duration_since(last) > THROTTLING_QUIET);
                    if starting {
                        tracing::info!(
                            throttled,
                            "throttling started: shards refuse records; their rates are lowered and the records retried"
                        );
                    } else {
                        tracing::debug!(throttled, "entries throttled");
                    }
                    self.last_throttled = Some(now);
                }
            }
            Ok(Response::ListShards(page)) => {
                tracing::debug!(
                    shards = page.shards.len(),
                    last_page = page.next_token.is_none(),
                    "shard map page read"
                );
            }
            Ok(_) => {}
        }
    }

    /// The counts for the periodic summary, when one is due. Taken under the producer's lock;
    /// logged after it is released.
    fn take_summary<T>(&mut self, engine: &Engine<T>, now: Instant) -> Option<Summary> {
        let next = *self.next_summary.get_or_insert(now + SUMMARY_EVERY);
        if now < next {
            return None;
        }
        self.next_summary = Some(now + SUMMARY_EVERY);
        let (mut retries, mut errors, mut failed, mut unjudged) = (0, 0, 0, 0);
        for (_, stats) in engine.stats() {
            retries += stats.retries_per_record;
            errors += stats.errors_by_code.values().sum::<u64>();
            failed += stats.user_records_failed;
            unjudged += stats.unjudged_landings_resent;
        }
        let summary = Summary {
            retries: retries - self.reported_retries,
            errors: errors - self.reported_errors,
            failed_records: failed - self.reported_failed,
            unjudged_resent: unjudged - self.reported_unjudged,
            outstanding: engine.outstanding_records(),
        };
        (
            self.reported_retries,
            self.reported_errors,
            self.reported_failed,
            self.reported_unjudged,
        ) = (retries, errors, failed, unjudged);
        Some(summary)
    }
}

/// What happened since the last periodic summary.
struct Summary {
    retries: u64,
    errors: u64,
    failed_records: u64,
    unjudged_resent: u64,
    outstanding: usize,
}

impl Summary {
    fn log(&self) {
        if self.unjudged_resent > 0 {
            tracing::warn!(
                records = self.unjudged_resent,
                "records re-sent because no shard map read could tell whether a consumer keeps the copy they landed with: a consumer may read them twice"
            );
        }
        if self.retries + self.errors + self.failed_records > 0 {
            tracing::info!(
                retries = self.retries,
                errors = self.errors,
                failed_records = self.failed_records,
                outstanding = self.outstanding,
                "since the last summary"
            );
        }
    }
}

/// A failed record, as logged (never its data or key).
pub(super) struct FailureLog {
    pub(super) id: RecordId,
    pub(super) reason: FailureReason,
    pub(super) last: Option<Attempt>,
}

pub(super) fn log_failures(failures: Vec<FailureLog>) {
    for failure in failures {
        tracing::debug!(
            record = failure.id.get(),
            reason = %failure.reason,
            last_attempt = ?failure.last,
            "record failed"
        );
    }
}
