//! Where records' outcomes wait for their [`DeliveryFuture`]s: one slot per record in a table
//! shared by all of them, instead of a channel allocated per record.
//!
//! A slot is made by whichever comes first, the outcome or the future asking for it, so
//! accepting a record costs the table nothing; the future reads the slot and frees it. The
//! producer completes every record it accepted for a future exactly once (with a cancellation
//! if it stops first), so no future waits forever and no slot outlives both sides.

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use kpl_engine::{Delivery, RecordId};
use tokio::sync::mpsc;

use crate::error::{DeliveryError, DeliveryErrorKind};

/// A record's outcome as a future resolves to it.
pub(crate) type Outcome = Result<Delivery, DeliveryError>;

/// The outcome of a record sent through an [`OutcomeSender`](crate::OutcomeSender), with the
/// context it was sent with, if any
/// ([`OutcomeSender::send_with`](crate::OutcomeSender::send_with)).
#[derive(Debug)]
#[non_exhaustive]
pub struct RecordOutcome {
    /// The id [`OutcomeSender::send`](crate::OutcomeSender::send) returned for it.
    pub id: RecordId,
    /// Written, or why not.
    pub outcome: Result<Delivery, DeliveryError>,
    context: Option<OutcomeContext>,
}

/// What a caller sends with a record for its outcome to bring back.
pub(crate) type OutcomeContext = Box<dyn Any + Send + Sync>;

impl RecordOutcome {
    /// The context the record was sent with, if it was sent with one of type `C`.
    pub fn context<C: Any>(&self) -> Option<&C> {
        self.context.as_ref()?.downcast_ref()
    }

    /// Takes the context the record was sent with, if it was sent with one of type `C`.
    pub fn take_context<C: Any>(&mut self) -> Option<C> {
        match self.context.take()?.downcast() {
            Ok(context) => Some(*context),
            Err(other) => {
                self.context = Some(other);
                None
            }
        }
    }
}

/// A future's place in the table of completions. Places are given out one after another to
/// futures only, so records sent without a future (through an outcome channel) leave no gap
/// the table would have to span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FutureKey(u64);

/// Where an accepted record's outcome goes: the token the engine carries with the record and
/// hands back with its outcome, so no table maps record ids to their callers.
#[derive(Debug)]
pub(crate) enum Waiter {
    /// Its [`DeliveryFuture`], through its place in the table of completions.
    Future(FutureKey),
    /// A slot reserved in an outcome channel, and the sender's context.
    Channel(mpsc::OwnedPermit<RecordOutcome>, Option<OutcomeContext>),
}

impl Waiter {
    /// Hands record `id` its outcome: into `completed` for its future, or into its slot in an
    /// outcome channel (reserved when it was accepted: this never waits or fails).
    pub(crate) fn deliver(
        self,
        id: RecordId,
        outcome: Outcome,
        completed: &mut Vec<(FutureKey, Outcome)>,
    ) {
        match self {
            Self::Future(key) => completed.push((key, outcome)),
            Self::Channel(permit, context) => drop(permit.send(RecordOutcome {
                id,
                outcome,
                context,
            })),
        }
    }
}

/// The producer's memory per outstanding record beyond the engine's, charged against
/// `MaxOutstandingBytes`: the token the engine keeps with it, and its place in the table of
/// completions, twice over for the table's growth.
pub(crate) const FACADE_BYTES_PER_RECORD: usize = size_of::<Waiter>() + 2 * SLOT_BYTES;

/// With `UserRecordTimeoutInMillis` set, each record's future also holds a boxed timer.
pub(crate) const TIMER_BYTES_PER_RECORD: usize = 16 + size_of::<tokio::time::Sleep>();

/// Values by record id. Ids come roughly in increasing order, so the recent ones live in a
/// ring indexed from `base`; when a few stay long while many after them come and go, the ring
/// is compacted into `stragglers`, so it does not hold a place for every id since the oldest.
#[derive(Debug)]
pub(crate) struct IdTable<T> {
    ring: VecDeque<Option<T>>,
    base: u64,
    stragglers: BTreeMap<u64, T>,
    len: usize,
}

/// The ring is compacted when it is longer than this and [`SLACK_FACTOR`] times the values
/// it holds.
pub(crate) const COMPACTION: usize = 65_536;
/// How much longer than the values held the ring may grow before compaction, and how much
/// more room than its length it may keep.
const SLACK_FACTOR: usize = 4;
/// Room the ring keeps however few values it holds: no reallocation for small swings.
const RING_ROOM_KEPT: usize = 1_024;

