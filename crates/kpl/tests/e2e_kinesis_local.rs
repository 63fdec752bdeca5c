//! Streams addressed by ARN, end to end against kinesis-local (kinesalite refuses every
//! StreamARN). `cargo xtask ci` starts the server and sets `KPL_KINESIS_LOCAL_ENDPOINT`.
#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "end-to-end test helpers against a real server"
)]

mod e2e;

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::{admin, assert_failed_fast_as_missing, create_stream, read_shards};
use kpl::{KinesisProducer, Record, Stream};
use kpl_aggregation::ShardDeaggregation;

fn endpoint() -> String {
    e2e::endpoint("KPL_KINESIS_LOCAL_ENDPOINT")
}

fn producer() -> KinesisProducer {
    KinesisProducer::builder()
        .config(e2e::producer_config(&endpoint()))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_sent_to_a_stream_arn_arrive_on_their_shards() {
    let client = admin(&endpoint()).await;
    let name = format!("kpl-arn-{}", std::process::id());
    let arn = create_stream(&client, &name, 2).await;
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
    let mut read = 0;
    for stored in read_shards(&client, &stream).await {
        assert!(delivered.contains(&(stored.shard_id.clone(), stored.sequence_number.clone())));
        let ShardDeaggregation::Kept(users) = stored.deaggregated else {
            panic!("an aggregate would be dropped by a KCL consumer");
        };
        read += users.len();
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
    let error = producer
        .send(Record::new(stream, "k", "v"))
        .unwrap()
        .await
        .unwrap_err();
    assert_failed_fast_as_missing(&error);
}
