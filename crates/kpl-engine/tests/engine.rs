//! The engine driven by hand with explicit times: timing rules, request shapes and limits.
#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::time::Duration;

use common::{drain, ms, one_shard, puts, ready_engine, stream, written};
use kpl_aggregation::{HashKey, HashKeyRange, MaxAggregateSize};
use kpl_engine::time::{Clock, SystemClock};
use kpl_engine::transport::{
    ListShardsResponse, PutRecordsResponse, ShardDescription, ShardFilter,
};
use kpl_engine::{
    Engine, EngineConfig, Event, FailureReason, OrderingMode, PUT_RECORDS_MAX_BYTES,
    PUT_RECORDS_MAX_ENTRIES, Record, Request, Response, ShardId, TransportError,
};

#[test]
fn a_record_waits_for_the_first_map_then_leaves_at_its_deadline_plus_grace() {
    let t0 = SystemClock.now();
    let mut engine = Engine::new(EngineConfig::default()).unwrap();
    engine
        .submit(Record::new(stream(), "k", vec![1]), t0)
        .unwrap();
    let requests = drain(&mut engine, t0);
    assert!(matches!(&requests[0].1, Request::ListShards(list)
        if list.next_token.is_none() && list.filter == ShardFilter::AtLatest && list.stream == stream()));
    assert!(matches!(&requests[1].1, Request::DescribeStreamSummary(_)));
    engine.handle_response(requests[0].0, Ok(one_shard()), t0 + ms(5));
    assert!(drain(&mut engine, t0 + ms(5)).is_empty());
    // Aggregation deadline: RecordMaxBufferedTime after arrival.
    assert_eq!(engine.poll_timeout(), Some(t0 + ms(100)));
    engine.handle_timeout(t0 + ms(100));
    assert!(drain(&mut engine, t0 + ms(100)).is_empty());
    // Collection grace: min(50 ms, 0.2 × 100 ms) after the aggregate closed.
    assert_eq!(engine.poll_timeout(), Some(t0 + ms(120)));
    engine.handle_timeout(t0 + ms(120));
    let sent = puts(drain(&mut engine, t0 + ms(120)));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.entries.len(), 1);
    engine.handle_response(sent[0].0, Ok(written(&sent[0].1)), t0 + ms(150));
    let Some(Event::Delivered(delivery)) = engine.poll_event() else {
        panic!("expected a delivery")
    };
    assert_eq!(delivery.attempts().len(), 1);
    assert_eq!(delivery.attempts()[0].delay(), ms(120));
    assert_eq!(delivery.attempts()[0].duration(), ms(30));
}

#[test]
fn list_shards_pages_carry_the_token() {
    let t0 = SystemClock.now();
    let mut engine = Engine::new(EngineConfig::default()).unwrap();
    engine
        .submit(Record::new(stream(), "k", vec![1]), t0)
        .unwrap();
    let (id, _) = drain(&mut engine, t0).remove(0);
    let half = |start: u128, end: u128, n: u32| ShardDescription {
        shard_id: ShardId::new(format!("shardId-{n:012}")),
        hash_key_range: HashKeyRange::new(HashKey::new(start), HashKey::new(end)).unwrap(),
        open: true,
    };
    let page = Response::ListShards(ListShardsResponse {
        shards: vec![half(0, u128::MAX / 2, 0)],
        next_token: Some("token-1".into()),
    });
    engine.handle_response(id, Ok(page), t0);
    let requests = drain(&mut engine, t0);
    let Request::ListShards(next) = &requests[0].1 else {
        panic!("expected the next page")
    };
    assert_eq!(next.next_token.as_deref(), Some("token-1"));
    let last = Response::ListShards(ListShardsResponse {
        shards: vec![half(u128::MAX / 2 + 1, u128::MAX, 1)],
        next_token: None,
    });
    engine.handle_response(requests[0].0, Ok(last), t0);
    assert_eq!(engine.shard_map(&stream()).unwrap().open_shards().len(), 2);
}

