//! Outcomes as messages: an [`OutcomeSender`] whose records' outcomes arrive at an
//! [`OutcomeReceiver`], for callers that do not keep a future per record.

use std::any::Any;

use kpl_engine::{Record, RecordId};
use tokio::sync::mpsc;

use super::KinesisProducer;
use crate::completion::{OutcomeContext, RecordOutcome, Waiter};
use crate::error::{SendError, SendErrorKind};

/// A channel of `capacity` outcomes for `producer`'s records (see
/// [`KinesisProducer::outcome_channel`]).
pub(super) fn channel(
    producer: KinesisProducer,
    capacity: usize,
) -> (OutcomeSender, OutcomeReceiver) {
    let (sender, receiver) = mpsc::channel(capacity);
    let sender = OutcomeSender { producer, sender };
    (sender, OutcomeReceiver { receiver })
}

/// Sends records whose outcomes go to an [`OutcomeReceiver`] (see
/// [`KinesisProducer::outcome_channel`]). Cheap to clone.
#[derive(Clone, Debug)]
pub struct OutcomeSender {
    producer: KinesisProducer,
    sender: mpsc::Sender<RecordOutcome>,
}

impl OutcomeSender {
    /// Accepts a record without waiting, or says why not and hands it back: a full outcome
    /// channel, and everything [`KinesisProducer::send`] refuses for.
    pub fn send(&self, record: Record) -> Result<RecordId, SendError> {
        self.send_context(record, None)
    }

    /// [`send`](Self::send) with `context`, which the record's [`RecordOutcome`] brings back
    /// ([`RecordOutcome::take_context`]): what the caller needs to act on the outcome (where the
    /// record came from, say) travels with the record, and no table of ids is needed. The
    /// producer keeps it with the record, boxed unless it has no size; it is not counted
    /// against `MaxOutstandingBytes`. A refused record comes back without it (the caller still
    /// has what it put in).
    pub fn send_with<C: Any + Send + Sync>(
        &self,
        record: Record,
        context: C,
    ) -> Result<RecordId, SendError> {
        self.send_context(record, Some(Box::new(context)))
    }

    fn send_context(
        &self,
        record: Record,
        context: Option<OutcomeContext>,
    ) -> Result<RecordId, SendError> {
        let slot = match self.sender.clone().try_reserve_owned() {
            Ok(slot) => slot,
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(SendError::new(
                    SendErrorKind::BufferFull,
                    format!(
                        "the outcome channel is full ({} outcomes not yet received or still to come)",
                        self.sender.max_capacity()
                    ),
                    record,
                ));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(no_receiver(record)),
        };
        self.producer
            .admit(record, None, Waiter::Channel(slot, context))
            .map_err(|(refusal, _)| refusal)
    }

    /// [`send`](Self::send), waiting for a slot in the outcome channel and then for buffer
    /// space while either is full.
    pub async fn send_wait(&self, record: Record) -> Result<RecordId, SendError> {
        self.send_wait_context(record, None).await
    }

    /// [`send_wait`](Self::send_wait) with `context`, as [`send_with`](Self::send_with).
    pub async fn send_wait_with<C: Any + Send + Sync>(
        &self,
        record: Record,
        context: C,
    ) -> Result<RecordId, SendError> {
        self.send_wait_context(record, Some(Box::new(context)))
            .await
    }

    async fn send_wait_context(
        &self,
        record: Record,
        context: Option<OutcomeContext>,
    ) -> Result<RecordId, SendError> {
        let Ok(slot) = self.sender.clone().reserve_owned().await else {
            return Err(no_receiver(record));
        };
        let waiter = Waiter::Channel(slot, context);
        self.producer.send_waiting(record, None, waiter).await
    }

    /// The producer the records go through.
    pub fn producer(&self) -> &KinesisProducer {
        &self.producer
    }
}

fn no_receiver(record: Record) -> SendError {
    SendError::new(
        SendErrorKind::NoOutcomeReceiver,
        "the outcome receiver was dropped: no one would learn this record's outcome",
        record,
    )
}

/// Where the outcomes of records sent through an [`OutcomeSender`] come out.
#[derive(Debug)]
pub struct OutcomeReceiver {
    receiver: mpsc::Receiver<RecordOutcome>,
}

impl OutcomeReceiver {
    /// The next outcome, waiting for one; `None` once every sender is gone and every outcome
    /// has been received.
    pub async fn recv(&mut self) -> Option<RecordOutcome> {
        self.receiver.recv().await
    }

    /// The next outcome if one is there.
    pub fn try_recv(&mut self) -> Option<RecordOutcome> {
        self.receiver.try_recv().ok()
    }

    /// Blocks the thread for the next outcome (outside an async context).
    pub fn blocking_recv(&mut self) -> Option<RecordOutcome> {
        self.receiver.blocking_recv()
    }
}
