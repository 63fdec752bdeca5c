//! The simulated service on its own: limits, validation, reshards, addressing and faults.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::time::{Duration, Instant};

use kpl_aggregation::{HashKey, KinesisRecord};
use kpl_engine::time::{Clock, SystemClock};
use kpl_engine::transport::{
    DescribeStreamSummaryRequest, ListShardsRequest, PutRecordsEntryResult, PutRecordsRequest,
    ShardFilter,
};
use kpl_engine::{Request, Response, Stream, TransportErrorKind};
use kpl_sim::{Faults, ScriptedFault, SimKinesis};

fn put(stream: &str, entries: Vec<KinesisRecord>) -> Request {
    Request::PutRecords(PutRecordsRequest::new(
        Stream::new(stream).unwrap(),
        entries,
    ))
}

fn results(response: Response) -> Vec<PutRecordsEntryResult> {
    match response {
        Response::PutRecords(put) => put.entries,
        other => panic!("unexpected {other:?}"),
    }
}

fn new_sim(shards: u32) -> (SimKinesis, Instant) {
    let now = SystemClock.now();
    let mut sim = SimKinesis::new(1);
    sim.create_stream("s", shards, now);
    (sim, now)
}

#[test]
fn requests_over_the_service_limits_are_refused() {
    let (mut sim, now) = new_sim(1);
    let many = (0..501)
        .map(|i| KinesisRecord::new(format!("k{i}"), vec![0]))
        .collect();
    let error = sim.handle(put("s", many), now).unwrap_err();
    assert_eq!(error.kind(), TransportErrorKind::Validation);
    // The request limit is 10 MiB (data and partition keys), as the service documents it.
    sim.set_max_record_size_kib("s", 10_240).unwrap();
    let big = (0..11)
        .map(|i| KinesisRecord::new(format!("k{i}"), vec![0; 1_000_000]))
        .collect();
    assert!(sim.handle(put("s", big), now).is_err());
    let under = (0..10)
        .map(|i| KinesisRecord::new(format!("k{i}"), vec![0; 1_000_000]))
        .collect();
    assert!(sim.handle(put("s", under), now).is_ok());
    sim.set_max_record_size_kib("s", 1_024).unwrap();
    let oversized = vec![KinesisRecord::new("k", vec![0; 1024 * 1024])];
    assert!(
        sim.handle(put("s", oversized), now).is_err(),
        "data + key > 1 MiB"
    );
    assert_eq!(sim.counters().limit_violations, 3);
}

#[test]
fn a_shard_takes_a_thousand_records_a_second() {
    let (mut sim, now) = new_sim(1);
    let mut written = 0;
    let mut throttled = 0;
    for round in 0..4 {
        let entries = (0..500)
            .map(|i| KinesisRecord::new(format!("k{round}-{i}"), vec![0]))
            .collect();
        for result in results(sim.handle(put("s", entries), now).unwrap()) {
            match result {
                PutRecordsEntryResult::Written { .. } => written += 1,
                PutRecordsEntryResult::Failed { code, .. } => {
                    assert_eq!(code, "ProvisionedThroughputExceededException");
                    throttled += 1;
                }
            }
        }
    }
    assert_eq!((written, throttled), (1_000, 1_000));
    // Half a second later, half the allowance is back.
    let later = now + Duration::from_millis(500);
    let entries = (0..500)
        .map(|i| KinesisRecord::new(format!("later-{i}"), vec![0]))
        .collect();
    let ok = results(sim.handle(put("s", entries), later).unwrap())
        .iter()
        .filter(|r| matches!(r, PutRecordsEntryResult::Written { .. }))
        .count();
    assert_eq!(ok, 500);
}