impl<T> Default for IdTable<T> {
    fn default() -> Self {
        Self {
            ring: VecDeque::new(),
            base: 0,
            stragglers: BTreeMap::new(),
            len: 0,
        }
    }
}

impl<T> IdTable<T> {
    /// Keeps `value` for `id`, where nothing is kept for it yet.
    pub(crate) fn insert(&mut self, id: u64, value: T) {
        // Every straggler's id is below `base`, so an empty ring can start at any id above.
        if self.ring.is_empty() && id > self.base {
            self.base = id;
        }
        let Some(index) = id
            .checked_sub(self.base)
            .and_then(|index| usize::try_from(index).ok())
        else {
            self.len += usize::from(self.stragglers.insert(id, value).is_none());
            return;
        };
        while self.ring.len() <= index {
            self.ring.push_back(None);
        }
        self.len += usize::from(self.ring[index].replace(value).is_none());
        if self.ring.len() > COMPACTION.max(SLACK_FACTOR * self.len) {
            let after = self.base + self.ring.len() as u64;
            for (offset, value) in std::mem::take(&mut self.ring).into_iter().enumerate() {
                if let Some(value) = value {
                    self.stragglers.insert(self.base + offset as u64, value);
                }
            }
            self.base = after;
        }
    }

    /// The value for `id`, if it is there.
    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        if id < self.base {
            return self.stragglers.get_mut(&id);
        }
        let index = usize::try_from(id - self.base).ok()?;
        self.ring.get_mut(index)?.as_mut()
    }

    /// Takes the value for `id` out.
    pub(crate) fn remove(&mut self, id: u64) -> Option<T> {
        let value = if id < self.base {
            self.stragglers.remove(&id)
        } else {
            let index = usize::try_from(id - self.base).ok()?;
            let value = self.ring.get_mut(index)?.take();
            while let Some(None) = self.ring.front() {
                self.ring.pop_front();
                self.base += 1;
            }
            // A burst of outcomes nobody read yet grows the ring; once they are read, the room
            // goes back (halving at most once per doubling's worth of removals: amortized O(1)).
            if self.ring.capacity() > RING_ROOM_KEPT
                && self.ring.capacity() > SLACK_FACTOR * self.ring.len()
            {
                self.ring.shrink_to(RING_ROOM_KEPT.max(2 * self.ring.len()));
            }
            value
        };
        self.len -= usize::from(value.is_some());
        value
    }

    /// The places it takes: ring slots and stragglers.
    #[cfg(test)]
    pub(crate) fn footprint(&self) -> usize {
        self.ring.len() + self.stragglers.len()
    }

    /// The ring's room, in places.
    #[cfg(test)]
    fn ring_room(&self) -> usize {
        self.ring.capacity()
    }
}

/// What one record's place in the table of completions takes, at most.
pub(crate) const SLOT_BYTES: usize = size_of::<Option<Slot>>();

/// A record's place in the table.
enum Slot {
    /// Not finished; the waker of the task awaiting it.
    Waiting(Waker),
    /// Finished; the error boxed, so that every slot stays small.
    Done(Result<Delivery, Box<DeliveryError>>),
    /// Its future is gone before it finished: the outcome, when it comes, frees the slot.
    Abandoned,
}

/// The outcomes of the records sent for [`DeliveryFuture`]s, by their futures' places.
#[derive(Default)]
pub(crate) struct CompletionTable {
    slots: Mutex<IdTable<Slot>>,
    next_key: AtomicU64,
}

impl CompletionTable {
    /// A place for the next future. A place given out and never used (the record was refused)
    /// costs nothing.
    pub(crate) fn reserve(&self) -> FutureKey {
        FutureKey(self.next_key.fetch_add(1, Ordering::Relaxed))
    }

    fn slots(&self) -> MutexGuard<'_, IdTable<Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands records their outcomes (each record once) and wakes the tasks awaiting them.
    pub(crate) fn complete(&self, outcomes: impl IntoIterator<Item = (FutureKey, Outcome)>) {
        let mut wake = Vec::new();
        let mut slots = self.slots();
        for (FutureKey(key), outcome) in outcomes {
            let done = Slot::Done(outcome.map_err(Box::new));
            match slots.get_mut(key) {
                None => slots.insert(key, done),
                Some(Slot::Abandoned) => drop(slots.remove(key)),
                Some(slot) => {
                    if let Slot::Waiting(waker) = std::mem::replace(slot, done) {
                        wake.push(waker);
                    }
                }
            }
        }
        drop(slots);
        wake.into_iter().for_each(Waker::wake);
    }

