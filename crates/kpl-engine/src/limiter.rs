//! Per-shard rate limiting: two token buckets (records and bytes) whose rate an AIMD controller
//! scales down when the shard throttles and lets recover while it does not.
//!
//! The service may count a shard's writes in token buckets or in fixed one-second windows (it
//! documents the limits, 1,000 records and 1 MiB per second, not the mechanism); the limiter is
//! built to reach the limits under either without a storm of throttled entries:
//! - the buckets hold a tenth of a second, so an idle spell does not end in a burst that one
//!   window cannot take;
//! - the controller starts at the shard's limit (a `RateLimit` above 100 is room to probe, not a
//!   rate to start at);
//! - a throttle cuts the rate at most once a second (the service's accounting period: answers
//!   within a second of a cut still reflect the old rate), to nine tenths of the lower of the
//!   current rate and the rate the shard accepted over the last second (but not below half the
//!   current rate), so that producers sharing a shard find their shares in a few cuts;
//! - without throttling, the rate comes back by a twentieth of the configured rate per second
//!   of sending at it (not while the shard idles).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The service's write limit per shard.
pub(crate) const SHARD_RECORDS_PER_SEC: f64 = 1_000.0;
/// The service's write limit per shard, in bytes per second.
pub(crate) const SHARD_BYTES_PER_SEC: f64 = 1_048_576.0;
/// How many seconds of the configured rate the buckets hold. Small, because the service may
/// count a shard's writes in fixed one-second windows: a bucket holding `b` seconds lets
/// `1 + b` seconds' worth into one window after an idle spell.
///
/// A record larger than that waits until the service could take it: after as long without
/// writes as the service needs to refill that much at the shard's real limit, up to a second (a
/// full service bucket, or a new window); then nothing else goes until the service has absorbed
/// it at that limit (or at the configured rate, if lower).
const BURST_SECONDS: f64 = 0.1;

/// The lowest fraction of the shard's limit (or of the configured rate, if lower) AIMD may cut
/// to.
const AIMD_FLOOR: f64 = 0.05;
/// The factor applied on a throttling response.
const AIMD_DECREASE: f64 = 0.9;
/// How much of the configured rate comes back per second without throttling, above the rate
/// the shard last throttled at (probing for more).
const AIMD_RECOVERY_PER_SEC: f64 = 0.015;
/// The same, below nineteen twentieths of that rate (coming back to what the shard took).
const AIMD_RETURN_PER_SEC: f64 = 0.25;
/// The fast return stops this far below the rate where the last throttle came (the knee).
const KNEE_MARGIN: f64 = 0.95;
/// A cut starts from what the shard took lately, but from no less than this share of the
/// current rate (then `AIMD_DECREASE` applies).
const CUT_AT_MOST_TO: f64 = 0.5;
/// The shortest time between two cuts: the service's accounting period.
const CUT_INTERVAL: Duration = Duration::from_secs(1);
/// How far back the accepted rate is measured, and in steps of how long.
const ACCEPTED_SPAN: Duration = Duration::from_secs(1);
const ACCEPTED_STEP: Duration = Duration::from_millis(100);

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
}

/// Bytes and records the shard accepted, in steps of `ACCEPTED_STEP` over the last
/// `ACCEPTED_SPAN`.
#[derive(Clone, Debug)]
struct Accepted {
    /// Oldest first; the last step is the current one, which began at `current`.
    steps: VecDeque<(f64, f64)>,
    current: Instant,
    /// When the first write was accepted: a young shard's rate is over the time it has had.
    first: Option<Instant>,
}

impl Accepted {
    fn new(now: Instant) -> Self {
        Self {
            steps: VecDeque::from([(0.0, 0.0)]),
            current: now,
            first: None,
        }
    }

