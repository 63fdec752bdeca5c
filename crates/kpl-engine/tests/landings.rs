//! Judging where an aggregate landed when the shard map may be stale: a landing on a shard the
//! map has never listed waits for a map read that knows it, and is re-sent only if that read
//! says the aggregate does not belong there, or no read can tell in time.
#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::time::{Duration, Instant};

use common::{drain, keys_in, listing, ms, puts, ready_engine, stream, written_on};
use kpl_engine::time::{Clock, SystemClock};
use kpl_engine::transport::{PutRecordsRequest, ShardFilter};
use kpl_engine::{
    Engine, EngineConfig, Event, OrderingMode, Record, Request, RequestId, TransportError,
};

/// The low half of the hash key space, after shard 0 is split in the middle into 1 and 2.
const LOW_END: u128 = (1u128 << 127) - 1;
const HIGH_START: u128 = 1u128 << 127;
/// The split: shard 0 closed, 1 (low half) and 2 (high half) open.
const SPLIT: [(u32, u128, u128, bool); 3] = [
    (0, 0, u128::MAX, false),
    (1, 0, LOW_END, true),
    (2, HIGH_START, u128::MAX, true),
];

/// Submits one record per key and flushes: the stale one-shard map puts them all in one
/// aggregate, sent in one request.
fn send_aggregate(engine: &mut Engine, keys: &[String], now: Instant) -> Sent {
    for key in keys {
        engine
            .submit(Record::new(stream(), key.clone(), vec![7; 20]), now)
            .unwrap();
    }
    engine.flush(now);
    let sent = puts(drain(engine, now));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.entries.len(), 1, "one aggregate");
    assert!(sent[0].1.entries[0].has_aggregation_magic());
    let (id, request) = sent.into_iter().next().unwrap();
    Sent {
        id,
        request,
        count: keys.len(),
    }
}

/// A `PutRecords` request in flight and how many user records it carries.
struct Sent {
    id: RequestId,
    request: PutRecordsRequest,
    count: usize,
}

impl Sent {
    /// Answers it: written to `shard` at `now`.
    fn land(&self, engine: &mut Engine, shard: &str, now: Instant) {
        engine.handle_response(self.id, Ok(written_on(&self.request, shard)), now);
    }
}

/// The `ListShards` request among `requests`.
fn list_shards(requests: &[(RequestId, Request)]) -> RequestId {
    requests
        .iter()
        .find(|(_, r)| matches!(r, Request::ListShards(_)))
        .map(|(id, _)| *id)
        .expect("a ListShards request")
}

fn events(engine: &mut Engine) -> Vec<Event> {
    std::iter::from_fn(|| engine.poll_event()).collect()
}

fn stats(engine: &Engine) -> kpl_engine::StreamStats {
    engine.stats().next().unwrap().1
}