#[test]
fn records_land_on_the_shard_owning_their_hash_key_and_reshards_move_ownership() {
    let (mut sim, now) = new_sim(2);
    let low = KinesisRecord::new("x", vec![1]).with_explicit_hash_key(HashKey::new(5));
    let high = KinesisRecord::new("x", vec![2]).with_explicit_hash_key(HashKey::new(u128::MAX));
    let shards: Vec<String> = results(sim.handle(put("s", vec![low.clone(), high]), now).unwrap())
        .into_iter()
        .map(|r| match r {
            PutRecordsEntryResult::Written { shard_id, .. } => shard_id.to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(shards, ["shardId-000000000000", "shardId-000000000001"]);

    sim.split_shard("s", "shardId-000000000000", HashKey::new(1_000))
        .unwrap();
    let open: Vec<String> = sim
        .open_shards("s")
        .iter()
        .map(|(id, _)| id.to_string())
        .collect();
    assert_eq!(
        open,
        [
            "shardId-000000000001",
            "shardId-000000000002",
            "shardId-000000000003"
        ]
    );
    let landed = results(sim.handle(put("s", vec![low]), now).unwrap());
    assert!(
        matches!(&landed[0], PutRecordsEntryResult::Written { shard_id, .. } if shard_id.as_str() == "shardId-000000000002")
    );

    sim.merge_shards("s", "shardId-000000000002", "shardId-000000000003")
        .unwrap();
    assert_eq!(sim.open_shards("s").len(), 2);
    assert!(
        sim.merge_shards("s", "shardId-000000000001", "shardId-000000000001")
            .is_err()
    );
    // Everything written is still readable from the closed parents.
    assert_eq!(sim.stored("s", "shardId-000000000000").len(), 1);
    assert_eq!(sim.kcl_view("s").records.len(), 3);
}

/// Every page of a `ListShards` listing, as (shard id, open).
fn list_all_pages(sim: &mut SimKinesis, filter: ShardFilter, now: Instant) -> Vec<(String, bool)> {
    let mut token = None;
    let mut seen = Vec::new();
    loop {
        let request = Request::ListShards(ListShardsRequest::new(
            Stream::new("s").unwrap(),
            token.take(),
            filter,
            1_000,
        ));
        let Response::ListShards(page) = sim.handle(request, now).unwrap() else {
            panic!("expected a page")
        };
        seen.extend(
            page.shards
                .iter()
                .map(|shard| (shard.shard_id.to_string(), shard.open)),
        );
        match page.next_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    seen
}

#[test]
fn list_shards_pages_and_describe_summary() {
    let (mut sim, now) = new_sim(5);
    sim.set_list_shards_page(2);
    assert_eq!(
        list_all_pages(&mut sim, ShardFilter::AtLatest, now).len(),
        5
    );
    // After a merge, AT_LATEST lists the open shards; FROM_TRIM_HORIZON the closed ones too,
    // on every page (a later page carries only the token).
    sim.merge_shards("s", "shardId-000000000000", "shardId-000000000001")
        .unwrap();
    let open = list_all_pages(&mut sim, ShardFilter::AtLatest, now);
    assert_eq!(open.len(), 4);
    assert!(open.iter().all(|(_, open)| *open));
    let all = list_all_pages(&mut sim, ShardFilter::FromTrimHorizon, now);
    assert_eq!(all.len(), 6);
    assert_eq!(
        all.iter()
            .filter(|(_, open)| !open)
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>(),
        ["shardId-000000000000", "shardId-000000000001"]
    );
    sim.set_max_record_size_kib("s", 2048).unwrap();
    let request = Request::DescribeStreamSummary(DescribeStreamSummaryRequest::new(
        Stream::new("s").unwrap(),
    ));
    let Response::DescribeStreamSummary(summary) = sim.handle(request, now).unwrap() else {
        panic!("expected a summary")
    };
    assert_eq!(summary.max_record_size_kib, Some(2048));
    assert_eq!(summary.open_shard_count, 4);
}

#[test]
fn streams_are_found_by_name_or_arn_and_errors_are_classified() {
    let (mut sim, now) = new_sim(1);
    let arn = sim.stream_arn("s").unwrap().to_owned();
    let record = || vec![KinesisRecord::new("k", vec![1])];
    assert!(sim.handle(put(&arn, record()), now).is_ok());
    let other_account = arn.replace("123456789012", "210987654321");
    let error = sim.handle(put(&other_account, record()), now).unwrap_err();
    assert_eq!(error.kind(), TransportErrorKind::NotFound);
    let error = sim.handle(put("missing", record()), now).unwrap_err();
    assert_eq!(error.kind(), TransportErrorKind::NotFound);
    sim.set_access_denied("s", true).unwrap();
    assert_eq!(
        sim.handle(put("s", record()), now).unwrap_err().kind(),
        TransportErrorKind::AccessDenied
    );
}

#[test]
fn scripted_timeouts_may_or_may_not_write_and_random_faults_are_seeded() {
    let (mut sim, now) = new_sim(1);
    sim.script(ScriptedFault::Timeout { applied: true });
    sim.script(ScriptedFault::Timeout { applied: false });
    for _ in 0..2 {
        let error = sim
            .handle(put("s", vec![KinesisRecord::new("k", vec![1])]), now)
            .unwrap_err();
        assert_eq!(error.kind(), TransportErrorKind::Timeout);
    }
    assert_eq!(
        sim.stored("s", "shardId-000000000000").len(),
        1,
        "only the applied one was written"
    );

    let run = || {
        let (mut sim, now) = new_sim(1);
        sim.set_faults(Faults {
            entry_internal_failure: 0.3,
            request_unavailable: 0.2,
            request_timeout: 0.0,
        });
        (0..50)
            .map(|i| {
                match sim.handle(
                    put("s", vec![KinesisRecord::new(format!("k{i}"), vec![1])]),
                    now,
                ) {
                    Ok(response) => format!("{:?}", results(response)),
                    Err(error) => error.code().to_owned(),
                }
            })
            .collect::<Vec<_>>()
    };
    let first = run();
    assert_eq!(first, run());
    assert!(first.iter().any(|r| r.contains("InternalFailure")));
    assert!(first.iter().any(|r| r.contains("Written")));
}

#[test]
fn a_snapshot_brings_back_shards_lineage_and_records_and_numbering_goes_on() {
    let (mut sim, now) = new_sim(2);
    let written = |sim: &mut SimKinesis, key: &str| match &results(
        sim.handle(put("s", vec![KinesisRecord::new(key, vec![1])]), now)
            .unwrap(),
    )[0]
    {
        PutRecordsEntryResult::Written {
            sequence_number, ..
        } => sequence_number.to_string(),
        other => panic!("{other:?}"),
    };
    let first = written(&mut sim, "a");
    let low = sim.open_shards("s")[0].0.clone();
    sim.split_shard("s", low.as_str(), HashKey::new(1 << 100))
        .unwrap();
    sim.merge_shards("s", "shardId-000000000002", "shardId-000000000003")
        .unwrap();
    let shards = sim.shards("s");
    let lineage: Vec<(&str, bool, Vec<&str>)> = shards
        .iter()
        .map(|s| {
            let parents = s.parents.iter().map(|p| p.as_str()).collect();
            (s.id.as_str(), s.open, parents)
        })
        .collect();
    assert_eq!(
        lineage,
        [
            ("shardId-000000000000", false, vec![]),
            ("shardId-000000000001", true, vec![]),
            ("shardId-000000000002", false, vec!["shardId-000000000000"]),
            ("shardId-000000000003", false, vec!["shardId-000000000000"]),
            (
                "shardId-000000000004",
                true,
                vec!["shardId-000000000002", "shardId-000000000003"]
            ),
        ]
    );
    let snapshot = sim.snapshot("s").unwrap();
    let mut restored = SimKinesis::new(9);
    restored.restore(snapshot.clone(), now).unwrap();
    assert_eq!(restored.snapshot("s").unwrap(), snapshot);
    assert_eq!(restored.stream_names(), ["s"]);
    // New records are numbered above the restored ones, and new shards after the last.
    let next = written(&mut restored, "b");
    assert!(next > first, "{next} after {first}");
    restored
        .split_shard("s", "shardId-000000000001", HashKey::new(u128::MAX - 1))
        .unwrap();
    assert_eq!(
        restored.shards("s").last().unwrap().id.as_str(),
        "shardId-000000000006"
    );
    // A snapshot the service could not have made is refused, with the reason.
    let refused = |change: &dyn Fn(&mut kpl_sim::StreamSnapshot)| {
        let mut bad = snapshot.clone();
        change(&mut bad);
        SimKinesis::new(1)
            .restore(bad, now)
            .unwrap_err()
            .to_string()
    };
    assert!(refused(&|s| s.shards[1].0.id = s.shards[0].0.id.clone()).contains("appears twice"));
    assert!(refused(&|s| s.shards[1].0.open = false).contains("cover every hash key"));
    assert!(refused(&|s| s.shards.swap(0, 2)).contains("is not among the shards before it"));
    let with_records = snapshot
        .shards
        .iter()
        .position(|(_, r)| !r.is_empty())
        .unwrap();
    assert!(
        refused(&|s| s.shards[with_records].1[0].sequence_number = "x".into())
            .contains("not a number")
    );
}
