//! Configuration: every key, its default and range, properties files, and docs/config.md.
#![allow(clippy::unwrap_used, reason = "tests")]

mod warnings;

use std::time::Duration;

use kpl::{Config, OrderingMode};
use proptest::prelude::*;
use warnings::Warnings;

#[test]
fn the_kpl_sample_properties_file_loads_with_its_quirks() {
    let text = include_str!("data/kpl-sample.properties");
    let config = Config::from_kpl_properties(text).unwrap();
    let mut expected = Config::default();
    expected.max_connections = 4;
    assert_eq!(config, expected);
    config.validate().unwrap();
}

#[test]
fn every_in_process_key_is_readable_by_field_name_too() {
    let mut config = Config::default();
    config.set("rate_limit", "90").unwrap();
    config.set("record_ttl", "1000").unwrap();
    config.set("ordering", "per_shard").unwrap();
    assert_eq!(config.rate_limit, 90);
    assert_eq!(config.record_ttl, Duration::from_secs(1));
    assert_eq!(config.ordering, OrderingMode::PerShard);
}

#[test]
fn unknown_keys_are_skipped_as_the_kpl_skips_them_or_refused_in_strict_mode() {
    let text = "# c\nRateLimt = 100\nRecordMaxBufferedTime = 250\n";
    let warnings = Warnings::default();
    let config = tracing::subscriber::with_default(warnings.clone(), || {
        Config::from_kpl_properties(text).unwrap()
    });
    let logged = warnings.text();
    assert!(
        logged.contains("RateLimt") && logged.contains("did you mean RateLimit"),
        "{logged}"
    );
    assert_eq!(config.rate_limit, Config::default().rate_limit);
    assert_eq!(config.record_max_buffered_time, Duration::from_millis(250));
    let error = Config::from_kpl_properties_strict(text).unwrap_err();
    assert_eq!(error.key(), Some("RateLimt"));
    assert_eq!(error.line(), Some(2));
    assert!(error.suggestions().contains(&"RateLimit"));
    assert!(
        error.to_string().contains("did you mean RateLimit"),
        "{error}"
    );
}

#[test]
fn invalid_values_name_the_key_the_value_and_the_range() {
    let error = Config::from_kpl_properties("CollectionMaxCount = 501").unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("CollectionMaxCount") && text.contains("501") && text.contains("1..=500"),
        "{text}"
    );
    // Java's parseBoolean would quietly read a typo as false; here it is an error.
    assert!(Config::from_kpl_properties("FailIfThrottled = ture").is_err());
    // A trailing ';' is only forgiven where it is the KPL sample's quirk, not inside a number.
    assert!(Config::from_kpl_properties("RateLimit = 1;0").is_err());
}

#[test]
fn validate_checks_fields_set_directly() {
    let mut config = Config::default();
    config.aggregation_max_size = 63;
    assert_eq!(
        config.validate().unwrap_err().key(),
        Some("AggregationMaxSize")
    );
    let mut config = Config::default();
    config.retry_backoff_cap = Duration::from_millis(1);
    assert_eq!(
        config.validate().unwrap_err().key(),
        Some("RetryBackoffCap")
    );
    let mut config = Config::default();
    config.max_outstanding_bytes = 100;
    assert_eq!(
        config.validate().unwrap_err().key(),
        Some("MaxOutstandingBytes")
    );
}

#[test]
fn endpoints_take_hosts_and_full_urls() {
    for ok in [
        "",
        "kinesis.eu-west-1.amazonaws.com",
        "localhost",
        "http://localhost:4567",
        "https://127.0.0.1:4443/",
        "http://kinesis.local",
    ] {
        let mut config = Config::default();
        config
            .set("KinesisEndpoint", ok)
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
        assert_eq!(config.kinesis_endpoint, ok);
    }
    for bad in [
        "ftp://host",
        "http://",
        "http://host:0",
        "http://host:99999",
        "host with space",
        "host/path",
    ] {
        let mut config = Config::default();
        let error = config.set("KinesisEndpoint", bad).unwrap_err();
        assert_eq!(error.key(), Some("KinesisEndpoint"), "{bad}");
    }
}