#[test]
fn an_aggregate_on_an_unknown_child_that_owns_it_waits_for_the_map_and_is_not_resent() {
    for ordering in [OrderingMode::Unordered, OrderingMode::PerShard] {
        let t0 = SystemClock.now();
        let mut config = EngineConfig::default();
        config.ordering = ordering;
        let mut engine = ready_engine(config, t0);
        let keys = keys_in(0, LOW_END, 10, "low");
        let put = send_aggregate(&mut engine, &keys, t0);
        // The service split shard 0 before this write: the aggregate landed on child 1, which
        // the map has never listed. It is neither delivered nor re-sent yet; a read starts.
        let landed = t0 + ms(30);
        put.land(&mut engine, "shardId-000000000001", landed);
        assert!(events(&mut engine).is_empty(), "{ordering:?}");
        assert_eq!(engine.outstanding_records(), put.count);
        let requests = drain(&mut engine, landed);
        assert_eq!(puts(requests.clone()).len(), 0, "nothing re-sent");
        let read = list_shards(&requests);
        assert_eq!(stats(&engine).unknown_shard_landings, 1);
        // Held records are outstanding: a flush marker waits for them.
        let marker = engine.flush_marker(landed);
        assert!(events(&mut engine).is_empty(), "{ordering:?}");
        assert_eq!(engine.outstanding_records(), put.count);

        // In ordering mode the shard stays busy meanwhile: later records of its keys wait.
        engine
            .submit(Record::new(stream(), keys[0].clone(), vec![8; 20]), landed)
            .unwrap();
        engine.flush(landed);
        if ordering == OrderingMode::PerShard {
            assert!(puts(drain(&mut engine, landed)).is_empty());
        }

        // The map arrives: child 1 owns every record, so the aggregate counts as written there.
        let mapped = landed + ms(20);
        engine.handle_response(read, Ok(listing(&SPLIT)), mapped);
        let mut judged = events(&mut engine);
        assert!(
            matches!(judged.pop(), Some(Event::Flushed(id)) if id == marker),
            "{ordering:?}: the marker completes once the held records are delivered"
        );
        let delivered: Vec<_> = judged
            .into_iter()
            .map(|event| match event {
                Event::Delivered(delivery) => delivery,
                other => panic!("{ordering:?}: expected deliveries, got {other:?}"),
            })
            .collect();
        assert_eq!(delivered.len(), put.count);
        for delivery in &delivered {
            assert_eq!(delivery.shard_id().as_str(), "shardId-000000000001");
            assert_eq!(delivery.attempts().len(), 1, "written once, never re-sent");
            assert_eq!(
                delivery.attempts()[0].duration(),
                ms(30),
                "the call's duration"
            );
        }
        assert_eq!(stats(&engine).unjudged_landings_resent, 0);
        assert_eq!(stats(&engine).user_records_put, put.count as u64 + 1);

        // The record held behind it now goes to the child.
        engine.flush(mapped);
        let mut now = mapped;
        let mut sent = puts(drain(&mut engine, now));
        while sent.is_empty() {
            now = engine.poll_timeout().unwrap();
            engine.handle_timeout(now);
            sent = puts(drain(&mut engine, now));
        }
        assert_eq!(sent[0].1.entries.len(), 1);
        engine.handle_response(
            sent[0].0,
            Ok(written_on(&sent[0].1, "shardId-000000000001")),
            now,
        );
        assert_eq!(engine.outstanding_records(), 0, "{ordering:?}");
    }
}

#[test]
fn an_aggregate_on_an_unknown_shard_that_does_not_own_it_is_resent_once_the_map_says_so() {
    let t0 = SystemClock.now();
    let mut engine = ready_engine(EngineConfig::default(), t0);
    let mut keys = keys_in(0, LOW_END, 5, "low");
    keys.extend(keys_in(HIGH_START, u128::MAX, 5, "high"));
    let put = send_aggregate(&mut engine, &keys, t0);
    put.land(&mut engine, "shardId-000000000001", t0 + ms(30));
    let read = list_shards(&drain(&mut engine, t0 + ms(30)));
    engine.handle_response(read, Ok(listing(&SPLIT)), t0 + ms(50));
    assert!(events(&mut engine).is_empty(), "re-sent, not reported");
    let mut now = t0 + ms(50);
    let mut sent = puts(drain(&mut engine, now));
    while sent.is_empty() {
        now = engine.poll_timeout().unwrap();
        engine.handle_timeout(now);
        sent = puts(drain(&mut engine, now));
    }
    // Re-sent aggregated for the new shards: one aggregate each.
    let entries: usize = sent.iter().map(|(_, put)| put.entries.len()).sum();
    assert_eq!(entries, 2);
    let stats = stats(&engine);
    assert_eq!(stats.errors_by_code.get("WrongShard"), Some(&1));
    assert_eq!(stats.retries_per_record, put.count as u64);
    assert_eq!(stats.unjudged_landings_resent, 0);
}