    /// The outcome of record `id`, at `key`, if it is there, else remembers whom to wake.
    fn poll(&self, FutureKey(key): FutureKey, id: RecordId, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut slots = self.slots();
        match slots.get_mut(key) {
            Some(Slot::Waiting(waker)) => {
                waker.clone_from(cx.waker());
                Poll::Pending
            }
            None => {
                slots.insert(key, Slot::Waiting(cx.waker().clone()));
                Poll::Pending
            }
            Some(Slot::Done(_) | Slot::Abandoned) => match slots.remove(key) {
                Some(Slot::Done(outcome)) => Poll::Ready(outcome.map_err(|error| *error)),
                _ => Poll::Ready(Err(DeliveryError::cancelled(id))),
            },
        }
    }

    /// The future at `key` is gone: frees its slot, or marks it for its outcome to free.
    fn forget(&self, FutureKey(key): FutureKey) {
        let mut slots = self.slots();
        match slots.get_mut(key) {
            Some(Slot::Done(_)) => drop(slots.remove(key)),
            Some(slot) => *slot = Slot::Abandoned,
            None => slots.insert(key, Slot::Abandoned),
        }
    }

    #[cfg(test)]
    pub(crate) fn footprint(&self) -> usize {
        self.slots().footprint()
    }
}

/// The outcome of one record: resolves to the [`Delivery`] (shard id, sequence number,
/// attempts) or a [`DeliveryError`](crate::DeliveryError). Named, `Send` and `'static`; dropping it does not cancel
/// the record.
#[must_use = "the outcome of the record is only known by awaiting this future"]
pub struct DeliveryFuture {
    id: RecordId,
    key: FutureKey,
    /// `None` once resolved.
    table: Option<Arc<CompletionTable>>,
    timeout: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl DeliveryFuture {
    pub(crate) fn new(
        id: RecordId,
        key: FutureKey,
        table: Arc<CompletionTable>,
        timeout: Option<Pin<Box<tokio::time::Sleep>>>,
    ) -> Self {
        Self {
            id,
            key,
            table: Some(table),
            timeout,
        }
    }

    /// The record's id (the same as in its `Delivery`).
    pub fn id(&self) -> RecordId {
        self.id
    }
}

impl fmt::Debug for DeliveryFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryFuture")
            .field("id", &self.id)
            .finish()
    }
}

impl Future for DeliveryFuture {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let id = self.id;
        let Some(table) = &self.table else {
            return Poll::Ready(Err(DeliveryError::cancelled(id)));
        };
        if let Poll::Ready(outcome) = table.poll(self.key, id, cx) {
            self.table = None;
            return Poll::Ready(outcome);
        }
        if let Some(timeout) = &mut self.timeout
            && timeout.as_mut().poll(cx).is_ready()
        {
            if let Some(table) = self.table.take() {
                table.forget(self.key);
            }
            return Poll::Ready(Err(DeliveryError::bare(id, DeliveryErrorKind::TimedOut)));
        }
        Poll::Pending
    }
}

