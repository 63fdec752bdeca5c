//! Compile-time checks that the public types can cross threads and tasks.

use kpl::{
    BlockingDelivery, BlockingProducer, BuildError, Config, ConfigError, Delivery, DeliveryError,
    DeliveryFuture, KinesisProducer, OutcomeReceiver, OutcomeSender, ProducerBuilder, Record,
    RecordOutcome, SendError, ShutdownReport, Stream,
};

use std::future::Future;

fn send_sync<T: Send + Sync>() {}
fn send_static<T: Send + 'static>() {}

#[test]
fn public_types_are_send_and_sync() {
    send_sync::<KinesisProducer>();
    send_sync::<BlockingProducer>();
    send_sync::<Config>();
    send_sync::<Record>();
    send_sync::<Stream>();
    send_sync::<Delivery>();
    send_sync::<DeliveryError>();
    send_sync::<SendError>();
    send_sync::<ConfigError>();
    send_sync::<BuildError>();
    send_sync::<ShutdownReport>();
    send_sync::<RecordOutcome>();
    send_sync::<OutcomeSender>();
    send_static::<OutcomeReceiver>();
    send_static::<ProducerBuilder>();
    send_static::<BlockingDelivery>();
}

#[test]
fn futures_are_send_and_static() {
    send_static::<DeliveryFuture>();
    fn future_of<F: Future + Send>(_: &F) {}
    // The check is the type-checking of the calls below, which never run: this test fails to
    // compile, not to pass, if one of the futures stops being `Send`.
    let build = || -> Option<KinesisProducer> { None };
    if let Some(producer) = build() {
        future_of(&producer.flush_and_wait());
        future_of(&producer.shutdown(std::time::Duration::ZERO));
        future_of(&producer.send_wait(Record::new(
            Stream::new("s").unwrap_or_else(|_| unreachable!()),
            "k",
            "v",
        )));
    }
}
