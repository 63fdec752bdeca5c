//! The simulator behind the engine's `Transport` trait.

use std::sync::{Arc, Mutex, PoisonError};

use kpl_engine::time::Clock;
use kpl_engine::transport::{
    DescribeStreamSummaryRequest, ListShardsRequest, ListShardsResponse, PutRecordsRequest,
    PutRecordsResponse, StreamSummary, Transport, TransportFuture,
};
use kpl_engine::{Request, Response, TransportError, TransportErrorKind};

use crate::service::SimKinesis;

/// A [`SimKinesis`] shared behind the [`Transport`] trait. Answers at once, at the time its
/// clock reads; cloning shares the same simulated service.
#[derive(Clone, Debug)]
pub struct SimTransport {
    sim: Arc<Mutex<SimKinesis>>,
    clock: Arc<dyn Clock>,
}

impl SimTransport {
    /// Shares `sim`, reading the time from `clock`.
    pub fn new(sim: SimKinesis, clock: impl Clock) -> Self {
        Self {
            sim: Arc::new(Mutex::new(sim)),
            clock: Arc::new(clock),
        }
    }

    /// Runs `f` with the simulated service, to reshard, inject faults or read back.
    pub fn with_sim<T>(&self, f: impl FnOnce(&mut SimKinesis) -> T) -> T {
        let mut sim = self.sim.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut sim)
    }

    fn call(&self, request: Request) -> Result<Response, TransportError> {
        let now = self.clock.now();
        self.with_sim(|sim| sim.handle(request, now))
    }
}

fn mismatch() -> TransportError {
    TransportError::new(
        TransportErrorKind::Other,
        kpl_engine::codes::UNEXPECTED_RESPONSE,
        "the simulator answered another operation",
    )
}

impl Transport for SimTransport {
    fn put_records(&self, request: PutRecordsRequest) -> TransportFuture<PutRecordsResponse> {
        TransportFuture::ready(match self.call(Request::PutRecords(request)) {
            Ok(Response::PutRecords(response)) => Ok(response),
            Ok(_) => Err(mismatch()),
            Err(error) => Err(error),
        })
    }

    fn list_shards(&self, request: ListShardsRequest) -> TransportFuture<ListShardsResponse> {
        TransportFuture::ready(match self.call(Request::ListShards(request)) {
            Ok(Response::ListShards(response)) => Ok(response),
            Ok(_) => Err(mismatch()),
            Err(error) => Err(error),
        })
    }

    fn describe_stream_summary(
        &self,
        request: DescribeStreamSummaryRequest,
    ) -> TransportFuture<StreamSummary> {
        TransportFuture::ready(match self.call(Request::DescribeStreamSummary(request)) {
            Ok(Response::DescribeStreamSummary(response)) => Ok(response),
            Ok(_) => Err(mismatch()),
            Err(error) => Err(error),
        })
    }
}

/// A transport whose calls never answer, as a service that takes connections and hangs: every
/// record stays outstanding until its timeouts, a shutdown or the producer's drop end it.
#[derive(Clone, Copy, Debug, Default)]
pub struct UnansweredTransport;

impl Transport for UnansweredTransport {
    fn put_records(&self, _: PutRecordsRequest) -> TransportFuture<PutRecordsResponse> {
        TransportFuture::new(std::future::pending())
    }
    fn list_shards(&self, _: ListShardsRequest) -> TransportFuture<ListShardsResponse> {
        TransportFuture::new(std::future::pending())
    }
    fn describe_stream_summary(
        &self,
        _: DescribeStreamSummaryRequest,
    ) -> TransportFuture<StreamSummary> {
        TransportFuture::new(std::future::pending())
    }
}