#[test]
fn the_map_is_refreshed_periodically_with_jitter_and_failures_back_off() {
    let t0 = SystemClock.now();
    let mut engine = ready_engine(EngineConfig::default(), t0);
    // The map was read before the engine was ready.
    let read_at = t0 - common::WARM_UP;
    let next = engine.poll_timeout().unwrap();
    assert!(
        next >= read_at + Duration::from_secs(54) && next <= read_at + Duration::from_secs(66),
        "{:?}",
        next - read_at
    );
    engine.handle_timeout(next);
    let requests = drain(&mut engine, next);
    assert!(matches!(requests[0].1, Request::ListShards(_)));
    // Failures: retry after 1 s, then 1.5 s, then 2.25 s.
    let mut now = next;
    let mut id = requests[0].0;
    for expected in [1_000, 1_500, 2_250] {
        let error = TransportError::from_code("LimitExceededException", "slow down");
        engine.handle_response(id, Err(error), now);
        let retry_at = engine.poll_timeout().unwrap();
        assert_eq!(retry_at - now, ms(expected));
        now = retry_at;
        engine.handle_timeout(now);
        let requests = drain(&mut engine, now);
        assert_eq!(requests.len(), 1);
        id = requests[0].0;
    }
}

#[test]
fn aggregation_goes_on_with_the_old_map_during_a_refresh() {
    let t0 = SystemClock.now();
    let mut engine = ready_engine(EngineConfig::default(), t0);
    let refresh_at = engine.poll_timeout().unwrap();
    engine.handle_timeout(refresh_at);
    let refresh = drain(&mut engine, refresh_at);
    assert_eq!(refresh.len(), 1, "the refresh is in flight and unanswered");
    for i in 0..100 {
        let record = Record::new(stream(), format!("k{i}"), vec![1; 10]);
        engine.submit(record, refresh_at).unwrap();
    }
    engine.flush(refresh_at);
    let sent = puts(drain(&mut engine, refresh_at));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.entries.len(), 1, "100 records in one aggregate");
    assert!(sent[0].1.entries[0].has_aggregation_magic());
}

#[test]
fn requests_never_break_service_limits_whatever_the_config() {
    let t0 = SystemClock.now();
    let mut config = EngineConfig::default();
    config.collection_max_size = 64 * 1024 * 1024;
    config.max_outstanding_bytes = 256 * 1024 * 1024;
    config.aggregation_enabled = false;
    config.rate_limit = 1_000_000;
    config.record_max_buffered_time = Duration::from_secs(10);
    let mut engine = ready_engine(config, t0);
    for i in 0..1_200 {
        let record = Record::new(stream(), format!("k{i}"), vec![7; 20_000]);
        engine.submit(record, t0).unwrap();
    }
    engine.flush(t0);
    // The byte bucket (10 MiB) lets part through at once; the rest follows as tokens come.
    let mut sent = puts(drain(&mut engine, t0));
    while let Some(at) = engine.poll_timeout() {
        if at > t0 + Duration::from_secs(30) {
            break;
        }
        engine.handle_timeout(at);
        sent.extend(puts(drain(&mut engine, at)));
    }
    assert!(sent.len() >= 5);
    let mut entries = 0;
    for (_, put) in &sent {
        assert!(put.entries.len() <= PUT_RECORDS_MAX_ENTRIES);
        assert!(
            put.billed_size() <= PUT_RECORDS_MAX_BYTES,
            "{}",
            put.billed_size()
        );
        entries += put.entries.len();
    }
    assert_eq!(entries, 1_200);
}

#[test]
fn count_and_size_limits_close_aggregates_and_requests() {
    let t0 = SystemClock.now();
    let mut config = EngineConfig::default();
    config.aggregation_max_count = 10;
    config.collection_max_count = 3;
    let mut engine = ready_engine(config, t0);
    for i in 0..30 {
        let record = Record::new(stream(), format!("k{i}"), vec![1]);
        engine.submit(record, t0).unwrap();
    }
    // Three aggregates of ten fill one request without waiting for any deadline.
    let sent = puts(drain(&mut engine, t0));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.entries.len(), 3);

    let mut config = EngineConfig::default();
    config.aggregation_max_size = MaxAggregateSize::new(1_000).unwrap();
    let mut engine = ready_engine(config, t0);
    for i in 0..50 {
        let record = Record::new(stream(), format!("k{i}"), vec![1; 100]);
        engine.submit(record, t0).unwrap();
    }
    engine.flush(t0);
    let sent = puts(drain(&mut engine, t0));
    let sizes: Vec<usize> = sent[0].1.entries.iter().map(|e| e.data().len()).collect();
    assert!(sizes.len() >= 6, "{sizes:?}");
    assert!(sizes.iter().all(|&s| s <= 1_000), "{sizes:?}");
}

