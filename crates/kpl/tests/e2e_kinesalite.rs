//! End to end through the facade against kinesalite, a real Kinesis-compatible server.
//!
//! `cargo xtask ci` installs kinesalite 3.3.3, starts it on 127.0.0.1 and runs this file with
//! `KPL_KINESALITE_ENDPOINT` set (the target needs the `e2e` feature, so a plain `cargo test`
//! does not build it).
#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "end-to-end tests against a real server, timed by the wall clock"
)]

mod e2e;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use e2e::{admin, assert_failed_fast_as_missing, create_stream, read_shards, wait_active};
use kpl::{Config, Delivery, KinesisProducer, Record, Stream};
use kpl_aggregation::{HashKey, HashKeyRange, ShardDeaggregation};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn endpoint() -> String {
    e2e::endpoint("KPL_KINESALITE_ENDPOINT")
}

fn producer_config() -> Config {
    let mut config = e2e::producer_config(&endpoint());
    config.rng_seed = Some(11);
    config
}

fn unique(name: &str) -> String {
    format!("kpl-e2e-{name}-{}", std::process::id())
}

/// One user record as sent.
#[derive(Clone)]
struct Sent {
    key: String,
    explicit_hash_key: Option<u128>,
    data: Vec<u8>,
}

impl Sent {
    fn hash_key(&self) -> HashKey {
        self.explicit_hash_key
            .map_or_else(|| HashKey::from_partition_key(&self.key), HashKey::new)
    }
}

fn workload(rng: &mut SmallRng, first: usize, count: usize) -> Vec<Sent> {
    (first..first + count)
        .map(|n| {
            let key: String = (0..16)
                .map(|_| char::from(rng.random_range(b'a'..=b'z')))
                .collect();
            let mut data = format!("e2e-{n:08}|").into_bytes();
            // A few records near the 1 MiB limit (data + key), the rest small.
            let extra = if n % 25_000 == 7 {
                1_048_576 - 16 - data.len() - 64
            } else {
                rng.random_range(0..120)
            };
            data.resize(data.len() + extra, b'.');
            Sent {
                key,
                explicit_hash_key: (n % 97 == 0).then(|| rng.random::<u128>()),
                data,
            }
        })
        .collect()
}

fn record_number(data: &[u8]) -> usize {
    std::str::from_utf8(&data[4..12]).unwrap().parse().unwrap()
}

async fn produce(producer: &KinesisProducer, stream: &Stream, sent: &[Sent]) -> Vec<Delivery> {
    let mut futures = Vec::with_capacity(sent.len());
    for record in sent {
        let mut user = Record::new(stream.clone(), record.key.clone(), record.data.clone());
        if let Some(ehk) = record.explicit_hash_key {
            user = user.with_explicit_hash_key(ehk.to_string());
        }
        futures.push(producer.send_wait(user).await.unwrap());
    }
    let mut deliveries = Vec::with_capacity(futures.len());
    for future in futures {
        deliveries.push(future.await.unwrap());
    }
    deliveries
}

/// What a KCL consumer reads: record number → (shard, sequence number, shard range), and the
/// number of dropped aggregates.
async fn read_back(
    client: &Client,
    stream: &str,
) -> (BTreeMap<usize, Vec<(String, String, HashKeyRange)>>, usize) {
    let mut read: BTreeMap<usize, Vec<(String, String, HashKeyRange)>> = BTreeMap::new();
    let mut dropped = 0;
    for stored in read_shards(client, &Stream::new(stream).unwrap()).await {
        match stored.deaggregated {
            ShardDeaggregation::Kept(records) => {
                for user in records {
                    read.entry(record_number(user.data())).or_default().push((
                        stored.shard_id.clone(),
                        stored.sequence_number.clone(),
                        stored.range,
                    ));
                }
            }
            _ => dropped += 1,
        }
    }
    (read, dropped)
}

