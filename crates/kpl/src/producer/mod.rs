//! The async producer: a cheap handle over shared state, and one driver task per producer that
//! runs the engine, the transport calls and the timers.
//!
//! - [`builder`]: the builder, and the checks made before the driver starts;
//! - [`state`]: the state under the lock, admission and the dispatch of outcomes;
//! - [`driver`]: the driver and metrics tasks;
//! - [`outcome_channel`]: outcomes as messages;
//! - here: the handle and its public API.

mod builder;
mod driver;
mod outcome_channel;
mod state;

use std::fmt;
use std::mem;
use std::sync::Arc;
use std::time::Duration;

use kpl_engine::metrics::Metric;
use kpl_engine::time::Clock;
use kpl_engine::{PreparedRecord, Record, RecordId, Rejected, Stream, StreamStats};
use tokio::sync::oneshot;

pub use self::builder::ProducerBuilder;
use self::driver::{LAST_UPLOAD_TIMEOUT, LAST_UPLOAD_WAIT, log_failures};
pub use self::outcome_channel::{OutcomeReceiver, OutcomeSender};
use self::state::Shared;
pub use crate::completion::RecordOutcome;
use crate::completion::{DeliveryFuture, FutureKey, Waiter};
use crate::error::{SendError, SendErrorKind};
use crate::metrics::{MetricReading, MetricsExports};

/// What `shutdown` could not deliver in time.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Records that no call had carried: accepted and certainly not written, handed back. (Their
    /// delivery futures resolve with [`DeliveryErrorKind::ShutDown`](crate::DeliveryErrorKind::ShutDown).)
    pub unsent: Vec<Record>,
    /// Records whose call was still in flight at the deadline (or whose landing on a new shard
    /// waited to be judged): they may have been written, so re-sending them may duplicate them.
    /// (Their delivery futures resolve with [`DeliveryErrorKind::ShutDownInFlight`](crate::DeliveryErrorKind::ShutDownInFlight).)
    pub in_flight: Vec<Record>,
}

/// The producer: hand it records, await their outcomes.
///
/// A cheap `Clone` handle (`Send + Sync`); all clones share one engine and one driver task.
/// Records for several streams (by name or ARN) go through one producer.
///
/// **Dropping** the last handle without [`shutdown`](Self::shutdown) never blocks: the driver
/// stops, calls in flight are abandoned, and every pending [`DeliveryFuture`] resolves with
/// [`DeliveryErrorKind::Cancelled`](crate::DeliveryErrorKind::Cancelled). Use `shutdown` to deliver what can be delivered first.
#[derive(Clone)]
pub struct KinesisProducer {
    handle: Arc<Handle>,
}

impl fmt::Debug for KinesisProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KinesisProducer")
            .field("outstanding_records", &self.outstanding_records())
            .finish_non_exhaustive()
    }
}

/// Stops the driver when the last producer handle goes.
pub(super) struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.accepting = false;
        state.dropped = true;
        drop(state);
        self.shared.driver_wake.notify_one();
        self.shared.space.notify_waiters();
    }
}

impl KinesisProducer {
    /// A builder with the KPL's default configuration.
    pub fn builder() -> ProducerBuilder {
        ProducerBuilder::new()
    }

    /// Accepts a record without waiting, or says why not and hands it back: the buffer is full
    /// (or `send_wait` callers are waiting for space first; see [`send_wait`](Self::send_wait)),
    /// the record is invalid or too large, or the producer is shutting down.
    pub fn send(&self, record: Record) -> Result<DeliveryFuture, SendError> {
        let key = self.handle.shared.completions.reserve();
        let id = self
            .admit(record, None, Waiter::Future(key))
            .map_err(|(refusal, _)| refusal)?;
        Ok(self.delivery_future(id, key))
    }

