//! `bench`, `memory` and `goodput`: the criterion benchmarks with their same-run ratios, the
//! end-to-end scoreboard over HTTP, the memory runs and the goodput table.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::util::{Result, cargo, root, run, target_dir};

pub(crate) fn bench(quick: bool, check: bool, criterion_args: &[String]) -> Result {
    let mut ratios = Ratios::default();
    if !quick {
        criterion(criterion_args, &mut ratios)?;
    }
    scoreboard(if quick { 1 } else { 3 }, &mut ratios)?;
    if check { ratios.check() } else { Ok(()) }
}

pub(crate) fn criterion(extra: &[String], ratios: &mut Ratios) -> Result {
    // Estimates older than this mark come from an earlier run (a filter skipped them this
    // time): they are neither printed nor checked.
    let mark = target_dir().join("criterion/.xtask-run");
    std::fs::create_dir_all(target_dir().join("criterion")).map_err(|e| e.to_string())?;
    std::fs::write(&mark, b"").map_err(|e| format!("{}: {e}", mark.display()))?;
    let started = std::fs::metadata(&mark)
        .and_then(|meta| meta.modified())
        .map_err(|e| format!("{}: {e}", mark.display()))?;
    run(
        "cargo bench",
        cargo()
            .args(["bench", "--locked", "-p", "kpl-benches", "--"])
            .args(extra),
    )?;
    let estimate = |group: &str, name: &str| -> Option<f64> {
        let path = target_dir().join(format!("criterion/{group}/{name}/new/estimates.json"));
        let written = std::fs::metadata(&path)
            .and_then(|meta| meta.modified())
            .ok()?;
        if written < started {
            return None;
        }
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
        ratios.at_most("encode x its baseline", encode / baseline, 1.15);
        println!(
            "  decode:  {decode:7.1} ns  = {:.2} M user records/s ({:.3} x baseline)",
            1_000.0 / decode,
            decode / baseline
        );
        if let Some(borrowed) = per_record("aggregation", "decode_borrowed") {
            println!(
                "  decode, borrowing, one Kinesis record at a time: {borrowed:7.1} ns  = {:.2} M \
                 user records/s = {:.3} x baseline",
                1_000.0 / borrowed,
                borrowed / baseline
            );
        }
        if let Some(many) = per_record("aggregation", "decode_many_borrowed") {
            println!(
                "  decode, borrowing, a GetRecords batch at once (trailers in lanes): {many:7.1} \
                 ns  = {:.2} M user records/s = {:.3} x baseline (target >= 5 M/s, checked as \
                 <= 1 x baseline)",
                1_000.0 / many,
                many / baseline
            );
            ratios.at_most(
                "batch decode x the aggregation baseline",
                many / baseline,
                1.0,
            );
        }
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
        ratios.at_least("engine x its baseline", baseline / engine, 0.7);
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

/// The latencies per call of the scoreboard's latency table, ms (0 is the main table's run).
const LATENCIES_MS: [u64; 3] = [0, 10, 50];

/// The ways of producing the latency table measures.
const LATENCY_WAYS: [&str; 2] = ["send_wait", "send_all"];

/// One producer run's report, as `kpl-scoreboard produce` prints it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Run {
    seconds: f64,
    cpu_seconds: f64,
    application_rss_kib: f64,
    peak_rss_kib: f64,
}

/// The ratios `cargo xtask bench --check` holds to their targets.
#[derive(Debug, Default)]
pub(crate) struct Ratios {
    /// (what, measured, target, higher is better)
    pub(crate) checked: Vec<(String, f64, f64, bool)>,
}

impl Ratios {
    fn at_least(&mut self, what: impl Into<String>, measured: f64, target: f64) {
        self.checked.push((what.into(), measured, target, true));
    }

    fn at_most(&mut self, what: impl Into<String>, measured: f64, target: f64) {
        self.checked.push((what.into(), measured, target, false));
    }

    /// Fails when a ratio misses its target by more than [`CHECK_TOLERANCE`].
    pub(crate) fn check(&self) -> Result {
        let missed: Vec<String> = self
            .checked
            .iter()
            .filter(|(_, measured, target, higher)| {
                missed_by_more_than_tolerance(*measured, *target, *higher)
            })
            .map(|(what, measured, target, higher)| {
                format!(
                    "{what}: {measured:.3}, target {} {target}",
                    if *higher { ">=" } else { "<=" }
                )
            })
            .collect();
        println!(
            "
checked {} ratios against their targets ({}% tolerance)",
            self.checked.len(),
            CHECK_TOLERANCE * 100.0
        );
        if missed.is_empty() {
            Ok(())
        } else {
            Err(format!("targets missed:\n  {}", missed.join("\n  ")))
        }
    }
}

/// How far a ratio may fall short of its target before `--check` fails: run-to-run noise.
const CHECK_TOLERANCE: f64 = 0.03;

fn missed_by_more_than_tolerance(measured: f64, target: f64, higher_is_better: bool) -> bool {
    if measured.is_nan() {
        return true;
    }
    if higher_is_better {
        measured < target * (1.0 - CHECK_TOLERANCE)
    } else {
        measured > target * (1.0 + CHECK_TOLERANCE)
    }
}

/// The scoreboard's processes: where the binary is, and whether each is pinned to a core.
struct Processes {
    binary: std::path::PathBuf,
    pinned: bool,
}

impl Processes {
    fn on_core(&self, core: &str) -> Command {
        let mut command = if self.pinned {
            let mut taskset = Command::new("taskset");
            taskset.args(["-c", core]).arg(&self.binary);
            taskset
        } else {
            Command::new(&self.binary)
        };
        command.current_dir(root());
        command
    }

    /// One JSON line a finished process printed.
    fn json_line(&self, command: &mut Command, what: &str) -> Result<serde_json::Value> {
        let output = command
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("{what}: {e}"))?;
        if !output.status.success() {
            return Err(format!("{what} failed ({})", output.status));
        }
        serde_json::from_slice(&output.stdout).map_err(|e| format!("{what}: {e}"))
    }
}

