//! Outcomes and the bookkeeping that follows them: the event queue, the outstanding counts the
//! limits are checked against, the window of accepted records, and flush markers.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use crate::memory::HISTORY_BYTES;
use crate::outcome::{Event, FlushId, RejectReason};

/// The record window is compacted when it is longer than this and four times the outstanding
/// records: one record unfinished for long then costs an entry, not one per record accepted since.
pub(super) const WINDOW_COMPACTION: usize = 65_536;
/// How much longer than the outstanding records the window may grow before it is compacted.
const WINDOW_SLACK_FACTOR: usize = 4;

/// The limits on what may be outstanding at once.
#[derive(Clone, Copy, Debug)]
pub(super) struct OutstandingLimits {
    pub(super) records: usize,
    pub(super) bytes: usize,
}

#[derive(Debug)]
pub(super) struct Outcomes<T = ()> {
    events: VecDeque<Event<T>>,
    next_record: u64,
    /// Arrival times of records from `window_start` on; `None` once finished.
    window: VecDeque<Option<Instant>>,
    window_start: u64,
    /// Unfinished records from before `window_start`: when a few records stay unfinished for
    /// long, the window is compacted into here, so its size follows the outstanding records,
    /// not the records accepted since the oldest one.
    stragglers: BTreeMap<u64, Instant>,
    markers: VecDeque<(u64, FlushId)>,
    next_marker: u64,
    outstanding_records: usize,
    /// Memory charged for the outstanding records (see `crate::memory`).
    outstanding_bytes: usize,
    /// Outstanding records charged for a history of failed attempts.
    with_history: usize,
}

impl<T> Default for Outcomes<T> {
    fn default() -> Self {
        Self {
            events: VecDeque::new(),
            next_record: 0,
            window: VecDeque::new(),
            window_start: 0,
            stragglers: BTreeMap::new(),
            markers: VecDeque::new(),
            next_marker: 0,
            outstanding_records: 0,
            outstanding_bytes: 0,
            with_history: 0,
        }
    }
}

impl<T> Outcomes<T> {
    /// Whether one more record charged `charge` bytes fits within `limits`, counting the history
    /// of failed attempts that every record without one may still come to need: the limit
    /// bounds the most the records can take, while the charge follows what they take now. A
    /// record always fits when nothing is outstanding, so a record larger than the byte limit
    /// can still go.
    pub(super) fn check_room(
        &self,
        charge: usize,
        limits: OutstandingLimits,
    ) -> Result<(), RejectReason> {
        if self.outstanding_records >= limits.records {
            return Err(RejectReason::TooManyRecords {
                limit: limits.records,
            });
        }
        let at_most = self.outstanding_bytes_at_most();
        let charge = charge.saturating_add(HISTORY_BYTES);
        if self.outstanding_records > 0 && at_most.saturating_add(charge) > limits.bytes {
            return Err(RejectReason::TooManyBytes {
                outstanding: at_most,
                charge,
                limit: limits.bytes,
            });
        }
        Ok(())
    }

    /// Counts a record accepted at `now`; returns its id.
    pub(super) fn accept(&mut self, charge: usize, now: Instant) -> u64 {
        let id = self.next_record;
        self.next_record += 1;
        self.window.push_back(Some(now));
        if self.window.len() > WINDOW_COMPACTION.max(WINDOW_SLACK_FACTOR * self.outstanding_records)
        {
            self.compact_window();
        }
        self.outstanding_records += 1;
        self.outstanding_bytes += charge;
        id
    }

    /// Charges an outstanding record `bytes` more (it took more memory).
    pub(super) fn charge_history(&mut self) {
        self.outstanding_bytes += HISTORY_BYTES;
        self.with_history += 1;
    }

