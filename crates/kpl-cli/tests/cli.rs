//! The `kpl` binary run as a user runs it: on the embedded stream kept in a directory between
//! commands, and on a local Kinesis endpoint (the simulated service behind HTTP) for what only a
//! server can show: a stream that refuses, records that fail, an endpoint that is not there.
#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Output;

use kpl::time::{Clock, SystemClock};
use kpl_sim::SimKinesis;
use kpl_sim::http::Endpoint;
use serde_json::Value;
use support::{framed, interrupt, kpl, run, text};

/// A directory of the test's own, removed when it ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("kpl-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn state(&self) -> String {
        self.0.join("state").display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `name: value` lines of a summary.
fn summary(output: &Output) -> BTreeMap<String, String> {
    text(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

/// The user records `tail --format json` prints.
fn tail_json(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["tail", "--format", "json"];
    all.extend_from_slice(args);
    let output = run(&all, b"");
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn data_of(record: &Value) -> Vec<u8> {
    match (record.get("data"), record.get("data_base64")) {
        (Some(Value::String(data)), _) => data.as_bytes().to_vec(),
        (_, Some(Value::String(encoded))) => base64_simd::STANDARD.decode_to_vec(encoded).unwrap(),
        _ => panic!("no data in {record}"),
    }
}

fn status(output: &Output) -> i32 {
    output.status.code().unwrap()
}

#[test]
fn text_json_and_binary_input_round_trip_through_the_embedded_stream() {
    let scratch = Scratch::new("round-trip");
    let state = scratch.state();
    let local = ["--local", "--local-state", state.as_str()];
    // Text lines from two files, in order.
    let lines: Vec<String> = (0..3000).map(|n| format!("line {n}")).collect();
    let first = scratch.file("a.txt", lines[..1000].join("\n") + "\n");
    let second = scratch.file("b.txt", lines[1000..].join("\n"));
    let mut args = vec!["produce", "--stream", "text", "--shards", "3"];
    args.extend(local);
    args.extend([first.to_str().unwrap(), second.to_str().unwrap()]);
    let produced = run(&args, b"");
    assert_eq!(status(&produced), 0, "{}", text(&produced.stderr));
    assert_eq!(summary(&produced)["delivered"], "3000");
    let mut tail = vec!["--stream", "text"];
    tail.extend(local);
    let mut read: Vec<String> = tail_json(&tail)
        .iter()
        .map(|record| text(&data_of(record)))
        .collect();
    read.sort();
    let mut expected = lines.clone();
    expected.sort();
    assert_eq!(read, expected, "every line once");

    // JSON lines: key, hash key and data from fields.
    let objects: String = (0..200)
        .map(|n| {
            format!(
                "{{\"user\": {{\"id\": \"u{}\"}}, \"route\": \"{}\", \"payload\": {{\"n\": {n}}}}}\n",
                n % 7,
                u128::MAX / 200 * n
            )
        })
        .collect();
    let mut args = vec!["produce", "--stream", "json", "--input-format", "json"];
    args.extend(["--key-field", "user.id", "--hash-key-field", "route"]);
    args.extend(["--data-field", "payload"]);
    args.extend(local);
    let produced = run(&args, objects.as_bytes());
    assert_eq!(status(&produced), 0, "{}", text(&produced.stderr));
    let mut tail = vec!["--stream", "json"];
    tail.extend(local);
    let records = tail_json(&tail);
    assert_eq!(records.len(), 200);
    for record in &records {
        let payload: Value = serde_json::from_slice(&data_of(record)).unwrap();
        let n = payload["n"].as_u64().unwrap();
        assert_eq!(record["partition_key"], format!("u{}", n % 7));
        assert_eq!(
            record["explicit_hash_key"],
            (u128::MAX / 200 * u128::from(n)).to_string()
        );
    }

    // Length-prefixed binary, bytes that are not UTF-8 among them, one fixed key.
    let frames: Vec<Vec<u8>> = (0..100u8).map(|n| vec![0xff, n, 0, n]).collect();
    let input = framed(&frames);
    let mut args = vec!["produce", "--stream", "binary", "--input-format", "binary"];
    args.extend(["--key", "sensor-7"]);
    args.extend(local);
    let produced = run(&args, &input);
    assert_eq!(status(&produced), 0, "{}", text(&produced.stderr));
    let mut tail = vec!["--stream", "binary"];
    tail.extend(local);
    let records = tail_json(&tail);
    let read: Vec<Vec<u8>> = records.iter().map(data_of).collect();
    assert_eq!(read, frames, "one key keeps one shard and its order");
    assert!(records.iter().all(|r| r["partition_key"] == "sensor-7"));
    // A configuration file is the producer's: without aggregation each record goes alone; a
    // key it does not know is a warning the person sees.
    let config = scratch.file(
        "kpl.properties",
        "AggregationEnabled = false\nRateLimt = 100\n",
    );
    let mut args = vec![
        "produce",
        "--stream",
        "plain",
        "--config",
        config.to_str().unwrap(),
    ];
    args.extend(local);
    let produced = run(&args, b"a\nb\nc\n");
    assert_eq!(status(&produced), 0, "{}", text(&produced.stderr));
    assert!(
        text(&produced.stderr).contains("did you mean RateLimit"),
        "{}",
        text(&produced.stderr)
    );
    let mut tail = vec!["--stream", "plain"];
    tail.extend(local);
    let records = tail_json(&tail);
    assert_eq!(records.len(), 3);
    assert!(
        records.iter().all(|r| r["aggregated"] == false),
        "{records:?}"
    );
    let mut first_five = vec!["--stream", "binary", "--max-records", "5"];
    first_five.extend(local);
    assert_eq!(tail_json(&first_five).len(), 5);
}

#[test]
fn a_reshard_between_produce_and_tail_loses_nothing_and_reads_parents_first() {
    let scratch = Scratch::new("reshard");
    let state = scratch.state();
    let local = ["--local", "--local-state", state.as_str()];
    let produce = |from: usize| {
        let input: String = (from..from + 500)
            .map(|n| format!("{{\"k\": \"key-{}\", \"n\": {n}}}\n", n % 10))
            .collect();
        let mut args = vec!["produce", "--stream", "s", "--shards", "1"];
        args.extend(["--input-format", "json", "--key-field", "k"]);
        args.extend(local);
        let output = run(&args, input.as_bytes());
        assert_eq!(status(&output), 0, "{}", text(&output.stderr));
    };
    produce(0);
    let mut split = vec!["stream", "split", "--stream", "s", "--shard"];
    split.push("shardId-000000000000");
    split.extend(local);
    let output = run(&split, b"");
    assert_eq!(status(&output), 0, "{}", text(&output.stderr));
    produce(500);
    let mut describe = vec!["stream", "describe", "--stream", "s"];
    describe.extend(local);
    let described = text(&run(&describe, b"").stdout);
    assert!(
        described.contains("2 open shards, 1 closed")
            && described.contains("from shardId-000000000000"),
        "{described}"
    );
    let mut tail = vec!["--stream", "s"];
    tail.extend(local);
    let records = tail_json(&tail);
    let numbers: Vec<u64> = records
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&data_of(r)).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let mut sorted = numbers.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>(), "each record once");
    // The parent's records come before its children's, so each key's records keep their order.
    for key in 0..10 {
        let of_key: Vec<u64> = numbers.iter().copied().filter(|n| n % 10 == key).collect();
        assert!(
            of_key.windows(2).all(|w| w[0] < w[1]),
            "key {key}: {of_key:?}"
        );
    }
    let shards: Vec<&str> = records
        .iter()
        .map(|r| r["shard_id"].as_str().unwrap())
        .collect();
    assert_eq!(shards.first(), Some(&"shardId-000000000000"));
    assert!(shards.contains(&"shardId-000000000001") || shards.contains(&"shardId-000000000002"));
}

#[test]
fn bad_input_is_named_by_file_line_and_field_and_skip_bad_counts_it() {
    let scratch = Scratch::new("bad-input");
    let json = scratch.file(
        "in.jsonl",
        "{\"k\": \"a\", \"d\": \"one\"}\n{\"k\": \"b\"\n{\"d\": \"three\"}\n{\"k\": \"d\", \"d\": \"four\"}\n",
    );
    let json = json.to_str().unwrap();
    let base = [
        "produce",
        "--local",
        "--stream",
        "s",
        "--input-format",
        "json",
        "--key-field",
        "k",
        "--data-field",
        "d",
    ];
    // Stops at the malformed line 2; what was read before it is sent.
    let mut args = base.to_vec();
    args.push(json);
    let output = run(&args, b"");
    assert_eq!(status(&output), 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("{json}:2: malformed JSON")),
        "{stderr}"
    );
    assert_eq!(summary(&output)["delivered"], "1");
    // With --skip-bad: lines 2 (malformed) and 3 (no key field) are counted, written back
    // with their errors, and the run says not everything was sent.
    let failed_out = scratch.path("failed.jsonl");
    let mut args = base.to_vec();
    args.extend([
        "--skip-bad",
        "--failed-out",
        failed_out.to_str().unwrap(),
        json,
    ]);
    let output = run(&args, b"");
    assert_eq!(status(&output), 1, "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("{json}:3: field k: missing")),
        "{stderr}"
    );
    let counts = summary(&output);
    assert_eq!(counts["delivered"], "2");
    assert_eq!(counts["skipped"], "2 bad input records");
    let written_back = std::fs::read_to_string(&failed_out).unwrap();
    assert_eq!(written_back, "{\"k\": \"b\"\n{\"d\": \"three\"}\n");
    let errors = std::fs::read_to_string(scratch.path("failed.jsonl.errors")).unwrap();
    let errors: Vec<Vec<&str>> = errors.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0][..2], [format!("{json}:2").as_str(), "BadInput"]);
    assert_eq!(errors[1][..2], [format!("{json}:3").as_str(), "BadInput"]);
    // A --failed-out that cannot be written (a full disk) stops nothing: the run goes on,
    // counts everything, prints its summary, and says the file is incomplete; the previous
    // run's file stays as it was, and the exit status says not everything went.
    let full = scratch.path("full.jsonl");
    std::fs::write(&full, "the previous run's failures\n").unwrap();
    std::os::unix::fs::symlink("/dev/full", scratch.path("full.jsonl.partial")).unwrap();
    let mut args = base.to_vec();
    args.extend(["--skip-bad", "--failed-out", full.to_str().unwrap(), json]);
    let output = run(&args, b"");
    assert_eq!(status(&output), 1, "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("full.jsonl.partial is incomplete") && stderr.contains("No space left"),
        "{stderr}"
    );
    let counts = summary(&output);
    assert_eq!(counts["delivered"], "2");
    assert_eq!(counts["skipped"], "2 bad input records");
    assert_eq!(
        std::fs::read_to_string(&full).unwrap(),
        "the previous run's failures\n"
    );
    // A record too large names its line and the limit.
    let big = scratch.file("big.txt", format!("small\n{}\n", "x".repeat(1_100_000)));
    let output = run(
        &["produce", "--local", "--stream", "s", big.to_str().unwrap()],
        b"",
    );
    assert_eq!(status(&output), 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("{}:2:", big.display())) && stderr.contains("1048576"),
        "{stderr}"
    );
    // A file that cannot be read.
    let output = run(
        &[
            "produce",
            "--local",
            "--stream",
            "s",
            "/nonexistent/records.txt",
        ],
        b"",
    );
    assert_eq!(status(&output), 2);
    assert!(
        text(&output.stderr).contains("/nonexistent/records.txt:0: cannot read"),
        "{}",
        text(&output.stderr)
    );
    // Input that cannot be read stops the run even with --skip-bad: what it held is unknown.
    let output = run(
        &[
            "produce",
            "--local",
            "--stream",
            "s",
            "--skip-bad",
            "/nonexistent/records.txt",
        ],
        b"",
    );
    assert_eq!(status(&output), 2, "{}", text(&output.stderr));
    // The failures file is written over: it cannot be an input, which stays as it was.
    let before = std::fs::read(json).unwrap();
    let mut args = base.to_vec();
    args.extend(["--failed-out", json, json]);
    let output = run(&args, b"");
    assert_eq!(status(&output), 2);
    assert!(
        text(&output.stderr).contains("is also an input"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(std::fs::read(json).unwrap(), before);
    // Flags that do not fit together are refused before anything is read.
    let output = run(
        &["produce", "--local", "--stream", "s", "--key-field", "k"],
        b"",
    );
    assert_eq!(status(&output), 2);
    assert!(text(&output.stderr).contains("--key-field needs --input-format json"));
}

/// A local Kinesis endpoint with stream `s` of `shards` shards, and the arguments that reach it.
fn endpoint(shards: u32) -> (Endpoint, Vec<String>) {
    let mut sim = SimKinesis::new(11);
    sim.create_stream("s", shards, SystemClock.now());
    let server = Endpoint::start(sim).unwrap();
    let args = vec![
        "--endpoint".to_owned(),
        server.endpoint(),
        "--region".to_owned(),
        "us-east-1".to_owned(),
    ];
    (server, args)
}

/// `kpl args… remote…` with `stdin`.
fn run_remote(args: &[&str], remote: &[String], stdin: &[u8]) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(remote.iter().map(String::as_str));
    run(&all, stdin)
}

