//! The engine's wake-ups: each stream and each shard has at most one armed, and the earliest
//! armed one is what the driver is told to wake for.

use std::collections::BTreeSet;
use std::time::Instant;

/// Whose wake-up it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    /// A stream: its map wait, collector deadline, map reads and held landings.
    Stream(usize),
    /// A shard of a stream: its aggregate deadline, rate limit, backoff and expirations.
    Shard(usize, usize),
}

/// Wake-ups in time order. The owner keeps its armed time (`armed`), so a wake-up whose time
/// no longer matches its owner's was superseded or disarmed and is skipped.
#[derive(Debug, Default)]
pub(super) struct Timers {
    queue: BTreeSet<(Instant, Timer)>,
}

impl Timers {
    /// Arms `timer` at `at` unless its owner is already woken earlier.
    pub(super) fn arm(&mut self, armed: &mut Option<Instant>, at: Instant, timer: Timer) {
        if armed.is_none_or(|current| at < current) {
            // The superseded wake-up goes now: left in the set, a far one (an expiry) would stay
            // until its time, one per re-arming.
            if let Some(superseded) = armed.replace(at) {
                self.queue.remove(&(superseded, timer));
            }
            self.queue.insert((at, timer));
        }
    }

    /// Removes the owner's wake-up, if it has one.
    pub(super) fn disarm(&mut self, armed: &mut Option<Instant>, timer: Timer) {
        if let Some(at) = armed.take() {
            self.queue.remove(&(at, timer));
        }
    }

    /// The earliest wake-up due at or before `now`, taken out.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Instant, Timer)> {
        let &(at, timer) = self.queue.first()?;
        if at > now {
            return None;
        }
        self.queue.pop_first();
        Some((at, timer))
    }

    /// The earliest wake-up its owner still has armed (`armed_at` answers for the owner);
    /// stale ones in front are dropped, so the driver does not wake for nothing.
    pub(super) fn next(&mut self, armed_at: impl Fn(Timer) -> Option<Instant>) -> Option<Instant> {
        while let Some(&(at, timer)) = self.queue.first() {
            if armed_at(timer) == Some(at) {
                return Some(at);
            }
            self.queue.pop_first();
        }
        None
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use crate::time::{Clock, SystemClock};
    use std::time::Duration;

    use super::*;

    #[test]
    fn arming_an_earlier_wake_up_removes_the_superseded_one() {
        let now = SystemClock.now();
        let mut timers = Timers::default();
        let mut armed = None;
        let timer = Timer::Shard(0, 3);
        timers.arm(&mut armed, now + Duration::from_secs(3_600), timer);
        for ms in (1..=100).rev() {
            timers.arm(&mut armed, now + Duration::from_millis(ms), timer);
        }
        // A later time does not replace an earlier one.
        timers.arm(&mut armed, now + Duration::from_secs(5), timer);
        assert_eq!(timers.len(), 1);
        assert_eq!(armed, Some(now + Duration::from_millis(1)));
        assert_eq!(timers.next(|_| armed), Some(now + Duration::from_millis(1)));
    }

    #[test]
    fn only_due_wake_ups_are_taken_in_time_order() {
        let now = SystemClock.now();
        let mut timers = Timers::default();
        let (mut stream, mut shard) = (None, None);
        timers.arm(
            &mut shard,
            now + Duration::from_millis(20),
            Timer::Shard(0, 0),
        );
        timers.arm(
            &mut stream,
            now + Duration::from_millis(10),
            Timer::Stream(0),
        );
        assert_eq!(timers.pop_due(now + Duration::from_millis(5)), None);
        assert_eq!(
            timers.pop_due(now + Duration::from_millis(30)),
            Some((now + Duration::from_millis(10), Timer::Stream(0)))
        );
        assert_eq!(
            timers.pop_due(now + Duration::from_millis(30)),
            Some((now + Duration::from_millis(20), Timer::Shard(0, 0)))
        );
        assert_eq!(timers.pop_due(now + Duration::from_millis(30)), None);
    }

    #[test]
    fn a_disarmed_or_stale_wake_up_is_not_reported() {
        let now = SystemClock.now();
        let mut timers = Timers::default();
        let (mut a, mut b) = (None, None);
        timers.arm(&mut a, now + Duration::from_millis(1), Timer::Stream(0));
        timers.arm(&mut b, now + Duration::from_millis(2), Timer::Stream(1));
        timers.disarm(&mut a, Timer::Stream(0));
        assert_eq!(a, None);
        // The owner forgot its wake-up without disarming it (as servicing does before re-arming).
        b = None;
        assert_eq!(
            timers.next(|timer| match timer {
                Timer::Stream(0) => a,
                _ => b,
            }),
            None
        );
        assert_eq!(timers.len(), 0);
    }
}
