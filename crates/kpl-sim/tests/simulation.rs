//! Engine + simulated Kinesis + virtual time, driven until idle, with the producer's invariants
//! checked after every run.
#![allow(clippy::unwrap_used, reason = "test helpers")]

use std::collections::BTreeMap;
use std::time::Duration;

use kpl_aggregation::{HashKey, HashKeyRange, OuterPartitionKey};
use kpl_engine::time::{Clock, SystemClock};
use kpl_engine::{
    EngineConfig, FailureReason, OrderingMode, Record, RecordId, RejectReason, Stream,
    TransportErrorKind,
};
use kpl_sim::{Faults, Outcome, Pair, ScriptedFault, SimKinesis};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const STREAM: &str = "events";

fn stream() -> Stream {
    Stream::new(STREAM).unwrap()
}

fn pair_with(config: EngineConfig, shards: u32, seed: u64) -> Pair {
    let start = SystemClock.now();
    let mut sim = SimKinesis::new(seed);
    sim.create_stream(STREAM, shards, start);
    Pair::new(config, sim, start).unwrap()
}

/// Data that names its record, so every copy read back can be traced to its submission.
fn data_for(n: u64, extra: usize) -> Vec<u8> {
    let mut data = format!("record-{n:08}|").into_bytes();
    data.resize(data.len() + extra, b'x');
    data
}

fn record_number(data: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(data.get(7..15)?).ok()?;
    text.parse().ok()
}

/// A partition key and, when given, the explicit hash key: what decides a record's shard.
type RoutingKey<'a> = (&'a str, Option<&'a str>);
/// Where a KCL consumer read a record: sequence number and sub-sequence number.
type Position = (String, u64);

/// What every run must satisfy, whatever the faults.
struct Invariants {
    ordered_keys: bool,
}

/// Records a KCL consumer reads more than once, by cause. A record may be read twice only if
/// one of its attempts had an outcome the producer could not know; never because of a reshard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Duplicates {
    /// A call timed out: the service may have applied it before the answer was lost.
    after_timeout: u32,
    /// An aggregate landed on a shard that no shard map read in time could judge, and its
    /// records were re-sent alone.
    after_unjudged_landing: u32,
}

/// Checks the invariants; returns the records read more than once, each attributed to its
/// cause (a duplicate without one fails the check).
fn check(pair: &Pair, invariants: &Invariants) -> Duplicates {
    assert!(
        pair.repeated_outcomes().is_empty(),
        "records with two outcomes: {:?}",
        pair.repeated_outcomes()
    );
    assert_eq!(
        pair.engine.outstanding_records(),
        0,
        "outstanding records left"
    );
    assert_eq!(pair.engine.outstanding_bytes(), 0);
    for id in pair.submitted().keys() {
        assert!(
            pair.outcomes().contains_key(id),
            "record {id:?} has no outcome"
        );
    }
    assert_eq!(
        pair.sim.counters().limit_violations,
        0,
        "a request broke a service limit"
    );

    let by_number: BTreeMap<u64, RecordId> = pair
        .submitted()
        .iter()
        .map(|(id, record)| (record_number(record.data()).unwrap(), *id))
        .collect();
    let view = pair.sim.kcl_view(STREAM);
    assert_eq!(view.passed_through, 0, "an aggregate failed to decode");
    // Every copy a KCL consumer receives, by the record number in its data.
    let mut copies: BTreeMap<u64, Vec<(String, String, u64)>> = BTreeMap::new();
    for consumed in &view.records {
        let number = record_number(&consumed.data).unwrap();
        copies.entry(number).or_default().push((
            consumed.shard_id.to_string(),
            consumed.sequence_number.clone(),
            consumed.sub_sequence_number,
        ));
    }
    let mut delivered_at: BTreeMap<RecordId, (String, u64)> = BTreeMap::new();
    for (id, outcome) in pair.outcomes() {
        let record = &pair.submitted()[id];
        let number = record_number(record.data()).unwrap();
        match outcome {
            Outcome::Delivered(delivery) => {
                let found = copies
                    .get(&number)
                    .into_iter()
                    .flatten()
                    .find(|(shard, seq, _)| {
                        shard == delivery.shard_id().as_str() && seq == delivery.sequence_number()
                    });
                let Some((_, seq, sub)) = found else {
                    panic!(
                        "record {number} reported at {} {} is not readable there by a KCL consumer",
                        delivery.shard_id(),
                        delivery.sequence_number()
                    );
                };
                delivered_at.insert(*id, (seq.clone(), *sub));
                let last = delivery.attempts().last().unwrap();
                assert!(last.is_success());
                assert_eq!(last.shard_id(), Some(delivery.shard_id()));
            }
            Outcome::Failed(failure) => {
                assert_eq!(
                    failure.record(),
                    record,
                    "the failed record is handed back intact"
                );
                assert!(
                    !failure.attempts().is_empty() || failure.reason() == FailureReason::Abandoned
                );
            }
        }
    }
    // A dropped aggregate is only ever a copy we re-sent: none of its records counts as written
    // by it.
    for dropped in &view.dropped {
        for consumed in &dropped.records {
            let number = record_number(&consumed.data).unwrap();
            let id = by_number[&number];
            if let Some(Outcome::Delivered(delivery)) = pair.outcomes().get(&id) {
                assert_ne!(
                    delivery.sequence_number(),
                    dropped.sequence_number,
                    "record {number} was reported written by an aggregate the KCL drops"
                );
            }
        }
    }
    let mut duplicates = Duplicates::default();
    for (number, read) in &copies {
        if read.len() < 2 {
            continue;
        }
        let attempts = match &pair.outcomes()[&by_number[number]] {
            Outcome::Delivered(delivery) => delivery.attempts(),
            Outcome::Failed(failure) => failure.attempts(),
        };
        let had = |code: &str| attempts.iter().any(|a| a.error_code() == Some(code));
        if had("RequestTimeout") {
            duplicates.after_timeout += 1;
        } else if had("UnjudgedLanding") {
            duplicates.after_unjudged_landing += 1;
        } else {
            panic!(
                "record {number} is read {} times ({read:?}), but none of its attempts had an unknown outcome: {attempts:#?}",
                read.len()
            );
        }
    }
    if invariants.ordered_keys {
        // Order holds per routing key: the partition key, or the explicit hash key when given.
        let mut last_by_key: BTreeMap<RoutingKey<'_>, (RecordId, Position)> = BTreeMap::new();
        for (id, position) in &delivered_at {
            let record = &pair.submitted()[id];
            let key = (record.partition_key(), record.explicit_hash_key());
            if let Some((previous_id, previous)) = last_by_key.get(&key) {
                assert!(
                    previous < position,
                    "key {key:?}: record {previous_id:?} at {previous:?} was written after record {id:?} at {position:?}: {:#?} / {:#?}",
                    pair.outcomes()[previous_id],
                    pair.outcomes()[id]
                );
            }
            last_by_key.insert(key, (*id, position.clone()));
        }
    }
    duplicates
}