#[test]
fn a_busy_shard_triggers_the_collector_at_256_kib() {
    let t0 = SystemClock.now();
    // A rate limit whose bucket lets 256 KiB through at once.
    let mut config = EngineConfig::default();
    config.rate_limit = 1_000;
    let mut engine = ready_engine(config, t0);
    // About 50 KiB per aggregate: the sixth closed aggregate passes 256 KiB.
    let mut first_request_after = None;
    for i in 0..400 {
        let record = Record::new(stream(), format!("k{i}"), vec![1; 1_000]);
        engine.submit(record, t0).unwrap();
        if engine.has_requests() {
            first_request_after = Some(i + 1);
            break;
        }
    }
    let records = first_request_after.unwrap();
    assert!((250..=320).contains(&records), "{records}");
    let sent = puts(drain(&mut engine, t0));
    assert!(sent[0].1.billed_size() >= 256 * 1024);
}

#[test]
fn every_outcome_and_every_refusal_hands_the_record_s_token_back() {
    let t0 = SystemClock.now();
    let mut config = EngineConfig::default();
    config.max_outstanding_records = 3;
    let mut engine: Engine<String> = Engine::new(config).unwrap();
    for key in ["a", "b"] {
        let record = Record::new(stream(), key, vec![1]);
        engine
            .submit_with(record, format!("token {key}"), t0)
            .unwrap();
    }
    // Refused (an invalid key; then the limit): the token comes back with the record.
    let (refused, token) = engine
        .submit_with(Record::new(stream(), "", vec![1]), "token empty".into(), t0)
        .unwrap_err();
    assert_eq!(
        (refused.into_record().partition_key(), token.as_str()),
        ("", "token empty")
    );
    engine
        .submit_with(Record::new(stream(), "c", vec![1]), "token c".into(), t0)
        .unwrap();
    let (refused, token) = engine
        .submit_with(Record::new(stream(), "d", vec![1]), "token d".into(), t0)
        .unwrap_err();
    assert!(refused.reason().is_back_pressure());
    assert_eq!(token, "token d");
    // Two are written; the map read and the calls are answered, the third is abandoned.
    for (id, request) in drain(&mut engine, t0) {
        if let Request::ListShards(_) = request {
            engine.handle_response(id, Ok(one_shard()), t0);
        }
    }
    engine.flush(t0);
    for (id, put) in puts(drain(&mut engine, t0)) {
        engine.handle_response(id, Ok(written(&put)), t0 + ms(5));
    }
    engine.abandon();
    let mut tokens = Vec::new();
    while let Some(event) = engine.poll_event() {
        match event {
            Event::Delivered(delivery) => {
                let (delivery, token) = delivery.take_token();
                assert_eq!(delivery.shard_id().as_str(), "shardId-000000000000");
                tokens.push(token);
            }
            Event::Failed(failure) => tokens.push(failure.token().clone()),
            _ => {}
        }
    }
    tokens.sort();
    assert_eq!(tokens, ["token a", "token b", "token c"]);
}