fn number(json: &serde_json::Value, field: &str) -> f64 {
    json[field].as_f64().unwrap_or(f64::NAN)
}

/// A stub process on core 1, and what was sent to it, to compare with what it received.
struct Stub {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
    endpoint: String,
    sent: u64,
    fingerprint: u64,
}

impl Stub {
    fn start(processes: &Processes, latency_ms: u64) -> Result<Self> {
        let mut child = processes
            .on_core("1")
            .args(["stub", &latency_ms.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("kpl-scoreboard stub: {e}"))?;
        let mut out = BufReader::new(child.stdout.take().ok_or("stub has no stdout")?);
        let mut endpoint = String::new();
        out.read_line(&mut endpoint)
            .map_err(|e| format!("stub endpoint: {e}"))?;
        Ok(Self {
            child,
            out,
            endpoint: endpoint.trim().to_owned(),
            sent: 0,
            fingerprint: 0,
        })
    }

    /// `repeats` producer runs of `way` on core 0; the median by wall time.
    fn produce(&mut self, processes: &Processes, way: &str, repeats: usize) -> Result<Run> {
        let mut runs = Vec::new();
        for _ in 0..repeats {
            let what = format!("kpl-scoreboard produce {way}");
            let records = SCOREBOARD_RECORDS.to_string();
            let report = processes.json_line(
                processes
                    .on_core("0")
                    .args(["produce", way, &self.endpoint, &records]),
                &what,
            )?;
            let delivered = report["delivered"].as_u64().unwrap_or(0);
            if delivered != SCOREBOARD_RECORDS {
                return Err(format!(
                    "{what}: {delivered} of {SCOREBOARD_RECORDS} records delivered"
                ));
            }
            self.sent += SCOREBOARD_RECORDS;
            self.fingerprint = self
                .fingerprint
                .wrapping_add(report["fingerprint"].as_u64().unwrap_or(0));
            runs.push(Run {
                seconds: number(&report, "seconds"),
                cpu_seconds: number(&report, "cpu_seconds"),
                application_rss_kib: number(&report, "application_rss_kib"),
                peak_rss_kib: number(&report, "peak_rss_kib"),
            });
        }
        runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
        Ok(runs[runs.len() / 2])
    }

    /// Stops the stub and checks that it received every record delivered to it, intact.
    fn finish(mut self) -> Result<serde_json::Value> {
        drop(self.child.stdin.take());
        let mut counts = String::new();
        self.out
            .read_line(&mut counts)
            .map_err(|e| format!("stub counts: {e}"))?;
        let _ = self.child.wait();
        let counts: serde_json::Value =
            serde_json::from_str(&counts).map_err(|e| format!("stub counts: {e}"))?;
        let received = counts["user_records"].as_u64().unwrap_or(0);
        let summed = counts["fingerprint"].as_u64().unwrap_or(0);
        if received != self.sent || summed != self.fingerprint {
            return Err(format!(
                "the stub received {received} user records (fingerprint {summed}), {} were \
                 delivered (fingerprint {}): {counts}",
                self.sent, self.fingerprint
            ));
        }
        Ok(counts)
    }
}

/// The end-to-end scoreboard: for each way of producing, `repeats` runs of a producer process
/// pushing [`SCOREBOARD_RECORDS`] records over HTTP to a stub process that verifies each one,
/// with the producer on core 0 and the stub on core 1 when `taskset` and two cores are there;
/// the median run of each is printed with the wire-ready limit measured in the same run. Then
/// the latency table: the same runs against stubs that answer each call 10 and 50 ms late.
pub(crate) fn scoreboard(repeats: usize, ratios: &mut Ratios) -> Result {
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
    let processes = Processes {
        binary: target_dir().join("release/kpl-scoreboard"),
        pinned: std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
            && Command::new("taskset").arg("--version").output().is_ok(),
    };
    eprintln!(
        "\n==> scoreboard: {SCOREBOARD_RECORDS} records (16-char key + 100 B), 4 shards, {}",
        if processes.pinned {
            "producer on core 0, stub on core 1"
        } else {
            "unpinned (no taskset or one core)"
        }
    );
    let mut limits = Vec::new();
    for _ in 0..repeats {
        let limit = processes.json_line(
            processes
                .on_core("0")
                .args(["limit", &SCOREBOARD_RECORDS.to_string()]),
            "kpl-scoreboard limit",
        )?;
        limits.push(number(&limit, "seconds"));
    }
    let mut stub = Stub::start(&processes, 0)?;
    let mut medians = Vec::new();
    for way in ["send_wait", "send_all", "sdk_batches"] {
        medians.push((way, stub.produce(&processes, way, repeats)?));
    }
    let counts = stub.finish()?;
    let mut delayed = Vec::new();
    for latency_ms in LATENCIES_MS.into_iter().filter(|&ms| ms > 0) {
        let mut stub = Stub::start(&processes, latency_ms)?;
        for way in LATENCY_WAYS {
            delayed.push((latency_ms, way, stub.produce(&processes, way, repeats)?));
        }
        stub.finish()?;
    }
    limits.sort_by(f64::total_cmp);
    let limit = limits[limits.len() / 2] / SCOREBOARD_RECORDS as f64;
    let records = SCOREBOARD_RECORDS as f64;
    println!(
        "\nend to end over HTTP, one core for the producer (median of {repeats}; every record \
         verified by the stub: {} received, {} corrupt, {} in aggregates a KCL consumer \
         would drop)",
        counts["user_records"], counts["corrupt"], counts["dropped_by_kcl"]
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
    for (way, run) in &medians {
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
        "  targets: send_wait >= 0.7 x limit, send_all >= 0.8 x limit, <= 64 MiB over the \
         application's data"
    );
    for (way, target) in [("send_wait", 0.7), ("send_all", 0.8)] {
        if let Some((_, run)) = medians.iter().find(|(name, _)| *name == way) {
            ratios.at_least(
                format!("{way} x limit"),
                records / run.seconds * limit,
                target,
            );
        }
    }
    println!("\nlatency per call (the stub answers each call that much later), default settings");
    println!(
        "  {:<12} {:>8} {:>12} {:>11} {:>9} {:>11} {:>13}",
        "way", "latency", "records/s", "x at 0 ms", "wall s", "CPU s", "over app MiB"
    );
    for way in LATENCY_WAYS {
        let Some((_, at_zero)) = medians.iter().find(|(name, _)| *name == way) else {
            continue;
        };
        let rows = std::iter::once((0, at_zero)).chain(
            delayed
                .iter()
                .filter(|(_, name, _)| *name == way)
                .map(|(ms, _, run)| (*ms, run)),
        );
        for (latency_ms, run) in rows {
            let share = at_zero.seconds / run.seconds;
            println!(
                "  {way:<12} {:>5} ms {:>12.0} {:>11.3} {:>9.3} {:>11.3} {:>13.0}",
                latency_ms,
                records / run.seconds,
                share,
                run.seconds,
                run.cpu_seconds,
                (run.peak_rss_kib - run.application_rss_kib) / 1024.0,
            );
            if latency_ms == 50 {
                ratios.at_least(format!("{way} at 50 ms x at 0 ms"), share, 0.9);
            }
        }
    }
    println!("  target: at 50 ms per call, >= 0.9 x the 0 ms rate");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_fails_the_check_only_when_it_misses_by_more_than_the_tolerance() {
        assert!(!missed_by_more_than_tolerance(0.69, 0.7, true));
        assert!(missed_by_more_than_tolerance(0.67, 0.7, true));
        assert!(!missed_by_more_than_tolerance(1.18, 1.15, false));
        assert!(missed_by_more_than_tolerance(1.19, 1.15, false));
        assert!(missed_by_more_than_tolerance(f64::NAN, 0.7, true));
        let mut ratios = Ratios::default();
        ratios.at_least("send_wait x limit", 0.71, 0.7);
        assert_eq!(ratios.check(), Ok(()));
        ratios.at_most("encode x its baseline", 1.3, 1.15);
        let missed = ratios.check().unwrap_err();
        assert!(
            missed.contains("encode x its baseline: 1.300, target <= 1.15"),
            "{missed}"
        );
        assert!(!missed.contains("send_wait"), "{missed}");
    }
}
