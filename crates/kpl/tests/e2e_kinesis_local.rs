//! Streams addressed by ARN, end to end against kinesis-local (kinesalite refuses every
//! StreamARN). `cargo xtask ci` starts the server and sets `KPL_KINESIS_LOCAL_ENDPOINT`.
#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "end-to-end test helpers against a real server"
)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::{ShardIteratorType, StreamStatus};
use kpl::{
    Config, DeliveryErrorKind, FailureReason, KinesisProducer, Record, Stream, TransportErrorKind,
};
use kpl_aggregation::{
    HashKey, HashKeyRange, KinesisRecord, ShardDeaggregation, deaggregate_for_shard,
};

fn endpoint() -> String {
    std::env::var("KPL_KINESIS_LOCAL_ENDPOINT")
        .expect("KPL_KINESIS_LOCAL_ENDPOINT is not set: run these tests through `cargo xtask ci`, which starts kinesis-local")
}

async fn admin() -> Client {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "AKIDLOCALTEST",
            "local-secret",
            None,
            None,
            "static",
        ))
        .endpoint_url(endpoint())
        .load()
        .await;
    Client::new(&config)
}

fn producer() -> KinesisProducer {
    let mut config = Config::default();
    config.set("KinesisEndpoint", &endpoint()).unwrap();
    config.set("Region", "us-east-1").unwrap();
    config.set("AwsAccessKeyId", "AKIDLOCALTEST").unwrap();
    config.set("AwsSecretKey", "local-secret").unwrap();
    KinesisProducer::builder().config(config).build().unwrap()
}

/// Creates a stream and returns its ARN once it is active (polling the external server).
async fn create(client: &Client, name: &str, shards: i32) -> String {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .unwrap();
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_sent_to_a_stream_arn_arrive_on_their_shards() {
    let client = admin().await;
    let name = format!("kpl-arn-{}", std::process::id());
    let arn = create(&client, &name, 2).await;
    let producer = producer();
    let stream = Stream::new(&arn).unwrap();
    assert_eq!(stream.arn(), Some(arn.as_str()));

    let mut futures = Vec::new();
    for i in 0..200 {
        futures.push(
            producer
                .send(Record::new(
                    stream.clone(),
                    format!("key-{i}"),
                    format!("arn-{i:04}"),
                ))
                .unwrap(),
        );
    }
    let mut delivered = BTreeSet::new();
    for future in futures {
        let delivery = future.await.unwrap();
        delivered.insert((
            delivery.shard_id().to_string(),
            delivery.sequence_number().to_owned(),
        ));
    }

    // Read back by ARN, with the server's own shard boundaries.
    let shards = client.list_shards().stream_arn(&arn).send().await.unwrap();
    let mut read = 0;
    for shard in shards.shards() {
        let range = shard.hash_key_range().unwrap();
        let range = HashKeyRange::new(
            HashKey::parse_decimal(range.starting_hash_key()).unwrap(),
            HashKey::parse_decimal(range.ending_hash_key()).unwrap(),
        )
        .unwrap();
        let mut iterator = client
            .get_shard_iterator()
            .stream_arn(&arn)
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
                .stream_arn(&arn)
                .shard_iterator(current)
                .send()
                .await
                .unwrap();
            for stored in page.records() {
                assert!(delivered.contains(&(
                    shard.shard_id().to_owned(),
                    stored.sequence_number().to_owned()
                )));
                let record =
                    KinesisRecord::new(stored.partition_key(), stored.data().as_ref().to_vec());
                let ShardDeaggregation::Kept(users) = deaggregate_for_shard(&record, range) else {
                    panic!("an aggregate would be dropped by a KCL consumer");
                };
                read += users.len();
            }
            if !(page.records().is_empty() && page.millis_behind_latest() == Some(0)) {
                iterator = page.next_shard_iterator().map(str::to_owned);
            }
        }
    }
    assert_eq!(read, 200);
    assert!(
        producer
            .shutdown(Duration::from_secs(10))
            .await
            .unsent
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_arn_of_a_stream_that_does_not_exist_fails_fast() {
    let producer = producer();
    let stream =
        Stream::new("arn:aws:kinesis:us-east-1:000000000000:stream/kpl-arn-missing").unwrap();
    let started = Instant::now();
    let error = producer
        .send(Record::new(stream, "k", "v"))
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(
        error.kind(),
        DeliveryErrorKind::Failed(FailureReason::Terminal(TransportErrorKind::NotFound)),
        "{error}"
    );
    assert!(error.attempts().len() <= 2);
    assert!(started.elapsed() < Duration::from_secs(10));
}
