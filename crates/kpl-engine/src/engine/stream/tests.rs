//! One stream's answers and landings, driven directly: a stream state and the shared parts, no
//! engine around them.

use std::time::{Duration, Instant};

use kpl_aggregation::{HashKey, HashKeyRange, PartitionKey, UserRecord};

use super::{Answer, StreamState};
use crate::config::EngineConfig;
use crate::engine::pending::Pending;
use crate::engine::requests::{EntryMeta, InFlightKind};
use crate::engine::shared::Shared;
use crate::metrics::Metric;
use crate::outcome::{Event, FailureReason, codes};
use crate::stream::Stream;
use crate::time::{Clock, SystemClock};
use crate::transport::{
    ListShardsResponse, PutRecordsEntryResult, PutRecordsResponse, Request, ShardDescription,
    ShardId, TransportError, TransportErrorKind,
};

const HALF: u128 = u128::MAX / 2;

/// A stream with its map read, the shared parts, and a clock the test moves.
struct Fixture {
    cx: Shared,
    stream: StreamState,
    now: Instant,
}

fn listing(shards: &[(&str, u128, u128)]) -> ListShardsResponse {
    ListShardsResponse {
        shards: shards
            .iter()
            .map(|&(id, start, end)| ShardDescription {
                shard_id: ShardId::from(id),
                hash_key_range: HashKeyRange::new(HashKey::new(start), HashKey::new(end))
                    .unwrap_or(HashKeyRange::FULL),
                open: true,
            })
            .collect(),
        next_token: None,
    }
}

fn written(shard: &str) -> PutRecordsEntryResult {
    PutRecordsEntryResult::Written {
        shard_id: ShardId::from(shard),
        sequence_number: "1".into(),
    }
}

fn failed(code: &str) -> PutRecordsEntryResult {
    PutRecordsEntryResult::Failed {
        code: code.to_owned(),
        message: format!("{code} for the test"),
    }
}

impl Fixture {
    /// A stream whose map lists `shards` (all open).
    fn new(config: EngineConfig, shards: &[(&str, u128, u128)]) -> Self {
        let now = SystemClock.now();
        let mut cx = Shared::new(config);
        let stream = Stream::new("orders").unwrap_or_else(|e| panic!("{e}"));
        let stream = StreamState::new(stream, 0, &mut cx, now);
        let mut fixture = Self { cx, stream, now };
        fixture.answer_map_reads(shards);
        assert!(fixture.stream.shard_map().is_some());
        // A second on: the shards' rate limiters, empty when made, hold their tenth of a second.
        fixture.now += Duration::from_secs(1);
        fixture
    }

    /// Answers every map read waiting in the outbox with `shards`; returns how many there were.
    fn answer_map_reads(&mut self, shards: &[(&str, u128, u128)]) -> usize {
        let mut reads = 0;
        let mut others = Vec::new();
        while let Some((id, request)) = self.cx.requests.pop_outbox() {
            match request {
                Request::ListShards(_) => {
                    self.cx.requests.complete(id);
                    reads += 1;
                    let page = Ok(listing(shards));
                    self.stream.on_list_shards(&mut self.cx, page, self.now);
                }
                Request::DescribeStreamSummary(_) => {
                    self.cx.requests.complete(id);
                    self.stream.on_summary(&mut self.cx, None);
                }
                other => others.push((id, other)),
            }
        }
        assert!(others.is_empty(), "only map reads were waiting");
        reads
    }

    /// One shard, aggregation off, records `a` and `b` sent in one request of two entries.
    fn two_records_sent_alone() -> (Self, Vec<EntryMeta>) {
        let config = EngineConfig {
            aggregation_enabled: false,
            ..EngineConfig::default()
        };
        let mut fx = Self::new(config, &[("shardId-0", 0, u128::MAX)]);
        fx.accept("a");
        fx.accept("b");
        let entries = fx.send();
        assert_eq!(entries.len(), 2);
        (fx, entries)
    }

