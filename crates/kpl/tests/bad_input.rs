//! Bad input through the public API, as a table: each case gets a typed error that names the
//! field (and the limit where there is one), the caller's record back where there is a record,
//! and nothing panics.
#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::time::Duration;
use support::SimProducer;

use kpl::{
    Config, DeliveryErrorKind, FailureReason, KinesisProducer, Record, RejectReason, SendErrorKind,
    Stream, TransportErrorKind,
};
use kpl_sim::SimTransport;

fn producer() -> (KinesisProducer, SimTransport) {
    let mut config = Config::default();
    config.return_user_record_on_failure = true;
    SimProducer::seeded(9).config(config).build()
}

#[tokio::test(start_paused = true)]
async fn bad_records_are_refused_with_the_field_the_limit_and_the_record_back() {
    let (producer, _transport) = producer();
    let s = || Stream::new("s").unwrap();
    let too_big = vec![0; 1024 * 1024];
    // (record, kind, words the message must hold)
    let cases: Vec<(Record, SendErrorKind, &[&str])> = vec![
        (
            Record::new(s(), "", vec![1]),
            SendErrorKind::InvalidRecord,
            &["partition_key", "0 characters", "1..=256"],
        ),
        (
            Record::new(s(), "k".repeat(257), vec![1]),
            SendErrorKind::InvalidRecord,
            &["partition_key", "257 characters"],
        ),
        // 129 emoji are 258 UTF-16 code units, as the service counts them.
        (
            Record::new(s(), "😀".repeat(129), vec![1]),
            SendErrorKind::InvalidRecord,
            &["partition_key", "258 characters", "UTF-16"],
        ),
        (
            Record::new(s(), "k", vec![1]).with_explicit_hash_key("-1"),
            SendErrorKind::InvalidRecord,
            &["explicit_hash_key"],
        ),
        (
            Record::new(s(), "k", vec![1]).with_explicit_hash_key("+7"),
            SendErrorKind::InvalidRecord,
            &["explicit_hash_key"],
        ),
        (
            Record::new(s(), "k", vec![1]).with_explicit_hash_key("seven"),
            SendErrorKind::InvalidRecord,
            &["explicit_hash_key"],
        ),
        (
            Record::new(s(), "k", vec![1])
                .with_explicit_hash_key("340282366920938463463374607431768211456"),
            SendErrorKind::InvalidRecord,
            &["explicit_hash_key"],
        ),
        // Data plus key one byte over the stream's 1 MiB.
        (
            Record::new(s(), "k", too_big),
            SendErrorKind::TooLarge,
            &["1048577", "1048576"],
        ),
    ];
    for (record, kind, words) in cases {
        let error = producer.send(record.clone()).unwrap_err();
        let message = error.to_string();
        assert_eq!(error.kind(), kind, "{message}");
        for word in words {
            assert!(message.contains(word), "{word:?} missing from: {message}");
        }
        assert!(
            error.reject_reason().is_some(),
            "the engine's reason is kept"
        );
        assert_eq!(error.into_record(), record, "the record comes back intact");
    }
    assert_eq!(producer.outstanding_records(), 0, "nothing was accepted");
    // The reason keeps its numbers, and a parse error stays reachable as the source.
    let error = producer
        .send(Record::new(s(), "k", vec![0; 1024 * 1024]))
        .unwrap_err();
    assert_eq!(
        error.reject_reason(),
        Some(&RejectReason::TooLarge {
            size: 1024 * 1024 + 1,
            limit: 1024 * 1024
        })
    );
    let error = producer
        .send(Record::new(s(), "k", vec![1]).with_explicit_hash_key("seven"))
        .unwrap_err();
    assert!(matches!(
        error.reject_reason(),
        Some(RejectReason::ExplicitHashKey(_))
    ));
    assert!(std::error::Error::source(&error).is_some());
}

#[test]
fn bad_stream_addresses_are_refused_with_the_reason() {
    for address in [
        "",
        "has space",
        &"n".repeat(129),
        "arn:aws:kinesis:us-east-1:123:stream/s",
        "arn:aws:s3:::bucket",
    ] {
        let error = Stream::new(address).unwrap_err();
        assert!(!error.to_string().is_empty(), "{address:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn streams_the_service_does_not_have_fail_with_not_found_and_the_record_back() {
    let (producer, _transport) = producer();
    for address in [
        "missing",
        // The right name, another account's ARN.
        "arn:aws:kinesis:us-east-1:210987654321:stream/s",
        // The right name, another region's ARN.
        "arn:aws:kinesis:eu-west-1:123456789012:stream/s",
    ] {
        let record = Record::new(Stream::new(address).unwrap(), "k", vec![1]);
        let error = producer.send(record.clone()).unwrap().await.unwrap_err();
        assert_eq!(
            error.kind(),
            DeliveryErrorKind::Failed(FailureReason::Terminal(TransportErrorKind::NotFound)),
            "{address}: {error}"
        );
        assert_eq!(error.record(), Some(&record));
    }
    let report = producer.shutdown(Duration::from_secs(1)).await;
    assert!(report.unsent.is_empty());
}

#[test]
fn bad_configuration_names_the_key_and_what_is_allowed() {
    // (key, value, words the message must hold)
    let cases: [(&str, &str, &[&str]); 10] = [
        ("Region", "moon-1", &["Region", "moon-1"]),
        (
            "KinesisEndpoint",
            "ftp://host",
            &["KinesisEndpoint", "http"],
        ),
        ("KinesisPort", "0", &["KinesisPort"]),
        (
            "AggregationEnabled",
            "maybe",
            &["AggregationEnabled", "true, false"],
        ),
        (
            "MetricsLevel",
            "loud",
            &["MetricsLevel", "none, summary, detailed"],
        ),
        ("RecordTtl", "99", &["RecordTtl", "100"]),
        ("RateLimit", "0", &["RateLimit"]),
        ("MaxConnections", "257", &["MaxConnections", "256"]),
        ("CollectionMaxCount", "501", &["CollectionMaxCount", "500"]),
        ("AggregationMaxSize", "63", &["AggregationMaxSize", "64"]),
    ];
    for (key, value, words) in cases {
        let mut config = Config::default();
        let error = config.set(key, value).unwrap_err();
        let message = error.to_string();
        assert_eq!(error.key(), Some(key), "{message}");
        for word in words {
            assert!(message.contains(word), "{word:?} missing from: {message}");
        }
    }
    // Credentials: half a pair, or a token alone, named without their values.
    for (set, key) in [
        (
            &[("AwsAccessKeyId", "AKIAEXAMPLEEXAMPLE12")][..],
            "AwsSecretKey",
        ),
        (
            &[("AwsSessionToken", "token-material")][..],
            "AwsSessionToken",
        ),
    ] {
        let mut config = Config::default();
        for (k, v) in set {
            config.set(k, v).unwrap();
        }
        let error = config.validate().unwrap_err();
        assert_eq!(error.key(), Some(key));
        let message = error.to_string();
        assert!(!message.contains("AKIAEXAMPLE") && !message.contains("token-material"));
    }
    // Properties files: an unknown key, with a close match; a bad value, with its line's key.
    let error = Config::from_kpl_properties_strict("RecordTTL = 1000\n").unwrap_err();
    assert!(error.to_string().contains("RecordTtl"), "{error}");
    let error = Config::from_kpl_properties("# ok\nRateLimit = lots\n").unwrap_err();
    assert_eq!(error.key(), Some("RateLimit"), "{error}");
}