fn submit_n(
    pair: &mut Pair,
    first: u64,
    count: u64,
    key_of: impl Fn(u64) -> String,
) -> Vec<RecordId> {
    (first..first + count)
        .map(|n| {
            pair.submit(Record::new(stream(), key_of(n), data_for(n, 100)))
                .unwrap()
        })
        .collect()
}

/// The invariants, and no record read more than once.
fn check_exactly_once(pair: &Pair) {
    let duplicates = check(
        pair,
        &Invariants {
            ordered_keys: false,
        },
    );
    assert_eq!(
        duplicates,
        Duplicates::default(),
        "records read more than once"
    );
}

#[test]
fn every_record_is_delivered_once_aggregated_on_its_own_shard() {
    let mut pair = pair_with(EngineConfig::default(), 4, 1);
    submit_n(&mut pair, 0, 20_000, |n| format!("key-{n}"));
    pair.run_until_idle();
    check_exactly_once(&pair);
    assert_eq!(pair.delivered().count(), 20_000);
    let view = pair.sim.kcl_view(STREAM);
    assert_eq!(view.records.len(), 20_000);
    assert!(view.dropped.is_empty());
    // Aggregation happened: far fewer Kinesis records than user records, on all four shards.
    let written = pair.sim.counters().written_entries;
    assert!(
        written < 1_000,
        "{written} Kinesis records for 20,000 user records"
    );
    let stats: Vec<_> = pair.engine.stats().collect();
    let (_, stats) = &stats[0];
    assert_eq!(stats.user_records_put, 20_000);
    assert_eq!(
        stats
            .shards
            .values()
            .filter(|s| s.user_records_put > 0)
            .count(),
        4
    );
    assert!(stats.user_records_per_kinesis_record.mean() > 20.0);
}

#[test]
fn list_shards_pages_are_all_read() {
    let mut pair = pair_with(EngineConfig::default(), 5, 2);
    pair.sim.set_list_shards_page(2);
    submit_n(&mut pair, 0, 500, |n| format!("k{n}"));
    pair.run_until_idle();
    check_exactly_once(&pair);
    assert_eq!(
        pair.engine
            .shard_map(&stream())
            .unwrap()
            .open_shards()
            .len(),
        5
    );
}

/// Hash keys owned by `range`, found by trying partition keys.
fn keys_in(range: HashKeyRange, count: usize, salt: &str) -> Vec<String> {
    (0u64..)
        .map(|i| format!("{salt}-{i}"))
        .filter(|key| range.contains(HashKey::from_partition_key(key)))
        .take(count)
        .collect()
}

