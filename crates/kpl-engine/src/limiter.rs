//! Per-shard rate limiting: two token buckets (records and bytes) whose rate an AIMD controller
//! scales down when the shard throttles and lets recover while it does not.
//!
//! The service may count a shard's writes in token buckets or in fixed one-second windows (it
//! documents the limits, 1,000 records and 1 MiB per second, not the mechanism); the limiter is
//! built to reach the limits under either without a storm of throttled entries:
//! - the buckets hold a tenth of a second, so an idle spell does not end in a burst that one
//!   window cannot take, and start empty (the first record goes on credit), so the first
//!   second's writes are the rate's alone;
//! - the controller starts just under the shard's limit (97 %: a `RateLimit` above 100 is room
//!   to probe, not a rate to start at), where a window of whole aggregates still takes all;
//! - after a record larger than the bucket, nothing saved up during its absorption goes at once;
//! - a throttle cuts the rate at most once a second (the service's accounting period: answers
//!   within a second of a cut still reflect the old rate). The first, or one while the shard
//!   took well under the current rate (another producer writes to it), or one while the
//!   producer had less than most of the shard's limit, cuts to nine tenths of the lower of the
//!   current rate and the rate the shard took over the last second (but not below half the
//!   current rate), so that producers sharing a shard find fair shares in a few cuts; the rate
//!   comes back fast to just under where the throttle came (the knee), then by 1.5 % of the
//!   configured rate per second, and never while the shard idles;
//! - from the second throttle in a row while the producer had most of the shard to itself, the
//!   knee is the shard's own ceiling: each throttle near it sets the knee a hundredth under
//!   where the throttle came and the rate 2 % under that, and the rate probes past it by a
//!   thousandth of the configured rate per second (a throttle every several seconds per shard).
//!   Under fixed one-second windows the ceiling is a whole number of aggregates per window, a
//!   little under the limit, and a deep cut there would give a tenth away to avoid a hundredth.
//!   A knee 30 seconds without a throttle no longer slows probing (the ceiling may have risen);
//!   a throttle within 2 seconds of a large record's absorption says nothing of the ceiling.

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

/// The share of the shard's limit the rate starts at (when `RateLimit` allows it): a little
/// under the limit, where a shard that counts in fixed windows of whole aggregates still
/// takes everything, so that a start does not begin with a round of throttles.
const START_SHARE: f64 = 0.97;