impl Drop for DeliveryFuture {
    fn drop(&mut self) {
        if let Some(table) = self.table.take() {
            table.forget(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Wake;

    use super::*;

    #[test]
    fn one_long_wait_keeps_one_place_not_one_per_id_since() {
        let mut table = IdTable::default();
        for id in 0..=100_000u64 {
            table.insert(id, id);
            // Every id but the first is taken out at once.
            if id > 0 {
                assert_eq!(table.remove(id), Some(id));
            }
        }
        assert!(table.footprint() <= COMPACTION + 1, "{}", table.footprint());
        assert_eq!(table.get_mut(0), Some(&mut 0), "the first is still there");
        assert_eq!(table.remove(0), Some(0));
        assert_eq!(table.remove(0), None);
        assert_eq!(table.footprint(), 0);
    }

    #[test]
    fn room_grown_for_a_burst_of_unread_outcomes_goes_back_once_they_are_read() {
        let mut table = IdTable::default();
        for id in 0..200_000u64 {
            table.insert(id, id);
        }
        assert!(table.ring_room() >= 200_000);
        for id in 0..199_000u64 {
            assert_eq!(table.remove(id), Some(id));
        }
        assert!(
            table.ring_room() <= RING_ROOM_KEPT.max(SLACK_FACTOR * 1_000),
            "{} places kept for 1,000 values",
            table.ring_room()
        );
        for id in 199_000..200_000u64 {
            assert_eq!(table.remove(id), Some(id));
        }
        assert!(table.ring_room() <= RING_ROOM_KEPT, "{}", table.ring_room());
        assert_eq!(table.footprint(), 0);
    }

    #[test]
    fn ids_with_gaps_find_their_values() {
        let mut table = IdTable::default();
        table.insert(5, "five");
        table.insert(9, "nine");
        assert_eq!(table.get_mut(7), None);
        assert_eq!(table.remove(9), Some("nine"));
        assert_eq!(table.remove(5), Some("five"));
        assert_eq!(table.footprint(), 0);
    }

    struct Counter(std::sync::atomic::AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Record ids as an engine gives them.
    fn ids(count: usize) -> Vec<RecordId> {
        let mut engine = kpl_engine::Engine::new(kpl_engine::EngineConfig::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let stream = kpl_engine::Stream::new("s").unwrap_or_else(|e| panic!("{e}"));
        let now = kpl_engine::time::Clock::now(&kpl_engine::time::SystemClock);
        (0..count)
            .map(|_| {
                let record = kpl_engine::Record::new(stream.clone(), "k", "data");
                engine.submit(record, now).unwrap_or_else(|e| panic!("{e}"))
            })
            .collect()
    }

    /// In these tests a future's place is its record's id.
    fn key(id: RecordId) -> FutureKey {
        FutureKey(id.get())
    }

    fn future_of(id: RecordId, table: &Arc<CompletionTable>) -> DeliveryFuture {
        DeliveryFuture::new(id, key(id), Arc::clone(table), None)
    }

    fn cancelled(id: RecordId) -> (FutureKey, Outcome) {
        (key(id), Err(DeliveryError::cancelled(id)))
    }

    #[test]
    fn an_outcome_wakes_the_task_awaiting_it_and_reading_it_frees_its_slot() {
        let table = Arc::new(CompletionTable::default());
        let counter = Arc::new(Counter(0.into()));
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        let [early, late] = ids(2)[..] else {
            panic!("two ids")
        };
        // Polled before its outcome: it waits, and is woken once.
        let mut waiting = future_of(late, &table);
        assert!(Pin::new(&mut waiting).poll(&mut cx).is_pending());
        table.complete([cancelled(late)]);
        assert_eq!(counter.0.load(Ordering::Relaxed), 1);
        // Its outcome before the poll: ready at once.
        table.complete([cancelled(early)]);
        let mut ready = future_of(early, &table);
        for future in [&mut waiting, &mut ready] {
            let Poll::Ready(Err(error)) = Pin::new(future).poll(&mut cx) else {
                panic!("the outcome is there");
            };
            assert_eq!(error.kind(), DeliveryErrorKind::Cancelled);
        }
        assert_eq!(table.footprint(), 0, "reading the outcomes freed the slots");
    }

    #[test]
    fn a_future_dropped_unread_leaves_no_slot_behind_whenever_its_outcome_comes() {
        let table = Arc::new(CompletionTable::default());
        let counter = Arc::new(Counter(0.into()));
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        let [never_polled, polled, finished] = ids(3)[..] else {
            panic!("three ids")
        };
        drop(future_of(never_polled, &table));
        let mut future = future_of(polled, &table);
        assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
        drop(future);
        assert_eq!(
            table.footprint(),
            2,
            "both wait for their outcomes to free them"
        );
        table.complete([cancelled(never_polled), cancelled(polled)]);
        assert_eq!(table.footprint(), 0);
        table.complete([cancelled(finished)]);
        drop(future_of(finished, &table));
        assert_eq!(table.footprint(), 0);
        assert_eq!(counter.0.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn ids_out_of_order_and_below_the_ring_find_their_places() {
        let mut table = IdTable::default();
        table.insert(10, "ten");
        table.insert(3, "three");
        table.insert(12, "twelve");
        assert_eq!(table.remove(10), Some("ten"));
        table.insert(11, "eleven");
        assert_eq!(table.get_mut(3), Some(&mut "three"));
        assert_eq!(table.remove(3), Some("three"));
        assert_eq!(table.remove(12), Some("twelve"));
        assert_eq!(table.remove(11), Some("eleven"));
        assert_eq!(table.remove(11), None);
        assert_eq!(table.footprint(), 0);
    }
}