#[test]
fn an_aggregate_straddling_a_split_is_resent_whole() {
    let mut pair = pair_with(EngineConfig::default(), 1, 3);
    // Learn the one-shard map first.
    submit_n(&mut pair, 0, 1, |_| "warm-up".into());
    pair.run_until_idle();
    // Split the shard in the middle behind the producer's back.
    let middle = 1u128 << 127;
    pair.sim
        .split_shard(STREAM, "shardId-000000000000", HashKey::new(middle))
        .unwrap();
    // Records on both sides of the split, aggregated together under the old map.
    let low = keys_in(
        HashKeyRange::new(HashKey::new(0), HashKey::new(middle - 1)).unwrap(),
        50,
        "low",
    );
    let high = keys_in(
        HashKeyRange::new(HashKey::new(middle), HashKey::MAX).unwrap(),
        50,
        "high",
    );
    let keys: Vec<String> = low
        .into_iter()
        .zip(high)
        .flat_map(|(a, b)| [a, b])
        .collect();
    submit_n(&mut pair, 1, keys.len() as u64, |n| {
        keys[(n - 1) as usize].clone()
    });
    pair.run_until_idle();

    // The dropped copy is in the stream, but a KCL consumer reads none of its records.
    check_exactly_once(&pair);
    assert_eq!(pair.delivered().count(), 101);
    let view = pair.sim.kcl_view(STREAM);
    // The first aggregate landed on one child and the KCL dropped it there, whole.
    assert_eq!(view.dropped.len(), 1);
    assert_eq!(view.dropped[0].records.len(), 100);
    // Every record was re-sent and is readable exactly once, on the child that owns it.
    assert_eq!(view.records.len(), 101);
    for delivery in pair.delivered() {
        let wrong_shard = delivery
            .attempts()
            .iter()
            .filter(|a| a.error_code() == Some("WrongShard"))
            .count();
        if delivery.id().get() > 0 {
            assert_eq!(wrong_shard, 1, "each straddling record was retried once");
            assert_ne!(delivery.shard_id().as_str(), "shardId-000000000000");
        }
    }
}

#[test]
fn a_record_that_belongs_to_the_shard_it_landed_on_is_accepted_without_resend() {
    let mut pair = pair_with(EngineConfig::default(), 1, 4);
    submit_n(&mut pair, 0, 1, |_| "warm-up".into());
    pair.run_until_idle();
    pair.sim
        .split_shard(STREAM, "shardId-000000000000", HashKey::new(1u128 << 127))
        .unwrap();
    // One record alone: it lands wherever its own hash key belongs, so it is simply written.
    submit_n(&mut pair, 1, 1, |_| "single".into());
    pair.run_until_idle();
    check_exactly_once(&pair);
    let delivery = pair.delivered().find(|d| d.id().get() == 1).unwrap();
    assert_eq!(delivery.attempts().len(), 1);
    // The landing on an unknown child triggered a map refresh.
    assert_eq!(
        pair.engine
            .shard_map(&stream())
            .unwrap()
            .open_shards()
            .len(),
        2
    );
}

/// How the stream is resharded behind the producer's back, and which keys are then sent.
#[derive(Debug)]
enum Reshard {
    /// One shard split in the middle; keys of the low half, owned by one child.
    Split,
    /// Two shards merged; keys of the first, owned by the merged child.
    Merge,
}

/// The race behind a duplicate after a reshard: the answer to a `PutRecords` that landed on a
/// child arrives before the producer has read a map that knows the child. The child owns every
/// record of the aggregate, so a KCL consumer keeps it: it must count as written, not be
/// re-sent. (Here the answer always wins the race: the map read starts only once it arrives.)
#[test]
fn an_aggregate_landing_on_a_child_the_map_does_not_know_yet_is_not_resent() {
    for reshard in [Reshard::Split, Reshard::Merge] {
        for ordering in [OrderingMode::Unordered, OrderingMode::PerShard] {
            let mut config = EngineConfig::default();
            config.ordering = ordering;
            let shards = match reshard {
                Reshard::Split => 1,
                Reshard::Merge => 2,
            };
            let mut pair = pair_with(config, shards, 21);
            submit_n(&mut pair, 0, 1, |_| "warm-up".into());
            pair.run_until_idle();
            let open = pair.sim.open_shards(STREAM);
            let (child, owned) = match reshard {
                Reshard::Split => {
                    let middle = 1u128 << 127;
                    pair.sim
                        .split_shard(STREAM, open[0].0.as_str(), HashKey::new(middle))
                        .unwrap();
                    let low = HashKeyRange::new(HashKey::new(0), HashKey::new(middle - 1));
                    ("shardId-000000000001", low.unwrap())
                }
                Reshard::Merge => {
                    pair.sim
                        .merge_shards(STREAM, open[0].0.as_str(), open[1].0.as_str())
                        .unwrap();
                    ("shardId-000000000002", open[0].1)
                }
            };
            let keys = keys_in(owned, 100, "owned");
            submit_n(&mut pair, 1, 100, |n| keys[(n - 1) as usize].clone());
            pair.run_until_idle();

            let context = format!("{reshard:?} / {ordering:?}");
            check_exactly_once(&pair);
            for delivery in pair.delivered().filter(|d| d.id().get() > 0) {
                assert_eq!(delivery.shard_id().as_str(), child, "{context}");
                assert_eq!(delivery.attempts().len(), 1, "{context}: never re-sent");
            }
            let (_, stats) = pair.engine.stats().next().unwrap();
            assert_eq!(stats.unknown_shard_landings, 1, "{context}");
            assert_eq!(stats.unjudged_landings_resent, 0, "{context}");
            assert_eq!(stats.retries_per_record, 0, "{context}");
            let view = pair.sim.kcl_view(STREAM);
            assert_eq!(view.records.len(), 101, "{context}");
            assert!(view.dropped.is_empty(), "{context}");
        }
    }
}