    /// Accepts a 10-byte record with partition key `key`.
    fn accept(&mut self, key: &str) {
        let key = PartitionKey::new(key).unwrap_or_else(|e| panic!("{e}"));
        let record = UserRecord::new(key, vec![7; 10]);
        let charge = self.cx.record_charge(record.partition_key().len() + 10);
        let id = self.cx.outcomes.accept(charge, self.now);
        let pending = Pending {
            id,
            hash_key: record.hash_key(),
            record,
            arrival: self.now,
            deadline: self.now + Duration::from_millis(100),
            expiration: self.now + Duration::from_secs(30),
            attempts: None,
            isolate: false,
            token: (),
        };
        self.stream.accept(&mut self.cx, pending, self.now);
    }

    /// Flushes, and takes the `PutRecords` request that leaves, with what its entries carry.
    fn send(&mut self) -> Vec<EntryMeta> {
        self.stream.flush(&mut self.cx, self.now);
        let (id, request) = self
            .cx
            .requests
            .pop_outbox()
            .unwrap_or_else(|| panic!("a request left"));
        assert!(matches!(request, Request::PutRecords(_)));
        self.cx.requests.mark_sent(id, self.now);
        match self
            .cx
            .requests
            .complete(id)
            .map(|in_flight| in_flight.kind)
        {
            Some(InFlightKind::PutRecords(entries)) => entries,
            other => panic!("a PutRecords request, not {other:?}"),
        }
    }

    fn answer(
        &mut self,
        entries: Vec<EntryMeta>,
        result: Result<Vec<PutRecordsEntryResult>, TransportError>,
    ) {
        let sent_at = self.now;
        self.now += Duration::from_millis(20);
        let answer = Answer {
            sent_at,
            now: self.now,
        };
        let result = result.map(|entries| PutRecordsResponse { entries });
        self.stream
            .on_put_records(&mut self.cx, entries, result, answer);
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.cx.outcomes.poll_event()).collect()
    }

    fn has_map_read_waiting(&mut self) -> bool {
        let mut found = false;
        let mut ids = Vec::new();
        while let Some((id, request)) = self.cx.requests.pop_outbox() {
            found |= matches!(request, Request::ListShards(_));
            ids.push((id, request));
        }
        // Put them back in order: the test looked, it did not send.
        for (id, request) in ids {
            let kind = match &request {
                Request::ListShards(_) => InFlightKind::ListShards,
                Request::DescribeStreamSummary(_) => InFlightKind::DescribeStreamSummary,
                _ => continue,
            };
            self.cx.requests.complete(id);
            self.cx.requests.enqueue(0, kind, request);
        }
        found
    }
}

/// Keys whose hash keys fall in the lower (`true`) or upper half of the key space.
fn keys_in_half(lower: bool, count: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("key-{i}"))
        .filter(|key| (HashKey::from_partition_key(key).get() <= HALF) == lower)
        .take(count)
        .collect()
}

#[test]
fn a_written_aggregate_delivers_each_of_its_records_where_it_landed() {
    let mut fx = Fixture::new(EngineConfig::default(), &[("shardId-0", 0, u128::MAX)]);
    for i in 0..5 {
        fx.accept(&format!("key-{i}"));
    }
    let entries = fx.send();
    assert_eq!(entries.len(), 1, "five records, one aggregate");
    fx.answer(entries, Ok(vec![written("shardId-0")]));
    let events = fx.events();
    assert_eq!(events.len(), 5);
    for event in &events {
        let Event::Delivered(delivery) = event else {
            panic!("delivered, not {event:?}");
        };
        assert_eq!(delivery.shard_id().as_str(), "shardId-0");
        assert_eq!(delivery.attempt_count(), 1);
    }
    assert_eq!(fx.cx.outcomes.outstanding_records(), 0);
    assert_eq!(fx.cx.outcomes.outstanding_bytes(), 0);
    let stats = fx.stream.stats();
    assert_eq!((stats.user_records_put, stats.kinesis_records_put), (5, 1));
    assert_eq!(stats.user_records_pending, 0);
}