    fn advance(&mut self, now: Instant) {
        if now.saturating_duration_since(self.current) >= ACCEPTED_SPAN {
            // Idle for longer than the span: nothing in it counts any more.
            self.steps.clear();
            self.steps.push_back((0.0, 0.0));
            self.current = now;
            return;
        }
        while now >= self.current + ACCEPTED_STEP {
            self.current += ACCEPTED_STEP;
            self.steps.push_back((0.0, 0.0));
        }
        let span = (ACCEPTED_SPAN.as_nanos() / ACCEPTED_STEP.as_nanos()) as usize;
        while self.steps.len() > span {
            self.steps.pop_front();
        }
    }

    fn add(&mut self, bytes: f64, now: Instant) {
        self.advance(now);
        self.first.get_or_insert(now);
        if let Some(step) = self.steps.back_mut() {
            step.0 += bytes;
            step.1 += 1.0;
        }
    }

    /// Bytes and records per second accepted over the last span (or since the first write).
    fn rate(&mut self, now: Instant) -> Option<(f64, f64)> {
        self.advance(now);
        let first = self.first?;
        // The steps cover the current one so far and the whole ones before it.
        let covered = ACCEPTED_STEP * (self.steps.len().saturating_sub(1) as u32)
            + now.saturating_duration_since(self.current);
        let over = now
            .saturating_duration_since(first)
            .min(covered)
            .max(ACCEPTED_STEP)
            .as_secs_f64();
        let (bytes, records) = self
            .steps
            .iter()
            .fold((0.0, 0.0), |(b, r), &(sb, sr)| (b + sb, r + sr));
        Some((bytes / over, records / over))
    }
}

/// The limiter of one shard.
#[derive(Clone, Debug)]
pub(crate) struct ShardLimiter {
    records_per_sec: f64,
    bytes_per_sec: f64,
    records: Bucket,
    bytes: Bucket,
    /// The AIMD multiplier on both rates, in `floor..=1`.
    factor: f64,
    /// The lowest factor: `AIMD_FLOOR` of the shard's limit, or of the configured rate if lower.
    floor: f64,
    last_decrease: Option<Instant>,
    /// The factor the shard last throttled at: the rate comes back fast to just below it, and
    /// slowly beyond.
    knee: Option<f64>,
    updated: Instant,
    accepted: Accepted,
    /// When a record was last let through.
    last_take: Option<Instant>,
    /// After a record larger than the bucket: nothing goes before this.
    repaid_at: Option<Instant>,
    /// The last record asked for had to wait for tokens: the rate is what holds records back,
    /// so it may come back meanwhile.
    held_back: bool,
}

impl ShardLimiter {
    /// A full limiter at `rate_limit_percent` of the shard's limits, starting at no more than
    /// the limits themselves.
    pub(crate) fn new(rate_limit_percent: u64, now: Instant) -> Self {
        let scale = rate_limit_percent as f64 / 100.0;
        let records_per_sec = SHARD_RECORDS_PER_SEC * scale;
        let bytes_per_sec = SHARD_BYTES_PER_SEC * scale;
        Self {
            records_per_sec,
            bytes_per_sec,
            records: Bucket::full((records_per_sec * BURST_SECONDS).max(1.0)),
            bytes: Bucket::full(bytes_per_sec * BURST_SECONDS),
            factor: (1.0 / scale).min(1.0),
            floor: AIMD_FLOOR * (1.0 / scale).min(1.0),
            last_decrease: None,
            knee: None,
            updated: now,
            accepted: Accepted::new(now),
            last_take: None,
            repaid_at: None,
            held_back: false,
        }
    }

    /// Bytes per second at the current factor.
    fn byte_rate(&self) -> f64 {
        self.bytes_per_sec * self.factor
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
        // The rate comes back only while it is what holds records back: not while the shard
        // idles or waits for a large record to be absorbed.
        if self.held_back {
            let below = self.knee.map_or(0.0, |knee| knee * KNEE_MARGIN);
            let fast = ((below - self.factor) / AIMD_RETURN_PER_SEC).clamp(0.0, elapsed);
            self.factor += fast * AIMD_RETURN_PER_SEC + (elapsed - fast) * AIMD_RECOVERY_PER_SEC;
            self.factor = self.factor.min(1.0);
        }
    }