#[test]
fn terminal_errors_fail_at_once_without_retry_storms() {
    let start = SystemClock.now();
    let sim = SimKinesis::new(5);
    let mut pair = Pair::new(EngineConfig::default(), sim, start).unwrap();
    let missing = Stream::new("missing").unwrap();
    for n in 0..200 {
        pair.submit(Record::new(
            missing.clone(),
            format!("k{n}"),
            data_for(n, 10),
        ))
        .unwrap();
    }
    pair.run_until_idle();
    assert_eq!(pair.failed().count(), 200);
    for failure in pair.failed() {
        assert_eq!(
            failure.reason(),
            FailureReason::Terminal(TransportErrorKind::NotFound)
        );
        assert!(failure.attempts().len() <= 2);
        assert_eq!(
            failure.attempts().last().unwrap().error_code(),
            Some("ResourceNotFoundException")
        );
    }
    assert!(
        pair.now - start < Duration::from_secs(2),
        "took {:?}",
        pair.now - start
    );
}

#[test]
fn access_denied_on_put_fails_terminally() {
    let mut pair = pair_with(EngineConfig::default(), 2, 6);
    pair.sim.set_access_denied(STREAM, true).unwrap();
    submit_n(&mut pair, 0, 50, |n| format!("k{n}"));
    pair.run_until_idle();
    assert!(
        pair.failed()
            .all(|f| f.reason() == FailureReason::Terminal(TransportErrorKind::AccessDenied))
    );
    assert_eq!(pair.failed().count(), 50);
}

#[test]
fn a_burst_is_paced_at_the_shard_limit_and_throttled_entries_are_retried() {
    let mut config = EngineConfig::default();
    config.aggregation_enabled = false;
    config.rate_limit = 300;
    let mut pair = pair_with(config, 1, 7);
    // 6,000 records in one burst to one shard allowing 1,000 records/s, with a limiter
    // configured at three times that: it starts at the shard's limit (a rate limit above 100 %
    // is room to probe) and probes above it, so a few entries are throttled, and retried.
    submit_n(&mut pair, 0, 6_000, |n| format!("k{n}"));
    let start = pair.now;
    pair.run_until_idle();
    check_exactly_once(&pair);
    assert_eq!(pair.delivered().count(), 6_000);
    let throttled = pair.sim.counters().throttled_entries;
    let retried = pair.delivered().filter(|d| d.attempt_count() > 1).count() as u64;
    assert_eq!(
        retried, throttled,
        "every throttled entry was retried and delivered"
    );
    // Few: under 5 % (the KPL would retry every 50 ms at 300 %).
    assert!(throttled < 300, "{throttled} throttled entries");
    // The service allows about 1,000/s (plus a second's worth at first); delivery cannot be
    // faster and should not be much slower.
    let elapsed = pair.now - start;
    assert!(elapsed >= Duration::from_secs(4), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(7), "{elapsed:?}");
}

#[test]
fn fail_if_throttled_fails_throttled_records() {
    let mut config = EngineConfig::default();
    config.fail_if_throttled = true;
    let mut pair = pair_with(config, 1, 8);
    pair.sim.script(ScriptedFault::Error {
        code: "ServiceUnavailable".into(),
    });
    submit_n(&mut pair, 0, 1, |_| "warm".into());
    pair.run_until_idle();
    pair.sim.script(ScriptedFault::ThrottleAll);
    submit_n(&mut pair, 1, 10, |n| format!("k{n}"));
    pair.run_until_idle();
    let failed: Vec<_> = pair.failed().collect();
    assert_eq!(failed.len(), 10);
    assert!(
        failed
            .iter()
            .all(|f| f.reason() == FailureReason::Throttled)
    );
}

#[test]
fn aggregates_stay_under_the_stream_record_limit_whatever_aggregation_max_size_says() {
    for outer in [
        OuterPartitionKey::Constant,
        OuterPartitionKey::FirstUserRecord,
    ] {
        let mut config = EngineConfig::default();
        // Twice what a default stream takes per record.
        config.aggregation_max_size = kpl_aggregation::MaxAggregateSize::new(2_000_000).unwrap();
        config.outer_partition_key = outer;
        let mut pair = pair_with(config, 1, 12);
        let key = "k".repeat(256);
        for n in 0..2_500 {
            pair.submit(Record::new(stream(), key.clone(), data_for(n, 1_000)))
                .unwrap();
        }
        pair.run_until_idle();
        // No request broke the service's limits, so nothing failed and every record is read.
        check_exactly_once(&pair);
        assert_eq!(pair.delivered().count(), 2_500, "{outer:?}");
        let (_, stats) = pair.engine.stats().next().unwrap();
        assert!(
            stats.user_records_per_kinesis_record.max > 900.0,
            "{outer:?}: still large aggregates"
        );
    }
}