#[test]
fn a_read_started_before_the_write_is_not_trusted_to_know_the_shard() {
    let t0 = SystemClock.now();
    let mut engine = ready_engine(EngineConfig::default(), t0);
    // Two aggregates in two requests, both sent under the one-shard map.
    let put_a = send_aggregate(&mut engine, &keys_in(0, LOW_END, 4, "a"), t0);
    let quarter = HIGH_START + (1u128 << 126);
    let put_b = send_aggregate(&mut engine, &keys_in(HIGH_START, quarter - 1, 4, "b"), t0);
    // A lands on child 1 at 10 ms: a read starts.
    put_a.land(&mut engine, "shardId-000000000001", t0 + ms(10));
    let first_read = list_shards(&drain(&mut engine, t0 + ms(10)));
    // B lands at 20 ms on shard 3, a child of 2 that a second split made after that read left.
    put_b.land(&mut engine, "shardId-000000000003", t0 + ms(20));
    assert!(
        drain(&mut engine, t0 + ms(20)).is_empty(),
        "a read is in flight"
    );
    // The first read answers without shard 3: A is judged, B waits for a read made after it.
    engine.handle_response(first_read, Ok(listing(&SPLIT)), t0 + ms(30));
    let judged = events(&mut engine);
    assert_eq!(judged.len(), put_a.count);
    assert!(judged.iter().all(|e| matches!(e, Event::Delivered(d)
        if d.shard_id().as_str() == "shardId-000000000001")));
    let second_read = list_shards(&drain(&mut engine, t0 + ms(30)));
    assert_eq!(engine.outstanding_records(), put_b.count);
    let second_split = [
        (0, 0, u128::MAX, false),
        (1, 0, LOW_END, true),
        (2, HIGH_START, u128::MAX, false),
        (3, HIGH_START, quarter - 1, true),
        (4, quarter, u128::MAX, true),
    ];
    engine.handle_response(second_read, Ok(listing(&second_split)), t0 + ms(40));
    let judged = events(&mut engine);
    assert_eq!(judged.len(), put_b.count);
    for event in judged {
        let Event::Delivered(delivery) = event else {
            panic!("expected a delivery, got {event:?}")
        };
        assert_eq!(delivery.shard_id().as_str(), "shardId-000000000003");
        assert_eq!(delivery.attempts().len(), 1);
    }
    assert_eq!(stats(&engine).unjudged_landings_resent, 0);
    assert_eq!(stats(&engine).unknown_shard_landings, 2);
}

/// Shard 1 split again into 3 and 4 after the aggregate landed on it, before the map read.
const SPLIT_TWICE: [(u32, u128, u128, bool); 5] = [
    (0, 0, u128::MAX, false),
    (1, 0, LOW_END, false),
    (2, HIGH_START, u128::MAX, true),
    (3, 0, (1u128 << 126) - 1, true),
    (4, 1u128 << 126, LOW_END, true),
];

/// The open shards of `SPLIT_TWICE`, as a read of the open shards lists them.
fn open_only(shards: &[(u32, u128, u128, bool)]) -> Vec<(u32, u128, u128, bool)> {
    shards.iter().copied().filter(|shard| shard.3).collect()
}

/// The request among `requests` that lists every shard, closed ones included.
fn history_read(requests: &[(RequestId, Request)]) -> RequestId {
    requests
        .iter()
        .find(|(_, r)| matches!(r, Request::ListShards(list) if list.filter == ShardFilter::FromTrimHorizon))
        .map(|(id, _)| *id)
        .expect("a ListShards request for every shard")
}

#[test]
fn a_shard_closed_again_before_the_map_read_is_looked_up_among_all_shards() {
    for failures in [0, 2] {
        let t0 = SystemClock.now();
        let mut engine = ready_engine(EngineConfig::default(), t0);
        let put = send_aggregate(&mut engine, &keys_in(0, LOW_END, 6, "low"), t0);
        // Landed on shard 1, which a second split closed before the map read listed open shards.
        put.land(&mut engine, "shardId-000000000001", t0 + ms(10));
        let read = list_shards(&drain(&mut engine, t0 + ms(10)));
        engine.handle_response(read, Ok(listing(&open_only(&SPLIT_TWICE))), t0 + ms(20));
        assert!(events(&mut engine).is_empty());
        // The map does not know shard 1: every shard is listed, closed ones too. A failed
        // listing is read again after a backoff, meanwhile nothing is re-sent.
        let mut now = t0 + ms(20);
        let mut history = history_read(&drain(&mut engine, now));
        for _ in 0..failures {
            let error = TransportError::from_code("InternalFailure", "boom");
            engine.handle_response(history, Err(error), now);
            now = engine.poll_timeout().unwrap();
            engine.handle_timeout(now);
            let requests = drain(&mut engine, now);
            assert!(puts(requests.clone()).is_empty(), "nothing re-sent");
            history = history_read(&requests);
        }
        engine.handle_response(history, Ok(listing(&SPLIT_TWICE)), now);
        let delivered = events(&mut engine);
        assert_eq!(delivered.len(), put.count);
        for event in delivered {
            let Event::Delivered(delivery) = event else {
                panic!("expected a delivery, got {event:?}")
            };
            assert_eq!(delivery.shard_id().as_str(), "shardId-000000000001");
            assert_eq!(delivery.attempts().len(), 1);
        }
        assert_eq!(stats(&engine).unjudged_landings_resent, 0);
    }
}

