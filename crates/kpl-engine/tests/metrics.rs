//! The metrics the engine keeps per interval, with exact values for scripted runs.
#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::time::Duration;

use common::{drain, puts, ready_engine, stream};
use kpl_engine::metrics::{Metric, Series};
use kpl_engine::time::{Clock, SystemClock};
use kpl_engine::transport::{PutRecordsEntryResult, PutRecordsResponse};
use kpl_engine::{EngineConfig, Record, Response, ShardId};

const SHARD: &str = "shardId-000000000000";

/// (count, sum, min, max) of the one series of `metric` with `shard` and `code`.
fn stat(
    series: &[Series],
    metric: Metric,
    shard: Option<&str>,
    code: Option<&str>,
) -> (u64, f64, f64, f64) {
    let found: Vec<&Series> = series
        .iter()
        .filter(|s| {
            s.metric == metric
                && s.shard.as_ref().map(ShardId::as_str) == shard
                && s.error_code.as_deref() == code
        })
        .collect();
    assert_eq!(found.len(), 1, "{metric:?} {shard:?} {code:?}: {found:?}");
    let s = found[0].stat;
    (s.count, s.sum, s.min, s.max)
}

#[test]
fn a_thousand_records_with_one_in_ten_throttled_once_give_exact_statistics() {
    let start = SystemClock.now();
    let mut config = EngineConfig::default();
    // One user record per Kinesis record, so entries and records count alike.
    config.aggregation_enabled = false;
    config.rate_limit = 10_000;
    let mut engine = ready_engine(config, start);
    engine.take_metrics();
    for n in 0..1_000 {
        let record = Record::new(stream(), format!("key-{n}"), vec![7; 10]);
        engine.submit(record, start).unwrap();
    }
    engine.flush(start);
    let answered = start + Duration::from_millis(40);
    // First round: every tenth entry of each request is throttled.
    let mut throttled = 0;
    for (id, put) in puts(drain(&mut engine, start)) {
        let entries = (0..put.entries.len())
            .map(|i| {
                if i % 10 == 0 {
                    throttled += 1;
                    PutRecordsEntryResult::Failed {
                        code: "ProvisionedThroughputExceededException".into(),
                        message: "Rate exceeded for shard".into(),
                    }
                } else {
                    PutRecordsEntryResult::Written {
                        shard_id: ShardId::from(SHARD),
                        sequence_number: i.to_string().into(),
                    }
                }
            })
            .collect();
        let response = Response::PutRecords(PutRecordsResponse { entries });
        engine.handle_response(id, Ok(response), answered);
    }
    assert_eq!(throttled, 100);
    // The retries go out and are written.
    let mut now = answered;
    while engine.outstanding_records() > 0 {
        now = engine
            .poll_timeout()
            .unwrap_or(now + Duration::from_millis(1));
        engine.handle_timeout(now);
        for (id, put) in puts(drain(&mut engine, now)) {
            engine.handle_response(id, Ok(common::written(&put)), now);
        }
    }
    engine.sample_pending();
    let series = engine.take_metrics();
    let shard = Some(SHARD);
    assert_eq!(
        stat(&series, Metric::UserRecordsReceived, None, None),
        (1_000, 1_000.0, 1.0, 1.0)
    );
    assert_eq!(
        stat(&series, Metric::UserRecordsPending, None, None),
        (1, 0.0, 0.0, 0.0)
    );
    assert_eq!(
        stat(&series, Metric::UserRecordsPut, shard, None),
        (1_000, 1_000.0, 1.0, 1.0)
    );
    assert_eq!(
        stat(&series, Metric::UserRecordsDataPut, shard, None),
        (1_000, 10_000.0, 10.0, 10.0)
    );
    assert_eq!(
        stat(&series, Metric::RetriesPerRecord, shard, None),
        (1_000, 100.0, 0.0, 1.0)
    );
    let code = Some("ProvisionedThroughputExceededException");
    assert_eq!(
        stat(&series, Metric::ErrorsByCode, shard, code),
        (100, 100.0, 1.0, 1.0)
    );
    assert_eq!(
        stat(&series, Metric::AllErrors, shard, None),
        (1_100, 100.0, 0.0, 1.0)
    );
    assert_eq!(
        stat(&series, Metric::KinesisRecordsPut, shard, None),
        (1_100, 1_000.0, 0.0, 1.0)
    );
    let (count, ..) = stat(&series, Metric::KinesisRecordsDataPut, shard, None);
    assert_eq!(count, 1_000);
    // One wait per attempt: 1,000 first attempts and 100 retries.
    let (count, _, min, _) = stat(&series, Metric::BufferingTime, shard, None);
    assert_eq!((count, min), (1_100, 0.0));
    let (count, ..) = stat(&series, Metric::UserRecordsPerKinesisRecord, shard, None);
    assert_eq!(count, 1_100);
    let (requests, kinesis_records, ..) = stat(
        &series,
        Metric::KinesisRecordsPerPutRecordsRequest,
        None,
        None,
    );
    assert_eq!(kinesis_records, 1_100.0);
    let (user_requests, user_records, ..) =
        stat(&series, Metric::UserRecordsPerPutRecordsRequest, None, None);
    assert_eq!((user_requests, user_records), (requests, 1_100.0));
    let (calls, _, fastest, _) = stat(&series, Metric::RequestTime, None, None);
    assert_eq!(calls, requests);
    assert_eq!(fastest, 0.0, "the retries were answered at once");
    assert!(
        series.iter().all(|s| s.metric != Metric::UserRecordExpired),
        "nothing expired"
    );
    assert!(engine.take_metrics().is_empty(), "taken once");
}

