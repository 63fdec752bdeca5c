//! A simulated Kinesis Data Streams service, in process and deterministic.
//!
//! [`SimKinesis`] keeps streams with shards and the service's exact hash ranges, enforces the
//! per-shard write limits and the `PutRecords` limits on a virtual clock, splits and merges
//! shards on request, injects scripted and random faults, and stores what was written so tests
//! can read every shard back and de-aggregate it with the KCL's rules ([`SimKinesis::kcl_view`]).
//!
//! [`SimTransport`] puts it behind the engine's [`Transport`](kpl_engine::Transport) trait, for
//! drivers and demos; [`Pair`] drives an [`Engine`](kpl_engine::Engine) against it in virtual
//! time, for simulation tests. With the `http` feature, `http` puts it behind HTTP on loopback
//! (`http::Endpoint`, with faults injected at the HTTP level) and offers a fast endpoint that
//! checks every record as a KCL consumer reads it (`http::VerifyingEndpoint`), for clients
//! that speak to Kinesis over the network.
//!
//! ```
//! use std::time::Instant;
//! use kpl_engine::{EngineConfig, Record, Stream};
//! use kpl_sim::{Pair, SimKinesis};
//!
//! let start = Instant::now();
//! let mut sim = SimKinesis::new(1);
//! sim.create_stream("orders", 4, start);
//! let mut pair = Pair::new(EngineConfig::default(), sim, start)?;
//! let stream = Stream::new("orders")?;
//! for i in 0..1_000 {
//!     pair.submit(Record::new(stream.clone(), format!("key-{i}"), vec![7u8; 100]))?;
//! }
//! pair.run_until_idle();
//! assert_eq!(pair.delivered().count(), 1_000);
//! assert_eq!(pair.sim.kcl_view("orders").records.len(), 1_000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod goodput;
mod harness;
#[cfg(feature = "http")]
pub mod http;
mod service;
mod transport;

pub use harness::{Outcome, Pair};
pub use service::{
    ConsumedRecord, Counters, DroppedByKcl, Enforcement, Faults, KclView, ScriptedFault, ShardInfo,
    SimError, SimKinesis, StoredRecord, StreamSnapshot,
};
pub use transport::{SimTransport, UnansweredTransport};

/// Keeps the code in this crate's README compiling and passing.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
