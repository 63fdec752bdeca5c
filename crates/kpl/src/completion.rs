//! Where records' outcomes wait for their [`DeliveryFuture`]s: one slot per record in a table
//! shared by all of them, instead of a channel allocated per record.
//!
//! The producer opens a slot when it accepts a record sent for a future, and keeps the
//! [`CompletionHandle`] that fills it; the future reads the slot and frees it. A handle dropped
//! without filling its slot (the driver stopped) fills it with a cancellation, so no future
//! waits forever.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use kpl_engine::{Delivery, RecordId};

use crate::error::{DeliveryError, DeliveryErrorKind};

/// A record's outcome as a future resolves to it.
pub(crate) type Outcome = Result<Delivery, DeliveryError>;

/// Values by record id. Ids come in increasing order, so the recent ones live in a ring
/// indexed from `base`; when a few stay long while many after them come and go, the ring is
/// compacted into `stragglers`, so it does not hold a place for every id since the oldest.
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
/// How much longer than the values held the ring may grow before compaction.
const SLACK_FACTOR: usize = 4;

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
    /// Keeps `value` for `id`, which is above every id inserted before.
    pub(crate) fn insert(&mut self, id: u64, value: T) {
        if self.ring.is_empty() {
            self.base = id;
        }
        let index = id.saturating_sub(self.base) as usize;
        while self.ring.len() < index {
            self.ring.push_back(None);
        }
        self.ring.push_back(Some(value));
        self.len += 1;
        if self.ring.len() > COMPACTION.max(SLACK_FACTOR * self.len) {
            for (offset, value) in std::mem::take(&mut self.ring).into_iter().enumerate() {
                if let Some(value) = value {
                    self.stragglers.insert(self.base + offset as u64, value);
                }
            }
            self.base = id + 1;
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
            value
        };
        self.len -= usize::from(value.is_some());
        value
    }

    /// Takes every value out.
    pub(crate) fn clear(&mut self) {
        self.ring.clear();
        self.stragglers.clear();
        self.len = 0;
    }

    /// The places it takes: ring slots and stragglers.
    #[cfg(test)]
    pub(crate) fn footprint(&self) -> usize {
        self.ring.len() + self.stragglers.len()
    }
}

/// What one record's place in the table of completions takes, at most.
pub(crate) const SLOT_BYTES: usize = size_of::<Option<Slot>>();

/// A record's place in the table.
enum Slot {
    /// Not finished; the waker of the task awaiting it, once it has been polled.
    Waiting(Option<Waker>),
    /// Finished; the error boxed, so that every slot stays small.
    Done(Result<Delivery, Box<DeliveryError>>),
}

/// The outcomes of the records sent for [`DeliveryFuture`]s, by record id.
#[derive(Default)]
pub(crate) struct CompletionTable {
    slots: Mutex<IdTable<Slot>>,
}

impl CompletionTable {
    fn slots(&self) -> MutexGuard<'_, IdTable<Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens the slot of a record just accepted; the handle fills it.
    pub(crate) fn open(self: &Arc<Self>, id: RecordId) -> CompletionHandle {
        self.slots().insert(id.get(), Slot::Waiting(None));
        CompletionHandle {
            table: Some(Arc::clone(self)),
            id,
        }
    }