    /// The future of record `id`'s outcome, with the producer's `user_record_timeout`.
    fn delivery_future(&self, id: RecordId, key: FutureKey) -> DeliveryFuture {
        let shared = &self.handle.shared;
        // On the producer's runtime, whichever thread sends (a timer needs a runtime's clock).
        let timer = shared.user_record_timeout.map(|timeout| {
            let _entered = shared.runtime.enter();
            Box::pin(tokio::time::sleep(timeout))
        });
        DeliveryFuture::new(id, key, Arc::clone(&shared.completions), timer)
    }

    /// `send` for a caller holding `ticket` in the queue of `send_wait` callers (`None`: not
    /// queued), whose outcome goes to `waiter` (handed back with a refusal). Space goes to the
    /// first in the queue.
    fn admit(
        &self,
        record: Record,
        ticket: Option<u64>,
        waiter: Waiter,
    ) -> Result<RecordId, (SendError, Waiter)> {
        // Checking and hashing need no lock: other senders go on meanwhile.
        let prepared = match prepare(record) {
            Ok(prepared) => prepared,
            Err(refusal) => return Err((refusal, waiter)),
        };
        let shared = &self.handle.shared;
        let mut state = shared.lock();
        let now = shared.clock.now();
        let admitted = state.admit(prepared, ticket, waiter, now);
        let wake = state.driver_has_work(shared.max_connections);
        drop(state);
        if wake {
            shared.driver_wake.notify_one();
        }
        let (id, dequeued) = admitted?;
        if dequeued {
            // The next in the queue may fit too.
            shared.space.notify_waiters();
        }
        Ok(id)
    }

    /// Accepts many records under one lock and one clock read, each checked and hashed before
    /// the lock, or says for each why not and hands it back. One result per record, in order.
    /// A record refused for want of space ([`SendErrorKind::BufferFull`](crate::SendErrorKind::BufferFull)) stops the batch: the
    /// ones after it are refused the same way, so records are accepted in the order given.
    /// See [`send_all`](Self::send_all) to wait for space instead.
    pub fn send_batch(
        &self,
        records: impl IntoIterator<Item = Record>,
    ) -> Vec<Result<DeliveryFuture, SendError>> {
        let prepared = PreparedRecord::prepare_many(records)
            .into_iter()
            .map(|prepared| prepared.map_err(send_error));
        let shared = &self.handle.shared;
        let mut accepted: Vec<Result<(RecordId, FutureKey), SendError>> =
            Vec::with_capacity(prepared.size_hint().0);
        let wake = {
            let mut state = shared.lock();
            let now = shared.clock.now();
            let mut full = false;
            for prepared in prepared {
                let result = prepared.and_then(|prepared| {
                    if full {
                        return Err(SendError::new(
                            SendErrorKind::BufferFull,
                            "a record before it in the batch found no buffer space",
                            prepared.into_record(),
                        ));
                    }
                    let key = shared.completions.reserve();
                    let admitted = state.admit(prepared, None, Waiter::Future(key), now);
                    admitted
                        .map(|(id, _)| (id, key))
                        .map_err(|(refusal, _)| refusal)
                });
                full |= matches!(&result, Err(e) if e.kind() == SendErrorKind::BufferFull);
                accepted.push(result);
            }
            state.driver_has_work(shared.max_connections)
        };
        if wake {
            shared.driver_wake.notify_one();
        }
        accepted
            .into_iter()
            .map(|result| result.map(|(id, key)| self.delivery_future(id, key)))
            .collect()
    }

    /// [`send_batch`](Self::send_batch), waiting for buffer space whenever it runs out, as
    /// [`send_wait`](Self::send_wait) does. One result per record, in order; refusals other
    /// than for space come back at once with their records.
    pub async fn send_all(
        &self,
        records: impl IntoIterator<Item = Record>,
    ) -> Vec<Result<DeliveryFuture, SendError>> {
        let mut rest: Vec<Record> = records.into_iter().collect();
        let mut results = Vec::with_capacity(rest.len());
        while !rest.is_empty() {
            let mut refused = Vec::new();
            for result in self.send_batch(mem::take(&mut rest)) {
                match result {
                    Err(error) if error.kind() == SendErrorKind::BufferFull => {
                        refused.push(error.into_record());
                    }
                    // Only back-pressure refusals follow the first one.
                    other => results.push(other),
                }
            }
            let mut refused = refused.into_iter();
            if let Some(first) = refused.next() {
                // Wait for room for the first; the others go as a batch again.
                results.push(self.send_wait(first).await);
                rest = refused.collect();
            }
        }
        results
    }