#[test]
fn a_retryable_entry_failure_sends_its_records_again_and_a_terminal_one_fails_them() {
    let mut fx = Fixture::new(EngineConfig::default(), &[("shardId-0", 0, u128::MAX)]);
    fx.accept("a");
    fx.accept("b");
    let entries = fx.send();
    fx.answer(entries, Ok(vec![failed("InternalFailure")]));
    assert!(
        fx.events().is_empty(),
        "a retryable failure settles nothing"
    );
    assert_eq!(fx.stream.stats().retries_per_record, 2);

    // After the shard's backoff, the records leave again and fail for good this time.
    fx.now += Duration::from_secs(5);
    let entries = fx.send();
    let records: usize = entries.iter().map(|entry| entry.records.len()).sum();
    assert_eq!(records, 2);
    fx.answer(entries, Ok(vec![failed("AccessDeniedException")]));
    let events = fx.events();
    assert_eq!(events.len(), 2);
    for event in events {
        let Event::Failed(failure) = event else {
            panic!("failed, not {event:?}");
        };
        assert_eq!(
            failure.reason(),
            FailureReason::Terminal(TransportErrorKind::AccessDenied)
        );
        let codes: Vec<_> = failure
            .attempts()
            .iter()
            .filter_map(|attempt| attempt.error_code())
            .collect();
        assert_eq!(codes, ["InternalFailure", "AccessDeniedException"]);
    }
    assert_eq!(fx.cx.outcomes.outstanding_records(), 0);
}

#[test]
fn an_answer_with_another_number_of_results_fails_every_record_of_the_request() {
    let mut fx = Fixture::new(EngineConfig::default(), &[("shardId-0", 0, u128::MAX)]);
    fx.accept("a");
    fx.accept("b");
    let entries = fx.send();
    fx.answer(
        entries,
        Ok(vec![written("shardId-0"), written("shardId-0")]),
    );
    let reasons: Vec<_> = fx
        .events()
        .into_iter()
        .map(|event| match event {
            Event::Failed(failure) => failure.reason(),
            other => panic!("failed, not {other:?}"),
        })
        .collect();
    assert_eq!(reasons, [FailureReason::RecordCountMismatch; 2]);
    let errors = fx.stream.stats().errors_by_code;
    assert_eq!(errors.get(codes::RECORD_COUNT_MISMATCH), Some(&1));
}

#[test]
fn a_request_refused_whole_as_invalid_sends_each_entry_again_alone() {
    let (mut fx, entries) = Fixture::two_records_sent_alone();
    let refused = TransportError::new(
        TransportErrorKind::Validation,
        "ValidationException",
        "one entry is bad",
    );
    fx.answer(entries, Err(refused));
    assert!(
        fx.events().is_empty(),
        "nothing fails before it is tried alone"
    );
    fx.now += Duration::from_secs(5);
    let first = fx.send();
    let second = fx.send();
    assert_eq!((first.len(), second.len()), (1, 1), "one entry per request");
    fx.answer(first, Ok(vec![written("shardId-0")]));
    fx.answer(second, Ok(vec![failed("ValidationException")]));
    let events = fx.events();
    assert!(matches!(&events[0], Event::Delivered(_)));
    assert!(matches!(&events[1], Event::Failed(f)
        if f.reason() == FailureReason::Terminal(TransportErrorKind::Validation)));
}

#[test]
fn an_aggregate_on_a_shard_the_map_does_not_know_is_held_until_a_read_lists_it() {
    let mut fx = Fixture::new(EngineConfig::default(), &[("shardId-0", 0, u128::MAX)]);
    for key in keys_in_half(true, 3) {
        fx.accept(&key);
    }
    let entries = fx.send();
    fx.answer(entries, Ok(vec![written("shardId-1")]));
    assert!(
        fx.events().is_empty(),
        "held, neither delivered nor re-sent"
    );
    assert_eq!(fx.stream.stats().unknown_shard_landings, 1);
    // The read that judges it lists the child that owns every record: delivered there.
    let children = [("shardId-1", 0, HALF), ("shardId-2", HALF + 1, u128::MAX)];
    assert_eq!(fx.answer_map_reads(&children), 1, "a map read was started");
    let events = fx.events();
    assert_eq!(events.len(), 3);
    for event in events {
        let Event::Delivered(delivery) = event else {
            panic!("delivered, not {event:?}");
        };
        assert_eq!(delivery.shard_id().as_str(), "shardId-1");
    }
    assert_eq!(fx.stream.stats().unjudged_landings_resent, 0);
}