fn check(
    sent: &[Sent],
    deliveries: &[Delivery],
    read: &BTreeMap<usize, Vec<(String, String, HashKeyRange)>>,
) {
    assert_eq!(deliveries.len(), sent.len());
    for (record, delivery) in sent.iter().zip(deliveries) {
        let number = record_number(&record.data);
        let copies = read
            .get(&number)
            .unwrap_or_else(|| panic!("record {number} is not readable"));
        assert_eq!(
            copies.len(),
            1,
            "record {number} read {} times",
            copies.len()
        );
        let (shard, sequence, range) = &copies[0];
        assert_eq!(shard, delivery.shard_id().as_str(), "record {number}");
        assert_eq!(sequence, delivery.sequence_number(), "record {number}");
        assert!(
            range.contains(record.hash_key()),
            "record {number} is on a shard that does not own its hash key"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_read_back_and_survive_a_split_and_a_merge() {
    let client = admin(&endpoint()).await;
    let name = unique("main");
    create_stream(&client, &name, 4).await;
    let stream = Stream::new(&name).unwrap();
    let producer = KinesisProducer::builder()
        .config(producer_config())
        .build()
        .unwrap();
    let mut rng = SmallRng::seed_from_u64(2026);

    let first = workload(&mut rng, 0, 100_000);
    let deliveries = produce(&producer, &stream, &first).await;
    let (read, _) = read_back(&client, &name).await;
    check(&first, &deliveries, &read);
    assert_eq!(read.len(), 100_000);
    let written: u64 = producer
        .stats()
        .iter()
        .map(|(_, s)| s.kinesis_records_put)
        .sum();
    assert!(
        written < 2_000,
        "aggregation: {written} Kinesis records for 100,000 user records"
    );

    // Reshard behind the producer's back: split shard 0 in the middle, merge shards 2 and 3.
    client
        .split_shard()
        .stream_name(&name)
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key((1u128 << 125).to_string())
        .send()
        .await
        .unwrap();
    wait_active(&client, &name).await;
    client
        .merge_shards()
        .stream_name(&name)
        .shard_to_merge("shardId-000000000002")
        .adjacent_shard_to_merge("shardId-000000000003")
        .send()
        .await
        .unwrap();
    wait_active(&client, &name).await;

    let second = workload(&mut rng, 100_000, 20_000);
    let more = produce(&producer, &stream, &second).await;
    let (read, _dropped) = read_back(&client, &name).await;
    let all: Vec<Sent> = first.iter().chain(&second).cloned().collect();
    let every: Vec<Delivery> = deliveries.into_iter().chain(more).collect();
    check(&all, &every, &read);
    assert_eq!(read.len(), 120_000);
    // Whichever answer came first, the map read or a write on a child, no landing was re-sent
    // for want of a map that knew its shard.
    let stats = producer.stats();
    assert_eq!(
        stats
            .iter()
            .map(|(_, s)| s.unjudged_landings_resent)
            .sum::<u64>(),
        0
    );
    // The new records went to the children.
    let children = [
        "shardId-000000000004",
        "shardId-000000000005",
        "shardId-000000000006",
    ];
    assert!(every[100_000..].iter().all(|d| {
        ![
            "shardId-000000000000",
            "shardId-000000000002",
            "shardId-000000000003",
        ]
        .contains(&d.shard_id().as_str())
    }));
    assert!(
        every[100_000..]
            .iter()
            .any(|d| children.contains(&d.shard_id().as_str()))
    );
    let report = producer.shutdown(Duration::from_secs(10)).await;
    assert!(report.unsent.is_empty());
    client
        .delete_stream()
        .stream_name(&name)
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_fails_fast_without_retry_storms() {
    let producer = KinesisProducer::builder()
        .config(producer_config())
        .build()
        .unwrap();
    let stream = Stream::new(unique("missing")).unwrap();
    let mut futures = Vec::new();
    for i in 0..200 {
        futures.push(
            producer
                .send(Record::new(stream.clone(), format!("k{i}"), vec![1; 10]))
                .unwrap(),
        );
    }
    for future in futures {
        assert_failed_fast_as_missing(&future.await.unwrap_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_put_by_hand_is_readable_next_to_ours() {
    // The read-back helper itself, checked on a record written with the plain SDK.
    let client = admin(&endpoint()).await;
    let name = unique("plain");
    create_stream(&client, &name, 1).await;
    client
        .put_record()
        .stream_name(&name)
        .partition_key("k")
        .data(Blob::new(b"e2e-00000001|plain".to_vec()))
        .send()
        .await
        .unwrap();
    let (read, dropped) = read_back(&client, &name).await;
    assert_eq!(read.len(), 1);
    assert_eq!(dropped, 0);
    assert!(read.contains_key(&1));
    client
        .delete_stream()
        .stream_name(&name)
        .send()
        .await
        .unwrap();
}