    /// Takes one record token and `bytes` byte tokens if both are there; otherwise returns when
    /// they will be.
    pub(crate) fn try_take(&mut self, bytes: usize, now: Instant) -> Result<(), Instant> {
        self.advance(now);
        self.held_back = false;
        if let Some(at) = self.repaid_at {
            if now < at {
                return Err(at);
            }
            self.repaid_at = None;
        }
        let cost = bytes as f64;
        let ready_at = if cost > self.bytes.capacity {
            // Larger than the bucket: the service takes it only after as long without writes
            // as it takes to refill that much (up to a second: a full bucket, or a new window).
            let quiet =
                Duration::from_secs_f64(cost.min(SHARD_BYTES_PER_SEC) / SHARD_BYTES_PER_SEC);
            let quiet_since = self.last_take.map_or(now, |at| at + quiet);
            let bucket_full = (self.bytes.capacity - self.bytes.tokens).max(0.0) / self.byte_rate();
            quiet_since.max(now + Duration::from_secs_f64(bucket_full))
        } else {
            let missing = (cost - self.bytes.tokens).max(0.0) / self.byte_rate();
            now + Duration::from_secs_f64(missing)
        };
        let records_at = now
            + Duration::from_secs_f64(
                (1.0 - self.records.tokens).max(0.0) / (self.records_per_sec * self.factor),
            );
        let ready_at = ready_at.max(records_at);
        if ready_at <= now {
            self.records.tokens -= 1.0;
            self.last_take = Some(now);
            if cost > self.bytes.capacity {
                // Nothing more until the service has absorbed it at its real rate.
                self.bytes.tokens = 0.0;
                let rate = self.bytes_per_sec.min(SHARD_BYTES_PER_SEC);
                self.repaid_at = Some(now + Duration::from_secs_f64(cost / rate));
            } else {
                self.bytes.tokens -= cost;
            }
            return Ok(());
        }
        // A large record waiting for its quiet second is held back by the service, not the rate.
        self.held_back = cost <= self.bytes.capacity;
        // Round up to a whole millisecond so a wake-up never comes a hair too early.
        let wait = ready_at.saturating_duration_since(now);
        let wait = Duration::from_millis(wait.as_micros().div_ceil(1_000) as u64)
            .max(Duration::from_millis(1));
        Err(now + wait)
    }

    /// The shard accepted a Kinesis record of `bytes`.
    pub(crate) fn on_written(&mut self, bytes: usize, now: Instant) {
        self.accepted.add(bytes as f64, now);
    }