#[test]
fn emoji_partition_keys_are_counted_as_the_service_counts_them() {
    let mut pair = pair_with(EngineConfig::default(), 1, 13);
    // 128 emoji are 256 UTF-16 code units: the most the service takes.
    let longest = "😀".repeat(128);
    pair.submit(Record::new(stream(), longest.clone(), data_for(0, 10)))
        .unwrap();
    let too_long = "😀".repeat(129);
    let refused = pair
        .submit(Record::new(stream(), too_long.clone(), data_for(1, 10)))
        .unwrap_err();
    assert_eq!(refused.reason(), &RejectReason::PartitionKey { chars: 258 });
    assert!(refused.to_string().contains("UTF-16"), "{refused}");
    assert_eq!(refused.into_record().partition_key(), too_long);
    pair.run_until_idle();
    check_exactly_once(&pair);
    assert_eq!(pair.delivered().count(), 1);
}

#[test]
fn a_record_retried_for_a_long_time_keeps_a_bounded_history() {
    let mut config = EngineConfig::default();
    config.record_ttl = Duration::from_secs(600);
    let mut pair = pair_with(config, 1, 9);
    pair.sim.set_faults(Faults {
        entry_internal_failure: 1.0,
        ..Faults::default()
    });
    submit_n(&mut pair, 0, 3, |n| format!("k{n}"));
    pair.run_until_idle();
    assert_eq!(pair.failed().count(), 3);
    for failure in pair.failed() {
        // Ten minutes of retries, at most ten seconds apart: far more than six attempts, of
        // which six are kept: the first, the latest, one of every kind of failure.
        assert!(failure.attempt_count() > 50, "{}", failure.attempt_count());
        assert_eq!(failure.attempts().len(), 6);
        assert_eq!(failure.attempts()[0].error_code(), Some("InternalFailure"));
        assert_eq!(failure.attempts()[5].error_code(), Some("Expired"));
        assert!(
            failure
                .to_string()
                .contains(&format!("{} attempt(s)", failure.attempt_count()))
        );
    }
}

#[test]
fn records_expire_after_their_ttl() {
    let mut config = EngineConfig::default();
    config.record_ttl = Duration::from_millis(500);
    let mut pair = pair_with(config, 1, 9);
    pair.sim.set_faults(Faults {
        request_unavailable: 1.0,
        ..Faults::default()
    });
    submit_n(&mut pair, 0, 20, |n| format!("k{n}"));
    pair.run_until_idle();
    assert_eq!(pair.failed().count(), 20);
    for failure in pair.failed() {
        assert_eq!(failure.reason(), FailureReason::Expired);
        assert_eq!(
            failure.attempts().last().unwrap().error_code(),
            Some("Expired")
        );
        let total: Duration = failure
            .attempts()
            .iter()
            .map(|a| a.delay() + a.duration())
            .sum();
        assert!(
            total >= Duration::from_millis(500) && total < Duration::from_secs(2),
            "{total:?}"
        );
    }
}

#[test]
fn flush_marker_completes_once_earlier_records_finish() {
    let mut pair = pair_with(EngineConfig::default(), 2, 10);
    submit_n(&mut pair, 0, 100, |n| format!("k{n}"));
    let marker = pair.flush_marker();
    assert!(pair.flushed().is_empty());
    submit_n(&mut pair, 100, 10, |n| format!("k{n}"));
    let now = pair.now;
    pair.advance_to(now + Duration::from_millis(60));
    assert_eq!(pair.flushed(), &[marker]);
    // The flush sent the first hundred before their 100 ms deadline.
    assert!(pair.outcomes().len() >= 100);
    assert!(pair.now - now < Duration::from_millis(100));
    // A marker with nothing before it completes at once.
    pair.run_until_idle();
    let empty = pair.flush_marker();
    assert_eq!(pair.flushed().last(), Some(&empty));
}

#[test]
fn back_pressure_refuses_and_hands_the_record_back() {
    let mut config = EngineConfig::default();
    config.max_outstanding_records = 10;
    let mut pair = pair_with(config, 1, 11);
    submit_n(&mut pair, 0, 10, |n| format!("k{n}"));
    let record = Record::new(stream(), "k10", data_for(10, 1));
    let rejected = pair.submit(record.clone()).unwrap_err();
    assert_eq!(
        rejected.reason(),
        &RejectReason::TooManyRecords { limit: 10 }
    );
    assert!(rejected.reason().is_back_pressure());
    assert_eq!(rejected.into_record(), record);
    pair.run_until_idle();
    assert!(pair.submit(record).is_ok());
}