    /// [`send`](Self::send), waiting for buffer space while the outstanding limits are
    /// reached (back-pressure). Other refusals return at once.
    ///
    /// Waiting callers get space in the order they began to wait, and while any waits, `send`
    /// refuses with [`SendErrorKind::BufferFull`](crate::SendErrorKind::BufferFull): a large record is not passed over forever
    /// by smaller ones that fit in what frees up.
    pub async fn send_wait(&self, record: Record) -> Result<DeliveryFuture, SendError> {
        let key = self.handle.shared.completions.reserve();
        let id = self.send_waiting(record, None, Waiter::Future(key)).await?;
        Ok(self.delivery_future(id, key))
    }

    /// [`send_wait`](Self::send_wait), giving up after `timeout` with
    /// [`SendErrorKind::TimedOut`](crate::SendErrorKind::TimedOut) and the record.
    pub async fn send_wait_timeout(
        &self,
        record: Record,
        timeout: Duration,
    ) -> Result<DeliveryFuture, SendError> {
        let key = self.handle.shared.completions.reserve();
        let id = self
            .send_waiting(record, Some(timeout), Waiter::Future(key))
            .await?;
        Ok(self.delivery_future(id, key))
    }

    async fn send_waiting(
        &self,
        record: Record,
        timeout: Option<Duration>,
        waiter: Waiter,
    ) -> Result<RecordId, SendError> {
        // A timeout too long to be a time is no limit.
        let limit = timeout.and_then(|timeout| {
            let deadline = crate::clock::tokio_now().checked_add(timeout)?;
            Some((deadline, timeout))
        });
        // The common case needs no waiting, no queueing and no registration with the notifier.
        let (mut record, mut waiter) = match self.admit(record, None, waiter) {
            Ok(id) => return Ok(id),
            Err((error, waiter)) if error.kind() == SendErrorKind::BufferFull => {
                (error.into_record(), waiter)
            }
            Err((error, _)) => return Err(error),
        };
        let place = QueuePlace::take(&self.handle.shared);
        loop {
            let space = self.handle.shared.space.notified();
            tokio::pin!(space);
            // Registered before the retry, so space freed in between is not missed.
            space.as_mut().enable();
            match self.admit(record, Some(place.ticket), waiter) {
                Ok(id) => return Ok(id),
                Err((error, back)) if error.kind() == SendErrorKind::BufferFull => {
                    record = error.into_record();
                    waiter = back;
                }
                Err((error, _)) => return Err(error),
            }
            match limit {
                Some((deadline, timeout)) => {
                    if tokio::time::timeout_at(deadline, space).await.is_err() {
                        return Err(SendError::new(
                            SendErrorKind::TimedOut,
                            format!("no buffer space within {timeout:?}"),
                            record,
                        ));
                    }
                }
                None => space.await,
            }
        }
    }