#[test]
fn failed_records_and_whole_call_errors_count_where_the_kpl_counts_them() {
    let start = SystemClock.now();
    let mut config = EngineConfig::default();
    config.record_ttl = Duration::from_millis(500);
    let mut engine = ready_engine(config, start);
    engine.take_metrics();
    for n in 0..3 {
        let record = Record::new(stream(), format!("key-{n}"), vec![1; 5]);
        engine.submit(record, start).unwrap();
    }
    engine.flush(start);
    // The one call fails whole, again and again, until the records expire.
    let mut now = start;
    let mut failed_calls = 0;
    while engine.outstanding_records() > 0 {
        for (id, _) in puts(drain(&mut engine, now)) {
            failed_calls += 1;
            let error = kpl_engine::TransportError::new(
                kpl_engine::TransportErrorKind::ServiceUnavailable,
                "InternalFailure",
                "try again",
            );
            engine.handle_response(id, Err(error), now);
        }
        now = engine
            .poll_timeout()
            .unwrap_or(now + Duration::from_millis(1));
        engine.handle_timeout(now);
    }
    let series = engine.take_metrics();
    let shard = Some(SHARD);
    // Whole calls fail without a shard: at stream level, one error per call.
    let code = Some("InternalFailure");
    assert_eq!(
        stat(&series, Metric::ErrorsByCode, None, code).0,
        failed_calls
    );
    assert_eq!(
        stat(&series, Metric::AllErrors, None, None),
        (failed_calls, failed_calls as f64, 1.0, 1.0)
    );
    // Each record fails once, on the shard it was predicted for.
    assert_eq!(
        stat(&series, Metric::UserRecordsPut, shard, None),
        (3, 0.0, 0.0, 0.0)
    );
    assert_eq!(
        stat(&series, Metric::UserRecordExpired, shard, None),
        (3, 3.0, 1.0, 1.0)
    );
    // Its attempts: every failed call, and the expiry.
    let retries = stat(&series, Metric::RetriesPerRecord, shard, None);
    assert_eq!(retries.0, 3);
    assert_eq!(retries.1, 3.0 * failed_calls as f64);
    assert!(
        series.iter().all(|s| s.metric != Metric::KinesisRecordsPut),
        "no answer had entries"
    );
}