#[test]
fn abandon_fails_everything_and_hands_records_back() {
    let t0 = SystemClock.now();
    let mut engine = ready_engine(EngineConfig::default(), t0);
    for i in 0..10u8 {
        let record = Record::new(stream(), format!("k{i}"), vec![i]);
        engine.submit(record, t0).unwrap();
    }
    engine.flush(t0);
    let in_flight = puts(drain(&mut engine, t0));
    engine
        .submit(Record::new(stream(), "late", vec![9]), t0)
        .unwrap();
    // A request made but not yet handed out carries records no call has carried.
    engine
        .submit(Record::new(stream(), "queued", vec![8]), t0)
        .unwrap();
    engine.flush(t0);
    engine.abandon();
    let mut reasons = Vec::new();
    while let Some(event) = engine.poll_event() {
        let Event::Failed(failure) = event else {
            panic!("only failures expected")
        };
        assert_eq!(
            failure.record().partition_key().starts_with('k'),
            failure.reason() == FailureReason::AbandonedInFlight,
            "{failure}"
        );
        reasons.push(failure.reason());
    }
    // The ten of the call in flight may have been written; the two others were not.
    let carried = reasons
        .iter()
        .filter(|r| **r == FailureReason::AbandonedInFlight)
        .count();
    assert_eq!((carried, reasons.len()), (10, 12));
    assert_eq!(engine.outstanding_records(), 0);
    // A late answer to an abandoned request changes nothing.
    engine.handle_response(in_flight[0].0, Ok(written(&in_flight[0].1)), t0 + ms(10));
    assert!(engine.poll_event().is_none());
}

#[test]
fn a_whole_request_error_is_retried_after_a_backoff() {
    let t0 = SystemClock.now();
    let mut engine = ready_engine(EngineConfig::default(), t0);
    engine
        .submit(Record::new(stream(), "k", vec![1]), t0)
        .unwrap();
    engine.flush(t0);
    let sent = puts(drain(&mut engine, t0));
    let error = TransportError::from_code("InternalFailure", "boom");
    engine.handle_response(sent[0].0, Err(error), t0 + ms(10));
    let mut now;
    let retried = loop {
        now = engine.poll_timeout().unwrap();
        engine.handle_timeout(now);
        let sent = puts(drain(&mut engine, now));
        if !sent.is_empty() {
            break sent;
        }
    };
    // First backoff ceiling 100 ms (full jitter), then the collection grace of 20 ms.
    assert!(now <= t0 + ms(10) + ms(100) + ms(20), "{:?}", now - t0);
    engine.handle_response(retried[0].0, Ok(written(&retried[0].1)), now);
    let Some(Event::Delivered(delivery)) = engine.poll_event() else {
        panic!("expected a delivery")
    };
    assert_eq!(delivery.attempts().len(), 2);
    assert_eq!(delivery.attempts()[0].error_code(), Some("InternalFailure"));
    assert!(delivery.attempts()[1].is_success());
}

#[test]
fn records_wait_for_a_slow_first_map_and_are_then_aggregated() {
    let t0 = SystemClock.now();
    let mut engine = Engine::new(EngineConfig::default()).unwrap();
    for i in 0..100 {
        let record = Record::new(stream(), format!("k{i}"), vec![1; 10]);
        engine.submit(record, t0).unwrap();
    }
    let requests = drain(&mut engine, t0);
    // The map's answer takes 2 s, far past the records' 100 ms deadline: they keep waiting
    // (sent alone, they could not be aggregated).
    let later = t0 + Duration::from_secs(2);
    engine.handle_timeout(later);
    assert!(puts(drain(&mut engine, later)).is_empty());
    engine.handle_response(requests[0].0, Ok(one_shard()), later);
    let mut sent = puts(drain(&mut engine, later));
    while sent.is_empty() {
        let at = engine.poll_timeout().unwrap();
        assert!(
            at <= later + ms(100),
            "sent within a buffering time of the map's arrival"
        );
        engine.handle_timeout(at);
        sent = puts(drain(&mut engine, at));
    }
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.entries.len(), 1, "one aggregate of 100 records");
}

