//! The parts of the engine that every stream shares: the configuration, the random source,
//! the wake-ups, the requests and the outcomes. A stream's transitions borrow them for the
//! length of one input, as [`super::stream::StreamState`]'s methods' `cx`.

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::error_texts::ErrorTexts;
use super::outcomes::Outcomes;
use super::pending::{Packing, Pending};
use super::requests::Requests;
use super::timers::Timers;
use crate::config::{EngineConfig, OrderingMode};
use crate::memory::record_charge;
use crate::outcome::AttemptError;

#[derive(Debug)]
pub(super) struct Shared<T = ()> {
    pub(super) config: EngineConfig,
    pub(super) rng: SmallRng,
    pub(super) timers: Timers,
    pub(super) requests: Requests<T>,
    pub(super) outcomes: Outcomes<T>,
    /// The distinct error texts records' histories hold.
    pub(super) error_texts: ErrorTexts,
}

impl<T> Shared<T> {
    /// The shared parts of an engine with `config` (checked by the caller).
    pub(super) fn new(config: EngineConfig) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(config.rng_seed),
            config,
            timers: Timers::default(),
            requests: Requests::default(),
            outcomes: Outcomes::default(),
            error_texts: ErrorTexts::default(),
        }
    }

    /// What one record of `size` bytes (key and data) is charged when accepted.
    pub(super) fn record_charge(&self, size: usize) -> usize {
        record_charge(size, self.config.record_overhead_bytes)
    }

    /// Whether records keep their order per shard (one request in flight per shard).
    pub(super) fn ordered(&self) -> bool {
        self.config.ordering == OrderingMode::PerShard
    }

    /// How many records an aggregate packed as `packing` holds at most.
    pub(super) fn aggregate_max_count(&self, packing: Packing) -> u64 {
        if self.config.aggregation_enabled && packing == Packing::Aggregated {
            self.config.aggregation_max_count
        } else {
            1
        }
    }

    /// Adds a failed attempt to `pending`'s history, charging the history when it begins.
    /// Returns what [`Pending::add_failed_attempt`] does.
    pub(super) fn add_failed_attempt(
        &mut self,
        pending: &mut Pending<T>,
        sent_at: Instant,
        now: Instant,
        error: &Arc<AttemptError>,
    ) -> (Option<Duration>, Duration) {
        let waits = pending.add_failed_attempt(sent_at, now, error);
        if waits.0.is_some() {
            self.outcomes.charge_history();
        }
        waits
    }
}
