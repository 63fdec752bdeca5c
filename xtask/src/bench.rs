//! `bench`, `memory` and `goodput`: the criterion benchmarks with their same-run ratios, the
//! end-to-end scoreboard over HTTP, the memory runs and the goodput table.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::util::{Result, cargo, root, run, target_dir};

pub(crate) fn bench(quick: bool, criterion_args: &[String]) -> Result {
    if !quick {
        criterion(criterion_args)?;
    }
    scoreboard(if quick { 1 } else { 3 })
}

pub(crate) fn criterion(extra: &[String]) -> Result {
    run(
        "cargo bench",
        cargo()
            .args(["bench", "--locked", "-p", "kpl-benches", "--"])
            .args(extra),
    )?;
    // Absent when a criterion filter skipped the benchmark.
    let estimate = |group: &str, name: &str| -> Option<f64> {
        let path = target_dir().join(format!("criterion/{group}/{name}/new/estimates.json"));
        let text = std::fs::read_to_string(path).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        json["mean"]["point_estimate"].as_f64()
    };
    const RECORDS: f64 = 1_000_000.0;
    let per_record = |group: &str, name: &str| estimate(group, name).map(|ns| ns / RECORDS);
    println!("\nper user record (16-char key + 100 B; mean of criterion samples)");
    if let (Some(baseline), Some(encode), Some(decode)) = (
        per_record("aggregation", "baseline_md5_memcpy"),
        per_record("aggregation", "encode"),
        per_record("aggregation", "decode"),
    ) {
        println!("  aggregation baseline (MD5 + memcpy of the encoded bytes): {baseline:7.1} ns");
        println!(
            "  encode:  {encode:7.1} ns  = {:.3} x baseline (target <= 1.15)",
            encode / baseline
        );
        println!(
            "  decode:  {decode:7.1} ns  = {:.2} M user records/s (target >= 5)",
            1_000.0 / decode
        );
    }
    if let (Some(one), Some(lanes)) = (
        per_record("aggregation", "hash_keys_one_at_a_time"),
        per_record("aggregation", "hash_keys_side_by_side"),
    ) {
        println!(
            "  hash key (MD5 of a 16-char key): one at a time {one:5.1} ns, eight side by side \
             {lanes:5.1} ns = {:.2} x faster",
            one / lanes
        );
    }
    if let (Some(baseline), Some(engine)) = (
        per_record("engine", "baseline_core_work"),
        per_record("engine", "engine_null_transport"),
    ) {
        println!(
            "  engine baseline (MD5 key + shard search + encode + trailer MD5): {baseline:7.1} ns = {:.2} M/s",
            1_000.0 / baseline
        );
        println!(
            "  engine, null transport, 4 shards: {engine:7.1} ns = {:.2} M/s = {:.3} x baseline throughput (target >= 0.7)",
            1_000.0 / engine,
            baseline / engine
        );
    }
    let per_producer_record = |name: &str| estimate("producer", name).map(|ns| ns / 250_000.0);
    if let (Some(null), Some(aws)) = (
        per_producer_record("null_transport"),
        per_producer_record("aws_sdk_http_stub"),
    ) {
        println!(
            "  producer (facade), in-process transport, one core: {null:7.1} ns = {:.2} M/s",
            1_000.0 / null
        );
        println!(
            "  producer through the AWS SDK to a loopback stub:    {aws:7.1} ns = {:.2} M/s",
            1_000.0 / aws
        );
        println!(
            "  SDK layer (serialize + sign + send + parse) per user record: {:7.1} ns",
            aws - null
        );
    }
    if let (Some(one), Some(four)) = (
        per_producer_record("blocking_null_transport_1_threads"),
        per_producer_record("blocking_null_transport_4_threads"),
    ) {
        println!(
            "  blocking producer, in-process transport: 1 thread {one:7.1} ns, 4 threads \
             {four:7.1} ns = {:.2} x the 1-thread rate (target >= 1)",
            one / four
        );
    }
    Ok(())
}

/// User records each scoreboard run pushes (the workload of `shared/spec/performance.md`).
pub(crate) const SCOREBOARD_RECORDS: u64 = 1_000_000;

