//! Sending many records under one lock: one result per record, in order, records back when
//! refused, and back-pressure that keeps the order.
#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::time::Duration;
use support::SimProducer;

use kpl::{Config, KinesisProducer, Record, SendErrorKind, Stream};
use kpl_sim::UnansweredTransport;

fn record(n: usize) -> Record {
    Record::new(Stream::new("s").unwrap(), format!("key-{n}"), vec![1; 20])
}

fn producer(max_outstanding: u64) -> KinesisProducer {
    let mut config = Config::default();
    config.max_outstanding_records = max_outstanding;
    SimProducer::seeded(9).config(config).build().0
}

#[tokio::test(start_paused = true)]
async fn a_batch_gives_one_result_per_record_in_order_with_bad_records_back() {
    let producer = producer(1_000_000);
    let stream = Stream::new("s").unwrap();
    let bad_key = Record::new(stream.clone(), "", vec![1]);
    let bad_hash = Record::new(stream, "k", vec![1]).with_explicit_hash_key("seven");
    let records = vec![
        record(0),
        bad_key.clone(),
        record(1),
        bad_hash.clone(),
        record(2),
    ];
    let results = producer.send_batch(records);
    assert_eq!(results.len(), 5);
    let refused: Vec<Record> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|e| e.record().clone())
        .collect();
    assert_eq!(
        refused,
        [bad_key, bad_hash],
        "the bad records come back, in order"
    );
    let mut ids = Vec::new();
    for result in results.into_iter().flatten() {
        ids.push(result.id().get());
        result.await.unwrap();
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "accepted in order: {ids:?}"
    );
    assert_eq!(ids.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_full_buffer_stops_the_batch_so_records_are_accepted_in_order() {
    let producer = KinesisProducer::builder()
        .config({
            let mut config = Config::default();
            config.max_outstanding_records = 10;
            config
        })
        .transport(UnansweredTransport)
        .build()
        .unwrap();
    let results = producer.send_batch((0..15).map(record));
    let kinds: Vec<Option<SendErrorKind>> = results
        .iter()
        .map(|r| r.as_ref().err().map(kpl::SendError::kind))
        .collect();
    assert!(kinds[..10].iter().all(Option::is_none));
    assert!(
        kinds[10..]
            .iter()
            .all(|k| *k == Some(SendErrorKind::BufferFull))
    );
    let back: Vec<Record> = results
        .into_iter()
        .skip(10)
        .map(|r| r.err().unwrap().into_record())
        .collect();
    assert_eq!(back, (10..15).map(record).collect::<Vec<_>>());
    producer.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn send_all_waits_for_space_and_delivers_everything_in_order() {
    let producer = producer(50);
    let results = producer.send_all((0..1_000).map(record)).await;
    assert_eq!(results.len(), 1_000);
    let mut last = None;
    for result in results {
        let future = result.unwrap();
        let id = future.id().get();
        assert!(last.is_none_or(|last| last < id), "in order");
        last = Some(id);
        future.await.unwrap();
    }
    producer.shutdown(Duration::from_secs(5)).await;
}
