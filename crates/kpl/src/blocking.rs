//! The producer for code without an async runtime: it owns one, on a thread of its own.

use std::fmt;
use std::time::Duration;

use kpl_engine::transport::Transport;
use kpl_engine::{Delivery, Record, RecordId, Stream, StreamStats};

use crate::completion::DeliveryFuture;
use crate::config::Config;
use crate::error::{BuildError, DeliveryError, SendError, SendErrorKind};
use crate::producer::{
    KinesisProducer, OutcomeReceiver, OutcomeSender, ProducerBuilder, ShutdownReport,
};

/// Builds a [`BlockingProducer`].
#[must_use = "a builder does nothing until build() is called"]
#[derive(Debug)]
pub struct BlockingProducerBuilder {
    inner: ProducerBuilder,
}

impl BlockingProducerBuilder {
    /// The configuration (default: the KPL defaults).
    pub fn config(self, config: Config) -> Self {
        Self {
            inner: self.inner.config(config),
        }
    }

    /// The transport that carries calls to Kinesis.
    pub fn transport(self, transport: impl Transport) -> Self {
        Self {
            inner: self.inner.transport(transport),
        }
    }

    /// Starts the producer's runtime (one worker thread) and the producer on it.
    pub fn build(self) -> Result<BlockingProducer, BuildError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kpl-producer")
            .enable_all()
            .build()
            .map_err(BuildError::Runtime)?;
        let producer = {
            let _entered = runtime.enter();
            self.inner.build()?
        };
        Ok(BlockingProducer {
            producer: Some(producer),
            runtime: Some(runtime),
        })
    }
}

/// A producer for plain threads: every method blocks the calling thread (never call them from
/// inside an async runtime). It owns its tokio runtime, with one worker thread.
///
/// `Send + Sync`; share it between threads with an `Arc`. Dropping it without
/// [`shutdown`](Self::shutdown) cancels what is outstanding, as for [`KinesisProducer`].
pub struct BlockingProducer {
    producer: Option<KinesisProducer>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl fmt::Debug for BlockingProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingProducer")
            .field("producer", &self.producer)
            .finish_non_exhaustive()
    }
}

/// The outcome of one record, for a blocking caller.
#[must_use = "the outcome of the record is only known by waiting for it"]
#[derive(Debug)]
pub struct BlockingDelivery {
    future: DeliveryFuture,
    runtime: tokio::runtime::Handle,
}

impl BlockingDelivery {
    /// Blocks until the record has its outcome, or until `UserRecordTimeoutInMillis` (when set)
    /// passes ([`DeliveryErrorKind::TimedOut`](crate::DeliveryErrorKind::TimedOut)).
    pub fn wait(self) -> Result<Delivery, DeliveryError> {
        self.runtime.block_on(self.future)
    }

    /// The async future, for callers that do have a runtime.
    pub fn into_future(self) -> DeliveryFuture {
        self.future
    }
}

/// [`OutcomeSender`] for plain threads. Cheap to clone.
#[derive(Clone, Debug)]
pub struct BlockingOutcomeSender {
    sender: OutcomeSender,
    runtime: tokio::runtime::Handle,
}

impl BlockingOutcomeSender {
    /// Accepts a record without waiting (see [`OutcomeSender::send`]).
    pub fn send(&self, record: Record) -> Result<RecordId, SendError> {
        self.sender.send(record)
    }

    /// Accepts a record, blocking while the outcome channel or the buffer is full.
    pub fn send_wait(&self, record: Record) -> Result<RecordId, SendError> {
        self.runtime.block_on(self.sender.send_wait(record))
    }

    /// [`send`](Self::send) with a context its outcome brings back (see
    /// [`OutcomeSender::send_with`]).
    pub fn send_with<C: std::any::Any + Send + Sync>(
        &self,
        record: Record,
        context: C,
    ) -> Result<RecordId, SendError> {
        self.sender.send_with(record, context)
    }

    /// [`send_wait`](Self::send_wait) with a context its outcome brings back.
    pub fn send_wait_with<C: std::any::Any + Send + Sync>(
        &self,
        record: Record,
        context: C,
    ) -> Result<RecordId, SendError> {
        self.runtime
            .block_on(self.sender.send_wait_with(record, context))
    }
}

impl BlockingProducer {
    /// A builder with the KPL's default configuration.
    pub fn builder() -> BlockingProducerBuilder {
        BlockingProducerBuilder {
            inner: KinesisProducer::builder(),
        }
    }

    fn parts(&self) -> (&KinesisProducer, &tokio::runtime::Runtime) {
        match (&self.producer, &self.runtime) {
            (Some(producer), Some(runtime)) => (producer, runtime),
            // Both are only taken in `drop`.
            _ => unreachable!("a BlockingProducer is complete until dropped"),
        }
    }