#[test]
fn regions_and_namespaces_follow_the_kpl_patterns() {
    let mut config = Config::default();
    for ok in ["us-east-1", "us-gov-west-1", "ap-southeast-2", ""] {
        config
            .set("Region", ok)
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in ["us-east", "US-EAST-1", "us-east-12", "useast1"] {
        assert!(config.set("Region", bad).is_err(), "{bad}");
    }
    assert!(config.set("MetricsNamespace", "AWS/Kinesis").is_err());
    assert!(config.set("MetricsNamespace", &"x".repeat(256)).is_err());
    config.set("MetricsNamespace", "MyApp").unwrap();
}

#[test]
fn secrets_never_appear_in_debug_or_errors() {
    let mut config = Config::default();
    config.set("ProxyPassword", "hunter2-proxy").unwrap();
    config
        .set("AwsAccessKeyId", "AKIAEXAMPLEEXAMPLE12")
        .unwrap();
    config
        .set("AwsSecretKey", "very-secret-key-material")
        .unwrap();
    config
        .set("AwsSessionToken", "session-token-material")
        .unwrap();
    let debug = format!("{config:?}");
    for secret in [
        "hunter2-proxy",
        "AKIAEXAMPLEEXAMPLE12",
        "very-secret-key-material",
        "session-token-material",
    ] {
        assert!(!debug.contains(secret), "{debug}");
    }
    config.validate().unwrap();
    let mut half = Config::default();
    half.set("AwsAccessKeyId", "AKIAEXAMPLEEXAMPLE12").unwrap();
    let error = half.validate().unwrap_err();
    assert!(!error.to_string().contains("AKIAEXAMPLEEXAMPLE12"));
}

#[test]
fn passwords_in_endpoint_and_proxy_values_are_never_printed_whatever_they_hold() {
    // A password with `/` (the authority seemed to end before the `@`), and a proxy host with
    // user information but no scheme.
    for (key, value, secret) in [
        (
            "KinesisEndpoint",
            "https://user:pa/ss@kinesis.example.com",
            "pa/ss",
        ),
        ("ProxyHost", "user:hunter2@proxy.corp", "hunter2"),
        (
            "CloudwatchEndpoint",
            "http://u:p?w#d@cw.example.com",
            "p?w#d",
        ),
    ] {
        let mut config = Config::default();
        let shown = match config.set(key, value) {
            Err(error) => format!("{error} {error:?}"),
            Ok(()) => format!("{config:?}"),
        };
        assert!(!shown.contains(secret), "{key}: {shown}");
    }
}

#[cfg(feature = "aws")]
#[test]
fn the_aws_transport_refuses_user_information_in_a_proxy_url_and_never_prints_it() {
    let mut settings = kpl_aws::AwsSettings::default();
    settings.sdk.region = Some("eu-west-1".to_owned());
    settings.proxy_host = Some("http://user:pa/ss@proxy.corp:3128".to_owned());
    assert!(!format!("{settings:?}").contains("pa/ss"));
    let error = kpl_aws::AwsTransport::new(settings.clone()).unwrap_err();
    let shown = format!("{error} {error:?}");
    assert!(
        shown.contains("ProxyUserName") && !shown.contains("pa/ss"),
        "{shown}"
    );
    settings.proxy_host = None;
    settings.sdk.endpoint_url = Some("ftp://user:pa/ss@kinesis.example.com".to_owned());
    let error = kpl_aws::AwsTransport::new(settings).unwrap_err();
    assert!(!format!("{error} {error:?}").contains("pa/ss"), "{error}");
}

/// (key, minimum, maximum) of every integer key, as the KPL states them.
const INTEGER_RANGES: &[(&str, u64, u64)] = &[
    ("AggregationMaxCount", 1, i64::MAX as u64),
    ("AggregationMaxSize", 64, 10_485_760),
    ("CollectionMaxCount", 1, 500),
    ("CollectionMaxSize", 52_224, i64::MAX as u64),
    ("ConnectTimeout", 100, 300_000),
    ("RequestTimeout", 100, 600_000),
    ("KinesisPort", 1, 65_535),
    ("CloudwatchPort", 1, 65_535),
    ("MaxConnections", 1, 256),
    ("MaxUserRecordSize", 64, 10_485_760),
    ("MetricsUploadDelay", 1, 60_000),
    ("RateLimit", 1, i64::MAX as u64),
    ("RecordMaxBufferedTime", 0, i64::MAX as u64),
    ("RecordTtl", 100, i64::MAX as u64),
    ("ProxyPort", 1, 65_535),
    ("MaxOutstandingRecords", 1, i64::MAX as u64),
    ("ShardMapRefreshInterval", 1_000, i64::MAX as u64),
];

proptest! {
    #[test]
    fn integer_keys_accept_their_range_and_refuse_outside_it(index in 0..INTEGER_RANGES.len(), pick in any::<u64>()) {
        let (key, min, max) = INTEGER_RANGES[index];
        let inside = min + pick % (max - min + 1).max(1);
        let mut config = Config::default();
        prop_assert!(config.set(key, &inside.to_string()).is_ok(), "{key} = {inside}");
        if min > 0 {
            let error = config.set(key, &(min - 1).to_string()).unwrap_err();
            prop_assert_eq!(error.key(), Some(key));
        }
        let above = max as u128 + 1 + u128::from(pick % 1000);
        let error = config.set(key, &above.to_string()).unwrap_err();
        prop_assert_eq!(error.key(), Some(key));
        prop_assert!(config.set(key, "twelve").is_err());
    }
}

#[test]
fn empty_credentials_mean_the_default_chain_and_a_lone_session_token_is_refused() {
    // A properties template with the keys present and empty.
    let config =
        Config::from_kpl_properties("AwsAccessKeyId =\nAwsSecretKey =\nAwsSessionToken =\n")
            .unwrap();
    assert_eq!(config.credentials, None);
    config.validate().unwrap();
    // Set, then emptied again.
    let mut config = Config::default();
    config
        .set("AwsAccessKeyId", "AKIAEXAMPLEEXAMPLE12")
        .unwrap();
    config
        .set("AwsSecretKey", "very-secret-key-material")
        .unwrap();
    config.set("AwsAccessKeyId", "").unwrap();
    config.set("AwsSecretKey", "").unwrap();
    assert_eq!(config.credentials, None);
    // A session token cannot sign anything alone.
    let mut token_only = Config::default();
    token_only
        .set("AwsSessionToken", "session-token-material")
        .unwrap();
    let error = token_only.validate().unwrap_err();
    let message = error.to_string();
    assert!(message.contains("AwsSessionToken"), "{message}");
    assert!(!message.contains("session-token-material"), "{message}");
}

#[test]
fn an_endpoint_with_a_password_is_refused_without_echoing_it() {
    let mut config = Config::default();
    let error = config
        .set("KinesisEndpoint", "http://user:hunter2@localhost:4567")
        .unwrap_err();
    let message = error.to_string();
    assert!(!message.contains("hunter2"), "{message}");
    assert!(message.contains("<redacted>@localhost:4567"), "{message}");
    config.kinesis_endpoint = "https://admin:s3cret@kinesis.example.com/".to_owned();
    let message = config.validate().unwrap_err().to_string();
    assert!(!message.contains("s3cret"), "{message}");
}

/// A producer on a local Kinesis endpoint would send its metrics to the region's CloudWatch:
/// the build says so, once, unless CloudWatch has an endpoint too or metrics are off.
#[tokio::test]
async fn a_local_kinesis_endpoint_without_a_cloudwatch_one_is_warned_about_at_build() {
    let warned = |configure: fn(&mut Config)| {
        let mut config = Config::default();
        config
            .set("KinesisEndpoint", "http://127.0.0.1:4567")
            .unwrap();
        config.set("Region", "us-east-1").unwrap();
        config.set("AwsAccessKeyId", "AKIDLOCAL").unwrap();
        config.set("AwsSecretKey", "secret").unwrap();
        configure(&mut config);
        let warnings = Warnings::default();
        let producer = tracing::subscriber::with_default(warnings.clone(), || {
            kpl::KinesisProducer::builder()
                .config(config)
                .build()
                .unwrap()
        });
        drop(producer);
        warnings.text().matches("CloudwatchEndpoint is not").count()
    };
    assert_eq!(warned(|_| {}), 1);
    assert_eq!(
        warned(|c| c
            .set("CloudwatchEndpoint", "http://127.0.0.1:4567")
            .unwrap()),
        0
    );
    assert_eq!(warned(|c| c.set("MetricsLevel", "none").unwrap()), 0);
}
