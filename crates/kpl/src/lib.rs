//! The Kinesis Producer Library, in process.
//!
//! `kpl` puts records into Amazon Kinesis Data Streams the way the AWS KPL does — it predicts
//! each record's shard, packs records for the same shard into aggregates, batches them into
//! `PutRecords` calls, rate-limits per shard and retries — without the KPL's sidecar daemon, and
//! with back-pressure, backoff, an ordering mode and typed errors.
//!
//! - [`KinesisProducer`]: the async producer (tokio). [`send`](KinesisProducer::send) never
//!   waits and returns a [`DeliveryFuture`]; [`send_wait`](KinesisProducer::send_wait) waits for
//!   buffer space; [`flush_and_wait`](KinesisProducer::flush_and_wait) resolves when everything sent
//!   before it has an outcome; [`shutdown`](KinesisProducer::shutdown) delivers what it can by a
//!   deadline and hands back the rest.
//! - [`BlockingProducer`]: the same for plain threads.
//! - [`Config`]: every KPL key with the KPL's defaults and ranges, readable from a KPL
//!   `.properties` file (`docs/config.md` lists them).
//!
//! ```
//! use std::time::Duration;
//! use kpl::{KinesisProducer, Record, Stream, TokioClock};
//! use kpl::time::Clock;
//! use kpl_sim::{SimKinesis, SimTransport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A simulated stream stands in for Kinesis here; with AWS, give the AWS transport instead.
//! let mut sim = SimKinesis::new(1);
//! sim.create_stream("orders", 2, TokioClock.now());
//! let producer = KinesisProducer::builder()
//!     .transport(SimTransport::new(sim, TokioClock))
//!     .build()?;
//!
//! let stream = Stream::new("orders")?;
//! let delivery = producer.send(Record::new(stream, "customer-42", "hello"))?.await?;
//! println!("written to {} as {}", delivery.shard_id(), delivery.sequence_number());
//!
//! let report = producer.shutdown(Duration::from_secs(5)).await;
//! assert!(report.unsent.is_empty());
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod blocking;
mod clock;
mod completion;
mod config;
mod error;
pub mod metrics;
mod producer;
mod properties;
mod runtime_probe;
mod wiring;

pub use blocking::{
    BlockingDelivery, BlockingOutcomeSender, BlockingProducer, BlockingProducerBuilder,
};
pub use clock::TokioClock;
pub use completion::DeliveryFuture;
pub use config::{Config, StaticCredentials};
pub use error::{
    AttemptFailure, BuildError, ConfigError, DeliveryError, DeliveryErrorKind, SendError,
    SendErrorKind,
};
pub use kpl_aggregation::OuterPartitionKey;
pub use kpl_engine::metrics::Metric;
pub use kpl_engine::metrics::MetricsExporter;
pub use kpl_engine::time;
pub use kpl_engine::transport;
pub use kpl_engine::{
    Attempt, Delivery, FailureReason, InvalidStream, OrderingMode, Record, RecordId, RejectReason,
    ShardId, ShardStats, Stream, StreamStats, Summary, Transport, TransportError,
    TransportErrorKind, codes,
};
pub use metrics::{
    MetricReading, MetricsDimension, MetricsExports, MetricsGranularity, MetricsLevel,
};
pub use producer::{
    KinesisProducer, OutcomeReceiver, OutcomeSender, ProducerBuilder, RecordOutcome, ShutdownReport,
};

/// The CloudWatch exporter, to upload the metrics with other settings than the producer's
/// (another region, endpoint or credentials, like the KPL's metrics credentials provider):
/// give it to [`ProducerBuilder::metrics_exporter`].
#[cfg(feature = "cloudwatch")]
pub use kpl_cloudwatch::{CloudWatchExporter, CloudWatchSettings};

/// The AWS transport's refusal of a setting, the source of [`BuildError::UnsupportedSetting`].
#[cfg(feature = "aws")]
pub use kpl_aws::AwsSettingsError;

/// The credentials types of the AWS SDK, for [`ProducerBuilder::credentials_provider`]: a
/// provider of your own implements [`ProvideCredentials`](aws::ProvideCredentials) (or use any of
/// `aws-config`'s).
#[cfg(feature = "aws")]
pub mod aws {
    pub use aws_credential_types::Credentials;
    pub use aws_credential_types::provider::{
        ProvideCredentials, SharedCredentialsProvider, error::CredentialsError,
        future::ProvideCredentials as CredentialsFuture,
    };
    pub use kpl_aws::{AwsTransport, MAX_ANSWER_BYTES};

    /// The AWS transport the producer would make for `config` (its region settled, its proxy,
    /// trust store and credentials set): for an application's own Kinesis calls (reading the
    /// stream, say) to go the producer's way, through [`AwsTransport::sdk_config`].
    pub fn transport(config: &crate::Config) -> Result<AwsTransport, crate::BuildError> {
        crate::wiring::aws_transport(config, None)
    }
}

/// Keeps the code in this crate's README compiling and passing.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct CrateReadme;

/// The generators of the reference pages `docs/config.md` and `docs/metrics.md`, for the
/// repository's test that keeps them in step (`tests/docs_in_sync.rs`). Not public API.
#[doc(hidden)]
pub mod __reference {
    /// `docs/config.md`: every configuration key, its default and its range.
    pub fn config_markdown() -> String {
        crate::config::reference_markdown()
    }

    /// `docs/metrics.md`: every metric, its unit, level and dimensions.
    pub fn metrics_markdown() -> String {
        crate::metrics::reference_markdown()
    }
}
