//! Per-shard rate limiting: two token buckets (records and bytes) whose rate an AIMD controller
//! scales down when the shard throttles and lets recover while it does not.

use std::time::{Duration, Instant};

/// The service's write limit per shard.
pub(crate) const SHARD_RECORDS_PER_SEC: f64 = 1_000.0;
/// The service's write limit per shard, in bytes per second.
pub(crate) const SHARD_BYTES_PER_SEC: f64 = 1_048_576.0;
/// The byte bucket holds 10 MiB so that a record of the largest allowed size can pass (KPL 1.0.6).
const BYTES_CAPACITY: f64 = 10.0 * 1_048_576.0;

/// The lowest fraction of the configured rate AIMD may cut to.
const AIMD_FLOOR: f64 = 0.05;
/// The factor applied on a throttling response.
const AIMD_DECREASE: f64 = 0.5;
/// How much of the configured rate comes back per second without throttling.
const AIMD_RECOVERY_PER_SEC: f64 = 0.1;

#[derive(Clone, Debug)]
struct Bucket {
    capacity: f64,
    tokens: f64,
}

impl Bucket {
    fn full(capacity: f64) -> Self {
        Self {
            capacity,
            tokens: capacity,
        }
    }

    fn refill(&mut self, amount: f64) {
        self.tokens = (self.tokens + amount).min(self.capacity);
    }

    /// A cost above the capacity is allowed once the bucket is full, leaving it in debt, so that
    /// an oversized record is delayed rather than stuck.
    fn can_take(&self, cost: f64) -> bool {
        self.tokens >= cost.min(self.capacity)
    }

    fn missing(&self, cost: f64) -> f64 {
        (cost.min(self.capacity) - self.tokens).max(0.0)
    }
}

/// The limiter of one shard.
#[derive(Clone, Debug)]
pub(crate) struct ShardLimiter {
    records_per_sec: f64,
    bytes_per_sec: f64,
    records: Bucket,
    bytes: Bucket,
    /// The AIMD multiplier on both rates, in `AIMD_FLOOR..=1`.
    factor: f64,
    last_decrease: Option<Instant>,
    updated: Instant,
}

impl ShardLimiter {
    /// A full limiter at `rate_limit_percent` of the shard's limits.
    pub(crate) fn new(rate_limit_percent: u64, now: Instant) -> Self {
        let scale = rate_limit_percent as f64 / 100.0;
        let records_per_sec = SHARD_RECORDS_PER_SEC * scale;
        Self {
            records_per_sec,
            bytes_per_sec: SHARD_BYTES_PER_SEC * scale,
            records: Bucket::full(records_per_sec.max(1.0)),
            bytes: Bucket::full(BYTES_CAPACITY),
            factor: 1.0,
            last_decrease: None,
            updated: now,
        }
    }

    fn advance(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        if elapsed <= 0.0 {
            return;
        }
        self.updated = now;
        self.records
            .refill(elapsed * self.records_per_sec * self.factor);
        self.bytes
            .refill(elapsed * self.bytes_per_sec * self.factor);
        self.factor = (self.factor + elapsed * AIMD_RECOVERY_PER_SEC).min(1.0);
    }

    /// Takes one record token and `bytes` byte tokens if both are there; otherwise returns when
    /// they will be.
    pub(crate) fn try_take(&mut self, bytes: usize, now: Instant) -> Result<(), Instant> {
        self.advance(now);
        let bytes = bytes as f64;
        if self.records.can_take(1.0) && self.bytes.can_take(bytes) {
            self.records.tokens -= 1.0;
            self.bytes.tokens -= bytes;
            return Ok(());
        }
        let wait_records = self.records.missing(1.0) / (self.records_per_sec * self.factor);
        let wait_bytes = self.bytes.missing(bytes) / (self.bytes_per_sec * self.factor);
        let wait = wait_records.max(wait_bytes);
        // Round up to a whole millisecond so a wake-up never comes a hair too early.
        let wait =
            Duration::from_millis((wait * 1_000.0).ceil() as u64).max(Duration::from_millis(1));
        Err(now + wait)
    }

    /// A throttling answer to a request sent at `sent_at`. Cuts the rate at most once per round
    /// trip: answers to requests sent before the last cut say nothing new.
    pub(crate) fn on_throttled(&mut self, sent_at: Instant, now: Instant) {
        self.advance(now);
        if self.last_decrease.is_some_and(|cut| sent_at < cut) {
            return;
        }
        self.factor = (self.factor * AIMD_DECREASE).max(AIMD_FLOOR);
        self.last_decrease = Some(now);
        // Tokens saved up at the old rate would let the next burst through at that rate anyway.
        self.records.tokens = self.records.tokens.min(self.records.capacity * self.factor);
        self.bytes.tokens = self.bytes.tokens.min(self.bytes.capacity * self.factor);
    }

    /// The current AIMD multiplier (1 = the configured rate).
    pub(crate) fn rate_factor(&self) -> f64 {
        self.factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{Clock, SystemClock};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bucket_starts_full_then_paces_at_the_configured_rate() {
        let start = SystemClock.now();
        let mut limiter = ShardLimiter::new(100, start);
        for _ in 0..1_000 {
            limiter.try_take(10, start).unwrap();
        }
        let ready_at = limiter.try_take(10, start).unwrap_err();
        assert_eq!(ready_at, start + ms(1));
        // 100 ms later there are 100 record tokens.
        let later = start + ms(100);
        for _ in 0..100 {
            limiter.try_take(10, later).unwrap();
        }
        assert!(limiter.try_take(10, later).is_err());
    }

    #[test]
    fn bytes_limit_and_oversized_records_wait_for_a_full_bucket() {
        let start = SystemClock.now();
        let mut limiter = ShardLimiter::new(100, start);
        limiter.try_take(10 * 1_048_576, start).unwrap();
        let ready_at = limiter.try_take(1_048_576, start).unwrap_err();
        assert_eq!(ready_at, start + ms(1_000));
        limiter.try_take(1_048_576, ready_at).unwrap();
        // A 12 MiB record needs a full (10 MiB) bucket, which takes 10 s from empty.
        let ready_at = limiter.try_take(12 * 1_048_576, ready_at).unwrap_err();
        assert_eq!(ready_at, start + ms(11_000));
    }

    #[test]
    fn throttling_halves_the_rate_once_per_round_trip_and_recovers_additively() {
        let start = SystemClock.now();
        let mut limiter = ShardLimiter::new(100, start);
        limiter.on_throttled(start, start + ms(10));
        assert_eq!(limiter.rate_factor(), 0.5);
        // Sent before the cut: no second cut.
        limiter.on_throttled(start + ms(5), start + ms(12));
        assert!((limiter.rate_factor() - 0.5).abs() < 0.01);
        // Sent after the cut: cut again.
        limiter.on_throttled(start + ms(20), start + ms(30));
        assert!((limiter.rate_factor() - 0.25).abs() < 0.01);
        // Recovery: +0.1 per second, capped at 1.
        limiter.try_take(0, start + ms(2_030)).unwrap();
        assert!((limiter.rate_factor() - 0.45).abs() < 0.01);
        limiter.try_take(0, start + ms(60_000)).unwrap();
        assert_eq!(limiter.rate_factor(), 1.0);
        for _ in 0..100 {
            limiter.on_throttled(start + ms(70_000), start + ms(70_000));
        }
        assert!(limiter.rate_factor() >= AIMD_FLOOR);
    }
}