#[test]
fn when_the_first_map_cannot_be_read_records_go_alone() {
    let t0 = SystemClock.now();
    let mut engine = Engine::new(EngineConfig::default()).unwrap();
    for i in 0..3 {
        let record = Record::new(stream(), format!("k{i}"), vec![1; 10]);
        engine.submit(record, t0).unwrap();
    }
    let requests = drain(&mut engine, t0);
    let later = t0 + ms(500);
    let denied = TransportError::from_code("AccessDeniedException", "no ListShards permission");
    engine.handle_response(requests[0].0, Err(denied), later);
    // Past their deadline, so they leave now, unaggregated, after the collection grace.
    engine.handle_timeout(later + ms(20));
    let sent = puts(drain(&mut engine, later + ms(20)));
    assert_eq!(
        sent.iter().map(|(_, put)| put.entries.len()).sum::<usize>(),
        3
    );
    assert!(
        sent.iter()
            .all(|(_, put)| put.entries.iter().all(|e| !e.has_aggregation_magic()))
    );
}

#[test]
fn an_answer_with_the_wrong_entry_count_fails_its_records_and_frees_the_shard() {
    for ordering in [OrderingMode::Unordered, OrderingMode::PerShard] {
        let t0 = SystemClock.now();
        let mut config = EngineConfig::default();
        config.ordering = ordering;
        let mut engine = ready_engine(config, t0);
        engine
            .submit(Record::new(stream(), "k", vec![1]), t0)
            .unwrap();
        engine.flush(t0);
        let sent = puts(drain(&mut engine, t0));
        assert_eq!(sent.len(), 1);
        let empty = Response::PutRecords(PutRecordsResponse { entries: vec![] });
        engine.handle_response(sent[0].0, Ok(empty), t0 + ms(10));
        let Some(Event::Failed(failure)) = engine.poll_event() else {
            panic!("{ordering:?}: expected a failure")
        };
        assert_eq!(failure.reason(), FailureReason::RecordCountMismatch);
        assert_eq!(
            failure.attempts()[0].error_code(),
            Some("RecordCountMismatch")
        );
        // The shard is not left waiting for an answer that came: the next record is sent.
        engine
            .submit(Record::new(stream(), "k", vec![2]), t0 + ms(10))
            .unwrap();
        engine.flush(t0 + ms(10));
        let next = puts(drain(&mut engine, t0 + ms(10)));
        assert_eq!(next.len(), 1, "{ordering:?}: the shard sends again");
        engine.handle_response(next[0].0, Ok(written(&next[0].1)), t0 + ms(20));
        assert!(matches!(engine.poll_event(), Some(Event::Delivered(_))));
        assert_eq!(engine.outstanding_records(), 0);
    }
}

#[test]
fn a_listing_that_repeats_its_token_is_a_failed_read_retried_after_a_backoff() {
    let t0 = SystemClock.now();
    let mut engine = Engine::new(EngineConfig::default()).unwrap();
    engine
        .submit(Record::new(stream(), "k", vec![1]), t0)
        .unwrap();
    let (mut id, _) = drain(&mut engine, t0).remove(0);
    let endless = || {
        Response::ListShards(ListShardsResponse {
            shards: vec![],
            next_token: Some("same".into()),
        })
    };
    engine.handle_response(id, Ok(endless()), t0);
    let requests = drain(&mut engine, t0);
    assert!(matches!(&requests[0].1, Request::ListShards(list)
        if list.next_token.as_deref() == Some("same")));
    id = requests[0].0;
    // The token comes back again: the listing is refused, and read again from the start later.
    engine.handle_response(id, Ok(endless()), t0 + ms(10));
    assert!(drain(&mut engine, t0 + ms(10)).is_empty());
    let (_, stats) = engine.stats().next().unwrap();
    assert_eq!(stats.errors_by_code.get("MalformedListing"), Some(&1));
    // (Meanwhile the record goes alone at its deadline, as after any failed first read.)
    let (read_at, read) = loop {
        let now = engine.poll_timeout().unwrap();
        engine.handle_timeout(now);
        let reads: Vec<_> = drain(&mut engine, now)
            .into_iter()
            .filter(|(_, r)| matches!(r, Request::ListShards(_)))
            .collect();
        if let Some((_, read)) = reads.into_iter().next() {
            break (now, read);
        }
    };
    assert_eq!(read_at, t0 + ms(10) + Duration::from_secs(1));
    assert!(matches!(read, Request::ListShards(list) if list.next_token.is_none()));
}

