//! Drives an engine against the simulator in virtual time (quinn's `Pair`, for a producer).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kpl_engine::{
    Delivery, Engine, EngineConfig, Event, Failure, FlushId, InvalidConfig, Record, RecordId,
    Rejected, RequestId, Response, TransportError, TransportErrorKind,
};

use crate::service::SimKinesis;

/// The outcome of one record.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Written.
    Delivered(Delivery),
    /// Failed for good.
    Failed(Failure),
}

type Pending = (RequestId, Result<Response, TransportError>);

/// An engine and a simulated service, connected in virtual time: requests reach the service when
/// the engine hands them out, answers come back after `latency` (or after `request_timeout` for
/// timeouts), and time jumps straight to the next thing that happens.
#[derive(Debug)]
pub struct Pair {
    /// The engine under test.
    pub engine: Engine,
    /// The simulated service.
    pub sim: SimKinesis,
    /// The current virtual time.
    pub now: Instant,
    /// Round-trip time of a call.
    pub latency: Duration,
    /// When a timed-out call is reported.
    pub request_timeout: Duration,
    /// Most calls in flight at once (the KPL's `MaxConnections`).
    pub max_in_flight: usize,
    in_flight: BTreeMap<(Instant, u64), Pending>,
    next_call: u64,
    outcomes: BTreeMap<RecordId, Outcome>,
    submitted: BTreeMap<RecordId, Record>,
    repeated_outcomes: Vec<RecordId>,
    flushed: Vec<FlushId>,
    start: Instant,
    /// Print every call and answer to stderr (for debugging a failing seed).
    pub trace: bool,
}

impl Pair {
    /// An engine with `config` against `sim`, starting at `start`.
    pub fn new(
        config: EngineConfig,
        sim: SimKinesis,
        start: Instant,
    ) -> Result<Self, InvalidConfig> {
        Ok(Self {
            engine: Engine::new(config)?,
            sim,
            now: start,
            latency: Duration::from_millis(20),
            request_timeout: Duration::from_secs(6),
            max_in_flight: 24,
            in_flight: BTreeMap::new(),
            next_call: 0,
            outcomes: BTreeMap::new(),
            submitted: BTreeMap::new(),
            repeated_outcomes: Vec::new(),
            flushed: Vec::new(),
            start,
            trace: false,
        })
    }

    /// Submits a record now.
    pub fn submit(&mut self, record: Record) -> Result<RecordId, Rejected> {
        let kept = record.clone();
        let id = self.engine.submit(record, self.now)?;
        self.submitted.insert(id, kept);
        self.pump();
        Ok(id)
    }

    /// Asks for a flush marker now.
    pub fn flush_marker(&mut self) -> FlushId {
        let id = self.engine.flush_marker(self.now);
        self.pump();
        id
    }

    fn pump(&mut self) {
        while self.in_flight.len() < self.max_in_flight {
            let Some((id, request)) = self.engine.poll_request(self.now) else {
                break;
            };
            let summary = self.trace.then(|| describe(&request));
            let result = self.sim.handle(request, self.now);
            if let Some(summary) = summary {
                let answer = match &result {
                    Ok(Response::PutRecords(put)) => format!(
                        "{} written, {} failed",
                        put.entries
                            .iter()
                            .filter(|e| matches!(
                                e,
                                kpl_engine::transport::PutRecordsEntryResult::Written { .. }
                            ))
                            .count(),
                        put.entries
                            .iter()
                            .filter(|e| matches!(
                                e,
                                kpl_engine::transport::PutRecordsEntryResult::Failed { .. }
                            ))
                            .count()
                    ),
                    Ok(Response::ListShards(page)) => {
                        format!("{} shards, next {:?}", page.shards.len(), page.next_token)
                    }
                    Ok(other) => format!("{other:?}"),
                    Err(error) => error.to_string(),
                };
                eprintln!(
                    "{:>10.3?} {id:?} {summary} -> {answer}",
                    self.now - self.start
                );
            }
            let delay = match &result {
                Err(error) if error.kind() == TransportErrorKind::Timeout => self.request_timeout,
                _ => self.latency,
            };
            self.in_flight
                .insert((self.now + delay, self.next_call), (id, result));
            self.next_call += 1;
        }
        while let Some(event) = self.engine.poll_event() {
            match event {
                Event::Delivered(delivery) => {
                    self.record_outcome(delivery.id(), Outcome::Delivered(delivery))
                }
                Event::Failed(failure) => {
                    self.record_outcome(failure.id(), Outcome::Failed(*failure))
                }
                Event::Flushed(id) => self.flushed.push(id),
                _ => {}
            }
        }
    }

