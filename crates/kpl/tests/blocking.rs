//! The blocking producer, used from plain threads.
#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::sync::Arc;
use std::time::Duration;
use support::SimProducer;

use kpl::{BlockingProducer, Config, DeliveryErrorKind, Record, Stream};
use kpl_sim::{Faults, SimTransport, UnansweredTransport};

fn producer() -> (BlockingProducer, SimTransport) {
    let mut config = Config::default();
    config.record_max_buffered_time = Duration::from_millis(5);
    SimProducer::seeded(5).config(config).build_blocking()
}

#[test]
fn threads_send_and_wait_for_their_outcomes() {
    let (producer, transport) = producer();
    let producer = Arc::new(producer);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let producer = Arc::clone(&producer);
            std::thread::spawn(move || {
                let stream = Stream::new("s").unwrap();
                let handles: Vec<_> = (0..250)
                    .map(|i| {
                        producer
                            .send_wait(Record::new(
                                stream.clone(),
                                format!("t{t}-{i}"),
                                vec![1; 10],
                            ))
                            .unwrap()
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.wait())
                    .filter(Result::is_ok)
                    .count()
            })
        })
        .collect();
    let delivered: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(delivered, 1_000);
    producer.flush_and_wait();
    assert_eq!(producer.outstanding_records(), 0);
    assert_eq!(
        transport.with_sim(|sim| sim.kcl_view("s").records.len()),
        1_000
    );
    let producer = Arc::try_unwrap(producer).unwrap();
    assert!(producer.shutdown(Duration::from_secs(1)).unsent.is_empty());
}

#[test]
fn dropping_the_blocking_producer_cancels_what_is_pending() {
    let (producer, transport) = producer();
    // Every call fails with a retryable error, so the record stays pending until the drop.
    transport.with_sim(|sim| {
        sim.set_faults(Faults {
            request_unavailable: 1.0,
            ..Faults::default()
        })
    });
    let pending = producer
        .send(Record::new(Stream::new("s").unwrap(), "k", vec![1]))
        .unwrap();
    drop(producer);
    let error = pending.wait().unwrap_err();
    assert_eq!(error.kind(), DeliveryErrorKind::Cancelled, "{error}");
}

#[test]
fn blocking_waits_honour_the_user_record_timeout_and_flush_can_time_out() {
    let mut config = Config::default();
    config.user_record_timeout = Duration::from_millis(100);
    let producer = BlockingProducer::builder()
        .config(config)
        .transport(UnansweredTransport)
        .build()
        .unwrap();
    let delivery = producer
        .send(Record::new(Stream::new("s").unwrap(), "k", vec![1]))
        .unwrap();
    // No call ever answers: the wait ends at the configured timeout, not at the record's TTL.
    let error = delivery.wait().unwrap_err();
    assert_eq!(error.kind(), DeliveryErrorKind::TimedOut);
    assert!(!producer.flush_and_wait_timeout(Duration::from_millis(50)));
    assert_eq!(producer.outstanding_records(), 1, "the record goes on");
    let report = producer.shutdown(Duration::ZERO);
    assert_eq!(report.unsent.len() + report.in_flight.len(), 1);
}

#[test]
fn threads_fire_and_forget_and_one_thread_reads_every_outcome() {
    let (producer, _transport) = producer();
    let (sender, mut outcomes) = producer.outcome_channel(32);
    let reader = std::thread::spawn(move || {
        let mut written = 0;
        while let Some(mut outcome) = outcomes.blocking_recv() {
            assert!(outcome.outcome.is_ok());
            // Each record's context names the thread and the record that sent it.
            let (t, i) = outcome.take_context::<(usize, usize)>().unwrap();
            assert!(t < 3 && i < 200);
            written += 1;
        }
        written
    });
    let senders: Vec<_> = (0..3_usize)
        .map(|t| {
            let sender = sender.clone();
            std::thread::spawn(move || {
                let stream = Stream::new("s").unwrap();
                for i in 0..200_usize {
                    let record = Record::new(stream.clone(), format!("t{t}-{i}"), vec![2; 10]);
                    sender.send_wait_with(record, (t, i)).unwrap();
                }
            })
        })
        .collect();
    for thread in senders {
        thread.join().unwrap();
    }
    drop(sender);
    producer.flush_and_wait();
    drop(producer);
    assert_eq!(reader.join().unwrap(), 600);
}
