//! Exponential backoff with full jitter, from the engine's seeded generator.

use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;

/// Consecutive-failure backoff: the n-th delay is uniform in `0..=min(cap, base × 2^n)`.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            failures: 0,
        }
    }

    /// Doublings of the base past which the ceiling is the cap anyway (and `1 << n` stays small).
    const MAX_DOUBLINGS: u32 = 20;

    /// The delay before the next try, and one more failure counted.
    pub(crate) fn next_delay(&mut self, rng: &mut SmallRng) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.failures.min(Self::MAX_DOUBLINGS))
            .min(self.cap);
        self.failures = self.failures.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=nanos))
    }

    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The shard-map refresh backoff of the KPL: 1 s, then × 1.5 per failure, up to 30 s.
#[derive(Clone, Debug)]
pub(crate) struct RefreshBackoff {
    next: Duration,
}

impl RefreshBackoff {
    const FIRST: Duration = Duration::from_secs(1);
    const CAP: Duration = Duration::from_secs(30);
    const GROWTH: f64 = 1.5;

    pub(crate) fn new() -> Self {
        Self { next: Self::FIRST }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.mul_f64(Self::GROWTH).min(Self::CAP);
        delay
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// Whether the last read failed (a retry is then scheduled on this backoff).
    pub(crate) fn is_failing(&self) -> bool {
        self.next > Self::FIRST
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn delays_stay_under_a_doubling_ceiling_and_the_cap() {
        let mut rng = SmallRng::seed_from_u64(7);
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(2);
        let mut backoff = Backoff::new(base, cap);
        let mut seen_nonzero = false;
        for n in 0..30u32 {
            let delay = backoff.next_delay(&mut rng);
            let ceiling = base.saturating_mul(1 << n.min(20)).min(cap);
            assert!(delay <= ceiling, "attempt {n}: {delay:?} > {ceiling:?}");
            seen_nonzero |= delay > Duration::ZERO;
        }
        assert!(seen_nonzero);
        backoff.reset();
        assert!(backoff.next_delay(&mut rng) <= base);
    }

    #[test]
    fn same_seed_same_delays() {
        let run = || {
            let mut rng = SmallRng::seed_from_u64(42);
            let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
            (0..10)
                .map(|_| backoff.next_delay(&mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn refresh_backoff_follows_the_kpl_schedule() {
        let mut backoff = RefreshBackoff::new();
        let delays: Vec<u64> = (0..12)
            .map(|_| backoff.next_delay().as_millis() as u64)
            .collect();
        assert_eq!(&delays[..4], &[1_000, 1_500, 2_250, 3_375]);
        assert_eq!(*delays.last().unwrap(), 30_000);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_secs(1));
    }
}