    fn record_outcome(&mut self, id: RecordId, outcome: Outcome) {
        if self.outcomes.insert(id, outcome).is_some() {
            self.repeated_outcomes.push(id);
        }
    }

    /// The time of the next thing that will happen, if anything will.
    pub fn next_time(&mut self) -> Option<Instant> {
        let answer = self.in_flight.keys().next().map(|&(at, _)| at);
        match (answer, self.engine.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves time to `at` (never backwards), delivering answers and timeouts due by then.
    pub fn advance_to(&mut self, at: Instant) {
        while let Some(next) = self.next_time() {
            if next > at {
                break;
            }
            self.now = self.now.max(next);
            self.step_now();
        }
        self.now = self.now.max(at);
        self.step_now();
    }

    fn step_now(&mut self) {
        while let Some(entry) = self.in_flight.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let (id, result) = entry.remove();
            self.engine.handle_response(id, result, self.now);
            self.pump();
        }
        self.engine.handle_timeout(self.now);
        self.pump();
    }

    /// Runs until nothing is outstanding and nothing is in flight (periodic shard-map refreshes
    /// aside), or an hour of virtual time has passed.
    pub fn run_until_idle(&mut self) {
        let limit = self.now + Duration::from_secs(3_600);
        while self.engine.outstanding_records() > 0
            || !self.in_flight.is_empty()
            || self.engine.has_requests()
        {
            let Some(next) = self.next_time() else {
                break;
            };
            if next > limit {
                break;
            }
            self.now = self.now.max(next);
            self.step_now();
        }
    }

    /// Every outcome so far, by record.
    pub fn outcomes(&self) -> &BTreeMap<RecordId, Outcome> {
        &self.outcomes
    }

    /// Records that received more than one outcome (must stay empty).
    pub fn repeated_outcomes(&self) -> &[RecordId] {
        &self.repeated_outcomes
    }

    /// Every record submitted, by id.
    pub fn submitted(&self) -> &BTreeMap<RecordId, Record> {
        &self.submitted
    }

    /// Flush markers completed so far, in order.
    pub fn flushed(&self) -> &[FlushId] {
        &self.flushed
    }

    /// The deliveries so far.
    pub fn delivered(&self) -> impl Iterator<Item = &Delivery> {
        self.outcomes.values().filter_map(|o| match o {
            Outcome::Delivered(d) => Some(d),
            Outcome::Failed(_) => None,
        })
    }

    /// The failures so far.
    pub fn failed(&self) -> impl Iterator<Item = &Failure> {
        self.outcomes.values().filter_map(|o| match o {
            Outcome::Failed(f) => Some(f),
            Outcome::Delivered(_) => None,
        })
    }
}

fn describe(request: &kpl_engine::Request) -> String {
    match request {
        kpl_engine::Request::PutRecords(put) => format!(
            "PutRecords {} entries ({:?} user records), {} bytes",
            put.entries.len(),
            put.entries
                .iter()
                .map(|e| kpl_aggregation::deaggregate(e).len())
                .collect::<Vec<_>>(),
            put.billed_size()
        ),
        kpl_engine::Request::ListShards(list) => format!("ListShards token {:?}", list.next_token),
        other => format!("{other:?}"),
    }
}