#[test]
fn records_that_fail_are_written_back_in_the_input_format_with_their_errors() {
    let scratch = Scratch::new("failed-out");
    let (server, remote) = endpoint(2);
    // One shard fails every entry: its records are retried until RecordTtl, then fail.
    server
        .with_sim(|sim| sim.set_shard_failing("s", "shardId-000000000001", Some("InternalFailure")))
        .unwrap();
    let config = scratch.file(
        "kpl.properties",
        "RecordTtl = 300\nRecordMaxBufferedTime = 20\n",
    );
    let failed_out = scratch.path("failed.txt");
    let lines: Vec<String> = (0..400).map(|n| format!("record {n}")).collect();
    let output = run_remote(
        &[
            "produce",
            "--stream",
            "s",
            "--config",
            config.to_str().unwrap(),
            "--failed-out",
            failed_out.to_str().unwrap(),
        ],
        &remote,
        (lines.join("\n") + "\n").as_bytes(),
    );
    assert_eq!(status(&output), 1, "{}", text(&output.stderr));
    let counts = summary(&output);
    let delivered: usize = counts["delivered"].parse().unwrap();
    let failed_line = &counts["failed"];
    let written_back = std::fs::read_to_string(&failed_out).unwrap();
    let failed: Vec<&str> = written_back.lines().collect();
    assert!(delivered > 0 && !failed.is_empty(), "{counts:?}");
    assert_eq!(delivered + failed.len(), 400);
    assert!(
        failed_line.starts_with(&format!("{} (", failed.len())),
        "{failed_line}"
    );
    // What failed plus what a consumer reads is the input, each line once.
    let stored: Vec<String> = server.with_sim(|sim| {
        sim.kcl_view("s")
            .records
            .iter()
            .map(|r| text(&r.data))
            .collect()
    });
    let mut all: Vec<String> = stored
        .into_iter()
        .chain(failed.iter().map(|s| s.to_string()))
        .collect();
    all.sort();
    let mut expected = lines.clone();
    expected.sort();
    assert_eq!(all, expected);
    let errors = std::fs::read_to_string(errors_file(&failed_out)).unwrap();
    assert_eq!(errors.lines().count(), failed.len());
    assert!(
        errors.lines().all(|line| line.starts_with("stdin:")
            && line.contains("\tExpired\t")
            && line.contains("[attempts: InternalFailure")),
        "{errors}"
    );
}