/// One producer run's report, as `kpl-scoreboard produce` prints it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Run {
    seconds: f64,
    cpu_seconds: f64,
    application_rss_kib: f64,
    peak_rss_kib: f64,
}

/// The end-to-end scoreboard: for each way of producing, `repeats` runs of a producer process
/// pushing [`SCOREBOARD_RECORDS`] records over HTTP to a stub process that verifies each one,
/// with the producer on core 0 and the stub on core 1 when `taskset` and two cores are there;
/// the median run of each is printed with the wire-ready limit measured in the same run.
pub(crate) fn scoreboard(repeats: usize) -> Result {
    run(
        "cargo build --release -p kpl-benches --bin kpl-scoreboard",
        cargo().args([
            "build",
            "--release",
            "--locked",
            "-p",
            "kpl-benches",
            "--bin",
            "kpl-scoreboard",
        ]),
    )?;
    let binary = target_dir().join("release/kpl-scoreboard");
    let pinned = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
        && Command::new("taskset").arg("--version").output().is_ok();
    let on_core = |core: &str| {
        let mut command = if pinned {
            let mut taskset = Command::new("taskset");
            taskset.args(["-c", core]).arg(&binary);
            taskset
        } else {
            Command::new(&binary)
        };
        command.current_dir(root());
        command
    };
    eprintln!(
        "\n==> scoreboard: {SCOREBOARD_RECORDS} records (16-char key + 100 B), 4 shards, {}",
        if pinned {
            "producer on core 0, stub on core 1"
        } else {
            "unpinned (no taskset or one core)"
        }
    );
    let mut stub = on_core("1")
        .arg("stub")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("kpl-scoreboard stub: {e}"))?;
    let mut stub_out = BufReader::new(stub.stdout.take().ok_or("stub has no stdout")?);
    let mut endpoint = String::new();
    stub_out
        .read_line(&mut endpoint)
        .map_err(|e| format!("stub endpoint: {e}"))?;
    let endpoint = endpoint.trim().to_owned();
    let json_line = |command: &mut Command, what: &str| -> Result<serde_json::Value> {
        let output = command
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("{what}: {e}"))?;
        if !output.status.success() {
            return Err(format!("{what} failed ({})", output.status));
        }
        serde_json::from_slice(&output.stdout).map_err(|e| format!("{what}: {e}"))
    };
    let number = |json: &serde_json::Value, field: &str| json[field].as_f64().unwrap_or(f64::NAN);
    let ways = ["send_wait", "send_all", "sdk_batches"];
    let mut sent = 0u64;
    let mut fingerprint = 0u64;
    let mut medians = Vec::new();
    let mut limits = Vec::new();
    for _ in 0..repeats {
        let limit = json_line(
            on_core("0").args(["limit", &SCOREBOARD_RECORDS.to_string()]),
            "kpl-scoreboard limit",
        )?;
        limits.push(number(&limit, "seconds"));
    }
    for way in ways {
        let mut runs = Vec::new();
        for _ in 0..repeats {
            let what = format!("kpl-scoreboard produce {way}");
            let report = json_line(
                on_core("0").args(["produce", way, &endpoint, &SCOREBOARD_RECORDS.to_string()]),
                &what,
            )?;
            let delivered = report["delivered"].as_u64().unwrap_or(0);
            if delivered != SCOREBOARD_RECORDS {
                return Err(format!(
                    "{what}: {delivered} of {SCOREBOARD_RECORDS} records delivered"
                ));
            }
            sent += SCOREBOARD_RECORDS;
            fingerprint = fingerprint.wrapping_add(report["fingerprint"].as_u64().unwrap_or(0));
            runs.push(Run {
                seconds: number(&report, "seconds"),
                cpu_seconds: number(&report, "cpu_seconds"),
                application_rss_kib: number(&report, "application_rss_kib"),
                peak_rss_kib: number(&report, "peak_rss_kib"),
            });
        }
        runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
        medians.push((way, runs[runs.len() / 2]));
    }
    drop(stub.stdin.take());
    let mut counts = String::new();
    stub_out
        .read_line(&mut counts)
        .map_err(|e| format!("stub counts: {e}"))?;
    let _ = stub.wait();
    let counts: serde_json::Value =
        serde_json::from_str(&counts).map_err(|e| format!("stub counts: {e}"))?;
    let received = counts["user_records"].as_u64().unwrap_or(0);
    let summed = counts["fingerprint"].as_u64().unwrap_or(0);
    if received != sent || summed != fingerprint {
        return Err(format!(
            "the stub received {received} user records (fingerprint {summed}), \
             {sent} were delivered (fingerprint {fingerprint}): {counts}"
        ));
    }
    limits.sort_by(f64::total_cmp);
    let limit = limits[limits.len() / 2] / SCOREBOARD_RECORDS as f64;
    let records = SCOREBOARD_RECORDS as f64;
    println!(
        "\nend to end over HTTP, one core for the producer (median of {repeats}; every record \
         verified by the stub: {received} received, {} corrupt, {} in aggregates a KCL consumer \
         would drop)",
        counts["corrupt"], counts["dropped_by_kcl"]
    );
    println!(
        "  wire-ready limit (MD5 key + route + encode + MD5 trailer + base64 + SHA-256): \
         {:6.1} ns = {:.2} M records/s",
        limit * 1e9,
        1e-6 / limit
    );
    println!(
        "  {:<12} {:>12} {:>10} {:>13} {:>13} {:>12}",
        "way", "records/s", "x limit", "CPU us/rec", "peak RSS MiB", "over app MiB"
    );
    for (way, run) in medians {
        let rate = records / run.seconds;
        println!(
            "  {way:<12} {:>12.0} {:>10.3} {:>13.3} {:>13.0} {:>12.0}",
            rate,
            rate * limit,
            run.cpu_seconds / records * 1e6,
            run.peak_rss_kib / 1024.0,
            (run.peak_rss_kib - run.application_rss_kib) / 1024.0,
        );
    }
    println!(
        "  targets: kpl-rs >= 0.7 x limit (>= 1.5 M/s), <= 0.7 us CPU per record, \
         <= 128 MiB over the application's data"
    );
    Ok(())
}

