//! The producer's state under its lock: the engine, where each record's outcome goes, flush
//! waiters, the queue of `send_wait` callers; admission and the dispatch of the engine's events.

use std::collections::{BTreeMap, VecDeque};
use std::mem;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use kpl_engine::{Engine, Event, FailureReason, FlushId, PreparedRecord, RecordId};
use tokio::sync::{Notify, oneshot};

use super::ShutdownReport;
use super::driver::FailureLog;
use crate::clock::TokioClock;
use crate::completion::{CompletionTable, Waiter};
use crate::error::{DeliveryError, DeliveryErrorKind, SendError, SendErrorKind};
use crate::metrics::MetricsHub;

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// The same table as `State::completions`, for building futures without the lock.
    pub(super) completions: Arc<CompletionTable>,
    pub(super) driver_wake: Notify,
    pub(super) space: Notify,
    pub(super) clock: TokioClock,
    pub(super) max_connections: usize,
    pub(super) request_timeout: Duration,
    pub(super) user_record_timeout: Option<Duration>,
    pub(super) return_records: bool,
    /// The runtime the producer was built on: delivery futures' timers live on it, so `send`
    /// works from any thread.
    pub(super) runtime: tokio::runtime::Handle,
    /// The metrics taken from the engine (a lock of its own: reading them never waits on the
    /// engine's).
    pub(super) metrics: Mutex<MetricsHub>,
}

impl Shared {
    /// The lock is never held across an `.await`. A panic while holding it leaves the engine
    /// consistent (every engine method completes or does nothing), so poisoning is ignored.
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn metrics(&self) -> MutexGuard<'_, MetricsHub> {
        self.metrics.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(super) struct State {
    pub(super) engine: Engine<Waiter>,
    /// The outcomes of records sent for futures, until their futures read them.
    pub(super) completions: Arc<CompletionTable>,
    /// Who waits for each flush marker.
    pub(super) flushes: BTreeMap<FlushId, Vec<oneshot::Sender<()>>>,
    /// The newest flush marker, and how many records had been accepted when it was made: a
    /// `flush_and_wait` with nothing accepted since waits on it instead of making another.
    pub(super) newest_flush: Option<(FlushId, u64)>,
    pub(super) accepting: bool,
    pub(super) dropped: bool,
    pub(super) finished: bool,
    pub(super) in_flight: usize,
    /// While shutting down: the records the shutdown cut short, collected for the report.
    pub(super) shutdown_report: Option<ShutdownReport>,
    /// Failures to log once the lock is released: a `tracing` subscriber may use the producer,
    /// and the lock is not re-entrant.
    pub(super) failures_to_log: Vec<FailureLog>,
    /// The deadline the driver sleeps until (`None`: until woken).
    pub(super) driver_sleeps_until: Option<Instant>,
    /// `send_wait` callers waiting for buffer space, in arrival order: only the first may take
    /// space, and `send` refuses while any wait, so a large record is not starved by smaller
    /// ones that keep fitting in what frees up.
    pub(super) space_queue: VecDeque<u64>,
    pub(super) next_ticket: u64,
}

impl State {
    pub(super) fn new(engine: Engine<Waiter>) -> Self {
        Self {
            engine,
            completions: Arc::default(),
            flushes: BTreeMap::new(),
            newest_flush: None,
            accepting: true,
            dropped: false,
            finished: false,
            in_flight: 0,
            shutdown_report: None,
            failures_to_log: Vec::new(),
            driver_sleeps_until: None,
            space_queue: VecDeque::new(),
            next_ticket: 0,
        }
    }

    pub(super) fn forget_abandoned_flushes(&mut self) {
        let abandoned: Vec<FlushId> = self
            .flushes
            .iter_mut()
            .filter_map(|(&id, waiting)| {
                waiting.retain(|sender| !sender.is_closed());
                waiting.is_empty().then_some(id)
            })
            .collect();
        for id in abandoned {
            self.flushes.remove(&id);
            self.engine.forget_flush_marker(id);
        }
    }

