//! What the end-to-end tests share: a client for the local server, a producer configured for
//! it, stream creation, and reading every shard back as a KCL consumer would.
#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    dead_code,
    reason = "end-to-end test helpers against a real server; each test file uses a part"
)]

use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::{ShardIteratorType, StreamStatus};
use kpl::{Config, DeliveryError, DeliveryErrorKind, FailureReason, Stream, TransportErrorKind};
use kpl_aggregation::{
    HashKey, HashKeyRange, KinesisRecord, ShardDeaggregation, deaggregate_for_shard,
};

/// The endpoint of the server `cargo xtask` started, from `variable`.
pub(crate) fn endpoint(variable: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!("{variable} is not set: run these tests through `cargo xtask ci` (or `cargo xtask e2e`), which starts the server")
    })
}

/// An SDK client for setting streams up and reading them back.
pub(crate) async fn admin(endpoint: &str) -> Client {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "AKIDLOCALTEST",
            "local-secret",
            None,
            None,
            "static",
        ))
        .endpoint_url(endpoint)
        .load()
        .await;
    Client::new(&config)
}

/// A producer configuration for the local server, as a user would write it.
pub(crate) fn producer_config(endpoint: &str) -> Config {
    let mut config = Config::default();
    config.set("KinesisEndpoint", endpoint).unwrap();
    config.set("Region", "us-east-1").unwrap();
    config.set("AwsAccessKeyId", "AKIDLOCALTEST").unwrap();
    config.set("AwsSecretKey", "local-secret").unwrap();
    // A call that times out may have been applied, and its retry then writes a second copy:
    // the tests assert exactly-once, so they must not depend on how fast a loaded local server
    // answers. (No call is cut short here; the timeout only bounds a hung one.)
    config.set("RequestTimeout", "120000").unwrap();
    // These servers have no CloudWatch; the metrics uploads have tests of their own.
    config.set("MetricsLevel", "none").unwrap();
    config
}

/// Polls the server (an external process) until the stream is active; returns its ARN.
pub(crate) async fn wait_active(client: &Client, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let summary = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .unwrap();
        let summary = summary.stream_description_summary().unwrap();
        if summary.stream_status() == &StreamStatus::Active {
            return summary.stream_arn().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "stream {name} did not become active"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates a stream and waits until it is active; returns its ARN.
pub(crate) async fn create_stream(client: &Client, name: &str, shards: i32) -> String {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .unwrap();
    wait_active(client, name).await
}

/// One Kinesis record as read from a shard, de-aggregated with the KCL's rules.
pub(crate) struct ReadRecord {
    pub(crate) shard_id: String,
    pub(crate) sequence_number: String,
    pub(crate) range: HashKeyRange,
    pub(crate) deaggregated: ShardDeaggregation,
}

/// Reads every shard of `stream` (by name, or by ARN when it has one) from the start.
pub(crate) async fn read_shards(client: &Client, stream: &Stream) -> Vec<ReadRecord> {
    let arn = stream.arn().map(str::to_owned);
    let name = arn.is_none().then(|| stream.name().to_owned());
    let shards = client
        .list_shards()
        .set_stream_name(name.clone())
        .set_stream_arn(arn.clone())
        .send()
        .await
        .unwrap();
    let mut read = Vec::new();
    for shard in shards.shards() {
        let range = shard.hash_key_range().unwrap();
        let range = HashKeyRange::new(
            HashKey::parse_decimal(range.starting_hash_key()).unwrap(),
            HashKey::parse_decimal(range.ending_hash_key()).unwrap(),
        )
        .unwrap();
        let mut iterator = client
            .get_shard_iterator()
            .set_stream_name(name.clone())
            .set_stream_arn(arn.clone())
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator()
            .map(str::to_owned);
        while let Some(current) = iterator.take() {
            let page = client
                .get_records()
                .set_stream_arn(arn.clone())
                .shard_iterator(current)
                .limit(10_000)
                .send()
                .await
                .unwrap();
            for stored in page.records() {
                let record =
                    KinesisRecord::new(stored.partition_key(), stored.data().as_ref().to_vec());
                read.push(ReadRecord {
                    shard_id: shard.shard_id().to_owned(),
                    sequence_number: stored.sequence_number().to_owned(),
                    range,
                    deaggregated: deaggregate_for_shard(&record, range),
                });
            }
            let caught_up = page.records().is_empty() && page.millis_behind_latest() == Some(0);
            if !caught_up {
                iterator = page.next_shard_iterator().map(str::to_owned);
            }
        }
    }
    read
}

/// A record to a stream that does not exist fails with `NotFound` from the first answer that
/// says so, not by retries until its TTL.
pub(crate) fn assert_failed_fast_as_missing(error: &DeliveryError) {
    assert_eq!(
        error.kind(),
        DeliveryErrorKind::Failed(FailureReason::Terminal(TransportErrorKind::NotFound)),
        "{error}"
    );
    assert!(error.attempts().len() <= 2, "{error}");
    assert!(
        error
            .attempts()
            .iter()
            .all(|a| a.error_code() == Some("ResourceNotFoundException")),
        "{error}"
    );
}