    /// A channel for the outcomes of records sent without a [`DeliveryFuture`], for callers
    /// that fire and forget (the KPL's callbacks, without a task or a future per record):
    /// records sent through the [`OutcomeSender`] have their outcome, exactly one each, come out
    /// of the [`OutcomeReceiver`] in the order they finish.
    ///
    /// **Back-pressure**: the channel holds at most `capacity` outcomes, counting those of
    /// records still outstanding: a slot is reserved when a record is accepted, so an outcome
    /// is never dropped and never waits. While every slot is taken (outcomes not yet
    /// received), [`OutcomeSender::send`] refuses with [`SendErrorKind::BufferFull`](crate::SendErrorKind::BufferFull) and
    /// [`OutcomeSender::send_wait`] waits: a consumer that falls behind slows its producers
    /// down instead of growing a queue. The producer's own limits apply too. Dropping the
    /// receiver makes the sender refuse every record with [`SendErrorKind::NoOutcomeReceiver`](crate::SendErrorKind::NoOutcomeReceiver).
    /// `user_record_timeout` does not apply: there is no future to time out.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0.
    pub fn outcome_channel(&self, capacity: usize) -> (OutcomeSender, OutcomeReceiver) {
        outcome_channel::channel(self.clone(), capacity)
    }

    /// Sends what is buffered for every stream now, without waiting for the buffering
    /// deadlines (rate limits still apply). Returns at once; see
    /// [`flush_and_wait`](Self::flush_and_wait) to wait for the outcomes.
    pub fn flush(&self) {
        let shared = &self.handle.shared;
        let now = shared.clock.now();
        shared.lock().engine.flush(now);
        shared.driver_wake.notify_one();
    }

    /// [`flush`](Self::flush) for one stream.
    pub fn flush_stream(&self, stream: &Stream) {
        let shared = &self.handle.shared;
        let now = shared.clock.now();
        shared.lock().engine.flush_stream(stream, now);
        shared.driver_wake.notify_one();
    }

    /// Flushes every stream and resolves once every record accepted before the call has its
    /// outcome (the KPL's `flushSync`, without its polling loop).
    pub async fn flush_and_wait(&self) {
        let shared = &self.handle.shared;
        let receiver = {
            let mut state = shared.lock();
            if state.finished {
                return;
            }
            let now = shared.clock.now();
            let (sender, receiver) = oneshot::channel();
            let accepted = state.engine.records_accepted();
            let shared_marker = state
                .newest_flush
                .filter(|&(id, at)| at == accepted && state.flushes.contains_key(&id));
            match shared_marker {
                // Nothing accepted since the newest marker: it covers this call too. (Callers
                // that stopped waiting leave, so repeated calls do not pile up.)
                Some((id, _)) => {
                    state.engine.flush(now);
                    let waiting = state.flushes.entry(id).or_default();
                    waiting.retain(|sender| !sender.is_closed());
                    waiting.push(sender);
                }
                None => {
                    // Markers whose callers all gave up go, so that a caller that keeps giving up
                    // while records keep coming does not leave one marker per call behind.
                    state.forget_abandoned_flushes();
                    let id = state.engine.flush_marker(now);
                    state.flushes.entry(id).or_default().push(sender);
                    state.newest_flush = Some((id, accepted));
                }
            }
            // An empty marker completes at once. Events handed out here are not seen by the
            // driver, so those waiting for buffer space are told here.
            if state.dispatch(shared.return_records) {
                shared.space.notify_waiters();
            }
            let failures = mem::take(&mut state.failures_to_log);
            drop(state);
            log_failures(failures);
            receiver
        };
        shared.driver_wake.notify_one();
        // An error means the producer stopped: nothing is outstanding any more either way.
        let _ = receiver.await;
    }

    /// Records accepted and not yet finished.
    pub fn outstanding_records(&self) -> usize {
        self.handle.shared.lock().engine.outstanding_records()
    }

    /// The memory charged against `MaxOutstandingBytes`: the key, data and bookkeeping of every
    /// record accepted and not yet finished, plus the encoded Kinesis records of requests not
    /// yet answered (twice their size, for the transport's wire copy). See `docs/config.md`.
    pub fn outstanding_bytes(&self) -> usize {
        self.handle.shared.lock().engine.outstanding_bytes()
    }

    /// How long the oldest unfinished record has been waiting.
    pub fn oldest_record_age(&self) -> Option<Duration> {
        let shared = &self.handle.shared;
        let oldest = shared.lock().engine.oldest_outstanding()?;
        Some(shared.clock.now().saturating_duration_since(oldest))
    }