/// The lowest fraction of the shard's limit (or of the configured rate, if lower) AIMD may cut
/// to.
const AIMD_FLOOR: f64 = 0.05;
/// The factor applied on a throttling response.
const AIMD_DECREASE: f64 = 0.9;
/// How much of the configured rate comes back per second without throttling, well above the
/// shard's ceiling (the knee) or without one.
const AIMD_RECOVERY_PER_SEC: f64 = 0.015;
/// The same, near the ceiling (below `NEAR_KNEE` times it): probing slowly past it.
const AIMD_PROBE_PER_SEC: f64 = 0.001;
/// How far above the ceiling probing stays slow.
const NEAR_KNEE: f64 = 1.05;
/// The same, below `KNEE_MARGIN` of the ceiling (coming back to what the shard took).
const AIMD_RETURN_PER_SEC: f64 = 0.25;
/// Where the fast return stops, and where a throttle at the ceiling sets the rate: this much
/// of the ceiling.
const KNEE_MARGIN: f64 = 0.98;
/// The least share of the shard's limit a producer takes when alone on it.
const ALONE_SHARE: f64 = 0.95;
/// How many throttles in a row while alone make the knee the shard's own ceiling.
const ALONE_AFTER: u8 = 2;
/// How much longer than its absorption at the shard's rate a record larger than the bucket
/// holds the shard.
const LARGE_RECORD_MARGIN: Duration = Duration::from_millis(100);
/// How long after a record larger than the bucket was repaid a throttle is put down to it.
const LARGE_RECORD_AFTERMATH: Duration = Duration::from_secs(2);
/// Where the fast return stops when the knee is a share of a shard others write to.
const SHARED_KNEE_MARGIN: f64 = 0.95;
/// A throttle within this fraction below the ceiling, or above it, is a throttle at it.
const AT_KNEE: f64 = 0.03;
/// What a throttle at the ceiling lowers it to.
const KNEE_STEP: f64 = 0.99;
/// A ceiling this long without a throttle no longer slows probing.
const KNEE_FORGOTTEN_AFTER: Duration = Duration::from_secs(30);
/// How far below the current rate the rate the shard took must be to say the shard is shared
/// (just below it, it is the phase of the last second at a shard that counts in windows).
const TAKEN_MATTERS: f64 = 0.8;
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
    fn empty(capacity: f64) -> Self {
        Self {
            capacity,
            tokens: 0.0,
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
    /// How many throttles in a row came while this producer had the shard to itself (see
    /// `ALONE_SHARE`). From `ALONE_AFTER` on, the knee is the shard's own ceiling, approached and held
    /// closely; otherwise it may be a share of a shard others write to, which producers keep
    /// finding, fairly, by deep cuts and the usual pace of recovery.
    alone_throttles: u8,
    /// Whether the knee was set by a throttle at it while alone: the shard's own ceiling,
    /// held closely (after a deep cut the knee may be a share, or a dip, and is left behind at
    /// the usual pace).
    knee_confirmed: bool,
    updated: Instant,
    accepted: Accepted,
    /// When a record was last let through.
    last_take: Option<Instant>,
    /// After a record larger than the bucket: nothing goes before this.
    repaid_at: Option<Instant>,
    /// When the last record larger than the bucket was repaid: throttles soon after say
    /// little about the shard's steady ceiling.
    large_until: Option<Instant>,
    /// Nothing was taken yet: the first record goes on credit.
    fresh: bool,
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
            // Empty: the first second's writes are the rate's alone, which a window that opens
            // with them can take.
            records: Bucket::empty((records_per_sec * BURST_SECONDS).max(1.0)),
            bytes: Bucket::empty(bytes_per_sec * BURST_SECONDS),
            factor: (START_SHARE / scale).min(1.0),
            floor: AIMD_FLOOR * (1.0 / scale).min(1.0),
            last_decrease: None,
            knee: None,
            alone_throttles: 0,
            knee_confirmed: false,
            updated: now,
            accepted: Accepted::new(now),
            last_take: None,
            repaid_at: None,
            large_until: None,
            fresh: true,
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
            if self
                .last_decrease
                .is_some_and(|cut| now.saturating_duration_since(cut) >= KNEE_FORGOTTEN_AFTER)
            {
                self.knee = None;
            }
            let (margin, near) = if self.knee_confirmed {
                (KNEE_MARGIN, NEAR_KNEE)
            } else {
                (SHARED_KNEE_MARGIN, 0.0)
            };
            let below = self.knee.map_or(0.0, |knee| knee * margin);
            let fast = ((below - self.factor) / AIMD_RETURN_PER_SEC).clamp(0.0, elapsed);
            let probe = if self.knee.is_some_and(|knee| self.factor < knee * near) {
                AIMD_PROBE_PER_SEC
            } else {
                AIMD_RECOVERY_PER_SEC
            };
            self.factor += fast * AIMD_RETURN_PER_SEC + (elapsed - fast) * probe;
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
            // Nothing was saved up while the service absorbed the large record: only what
            // came in since.
            let since = now.saturating_duration_since(at).as_secs_f64();
            self.bytes.tokens = self.bytes.tokens.min(since * self.byte_rate());
            self.records.tokens = self
                .records
                .tokens
                .min((since * self.records_per_sec * self.factor).max(1.0));
        }
        let cost = bytes as f64;
        if self.fresh && cost <= self.bytes.capacity {
            // The first record goes at once, on credit: the buckets start empty, and what it
            // took is paid back before the next goes.
            self.fresh = false;
            self.records.tokens -= 1.0;
            self.bytes.tokens -= cost;
            self.last_take = Some(now);
            return Ok(());
        }
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
                // Plus a margin: the service took it a call's latency after it left here, and
                // counts its absorption from then.
                let repaid_at = now + Duration::from_secs_f64(cost / rate) + LARGE_RECORD_MARGIN;
                self.repaid_at = Some(repaid_at);
                self.large_until = Some(repaid_at + LARGE_RECORD_AFTERMATH);
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
        let factor = self.factor;
        let mut cut_from = factor;
        let mut shared = false;
        if let Some((bytes, records)) = self.accepted.rate(now) {
            let taken = (bytes / self.bytes_per_sec).max(records / self.records_per_sec);
            cut_from = factor.min(taken.max(factor * CUT_AT_MOST_TO));
            shared = taken < factor * TAKEN_MATTERS;
        }
        // Alone on the shard: it took what it was sent at, and that is most of the shard's
        // limit (producers sharing a shard each take a part, and keep finding fair shares by
        // the usual deep cuts).
        let share_of_limit = factor * self.records_per_sec / SHARD_RECORDS_PER_SEC;
        let after_large = self.large_until.is_some_and(|until| now < until);
        let alone = !shared && !after_large && share_of_limit >= ALONE_SHARE;
        self.alone_throttles = if alone {
            self.alone_throttles.saturating_add(1)
        } else {
            0
        };
        let at_knee = self.alone_throttles >= ALONE_AFTER
            && self
                .knee
                .is_some_and(|knee| factor >= knee * (1.0 - AT_KNEE));
        if at_knee {
            // The ceiling is just under where the throttle came, whether that was above the
            // last knee (it rose) or below it (it fell).
            let knee = factor * KNEE_STEP;
            self.knee = Some(knee);
            self.knee_confirmed = true;
            self.factor = (knee * KNEE_MARGIN).max(self.floor);
        } else {
            self.knee_confirmed = false;
            self.knee = Some(cut_from);
            self.factor = (cut_from * AIMD_DECREASE).max(self.floor);
        }
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
    fn the_bucket_starts_empty_holds_a_tenth_of_a_second_and_paces_at_the_rate() {
        let start = SystemClock.now();
        let mut limiter = ShardLimiter::new(60, start);
        // Empty at first: the first record goes on credit, and the first second's writes are
        // the rate's alone.
        limiter.try_take(10, start).unwrap();
        let ready_at = limiter.try_take(10, start).unwrap_err();
        assert_eq!(ready_at, start + ms(4), "two records at 600 a second");
        // After an idle second: a tenth of a second's worth (60 records), and no more.
        let later = start + ms(1_000);
        for _ in 0..60 {
            limiter.try_take(10, later).unwrap();
        }
        assert!(limiter.try_take(10, later).is_err());
    }

    #[test]
    fn the_rate_starts_just_under_the_shard_limit_or_at_a_lower_rate_limit() {
        let start = SystemClock.now();
        let limiter = ShardLimiter::new(150, start);
        assert!((limiter.rate_factor() - START_SHARE / 1.5).abs() < 1e-9);
        assert!((ShardLimiter::new(100, start).rate_factor() - START_SHARE).abs() < 1e-9);
        assert_eq!(ShardLimiter::new(60, start).rate_factor(), 1.0);
    }

    /// Alone on a shard that counts in fixed windows, the ceiling is a little under the limit.
    /// The first throttle cuts deep; once throttles keep coming at the same rate, each sets the
    /// rate just under where it came, and the rate creeps up past it slowly.
    #[test]
    fn throttles_at_the_shard_s_own_ceiling_set_the_rate_just_under_it() {
        let start = SystemClock.now();
        let mut limiter = ShardLimiter::new(100, start);
        let ceiling = limiter.rate_factor();
        let mut t = start;
        let throttle_at_ceiling = |limiter: &mut ShardLimiter, t: &mut Instant| {
            // A second of writes at the current rate, then a throttle.
            for n in 0..10 {
                let share = limiter.rate_factor();
                let bytes = (share * SHARD_BYTES_PER_SEC / 10.0) as usize;
                limiter.on_written(bytes, *t + ms(100 * n));
            }
            *t += ms(1_000);
            limiter.factor = ceiling;
            limiter.on_throttled(*t - ms(20), *t);
            *t += ms(10);
        };
        throttle_at_ceiling(&mut limiter, &mut t);
        assert!((limiter.rate_factor() - ceiling * AIMD_DECREASE).abs() < 0.01);
        throttle_at_ceiling(&mut limiter, &mut t);
        throttle_at_ceiling(&mut limiter, &mut t);
        let held = limiter.rate_factor();
        assert!(
            (held - ceiling * KNEE_STEP * KNEE_MARGIN).abs() < 1e-9,
            "{held} against {ceiling}"
        );
        // Sending for ten seconds without a throttle: up by a thousandth a second.
        for _ in 0..1_000 {
            while limiter.try_take(MIB / 200, t).is_ok() {}
            t += ms(10);
        }
        let probed = limiter.rate_factor() - held;
        assert!(
            (probed - 10.0 * AIMD_PROBE_PER_SEC).abs() < 0.002,
            "{probed}"
        );
        // A throttle while the shard took half the rate: another producer writes to it, and
        // the cut is deep again.
        for n in 0..10 {
            limiter.on_written(MIB / 20, t + ms(100 * n));
        }
        t += ms(1_000);
        let before = limiter.rate_factor();
        limiter.on_throttled(t - ms(20), t);
        assert!(
            limiter.rate_factor() < 0.6 * before,
            "{}",
            limiter.rate_factor()
        );
    }

    #[test]
    fn a_record_larger_than_the_bucket_waits_for_a_quiet_second_then_for_its_own_absorption() {
        let start = SystemClock.now();
        let mut limiter = ShardLimiter::new(100, start);
        let first = start + ms(1_000);
        limiter.try_take(50_000, first).unwrap();
        // A 5 MiB record needs a second without writes (a full service bucket, a new window).
        let ready_at = limiter.try_take(5 * MIB, first + ms(10)).unwrap_err();
        assert_eq!(ready_at, first + ms(1_000));
        limiter.try_take(5 * MIB, ready_at).unwrap();
        // Then nothing goes until the service has taken 5 MiB at 1 MiB/s (and a call's
        // latency more).
        let next = limiter.try_take(10, ready_at + ms(1)).unwrap_err();
        assert_eq!(next, ready_at + ms(5_000) + LARGE_RECORD_MARGIN);
        // And nothing saved up meanwhile goes at once: the rate starts again from then.
        let after = limiter.try_take(10, next).unwrap_err();
        assert_eq!(after, next + ms(1));
        limiter.try_take(10, after).unwrap();
        // Half a MiB needs half a quiet second.
        let half = limiter.try_take(MIB / 2, after).unwrap_err();
        assert_eq!(half, after + ms(500));
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