    /// Fills record `id`'s slot (if its future still wants it) and wakes its task.
    fn complete(&self, id: RecordId, outcome: Outcome) {
        let mut slots = self.slots();
        let Some(slot) = slots.get_mut(id.get()) else {
            return;
        };
        let done = Slot::Done(outcome.map_err(Box::new));
        let waker = match std::mem::replace(slot, done) {
            Slot::Waiting(waker) => waker,
            Slot::Done(_) => None,
        };
        drop(slots);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Record `id`'s outcome if it is there, else remembers whom to wake.
    fn poll(&self, id: RecordId, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut slots = self.slots();
        match slots.get_mut(id.get()) {
            Some(Slot::Waiting(waker)) => {
                match waker {
                    Some(waker) => waker.clone_from(cx.waker()),
                    None => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            Some(Slot::Done(_)) => match slots.remove(id.get()) {
                Some(Slot::Done(outcome)) => Poll::Ready(outcome.map_err(|error| *error)),
                _ => Poll::Ready(Err(DeliveryError::cancelled(id))),
            },
            // Only a future that already returned its outcome polls an empty slot.
            None => Poll::Ready(Err(DeliveryError::cancelled(id))),
        }
    }

    /// Frees record `id`'s slot: its future was dropped or resolved otherwise.
    fn forget(&self, id: RecordId) {
        self.slots().remove(id.get());
    }

    #[cfg(test)]
    pub(crate) fn footprint(&self) -> usize {
        self.slots().footprint()
    }
}

/// Fills one record's slot; dropped unfilled, it fills it with a cancellation.
pub(crate) struct CompletionHandle {
    table: Option<Arc<CompletionTable>>,
    id: RecordId,
}

impl CompletionHandle {
    /// Hands the record its outcome.
    pub(crate) fn complete(mut self, outcome: Outcome) {
        if let Some(table) = self.table.take() {
            table.complete(self.id, outcome);
        }
    }
}

impl Drop for CompletionHandle {
    fn drop(&mut self) {
        if let Some(table) = self.table.take() {
            table.complete(self.id, Err(DeliveryError::cancelled(self.id)));
        }
    }
}

/// The outcome of one record: resolves to the [`Delivery`] (shard id, sequence number,
/// attempts) or a [`DeliveryError`]. Named, `Send` and `'static`; dropping it does not cancel
/// the record.
#[must_use = "the outcome of the record is only known by awaiting this future"]
pub struct DeliveryFuture {
    id: RecordId,
    /// `None` once resolved.
    table: Option<Arc<CompletionTable>>,
    timeout: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl DeliveryFuture {
    pub(crate) fn new(
        id: RecordId,
        table: Arc<CompletionTable>,
        timeout: Option<Pin<Box<tokio::time::Sleep>>>,
    ) -> Self {
        Self {
            id,
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
        if let Poll::Ready(outcome) = table.poll(id, cx) {
            self.table = None;
            return Poll::Ready(outcome);
        }
        if let Some(timeout) = &mut self.timeout
            && timeout.as_mut().poll(cx).is_ready()
        {
            if let Some(table) = self.table.take() {
                table.forget(id);
            }
            return Poll::Ready(Err(DeliveryError::bare(id, DeliveryErrorKind::TimedOut)));
        }
        Poll::Pending
    }
}

impl Drop for DeliveryFuture {
    fn drop(&mut self) {
        if let Some(table) = self.table.take() {
            table.forget(self.id);
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
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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

    #[test]
    fn a_slot_is_filled_once_wakes_its_task_and_is_freed_when_read() {
        let table = Arc::new(CompletionTable::default());
        let counter = Arc::new(Counter(0.into()));
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        let id = ids(1)[0];
        let handle = table.open(id);
        let mut future = DeliveryFuture::new(id, Arc::clone(&table), None);
        assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
        // Dropped unfilled, the handle cancels the record.
        drop(handle);
        assert_eq!(counter.0.load(std::sync::atomic::Ordering::Relaxed), 1);
        let Poll::Ready(Err(error)) = Pin::new(&mut future).poll(&mut cx) else {
            panic!("the outcome is there");
        };
        assert_eq!(error.kind(), DeliveryErrorKind::Cancelled);
        assert_eq!(table.footprint(), 0, "reading the outcome freed the slot");
    }

    #[test]
    fn a_future_dropped_unread_frees_its_slot_and_its_outcome_is_let_go() {
        let table = Arc::new(CompletionTable::default());
        let id = ids(1)[0];
        let handle = table.open(id);
        drop(DeliveryFuture::new(id, Arc::clone(&table), None));
        assert_eq!(table.footprint(), 0);
        handle.complete(Err(DeliveryError::cancelled(id)));
        assert_eq!(table.footprint(), 0);
    }
}