    /// The statistics of the last `window` (whole seconds, at most 60: the KPL's
    /// `getMetrics(name, windowSeconds)`) of `metric`, or of every metric, at every place: per
    /// shard, per stream, and over every stream (`stream` `None`). The producer takes its
    /// metrics each second, so the current second is not in yet. See `docs/metrics.md`.
    pub fn metrics(&self, metric: Option<Metric>, window: Duration) -> Vec<MetricReading> {
        self.handle.shared.metrics().readings(metric, window)
    }

    /// How the uploads of the metrics went (see
    /// [`metrics_exporter`](ProducerBuilder::metrics_exporter)); `None` when they go nowhere.
    pub fn metrics_exports(&self) -> Option<MetricsExports> {
        self.handle.shared.metrics().exports()
    }

    /// Statistics per stream (see `kpl_engine::stats` for what each field means).
    pub fn stats(&self) -> Vec<(Stream, StreamStats)> {
        let state = self.handle.shared.lock();
        state
            .engine
            .stats()
            .map(|(stream, stats)| (stream.clone(), stats))
            .collect()
    }

    /// Stops accepting records, flushes, waits up to `deadline` for outcomes, then fails what
    /// is left and returns those records: never sent ([`DeliveryErrorKind::ShutDown`](crate::DeliveryErrorKind::ShutDown)), or
    /// carried by a call still in flight, so possibly written
    /// ([`DeliveryErrorKind::ShutDownInFlight`](crate::DeliveryErrorKind::ShutDownInFlight)).
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let shared = &self.handle.shared;
        shared.lock().accepting = false;
        shared.space.notify_waiters();
        let _ = tokio::time::timeout(deadline, self.flush_and_wait()).await;
        let (report, failures, last_upload) = {
            let mut state = shared.lock();
            state.shutdown_report = Some(ShutdownReport::default());
            state.engine.abandon();
            state.dispatch(shared.return_records);
            state.finished = true;
            let report = state.shutdown_report.take().unwrap_or_default();
            for sender in mem::take(&mut state.flushes).into_values().flatten() {
                let _ = sender.send(());
            }
            let failures = mem::take(&mut state.failures_to_log);
            let last_metrics = state.engine.take_metrics();
            let mut hub = shared.metrics();
            drop(state);
            let emissions = hub.add_second(last_metrics);
            let due = hub.due_upload(shared.clock.system_time(), true);
            drop(hub);
            emissions.emit();
            (report, failures, due)
        };
        log_failures(failures);
        shared.driver_wake.notify_one();
        // The last interval's metrics go now, in a task of their own bounded by the request
        // timeout (and a few seconds at most), or are counted lost. Shutdown waits for them a
        // moment only: the records are done, and a metrics service out of reach must not hold
        // the application up.
        if let Some(upload) = last_upload {
            let bound = shared.request_timeout.min(LAST_UPLOAD_TIMEOUT);
            let sending = tokio::spawn(upload.send(bound));
            if tokio::time::timeout(LAST_UPLOAD_WAIT, sending)
                .await
                .is_err()
            {
                tracing::debug!(
                    "the last metrics upload goes on after shutdown returned, while the runtime runs"
                );
            }
        }
        if !report.unsent.is_empty() || !report.in_flight.is_empty() {
            tracing::warn!(
                unsent = report.unsent.len(),
                in_flight = report.in_flight.len(),
                "shutdown deadline passed with records unsent or of unknown outcome"
            );
        }
        report
    }
}

/// Checks and hashes a record (no lock needed), or refuses it with the record back.
pub(super) fn prepare(record: Record) -> Result<PreparedRecord, SendError> {
    PreparedRecord::prepare(record).map_err(send_error)
}

pub(super) fn send_error(rejected: Rejected) -> SendError {
    let (reason, record) = rejected.into_parts();
    SendError::from_rejected(reason, record)
}