#[test]
fn an_aggregate_on_a_shard_that_does_not_own_all_its_records_is_sent_again() {
    let halves = [("shardId-1", 0, HALF), ("shardId-2", HALF + 1, u128::MAX)];
    let mut fx = Fixture::new(EngineConfig::default(), &halves);
    for key in keys_in_half(true, 3) {
        fx.accept(&key);
    }
    let entries = fx.send();
    assert_eq!(entries[0].slot, Some(0), "predicted for the lower half");
    // Written on the upper half's shard: a KCL consumer of it would drop the aggregate.
    fx.answer(entries, Ok(vec![written("shardId-2")]));
    assert!(fx.events().is_empty(), "not delivered");
    assert!(fx.has_map_read_waiting(), "the map is read again");
    let errors = fx.stream.stats().errors_by_code;
    assert_eq!(errors.get(codes::WRONG_SHARD), Some(&1));
    // Once the map is read, the records go again, to the shard that owns them.
    fx.answer_map_reads(&halves);
    let entries = fx.send();
    let records: usize = entries.iter().map(|entry| entry.records.len()).sum();
    assert_eq!(records, 3);
    fx.answer(entries, Ok(vec![written("shardId-1")]));
    let events = fx.events();
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|event| matches!(event,
        Event::Delivered(d) if d.attempt_count() == 2 && d.shard_id().as_str() == "shardId-1")));
}

#[test]
fn the_statistics_and_the_metrics_count_the_same_bytes_and_records() {
    let mut fx = Fixture::new(EngineConfig::default(), &[("shardId-0", 0, u128::MAX)]);
    for i in 0..4 {
        fx.accept(&format!("key-{i}"));
    }
    let entries = fx.send();
    let sent_bytes: usize = entries.iter().map(|entry| entry.size).sum();
    fx.answer(entries, Ok(vec![written("shardId-0")]));
    fx.accept("late");
    let entries = fx.send();
    fx.answer(entries, Ok(vec![failed("AccessDeniedException")]));
    let mut series = Vec::new();
    fx.stream.take_metrics(&mut series);
    let sum = |metric: Metric| -> f64 {
        series
            .iter()
            .filter(|series| series.metric == metric)
            .map(|series| series.stat.sum)
            .sum()
    };
    let count = |metric: Metric| -> u64 {
        series
            .iter()
            .filter(|series| series.metric == metric)
            .map(|series| series.stat.count)
            .sum()
    };
    let stats = fx.stream.stats();
    // The aggregate's bytes as sent (framing, trailer and outer key), not its records' keys and
    // data: more than 4 x (5-byte key + 10 bytes).
    assert_eq!(stats.kinesis_records_data_put, sent_bytes as u64);
    assert!(sent_bytes > 4 * 15);
    assert_eq!(sum(Metric::KinesisRecordsDataPut), sent_bytes as f64);
    assert_eq!(
        stats.shards[&ShardId::from("shardId-0")].kinesis_records_data_put,
        sent_bytes as u64
    );
    assert_eq!(sum(Metric::UserRecordsPut) as u64, stats.user_records_put);
    assert_eq!(
        count(Metric::UserRecordsPut),
        stats.user_records_put + stats.user_records_failed
    );
    assert_eq!((stats.user_records_put, stats.user_records_failed), (4, 1));
    assert_eq!(
        sum(Metric::UserRecordsDataPut) as u64,
        stats.user_records_data_put
    );
    assert_eq!(stats.user_records_data_put, 40);
    assert_eq!(
        count(Metric::UserRecordsReceived),
        stats.user_records_received
    );
    assert_eq!(count(Metric::RequestTime), stats.request_time.count);
}

