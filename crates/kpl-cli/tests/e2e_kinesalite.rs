//! The `kpl` commands against kinesalite, a local Kinesis server: `cargo xtask ci` (and
//! `cargo xtask e2e`) start it and give its endpoint in `KPL_KINESALITE_ENDPOINT`. Without it
//! these tests fail: they are built only with the `e2e` feature, which only those commands set.
#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::process::Output;

use kpl::time::Clock;
use serde_json::Value;

fn endpoint() -> String {
    std::env::var("KPL_KINESALITE_ENDPOINT")
        .expect("KPL_KINESALITE_ENDPOINT: run through `cargo xtask ci` or `cargo xtask e2e`")
}

/// `kpl args… --endpoint E --region us-east-1` with `stdin`.
fn kpl(args: &[&str], stdin: &[u8]) -> Output {
    let endpoint = endpoint();
    let server = ["--endpoint", endpoint.as_str(), "--region", "us-east-1"];
    support::run(&[args, &server[..]].concat(), stdin)
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A stream name of this run's own (kinesalite keeps streams while it runs).
fn stream(name: &str) -> String {
    format!("cli-{name}-{}", std::process::id())
}

fn tail_json(stream: &str) -> Vec<Value> {
    ok(&kpl(&["tail", "--stream", stream, "--format", "json"], b""))
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn produce_then_tail_round_trips_through_a_split_and_the_stream_is_managed() {
    let name = stream("round-trip");
    let created = ok(&kpl(
        &["stream", "create", "--stream", &name, "--shards", "2"],
        b"",
    ));
    assert!(created.contains(&format!("created stream {name} with 2 shards")));
    let batch = |numbers: std::ops::Range<u64>| -> String {
        numbers
            .map(|n| format!("{{\"k\": \"key-{}\", \"n\": {n}}}\n", n % 12))
            .collect()
    };
    let produce = ["produce", "--stream", &name, "--input-format", "json"];
    let produce = [&produce[..], &["--key-field", "k"]].concat();
    let produced = ok(&kpl(&produce, batch(0..600).as_bytes()));
    assert!(produced.contains("delivered:  600"), "{produced}");
    // A moment after the first batch arrived and before the second does (a few milliseconds
    // later: the next run has to start). kinesalite hangs on a read from a timestamp past the
    // end of a closed shard, so this part comes before the split.
    let between = kpl::TokioClock
        .system_time()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        + 0.002;
    let produced = ok(&kpl(&produce, batch(600..1200).as_bytes()));
    assert!(produced.contains("delivered:  600"), "{produced}");
    let between = format!("{between:.3}");
    let tail = [
        "tail",
        "--stream",
        &name,
        "--from",
        "at-timestamp",
        &between,
    ];
    let mut later: Vec<u64> = ok(&kpl(&tail, b""))
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    later.sort_unstable();
    assert_eq!(later, (600..1200).collect::<Vec<_>>(), "the second batch");
    let split = ["stream", "split", "--stream", &name];
    let split = [&split[..], &["--shard", "shardId-000000000000"]].concat();
    ok(&kpl(&split, b""));
    let produced = ok(&kpl(&produce, batch(1200..1800).as_bytes()));
    assert!(produced.contains("delivered:  600"), "{produced}");
    let described = ok(&kpl(&["stream", "describe", "--stream", &name], b""));
    assert!(
        described.contains("3 open shards, 1 closed")
            && described.contains("from shardId-000000000000"),
        "{described}"
    );
    let records = tail_json(&name);
    let numbers: Vec<u64> = records
        .iter()
        .map(|record| {
            let data: Value = serde_json::from_str(record["data"].as_str().unwrap()).unwrap();
            data["n"].as_u64().unwrap()
        })
        .collect();
    let mut sorted = numbers.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1800).collect::<Vec<_>>(), "each record once");
    for key in 0..12 {
        let of_key: Vec<u64> = numbers.iter().copied().filter(|n| n % 12 == key).collect();
        assert!(of_key.windows(2).all(|w| w[0] < w[1]), "key {key} in order");
    }
    assert!(records.iter().all(|r| r["sequence_number"].is_string()));
    assert!(records.iter().any(|r| r["aggregated"] == true));

    ok(&kpl(&["stream", "delete", "--stream", &name], b""));
    let gone = kpl(&["tail", "--stream", &name], b"");
    assert_eq!(gone.status.code(), Some(3));
}

#[test]
fn producing_to_a_stream_that_does_not_exist_exits_with_3_and_says_so() {
    let name = stream("missing");
    let output = kpl(&["produce", "--stream", &name], b"x\n");
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("stream {name} not found")),
        "{stderr}"
    );
}

#[test]
fn tail_follow_prints_records_as_they_come_until_ctrl_c() {
    let name = stream("follow");
    ok(&kpl(
        &["stream", "create", "--stream", &name, "--shards", "2"],
        b"",
    ));
    let endpoint = endpoint();
    let follow = ["tail", "--stream", &name, "--follow"];
    let server = ["--endpoint", endpoint.as_str(), "--region", "us-east-1"];
    let mut tail = support::kpl(&[&follow[..], &server[..]].concat())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(tail.stdout.take().unwrap()));
    let mut seen = Vec::new();
    // Two batches, each written while the tail follows: it prints each as it comes.
    for batch in [0..50u64, 50..100] {
        let input: String = batch.clone().map(|n| format!("{n}\n")).collect();
        ok(&kpl(&["produce", "--stream", &name], input.as_bytes()));
        // Shards interleave: read until every record so far has shown.
        while seen.len() < batch.end as usize {
            let Some(line) = lines.next() else { break };
            seen.push(line.unwrap());
        }
    }
    support::interrupt(&tail);
    let output = tail.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130));
    let mut numbers: Vec<u64> = seen.iter().map(|line| line.parse().unwrap()).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..100).collect::<Vec<_>>(), "each once");
}

#[test]
fn bench_and_binary_input_reach_a_server_too() {
    let name = stream("bench");
    ok(&kpl(
        &["stream", "create", "--stream", &name, "--shards", "2"],
        b"",
    ));
    let benched = ok(&kpl(
        &[
            "bench",
            "--stream",
            &name,
            "--records",
            "3000",
            "--size",
            "40",
        ],
        b"",
    ));
    assert!(benched.contains("delivered:  3000"), "{benched}");
    assert!(
        !benched.contains("read back"),
        "read back only on the embedded stream"
    );
    let frames: Vec<Vec<u8>> = (0..20u8).map(|n| vec![0xfe, n, 0x00]).collect();
    let input = support::framed(&frames);
    let produce = ["produce", "--stream", &name, "--input-format", "binary"];
    let produced = ok(&kpl(&[&produce[..], &["--key", "one"]].concat(), &input));
    assert!(produced.contains("delivered:  20"), "{produced}");
    let ours: Vec<Vec<u8>> = tail_json(&name)
        .iter()
        .filter(|record| record["partition_key"] == "one")
        .map(|record| {
            base64_simd::STANDARD
                .decode_to_vec(record["data_base64"].as_str().unwrap())
                .unwrap()
        })
        .collect();
    assert_eq!(ours, frames, "in order, bytes intact");
}