    /// Reports the outcome of record `id`, which was charged `charge` when accepted and its
    /// history if it had one, and counts it finished.
    pub(super) fn settle(&mut self, event: Event<T>, id: u64, charge: usize, history: bool) {
        // The outcome first: finishing may complete a flush marker, which comes after it.
        self.events.push_back(event);
        self.outstanding_records -= 1;
        self.outstanding_bytes -= charge;
        if history {
            self.outstanding_bytes -= HISTORY_BYTES;
            self.with_history -= 1;
        }
        if let Some(offset) = id.checked_sub(self.window_start) {
            if let Some(slot) = self.window.get_mut(offset as usize) {
                *slot = None;
            }
            // Only finishing the oldest record moves the window (and can complete a marker).
            if offset == 0 {
                self.retire_window();
            }
        } else {
            let oldest = self.stragglers.first_key_value().map(|(&first, _)| first);
            self.stragglers.remove(&id);
            if oldest == Some(id) {
                self.retire_window();
            }
        }
    }

    /// A marker that completes once every record accepted so far has its outcome.
    pub(super) fn add_marker(&mut self) -> FlushId {
        let id = FlushId(self.next_marker);
        self.next_marker += 1;
        self.markers.push_back((self.next_record, id));
        self.retire_window();
        id
    }

    pub(super) fn forget_marker(&mut self, id: FlushId) {
        self.markers.retain(|&(_, marker)| marker != id);
    }

    pub(super) fn pending_markers(&self) -> usize {
        self.markers.len()
    }

    pub(super) fn poll_event(&mut self) -> Option<Event<T>> {
        self.events.pop_front()
    }

    pub(super) fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    pub(super) fn records_accepted(&self) -> u64 {
        self.next_record
    }

    pub(super) fn outstanding_records(&self) -> usize {
        self.outstanding_records
    }

    /// The most the outstanding records can take: their charge now, and a history of failed
    /// attempts for each that has none yet.
    fn outstanding_bytes_at_most(&self) -> usize {
        let without_history = self.outstanding_records - self.with_history;
        self.outstanding_bytes
            .saturating_add(without_history.saturating_mul(HISTORY_BYTES))
    }

    pub(super) fn outstanding_bytes(&self) -> usize {
        self.outstanding_bytes
    }

    /// When the oldest unfinished record was accepted.
    pub(super) fn oldest_outstanding(&self) -> Option<Instant> {
        match self.stragglers.first_key_value() {
            Some((_, &arrival)) => Some(arrival),
            None => self.window.front().copied().flatten(),
        }
    }

    /// Entries kept to know the oldest unfinished record.
    #[cfg(test)]
    pub(super) fn window_entries(&self) -> usize {
        self.window.len() + self.stragglers.len()
    }

    /// Moves the window's unfinished records aside and empties it (see `stragglers`).
    fn compact_window(&mut self) {
        for (offset, arrival) in self.window.drain(..).enumerate() {
            if let Some(arrival) = arrival {
                self.stragglers
                    .insert(self.window_start + offset as u64, arrival);
            }
        }
        self.window_start = self.next_record;
    }

