//! What the hand-driven engine tests share: an engine that has read a one-shard map, and
//! answers built by hand.
#![allow(
    clippy::unwrap_used,
    dead_code,
    reason = "test helpers; each test file uses a part"
)]

use std::time::{Duration, Instant};

use kpl_aggregation::{HashKey, HashKeyRange};
use kpl_engine::transport::{
    ListShardsResponse, PutRecordsEntryResult, PutRecordsRequest, PutRecordsResponse,
    ShardDescription, StreamSummary,
};
use kpl_engine::{Engine, EngineConfig, Record, Request, RequestId, Response, ShardId, Stream};

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(crate) fn stream() -> Stream {
    Stream::new("s").unwrap()
}

pub(crate) fn one_shard() -> Response {
    Response::ListShards(ListShardsResponse {
        shards: vec![ShardDescription {
            shard_id: ShardId::from("shardId-000000000000"),
            hash_key_range: HashKeyRange::FULL,
            open: true,
        }],
        next_token: None,
    })
}

pub(crate) fn written(request: &PutRecordsRequest) -> Response {
    written_on(request, "shardId-000000000000")
}

/// Every entry of `request` written to `shard`.
pub(crate) fn written_on(request: &PutRecordsRequest, shard: &str) -> Response {
    Response::PutRecords(PutRecordsResponse {
        entries: request
            .entries
            .iter()
            .enumerate()
            .map(|(i, _)| PutRecordsEntryResult::Written {
                shard_id: ShardId::from(shard),
                sequence_number: format!("{i}").into(),
            })
            .collect(),
    })
}

/// A one-page `ListShards` answer: (shard number, first hash key, last hash key, open).
pub(crate) fn listing(shards: &[(u32, u128, u128, bool)]) -> Response {
    Response::ListShards(ListShardsResponse {
        shards: shards
            .iter()
            .map(|&(number, start, end, open)| ShardDescription {
                shard_id: ShardId::new(format!("shardId-{number:012}")),
                hash_key_range: HashKeyRange::new(HashKey::new(start), HashKey::new(end)).unwrap(),
                open,
            })
            .collect(),
        next_token: None,
    })
}

/// Partition keys whose hash keys lie in `start..=end`.
pub(crate) fn keys_in(start: u128, end: u128, count: usize, salt: &str) -> Vec<String> {
    (0u64..)
        .map(|i| format!("{salt}-{i}"))
        .filter(|key| {
            let hash = HashKey::from_partition_key(key).get();
            start <= hash && hash <= end
        })
        .take(count)
        .collect()
}

pub(crate) fn drain<T>(engine: &mut Engine<T>, now: Instant) -> Vec<(RequestId, Request)> {
    std::iter::from_fn(|| engine.poll_request(now)).collect()
}

/// How long before it is ready [`ready_engine`] reads the map and writes a warm-up record.
pub(crate) const WARM_UP: Duration = Duration::from_secs(2);

/// An engine that has read a one-shard map and finished a warm-up record [`WARM_UP`] before
/// `ready_at`.
pub(crate) fn ready_engine(config: EngineConfig, ready_at: Instant) -> Engine {
    // Warmed before: its shards' rate limiters, empty when made, are full by then.
    let start = ready_at - WARM_UP;
    let mut engine = Engine::new(config).unwrap();
    engine
        .submit(Record::new(stream(), "warm", vec![0]), start)
        .unwrap();
    for (id, request) in drain(&mut engine, start) {
        match request {
            Request::ListShards(_) => engine.handle_response(id, Ok(one_shard()), start),
            Request::DescribeStreamSummary(_) => engine.handle_response(
                id,
                Ok(Response::DescribeStreamSummary(StreamSummary {
                    max_record_size_kib: Some(1024),
                    open_shard_count: 1,
                })),
                start,
            ),
            other => panic!("unexpected {other:?}"),
        }
    }
    engine.flush(start);
    for (id, request) in drain(&mut engine, start) {
        let Request::PutRecords(put) = request else {
            panic!("expected PutRecords")
        };
        engine.handle_response(id, Ok(written(&put)), start);
    }
    while engine.poll_event().is_some() {}
    assert_eq!(engine.outstanding_records(), 0);
    engine
}

pub(crate) fn puts(requests: Vec<(RequestId, Request)>) -> Vec<(RequestId, PutRecordsRequest)> {
    requests
        .into_iter()
        .filter_map(|(id, r)| match r {
            Request::PutRecords(put) => Some((id, put)),
            _ => None,
        })
        .collect()
}
