//! The bad-input and hostile-answer matrix: a Kinesis endpoint (the simulated service behind
//! HTTP) that answers as no service does — messages of 64 KiB, codes of hundreds of characters
//! with control bytes, miscounted, oversized and malformed answers — credential providers that
//! are slow or fail, and URLs that carry passwords. In every case each record ends in exactly
//! one outcome, nothing is left outstanding, what is kept of the service's text is capped, and
//! no secret is printed.
#![cfg(feature = "aws")]
#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use support::SlowCredentials;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kpl::time::{Clock, SystemClock};
use kpl::{
    Config, DeliveryError, DeliveryErrorKind, KinesisProducer, ProducerBuilder, Record, Stream,
};
use kpl_sim::SimKinesis;
use kpl_sim::http::{Endpoint, Fault};

/// What the producer keeps of an error at most (see `docs/guarantees.md`).
const MAX_CODE: usize = 128;
const MAX_MESSAGE: usize = 512;

fn endpoint() -> Endpoint {
    let mut sim = SimKinesis::new(21);
    sim.create_stream("s", 2, SystemClock.now());
    Endpoint::start(sim).unwrap()
}

fn builder(endpoint: &Endpoint, configure: impl FnOnce(&mut Config)) -> ProducerBuilder {
    let mut config = Config::default();
    config.set("KinesisEndpoint", &endpoint.endpoint()).unwrap();
    config.set("Region", "us-east-1").unwrap();
    config.set("AwsAccessKeyId", "AKIDHOSTILE").unwrap();
    config.set("AwsSecretKey", "hostile-secret").unwrap();
    config.set("MetricsLevel", "none").unwrap();
    config.set("RecordMaxBufferedTime", "20").unwrap();
    config.set("RequestTimeout", "1000").unwrap();
    configure(&mut config);
    KinesisProducer::builder().config(config)
}

/// Sends `count` records and waits for every outcome; checks that each record got exactly one
/// and that nothing is left outstanding, then returns the failures.
async fn outcomes(producer: &KinesisProducer, count: usize) -> Vec<DeliveryError> {
    let stream = Stream::new("s").unwrap();
    let futures: Vec<_> = (0..count)
        .map(|n| {
            let record = Record::new(stream.clone(), format!("key-{n}"), vec![3; 20]);
            producer.send(record).unwrap()
        })
        .collect();
    producer.flush();
    let mut failures = Vec::new();
    for future in futures {
        if let Err(failure) = future.await {
            failures.push(failure);
        }
    }
    assert_eq!(producer.outstanding_records(), 0);
    assert_eq!(producer.outstanding_bytes(), 0);
    failures
}