#[test]
fn an_answer_s_long_error_messages_are_cut_and_shared_by_its_entries() {
    let (mut fx, entries) = Fixture::two_records_sent_alone();
    let long = PutRecordsEntryResult::Failed {
        code: "AccessDeniedException".to_owned(),
        message: "é".repeat(32 * 1024),
    };
    fx.answer(entries, Ok(vec![long.clone(), long]));
    let messages: Vec<(usize, *const u8)> = fx
        .events()
        .into_iter()
        .map(|event| match event {
            Event::Failed(failure) => {
                let message = failure.attempts()[0].error_message().unwrap_or_default();
                assert!(message.ends_with('…'), "cut: {} bytes", message.len());
                (message.len(), message.as_ptr())
            }
            other => panic!("failed, not {other:?}"),
        })
        .collect();
    assert_eq!(messages.len(), 2);
    assert!(messages[0].0 <= 512);
    assert_eq!(
        messages[0].1, messages[1].1,
        "one copy for the answer's entries"
    );
}

/// An answer that gives every entry a different long message (as no service does, but a proxy
/// or a broken gateway may): the records' histories share the texts, and what they hold
/// together stays within the budget however many records are retried.
#[test]
fn entry_messages_held_by_retried_records_stay_within_the_budget() {
    // No rate limit in the way of 500 records per call.
    let config = EngineConfig {
        aggregation_enabled: false,
        rate_limit: 1_000,
        ..EngineConfig::default()
    };
    let mut fx = Fixture::new(config, &[("shardId-0", 0, u128::MAX)]);
    for n in 0..500 {
        fx.accept(&format!("key-{n}"));
    }
    let long = "m".repeat(64 * 1024);
    // Two rounds: each record's first and latest failures are both held.
    for round in 0..2 {
        let entries = fx.send();
        assert_eq!(entries.len(), 500);
        let answers = (0..entries.len())
            .map(|n| PutRecordsEntryResult::Failed {
                code: "InternalFailure".to_owned(),
                message: format!("{round}-{n}{long}"),
            })
            .collect();
        fx.answer(entries, Ok(answers));
        fx.now += Duration::from_secs(5);
    }
    assert!(fx.events().is_empty(), "every record is retried");
    assert_eq!(fx.cx.outcomes.outstanding_records(), 500);
    let held = fx.cx.error_texts.bytes();
    assert!(
        held <= crate::memory::ERROR_TEXT_BUDGET,
        "{held} bytes of error text held"
    );
    assert!(held > crate::memory::ERROR_TEXT_BUDGET / 2, "{held}");
}

/// A stream resharded again and again (each time one shard replaced by another), with nothing
/// outstanding in between, keeps the queues of its open shard and of the parent just closed,
/// not one per shard it ever had; its map remembers no more; records still go to the open
/// shard.
#[test]
fn a_stream_resharded_over_and_over_keeps_only_its_open_shards_and_their_parents() {
    let mut fx = Fixture::new(EngineConfig::default(), &[("shardId-0", 0, u128::MAX)]);
    for generation in 1..=20 {
        let id = format!("shardId-{generation}");
        fx.now += Duration::from_secs(1);
        fx.stream.start_refresh(&mut fx.cx, fx.now);
        assert_eq!(fx.answer_map_reads(&[(id.as_str(), 0, u128::MAX)]), 1);
        assert!(
            fx.stream.shards.len() <= 2,
            "{} queues",
            fx.stream.shards.len()
        );
        let map = fx.stream.shard_map().unwrap_or_else(|| panic!("a map"));
        let parent = ShardId::from(format!("shardId-{}", generation - 1).as_str());
        assert!(map.range_of(&parent).is_some(), "the parent is remembered");
        if generation > 1 {
            let grandparent = ShardId::from(format!("shardId-{}", generation - 2).as_str());
            assert!(
                map.range_of(&grandparent).is_none(),
                "older shards are forgotten"
            );
        }
    }
    fx.accept("a");
    let entries = fx.send();
    let slot = entries[0].slot.unwrap_or_else(|| panic!("a shard's entry"));
    assert_eq!(fx.stream.shards[slot].id, ShardId::from("shardId-20"));
    assert!(fx.stream.shards[slot].open);
    fx.answer(entries, Ok(vec![written("shardId-20")]));
    assert_eq!(fx.events().len(), 1);
}