    /// An outcome channel for records sent without a future (see
    /// [`KinesisProducer::outcome_channel`]); read it with
    /// [`OutcomeReceiver::blocking_recv`](crate::OutcomeReceiver::blocking_recv).
    ///
    /// # Panics
    ///
    /// If `capacity` is 0.
    pub fn outcome_channel(&self, capacity: usize) -> (BlockingOutcomeSender, OutcomeReceiver) {
        let (producer, runtime) = self.parts();
        let (sender, receiver) = producer.outcome_channel(capacity);
        let sender = BlockingOutcomeSender {
            sender,
            runtime: runtime.handle().clone(),
        };
        (sender, receiver)
    }

    /// Accepts a record without waiting (see [`KinesisProducer::send`]).
    pub fn send(&self, record: Record) -> Result<BlockingDelivery, SendError> {
        let (producer, runtime) = self.parts();
        producer.send(record).map(|future| BlockingDelivery {
            future,
            runtime: runtime.handle().clone(),
        })
    }

    /// The blocking form of each future in `results`.
    fn blocking(
        &self,
        results: Vec<Result<DeliveryFuture, SendError>>,
    ) -> Vec<Result<BlockingDelivery, SendError>> {
        let runtime = self.parts().1.handle();
        results
            .into_iter()
            .map(|result| {
                result.map(|future| BlockingDelivery {
                    future,
                    runtime: runtime.clone(),
                })
            })
            .collect()
    }

    /// Accepts many records under one lock (see [`KinesisProducer::send_batch`]).
    pub fn send_batch(
        &self,
        records: impl IntoIterator<Item = Record>,
    ) -> Vec<Result<BlockingDelivery, SendError>> {
        self.blocking(self.parts().0.send_batch(records))
    }

    /// Accepts many records, blocking whenever the buffer is full (see
    /// [`KinesisProducer::send_all`]).
    pub fn send_all(
        &self,
        records: impl IntoIterator<Item = Record>,
    ) -> Vec<Result<BlockingDelivery, SendError>> {
        let (producer, runtime) = self.parts();
        self.blocking(runtime.block_on(producer.send_all(records)))
    }

    /// Accepts a record, blocking while the buffer is full.
    pub fn send_wait(&self, record: Record) -> Result<BlockingDelivery, SendError> {
        let (producer, runtime) = self.parts();
        // The common case, room at once, needs no trip through the runtime; `send_wait` tries
        // the same first, so only a refusal for space is worth waiting on.
        let sent = match producer.send(record) {
            Err(refused) if refused.kind() == SendErrorKind::BufferFull => {
                runtime.block_on(producer.send_wait(refused.into_record()))
            }
            other => other,
        };
        sent.map(|future| BlockingDelivery {
            future,
            runtime: runtime.handle().clone(),
        })
    }

    /// Accepts a record, blocking at most `timeout` while the buffer is full.
    pub fn send_wait_timeout(
        &self,
        record: Record,
        timeout: Duration,
    ) -> Result<BlockingDelivery, SendError> {
        let (producer, runtime) = self.parts();
        runtime
            .block_on(producer.send_wait_timeout(record, timeout))
            .map(|future| BlockingDelivery {
                future,
                runtime: runtime.handle().clone(),
            })
    }

    /// Sends what is buffered for every stream now, without waiting for the outcomes.
    pub fn flush(&self) {
        self.parts().0.flush();
    }

    /// [`flush`](Self::flush) for one stream.
    pub fn flush_stream(&self, stream: &Stream) {
        self.parts().0.flush_stream(stream);
    }

    /// Blocks until every record accepted before the call has its outcome.
    pub fn flush_and_wait(&self) {
        let (producer, runtime) = self.parts();
        runtime.block_on(producer.flush_and_wait());
    }

    /// Blocks until every record accepted before the call has its outcome, or `timeout` passes.
    /// Returns whether they all have one. (The records go on either way.)
    pub fn flush_and_wait_timeout(&self, timeout: Duration) -> bool {
        let (producer, runtime) = self.parts();
        runtime.block_on(async {
            match crate::clock::tokio_now().checked_add(timeout) {
                Some(deadline) => tokio::time::timeout_at(deadline, producer.flush_and_wait())
                    .await
                    .is_ok(),
                // Too long to be a time: no limit.
                None => {
                    producer.flush_and_wait().await;
                    true
                }
            }
        })
    }

    /// Records accepted and not finished.
    pub fn outstanding_records(&self) -> usize {
        self.parts().0.outstanding_records()
    }

    /// How long the oldest unfinished record has been waiting.
    pub fn oldest_record_age(&self) -> Option<Duration> {
        self.parts().0.oldest_record_age()
    }

    /// Statistics per stream.
    pub fn stats(&self) -> Vec<(Stream, StreamStats)> {
        self.parts().0.stats()
    }

    /// Flushes, waits up to `deadline`, fails what is left and returns it; then stops the
    /// runtime.
    pub fn shutdown(mut self, deadline: Duration) -> ShutdownReport {
        let (producer, runtime) = self.parts();
        let report = runtime.block_on(producer.shutdown(deadline));
        self.producer = None;
        report
    }
}

impl Drop for BlockingProducer {
    fn drop(&mut self) {
        // The producer goes first so its driver sees the drop; then the runtime stops without
        // waiting for anything.
        self.producer = None;
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