/// What every attempt kept of the service's text is within the caps.
fn assert_capped(failures: &[DeliveryError]) {
    for failure in failures {
        for attempt in failure.attempts() {
            let code = attempt.error_code().unwrap_or_default();
            let message = attempt.error_message().unwrap_or_default();
            assert!(code.len() <= MAX_CODE, "{} bytes of code", code.len());
            assert!(
                message.len() <= MAX_MESSAGE,
                "{} bytes of message",
                message.len()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_errors_with_64_kib_messages_and_odd_codes_are_capped_and_end_every_record() {
    let odd_code: &'static str =
        Box::leak(format!("Weird\u{1b}]52;c;{}\u{7f}Code", "é".repeat(200)).into_boxed_str());
    for code in ["InternalFailure", odd_code] {
        let endpoint = endpoint();
        endpoint.with_sim(|sim| {
            sim.set_failure_message_len(64 * 1024);
            for (shard, _) in sim.open_shards("s") {
                sim.set_shard_failing("s", shard.as_str(), Some(code))
                    .unwrap();
            }
        });
        let producer = builder(&endpoint, |config| {
            config.set("AggregationEnabled", "false").unwrap();
            // Answers of ten 64 KiB messages: read, under the cap on an answer's size.
            config.set("CollectionMaxCount", "10").unwrap();
            config.set("RecordTtl", "1500").unwrap();
        })
        .build()
        .unwrap();
        let failures = outcomes(&producer, 40).await;
        assert_eq!(failures.len(), 40, "every record failed");
        assert_capped(&failures);
        // The records that were answered (not every one is before its time runs out, behind a
        // failing shard's backoff) carry the message cut.
        let cut = failures
            .iter()
            .filter(|failure| {
                failure
                    .attempts()
                    .iter()
                    .any(|a| a.error_message().is_some_and(|m| m.ends_with('…')))
            })
            .count();
        assert!(cut > 0, "{failures:?}");
        producer.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miscounted_oversized_and_malformed_answers_end_in_outcomes() {
    let endpoint = endpoint();
    let producer = builder(&endpoint, |_| {}).build().unwrap();
    assert!(outcomes(&producer, 1).await.is_empty(), "the map is read");
    // A miscounted answer fails its records; the others are retried and delivered.
    for (fault, fails) in [
        (Fault::WrongCount, true),
        (
            Fault::Oversized {
                bytes: 2 * kpl::aws::MAX_ANSWER_BYTES,
            },
            false,
        ),
        (Fault::Malformed { applied: false }, false),
    ] {
        endpoint.script([fault.clone()]);
        let failures = outcomes(&producer, 10).await;
        assert_capped(&failures);
        if fails {
            assert!(!failures.is_empty(), "{fault:?}");
            for failure in &failures {
                assert_eq!(
                    failure.kind(),
                    DeliveryErrorKind::Failed(kpl::FailureReason::RecordCountMismatch),
                    "{fault:?}"
                );
            }
        } else {
            assert!(failures.is_empty(), "{fault:?}: {failures:?}");
        }
    }
    producer.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_failing_credential_providers_end_every_record_in_one_outcome() {
    for (delay, fails) in [(300, false), (0, true), (300, true)] {
        let endpoint = endpoint();
        let loads = Arc::new(AtomicU64::new(0));
        let provider = SlowCredentials {
            delay: Duration::from_millis(delay),
            fails,
            loads: Arc::clone(&loads),
        };
        let producer = builder(&endpoint, |config| {
            config.set("RequestTimeout", "100").unwrap();
            config.set("RecordTtl", "2000").unwrap();
        })
        .credentials_provider(provider)
        .build()
        .unwrap();
        let failures = outcomes(&producer, 10).await;
        producer.shutdown(Duration::from_secs(1)).await;
        if fails {
            assert_eq!(failures.len(), 10);
            assert_eq!(endpoint.calls_of("PutRecords"), 0);
            let text = format!("{:?}", failures[0]);
            assert!(text.contains("no role for you"), "{text}");
        } else {
            assert!(failures.is_empty(), "{failures:?}");
            assert_eq!(loads.load(Ordering::SeqCst), 1, "asked once");
        }
        assert!(!format!("{failures:?}").contains("slow-secret"));
    }
}

#[test]
fn urls_with_passwords_are_refused_or_redacted_wherever_they_are_printed() {
    let secret = "pa/ss?w#rd";
    for (key, value) in [
        (
            "KinesisEndpoint",
            format!("https://user:{secret}@kinesis.example.com"),
        ),
        (
            "KinesisEndpoint",
            format!("ftp://user:{secret}@kinesis.example.com"),
        ),
        (
            "CloudwatchEndpoint",
            format!("user:{secret}@monitoring.example.com"),
        ),
        ("ProxyHost", format!("user:{secret}@proxy.example.com")),
        (
            "ProxyHost",
            format!("http://user:{secret}@proxy.example.com:3128"),
        ),
    ] {
        let mut config = Config::default();
        let printed = match config.set(key, &value) {
            Err(error) => format!("{error} {error:?}"),
            Ok(()) => match config.validate() {
                Err(error) => format!("{error} {error:?}"),
                Ok(()) => format!("{config:?}"),
            },
        };
        assert!(
            !printed.contains("pa/ss") && !printed.contains("w#rd"),
            "{key}: {printed}"
        );
    }
    // The transport's own settings: a proxy URL with a password in it is refused, and the
    // endpoint's is redacted in Debug.
    let mut settings = kpl_aws::AwsSettings::default();
    settings.sdk.region = Some("us-east-1".to_owned());
    settings.proxy_host = Some(format!("http://user:{secret}@proxy.example.com:3128"));
    let refused = kpl_aws::AwsTransport::new(settings).unwrap_err();
    let printed = format!("{refused} {refused:?}");
    assert!(!printed.contains("pa/ss"), "{printed}");
    let mut settings = kpl_aws::AwsSettings::default();
    settings.sdk.region = Some("us-east-1".to_owned());
    settings.sdk.endpoint_url = Some(format!("https://user:{secret}@kinesis.example.com"));
    let printed = format!("{settings:?}");
    assert!(
        !printed.contains("pa/ss") && printed.contains("kinesis.example.com"),
        "{printed}"
    );
}