    fn retire_window(&mut self) {
        while let Some(None) = self.window.front() {
            self.window.pop_front();
            self.window_start += 1;
        }
        let first_unfinished = match self.stragglers.first_key_value() {
            Some((&id, _)) => id,
            None if self.window.is_empty() => self.next_record,
            None => self.window_start,
        };
        while let Some(&(bound, id)) = self.markers.front() {
            if bound > first_unfinished {
                break;
            }
            self.markers.pop_front();
            self.events.push_back(Event::Flushed(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::time::{Clock, SystemClock};
    use std::time::Duration;

    use super::*;

    const LIMITS: OutstandingLimits = OutstandingLimits {
        records: 3,
        bytes: 1_000,
    };

    fn flushed(outcomes: &mut Outcomes) -> Vec<FlushId> {
        std::iter::from_fn(|| outcomes.poll_event())
            .filter_map(|event| match event {
                Event::Flushed(id) => Some(id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_marker_completes_when_every_earlier_record_has_its_outcome() {
        let now = SystemClock.now();
        let mut outcomes: Outcomes = Outcomes::default();
        let a = outcomes.accept(10, now);
        let b = outcomes.accept(10, now);
        let marker = outcomes.add_marker();
        let c = outcomes.accept(10, now);
        outcomes.settle(Event::Flushed(FlushId(99)), b, 10, false);
        assert_eq!(flushed(&mut outcomes), [FlushId(99)], "a is not finished");
        outcomes.settle(Event::Flushed(FlushId(98)), a, 10, false);
        // The outcome comes before the marker it completes; c, accepted later, does not hold it.
        assert_eq!(flushed(&mut outcomes), [FlushId(98), marker]);
        assert_eq!(outcomes.outstanding_records(), 1);
        assert_eq!(outcomes.outstanding_bytes(), 10);
        outcomes.settle(Event::Flushed(FlushId(97)), c, 10, false);
        assert_eq!(outcomes.oldest_outstanding(), None);
    }

    #[test]
    fn a_marker_with_nothing_outstanding_completes_at_once_and_a_forgotten_one_never() {
        let now = SystemClock.now();
        let mut outcomes: Outcomes = Outcomes::default();
        let first = outcomes.add_marker();
        assert_eq!(flushed(&mut outcomes), [first]);
        let id = outcomes.accept(10, now);
        let forgotten = outcomes.add_marker();
        outcomes.forget_marker(forgotten);
        assert_eq!(outcomes.pending_markers(), 0);
        outcomes.settle(Event::Flushed(FlushId(50)), id, 10, false);
        assert_eq!(flushed(&mut outcomes), [FlushId(50)]);
    }

    #[test]
    fn the_limits_refuse_with_the_numbers_that_decided() {
        let now = SystemClock.now();
        let mut outcomes: Outcomes = Outcomes::default();
        // Alone, a record larger than the byte limit is accepted.
        assert!(outcomes.check_room(5_000, LIMITS).is_ok());
        let limits = OutstandingLimits {
            records: 3,
            bytes: 3_000,
        };
        outcomes.accept(2_000, now);
        // Each is counted with the history of failed attempts it may come to need.
        let refused = Err(RejectReason::TooManyBytes {
            outstanding: 2_000 + HISTORY_BYTES,
            charge: 500 + HISTORY_BYTES,
            limit: 3_000,
        });
        assert_eq!(outcomes.check_room(500, limits), refused);
        // Once it has a history, the charge holds it and the limit counts it once.
        outcomes.charge_history();
        assert_eq!(outcomes.outstanding_bytes(), 2_000 + HISTORY_BYTES);
        assert_eq!(outcomes.check_room(500, limits), refused);
        let room = 3_000 - 2_000 - 2 * HISTORY_BYTES;
        assert!(outcomes.check_room(room, limits).is_ok());
        assert!(outcomes.check_room(room + 1, limits).is_err());
        outcomes.accept(100, now);
        outcomes.accept(100, now);
        assert_eq!(
            outcomes.check_room(1, LIMITS),
            Err(RejectReason::TooManyRecords { limit: 3 })
        );
    }

    #[test]
    fn a_long_unfinished_record_keeps_the_window_short() {
        let start = SystemClock.now();
        let mut outcomes: Outcomes = Outcomes::default();
        let stuck = outcomes.accept(1, start);
        let later = start + Duration::from_secs(1);
        for _ in 0..3 * WINDOW_COMPACTION {
            let id = outcomes.accept(1, later);
            outcomes.settle(Event::Flushed(FlushId(0)), id, 1, false);
        }
        assert!(outcomes.window_entries() <= WINDOW_COMPACTION + 1);
        assert_eq!(outcomes.oldest_outstanding(), Some(start));
        let marker = outcomes.add_marker();
        outcomes.settle(Event::Flushed(FlushId(0)), stuck, 1, false);
        assert_eq!(flushed(&mut outcomes).last(), Some(&marker));
        assert_eq!(outcomes.oldest_outstanding(), None);
    }
}