/// The producer's memory at the default limits: with a stalled endpoint (an application sends
/// flat out until the producer refuses, then the endpoint recovers and everything drains), then
/// with one shard failing every entry for `minutes` of steady traffic.
pub(crate) fn memory(minutes: u64) -> Result {
    // One test of `crates/kpl/tests/faults_http.rs`, in release, with its output shown.
    let http_test = |filter: &str, variable: &str, value: String| {
        let mut command = cargo();
        command
            .args(["test", "--release", "--locked", "-p", "kpl"])
            .args(["--features", "aws", "--test", "faults_http", filter])
            .args(["--", "--nocapture"])
            .env(variable, value);
        command
    };
    run(
        "the memory promise: peak live heap by record size and endpoint",
        cargo()
            .args(["test", "--release", "--locked", "-p", "kpl-benches"])
            .args(["--test", "memory_promise", "--", "--nocapture"])
            .env("KPL_MEMORY_FULL", "1"),
    )?;
    run(
        "memory with a stalled endpoint, default limits",
        &mut http_test("stalled", "KPL_MEMORY_RUN", "1".to_owned()),
    )?;
    run(
        &format!("memory with one stuck shard for {minutes} minutes, default limits"),
        &mut http_test("stuck", "KPL_MEMORY_MINUTES", minutes.to_string()),
    )
}

/// The goodput table: each workload against a simulated stream that enforces the service's
/// per-shard limits by token buckets or by fixed windows, at several `RateLimit`s.
pub(crate) fn goodput(http: bool, args: &[String]) -> Result {
    if http {
        return run(
            "goodput in real time over HTTP",
            cargo()
                .args(["run", "--release", "--locked", "-p", "kpl-benches"])
                .args(["--bin", "kpl-goodput-http", "--"])
                .args(args),
        );
    }
    run(
        "goodput scenarios in virtual time",
        cargo()
            .args([
                "run",
                "--release",
                "--locked",
                "-p",
                "kpl-sim",
                "--example",
                "goodput",
                "--",
            ])
            .args(args),
    )
}
