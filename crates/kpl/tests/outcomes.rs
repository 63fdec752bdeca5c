//! Outcome channels: fire-and-forget sending, one outcome per accepted record, back-pressure
//! from a consumer that falls behind.
#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;
use support::SimProducer;

use kpl::{DeliveryErrorKind, KinesisProducer, Record, SendErrorKind, Stream};
use kpl_sim::UnansweredTransport;

fn producer() -> KinesisProducer {
    SimProducer::seeded(5).build().0
}

fn record(n: usize) -> Record {
    Record::new(Stream::new("s").unwrap(), format!("key-{n}"), vec![1; 20])
}

#[tokio::test(start_paused = true)]
async fn every_record_sent_without_a_future_has_exactly_one_outcome_in_the_channel() {
    let producer = producer();
    let (sender, mut outcomes) = producer.outcome_channel(64);
    let consumer = tokio::spawn(async move {
        let mut seen = BTreeSet::new();
        while let Some(outcome) = outcomes.recv().await {
            let delivery = outcome.outcome.unwrap();
            assert_eq!(delivery.id(), outcome.id);
            assert!(seen.insert(outcome.id.get()), "one outcome per record");
        }
        seen
    });
    let mut sent = BTreeSet::new();
    for n in 0..1_000 {
        sent.insert(sender.send_wait(record(n)).await.unwrap().get());
    }
    drop(sender);
    producer.flush_and_wait().await;
    producer.shutdown(Duration::from_secs(5)).await;
    drop(producer);
    // The receiver ends once every sender is gone and every outcome is out.
    assert_eq!(consumer.await.unwrap(), sent);
}

#[tokio::test(start_paused = true)]
async fn the_context_sent_with_a_record_comes_back_with_its_outcome() {
    let producer = producer();
    let (sender, mut outcomes) = producer.outcome_channel(16);
    let mut sent = Vec::new();
    for n in 0..4 {
        let id = sender
            .send_with(record(n), (n, format!("line {n}")))
            .unwrap();
        sent.push((id, n));
    }
    let missing = Record::new(Stream::new("missing").unwrap(), "k", vec![1]);
    let lost = sender
        .send_wait_with(missing, (99_usize, "lost".to_owned()))
        .await
        .unwrap();
    let plain = sender.send(record(5)).unwrap();
    drop(sender);
    producer.flush_and_wait().await;
    let mut seen = 0;
    while let Some(mut outcome) = tokio::time::timeout(Duration::ZERO, outcomes.recv())
        .await
        .ok()
        .flatten()
    {
        seen += 1;
        if outcome.id == plain {
            assert!(outcome.context::<(usize, String)>().is_none());
            continue;
        }
        // Asked for as another type, the context stays.
        assert!(outcome.take_context::<u64>().is_none());
        let (n, line) = outcome.take_context::<(usize, String)>().unwrap();
        assert_eq!(line, format!("line {n}").replace("line 99", "lost"));
        if outcome.id == lost {
            assert_eq!(n, 99);
            assert!(outcome.outcome.is_err(), "the stream does not exist");
        } else {
            assert!(sent.contains(&(outcome.id, n)), "its own context");
            assert!(outcome.outcome.is_ok());
        }
        assert!(
            outcome.take_context::<(usize, String)>().is_none(),
            "taken once"
        );
    }
    assert_eq!(seen, 6, "one outcome each");
    producer.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_consumer_that_falls_behind_holds_its_senders_back() {
    let producer = producer();
    let (sender, mut outcomes) = producer.outcome_channel(10);
    for n in 0..10 {
        sender.send(record(n)).unwrap();
    }
    // Every slot is taken (outcomes still to come or not yet received).
    let refused = sender.send(record(10)).unwrap_err();
    assert_eq!(refused.kind(), SendErrorKind::BufferFull);
    assert!(refused.to_string().contains("outcome channel"), "{refused}");
    assert_eq!(refused.into_record(), record(10), "the record comes back");
    producer.flush_and_wait().await;
    // A waiting sender goes on once the consumer takes one outcome.
    let waiting = tokio::spawn({
        let sender = sender.clone();
        async move { sender.send_wait(record(11)).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "no slot yet");
    assert!(outcomes.recv().await.unwrap().outcome.is_ok());
    assert!(waiting.await.unwrap().is_ok());
    assert!(sender.send(record(12)).is_err(), "full again");
    // A dropped receiver: no one would learn the outcome, so nothing is accepted.
    drop(outcomes);
    let refused = sender.send(record(13)).unwrap_err();
    assert_eq!(refused.kind(), SendErrorKind::NoOutcomeReceiver);
    producer.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn records_left_when_the_producer_is_dropped_come_out_cancelled() {
    let producer = KinesisProducer::builder()
        .transport(UnansweredTransport)
        .build()
        .unwrap();
    let (sender, mut outcomes) = producer.outcome_channel(8);
    let mut sent = BTreeSet::new();
    for n in 0..5 {
        sent.insert(sender.send(record(n)).unwrap().get());
    }
    drop(sender);
    drop(producer);
    let mut cancelled = BTreeSet::new();
    while let Some(outcome) = outcomes.recv().await {
        let error = outcome.outcome.unwrap_err();
        assert_eq!(error.kind(), DeliveryErrorKind::Cancelled);
        cancelled.insert(outcome.id.get());
    }
    assert_eq!(cancelled, sent);
}

#[test]
fn records_left_when_the_runtime_goes_away_come_out_cancelled() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (producer, sender, mut outcomes) = runtime.block_on(async {
        let producer = KinesisProducer::builder()
            .transport(UnansweredTransport)
            .build()
            .unwrap();
        let (sender, outcomes) = producer.outcome_channel(8);
        (producer, sender, outcomes)
    });
    let mut sent = BTreeSet::new();
    for n in 0..5 {
        sent.insert(sender.send(record(n)).unwrap().get());
    }
    // The runtime stops under a producer still held: its driver task is dropped, not ended.
    drop(runtime);
    drop(sender);
    drop(producer);
    let mut cancelled = BTreeSet::new();
    while let Some(outcome) = outcomes.blocking_recv() {
        let error = outcome.outcome.unwrap_err();
        assert_eq!(error.kind(), DeliveryErrorKind::Cancelled);
        cancelled.insert(outcome.id.get());
    }
    assert_eq!(cancelled, sent);
}