    /// Admits a prepared record under the lock for a caller holding `ticket` in the queue of
    /// `send_wait` callers (`None`: not queued), its outcome going to `waiter`, which the engine
    /// keeps with the record. Returns its id and whether the caller left the queue, or the
    /// refusal and the waiter back.
    pub(super) fn admit(
        &mut self,
        prepared: PreparedRecord,
        ticket: Option<u64>,
        waiter: Waiter,
        now: Instant,
    ) -> Result<(RecordId, bool), (SendError, Waiter)> {
        if !self.accepting {
            let refusal = SendError::new(
                SendErrorKind::ShuttingDown,
                "the producer is shutting down",
                prepared.into_record(),
            );
            return Err((refusal, waiter));
        }
        if let Some(&first) = self.space_queue.front()
            && ticket != Some(first)
        {
            let waiting = self.space_queue.len();
            let refusal = SendError::new(
                SendErrorKind::BufferFull,
                format!("{waiting} send_wait call(s) are waiting for buffer space first"),
                prepared.into_record(),
            );
            return Err((refusal, waiter));
        }
        let id =
            self.engine
                .submit_prepared(prepared, waiter, now)
                .map_err(|(rejected, waiter)| {
                    let (reason, record) = rejected.into_parts();
                    (SendError::from_rejected(reason, record), waiter)
                })?;
        let dequeued = ticket.is_some() && self.space_queue.pop_front().is_some();
        Ok((id, dequeued))
    }

    /// Whether the driver has something to do now: a request it has a connection for, events,
    /// or a deadline earlier than the one it sleeps until. Waking it for every record would
    /// cost a driver round per record.
    pub(super) fn driver_has_work(&mut self, max_connections: usize) -> bool {
        let has_work = (self.engine.has_requests() && self.in_flight < max_connections)
            || self.engine.has_events();
        let earlier = match (self.engine.poll_timeout(), self.driver_sleeps_until) {
            (Some(due), Some(sleeping)) => due < sleeping,
            (Some(_), None) => true,
            (None, _) => false,
        };
        has_work || earlier
    }

    /// Hands every engine event to whoever waits for it. Returns whether records finished.
    pub(super) fn dispatch(&mut self, return_records: bool) -> bool {
        let mut finished = false;
        // Outcomes for futures, handed to the table of completions under one lock.
        let mut completed = Vec::new();
        while let Some(event) = self.engine.poll_event() {
            match event {
                Event::Delivered(delivery) => {
                    finished = true;
                    let (delivery, waiter) = delivery.take_token();
                    waiter.deliver(delivery.id(), Ok(delivery), &mut completed);
                }
                Event::Failed(failure) => {
                    finished = true;
                    let (failure, waiter) = failure.take_token();
                    let id = failure.id();
                    let reason = failure.reason();
                    if !matches!(
                        reason,
                        FailureReason::Abandoned | FailureReason::AbandonedInFlight
                    ) {
                        self.failures_to_log.push(FailureLog {
                            id,
                            reason,
                            last: failure.attempts().last().cloned(),
                        });
                    }
                    let (error, cut_short) =
                        DeliveryError::from_failure(failure, self.dropped, return_records);
                    // Records that failed for another reason keep it, and are not reported
                    // as cut short by the shutdown.
                    if let (Some(report), Some(record)) = (&mut self.shutdown_report, cut_short) {
                        match error.kind() {
                            DeliveryErrorKind::ShutDown => report.unsent.push(record),
                            DeliveryErrorKind::ShutDownInFlight => report.in_flight.push(record),
                            _ => {}
                        }
                    }
                    waiter.deliver(id, Err(error), &mut completed);
                }
                Event::Flushed(id) => {
                    // The outcomes a flush waits for are there before it is told.
                    self.completions.complete(mem::take(&mut completed));
                    for sender in self.flushes.remove(&id).unwrap_or_default() {
                        let _ = sender.send(());
                    }
                }
                _ => {}
            }
        }
        self.completions.complete(completed);
        finished
    }

    /// Cancels every record still waiting for its outcome: nothing can finish them any more.
    /// The engine gives up on each, and each caller hears its record was cancelled (a future's,
    /// and an outcome channel's alike), after any outcome that was already decided.
    pub(super) fn cancel_waiters(&mut self) {
        self.engine.abandon();
        let dropped = mem::replace(&mut self.dropped, true);
        self.dispatch(false);
        self.dropped = dropped;
    }
}

impl Drop for State {
    fn drop(&mut self) {
        self.cancel_waiters();
    }
}