#[test]
fn a_shard_no_listing_knows_is_given_up_on_at_once() {
    let t0 = SystemClock.now();
    let mut engine = ready_engine(EngineConfig::default(), t0);
    let put = send_aggregate(&mut engine, &keys_in(0, LOW_END, 6, "low"), t0);
    // Shard 9 is in no listing: a service answer naming a shard that does not exist.
    put.land(&mut engine, "shardId-000000000009", t0 + ms(10));
    let read = list_shards(&drain(&mut engine, t0 + ms(10)));
    engine.handle_response(read, Ok(listing(&open_only(&SPLIT_TWICE))), t0 + ms(20));
    let history = history_read(&drain(&mut engine, t0 + ms(20)));
    let now = t0 + ms(30);
    engine.handle_response(history, Ok(listing(&SPLIT_TWICE)), now);
    // Re-sent alone at once: due within half a buffering time, as every retry.
    let resent_at = engine.poll_timeout().unwrap();
    assert!(resent_at <= now + ms(50), "{:?}", resent_at - now);
    engine.handle_timeout(resent_at);
    let sent = puts(drain(&mut engine, resent_at));
    assert_resent_alone(&mut engine, sent, put.count, resent_at);
}

#[test]
fn a_held_landing_waits_through_failed_reads_then_is_resent_alone_with_time_to_spare() {
    let t0 = SystemClock.now();
    let mut config = EngineConfig::default();
    config.record_ttl = Duration::from_secs(10);
    let mut engine = ready_engine(config, t0);
    let put = send_aggregate(&mut engine, &keys_in(0, LOW_END, 6, "low"), t0);
    let landed = t0 + ms(10);
    put.land(&mut engine, "shardId-000000000001", landed);
    let mut read = Some(list_shards(&drain(&mut engine, landed)));
    let mut now = landed;
    let mut failed_reads = 0;
    // Every read fails; the reads retry on their backoff and the records wait, unsent.
    let sent = loop {
        let error = TransportError::from_code("LimitExceededException", "slow down");
        if let Some(id) = read.take() {
            engine.handle_response(id, Err(error), now);
            failed_reads += 1;
        }
        now = engine.poll_timeout().unwrap();
        engine.handle_timeout(now);
        let requests = drain(&mut engine, now);
        let sent = puts(requests.clone());
        if !sent.is_empty() {
            break sent;
        }
        read = requests
            .iter()
            .find(|(_, r)| matches!(r, Request::ListShards(_)))
            .map(|(id, _)| *id);
    };
    assert!(failed_reads >= 3, "{failed_reads} reads");
    // Given up on at half the records' remaining lifetime (5 s of 10 s), plus the grace.
    assert!(
        now >= landed + Duration::from_secs(4) && now <= landed + Duration::from_secs(6),
        "{:?}",
        now - landed
    );
    assert_resent_alone(&mut engine, sent, put.count, now);
}

/// The records come back each alone (plain records, counted wherever they land) and are
/// delivered with two attempts, the first naming why.
fn assert_resent_alone(
    engine: &mut Engine,
    sent: Vec<(RequestId, PutRecordsRequest)>,
    count: usize,
    now: Instant,
) {
    let entries: usize = sent.iter().map(|(_, put)| put.entries.len()).sum();
    assert_eq!(entries, count, "one Kinesis record per user record");
    assert!(
        sent.iter()
            .all(|(_, put)| put.entries.iter().all(|e| !e.has_aggregation_magic()))
    );
    assert_eq!(stats(engine).unjudged_landings_resent, count as u64);
    assert_eq!(
        stats(engine).errors_by_code.get("UnjudgedLanding"),
        Some(&1)
    );
    for (id, put) in sent {
        // Plain records need no judging: even an unknown shard counts.
        engine.handle_response(id, Ok(written_on(&put, "shardId-000000000007")), now);
    }
    let delivered = events(engine);
    assert_eq!(delivered.len(), count);
    for event in delivered {
        let Event::Delivered(delivery) = event else {
            panic!("expected a delivery, got {event:?}")
        };
        assert_eq!(delivery.attempts().len(), 2);
        assert_eq!(delivery.attempts()[0].error_code(), Some("UnjudgedLanding"));
    }
    assert_eq!(engine.outstanding_records(), 0);
}
