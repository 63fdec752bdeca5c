//! The deterministic engine of the Kinesis producer: shard maps, per-shard aggregation,
//! collection into `PutRecords` calls, per-shard rate limiting with AIMD, retries with backoff,
//! and exactly one outcome per record.
//!
//! The engine is *sans-IO*: it never reads a clock, never sleeps, never touches the network and
//! never spawns. Drivers (the `kpl` facade, the simulation tests) feed it records, answers and
//! the current time, and poll it for requests to send, per-record outcomes and its next
//! deadline. See [`Engine`] for the calling convention and a complete example.
//!
//! The [`transport`] module holds the seam to the outside world: our own request and response
//! types, the classified [`TransportError`], and the [`Transport`] trait the AWS transport and
//! the simulator implement.
#![forbid(unsafe_code)]

mod backoff;
mod config;
mod engine;
mod limiter;
pub mod memory;
pub mod metrics;
mod outcome;
mod shard_map;
pub mod stats;
mod stream;
pub mod time;
pub mod transport;

pub use config::{
    DEFAULT_MAX_OUTSTANDING_BYTES, EngineConfig, InvalidConfig, MAX_DURATION,
    MAX_RECORD_SIZE_LIMIT, MAX_USER_RECORD_SIZE_RANGE, MIN_COLLECTION_MAX_SIZE, OrderingMode,
    PUT_RECORDS_MAX_BYTES, PUT_RECORDS_MAX_ENTRIES,
};
pub use engine::{Engine, PreparedRecord, RequestId};
pub use outcome::{
    Attempt, Delivery, Event, Failure, FailureReason, FlushId, Record, RecordId, RejectReason,
    Rejected, codes,
};
pub use shard_map::ShardMap;
pub use stats::{ShardStats, StreamStats, Summary};
pub use stream::{InvalidStream, Stream};
pub use transport::{Request, Response, ShardId, Transport, TransportError, TransportErrorKind};

/// Keeps the code in this crate's README compiling and passing.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