#[test]
fn invalid_records_are_refused_with_a_typed_reason() {
    let mut pair = pair_with(EngineConfig::default(), 1, 12);
    let cases = [
        (Record::new(stream(), "", vec![1]), "partition_key"),
        (
            Record::new(stream(), "k".repeat(257), vec![1]),
            "partition_key",
        ),
        (
            Record::new(stream(), "k", vec![1]).with_explicit_hash_key("12a"),
            "explicit_hash_key",
        ),
        (
            Record::new(stream(), "k", vec![1])
                .with_explicit_hash_key("340282366920938463463374607431768211456"),
            "explicit_hash_key",
        ),
        (
            Record::new(stream(), "k", vec![0; 1024 * 1024]),
            "record size",
        ),
    ];
    for (record, field) in cases {
        let rejected = pair.submit(record.clone()).unwrap_err();
        assert!(
            rejected.to_string().contains(field) || rejected.reason().to_string().contains(field),
            "{rejected}"
        );
        assert_eq!(rejected.into_record(), record);
    }
    assert_eq!(pair.engine.outstanding_records(), 0);
    // Exactly at the limit is fine: data + key = 1 MiB.
    assert!(
        pair.submit(Record::new(stream(), "k", vec![0; 1024 * 1024 - 1]))
            .is_ok()
    );
}

#[test]
fn the_stream_record_size_limit_lowers_the_configured_cap_and_never_raises_it() {
    // (configured MaxUserRecordSize, the stream's MaxRecordSizeInKiB, a record's size, accepted)
    let cases = [
        // The default cap stays on a stream that allows more, as in the KPL 1.0.7.
        (1024 * 1024, 4096, 3 * 1024 * 1024, false),
        // Raised by the application, it lets larger records through where the stream allows.
        (10 * 1024 * 1024, 4096, 3 * 1024 * 1024, true),
        // The stream's lower limit lowers a higher cap.
        (10 * 1024 * 1024, 2048, 3 * 1024 * 1024, false),
        (10 * 1024 * 1024, 2048, 2 * 1024 * 1024 - 100, true),
    ];
    for (cap, stream_kib, size, accepted) in cases {
        let start = SystemClock.now();
        let mut sim = SimKinesis::new(13);
        sim.create_stream(STREAM, 1, start);
        sim.set_max_record_size_kib(STREAM, stream_kib).unwrap();
        let mut config = EngineConfig::default();
        config.max_user_record_size = cap;
        let mut pair = Pair::new(config, sim, start).unwrap();
        submit_n(&mut pair, 0, 1, |_| "warm".into());
        pair.run_until_idle();
        let big = Record::new(stream(), "big", data_for(1, size - 3));
        let result = pair.submit(big);
        assert_eq!(
            result.is_ok(),
            accepted,
            "{cap} {stream_kib} {size}: {result:?}"
        );
        if let Err(rejected) = result {
            assert!(
                matches!(rejected.reason(), RejectReason::TooLarge { .. }),
                "{rejected}"
            );
        }
        pair.run_until_idle();
        check_exactly_once(&pair);
        assert_eq!(pair.delivered().count(), 1 + usize::from(accepted));
    }
}

#[test]
fn deleting_the_stream_mid_load_fails_the_rest_cleanly() {
    let mut pair = pair_with(EngineConfig::default(), 2, 14);
    submit_n(&mut pair, 0, 1_000, |n| format!("k{n}"));
    let now = pair.now;
    pair.advance_to(now + Duration::from_millis(50));
    pair.sim.delete_stream(STREAM);
    submit_n(&mut pair, 1_000, 1_000, |n| format!("k{n}"));
    pair.run_until_idle();
    assert_eq!(pair.outcomes().len(), 2_000);
    assert!(pair.repeated_outcomes().is_empty());
    assert!(pair.failed().count() >= 1_000);
    assert!(
        pair.failed()
            .all(|f| f.reason() == FailureReason::Terminal(TransportErrorKind::NotFound))
    );
    // Without retry storms: each record tried at most twice, and all settled quickly.
    assert!(pair.failed().all(|f| f.attempts().len() <= 2));
    assert!(
        pair.now - now < Duration::from_secs(2),
        "{:?}",
        pair.now - now
    );
}