fn errors_file(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.errors", path.display()))
}

#[test]
fn an_unknown_stream_refused_credentials_a_missing_permission_and_no_endpoint_exit_with_3() {
    let (server, remote) = endpoint(1);
    let output = run_remote(&["produce", "--stream", "nope"], &remote, b"x\n");
    assert_eq!(status(&output), 3);
    assert!(
        text(&output.stderr).contains("stream nope not found at"),
        "{}",
        text(&output.stderr)
    );
    server
        .with_sim(|sim| sim.set_access_denied("s", true))
        .unwrap();
    let output = run_remote(&["produce", "--stream", "s"], &remote, b"x\n");
    assert_eq!(status(&output), 3);
    assert!(
        text(&output.stderr).contains("the credentials lack a permission"),
        "{}",
        text(&output.stderr)
    );
    // Keys the service does not know.
    server.script([kpl_sim::http::Fault::Status {
        status: 400,
        code: "UnrecognizedClientException",
        applied: false,
    }]);
    let output = run_remote(&["produce", "--stream", "s"], &remote, b"x\n");
    assert_eq!(status(&output), 3);
    assert!(
        text(&output.stderr).contains("the credentials were refused"),
        "{}",
        text(&output.stderr)
    );
    let closed = [
        "--endpoint".to_owned(),
        "http://127.0.0.1:1".to_owned(),
        "--region".to_owned(),
        "us-east-1".to_owned(),
    ];
    let output = run_remote(&["tail", "--stream", "s"], &closed, b"");
    assert_eq!(status(&output), 3);
    assert!(
        text(&output.stderr).contains("is unreachable"),
        "{}",
        text(&output.stderr)
    );
    // The embedded service without the stream.
    let output = run(&["tail", "--local", "--stream", "nope"], b"");
    assert_eq!(status(&output), 3);
    assert!(text(&output.stderr).contains("--local-state"));
}