#[test]
fn ordering_mode_fails_records_with_the_reason_the_map_cannot_be_read() {
    let t0 = SystemClock.now();
    let mut config = EngineConfig::default();
    config.ordering = OrderingMode::PerShard;
    let mut engine = Engine::new(config).unwrap();
    for i in 0..3 {
        let record = Record::new(stream(), format!("k{i}"), vec![1; 10]);
        engine.submit(record, t0).unwrap();
    }
    let requests = drain(&mut engine, t0);
    let denied = TransportError::from_code("AccessDeniedException", "no ListShards permission");
    engine.handle_response(requests[0].0, Err(denied), t0 + ms(10));
    // Records never leave without a map in ordering mode: they fail now, saying why, instead
    // of expiring after record_ttl.
    let mut failed = 0;
    while let Some(event) = engine.poll_event() {
        let Event::Failed(failure) = event else {
            panic!("expected failures")
        };
        assert_eq!(
            failure.reason(),
            FailureReason::Terminal(kpl_engine::TransportErrorKind::AccessDenied)
        );
        assert_eq!(
            failure.attempts()[0].error_code(),
            Some("AccessDeniedException")
        );
        failed += 1;
    }
    assert_eq!(failed, 3);
    assert_eq!(engine.outstanding_records(), 0);
}

#[test]
fn expired_token_answers_are_retried_for_a_while_then_fail() {
    let t0 = SystemClock.now();
    let mut config = EngineConfig::default();
    config.record_ttl = Duration::from_secs(3_600);
    let mut engine = ready_engine(config, t0);
    engine
        .submit(Record::new(stream(), "k", vec![1]), t0)
        .unwrap();
    engine.flush(t0);
    let mut now = t0;
    let mut sent = puts(drain(&mut engine, now));
    let mut tries = 0;
    let failure = loop {
        let expired = TransportError::from_code(
            "ExpiredTokenException",
            "The security token included in the request is expired",
        );
        engine.handle_response(sent[0].0, Err(expired), now);
        tries += 1;
        if let Some(event) = engine.poll_event() {
            let Event::Failed(failure) = event else {
                panic!("expected a failure")
            };
            break failure;
        }
        // Retried after a backoff, as a retryable error would be.
        sent = loop {
            now = engine.poll_timeout().unwrap();
            engine.handle_timeout(now);
            let sent = puts(drain(&mut engine, now));
            if !sent.is_empty() {
                break sent;
            }
        };
    };
    assert!(tries > 3, "{tries} tries");
    assert!(now - t0 >= Duration::from_secs(120), "{:?}", now - t0);
    assert!(now - t0 < Duration::from_secs(140), "{:?}", now - t0);
    assert_eq!(
        failure.reason(),
        FailureReason::Terminal(kpl_engine::TransportErrorKind::ExpiredCredentials)
    );
}

#[test]
fn a_request_refused_as_invalid_is_split_so_only_the_bad_entry_fails() {
    let t0 = SystemClock.now();
    let mut config = EngineConfig::default();
    config.aggregation_enabled = false;
    let mut engine = ready_engine(config, t0);
    for key in ["good-1", "bad", "good-2"] {
        engine
            .submit(Record::new(stream(), key, vec![1; 10]), t0)
            .unwrap();
    }
    engine.flush(t0);
    let sent = puts(drain(&mut engine, t0));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.entries.len(), 3);
    let invalid =
        || TransportError::from_code("ValidationException", "1 validation error detected");
    engine.handle_response(sent[0].0, Err(invalid()), t0 + ms(10));
    assert!(engine.poll_event().is_none(), "nothing fails yet");
    // Each entry comes back in a request of its own.
    let mut now = t0 + ms(10);
    let mut alone = Vec::new();
    loop {
        alone.extend(puts(drain(&mut engine, now)));
        if alone.len() >= 3 {
            break;
        }
        now = engine.poll_timeout().unwrap();
        engine.handle_timeout(now);
    }
    assert!(now - t0 < Duration::from_secs(1), "{:?}", now - t0);
    assert!(alone.iter().all(|(_, put)| put.entries.len() == 1));
    for (id, put) in alone {
        if put.entries[0].partition_key() == "bad" {
            engine.handle_response(id, Err(invalid()), now);
        } else {
            engine.handle_response(id, Ok(written(&put)), now);
        }
    }
    let mut delivered = 0;
    while let Some(event) = engine.poll_event() {
        match event {
            Event::Delivered(_) => delivered += 1,
            Event::Failed(failure) => {
                assert_eq!(failure.record().partition_key(), "bad");
                assert_eq!(
                    failure.reason(),
                    FailureReason::Terminal(kpl_engine::TransportErrorKind::Validation)
                );
                assert_eq!(failure.attempt_count(), 2);
            }
            _ => {}
        }
    }
    assert_eq!(delivered, 2);
    assert_eq!(engine.outstanding_records(), 0);
}