/// A `send_wait` caller's place in the queue for buffer space; leaving the queue (admitted,
/// timed out, or the future dropped) lets the next one try.
pub(super) struct QueuePlace {
    shared: Arc<Shared>,
    ticket: u64,
}

impl QueuePlace {
    fn take(shared: &Arc<Shared>) -> Self {
        let mut state = shared.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.space_queue.push_back(ticket);
        Self {
            shared: Arc::clone(shared),
            ticket,
        }
    }
}

impl Drop for QueuePlace {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        let first = state.space_queue.front() == Some(&self.ticket);
        state.space_queue.retain(|&ticket| ticket != self.ticket);
        drop(state);
        if first {
            self.shared.space.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TokioClock;
    use kpl_sim::UnansweredTransport;

    #[tokio::test(start_paused = true)]
    async fn futures_between_many_channel_records_take_no_places_for_them() {
        let mut sim = kpl_sim::SimKinesis::new(3);
        sim.create_stream("s", 2, TokioClock.now());
        let producer = KinesisProducer::builder()
            .transport(kpl_sim::SimTransport::new(sim, TokioClock))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let stream = Stream::new("s").unwrap_or_else(|e| panic!("{e}"));
        let record = |key: String| Record::new(stream.clone(), key, vec![1]);
        let first = producer.send(record("first".into()));
        let (sender, mut outcomes) = producer.outcome_channel(64);
        let reader = tokio::spawn(async move {
            let mut received = 0;
            while outcomes.recv().await.is_some() {
                received += 1;
            }
            received
        });
        for n in 0..5_000 {
            let sent = sender.send_wait(record(format!("channel-{n}"))).await;
            assert!(sent.is_ok());
        }
        drop(sender);
        let mut second = producer
            .send(record("second".into()))
            .unwrap_or_else(|e| panic!("{e}"));
        // Polled once, the second future takes its place while the first's outcome waits.
        let _ = tokio::time::timeout(Duration::ZERO, &mut second).await;
        let footprint = producer.handle.shared.completions.footprint();
        assert!(footprint <= 2, "{footprint} places for two futures");
        producer.flush_and_wait().await;
        assert!(first.unwrap_or_else(|e| panic!("{e}")).await.is_ok());
        assert!(second.await.is_ok());
        assert_eq!(reader.await.unwrap_or_default(), 5_000);
        assert_eq!(producer.handle.shared.completions.footprint(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn flush_calls_with_nothing_accepted_in_between_share_one_marker() {
        let producer = KinesisProducer::builder()
            .transport(UnansweredTransport)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let stream = Stream::new("s").unwrap_or_else(|e| panic!("{e}"));
        let _pending = producer.send(Record::new(stream, "k", vec![1]));
        // A health check that gives up on each flush: one marker, not one per call, and the
        // callers that left are not kept either.
        for _ in 0..10 {
            let gave_up = tokio::time::timeout(Duration::ZERO, producer.flush_and_wait()).await;
            assert!(gave_up.is_err());
        }
        let state = producer.handle.shared.lock();
        assert_eq!(state.flushes.len(), 1);
        assert!(state.flushes.values().all(|waiting| waiting.len() <= 1));
    }

    #[tokio::test(start_paused = true)]
    async fn flush_calls_given_up_on_while_records_keep_coming_leave_no_markers_behind() {
        let producer = KinesisProducer::builder()
            .transport(UnansweredTransport)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let stream = Stream::new("s").unwrap_or_else(|e| panic!("{e}"));
        let mut pending = Vec::new();
        for n in 0..100u8 {
            pending.push(producer.send(Record::new(stream.clone(), "k", vec![n])));
            let gave_up = tokio::time::timeout(Duration::ZERO, producer.flush_and_wait()).await;
            assert!(gave_up.is_err());
        }
        let state = producer.handle.shared.lock();
        assert_eq!(state.flushes.len(), 1, "only the latest call's marker");
        assert_eq!(state.engine.pending_flush_markers(), 1);
    }
}