#[test]
fn without_a_terminal_progress_is_printed_as_lines_and_ctrl_c_drains_and_reports() {
    let mut child = kpl(&[
        "produce",
        "--local",
        "--stream",
        "s",
        "--progress-interval",
        "20ms",
    ])
    .spawn()
    .unwrap();
    let mut input = child.stdin.take().unwrap();
    for n in 0..100 {
        writeln!(input, "record {n}").unwrap();
    }
    input.flush().unwrap();
    // The input stays open: the run waits for more, and shows progress meanwhile.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "stderr ended");
        if line.starts_with("progress") && line.contains(" 100 delivered") {
            break;
        }
    }
    assert!(
        line.contains("records/s") && line.contains("0 failed"),
        "{line}"
    );
    interrupt(&child);
    let output = child.wait_with_output().unwrap();
    drop(input);
    assert_eq!(status(&output), 130);
    let counts = summary(&output);
    assert_eq!(counts["delivered"], "100");
    assert!(counts.contains_key("interrupted"), "{counts:?}");
}

#[test]
fn decode_prints_an_aggregate_s_records_and_strict_names_what_is_wrong() {
    let scratch = Scratch::new("decode");
    let state = scratch.state();
    let input: String = (0..50).map(|n| format!("event {n}\n")).collect();
    let output = run(
        &[
            "produce",
            "--local",
            "--local-state",
            &state,
            "--stream",
            "d",
            "--shards",
            "1",
            "--key",
            "k",
        ],
        input.as_bytes(),
    );
    assert_eq!(status(&output), 0, "{}", text(&output.stderr));
    // The aggregate as stored, base64 in the kept stream's file.
    let kept: Value =
        serde_json::from_slice(&std::fs::read(Path::new(&state).join("d.stream.json")).unwrap())
            .unwrap();
    let aggregate = kept["shards"][0]["records"][0]["data"].as_str().unwrap();
    let output = run(&["decode", "--base64", "-"], aggregate.as_bytes());
    assert_eq!(status(&output), 0, "{}", text(&output.stderr));
    let records: Vec<Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(records.len(), 50);
    assert_eq!(records[7]["data"], "event 7");
    assert_eq!(records[7]["sub_sequence_number"], 7);
    assert_eq!(records[7]["partition_key"], "k");
    // Not an aggregate: passed through whole, or refused with the reason in strict mode.
    let plain = scratch.file("plain.bin", b"just bytes");
    let output = run(
        &["decode", "--format", "text", plain.to_str().unwrap()],
        b"",
    );
    assert_eq!(text(&output.stdout), "just bytes\n");
    assert!(text(&output.stderr).contains("not an aggregate"));
    let output = run(&["decode", "--strict", plain.to_str().unwrap()], b"");
    assert_eq!(status(&output), 2);
    assert!(
        text(&output.stderr).contains("BadMagic"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn bench_reports_throughput_latency_cpu_and_memory() {
    let output = run(
        &["bench", "--local", "--records", "20000", "--size", "50"],
        b"",
    );
    assert_eq!(status(&output), 0, "{}", text(&output.stderr));
    let counts = summary(&output);
    assert_eq!(counts["delivered"], "20000");
    assert!(counts["throughput"].ends_with('s') && counts["latency"].starts_with("p50"));
    assert!(counts["cpu"].contains("per delivered record"), "{counts:?}");
    assert!(counts["memory"].starts_with("peak"), "{counts:?}");
    assert!(
        counts["read back"].starts_with("20000 user records")
            && counts["read back"].ends_with("every delivered record exactly once"),
        "{counts:?}"
    );
}

#[test]
fn help_shows_examples_and_completions_are_printed_for_each_shell() {
    for command in [
        "produce",
        "tail",
        "decode",
        "bench",
        "stream",
        "completions",
    ] {
        let output = run(&[command, "--help"], b"");
        assert!(text(&output.stdout).contains("Examples:"), "{command}");
    }
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef kpl"),
        ("fish", "complete -c kpl"),
    ] {
        let output = run(&["completions", shell], b"");
        assert!(output.status.success());
        assert!(text(&output.stdout).contains(marker), "{shell}");
    }
}

#[test]
fn a_shard_count_out_of_range_is_refused_before_anything_is_made() {
    for shards in ["0", "100001", "4000000000"] {
        for args in [
            &["bench", "--local", "--records", "1", "--shards", shards][..],
            &[
                "stream", "create", "--local", "--stream", "s", "--shards", shards,
            ][..],
        ] {
            let output = run(args, b"");
            assert_eq!(output.status.code(), Some(2), "{args:?}");
            assert!(text(&output.stderr).contains("--shards"), "{args:?}");
        }
    }
}