    /// A throttling answer to a request sent at `sent_at`. Cuts the rate at most once per
    /// `CUT_INTERVAL`, and never for a request sent before the last cut.
    pub(crate) fn on_throttled(&mut self, sent_at: Instant, now: Instant) {
        self.advance(now);
        if self
            .last_decrease
            .is_some_and(|cut| sent_at < cut || now < cut + CUT_INTERVAL)
        {
            return;
        }
        // Below the rate the shard took lately, if that was lower (the binding one of its two
        // limits is the one used closer to the configured rate), but not below half the current
        // rate: a producer that lost out in the last second would otherwise keep a small share.
        let mut factor = self.factor;
        if let Some((bytes, records)) = self.accepted.rate(now) {
            let taken = (bytes / self.bytes_per_sec).max(records / self.records_per_sec);
            factor = factor.min(taken.max(factor * CUT_AT_MOST_TO));
        }
        self.knee = Some(factor);
        self.factor = (factor * AIMD_DECREASE).max(self.floor);
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

    const MIB: usize = 1_048_576;

    #[test]
    fn the_bucket_holds_a_tenth_of_a_second_then_paces_at_the_configured_rate() {
        let start = SystemClock.now();
        let mut limiter = ShardLimiter::new(100, start);
        for _ in 0..100 {
            limiter.try_take(10, start).unwrap();
        }
        let ready_at = limiter.try_take(10, start).unwrap_err();
        assert_eq!(ready_at, start + ms(1));
        // 100 ms later there are 100 record tokens again, and no more.
        let later = start + ms(100);
        for _ in 0..100 {
            limiter.try_take(10, later).unwrap();
        }
        assert!(limiter.try_take(10, later).is_err());
    }

    #[test]
    fn a_rate_limit_above_100_starts_at_the_shard_limit() {
        let start = SystemClock.now();
        let limiter = ShardLimiter::new(150, start);
        assert!((limiter.rate_factor() - 1.0 / 1.5).abs() < 1e-9);
        assert_eq!(ShardLimiter::new(60, start).rate_factor(), 1.0);
    }

    #[test]
    fn a_record_larger_than_the_bucket_waits_for_a_quiet_second_then_for_its_own_absorption() {
        let start = SystemClock.now();
        let mut limiter = ShardLimiter::new(100, start);
        limiter.try_take(50_000, start).unwrap();
        // A 5 MiB record needs a second without writes (a full service bucket, a new window).
        let ready_at = limiter.try_take(5 * MIB, start + ms(10)).unwrap_err();
        assert_eq!(ready_at, start + ms(1_000));
        limiter.try_take(5 * MIB, ready_at).unwrap();
        // Then nothing goes until the service has taken 5 MiB at 1 MiB/s.
        let next = limiter.try_take(10, ready_at + ms(1)).unwrap_err();
        assert_eq!(next, ready_at + ms(5_000));
        limiter.try_take(10, next).unwrap();
        // Half a MiB needs half a quiet second.
        let half = limiter.try_take(MIB / 2, next).unwrap_err();
        assert_eq!(half, next + ms(500));
    }

    #[test]
    fn throttling_cuts_once_a_second_to_below_what_the_shard_took_and_the_rate_comes_back() {
        let start = SystemClock.now();
        let mut limiter = ShardLimiter::new(100, start);
        // The shard took half its limit over the last second.
        for n in 0..10 {
            limiter.on_written(MIB / 20, start + ms(100 * n));
        }
        let now = start + ms(1_000);
        limiter.on_throttled(start + ms(980), now);
        assert!((limiter.rate_factor() - 0.5 * AIMD_DECREASE).abs() < 0.02);
        let cut = limiter.rate_factor();
        // Within a second of the cut, or for a call sent before it: no second cut.
        limiter.on_throttled(now + ms(1), now + ms(500));
        limiter.on_throttled(now + ms(400), now + ms(900));
        assert_eq!(limiter.rate_factor(), cut);
        // It comes back only while it is what holds records back: not while idle.
        limiter.try_take(0, now + ms(10_000)).unwrap();
        assert_eq!(limiter.rate_factor(), cut);
        // While sending at the limit: fast to just below the rate it throttled at, then slowly.
        let mut t = now + ms(10_000);
        for _ in 0..200 {
            while limiter.try_take(MIB / 100, t).is_ok() {}
            t += ms(10);
        }
        let knee = 0.5;
        assert!(
            limiter.rate_factor() > 0.95 * knee - 0.01,
            "{}",
            limiter.rate_factor()
        );
        assert!(
            limiter.rate_factor() < knee + 0.05,
            "{}",
            limiter.rate_factor()
        );
        // Never below the floor.
        for n in 0..100 {
            limiter.on_throttled(
                t + Duration::from_secs(2 * n),
                t + Duration::from_secs(2 * n + 1),
            );
        }
        assert!(limiter.rate_factor() >= AIMD_FLOOR);
        assert!(
            limiter.rate_factor() < AIMD_FLOOR + 0.01,
            "down to the floor"
        );
        // With a rate limit far above the shard's, the floor is still a share of the shard's.
        let mut lifted = ShardLimiter::new(1_000_000, start);
        for n in 0..100 {
            lifted.on_throttled(
                start + Duration::from_secs(2 * n),
                start + Duration::from_secs(2 * n + 1),
            );
        }
        assert!((lifted.rate_factor() * 10_000.0 - AIMD_FLOOR).abs() < 1e-9);
    }
}