#[test]
fn ordering_mode_fails_queued_records_at_once_when_the_stream_is_deleted() {
    let mut config = EngineConfig::default();
    config.ordering = OrderingMode::PerShard;
    config.aggregation_max_size = kpl_aggregation::MaxAggregateSize::new(300).unwrap();
    let mut pair = pair_with(config, 1, 16);
    submit_n(&mut pair, 0, 500, |n| format!("k{}", n % 7));
    let now = pair.now;
    pair.advance_to(now + Duration::from_millis(150));
    pair.sim.delete_stream(STREAM);
    pair.run_until_idle();
    assert_eq!(pair.outcomes().len(), 500);
    let failed = pair.failed().count();
    assert!(failed > 400, "{failed}");
    assert!(
        pair.failed()
            .all(|f| f.reason() == FailureReason::Terminal(TransportErrorKind::NotFound))
    );
    assert!(
        pair.now - now < Duration::from_secs(1),
        "{:?}",
        pair.now - now
    );
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = || {
        let mut pair = pair_with(EngineConfig::default(), 3, 15);
        pair.sim.set_faults(Faults {
            entry_internal_failure: 0.05,
            request_unavailable: 0.05,
            request_timeout: 0.02,
        });
        submit_n(&mut pair, 0, 2_000, |n| format!("k{}", n % 37));
        pair.run_until_idle();
        pair.outcomes()
            .values()
            .map(|o| match o {
                Outcome::Delivered(d) => format!(
                    "{} {} {} {:?}",
                    d.id().get(),
                    d.shard_id(),
                    d.sequence_number(),
                    d.attempts()
                ),
                Outcome::Failed(f) => format!("{} {:?}", f.id().get(), f.attempts()),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

/// What one sweep run went through, to check that the sweep covers what it claims to.
#[derive(Default, Clone, Copy)]
struct Coverage {
    resharded: u32,
    /// Runs where an aggregate landed on a shard the map did not know yet (the reshard race).
    held_landings: u32,
    wrong_shard: u32,
    throttled: u32,
    kcl_dropped: u32,
    timeouts: u32,
    ordered: u32,
    failed: u32,
    duplicates: Duplicates,
}

/// One simulated run of a seeded random workload with random faults and reshards.
fn sweep_one(seed: u64) -> Coverage {
    let mut rng = SmallRng::seed_from_u64(seed);
    let ordering = rng.random_bool(0.5);
    let mut config = EngineConfig::default();
    config.rng_seed = seed;
    if ordering {
        config.ordering = OrderingMode::PerShard;
    }
    if rng.random_bool(0.3) {
        config.aggregation_max_size =
            kpl_aggregation::MaxAggregateSize::new(rng.random_range(200..5_000)).unwrap();
    }
    if rng.random_bool(0.2) {
        config.collection_max_count = rng.random_range(1..20);
    }
    if rng.random_bool(0.3) {
        config.rate_limit = [50, 150, 1_000][rng.random_range(0..3)];
    }
    let shards = rng.random_range(1..=4);
    let mut pair = pair_with(config, shards, seed);
    pair.trace = std::env::var_os("KPL_SIM_TRACE").is_some();
    let timeouts = rng.random_bool(0.3);
    pair.sim.set_faults(Faults {
        entry_internal_failure: if rng.random_bool(0.5) {
            rng.random_range(0.0..0.2)
        } else {
            0.0
        },
        request_unavailable: if rng.random_bool(0.5) {
            rng.random_range(0.0..0.2)
        } else {
            0.0
        },
        request_timeout: if timeouts {
            rng.random_range(0.0..0.1)
        } else {
            0.0
        },
    });
    if rng.random_bool(0.3) {
        pair.sim.set_list_shards_page(1);
    }
    let keys = rng.random_range(1..40);
    let total: u64 = rng.random_range(50..400);
    let reshard_at = rng.random_bool(0.4).then(|| rng.random_range(0..total));
    // Sometimes a second reshard later in the run: a split and a merge in one load.
    let second_reshard_at = reshard_at
        .filter(|_| rng.random_bool(0.3))
        .map(|first| rng.random_range(first..total));
    let delete_at = rng.random_bool(0.05).then(|| rng.random_range(0..total));
    // A throttling storm: every entry of the next few calls is refused.
    let storm_at = rng.random_bool(0.15).then(|| rng.random_range(0..total));
    let max_step_micros = if rng.random_bool(0.2) { 50 } else { 3_000 };
    let verbose = std::env::var_os("KPL_SIM_VERBOSE").is_some();
    if verbose {
        eprintln!(
            "seed {seed}: ordering {ordering}, shards {shards}, keys {keys}, total {total}, reshard {reshard_at:?}, delete {delete_at:?}, timeouts {timeouts}, config {:?}",
            pair.engine.config()
        );
    }
    for n in 0..total {
        if Some(n) == reshard_at || Some(n) == second_reshard_at {
            let open = pair.sim.open_shards(STREAM);
            if open.len() >= 2 && rng.random_bool(0.5) {
                let _ = pair
                    .sim
                    .merge_shards(STREAM, open[0].0.as_str(), open[1].0.as_str());
            } else if let Some((id, range)) = open.first() {
                let middle = range.start().get() / 2 + range.end().get() / 2;
                let _ = pair.sim.split_shard(
                    STREAM,
                    id.as_str(),
                    HashKey::new(middle.max(range.start().get() + 1)),
                );
            }
        }
        if Some(n) == delete_at {
            pair.sim.delete_stream(STREAM);
        }
        if Some(n) == storm_at {
            for _ in 0..rng.random_range(1..8) {
                pair.sim.script(ScriptedFault::ThrottleAll);
            }
        }
        let key = format!("key-{}", rng.random_range(0..keys));
        let mut record = Record::new(stream(), key, data_for(n, rng.random_range(0..300)));
        if rng.random_bool(0.1) {
            record = record.with_explicit_hash_key(rng.random::<u128>().to_string());
        }
        pair.submit(record).unwrap();
        let step = Duration::from_micros(rng.random_range(0..max_step_micros));
        let now = pair.now;
        pair.advance_to(now + step);
    }
    pair.run_until_idle();
    let attempts = || {
        pair.outcomes().values().flat_map(|o| match o {
            Outcome::Delivered(d) => d.attempts().to_vec(),
            Outcome::Failed(f) => f.attempts().to_vec(),
        })
    };
    if verbose {
        for failure in pair.failed() {
            eprintln!("seed {seed}: {failure}");
            if std::env::var_os("KPL_SIM_VERBOSE_ATTEMPTS").is_some() {
                eprintln!("{:#?}", failure.attempts());
            }
        }
    }
    let stats = pair
        .engine
        .stats()
        .next()
        .map(|(_, stats)| stats)
        .unwrap_or_default();
    let mut coverage = Coverage {
        held_landings: u32::from(stats.unknown_shard_landings > 0),
        resharded: u32::from(reshard_at.is_some()),
        wrong_shard: u32::from(attempts().any(|a| a.error_code() == Some("WrongShard"))),
        throttled: u32::from(
            attempts().any(|a| a.error_code() == Some("ProvisionedThroughputExceededException")),
        ),
        kcl_dropped: u32::from(!pair.sim.kcl_view(STREAM).dropped.is_empty()),
        timeouts: u32::from(attempts().any(|a| a.error_code() == Some("RequestTimeout"))),
        ordered: u32::from(ordering),
        failed: u32::from(pair.failed().next().is_some()),
        duplicates: Duplicates::default(),
    };
    if delete_at.is_some() {
        assert!(pair.repeated_outcomes().is_empty());
        assert_eq!(pair.engine.outstanding_records(), 0);
        return coverage;
    }
    coverage.duplicates = check(
        &pair,
        &Invariants {
            ordered_keys: ordering,
        },
    );
    coverage
}

#[test]
fn seeded_sweep_of_workloads_and_faults() {
    let seeds: u64 = std::env::var("KPL_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000);
    let first: u64 = std::env::var("KPL_SIM_FIRST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // `cargo xtask soak --minutes N`: new seeds until that long has passed, instead of a count.
    let for_secs: Option<u64> = std::env::var("KPL_SIM_SECS")
        .ok()
        .and_then(|s| s.parse().ok());
    let started = SystemClock.now();
    let rss_at_start = rss_kib();
    let mut total = Coverage::default();
    let mut seed = first;
    loop {
        let done = match for_secs {
            Some(secs) => SystemClock.now().duration_since(started) >= Duration::from_secs(secs),
            None => seed >= first + seeds,
        };
        if done {
            break;
        }
        let this_seed = seed;
        seed += 1;
        match std::panic::catch_unwind(|| sweep_one(this_seed)) {
            Ok(run) => {
                total.resharded += run.resharded;
                total.held_landings += run.held_landings;
                total.duplicates.after_timeout += run.duplicates.after_timeout;
                total.duplicates.after_unjudged_landing += run.duplicates.after_unjudged_landing;
                total.wrong_shard += run.wrong_shard;
                total.throttled += run.throttled;
                total.kcl_dropped += run.kcl_dropped;
                total.timeouts += run.timeouts;
                total.ordered += run.ordered;
                total.failed += run.failed;
            }
            Err(panic) => {
                eprintln!(
                    "seed {this_seed} failed; rerun with KPL_SIM_FIRST_SEED={this_seed} KPL_SIM_SEEDS=1"
                );
                std::panic::resume_unwind(panic);
            }
        }
    }
    let seeds = seed - first;
    eprintln!(
        "RSS {} KiB at start, {} KiB at end",
        rss_at_start.unwrap_or_default(),
        rss_kib().unwrap_or_default()
    );
    eprintln!(
        "{seeds} runs: {} resharded, {} with landings held for a map read, {} with wrong-shard \
         re-sends, {} with KCL-dropped copies, {} throttled, {} with timeouts, {} in ordering \
         mode, {} with failures",
        total.resharded,
        total.held_landings,
        total.wrong_shard,
        total.kcl_dropped,
        total.throttled,
        total.timeouts,
        total.ordered,
        total.failed
    );
    // Every duplicate has a cause other than a reshard alone.
    eprintln!(
        "records read twice: {} after a timed-out call, {} after an unjudged landing, 0 otherwise",
        total.duplicates.after_timeout, total.duplicates.after_unjudged_landing
    );
    if seeds >= 500 {
        // The sweep is only worth its time if it reaches the hard cases.
        for (what, count) in [
            ("reshards", total.resharded),
            ("landings held for a map read", total.held_landings),
            ("wrong-shard re-sends", total.wrong_shard),
            ("KCL-dropped copies", total.kcl_dropped),
            ("throttling", total.throttled),
            ("timeouts", total.timeouts),
            ("ordering mode", total.ordered),
            ("failures", total.failed),
        ] {
            assert!(count >= seeds as u32 / 100, "only {count} runs had {what}");
        }
    }
}

/// Resident memory of this process, in KiB (Linux).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