#[test]
fn a_request_that_waited_in_the_engine_past_the_records_ttl_is_not_sent() {
    for ordering in [OrderingMode::Unordered, OrderingMode::PerShard] {
        let t0 = SystemClock.now();
        let mut config = EngineConfig::default();
        config.ordering = ordering;
        config.record_ttl = Duration::from_secs(1);
        let mut engine = ready_engine(config, t0);
        engine
            .submit(Record::new(stream(), "k", vec![1]), t0)
            .unwrap();
        engine.flush(t0);
        // The driver's connections stay busy for two seconds: the request waits in the engine.
        let later = t0 + Duration::from_secs(2);
        assert!(engine.has_requests());
        assert!(
            drain(&mut engine, later).is_empty(),
            "{ordering:?}: nothing sent"
        );
        let Some(Event::Failed(failure)) = engine.poll_event() else {
            panic!("{ordering:?}: expected the record to expire")
        };
        assert_eq!(failure.reason(), FailureReason::Expired);
        assert_eq!(engine.outstanding_records(), 0);
        // The shard is free again: the next record goes.
        engine
            .submit(Record::new(stream(), "k", vec![2]), later)
            .unwrap();
        engine.flush(later);
        assert_eq!(puts(drain(&mut engine, later)).len(), 1, "{ordering:?}");
    }
}

#[test]
fn an_aggregate_waiting_past_the_ttl_of_some_of_its_records_goes_without_them() {
    for ordering in [OrderingMode::Unordered, OrderingMode::PerShard] {
        let t0 = SystemClock.now();
        let mut config = EngineConfig::default();
        config.ordering = ordering;
        config.record_ttl = Duration::from_secs(1);
        let mut engine = ready_engine(config, t0);
        engine
            .submit(Record::new(stream(), "old", vec![1]), t0)
            .unwrap();
        let t1 = t0 + ms(600);
        engine
            .submit(Record::new(stream(), "new", vec![2]), t1)
            .unwrap();
        engine.flush(t1);
        assert!(engine.has_requests(), "one aggregate of both, waiting");
        // The connections free up after the first record's TTL, before the second's.
        let later = t0 + ms(1_200);
        assert!(drain(&mut engine, later).is_empty(), "{ordering:?}");
        let Some(Event::Failed(failure)) = engine.poll_event() else {
            panic!("{ordering:?}: expected the first record to expire")
        };
        assert_eq!(failure.reason(), FailureReason::Expired);
        assert_eq!(failure.record().partition_key(), "old");
        // The second goes back to its shard and leaves in a request of its own.
        let later = engine.poll_timeout().unwrap();
        engine.handle_timeout(later);
        let sent = puts(drain(&mut engine, later));
        assert_eq!(sent.len(), 1, "{ordering:?}: the second record still goes");
        let entries = &sent[0].1.entries;
        assert_eq!(entries.len(), 1);
        assert!(
            !entries[0].has_aggregation_magic(),
            "{ordering:?}: alone now"
        );
        assert_eq!(entries[0].partition_key(), "new");
        engine.handle_response(sent[0].0, Ok(written(&sent[0].1)), later);
        assert!(matches!(engine.poll_event(), Some(Event::Delivered(_))));
        assert_eq!(engine.outstanding_records(), 0);
    }
}
